"""Tests of the convolutional cells: against the dense cells, an im2col reference, gradcheck."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from rnnkit import ConvGRUCell, ConvLSTMCell, GRUCell, Recurrent

B, C_IN, C_H, HS, WS, T = 2, 3, 4, 5, 4, 3  # batch, channels in/hidden, map height/width, steps
TOL = dict(rtol=1e-10, atol=1e-10)
PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randn(*shape, requires_grad=False):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=requires_grad)


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def random_state(cell):
    """A random state of the cell's structure: h, or (h, c) for ConvLSTM, each (B, C_h, H, W)."""
    parts = tuple(randn(B, C_H, HS, WS) for _ in range(cell.num_state_tensors))
    return parts[0] if len(parts) == 1 else parts


def pixels(m: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B*H*W, C): every pixel a row of a dense batch."""
    return m.permute(0, 2, 3, 1).reshape(-1, m.shape[1])


def unpixels(rows: torch.Tensor) -> torch.Tensor:
    """(B*H*W, C) -> (B, C, H, W), the inverse of `pixels`."""
    return rows.reshape(B, HS, WS, -1).permute(0, 3, 1, 2)


# -- kernel_size=1 is the dense cell at every pixel -----------------------------------------


@pytest.mark.parametrize(
    "conv_cls, dense",
    [
        (lambda: ConvLSTMCell(C_IN, C_H, 1), lambda: nn.LSTMCell(C_IN, C_H)),
        (lambda: ConvGRUCell(C_IN, C_H, 1, reset="after"), lambda: nn.GRUCell(C_IN, C_H)),
        (
            lambda: ConvGRUCell(C_IN, C_H, 1, reset="before"),
            lambda: GRUCell(C_IN, C_H, reset="before"),
        ),
    ],
    ids=["lstm", "gru-after", "gru-before"],
)
def test_kernel_1_equals_dense_cell_per_pixel(conv_cls, dense):
    conv, cell = conv_cls().double(), dense().double()
    with torch.no_grad():
        for name in PARAM_NAMES:
            w = getattr(conv, name)
            getattr(cell, name).copy_(w.squeeze(-1).squeeze(-1) if w.dim() == 4 else w)
    xs = randn(T, B, C_IN, HS, WS)
    s_conv = random_state(conv)
    s_dense = tuple(pixels(s) for s in as_tuple(s_conv))
    s_dense = s_dense[0] if len(s_dense) == 1 else s_dense
    for x in xs.unbind(0):
        s_conv, s_dense = conv(x, s_conv), cell(pixels(x), s_dense)
        for a, b in zip(as_tuple(s_conv), as_tuple(s_dense)):
            assert a.shape == (B, C_H, HS, WS)
            torch.testing.assert_close(a, unpixels(b), **TOL)


# -- kernel_size=3 against im2col + matmul -------------------------------------------------


def conv_by_unfold(x, weight, bias):
    """'Same' 2-D convolution as im2col then a matrix product. x: (B, C, H, W)."""
    k = weight.shape[-1]
    cols = F.unfold(x, k, padding=k // 2)  # (B, C*k*k, H*W)
    out = weight.reshape(weight.shape[0], -1) @ cols  # (B, O, H*W)
    if bias is not None:
        out = out + bias[:, None]
    return out.reshape(x.shape[0], -1, *x.shape[-2:])  # (B, O, H, W)


def conv_lstm_by_hand(cell, x, state):
    h, c = state
    gates = conv_by_unfold(x, cell.weight_ih, cell.bias_ih) + conv_by_unfold(
        h, cell.weight_hh, cell.bias_hh
    )
    i, f, g, o = gates.chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def conv_gru_by_hand(cell, x, h):
    C = cell.hidden_size
    W_r, W_z, W_n = cell.weight_ih.split(C)
    U_r, U_z, U_n = cell.weight_hh.split(C)
    b_ir, b_iz, b_in = cell.bias_ih.split(C)
    b_hr, b_hz, b_hn = cell.bias_hh.split(C)
    r = torch.sigmoid(conv_by_unfold(x, W_r, b_ir) + conv_by_unfold(h, U_r, b_hr))
    z = torch.sigmoid(conv_by_unfold(x, W_z, b_iz) + conv_by_unfold(h, U_z, b_hz))
    if cell.reset == "before":
        n = torch.tanh(conv_by_unfold(x, W_n, b_in) + conv_by_unfold(r * h, U_n, b_hn))
    else:
        n = torch.tanh(conv_by_unfold(x, W_n, b_in) + r * conv_by_unfold(h, U_n, b_hn))
    return z * h + (1 - z) * n


@pytest.mark.parametrize(
    "make, by_hand",
    [
        (lambda: ConvLSTMCell(C_IN, C_H, 3), conv_lstm_by_hand),
        (lambda: ConvGRUCell(C_IN, C_H, 3, reset="before"), conv_gru_by_hand),
        (lambda: ConvGRUCell(C_IN, C_H, 3, reset="after"), conv_gru_by_hand),
    ],
    ids=["lstm", "gru-before", "gru-after"],
)
def test_kernel_3_matches_im2col_reference(make, by_hand):
    cell = make().double()
    xs = randn(T, B, C_IN, HS, WS)
    # A random state, so that the recurrent convolution sees non-zero borders too.
    ours = ref = random_state(cell)
    for x in xs.unbind(0):
        ours, ref = cell(x, ours), by_hand(cell, x, ref)
        for a, b in zip(as_tuple(ours), as_tuple(ref)):
            torch.testing.assert_close(a, b, **TOL)


def test_conv_gru_reset_forms_differ():
    before = ConvGRUCell(C_IN, C_H, 3, reset="before").double()
    after = ConvGRUCell(C_IN, C_H, 3, reset="after").double()
    after.load_state_dict(before.state_dict())
    x, h = randn(B, C_IN, HS, WS), randn(B, C_H, HS, WS)
    assert (before(x, h) - after(x, h)).abs().max() > 1e-3


def test_conv_lstm_internals_are_consistent():
    cell = ConvLSTMCell(C_IN, C_H, 3).double()
    x, h0, c0 = randn(B, C_IN, HS, WS), randn(B, C_H, HS, WS), randn(B, C_H, HS, WS)
    (h, c), k = cell(x, (h0, c0), return_internals=True)
    assert set(k) == {"i", "f", "g", "o", "c", "h"}
    assert all(v.shape == (B, C_H, HS, WS) for v in k.values())
    torch.testing.assert_close(c, k["f"] * c0 + k["i"] * k["g"], **TOL)
    torch.testing.assert_close(h, k["o"] * torch.tanh(c), **TOL)


def test_forget_bias_lands_in_forget_block():
    torch.manual_seed(3)
    plain = ConvLSTMCell(C_IN, C_H, 3, forget_bias=0.0)
    torch.manual_seed(3)
    biased = ConvLSTMCell(C_IN, C_H, 3, forget_bias=1.5)
    expected = plain.bias_ih.detach().clone()
    expected[C_H : 2 * C_H] += 1.5
    assert torch.equal(biased.bias_ih, expected)


# -- gradcheck, shapes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: ConvLSTMCell(2, 2, 3),
        lambda: ConvGRUCell(2, 2, 3, reset="before"),
        lambda: ConvGRUCell(2, 2, 3, reset="after"),
    ],
    ids=["lstm", "gru-before", "gru-after"],
)
def test_gradcheck(make):
    cell = make().double()
    n = cell.num_state_tensors
    x = randn(1, 2, 3, 3, requires_grad=True)
    state = [randn(1, 2, 3, 3, requires_grad=True) for _ in range(n)]
    names = [name for name, _ in cell.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]

    def step(x, *rest):
        s, ps = rest[:n], rest[n:]
        new = torch.func.functional_call(
            cell, dict(zip(names, ps)), (x, s[0] if n == 1 else tuple(s))
        )
        return as_tuple(new)

    assert torch.autograd.gradcheck(step, (x, *state, *params))


@pytest.mark.parametrize("cls", [ConvLSTMCell, ConvGRUCell])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_state_shape_preserved(cls, k):
    cell = cls(C_IN, C_H, k)
    state = cell(torch.randn(B, C_IN, HS, WS))  # zero state by default
    for s in as_tuple(state):
        assert s.shape == (B, C_H, HS, WS)
    for s in as_tuple(cell(torch.randn(B, C_IN, HS, WS), state)):
        assert s.shape == (B, C_H, HS, WS)


# -- unrolled by Recurrent -----------------------------------------------------------------


@pytest.mark.parametrize("cls", [ConvLSTMCell, ConvGRUCell])
def test_recurrent_unrolls_conv_cell_with_lengths(cls):
    cell = cls(C_IN, C_H, 3).double()
    layer = Recurrent(cell)
    assert not layer.fused
    assert layer.not_fused_reason == f"{cls.__name__} has no torch.nn kernel"
    x = randn(B, T, C_IN, HS, WS)  # (B, T, C, H, W)
    lengths = torch.tensor([T, 2])
    out, state = layer(x, lengths=lengths)
    assert out.shape == (B, T, C_H, HS, WS)
    assert not out[1, 2:].any()  # padded step: exactly zero
    for b in range(B):  # each sequence alone, by the cell
        s = None
        for t in range(int(lengths[b])):
            s = cell(x[b : b + 1, t], s)
            torch.testing.assert_close(out[b : b + 1, t], as_tuple(s)[0], **TOL)
        for final, alone in zip(as_tuple(state), as_tuple(s)):
            assert final.shape == (1, B, C_H, HS, WS)
            torch.testing.assert_close(final[0, b : b + 1], alone, **TOL)


def test_recurrent_conv_learned_initial_state():
    layer = Recurrent(ConvLSTMCell(C_IN, C_H, 3), initial_state="learned")
    assert [p.shape for p in layer.h0] == [(1, C_H, 1, 1)] * 2
    out, (h, c) = layer(torch.randn(B, T, C_IN, HS, WS))
    assert h.shape == c.shape == (1, B, C_H, HS, WS)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.h0)


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [ConvLSTMCell, ConvGRUCell])
def test_bad_input_shape_names_input(cls):
    cell = cls(C_IN, C_H, 3)
    with pytest.raises(ValueError, match=rf"`input`.*C=input_size={C_IN}.*\(2, 7, 5, 4\)"):
        cell(torch.randn(2, 7, 5, 4))
    with pytest.raises(ValueError, match=r"`input`.*\(2, 3\)"):
        cell(torch.randn(2, 3))
    with pytest.raises(ValueError, match="`input`"):
        Recurrent(cell)(torch.randn(B, T, C_IN + 1, HS, WS))


@pytest.mark.parametrize("cls", [ConvLSTMCell, ConvGRUCell])
@pytest.mark.parametrize("k", [0, 2, 4, -1])
def test_even_or_non_positive_kernel_rejected(cls, k):
    with pytest.raises(ValueError, match=rf"`kernel_size`.*odd.*got {k}"):
        cls(C_IN, C_H, k)


def test_init_state_needs_spatial_size():
    with pytest.raises(ValueError, match="`spatial_size`"):
        ConvLSTMCell(C_IN, C_H).init_state(B)


def test_unknown_reset_and_sizes():
    with pytest.raises(ValueError, match=r"`reset`.*'never'"):
        ConvGRUCell(C_IN, C_H, reset="never")
    with pytest.raises(ValueError, match=r"`hidden_size`.*0"):
        ConvLSTMCell(C_IN, 0)
