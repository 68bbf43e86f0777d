"""Reading labelled sequences: the user's files and the prepared built-in ones.

The formats of sequence classification and tagging:

* TSV, one example per line: ``label<TAB>text``, exactly two tab-separated fields (a
  tab inside the text, or a third column, is refused by line: it is not clear what it
  would mean);
* CoNLL-style columns, one token per line: ``token<TAB>tag`` (extra columns between
  are allowed; the first is the token, the last the tag, which holds no spaces), a
  blank line between sentences, ``-DOCSTART-`` lines ignored;
* ``.npz`` numeric sequences: ``x`` (N, T) or (N, T, C), ``y`` (N,) labels or (N, T)
  tags, optional ``lengths`` (N,).

(The ``.ts`` time-series format of the UEA archive is read in :mod:`.signals`.)

Every problem is a ValueError that names the file and the line: an empty or
non-UTF-8 file, a line without a label or a tag, a label the model never saw -- and
a file of the other format: a CoNLL file given as TSV (every line one token and its
tag, blank lines between sentences) or a TSV given as CoNLL (a "tag" with spaces in it)
is refused as such, not read as something else.
A :class:`RawSplit` holds one split before encoding, with ``file:line`` of every
example. :class:`WordVocab` maps tokens to ids with a minimum frequency and an
unknown token; :class:`LabelVocab` maps labels or tags to ids and refuses unknown
ones by name.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .corpora import load_text

PathLike = str | os.PathLike
OBJECT_ARRAYS = "it holds object arrays (pickled Python objects), which rnnkit never loads"

PAD, UNK = "<pad>", "<unk>"
_TOKEN = re.compile(r"\w+(?:[-']\w+)*|[^\w\s]+")


def tokenize(text: str) -> list[str]:
    """Words, with punctuation runs as tokens of their own: "isn't bad." -> isn't, bad, ."""
    return _TOKEN.findall(text)


def _lines(path: PathLike) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty")
    text = load_text(path)  # refuses binary and non-UTF-8 files by offset
    # a byte-order mark is not a label: at the start of the file, or of any line (files
    # joined with `cat` keep each one's mark)
    return [line.removeprefix("\ufeff") for line in text.splitlines()]


# white space and the byte-order mark (a zero-width no-break space that str.strip keeps)
_BLANKS = "".join(c for c in map(chr, range(0x3001)) if c.isspace()) + "\ufeff"


def _trim(field: str) -> str:
    """A field without the blanks around it, byte-order marks counted as blanks."""
    return field.strip(_BLANKS)


LOOKS_CONLL = (
    "looks like a CoNLL file (one token and its tag per line, blank lines between "
    "sentences): that is `rnnkit train tag` input; classify reads 'label<TAB>text' lines"
)
LOOKS_TSV = (
    "looks like a 'label<TAB>text' file (`rnnkit train classify` input); tag reads "
    "'token<TAB>tag' lines, one token per line, blank lines between sentences"
)


def _columns(line: str) -> list[str]:
    """The columns of a CoNLL line: split at tabs, else at whitespace."""
    return line.split("\t") if "\t" in line else line.split()


def _conll_line(lines: Sequence[str]) -> int | None:
    """The first line of `lines` (1-based) if, read as TSV, they are clearly CoNLL
    columns; else None. Clearly: a ``-DOCSTART-`` line; or every line holds the same
    number (2 or more) of one-word columns, blank lines split them into two sentences
    or more, and the first column varies at least as much as the last (tokens vary
    more than tags; a TSV's labels vary less than its texts)."""
    width, first, last, sentences, in_sentence, start = None, set(), set(), 0, False, None
    for n, line in enumerate(lines, 1):
        if line.startswith("-DOCSTART-"):
            return n
        if not line.strip():
            in_sentence = False
            continue
        cols = _columns(line)
        if len(cols) < 2 or any(len(c.split()) != 1 for c in cols):
            return None  # a column of several words (or none): a text, not a token
        if width is None:
            width, start = len(cols), n
        elif len(cols) != width:
            return None
        first.add(cols[0].strip())
        last.add(cols[-1].strip())
        sentences += not in_sentence
        in_sentence = True
    return start if sentences >= 2 and len(first) >= len(last) else None


def read_tsv(path: PathLike, *, with_lines: bool = False) -> list[tuple]:
    """(label, text) pairs of a ``label<TAB>text`` file; blank lines are skipped.
    With ``with_lines=True``: (label, text, line number) triples.

    Each line holds exactly two tab-separated fields; a third (an extra column, a tab
    in the text) is a ValueError naming the line, and so is a CoNLL file
    (:func:`_conll_line`), which would otherwise read as one-word examples labelled
    by their tokens."""
    lines = _lines(path)
    conll = _conll_line(lines)
    if conll is not None:
        raise ValueError(f"{path}:{conll}: {LOOKS_CONLL}")
    examples = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) > 2:
            raise ValueError(
                f"{path}:{n}: {len(fields)} tab-separated fields, expected 2 "
                f"('label<TAB>text'; a tab inside the text must be a space): {line[:80]!r}"
            )
        label, text = (_trim(f) for f in fields) if len(fields) == 2 else (fields[0], "")
        if len(fields) < 2 or not label or not text:
            raise ValueError(
                f"{path}:{n}: expected 'label<TAB>text', got {line[:80]!r}"
                + (" (no tab)" if len(fields) < 2 else "")
            )
        examples.append((label, text, n) if with_lines else (label, text))
    if not examples:
        raise ValueError(f"{path} holds no examples (only blank lines)")
    return examples


def read_pairs(path: PathLike) -> list[tuple[str, str, int]]:
    """(source, target, line number) triples of a ``source<TAB>target`` file (the
    encoder-decoder's input); blank lines are skipped. A line without a tab, with a third
    field, or with an empty side is a ValueError naming the file and line."""
    lines = _lines(path)
    pairs = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            why = "no tab" if len(fields) == 1 else f"{len(fields)} tab-separated fields"
            raise ValueError(
                f"{path}:{n}: expected 'source<TAB>target' ({why}; a tab inside a text must "
                f"be a space): {line[:80]!r}"
            )
        source, target = (f.strip() for f in fields)
        for side, text in (("source", source), ("target", target)):
            if not text:
                raise ValueError(f"{path}:{n}: the {side} is empty: {line[:80]!r}")
        pairs.append((source, target, n))
    if not pairs:
        raise ValueError(f"{path} holds no pairs (only blank lines)")
    return pairs


def read_conll(path: PathLike, *, with_lines: bool = False) -> list[tuple]:
    """(tokens, tags) per sentence of a ``token<TAB>tag`` column file. With
    ``with_lines=True``: (tokens, tags, line number of each token) triples."""
    sentences: list[tuple] = []
    tokens: list[str] = []
    tags: list[str] = []
    numbers: list[int] = []

    def close() -> None:
        sentences.append((tokens, tags, numbers) if with_lines else (tokens, tags))

    for n, line in enumerate(_lines(path), 1):
        if line.startswith("-DOCSTART-"):
            continue
        if not line.strip():
            if tokens:
                close()
                tokens, tags, numbers = [], [], []
            continue
        cols = _columns(line)
        if len(cols) < 2 or not cols[0] or not cols[-1].strip():
            raise ValueError(
                f"{path}:{n}: expected 'token<TAB>tag', got {line[:80]!r} (missing tag column)"
            )
        if len(cols[-1].split()) > 1:  # a tag of several words: a TSV's text
            raise ValueError(f"{path}:{n}: the tag {cols[-1][:60]!r} holds spaces: {LOOKS_TSV}")
        tokens.append(cols[0])
        tags.append(cols[-1].strip())
        numbers.append(n)
    if tokens:
        close()
    if not sentences:
        raise ValueError(f"{path} holds no sentences")
    return sentences


@dataclass
class WordVocab:
    """Tokens -> ids: ``<pad>`` is 0, ``<unk>`` 1, then the kept tokens by frequency."""

    tokens: list[str] = field(default_factory=lambda: [PAD, UNK])
    lower: bool = False

    def __post_init__(self) -> None:
        if self.tokens[:2] != [PAD, UNK]:
            raise ValueError(f"a WordVocab starts with {PAD!r}, {UNK!r}; got {self.tokens[:2]}")
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(
        cls,
        sentences: Iterable[Sequence[str]],
        *,
        min_freq: int = 1,
        lower: bool = False,
        specials: Sequence[str] = (),
    ) -> WordVocab:
        """Keep tokens seen at least `min_freq` times, most frequent first (ties in
        first-seen order), after ``<pad>``, ``<unk>`` and the `specials` (e.g.
        ``<start>``, ``<end>``: ids 2, 3)."""
        if not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"Argument `min_freq` must be a positive integer, got {min_freq!r}")
        counts = Counter(t.lower() if lower else t for s in sentences for t in s)
        reserved = {PAD, UNK, *specials}
        kept = [t for t, c in counts.most_common() if c >= min_freq and t not in reserved]
        return cls([PAD, UNK, *specials, *kept], lower)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Ids of `tokens`; tokens outside the vocabulary become ``<unk>`` (1)."""
        index = self.index
        return [index.get(t.lower() if self.lower else t, 1) for t in tokens]

    def to_dict(self) -> dict:
        return {"tokens": self.tokens, "lower": self.lower}

    @classmethod
    def from_dict(cls, d: dict) -> WordVocab:
        return cls(list(d["tokens"]), bool(d.get("lower", False)))


@dataclass
class LabelVocab:
    """Labels (or tags) -> ids, in sorted order; unknown labels are refused by name."""

    labels: list[str]

    def __post_init__(self) -> None:
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"a LabelVocab needs distinct labels, got {self.labels!r}")
        self.index = {label: i for i, label in enumerate(self.labels)}

    @classmethod
    def build(cls, labels: Iterable[str]) -> LabelVocab:
        return cls(sorted(set(labels)))

    def __len__(self) -> int:
        return len(self.labels)

    def encode(self, labels: Sequence[str], where: str = "") -> list[int]:
        """Ids of `labels`; a label never seen in training is a ValueError naming it
        (and `where`, e.g. ``"test.tsv:12"``) with the known ones."""
        out = []
        for label in labels:
            i = self.index.get(label)
            if i is None:
                known = ", ".join(repr(x) for x in self.labels[:20])
                at = f"{where}: " if where else ""
                raise ValueError(
                    f"{at}label {label!r} was never seen in training; the model knows {known}"
                )
            out.append(i)
        return out

    def to_dict(self) -> dict:
        return {"labels": self.labels}

    @classmethod
    def from_dict(cls, d: dict) -> LabelVocab:
        return cls(list(d["labels"]))


# -- splits ------------------------------------------------------------------------------


@dataclass
class RawSplit:
    """One split before encoding: words (lists of tokens) or numeric frames, with the
    raw labels and where each example came from (``file:line``) for error messages."""

    tokens: list[list[str]] | None  # words
    x: np.ndarray | None  # numeric (N, T, C)
    lengths: np.ndarray | None
    labels: list[Any]  # a label per example, or a list of tags per example
    where: list[Any]  # "file:line" per example, or a list of them per token

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: Sequence[int]) -> RawSplit:
        pick = lambda seq: None if seq is None else [seq[i] for i in idx]  # noqa: E731
        return RawSplit(
            pick(self.tokens),
            None if self.x is None else self.x[idx],
            None if self.lengths is None else self.lengths[idx],
            pick(self.labels),
            pick(self.where),
        )


def read_npz(path: PathLike, *, per_step: bool) -> RawSplit:
    """An ``.npz`` of numeric sequences: ``x`` (N, T) or (N, T, C), ``y`` (N,) labels or,
    with `per_step`, (N, T) tags (numbers or strings), optional ``lengths`` (N,)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        f = np.load(path, allow_pickle=False)
    except (ValueError, OSError):  # NumPy's message would suggest allow_pickle: never
        raise ValueError(
            f"{path}: not a NumPy .npz file of arrays (rnnkit never loads pickled objects)"
        ) from None
    with f:
        missing = [k for k in ("x", "y") if k not in f.files]
        if missing:
            raise ValueError(
                f"{path}: missing array {', '.join(map(repr, missing))}; an .npz needs `x` "
                f"(N, T[, C]) and `y` ({'(N, T) tags' if per_step else '(N,) labels'})"
            )
        try:  # an object array would need unpickling: refused by NumPy, named here
            arrays = {k: f[k] for k in ("x", "y", "lengths") if k in f.files}
        except ValueError:
            raise ValueError(f"{path}: {OBJECT_ARRAYS}") from None
        x, lengths = check_numeric(arrays["x"], arrays.get("lengths"), path)
        y = arrays["y"]
    N, T = x.shape[:2]
    want = (N, T) if per_step else (N,)
    if y.shape != want:
        raise ValueError(f"{path}: `y` must have shape {want}, got {y.shape}")
    if per_step:
        labels = [[str(v) for v in y[i, : lengths[i]]] for i in range(N)]
        where = [[f"{path}[{i}, {t}]" for t in range(lengths[i])] for i in range(N)]
    else:
        labels = [str(v) for v in y]
        where = [f"{path}[{i}]" for i in range(N)]
    return RawSplit(None, x, lengths, labels, where)


def check_numeric(x: np.ndarray, lengths: np.ndarray | None, where: str) -> tuple:
    """(N, T, C) float32 frames and (N,) lengths from an array of (N, T) or (N, T, C)."""
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or not np.issubdtype(x.dtype, np.number):
        raise ValueError(
            f"{where}: `x` must be a numeric array (N, T) or (N, T, C), got "
            f"{x.dtype} of shape {x.shape}"
        )
    N, T = x.shape[:2]
    if lengths is None:
        lengths = np.full(N, T, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.shape != (N,) or (lengths < 1).any() or (lengths > T).any():
        raise ValueError(
            f"{where}: `lengths` must be (N,)=({N},) integers in [1, {T}], got shape "
            f"{lengths.shape} with values in [{lengths.min()}, {lengths.max()}]"
        )
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{where}: `x` holds NaN or infinite values")
    return x, lengths


def read_arrays(path: PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` and the optional ``lengths`` of an ``.npz`` of unlabelled numeric sequences
    (for prediction; checked by the model that reads them)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with np.load(path, allow_pickle=False) as f:
        if "x" not in f.files:
            raise ValueError(f"{path}: missing array 'x' (N, T[, C])")
        try:
            return f["x"], f["lengths"] if "lengths" in f.files else None
        except ValueError:  # an object array, which would need unpickling
            raise ValueError(f"{path}: {OBJECT_ARRAYS}") from None


def read_tsv_split(path: PathLike) -> RawSplit:
    rows = read_tsv(path, with_lines=True)
    tokens = []
    for _, text, n in rows:
        t = tokenize(text)
        if not t:
            raise ValueError(f"{path}:{n}: the text {text!r} has no words")
        tokens.append(t)
    return RawSplit(tokens, None, None, [r[0] for r in rows], [f"{path}:{r[2]}" for r in rows])


def read_conll_split(path: PathLike) -> RawSplit:
    sentences = read_conll(path, with_lines=True)
    return RawSplit(
        [s[0] for s in sentences],
        None,
        None,
        [s[1] for s in sentences],
        [[f"{path}:{n}" for n in s[2]] for s in sentences],
    )


def split_indices(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A fixed random split of range(n): (the rest, `fraction` of it)."""
    perm = np.random.default_rng(seed).permutation(n)
    k = max(1, int(round(n * fraction)))
    if k >= n:
        raise ValueError(f"cannot hold out {fraction:.0%} of {n} examples for validation")
    return sorted(perm[k:].tolist()), sorted(perm[:k].tolist())
