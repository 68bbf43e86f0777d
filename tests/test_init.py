"""Tests of rnnkit.init: per-gate-block initialisation schemes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rnnkit.cells import GRUCell, LSTMCell, RNNCell
from rnnkit.conv import ConvGRUCell, ConvLSTMCell
from rnnkit.init import PRESETS, SCHEMES, init_cell, initialize

DENSE = [RNNCell, GRUCell, LSTMCell]
CONV = [ConvGRUCell, ConvLSTMCell]


def blocks(w: torch.Tensor, cell) -> list[torch.Tensor]:
    return list(w.detach().split(cell.hidden_size, dim=0))


def flat(block: torch.Tensor) -> torch.Tensor:
    return block.reshape(block.shape[0], -1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_exports():
    assert set(SCHEMES) >= {"uniform", "xavier", "lecun", "orthogonal", "identity", "zeros"}
    assert set(PRESETS) >= {
        "torch",
        "xavier",
        "lecun",
        "orthogonal",
        "xavier-orthogonal",
        "identity",
        "irnn",
    }


@pytest.mark.parametrize("cls", DENSE)
def test_identity_exact(cls):
    cell = cls(5, 7)
    assert init_cell(cell, weight_hh="identity") is cell
    eye = torch.eye(7)
    for b in blocks(cell.weight_hh, cell):
        assert torch.equal(b, eye)


@pytest.mark.parametrize("cls", CONV)
def test_identity_conv_is_dirac(cls):
    cell = cls(2, 3, kernel_size=3)
    init_cell(cell, weight_hh="identity", bias=0.0, forget_bias=0.0)
    h = torch.randn(2, 3, 5, 5)
    for b in blocks(cell.weight_hh, cell):
        assert torch.equal(nn.functional.conv2d(h, b, padding=1), h)


@pytest.mark.parametrize("cls", DENSE + CONV)
def test_orthogonal_per_block(cls):
    cell = cls(6, 8) if cls in DENSE else cls(4, 8, kernel_size=3)
    init_cell(cell, weight_ih="orthogonal", weight_hh="orthogonal")
    assert cell.weight_hh.dtype == torch.float32
    for b in blocks(cell.weight_hh, cell):
        W = flat(b)  # (H, H) or (H, H*k*k): rows are orthonormal
        torch.testing.assert_close(W @ W.T, torch.eye(8), atol=1e-5, rtol=0)
    for b in blocks(cell.weight_ih, cell):
        W = flat(b)
        gram = W.T @ W if W.shape[0] > W.shape[1] else W @ W.T  # semi-orthogonal
        torch.testing.assert_close(gram, torch.eye(min(W.shape)), atol=1e-5, rtol=0)


def test_orthogonal_is_per_block_not_whole_matrix():
    cell = LSTMCell(8, 8)
    init_cell(cell, weight_hh="orthogonal")
    W = cell.weight_hh.detach()
    # the stacked (4H, H) matrix cannot have orthonormal rows, each block does
    assert not torch.allclose(W @ W.T, torch.eye(32), atol=1e-3)


@pytest.mark.parametrize("cls", [GRUCell, LSTMCell])
def test_xavier_and_lecun_variance(cls):
    I, H = 256, 512
    cell = cls(I, H)
    init_cell(cell, weight_ih="xavier", weight_hh="lecun")
    for b in blocks(cell.weight_ih, cell):
        expected = 2.0 / (I + H)
        assert b.var().item() == pytest.approx(expected, rel=0.1)
        assert b.abs().max().item() <= math.sqrt(6.0 / (I + H)) + 1e-6
    for b in blocks(cell.weight_hh, cell):
        assert b.var().item() == pytest.approx(1.0 / H, rel=0.1)
        assert b.mean().abs().item() < 0.01


def test_xavier_conv_fans():
    C_in, C, k = 16, 64, 3
    cell = ConvLSTMCell(C_in, C, kernel_size=k)
    init_cell(cell, weight_ih="xavier", weight_hh="lecun")
    for b in blocks(cell.weight_ih, cell):
        assert b.var().item() == pytest.approx(2.0 / (C_in * k * k + C * k * k), rel=0.1)
    for b in blocks(cell.weight_hh, cell):
        assert b.var().item() == pytest.approx(1.0 / (C * k * k), rel=0.1)


def test_uniform_matches_torch_bound():
    cell = GRUCell(32, 400)
    init_cell(cell, weight_ih="uniform", weight_hh="uniform", bias="uniform")
    bound = 1 / math.sqrt(400)
    for p in cell.parameters():
        assert p.abs().max().item() <= bound
        assert p.var().item() == pytest.approx(bound**2 / 3, rel=0.1)


@pytest.mark.parametrize("cls", [LSTMCell, ConvLSTMCell])
def test_forget_bias_only_in_block_1_of_bias_ih(cls):
    cell = cls(3, 4)
    init_cell(cell, bias=0.25, forget_bias=2.0)
    b_ih = blocks(cell.bias_ih, cell)
    for g, b in enumerate(b_ih):
        assert torch.equal(b, torch.full((4,), 2.25 if g == 1 else 0.25))
    assert torch.equal(cell.bias_hh.detach(), torch.full((16,), 0.25))


def test_forget_bias_defaults_to_cell_attribute():
    cell = LSTMCell(3, 4, forget_bias=3.0)
    init_cell(cell)
    assert torch.equal(blocks(cell.bias_ih, cell)[1], torch.full((4,), 3.0))
    assert torch.equal(blocks(cell.bias_ih, cell)[0], torch.zeros(4))
    assert torch.equal(cell.bias_hh.detach(), torch.zeros(16))
    init_cell(cell, forget_bias=0.0)
    assert torch.equal(cell.bias_ih.detach(), torch.zeros(16))


def test_forget_bias_on_cell_without_forget_gate_raises():
    with pytest.raises(ValueError, match="forget_bias"):
        init_cell(GRUCell(3, 4), forget_bias=1.0)


def test_no_bias_cells():
    cell = LSTMCell(3, 4, bias=False)
    init_cell(cell, bias=1.0, forget_bias=1.0)
    assert cell.bias_ih is None and cell.bias_hh is None


def test_gain_scales():
    cell = RNNCell(4, 6)
    init_cell(cell, weight_hh="identity", gain={"weight_hh": 0.5})
    assert torch.equal(cell.weight_hh.detach(), 0.5 * torch.eye(6))
    init_cell(cell, weight_hh="orthogonal", gain={"weight_hh": 1.5})
    W = cell.weight_hh.detach()
    torch.testing.assert_close(W @ W.T, 2.25 * torch.eye(6), atol=1e-5, rtol=0)

    big = GRUCell(256, 512)
    init_cell(big, weight_ih="xavier", weight_hh="lecun", gain=2.0)
    assert big.weight_ih.var().item() == pytest.approx(4 * 2 / (256 + 512), rel=0.1)
    assert big.weight_hh.var().item() == pytest.approx(4 / 512, rel=0.1)


def test_zeros_and_callable():
    cell = GRUCell(3, 4)
    init_cell(cell, weight_ih="zeros", weight_hh=lambda b: b.fill_(7.0), bias=-1.0)
    assert torch.count_nonzero(cell.weight_ih) == 0
    assert torch.all(cell.weight_hh == 7.0)
    assert torch.all(cell.bias_ih == -1.0) and torch.all(cell.bias_hh == -1.0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"weight_ih": "glorot"}, "weight_ih"),
        ({"weight_hh": "ortho"}, "weight_hh"),
        ({"bias": "normal"}, "bias"),
        ({"gain": {"weight_xx": 1.0}}, "gain"),
        ({"gain": float("nan")}, "gain"),
    ],
)
def test_bad_names_raise(kwargs, name):
    with pytest.raises(ValueError, match=name) as err:
        init_cell(LSTMCell(3, 4), **kwargs)
    bad = next(iter(kwargs.values()))
    if isinstance(bad, str):
        assert repr(bad) in str(err.value)


def test_identity_on_non_square_weight_ih_raises_and_writes_nothing():
    cell = LSTMCell(3, 4)
    before = [p.detach().clone() for p in cell.parameters()]
    with pytest.raises(ValueError, match=r"weight_ih.*\(4, 3\)"):
        init_cell(cell, weight_ih="identity")
    for p, q in zip(cell.parameters(), before):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="weight_ih"):
        init_cell(ConvGRUCell(2, 3), weight_ih="identity")
    init_cell(RNNCell(5, 5), weight_ih="identity")  # square: fine


def test_initialize_hits_all_cells():
    model = nn.Sequential(
        RNNCell(3, 5), nn.ModuleList([GRUCell(5, 5), LSTMCell(5, 5)]), nn.Linear(5, 2)
    )
    initialize(model, "irnn")
    for cell in (model[0], model[1][0], model[1][1]):
        for b in blocks(cell.weight_hh, cell):
            assert torch.equal(b, torch.eye(5))
        assert cell.weight_ih.std().item() < 0.01
    assert torch.equal(blocks(model[1][1].bias_ih, model[1][1])[1], torch.ones(5))
    assert torch.equal(model[1][0].bias_ih.detach(), torch.zeros(15))


def test_initialize_per_layer_and_dict():
    layers = nn.ModuleList([LSTMCell(4, 6), LSTMCell(6, 6)])
    initialize(layers, {"weight_hh": "zeros", "forget_bias": 2.0})
    initialize(layers[1], "xavier", weight_ih="zeros")
    assert torch.count_nonzero(layers[0].weight_hh) == 0
    assert torch.count_nonzero(layers[1].weight_hh) > 0
    assert torch.count_nonzero(layers[1].weight_ih) == 0
    assert torch.equal(blocks(layers[0].bias_ih, layers[0])[1], torch.full((6,), 2.0))
    assert torch.equal(blocks(layers[1].bias_ih, layers[1])[1], torch.full((6,), 1.0))


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_run(preset):
    model = nn.ModuleList([LSTMCell(6, 6), GRUCell(6, 6), ConvLSTMCell(6, 6), RNNCell(6, 6)])
    assert initialize(model, preset) is model
    lstm = model[0]
    for p in model.parameters():
        assert torch.isfinite(p).all()
    if preset == "torch":
        bound = 1 / math.sqrt(6)
        assert lstm.weight_hh.abs().max().item() <= bound
        assert blocks(lstm.bias_ih, lstm)[1].min().item() >= 1.0 - bound
    else:
        assert torch.equal(blocks(lstm.bias_ih, lstm)[1], torch.ones(6))
        assert torch.equal(lstm.bias_hh.detach(), torch.zeros(24))


def test_initialize_bad_arguments():
    cell = LSTMCell(3, 4)
    with pytest.raises(ValueError, match="scheme.*'glorot'") as err:
        initialize(cell, "glorot")
    assert "xavier-orthogonal" in str(err.value)
    with pytest.raises(ValueError, match="scheme.*'weight'"):
        initialize(cell, {"weight": "xavier"})
    with pytest.raises(ValueError, match="'gian'"):
        initialize(cell, "xavier", gian=2.0)
    with pytest.raises(ValueError, match="weight_hh.*'eye'"):
        initialize(cell, {"weight_hh": "eye"})
    with pytest.raises(ValueError, match="module"):
        initialize(nn.Linear(2, 2))


def test_initialize_checks_all_cells_before_writing():
    model = nn.ModuleList([RNNCell(4, 4), RNNCell(3, 4)])
    before = model[0].weight_hh.detach().clone()
    with pytest.raises(ValueError, match="weight_ih"):
        initialize(model, "xavier", weight_ih="identity")
    assert torch.equal(model[0].weight_hh, before)


def test_no_grad_and_requires_grad_kept():
    cell = LSTMCell(3, 4)
    init_cell(cell)
    assert all(p.requires_grad and p.grad_fn is None for p in cell.parameters())
