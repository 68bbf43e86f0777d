"""Property-based tests (hypothesis): every reader, given any bytes or text, returns a
result or raises one clear ValueError -- never another exception, never a hang."""

from __future__ import annotations

import io
import string
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rnnkit.data.corpora import Vocab, load_text
from rnnkit.data.readers import (
    LabelVocab,
    WordVocab,
    read_conll,
    read_npz,
    read_tsv,
    tokenize,
)
from rnnkit.data.signals import parse_ts

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# Text that looks like the formats: tabs, newlines, separators, a few letters, odd bytes.
ALPHABET = st.sampled_from([*"ab \t\n\r:,#@.-1", "\ufeff", "é", "\x00", "B-X", "O", "true"])
TEXTISH = st.lists(ALPHABET, max_size=80).map("".join)
RAW = st.one_of(st.binary(max_size=200), TEXTISH.map(lambda t: t.encode("utf-8")))


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@SETTINGS
@given(data=RAW)
@example(data=b"\n\xef\xbb\xbf\t\x01")  # a byte-order mark opening the second line
def test_tsv_conll_and_text_readers_answer_or_refuse_by_name(tmp_path, data):
    path = write(tmp_path, "f.txt", data)
    for read in (read_tsv, read_conll, load_text):
        try:
            out = read(path)
        except ValueError as err:
            assert str(path) in str(err)  # the error names the file
        else:
            assert out  # a result is never empty
    if not data:
        return
    try:
        rows = read_tsv(path, with_lines=True)
    except ValueError:
        return
    for label, text, n in rows:  # what a TSV yields is always a real label and text
        assert label.strip() == label and label and text and n >= 1
        assert "\t" not in label and not label.startswith("\ufeff")
        assert "\t" not in text  # exactly two fields: nothing folded into the text


@SETTINGS
@given(text=TEXTISH)
def test_ts_parser_answers_or_names_the_line(text):
    try:
        series, labels, classes = parse_ts(text, "x.ts")
    except ValueError as err:
        assert str(err).startswith("x.ts")
    else:
        assert len(series) == len(labels) > 0 and all(s.ndim == 2 for s in series)


@SETTINGS
@given(
    shape=st.sampled_from([(3,), (3, 4), (3, 4, 2), (0, 4), (3, 0), (2, 3, 1, 1)]),
    y_shape=st.sampled_from([(3,), (3, 4), (2,), ()]),
    lengths=st.one_of(st.none(), st.lists(st.integers(-2, 6), min_size=3, max_size=3)),
    bad=st.sampled_from([None, np.nan, np.inf, "text"]),
    per_step=st.booleans(),
)
def test_npz_reader_answers_or_refuses_by_name(tmp_path, shape, y_shape, lengths, bad, per_step):
    x = np.zeros(shape, dtype=object if bad == "text" else np.float32)
    if bad is not None and x.size:
        x.flat[0] = bad
    arrays = {"x": x, "y": np.zeros(y_shape, dtype=np.int64)}
    if lengths is not None:
        arrays["lengths"] = np.asarray(lengths)
    buf = io.BytesIO()
    try:
        np.savez(buf, **arrays)
    except ValueError:  # NumPy itself cannot store it
        return
    path = write(tmp_path, "d.npz", buf.getvalue())
    try:
        split = read_npz(path, per_step=per_step)
    except ValueError as err:
        assert str(path) in str(err)
    else:
        assert split.x.ndim == 3 and np.isfinite(split.x).all()
        assert len(split.labels) == len(split.x) == len(split.lengths)


@SETTINGS
@given(text=st.text(max_size=60))
def test_tokens_and_vocabularies_round_trip(text):
    tokens = tokenize(text)
    assert all(t.strip() == t and t for t in tokens)
    words = WordVocab.build([tokens])
    assert words.encode(tokens) == [words.index[t] for t in tokens]
    if text:
        chars = Vocab.from_text(text)
        assert chars.decode(chars.encode(text)) == text
        with pytest.raises(ValueError):
            chars.encode(text + "\U0001f600" if "\U0001f600" not in text else text + "\x7f\x80")
    labels = sorted(set(tokens)) or ["x"]
    vocab = LabelVocab(labels)
    with pytest.raises(ValueError, match="never seen in training"):
        vocab.encode(["".join(labels) + "?"], "f.tsv:1")


@SETTINGS
@given(name=st.text(alphabet=string.ascii_letters, min_size=1, max_size=8))
def test_missing_files_are_named(tmp_path, name):
    for read in (read_tsv, read_conll):
        with pytest.raises(FileNotFoundError, match=name):
            read(tmp_path / f"{name}.txt")


WORD = st.text(alphabet=string.ascii_letters + "'.,-", min_size=1, max_size=6)
TAG = st.sampled_from(["O", "B-PER", "I-PER", "B-LOC", "NOUN", "VERB"])
SENTENCE = st.lists(st.tuples(WORD, TAG), min_size=1, max_size=6)


@SETTINGS
@given(
    sentences=st.lists(SENTENCE, min_size=2, max_size=5),
    gap=st.sampled_from(["\n", "\n\n", "\t\n", " \n"]),
    extra=st.integers(0, 2),  # columns between the token and the tag
)
def test_conll_reads_back_and_is_refused_as_tsv(tmp_path, sentences, gap, extra):
    tokens = {w for s in sentences for w, _ in s}
    tags = {t for s in sentences for _, t in s}
    between = "X\t" * extra
    text = gap.join("".join(f"{w}\t{between}{t}\n" for w, t in s) for s in sentences)
    path = write(tmp_path, "d.conll", text.encode())
    assert read_conll(path) == [([w for w, _ in s], [t for _, t in s]) for s in sentences]
    if len(tokens) >= len(tags):  # tokens vary at least as much as tags: clearly CoNLL
        with pytest.raises(ValueError, match=r"d\.conll:1: looks like a CoNLL file"):
            read_tsv(path)


@SETTINGS
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(["pos", "neg", "mixed"]), st.lists(WORD, min_size=1, max_size=5)),
        min_size=1,
        max_size=8,
    ),
    bad=st.integers(0, 7),
    fields=st.integers(3, 5),
    at=st.integers(0, 6),
)
def test_tsv_reads_back_and_a_third_field_is_refused_by_line(tmp_path, rows, bad, fields, at):
    lines = [f"{label}\t{' '.join(words)}" for label, words in rows]
    path = write(tmp_path, "d.tsv", "\n".join(lines).encode())
    assert read_tsv(path) == [(label, " ".join(words)) for label, words in rows]
    several = [n for n, (_, words) in enumerate(rows, 1) if len(words) > 1]
    if several:  # a text of several words, read as CoNLL, would be a tag with spaces
        with pytest.raises(ValueError, match=rf"d\.tsv:{several[0]}: the tag .* holds spaces"):
            read_conll(path)
    bad %= len(lines)
    words = rows[bad][1]
    k = at % (len(words) + 1)  # the tabs go between two words, or at either end
    tabs = "\t" * (fields - 2)
    lines[bad] = f"{rows[bad][0]}\t{' '.join(words[:k])}{tabs}{' '.join(words[k:])}"
    path = write(tmp_path, "d.tsv", "\n".join(lines).encode())
    with pytest.raises(ValueError, match=rf"d\.tsv:{bad + 1}: {fields} tab-separated fields"):
        read_tsv(path)
