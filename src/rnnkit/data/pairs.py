"""Sequence pairs for the encoder-decoder (``rnnkit train seq2seq``): a source and the
target it should become, with fixed train / validation / test splits.

``numbers``: the numbers 0 to 9,999 written in English words and in French words, made
with `num2words` (``"two hundred and thirty-one"`` -> ``"deux cent trente et un"``). The
model has to learn the structure of both spellings, not a list: the test numbers are
never seen in training (a fixed random 80 / 10 / 10 split of the 10,000). A small model
gets most of them right in a minute; the demo and the tests use it.

Every set is cached as one ``split<TAB>source<TAB>target`` file in ``$RNNKIT_DATA``,
written atomically.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import atomic_write_bytes
from .fetch import cache_dir

Pair = tuple[str, str]
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class PairSet:
    name: str
    description: str
    source: str  # where it comes from, for `rnnkit data list`
    size: str
    make: Callable[[], list[tuple[str, str, str]]]  # (split, source, target) rows

    @property
    def path(self) -> Path:
        return cache_dir() / f"{self.name}.tsv"


def _numbers() -> list[tuple[str, str, str]]:
    from num2words import num2words

    numbers = list(range(10_000))
    random.Random(0).shuffle(numbers)
    rows = []
    for k, n in enumerate(numbers):
        split = "train" if k < 8_000 else "val" if k < 9_000 else "test"
        rows.append((split, num2words(n, lang="en"), num2words(n, lang="fr")))
    return rows


PAIR_SETS = {
    "numbers": PairSet(
        "numbers",
        "0-9,999 in English words -> French words (num2words); 8,000 / 1,000 / 1,000",
        "PyPI: num2words (generated)",
        "10,000 pairs",
        _numbers,
    ),
}


def fetch_pairs(name: str, *, log: Callable[[str], None] = lambda msg: None) -> Path:
    """The cached file of pair set `name`, made on first use."""
    pairs = PAIR_SETS[name]
    path = pairs.path
    if path.is_file():  # written atomically: present means complete
        return path
    log(f"{name}: generating {pairs.size} ({pairs.source}) ...")
    for split, *texts in (rows := pairs.make()):
        if split not in SPLITS or any("\t" in t or "\n" in t or not t.strip() for t in texts):
            raise ValueError(f"{name}: a bad row {(split, *texts)!r}")  # a bug, not user input
    text = "".join(f"{s}\t{a}\t{b}\n" for s, a, b in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode("utf-8"))
    log(f"{name}: written to {path}")
    return path


def load_pairs(name: str, log: Callable[[str], None] = lambda msg: None) -> dict[str, list[Pair]]:
    """{"train", "val", "test"} -> (source, target) pairs of built-in set `name`."""
    out: dict[str, list[Pair]] = {s: [] for s in SPLITS}
    path = fetch_pairs(name, log=log)
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split("\t")
        if len(fields) != 3 or fields[0] not in out:
            raise ValueError(
                f"{path}:{n}: not a 'split<TAB>source<TAB>target' line; delete the file"
            )
        out[fields[0]].append((fields[1], fields[2]))
    return out
