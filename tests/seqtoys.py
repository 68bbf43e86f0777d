"""Tiny labelled data in the user-facing formats, for the classify and tag tests."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

FAST = dict(progress=False, lr=1e-2, batch_size=16)  # RunConfig settings of the tiny runs
QUIET = dict(log=lambda msg: None)  # train(...) without the log lines

GOOD = ["great", "fine", "superb", "lovely", "moving"]
BAD = ["dull", "awful", "boring", "weak", "flat"]
FILLER = ["the", "film", "was", "a", "and", "it", "plot", "acting", "story"]


def sentiment_tsv(path: Path, n: int, seed: int) -> Path:
    """label<TAB>text lines whose label is decided by one sentiment word among filler."""
    r = random.Random(seed)
    lines = []
    for _ in range(n):
        label = r.choice(["pos", "neg"])
        words = [r.choice(FILLER) for _ in range(r.randint(1, 9))]
        words.insert(r.randint(0, len(words)), r.choice(GOOD if label == "pos" else BAD))
        lines.append(f"{label}\t{' '.join(words)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def next_token_conll(path: Path, n: int, seed: int) -> Path:
    """token<TAB>tag sentences where a token's tag says whether the NEXT token is "a":
    only a model that reads to the right can get it right."""
    r = random.Random(seed)
    blocks = []
    for _ in range(n):
        tokens = [r.choice("abcd") for _ in range(r.randint(2, 12))]
        tags = ["NEXT-A" if nxt == "a" else "OTHER" for nxt in [*tokens[1:], None]]
        blocks.append("\n".join(f"{t}\t{g}" for t, g in zip(tokens, tags)))
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


def entity_conll(path: Path, n: int, seed: int) -> Path:
    """BIO-tagged sentences: capitalised name pairs are persons, 'in X' places."""
    r = random.Random(seed)
    first, last, places = ["Ann", "Bob", "Cy"], ["Lee", "Roe", "Fox"], ["Rome", "Oslo", "Lima"]
    blocks = []
    for _ in range(n):
        rows = [(w, "O") for w in r.sample(["we", "saw", "today", "then", "met"], 2)]
        rows += [(r.choice(first), "B-PER"), (r.choice(last), "I-PER")]
        rows += [("in", "O"), (r.choice(places), "B-LOC")]
        blocks.append("\n".join(f"{w}\t{t}" for w, t in rows))
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


def numeric_npz(path: Path, n: int, seed: int, *, per_step: bool = False) -> Path:
    """Sequences of 2 channels and 3-10 steps; the label is the sign of channel 0's
    sum (or, per step, the sign of channel 0 at that step), zero padded."""
    rng = np.random.default_rng(seed)
    T = 10
    x = np.zeros((n, T, 2), dtype=np.float32)
    lengths = rng.integers(3, T + 1, size=n)
    for i, L in enumerate(lengths):
        x[i, :L] = rng.normal(size=(L, 2))
    if per_step:
        y = np.where(x[:, :, 0] > 0, "up", "down")
    else:
        y = np.where(x[:, :, 0].sum(1) > 0, "up", "down")
    np.savez(path, x=x, y=y, lengths=lengths)
    return path
