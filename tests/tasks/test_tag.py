"""Sequence tagging (many to many) on tiny data: direction, CRF, padding, metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnkit.data.readers import LabelVocab
from rnnkit.tasks import tag
from rnnkit.tasks.sequences import InputSpec, RunConfig, collate, encode_split
from rnnkit.tasks.tag import SequenceTagger, TagConfig, is_bio
from seqtoys import FAST, QUIET, entity_conll, next_token_conll, numeric_npz
from traces import check_trace


@pytest.fixture
def next_token(tmp_path):
    return {
        "train": next_token_conll(tmp_path / "train.conll", 300, seed=1),
        "test": next_token_conll(tmp_path / "test.conll", 60, seed=2),
    }


def test_bidirectional_beats_unidirectional_when_the_tag_depends_on_the_next_token(
    tmp_path, next_token
):
    acc = {}
    for bidirectional in (False, True):
        config = TagConfig(hidden_size=16, embedding_size=8, bidirectional=bidirectional)
        _, results = tag.train(
            tmp_path / f"run-{bidirectional}", config, RunConfig(epochs=25, **FAST),
            train=next_token["train"], test=next_token["test"], **QUIET,
        )  # fmt: skip
        acc[bidirectional] = results["test"]["accuracy"]
    # P(next token is "a") = 1/4: reading left to right, the best guess is right 3/4 of
    # the time (plus the last token, always OTHER); reading both ways, every time.
    assert acc[True] == 100.0
    assert acc[False] < 85.0


@pytest.mark.parametrize("crf", [False, True])
def test_learns_entities_to_100_percent_entity_f1(tmp_path, crf, capsys):
    train = entity_conll(tmp_path / "train.conll", 200, seed=1)
    test = entity_conll(tmp_path / "test.conll", 40, seed=2)
    config = TagConfig(hidden_size=16, embedding_size=8, chars=True, crf=crf)
    model, results = tag.train(
        tmp_path / "run", config, RunConfig(epochs=10, **FAST), train=train, test=test, **QUIET
    )
    assert results["test"]["entity_f1"] == 100.0
    assert results["test"]["accuracy"] == 100.0
    assert model.predict(["we met Bob Fox in Oslo"]) == [["O", "O", "B-PER", "I-PER", "O", "B-LOC"]]
    assert (model.crf is not None) == crf
    if crf:  # the word layer's two directions over 16 validation sentences padded to 6
        steps = {f"encoder.layers.0.{d}_layer": 6 for d in ("forward", "backward")}
        check_trace(tmp_path / "run", tag, steps, capsys)


def test_tags_numeric_sequences_from_npz(tmp_path):
    train = numeric_npz(tmp_path / "train.npz", 300, seed=1, per_step=True)
    config = TagConfig(hidden_size=8, bidirectional=False)
    model, results = tag.train(
        tmp_path / "run", config, RunConfig(epochs=10, **FAST), train=train, **QUIET
    )
    assert results["val"]["accuracy"] >= 97.0
    x = np.array([[[1.0, 0.0], [-1.0, 0.0], [2.0, 5.0]]], dtype=np.float32)
    assert model.predict_arrays(x) == [["up", "down", "up"]]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("crf", [False, True])
def test_padding_and_batch_composition_do_not_change_tags(next_token, cell, crf):
    raw = tag.read_split(next_token["train"])
    spec = InputSpec.for_words(raw.tokens, chars=True)
    tags = LabelVocab.build(t for s in raw.labels for t in s)
    torch.manual_seed(0)
    config = TagConfig(cell=cell, hidden_size=8, embedding_size=8, chars=True, crf=crf)
    model = SequenceTagger(config, spec, tags).eval()
    ex = encode_split(raw, spec, tags, per_step=True)
    order = sorted(range(len(ex)), key=lambda i: ex.lengths[i])
    mixed = [order[-1], order[0], order[len(order) // 2]]
    with torch.no_grad():
        batch = collate(ex, mixed)
        together = model(batch)
        paths = model.decode(together, batch["lengths"])
        for row, i in enumerate(mixed):
            one = collate(ex, [i])
            alone = model(one)
            n = ex.lengths[i]
            torch.testing.assert_close(together[row, :n], alone[0], rtol=1e-5, atol=1e-6)
            assert paths[row] == model.decode(alone, one["lengths"])[0]


def test_entity_metrics_are_seqevals(tmp_path):
    """Entity F1 counts whole spans: one B-PER/I-PER pair cut short is a miss."""
    from rnnkit.tasks.sequences import Examples

    tags = LabelVocab(["B-PER", "I-PER", "O"])
    model = SequenceTagger(TagConfig(hidden_size=4), InputSpec.for_words([["x"]]), tags)
    gold = [np.array([0, 1, 2]), np.array([0, 2, 0])]  # 3 entities
    pred = [[0, 2, 2], [0, 2, 0]]  # the first span is cut short: 2 of 3 found, 2 of 3 right

    def fake_decode(emissions, lengths):
        return pred

    model.decode = fake_decode
    ex = Examples([{"x": np.ones(len(g), dtype=np.int64)} for g in gold], gold)
    m = tag.evaluate(model, ex)["metrics"]
    assert m["entity_precision"] == pytest.approx(200 / 3)
    assert m["entity_recall"] == pytest.approx(200 / 3)
    assert m["entity_f1"] == pytest.approx(200 / 3)
    assert m["accuracy"] == pytest.approx(100 * 5 / 6)


def test_is_bio():
    assert is_bio(["B-PER", "I-PER", "O"])
    assert not is_bio(["NOUN", "VERB"])
    assert not is_bio(["O"])


def test_a_missing_tag_column_and_an_unseen_tag_name_file_and_line(tmp_path, next_token):
    bad = tmp_path / "bad.conll"
    bad.write_text("a\tOTHER\nb\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.conll:2: .*missing tag column"):
        tag.read_split(bad)
    bad.write_text("a\tOTHER\n\nb\tOTHER\nc\tVERB\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.conll:4: label 'VERB' was never seen"):
        tag.train(
            tmp_path / "run", TagConfig(hidden_size=4), RunConfig(epochs=1, **FAST),
            train=next_token["train"], test=bad, **QUIET,
        )  # fmt: skip


def test_npz_errors_name_the_file(tmp_path):
    f = tmp_path / "x.npz"
    np.savez(f, x=np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"x\.npz: missing array 'y'"):
        tag.read_split(f)
    np.savez(f, x=np.zeros((3, 4)), y=np.zeros(3))
    with pytest.raises(ValueError, match=r"x\.npz: `y` must have shape \(3, 4\)"):
        tag.read_split(f)
    np.savez(f, x=np.zeros((3, 4)), y=np.zeros((3, 4)), lengths=np.array([1, 5, 2]))
    with pytest.raises(ValueError, match=r"x\.npz: `lengths` must be"):
        tag.read_split(f)
    f.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match=r"x\.npz: not a NumPy \.npz"):
        tag.read_split(f)
