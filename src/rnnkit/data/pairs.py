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

``bible-en-es`` (and ``bible-es-en``, the same pairs the other way): verse-aligned
English and Spanish, the World English Bible (2015 edition) and the Reina-Valera 1909,
both public domain, from Debian's SWORD packages ``sword-text-web`` 426.0-1 and
``sword-text-sparv`` 2.60-1 (zText modules, read in memory; `pysword` knows the verse
numbering). Both modules use the KJV verse numbering, so a pair is one Book
Chapter:Verse key present and non-empty in both: 31,053 pairs. The OSIS markup is
removed (footnotes and section headings with their text, word tags without theirs; a
psalm's title is part of the text in both). The split is by book, so the test verses
come from books never seen in training: test Ruth, Esther, Jonah, Mark, Galatians and
James (1,234 verses); validation Joel, Micah, Colossians, Titus, 1 Peter and Jude
(448); training the other 54 books (29,371).

Every set is cached as one ``split<TAB>source<TAB>target`` file in ``$RNNKIT_DATA``,
written atomically.
"""

from __future__ import annotations

import html
import random
import re
import struct
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import atomic_write_bytes
from .fetch import (
    ChecksumError,
    Package,
    cache_dir,
    deb_files,
    download_package,
    tar_member,
)

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


BIBLES = {  # language: (package, SWORD module)
    "en": (
        Package(
            "debian",
            "sword-text-web",
            "426.0-1",
            "930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1",
        ),
        "engWEB2015eb",
    ),
    "es": (
        Package(
            "debian",
            "sword-text-sparv",
            "2.60-1",
            "5c87f9b2bc97457e8a872f5bae7ea7ce59cb3de1dcee73e4d4740451863694cf",
        ),
        "spaRV1909eb",
    ),
}
BIBLE_HELD_OUT = {  # OSIS book names
    "test": ("Ruth", "Esth", "Jonah", "Mark", "Gal", "Jas"),
    "val": ("Joel", "Mic", "Col", "Titus", "1Pet", "Jude"),
}
_SWORD_FILES = ("ot.bzs", "ot.bzv", "ot.bzz", "nt.bzs", "nt.bzv", "nt.bzz")


def osis_text(raw: str) -> str:
    """The plain text of an OSIS verse: footnotes, cross references and headings go with
    their text; other tags (``<w lemma=...>``, paragraph marks) go, their text stays."""
    raw = re.sub(r"<note\b[^>]*>.*?</note>", " ", raw, flags=re.S)
    # a section heading goes; a psalm's title is scripture (canonical) and stays
    raw = re.sub(r'<title\b(?![^>]*canonical="true")[^>]*>.*?</title>', " ", raw, flags=re.S)
    raw = re.sub(r"<[^>]*>", " ", raw)  # a space: "</w><w>" must not glue two words
    text = " ".join(html.unescape(raw).split())
    # the spaces that tags left inside punctuation: "word ," and "¡ Oh"
    return re.sub(r"([¡¿(«“‘]) ", r"\1", re.sub(r" ([,.;:!?»)”’])", r"\1", text))


def bible_verses(lang: str) -> dict[tuple[str, int, int], str]:
    """{(OSIS book, chapter, verse): plain text} of one Bible of `BIBLES`, its empty
    verses left out. The module's files are read in memory (:func:`ztext_verses`); the
    KJV numbering (which verse is at which index) is `pysword`'s."""
    package, module = BIBLES[lang]
    folder = f"usr/share/sword/modules/texts/ztext/{module}/"
    with tempfile.TemporaryDirectory(prefix="rnnkit-fetch-") as tmp:
        files = deb_files(download_package(package, Path(tmp)), [folder + f for f in _SWORD_FILES])
    return ztext_verses({name.rsplit("/", 1)[1]: data for name, data in files.items()})


def ztext_verses(files: dict[str, bytes]) -> dict[tuple[str, int, int], str]:
    """The verses of a SWORD zText module in the KJV numbering, from its six files
    (``ot.bzs``, ``ot.bzv``, ``ot.bzz`` and the same for ``nt``).

    ``.bzv`` holds one record per verse index, (block u32, start u32, size u16); ``.bzs``
    one per block, (offset u32, size u32, uncompressed size u32) into ``.bzz``, whose
    blocks are zlib streams (here one per book). Each block is inflated once.
    """
    from pysword.books import BibleStructure

    structure = BibleStructure("kjv")
    verses = {}
    for testament, books in structure.get_books().items():
        bzv, bzs, bzz = (files[f"{testament}.bz{x}"] for x in "vsz")
        blocks: dict[int, bytes] = {}
        for book in books:
            keys = [
                (book.osis_name, c + 1, v + 1)
                for c, n in enumerate(book.chapter_lengths)
                for v in range(n)
            ]
            indices = structure.ref_to_indicies(books=[book.name])[testament]
            for key, i in zip(keys, indices, strict=True):
                if 10 * (i + 1) > len(bzv):
                    continue  # past the module's last verse
                block, start, size = struct.unpack_from("<IIH", bzv, 10 * i)
                if size == 0:
                    continue
                if block not in blocks:
                    offset, length, _ = struct.unpack_from("<III", bzs, 12 * block)
                    blocks[block] = zlib.decompress(bzz[offset : offset + length])
                raw = blocks[block][start : start + size].decode("utf-8")
                if text := osis_text(raw):
                    verses[key] = text
    return verses


def _bible() -> list[tuple[str, str, str]]:
    en, es = bible_verses("en"), bible_verses("es")
    split = {b: s for s, books in BIBLE_HELD_OUT.items() for b in books}
    return [(split.get(k[0], "train"), en[k], es[k]) for k in en if k in es]


def _bible_reversed() -> list[tuple[str, str, str]]:
    splits = load_pairs("bible-en-es")
    return [(s, es, en) for s in SPLITS for en, es in splits[s]]


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
    "bible-en-es": PairSet(
        "bible-en-es",
        "English -> Spanish Bible verses (World English Bible, Reina-Valera 1909); "
        "split by book: test verses from unseen books",
        "Debian: sword-text-web 426.0-1, sword-text-sparv 2.60-1",
        "31,053 pairs",
        _bible,
    ),
    "bible-es-en": PairSet(
        "bible-es-en",
        "Spanish -> English: bible-en-es the other way",
        "bible-en-es",
        "31,053 pairs",
        _bible_reversed,
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
