"""The image encoders: SmallCNN's shapes and training, EfficientNet-lite0's layout (the
names and shapes of its pretrained file, pinned), TensorFlow-"same" padding, and the
cached features. The pretrained weights themselves are tested in tests/data/test_weights.py.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from rnnkit.vision import EfficientNetLite0, SmallCNN, _SameConv2d, frozen_features

# the (name, shape) list of the ImageNet file efficientnet-lite0-57934424.pth, in order
LITE0_KEYS = 296
LITE0_LAYOUT_SHA256 = "f19038aa9e94bf262b0215da87b05190b42be4fca8356448dc428d5a7e017bb6"
LITE0_PARAMETERS = 4_652_008  # learnable; 4_694_073 numbers with the batch-norm statistics


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def layout(state: dict) -> str:
    return "\n".join(f"{k} {tuple(v.shape)}" for k, v in state.items())


# -- EfficientNet-lite0 ------------------------------------------------------------------


def test_lite0_state_dict_has_the_pretrained_files_names_and_shapes():
    model = EfficientNetLite0()
    state = model.state_dict()
    assert len(state) == LITE0_KEYS
    assert hashlib.sha256(layout(state).encode()).hexdigest() == LITE0_LAYOUT_SHA256
    assert sum(p.numel() for p in model.parameters()) == LITE0_PARAMETERS
    assert sum(v.numel() for v in state.values()) == 4_694_073
    # the readable part of the pin: stem, first and last blocks, head, classifier
    assert tuple(state["_conv_stem.weight"].shape) == (32, 3, 3, 3)
    assert "_blocks.0._expand_conv.weight" not in state  # expansion ratio 1
    assert tuple(state["_blocks.0._depthwise_conv.weight"].shape) == (32, 1, 3, 3)
    assert tuple(state["_blocks.15._expand_conv.weight"].shape) == (1152, 192, 1, 1)
    assert tuple(state["_blocks.15._project_conv.weight"].shape) == (320, 1152, 1, 1)
    assert "_blocks.16._bn0.weight" not in state
    assert tuple(state["_conv_head.weight"].shape) == (1280, 320, 1, 1)
    assert tuple(state["_fc.weight"].shape) == (1000, 1280)


@pytest.mark.parametrize("size, side", [(224, 7), (64, 2), (97, 4)])
def test_lite0_features_and_logits_shapes(size, side):
    model = EfficientNetLite0().eval()
    x = model.normalize(torch.rand(2, 3, size, size))
    with torch.no_grad():
        features = model.features(x)
        logits = model(x)
    assert features.shape == (2, 1280, side, side)
    assert features.min() >= 0 and features.max() <= 6  # after ReLU6
    assert logits.shape == (2, 1000)
    assert (model.out_channels, model.stride, model.in_channels) == (1280, 32, 3)


def test_lite0_normalize_is_tensorflows_255x_minus_127_over_128():
    x = torch.tensor([0.0, 127 / 255, 1.0])
    torch.testing.assert_close(EfficientNetLite0.normalize(x), torch.tensor([-127 / 128, 0, 1]))


def test_lite0_refuses_wrong_inputs_and_arguments():
    model = EfficientNetLite0()
    with pytest.raises(ValueError, match=r"`x`.*C=3.*\(2, 1, 32, 32\)"):
        model.features(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="`x`"):
        model(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="`num_classes`"):
        EfficientNetLite0(num_classes=0)
    with pytest.raises(ValueError, match="`dropout`"):
        EfficientNetLite0(dropout=1.0)


@pytest.mark.parametrize(
    "kernel, stride, size, pads",  # pads: (left, right), TensorFlow puts the odd one last
    [(3, 2, 8, (0, 1)), (3, 2, 7, (1, 1)), (3, 1, 7, (1, 1)), (5, 2, 8, (1, 2)), (5, 1, 6, (2, 2))],
)
def test_same_padding_is_tensorflows(kernel, stride, size, pads):
    conv = _SameConv2d(2, 3, kernel, stride)
    x = torch.randn(1, 2, size, size)
    expected = F.conv2d(F.pad(x, pads + pads), conv.weight, stride=stride)
    out = conv(x)
    assert out.shape[-1] == -(-size // stride)  # ceil(size / stride)
    torch.testing.assert_close(out, expected)


# -- SmallCNN ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, size, expected",
    [
        ({}, 224, (2, 256, 14, 14)),
        ({}, 64, (2, 256, 4, 4)),
        (dict(in_channels=1, width=8, blocks=3), 28, (2, 32, 4, 4)),
    ],
)
def test_small_cnn_shapes(kwargs, size, expected):
    model = SmallCNN(**kwargs)
    x = torch.rand(2, kwargs.get("in_channels", 3), size, size)
    assert model(x).shape == expected
    assert model.out_channels == expected[1]
    assert model.stride == 2 ** kwargs.get("blocks", 4)
    assert model.normalize(x) is x and model.features(x).shape == expected


def test_small_cnn_refuses_wrong_inputs_and_arguments():
    with pytest.raises(ValueError, match=r"`x`.*C=3.*\(2, 1, 16, 16\)"):
        SmallCNN()(torch.rand(2, 1, 16, 16))
    for name in ("in_channels", "width", "blocks"):
        with pytest.raises(ValueError, match=f"`{name}`.*0"):
            SmallCNN(**{name: 0})


def test_small_cnn_learns_a_separable_image_problem():
    """Class 0: a bright square at the top left; class 1: at the bottom right."""
    n, side = 64, 16
    labels = torch.arange(n) % 2
    images = 0.2 * torch.rand(n, 1, side, side)
    for i, y in enumerate(labels.tolist()):
        r, c = (2, 2) if y == 0 else (9, 9)
        images[i, 0, r : r + 5, c : c + 5] += 0.8
    encoder = SmallCNN(in_channels=1, width=8, blocks=2)
    model = nn.Sequential(encoder, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):  # also lets the batch-norm statistics settle, for eval mode
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]
    model.eval()
    assert (model(images).argmax(-1) == labels).float().mean() == 1.0


# -- frozen features ---------------------------------------------------------------------


def test_frozen_features_match_the_encoder_in_eval_mode_for_any_batch_size():
    encoder = SmallCNN(width=4, blocks=2)
    encoder.train()
    images = np.random.default_rng(0).integers(0, 256, (5, 20, 20, 3), dtype=np.uint8)
    feats = frozen_features(encoder, images, size=None, batch_size=2)
    assert encoder.training  # the mode is restored
    assert feats.shape == (5, 8, 5, 5) and feats.dtype == torch.float32
    assert not feats.requires_grad
    encoder.eval()
    with torch.no_grad():
        expected = encoder(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    torch.testing.assert_close(feats, expected)
    torch.testing.assert_close(frozen_features(encoder, images, size=None, batch_size=5), feats)


def test_frozen_features_resize_make_grey_rgb_and_normalise():
    encoder = EfficientNetLite0()
    grey = np.random.default_rng(1).integers(0, 256, (3, 50, 40), dtype=np.uint8)
    feats = frozen_features(encoder, grey, size=64, batch_size=2, dtype=torch.float16)
    assert feats.shape == (3, 1280, 2, 2) and feats.dtype == torch.float16
    x = torch.from_numpy(grey).float()[:, None] / 255
    x = F.interpolate(x, size=(64, 64), mode="bilinear", antialias=True).clamp(0, 1)
    with torch.no_grad():
        expected = encoder.eval().features(encoder.normalize(x.expand(-1, 3, -1, -1)))
    torch.testing.assert_close(feats.float(), expected, atol=2e-2, rtol=1e-2)  # float16
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    torch.testing.assert_close(frozen_features(encoder, rgb, size=(64, 64)), expected)


def test_frozen_features_refuse_wrong_images():
    encoder = SmallCNN(width=4, blocks=1)
    with pytest.raises(ValueError, match="`images`.*uint8.*float32"):
        frozen_features(encoder, np.zeros((2, 8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"`images`.*\(2, 8, 8, 4\)"):
        frozen_features(encoder, np.zeros((2, 8, 8, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="`images`.*N = 0"):
        frozen_features(encoder, np.zeros((0, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="`batch_size`"):
        frozen_features(encoder, np.zeros((2, 8, 8, 3), dtype=np.uint8), batch_size=0)
