"""Feed the command line malformed files, options and checkpoints, and tabulate what
each gets: the exit code and the one error line, or a traceback (a failure of rnnkit),
and whether every saved run stayed intact (the sha256 of each of its files before and
after).

    python benchmarks/bad_inputs.py                  # prints a Markdown table
    python benchmarks/bad_inputs.py --json out.json

Each case runs ``rnnkit.cli.main`` in this process, exactly the code ``rnnkit`` runs.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np
import torch

from rnnkit.cli import main

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind\n" * 120


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def run(argv: list) -> tuple[int | str, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit_:  # argparse: a usage error
            code = exit_.code
        except BaseException:
            return "traceback", traceback.format_exc().strip().splitlines()[-1]
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    return code, (lines[-1] if lines else "")


def build(d: Path) -> dict[str, Path]:
    """Tiny files and two trained runs to spoil."""
    f = {}
    f["text"] = d / "text.txt"
    f["text"].write_text(TEXT, encoding="utf-8")
    f["empty"] = d / "empty.txt"
    f["empty"].write_bytes(b"")
    f["binary"] = d / "blob.bin"
    f["binary"].write_bytes(bytes(range(256)) * 8)
    f["latin1"] = d / "latin1.txt"
    f["latin1"].write_bytes("café crème naïve façade ".encode("latin-1") * 40)
    f["short"] = d / "short.txt"
    f["short"].write_text("ab\n" * 5)
    f["one_char"] = d / "aaa.txt"
    f["one_char"].write_text("a" * 4000)
    rows = [
        f"{'pos' if i % 2 else 'neg'}\t{'good' if i % 2 else 'bad'} film {i}" for i in range(60)
    ]
    f["tsv"] = d / "train.tsv"
    f["tsv"].write_text("\n".join(rows) + "\n")
    f["no_tab"] = d / "notab.tsv"
    f["no_tab"].write_text("pos good film\nneg bad film\n")
    f["label_only"] = d / "label.tsv"
    f["label_only"].write_text("pos\t\nneg\tbad\n")
    f["one_label"] = d / "one.tsv"
    f["one_label"].write_text("".join(f"pos\tgood film {i}\n" for i in range(30)))
    f["bad_utf8_tsv"] = d / "bad.tsv"
    f["bad_utf8_tsv"].write_bytes("pos\tcafé\n".encode("latin-1"))
    f["unseen"] = d / "val.tsv"
    f["unseen"].write_text("mixed\tso so\n")
    f["conll_no_tag"] = d / "notag.conll"
    f["conll_no_tag"].write_text("The\tDET\njury\n\n")
    sentence = "".join(f"{w}\t{t}\n" for w, t in [("The", "DET"), ("jury", "NOUN"), (".", ".")])
    f["conll"] = d / "pos.conll"
    f["conll"].write_text("\n".join([sentence] * 20))
    f["extra_column"] = d / "scores.tsv"
    f["extra_column"].write_text("".join(f"{r}\t0.{i % 10}\n" for i, r in enumerate(rows)))
    f["two_tabs"] = d / "tabbed.tsv"
    f["two_tabs"].write_text("\n".join(rows[:3] + ["neg\tdull\tand long"] + rows[3:]) + "\n")
    for name, arrays in {
        "npz_no_y": {"x": np.zeros((4, 5, 2), np.float32)},
        "npz_bad_y": {"x": np.zeros((4, 5, 2), np.float32), "y": np.zeros((3,))},
        "npz_nan": {"x": np.full((4, 5, 2), np.nan, np.float32), "y": np.arange(4) % 2},
        "npz_object": {"x": np.array([[1, "a"]] * 4, dtype=object), "y": np.arange(4) % 2},
        "npz_lengths": {"x": np.zeros((4, 5, 2)), "y": np.arange(4) % 2, "lengths": [9] * 4},
        "npz_huge": {"x": np.full((8, 5, 1), 1e36, np.float32), "y": np.arange(8) % 2},
    }.items():
        f[name] = d / f"{name}.npz"
        np.savez(f[name], **arrays)
    f["npz_garbage"] = d / "garbage.npz"
    f["npz_garbage"].write_bytes(b"not a zip file at all")
    f["a_file"] = d / "a-file"
    f["a_file"].write_text("I am a file")
    lm = ["--hidden-size", "16", "--embedding-size", "8", "--batch-size", "4", "--seq-len", "16"]
    f["lm"] = d / "lm"
    assert run(["train", "charlm", "--text", f["text"], "--out", f["lm"], *lm, "--steps", "4",
                "--no-progress", "--sample", "0"])[0] == 0  # fmt: skip
    f["clf"] = d / "clf"
    assert run(["train", "classify", "--train", f["tsv"], "--out", f["clf"], "--hidden-size",
                "8", "--epochs", "1", "--no-progress"])[0] == 0  # fmt: skip
    return f


def spoil(src: Path, d: Path, name: str, how) -> Path:
    """A copy of the run `src` with its latest/ checkpoint spoilt by `how(latest)`."""
    out = d / name
    shutil.copytree(src, out)
    how(out / "latest")
    return out


def cases(f: dict[str, Path], d: Path) -> list[tuple[str, str, list]]:
    tr = ["train", "charlm", "--out", d / "new", "--no-progress", "--sample", "0"]
    tc = ["train", "classify", "--out", d / "newc", "--no-progress"]
    lm, clf = f["lm"], f["clf"]

    def meta_edit(change):
        def how(latest: Path) -> None:
            doc = json.loads((latest / "meta.json").read_text())
            change(doc)
            (latest / "meta.json").write_text(json.dumps(doc))

        return how

    def truncate(latest: Path) -> None:
        w = latest / "model.safetensors"
        w.write_bytes(w.read_bytes()[:64])

    def pickle_code(latest: Path) -> None:
        torch.save({"x": print}, latest / "train_state.pt")  # a global: needs unpickling

    def forge(latest: Path) -> None:
        pickle_code(latest)
        forged = hashlib.sha256((latest / "train_state.pt").read_bytes()).hexdigest()
        meta_edit(lambda doc: doc["sha256"].update({"train_state.pt": forged}))(latest)

    return [
        ("file", "empty text", [*tr, "--text", f["empty"]]),
        ("file", "binary file as text", [*tr, "--text", f["binary"]]),
        ("file", "Latin-1 text", [*tr, "--text", f["latin1"]]),
        ("file", "text shorter than one window", [*tr, "--text", f["short"]]),
        ("file", "text of one distinct character", [*tr, "--text", f["one_char"]]),
        ("file", "missing text file", [*tr, "--text", d / "nope.txt"]),
        ("file", "a folder as --text", [*tr, "--text", d]),
        ("file", "unknown corpus", [*tr, "--corpus", "klingon"]),
        ("file", "empty TSV", [*tc, "--train", f["empty"]]),
        ("file", "TSV line without a tab", [*tc, "--train", f["no_tab"]]),
        ("file", "TSV line with a label only", [*tc, "--train", f["label_only"]]),
        ("file", "TSV with one label", [*tc, "--train", f["one_label"]]),
        ("file", "non-UTF-8 TSV", [*tc, "--train", f["bad_utf8_tsv"]]),
        (
            "file",
            "validation label unseen in training",
            [*tc, "--train", f["tsv"], "--val", f["unseen"]],
        ),  # fmt: skip
        ("file", "CoNLL file given to train classify", [*tc, "--train", f["conll"]]),
        ("file", "TSV with an extra column", [*tc, "--train", f["extra_column"]]),
        ("file", "TSV line with two tabs (a tab in the text)", [*tc, "--train", f["two_tabs"]]),
        (
            "file",
            "classification TSV given to train tag",
            ["train", "tag", "--train", f["tsv"], "--out", d / "newt", "--no-progress"],
        ),  # fmt: skip
        (
            "file",
            "CoNLL line without a tag",
            ["train", "tag", "--train", f["conll_no_tag"], "--out", d / "newt", "--no-progress"],
        ),  # fmt: skip
        ("file", ".npz without y", [*tc, "--train", f["npz_no_y"]]),
        ("file", ".npz with y of the wrong shape", [*tc, "--train", f["npz_bad_y"]]),
        ("file", ".npz holding NaN", [*tc, "--train", f["npz_nan"]]),
        ("file", ".npz of object arrays (pickles)", [*tc, "--train", f["npz_object"]]),
        ("file", ".npz with lengths beyond T", [*tc, "--train", f["npz_lengths"]]),
        ("file", ".npz with values of 1e36", [*tc, "--train", f["npz_huge"]]),
        ("file", "garbage named .npz", [*tc, "--train", f["npz_garbage"]]),
        ("file", "missing training file", [*tc, "--train", d / "nope.tsv"]),
        (
            "file",
            "a file where --out's folder should be",
            [*tr, "--text", f["text"], "--out", f["a_file"] / "run"],
        ),  # fmt: skip
        ("option", "--hidden-size 0", [*tr, "--text", f["text"], "--hidden-size", "0"]),
        ("option", "--hidden-size -5", [*tr, "--text", f["text"], "--hidden-size", "-5"]),
        ("option", "--dropout 1.5", [*tr, "--text", f["text"], "--dropout", "1.5"]),
        ("option", "--lr -1", [*tr, "--text", f["text"], "--lr", "-1"]),
        ("option", "--batch-size 0", [*tr, "--text", f["text"], "--batch-size", "0"]),
        ("option", "--seq-len 0", [*tr, "--text", f["text"], "--seq-len", "0"]),
        ("option", "--steps -1", [*tr, "--text", f["text"], "--steps", "-1"]),
        ("option", "--minutes -1", [*tr, "--text", f["text"], "--minutes", "-1"]),
        ("option", "--val-fraction 1.5", [*tr, "--text", f["text"], "--val-fraction", "1.5"]),
        (
            "option",
            "--init nosuch",
            [*tr, "--text", f["text"], "--init", "nosuch", "--steps", "1"],
        ),  # fmt: skip
        ("option", "--cell xyz", [*tr, "--text", f["text"], "--cell", "xyz"]),
        ("option", "--hidden-size abc", [*tr, "--text", f["text"], "--hidden-size", "abc"]),
        ("option", "--epochs 0", [*tc, "--train", f["tsv"], "--epochs", "0"]),
        (
            "option",
            "--lr 1e30 (goes NaN)",
            [
                *tr,
                "--text",
                f["text"],
                "--lr",
                "1e30",
                "--hidden-size",
                "16",
                "--batch-size",
                "4",
                "--seq-len",
                "16",
                "--steps",
                "30",
            ],
        ),  # fmt: skip
        (
            "option",
            "--lr 30 (diverges: finite losses of hundreds of nats)",
            [
                *tr,
                "--text",
                f["text"],
                "--lr",
                "30",
                "--warmup",
                "1",
                "--hidden-size",
                "32",
                "--batch-size",
                "4",
                "--seq-len",
                "16",
                "--steps",
                "30",
            ],
        ),  # fmt: skip
        ("option", "sample --temperature -1", ["sample", lm, "--temperature", "-1"]),
        ("option", "sample --top-k 0", ["sample", lm, "--top-k", "0"]),
        ("option", "sample --top-p 1.5", ["sample", lm, "--top-p", "1.5"]),
        ("option", "sample --num 0", ["sample", lm, "--num", "0"]),
        ("option", "sample --length -3", ["sample", lm, "--length", "-3"]),
        ("option", "sample --prime with unknown characters", ["sample", lm, "--prime", "日本"]),
        (
            "option",
            "sample 200 M characters x 1000 streams",
            ["sample", lm, "--num", "1000", "--length", "200000000"],
        ),  # fmt: skip
        ("option", "complete --k 0", ["complete", lm, "To b", "--k", "0"]),
        ("option", "complete a prefix with unknown characters", ["complete", lm, "Zz"]),
        ("option", "inspect --layer 9", ["inspect", lm, "--layer", "9", "--out", d / "v.html"]),
        (
            "option",
            "inspect --cell 99999",
            ["inspect", lm, "--cell", "99999", "--out", d / "v.html"],
        ),  # fmt: skip
        (
            "option",
            "--device cuda without CUDA" if not torch.cuda.is_available() else "(skip)",
            ["sample", lm, "--device", "cuda"],
        ),  # fmt: skip
        (
            "option",
            "--resume with an option it would ignore",
            ["train", "charlm", "--out", lm, "--resume", "--lr", "0.1"],
        ),  # fmt: skip
        (
            "option",
            "a new run into an existing run",
            ["train", "charlm", "--out", lm, "--text", f["text"], "--no-progress"],
        ),  # fmt: skip
        (
            "option",
            "--resume where there is no run",
            ["train", "charlm", "--out", d / "none", "--resume"],
        ),  # fmt: skip
        ("checkpoint", "a missing run", ["sample", d / "missing"]),
        ("checkpoint", "a folder that is no checkpoint", ["sample", d]),
        ("checkpoint", "a classifier given to sample", ["sample", clf]),
        ("checkpoint", "a character model given to predict", ["predict", lm, "hello"]),
        ("checkpoint", "a character model evaluated on --test", ["eval", lm, "--test", f["tsv"]]),
        (
            "checkpoint",
            "truncated weights, resumed",
            ["train", "charlm", "--out", spoil(lm, d, "trunc", truncate), "--resume"],
        ),
        (
            "checkpoint",
            "truncated weights, sampled",
            ["sample", spoil(lm, d, "trunc2", truncate) / "latest"],
        ),  # fmt: skip
        (
            "checkpoint",
            "meta.json not JSON",
            [
                "sample",
                spoil(lm, d, "json", lambda p: (p / "meta.json").write_text("{oops")) / "latest",
            ],
        ),  # fmt: skip
        (
            "checkpoint",
            "meta.json of a newer format",
            [
                "sample",
                spoil(lm, d, "newer", meta_edit(lambda doc: doc.update(format_version=99)))
                / "latest",
            ],
        ),  # fmt: skip
        (
            "checkpoint",
            "meta.json whose kind says tag",
            [
                "sample",
                spoil(lm, d, "kind", meta_edit(lambda doc: doc["meta"].update(kind="tag")))
                / "latest",
            ],
        ),  # fmt: skip
        (
            "checkpoint",
            "train_state.pt that would unpickle code",
            ["train", "charlm", "--out", spoil(lm, d, "pickle", pickle_code), "--resume"],
        ),
        (
            "checkpoint",
            "the same, its sha256 forged in meta.json",
            ["train", "charlm", "--out", spoil(lm, d, "forged", forge), "--resume"],
        ),
    ]


def main_() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="rnnkit-bad-") as tmp:
        d = Path(tmp)
        f = build(d)
        saved = {name: digest(f[name]) for name in ("lm", "clf")}
        for kind, what, argv in cases(f, d):
            if what == "(skip)":
                continue
            code, line = run(argv)
            intact = all(digest(f[name]) == saved[name] for name in ("lm", "clf"))
            line = line.replace(str(d), "DIR")
            rows.append({"kind": kind, "input": what, "exit": code, "message": line,
                         "runs_intact": intact})  # fmt: skip
    print("| kind | input | exit | what it says | saved runs intact |")
    print("|---|---|---|---|---|")
    for r in rows:
        msg = r["message"].replace("|", "\\|")
        print(f"| {r['kind']} | {r['input']} | {r['exit']} | {msg} | {r['runs_intact']} |")
    bad = [r for r in rows if r["exit"] in (0, "traceback") or not r["runs_intact"]]
    print(f"\n{len(rows)} inputs; {len(rows) - len(bad)} refused with one line, runs intact; "
          f"{len(bad)} not: {[r['input'] for r in bad]}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main_())
