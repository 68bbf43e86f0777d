"""A source archive comes straight from the index's link: no build, sha256 checked."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from rnnkit.data import fetch


@pytest.fixture
def index(tmp_path: Path):
    """A PEP 503 simple index on localhost holding one project, some-pkg."""
    root = tmp_path / "www"
    (root / "simple" / "some-pkg").mkdir(parents=True)
    (root / "files").mkdir()
    archive = b"not really a tarball, but bytes with a known digest"
    (root / "files" / "some_pkg-1.2.tar.gz").write_bytes(archive)
    (root / "simple" / "some-pkg" / "index.html").write_text(
        '<html><body><a href="../../files/some_pkg-1.0.tar.gz">old</a>'
        '<a href="../../files/some_pkg-1.2.tar.gz#sha256=x">some_pkg-1.2.tar.gz</a>'
        "</body></html>"
    )

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/simple", hashlib.sha256(archive).hexdigest()
    server.shutdown()


def test_a_source_archive_is_read_from_the_index_link(index, tmp_path, monkeypatch):
    url, digest = index
    monkeypatch.setenv("PIP_INDEX_URL", url)
    out = tmp_path / "out"
    out.mkdir()
    path = fetch.download_package(fetch.Package("pypi-sdist", "Some_Pkg", "1.2", digest), out)
    assert path.name == "some_pkg-1.2.tar.gz" and path.read_bytes().startswith(b"not really")

    (out2 := tmp_path / "out2").mkdir()
    with pytest.raises(fetch.ChecksumError):
        fetch.download_package(fetch.Package("pypi-sdist", "some-pkg", "1.2", "0" * 64), out2)
    (out3 := tmp_path / "out3").mkdir()
    with pytest.raises(fetch.FetchError, match=r"lists no source archive some-pkg-9\.9"):
        fetch.download_package(fetch.Package("pypi-sdist", "some-pkg", "9.9", digest), out3)
