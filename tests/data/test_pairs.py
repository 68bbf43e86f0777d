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


def test_osis_markup_goes_and_the_words_stay_apart():
    raw = (
        '<div type="x-milestone" sID="pv1"/><title canonical="true" type="psalm">A Psalm.'
        '</title><title type="section">Heading</title><w lemma="strong:H1">In</w><w>the'
        '</w> beginning, God<note placement="foot"><reference>1:1 </reference>Elohim.</note>'
        "<w>created</w> <w>it</w> &amp; <w>¡</w><w>OH</w><w>!</w> (<w>a</w>) ."
    )
    assert pairs.osis_text(raw) == "A Psalm. In the beginning, God created it & ¡OH! (a)."


def _ztext(texts: dict[int, bytes], size: int) -> dict[str, bytes]:
    """A zText testament with `texts` at their verse indices, in two zlib blocks."""
    import struct
    import zlib

    bzv, bzs, bzz = bytearray(10 * size), b"", b""
    items = sorted(texts.items())
    for b, chunk in enumerate((items[: len(items) // 2], items[len(items) // 2 :])):
        block, pos = b"", {}
        for i, t in chunk:
            pos[i], block = (len(block), len(t)), block + t
        packed = zlib.compress(block)
        bzs += struct.pack("<III", len(bzz), len(packed), len(block))
        bzz += packed
        for i, (start, n) in pos.items():
            struct.pack_into("<IIH", bzv, 10 * i, b, start, n)
    return {"bzv": bytes(bzv), "bzs": bzs, "bzz": bzz}


def test_a_ztext_module_is_read_by_its_kjv_verse_keys():
    from pysword.books import BibleStructure

    kjv = BibleStructure("kjv")
    at = {
        ref: kjv.ref_to_indicies(books=[ref[0]], chapters=[ref[1]], verses=[ref[2]])
        for ref in [("Genesis", 1, 1), ("Genesis", 50, 26), ("Malachi", 4, 6),
                    ("Mark", 16, 20), ("Revelation of John", 22, 21)]
    }  # fmt: skip
    ot = {v["ot"][0]: f"<w>{k[0]}</w> {k[1]}:{k[2]}".encode() for k, v in at.items() if "ot" in v}
    nt = {v["nt"][0]: f"{k[0]} {k[1]}:{k[2]}".encode() for k, v in at.items() if "nt" in v}
    files = {}
    for name, texts in (("ot", ot), ("nt", nt)):
        made = _ztext(texts, max(texts) + 3)
        files.update({f"{name}.{x}": made[x] for x in ("bzv", "bzs", "bzz")})
    verses = pairs.ztext_verses(files)
    assert verses == {
        ("Gen", 1, 1): "Genesis 1:1",
        ("Gen", 50, 26): "Genesis 50:26",
        ("Mal", 4, 6): "Malachi 4:6",
        ("Mark", 16, 20): "Mark 16:20",
        ("Rev", 22, 21): "Revelation of John 22:21",
    }


def test_the_bible_pairs_join_on_verse_keys_and_hold_out_whole_books(monkeypatch):
    books = ["Gen", "Ruth", "Mark", "Joel", "John"]
    en = {(b, 1, v): f"{b} one {v}" for b in books for v in (1, 2, 3)}
    es = {k: t.replace("one", "uno") for k, t in en.items() if k != ("John", 1, 2)}
    es[("John", 1, 4)] = "only in Spanish"
    monkeypatch.setattr(pairs, "bible_verses", {"en": en, "es": es}.__getitem__)
    rows = pairs._bible()
    assert len(rows) == 14  # John 1:2 and 1:4 are in one Bible only
    split = {s.split()[0]: k for k, s, _ in rows}
    assert split == {"Gen": "train", "John": "train", "Ruth": "test", "Mark": "test",
                     "Joel": "val"}  # fmt: skip
    assert ("train", "Gen one 2", "Gen uno 2") in rows
