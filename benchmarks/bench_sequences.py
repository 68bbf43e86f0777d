"""Test metrics and training times of ``rnnkit train classify|tag`` on every built-in set.

Each entry is one fresh run, exactly what the command line runs for ``--data NAME``
(the tuned preset of ``rnnkit.tasks.classify.PRESETS`` / ``rnnkit.tasks.tag.PRESETS``), some with
one or two settings changed to compare variants (unidirectional against bidirectional
and softmax against CRF on tweets-ner; LSTM, GRU and the IRNN on pixel-by-pixel MNIST).
The best validation checkpoint is scored on the test split; training time is the wall
time of the whole run (data loading, training, evaluations, checkpoints).

    python benchmarks/bench_sequences.py                         # everything (~1 hour)
    python benchmarks/bench_sequences.py --only mnist-rows tweets-ner --json out.json
    python benchmarks/bench_sequences.py --list

Run it alone on the machine: other work slows the training times.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _machine import environment, print_environment, print_load_after, write_json

# (label, task, data, model overrides, run overrides[, seeds]) on top of the set's preset;
# the tiny signal sets (40 and 370 test series) are run with several seeds
RUNS: list[tuple] = [
    ("movie-reviews", "classify", "movie-reviews", {}, {}),
    ("brown-pos", "tag", "brown-pos", {}, {}),
    ("tweets-ner uni softmax", "tag", "tweets-ner", {"bidirectional": False, "crf": False}, {}, 3),
    ("tweets-ner uni CRF", "tag", "tweets-ner", {"bidirectional": False}, {}, 3),
    ("tweets-ner bi softmax", "tag", "tweets-ner", {"crf": False}, {}, 3),
    ("tweets-ner bi CRF", "tag", "tweets-ner", {}, {}, 3),
    ("mnist-rows", "classify", "mnist-rows", {}, {}, 3),
    ("mnist-pixels LSTM", "classify", "mnist-pixels", {}, {}),
    ("mnist-pixels GRU", "classify", "mnist-pixels", {"cell": "gru"}, {}),
    (
        "mnist-pixels IRNN",
        "classify",
        "mnist-pixels",
        {"cell": "rnn", "nonlinearity": "relu", "init": "irnn"},
        {"lr": 1e-4, "epochs": 20},  # Le et al.'s IRNN wants a small step
    ),
    ("mnist-permuted LSTM", "classify", "mnist-permuted", {}, {}),
    ("basic-motions", "classify", "basic-motions", {}, {}, 5),
    ("japanese-vowels", "classify", "japanese-vowels", {}, {}, 5),
]


def one(label: str, task: str, data: str, model_kw: dict, run_kw: dict, out: Path) -> dict:
    from rnnkit.tasks import classify, tag
    from rnnkit.tasks.sequences import RunConfig

    module = classify if task == "classify" else tag
    config_cls = classify.ClassifyConfig if task == "classify" else tag.TagConfig
    preset_model, preset_run = module.PRESETS.get(data, ({}, {}))
    config = config_cls(**{**preset_model, **model_kw})
    run = RunConfig(**{**preset_run, **run_kw, "progress": False})
    print(f"\n=== {label}", flush=True)
    start = time.perf_counter()
    model, results = module.train(out, config, run, data=data)
    seconds = time.perf_counter() - start
    test = results.get("test", results["val"])
    return {
        "label": label,
        "task": task,
        "data": data,
        "test": test,
        "val": results["val"],
        "train_seconds": seconds,
        "model": results["config"]["model"],
        "train": results["config"]["train"],
        "backend": model.encoder.backend("cpu"),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def cross_validate(folds: int, out: Path) -> dict:
    """movie-reviews the published way: k folds of a fixed permutation, each the test set
    once; each run holds a tenth of its training folds out for validation."""
    import numpy as np

    from rnnkit.data.textsets import fetch_dataset
    from rnnkit.tasks import classify
    from rnnkit.tasks.sequences import RunConfig

    lines = fetch_dataset("movie-reviews").read_text(encoding="utf-8").splitlines()
    order = np.random.default_rng(0).permutation(len(lines))
    preset_model, preset_run = classify.PRESETS["movie-reviews"]
    scores, seconds = [], []
    for k, test_idx in enumerate(np.array_split(order, folds)):
        held = set(test_idx.tolist())
        d = out / f"fold{k}"
        d.mkdir(parents=True)
        (d / "train.tsv").write_text(
            "\n".join(line for i, line in enumerate(lines) if i not in held) + "\n"
        )
        (d / "test.tsv").write_text("\n".join(lines[i] for i in sorted(held)) + "\n")
        print(f"\n=== movie-reviews fold {k + 1} of {folds}", flush=True)
        start = time.perf_counter()
        _, results = classify.train(
            d / "run",
            classify.ClassifyConfig(**preset_model),
            RunConfig(**preset_run, progress=False),
            train=d / "train.tsv",
            test=d / "test.tsv",
        )
        seconds.append(time.perf_counter() - start)
        scores.append(results["test"]["accuracy"])
    return {
        "label": f"movie-reviews {folds}-fold",
        "folds": folds,
        "accuracies": scores,
        "mean": float(np.mean(scores)),
        "std": float(np.std(scores)),
        "train_seconds_per_fold": float(np.mean(seconds)),
        "model": results["config"]["model"],
        "train": results["config"]["train"],
    }


def summarise_seeds(results: list[dict]) -> list[dict]:
    """Runs repeated over seeds become one row: mean and std of the test accuracy."""
    import numpy as np

    rows, groups = [], {}
    for r in results:
        base = r["label"].split(" seed ")[0]
        if " seed " not in r["label"]:
            rows.append(r)
        elif base not in groups:
            groups[base] = {**r, "label": base, "runs": [r]}
            rows.append(groups[base])
        else:
            groups[base]["runs"].append(r)
    for g in groups.values():
        key = "entity_f1" if "entity_f1" in g["test"] else "accuracy"
        accs = [r["test"][key] for r in g["runs"]]
        g.update(
            seeds=len(accs),
            accuracies=accs,
            mean=float(np.mean(accs)),
            std=float(np.std(accs)),
            train_seconds=float(np.mean([r["train_seconds"] for r in g["runs"]])),
        )
    return rows


def settings(r: dict) -> str:
    m, t = r["model"], r["train"]
    direction = "bi" if m["bidirectional"] else "uni"
    cell = m["cell"].upper() + (f" {m['nonlinearity']}" if m["cell"] == "rnn" else "")
    parts = [f"{m['num_layers']}x{m['hidden_size']} {direction} {cell}"]
    if m.get("init"):
        parts.append(f"init {m['init']}")
    if r["task"] == "classify":
        parts.append(f"pool {m['pool']}")
    elif m.get("crf"):
        parts.append("CRF")
    if r["data"] in ("movie-reviews", "brown-pos", "tweets-ner"):
        parts.append(f"emb {m['embedding_size']}" + (" + chars" if m["chars"] else ""))
    parts.append(f"dropout {m['dropout']:g}")
    parts.append(f"{t['epochs']:g} epochs, batch {t['batch_size']}, lr {t['lr']:g}")
    if t.get("augment"):
        parts.append(f"augment {t['augment']}")
    return ", ".join(parts)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--only", nargs="+", help="labels or data set names to run ('none': only --folds)"
    )
    p.add_argument("--list", action="store_true", help="list the runs and exit")
    p.add_argument("--out", help="keep the run directories here (default: a temporary one)")
    p.add_argument("--json", help="write the results here")
    p.add_argument(
        "--folds", type=int, default=0, help="also cross-validate movie-reviews in k folds"
    )
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    args = p.parse_args()
    runs = [r for r in RUNS if not args.only or r[0] in args.only or r[2] in args.only]
    if args.only == ["none"] and args.folds:
        runs = []  # the cross-validation alone
    elif args.list or not runs:
        for r in RUNS:
            print(f"{r[0]:24s} {r[1]:9s} {r[2]}")
        return 0 if runs else 1
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from rnnkit._malloc import tune_glibc_malloc

    env = environment(malloc_tuned=tune_glibc_malloc())  # as the command line does
    print_environment(env)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        for label, task, data, model_kw, run_kw, *seeds in runs:
            seeds = range(seeds[0]) if seeds else [None]
            for seed in seeds:
                kw = run_kw if seed is None else {**run_kw, "seed": seed}
                name = label if seed is None else f"{label} seed {seed}"
                out = root / name.replace(" ", "-")
                results.append(one(name, task, data, model_kw, kw, out))
            if args.json:  # keep what is done if a later run fails
                write_json(args.json, {"environment": env, "results": results})
        cv = cross_validate(args.folds, root / "cv") if args.folds else None
    print_load_after()
    print(f"\n| data set | test metric | training time ({env['threads']} threads) | settings |")
    print("|---|---|---|---|")
    for r in summarise_seeds(results):
        if "seeds" in r:
            accs = ", ".join(f"{a:.1f}" for a in r["accuracies"])
            what = "entity F1" if "entity_f1" in r["test"] else "accuracy"
            print(
                f"| {r['label']} | {what} {r['mean']:.2f} ± {r['std']:.2f} over "
                f"{r['seeds']} seeds ({accs}) | {r['train_seconds'] / 60:.1f} min a run | "
                f"{settings(r)} |"
            )
            continue
        t = r["test"]
        metric = f"accuracy {t['accuracy']:.2f}%"
        if "entity_f1" in t:
            metric = f"entity F1 {t['entity_f1']:.2f} (token acc. {t['accuracy']:.2f}%)"
        minutes = r["train_seconds"] / 60
        print(f"| {r['label']} | {metric} | {minutes:.1f} min | {settings(r)} |")
    if cv is not None:
        print(
            f"| {cv['label']} | accuracy {cv['mean']:.2f} ± {cv['std']:.2f}% | "
            f"{cv['train_seconds_per_fold'] / 60:.1f} min a fold | "
            f"{settings({'task': 'classify', 'data': 'movie-reviews', **cv})} |"
        )
    write_json(args.json, {"environment": env, "results": results, "cross_validation": cv})
    json.dumps(results)  # fails loudly here rather than in a half-written file
    return 0


if __name__ == "__main__":
    sys.exit(main())
