"""Multivariate time series for sequence classification: sensors and speech frames.

Two sets of the UEA/UCR archive as shipped in the sktime wheel (``sktime==1.2.0``,
``sktime/datasets/data/NAME/NAME_{TRAIN,TEST}.ts``), fetched with ``pip download``,
checked by sha256 (the wheel and the prepared arrays) and cached as
``$RNNKIT_DATA/NAME.npz``:

* ``basic-motions``: a smart watch's 3-D accelerometer and gyroscope (6 channels x 100
  steps at 10 Hz) while standing, walking, running or playing badminton; 40 / 40.
* ``japanese-vowels``: 9 speakers saying "ae", as 12 linear-prediction cepstral
  coefficients per frame, 7-29 frames; 270 / 370. Variable length: padded with zeros,
  with the lengths beside.

The ``.ts`` text format: ``#`` comments, ``@`` header lines (``@classLabel true A B
...``), then ``@data`` and one series per line, its channels separated by ``:``, each
a comma-separated list of values, the class label last.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .fetch import ChecksumError, Package, cache_dir, cache_from_package, zip_member

SKTIME = Package(
    "pypi", "sktime", "1.2.0", "dbffc6731d2d683b668dceb5e2bbc5804bebc8446b4c580803a281684d90e4ae"
)
SIGNAL_SETS = {  # name -> (sktime's folder, sha256 of the prepared arrays)
    "basic-motions": (
        "BasicMotions",
        "c044aeb57a63e1e1524c8f145295712c27e17918bb8166d531e2d0a7a1314fb0",
    ),
    "japanese-vowels": (
        "JapaneseVowels",
        "451e210f82a4e18dfd513f2cfbbff129a454dc62bddba253d4f7a6a16a774d23",
    ),
}


SIZES = {"basic-motions": "80 series", "japanese-vowels": "640 series"}  # train + test


def parse_ts(text: str, where: str = "<text>") -> tuple[list[np.ndarray], list[str], list[str]]:
    """(series, labels, classes) of a ``.ts`` file: each series (T, channels) float32,
    its label, and the class labels the header declares. Errors name `where` and line."""
    classes: list[str] = []
    series, labels = [], []
    in_data = False
    channels = None
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if line.lower().startswith("@classlabel"):
                parts = line.split()
                classes = parts[2:] if len(parts) > 2 and parts[1].lower() == "true" else []
            in_data = line.lower() == "@data"
            continue
        *dims, label = line.split(":")
        try:
            values = [np.asarray([float(v) for v in d.split(",")], dtype=np.float32) for d in dims]
        except ValueError:
            raise ValueError(f"{where}:{n}: a value is not a number") from None
        if not values or len({len(v) for v in values}) != 1:
            raise ValueError(f"{where}:{n}: channels of different lengths or none")
        if channels is None:
            channels = len(values)
        elif len(values) != channels:
            raise ValueError(f"{where}:{n}: {len(values)} channels, expected {channels}")
        if classes and label not in classes:
            raise ValueError(f"{where}:{n}: label {label!r} is not among {classes}")
        series.append(np.stack(values, axis=1))  # (T, channels)
        labels.append(label)
    if not series:
        raise ValueError(f"{where} holds no series (no @data section or no lines after it)")
    return series, labels, classes or sorted(set(labels))


def _pad(series: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(s) for s in series], dtype=np.int64)
    out = np.zeros((len(series), int(lengths.max()), series[0].shape[1]), dtype=np.float32)
    for i, s in enumerate(series):
        out[i, : len(s)] = s
    return out, lengths


def prepare_signals(wheel: Path, name: str) -> dict[str, np.ndarray]:
    """The arrays of set `name` from the sktime wheel: x_train, len_train, y_train, the
    same for test (x padded (N, T, C) float32, y int64 indices), and classes."""
    folder, _ = SIGNAL_SETS[name]
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(wheel) as z:
        for split in ("train", "test"):
            member = f"sktime/datasets/data/{folder}/{folder}_{split.upper()}.ts"
            text = zip_member(z, member, wheel).decode("utf-8")
            series, labels, classes = parse_ts(text, member)
            x, lengths = _pad(series)
            out[f"x_{split}"], out[f"len_{split}"] = x, lengths
            out[f"y_{split}"] = np.array([classes.index(label) for label in labels])
            out["classes"] = np.array(classes)
    return out


def _arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        h.update(key.encode())
        h.update(np.ascontiguousarray(arrays[key]).tobytes())
    return h.hexdigest()


def _check_name(name: str) -> None:
    if name not in SIGNAL_SETS:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(SIGNAL_SETS)}")


def signals_path(name: str) -> Path:
    return cache_dir() / f"{name}.npz"


def fetch_signals(name: str, *, log: Callable[[str], None] = lambda msg: None) -> Path:
    """Path of the cached ``NAME.npz`` of set `name`, made from the wheel on first use."""
    _check_name(name)

    def prepare(wheel: Path) -> bytes:
        arrays = prepare_signals(wheel, name)
        if _arrays_sha256(arrays) != SIGNAL_SETS[name][1]:
            raise ChecksumError(
                f"the arrays of {name!r} prepared from {SKTIME} differ from the ones this "
                "rnnkit was written against; please report it"
            )
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    return cache_from_package(signals_path(name), SKTIME, prepare, name=name, log=log)


def load_signals(name: str, path: Path | None = None) -> dict:
    """{"train": (x, lengths, y), "test": (x, lengths, y), "classes": [...]} of set `name`,
    checked against the pinned sha256 of its arrays."""
    _check_name(name)
    path = path or fetch_signals(name)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    if _arrays_sha256(arrays) != SIGNAL_SETS[name][1]:
        raise ChecksumError(f"{path} is damaged (sha256 mismatch); delete it to fetch again")
    return {
        "train": (arrays["x_train"], arrays["len_train"], arrays["y_train"]),
        "test": (arrays["x_test"], arrays["len_test"], arrays["y_test"]),
        "classes": arrays["classes"].tolist(),
    }
