"""Test metrics and training times of ``rnnkit train classify|tag`` on every built-in set.

Each entry is one fresh run, exactly what the command line runs for ``--data NAME``
(the tuned preset of ``rnnkit.classify.PRESETS`` / ``rnnkit.tag.PRESETS``), some with
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

# (label, task, data, model overrides, run overrides) on top of the set's preset
RUNS: list[tuple[str, str, str, dict, dict]] = [
    ("movie-reviews", "classify", "movie-reviews", {}, {}),
    ("brown-pos", "tag", "brown-pos", {}, {}),
    ("tweets-ner uni softmax", "tag", "tweets-ner", {"bidirectional": False, "crf": False}, {}),
    ("tweets-ner uni CRF", "tag", "tweets-ner", {"bidirectional": False}, {}),
    ("tweets-ner bi softmax", "tag", "tweets-ner", {"crf": False}, {}),
    ("tweets-ner bi CRF", "tag", "tweets-ner", {}, {}),
    ("mnist-rows", "classify", "mnist-rows", {}, {}),
    ("mnist-pixels LSTM", "classify", "mnist-pixels", {}, {}),
    ("mnist-pixels GRU", "classify", "mnist-pixels", {"cell": "gru"}, {}),
    (
        "mnist-pixels IRNN",
        "classify",
        "mnist-pixels",
        {"cell": "rnn", "nonlinearity": "relu", "init": "irnn"},
        {"lr": 1e-4, "clip_norm": 1.0},
    ),
    ("mnist-permuted LSTM", "classify", "mnist-permuted", {}, {}),
    ("basic-motions", "classify", "basic-motions", {}, {}),
    ("japanese-vowels", "classify", "japanese-vowels", {}, {}),
]


def one(label: str, task: str, data: str, model_kw: dict, run_kw: dict, out: Path) -> dict:
    from rnnkit import classify, tag
    from rnnkit.seqtask import RunConfig

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
    return ", ".join(parts)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="+", help="labels or data set names to run")
    p.add_argument("--list", action="store_true", help="list the runs and exit")
    p.add_argument("--out", help="keep the run directories here (default: a temporary one)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    runs = [r for r in RUNS if not args.only or r[0] in args.only or r[2] in args.only]
    if args.list or not runs:
        for r in RUNS:
            print(f"{r[0]:24s} {r[1]:9s} {r[2]}")
        return 0 if runs else 1
    env = environment()
    print_environment(env)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        for label, task, data, model_kw, run_kw in runs:
            out = root / label.replace(" ", "-")
            results.append(one(label, task, data, model_kw, run_kw, out))
            if args.json:  # keep what is done if a later run fails
                write_json(args.json, {"environment": env, "results": results})
    print_load_after()
    print("\n| data set | test metric | training time (2 cores) | settings |")
    print("|---|---|---|---|")
    for r in results:
        t = r["test"]
        metric = f"accuracy {t['accuracy']:.2f}%"
        if "entity_f1" in t:
            metric = f"entity F1 {t['entity_f1']:.2f} (token acc. {t['accuracy']:.2f}%)"
        minutes = r["train_seconds"] / 60
        print(f"| {r['label']} | {metric} | {minutes:.1f} min | {settings(r)} |")
    write_json(args.json, {"environment": env, "results": results})
    json.dumps(results)  # fails loudly here rather than in a half-written file
    return 0


if __name__ == "__main__":
    sys.exit(main())
