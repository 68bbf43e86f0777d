"""The built-in sequence pairs of the encoder-decoder: made as documented, split so that
nothing of a test item is seen in training."""

from __future__ import annotations

import pytest

from rnnkit.data import pairs
from rnnkit.data.pairs import PAIR_SETS, cmudict_rows, load_pairs
from rnnkit.tasks import seq2seq


def test_the_numbers_pairs_are_made_and_split_by_number():
    splits = load_pairs("numbers")
    assert [len(splits[k]) for k in ("train", "val", "test")] == [8000, 1000, 1000]
    assert dict(splits["train"] + splits["val"] + splits["test"])["twenty-one"] == "vingt et un"
    train = {s for s, _ in splits["train"]}
    assert not train & {s for s, _ in splits["test"]}


def test_cmudict_holds_out_whole_words_with_all_their_pronunciations(monkeypatch):
    words = [f"w{i:03d}" for i in range(300)]
    lines = []
    for i, w in enumerate(words):
        lines.append(f"{w} P{i % 7} AH")
        if i % 3 == 0:  # an alternative, written as CMUdict writes them
            lines.append(f"{w}(2) B{i % 5} IY")
    monkeypatch.setitem(pairs.CMUDICT_HELD_OUT, "test", 40)
    monkeypatch.setitem(pairs.CMUDICT_HELD_OUT, "val", 10)
    rows = cmudict_rows("\n".join(lines))
    assert len(rows) == len(lines)
    by_split: dict[str, set[str]] = {}
    for split, word, _ in rows:
        by_split.setdefault(split, set()).add(word)
    assert [len(by_split[k]) for k in ("train", "val", "test")] == [250, 10, 40]
    assert not by_split["train"] & by_split["test"] and not by_split["val"] & by_split["test"]
    prons = {}
    for _split, word, phones in rows:
        prons.setdefault(word, []).append(phones)
    assert prons["w000"] == ["P0 AH", "B0 IY"]  # "(2)" removed: the same word's other one
    assert rows == cmudict_rows("\n".join(lines))  # the split is fixed
    assert not any("(" in w for _, w, _ in rows)


def test_a_data_set_chooses_its_tokens_unless_the_user_does():
    assert PAIR_SETS["cmudict-g2p"].tokens == ("chars", "words")
    auto = seq2seq.resolve_tokens(seq2seq.Seq2SeqConfig(), "cmudict-g2p")
    assert (auto.source_tokens, auto.target_tokens) == ("chars", "words")
    mine = seq2seq.resolve_tokens(seq2seq.Seq2SeqConfig(source_tokens="words"), "cmudict-g2p")
    assert (mine.source_tokens, mine.target_tokens) == ("words", "words")
    plain = seq2seq.resolve_tokens(seq2seq.Seq2SeqConfig(), None)
    assert (plain.source_tokens, plain.target_tokens) == ("words", "words")
    with pytest.raises(ValueError, match=r"`source_tokens`.*'bytes'"):
        seq2seq.Seq2SeqConfig(source_tokens="bytes")
