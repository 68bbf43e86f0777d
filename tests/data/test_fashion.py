"""Fashion-MNIST from its Debian package: the IDX files are parsed exactly, damaged ones
refused, and the set is checked, cached and split as released."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from test_images import deb, member, needs_dpkg

from rnnkit import data as datasets
from rnnkit.data import fashion, fetch
from rnnkit.data.fetch import ChecksumError


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic 0 0 8 ndim, big-endian int32 sizes."""
    head = bytes([0, 0, 8, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return head + array.astype(np.uint8).tobytes()


def test_idx_files_are_parsed_gzipped_or_not_and_damage_is_named():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 4, 5)).astype(np.uint8)
    raw = idx_bytes(images)
    assert np.array_equal(fashion.parse_idx(raw, "x"), images)
    assert np.array_equal(fashion.parse_idx(gzip.compress(raw), "x"), images)
    labels = np.array([9, 0, 3], dtype=np.uint8)
    assert fashion.parse_idx(idx_bytes(labels), "y").tolist() == [9, 0, 3]
    with pytest.raises(ValueError, match="f.gz: 59 values for the shape"):
        fashion.parse_idx(raw[:-1], "f.gz")
    with pytest.raises(ValueError, match="g: not an IDX file"):
        fashion.parse_idx(b"\x89PNG....", "g")


def fashion_deb(path, n_train: int = 6, n_test: int = 2):
    rng = np.random.default_rng(1)
    where = "./" + fashion.FASHION_DIR
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28)),
        "train_labels": rng.integers(0, 10, (n_train,)),
        "test_images": rng.integers(0, 256, (n_test, 28, 28)),
        "test_labels": rng.integers(0, 10, (n_test,)),
    }
    members = [
        member(where + name, gzip.compress(idx_bytes(arrays[key].astype(np.uint8))))
        for key, name in fashion.FASHION_FILES.items()
    ]
    return deb(path, members), arrays


@needs_dpkg
def test_the_set_is_read_from_the_deb_checked_cached_and_split(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "cache"))
    crafted, arrays = fashion_deb(tmp_path / "f.deb")
    monkeypatch.setattr(fetch, "download_package", lambda package, workdir: crafted)
    with pytest.raises(ChecksumError, match="dataset-fashion-mnist"):
        fashion.fetch_fashion_mnist()
    assert not fashion.fashion_path().exists()  # nothing half-made cached
    monkeypatch.setattr(fashion, "FASHION_COUNTS", {"train": 6, "test": 2})
    monkeypatch.setattr(fashion, "FASHION_ARRAYS_SHA256", fashion._arrays_sha256(
        {k: a.astype(np.int64 if k.endswith("labels") else np.uint8) for k, a in arrays.items()}
    ))  # fmt: skip
    splits = datasets.get("fashion-mnist", "pixels").splits()
    assert np.array_equal(splits["train"], arrays["train_images"])
    assert np.array_equal(splits["test"], arrays["test_images"])
    assert splits["train"].dtype == np.uint8 and datasets.REGISTRY["fashion-mnist"].is_cached()
    with np.load(fashion.fashion_path()) as f:
        damaged = {k: f[k].copy() for k in f.files}
    damaged["test_images"][0, 0, 0] ^= 1
    np.savez(fashion.fashion_path(), **damaged)
    with pytest.raises(ChecksumError, match="damaged"):
        fashion.load_fashion_images()
