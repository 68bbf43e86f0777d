"""Scores of generated sequences against one or several references, checked by hand
and against sacrebleu called directly."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import sacrebleu

from rnnkit.metrics import plot_attention, sequence_scores

matplotlib.use("Agg")


def test_exact_matches_and_token_errors_use_the_closest_reference():
    hyps = [["K", "AE1", "T"], ["T", "AH0", "M", "EY1", "T", "OW2"], ["D", "AO1"]]
    refs = [
        [["K", "AE1", "T"]],  # exact
        [["T", "AH0", "M", "AA1", "T", "OW2"], ["T", "AH0", "M", "EY1", "T", "OW2"]],  # 2nd
        [["D", "AO1", "G"], ["D", "AA1", "G", "Z"]],  # 1 deletion from the first
    ]
    m = sequence_scores(hyps, refs)
    assert m["exact"] == pytest.approx(200 / 3)
    assert m["token_error"] == pytest.approx(100 * 1 / (3 + 6 + 3))


def test_a_space_is_a_token_like_any_other():
    # characters: a missing space is one edit, not a free one
    m = sequence_scores([list("ab")], [[list("a b")]], joiner="")
    assert m["token_error"] == pytest.approx(100 / 3)
    assert m["exact"] == 0.0


def test_bleu_and_chrf_are_sacrebleus_with_every_reference():
    hyps = [["the", "cat", "sat", "on", "a", "mat"], ["a", "dog", "ran", "home", "fast"]]
    refs = [
        [["the", "cat", "sat", "on", "the", "mat"], ["a", "cat", "sat", "on", "a", "mat"]],
        [["the", "dog", "ran", "home", "quickly"]],
    ]
    m = sequence_scores(hyps, refs)
    streams = [
        ["the cat sat on the mat", "the dog ran home quickly"],
        ["a cat sat on a mat", "the dog ran home quickly"],
    ]
    texts = ["the cat sat on a mat", "a dog ran home fast"]
    assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu(texts, streams).score)
    assert m["chrf"] == pytest.approx(sacrebleu.corpus_chrf(texts, streams).score)
    # the second reference of the first sentence counts: BLEU is higher than with one
    one = sacrebleu.corpus_bleu(texts, streams[:1]).score
    assert m["bleu"] > one
    with pytest.raises(ValueError, match="`references`"):
        sequence_scores(hyps, refs[:1])


def test_bleu_reads_the_texts_given_instead_of_joined_tokens():
    hyps, refs = [["Hello", ",", "world", "!"]], [[["Hello", ",", "world", "!"]]]
    joined = sequence_scores(hyps, refs)  # "Hello , world !" against itself: 100
    written = sequence_scores(hyps, refs, texts=(["Hello, world!"], [["Hello world!"]]))
    assert joined["bleu"] == pytest.approx(100.0)
    assert written["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(["Hello, world!"], [["Hello world!"]]).score
    )
    assert written["bleu"] < 100.0 and written["exact"] == 100.0  # tokens still exact
    with pytest.raises(ValueError, match="`texts`"):
        sequence_scores(hyps, refs, texts=(["a", "b"], [["a"]]))


def test_the_attention_heat_map_is_written(tmp_path):
    w = np.full((3, 4), 0.25)
    path = plot_attention(w, ["a", "b", "c", "d"], ["x", "y", "<end>"], tmp_path / "a.png")
    assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
