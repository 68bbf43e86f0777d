"""Sequence classification (many to one) on tiny data: learning, padding, resuming."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from rnnkit.data.readers import LabelVocab
from rnnkit.tasks import classify
from rnnkit.tasks.classify import ClassifyConfig, SequenceClassifier
from rnnkit.tasks.sequences import InputSpec, RunConfig, collate, encode_split
from seqtoys import FAST, QUIET, numeric_npz, sentiment_tsv
from traces import check_trace


@pytest.fixture
def toy(tmp_path):
    return {
        "train": sentiment_tsv(tmp_path / "train.tsv", 240, seed=1),
        "test": sentiment_tsv(tmp_path / "test.tsv", 60, seed=2),
    }


@pytest.mark.parametrize("pool", ["last", "mean", "max"])
def test_learns_a_separable_toy_problem_to_100_percent(tmp_path, toy, pool, capsys):
    config = ClassifyConfig(hidden_size=16, embedding_size=16, pool=pool)
    model, results = classify.train(
        tmp_path / "run", config, RunConfig(epochs=25, **FAST),
        train=toy["train"], test=toy["test"], **QUIET,
    )  # fmt: skip
    assert results["test"]["accuracy"] == 100.0
    assert results["test"]["macro_f1"] == 100.0
    assert [p[0][0] for p in model.predict(["a superb story", "the plot was dull"])] == [
        "pos",
        "neg",
    ]
    assert (tmp_path / "run" / "confusion.png").stat().st_size > 1000
    if pool == "last":  # both directions, over the 16 validation sentences padded to 9
        steps = {f"summary.encoder.layers.0.{d}_layer": 9 for d in ("forward", "backward")}
        check_trace(tmp_path / "run", classify, steps, capsys)


def test_numeric_sequences_from_npz(tmp_path):
    train = numeric_npz(tmp_path / "train.npz", 400, seed=1)
    test = numeric_npz(tmp_path / "test.npz", 100, seed=2)
    config = ClassifyConfig(hidden_size=16, bidirectional=False)
    model, results = classify.train(
        tmp_path / "run", config, RunConfig(epochs=15, **FAST), train=train, test=test, **QUIET
    )
    assert results["test"]["accuracy"] >= 95.0
    x = np.zeros((2, 4, 2), dtype=np.float32)
    x[0, :, 0], x[1, :, 0] = 2.0, -2.0
    assert [p[0][0] for p in model.predict_arrays(x)] == ["up", "down"]
    with pytest.raises(ValueError, match="2 channels per step, got 3"):
        model.predict_arrays(np.zeros((1, 4, 3)))


def _model(config: ClassifyConfig, spec: InputSpec) -> SequenceClassifier:
    torch.manual_seed(0)
    return SequenceClassifier(config, spec, LabelVocab(["neg", "pos"])).eval()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("pool", ["last", "mean", "max"])
def test_padding_and_batch_composition_do_not_change_predictions(toy, cell, pool):
    raw = classify.read_split(toy["train"])
    config = ClassifyConfig(cell=cell, hidden_size=8, embedding_size=8, pool=pool, chars=True)
    spec = InputSpec.for_words(raw.tokens, chars=True)
    model = _model(config, spec)
    ex = encode_split(raw, spec, model.labels, per_step=False)
    order = sorted(range(len(ex)), key=lambda i: ex.lengths[i])
    mixed = [order[0], order[-1], order[len(order) // 2]]  # shortest, longest, middle
    with torch.no_grad():
        together = model(collate(ex, mixed))
        alone = torch.cat([model(collate(ex, [i])) for i in mixed])
    assert max(ex.lengths[i] for i in mixed) > min(ex.lengths[i] for i in mixed)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_resumes_exactly_where_it_stopped(tmp_path, toy, monkeypatch):
    config = ClassifyConfig(hidden_size=8, embedding_size=8)
    run = dict(epochs=4, evals_per_epoch=1, **FAST)
    classify.train(tmp_path / "a", config, RunConfig(**run), train=toy["train"], **QUIET)

    real, calls = classify.step_fn, {"n": 0}

    def crash_after_two_epochs(model, batch):
        calls["n"] += 1
        if calls["n"] > 2 * 14:  # 216 training examples / 16 = 14 batches an epoch
            raise KeyboardInterrupt
        return real(model, batch)

    monkeypatch.setattr(classify, "step_fn", crash_after_two_epochs)
    with pytest.raises(KeyboardInterrupt):
        classify.train(tmp_path / "b", config, RunConfig(**run), train=toy["train"], **QUIET)
    monkeypatch.setattr(classify, "step_fn", real)
    classify.train(tmp_path / "b", resume=True, run=RunConfig(progress=False), **QUIET)

    def losses(run_dir):
        with open(run_dir / "metrics.csv") as f:
            return [(r["step"], r["loss"], r["eval_loss"]) for r in csv.DictReader(f)]

    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert len(losses(tmp_path / "a")) == 8  # a log and an evaluation each epoch


def test_an_unseen_label_names_the_file_and_line(tmp_path, toy):
    bad = tmp_path / "bad.tsv"
    bad.write_text("pos\ta superb film\nmeh\ta dull film\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.tsv:2: label 'meh' was never seen"):
        classify.train(
            tmp_path / "run", ClassifyConfig(hidden_size=4), RunConfig(epochs=1, **FAST),
            train=toy["train"], test=bad, **QUIET,
        )  # fmt: skip


def test_a_text_without_words_is_refused(tmp_path, toy):
    bad = tmp_path / "bad.tsv"
    bad.write_text("pos\ta superb film\nneg\t   \t...\n", encoding="utf-8")
    # "..." is a punctuation token, so that line is fine; a label with blank text is not
    bad.write_text("pos\ta superb film\nneg\t \n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.tsv:2: expected 'label<TAB>text'"):
        classify.read_split(bad)


def test_config_errors_name_the_argument():
    with pytest.raises(ValueError, match="`pool`"):
        ClassifyConfig(pool="first")
    with pytest.raises(ValueError, match="`cell`"):
        ClassifyConfig(cell="transformer")
    with pytest.raises(ValueError, match="`epochs`"):
        RunConfig(epochs=0)


def test_a_run_is_not_overwritten(tmp_path, toy):
    args = dict(train=toy["train"], **QUIET)
    classify.train(
        tmp_path / "r", ClassifyConfig(hidden_size=4), RunConfig(epochs=1, **FAST), **args
    )
    with pytest.raises(FileExistsError, match="already holds a run"):
        classify.train(tmp_path / "r", ClassifyConfig(hidden_size=4), RunConfig(epochs=1), **args)


def test_bucketed_evaluation_gives_the_same_probabilities_as_one_at_a_time(toy):
    from rnnkit.tasks.sequences import run_model

    raw = classify.read_split(toy["train"])
    spec = InputSpec.for_words(raw.tokens)
    model = _model(ClassifyConfig(hidden_size=8, embedding_size=8), spec)
    ex = encode_split(raw, spec, model.labels, per_step=False)

    def probs(batch_size):
        out = torch.zeros(len(ex), 2)
        for idx, _, logits in run_model(model, ex, batch_size):
            out[idx] = logits.softmax(-1)
        return out

    torch.testing.assert_close(probs(1), probs(64), rtol=1e-5, atol=1e-6)


def test_a_single_label_or_overflowing_inputs_are_refused(tmp_path):
    one = tmp_path / "one.tsv"
    one.write_text("".join(f"pos\tgood film {i}\n" for i in range(40)), encoding="utf-8")
    with pytest.raises(ValueError, match=r"one label only \('pos'\)"):
        classify.train(tmp_path / "r1", run=RunConfig(**FAST), train=str(one), **QUIET)
    huge = tmp_path / "huge.npz"
    x = np.full((20, 5, 2), 1e36, dtype=np.float32)
    np.savez(huge, x=x, y=np.array(["a", "b"] * 10))
    with pytest.raises(ValueError, match="channel 0 holds values too large"):
        classify.train(tmp_path / "r2", run=RunConfig(**FAST), train=str(huge), **QUIET)
