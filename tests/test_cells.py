"""Tests of the dense cells against torch.nn's cells, hand-written formulas and gradcheck."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnkit import GRUCell, LSTMCell, RNNCell

B, I, H, T = 3, 4, 5, 4  # batch, input features, hidden features, steps
TOL = dict(rtol=1e-10, atol=1e-10)
PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def make_pair(kind: str):
    """An rnnkit cell and the torch.nn cell computing the same function, both float64."""
    if kind in ("tanh", "relu"):
        ours, theirs = RNNCell(I, H, nonlinearity=kind), nn.RNNCell(I, H, nonlinearity=kind)
    elif kind == "lstm":
        ours, theirs = LSTMCell(I, H), nn.LSTMCell(I, H)
    else:
        ours, theirs = GRUCell(I, H, reset="after"), nn.GRUCell(I, H)
    ours, theirs = ours.double(), theirs.double()
    with torch.no_grad():
        for name in PARAM_NAMES:
            getattr(theirs, name).copy_(getattr(ours, name))
    return ours, theirs


def random_state(cell, requires_grad: bool = False):
    """A non-zero random state of the cell's structure: h, or (h, c) for the LSTM."""
    parts = [
        torch.randn(B, H, dtype=torch.float64, requires_grad=requires_grad)
        for _ in range(cell.num_state_tensors)
    ]
    return parts[0] if len(parts) == 1 else tuple(parts)


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


# -- against torch.nn --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tanh", "relu", "lstm", "gru"])
def test_matches_torch_cell_values_and_gradients(kind):
    ours, theirs = make_pair(kind)
    xs = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    s0 = random_state(ours, requires_grad=True)

    def unroll(cell):
        state, outs = s0, []
        for x_t in xs.unbind(0):
            state = cell(x_t, state)
            outs.append(as_tuple(state)[0])
        return torch.stack(outs), state

    out_ours, s_ours = unroll(ours)
    out_theirs, s_theirs = unroll(theirs)
    torch.testing.assert_close(out_ours, out_theirs, **TOL)
    for a, b in zip(as_tuple(s_ours), as_tuple(s_theirs)):
        torch.testing.assert_close(a, b, **TOL)

    # One random cotangent on every output and on the final state reaches everything.
    w_out = torch.randn_like(out_ours)
    w_state = [torch.randn_like(s) for s in as_tuple(s_ours)]

    def loss(out, state):
        return (out * w_out).sum() + sum((s * w).sum() for s, w in zip(as_tuple(state), w_state))

    leaves = [xs, *as_tuple(s0)]
    g_ours = torch.autograd.grad(loss(out_ours, s_ours), leaves + list(ours.parameters()))
    g_theirs = torch.autograd.grad(
        loss(out_theirs, s_theirs), leaves + [getattr(theirs, n) for n in PARAM_NAMES]
    )
    assert [n for n, _ in ours.named_parameters()] == list(PARAM_NAMES)
    for a, b in zip(g_ours, g_theirs):
        assert a.abs().sum() > 0  # every gradient is actually exercised
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("kind", ["tanh", "relu", "lstm", "gru"])
def test_zero_state_default(kind):
    ours, theirs = make_pair(kind)
    x = torch.randn(B, I, dtype=torch.float64)
    for a, b in zip(as_tuple(ours(x)), as_tuple(theirs(x))):
        torch.testing.assert_close(a, b, **TOL)
    for s in as_tuple(ours.init_state(B)):
        assert s.shape == (B, H) and s.dtype == torch.float64 and not s.any()


def test_relu_differs_from_tanh():
    cell = RNNCell(I, H, nonlinearity="relu").double()
    x, h = torch.randn(B, I, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    out = cell(x, h)
    assert (out >= 0).all() and (out == 0).any()  # rectified, and not all positive
    cell.nonlinearity = "tanh"
    assert not torch.allclose(cell(x, h), out)


# -- GRU reset="before": the lecture's form ----------------------------------------------


def gru_before_by_hand(cell: GRUCell, x, h):
    """h~ = tanh(W_n x + b_in + U_n (r*h) + b_hn), written out block by block."""
    W_r, W_z, W_n = cell.weight_ih.chunk(3, 0)
    U_r, U_z, U_n = cell.weight_hh.chunk(3, 0)
    b_ir, b_iz, b_in = cell.bias_ih.chunk(3)
    b_hr, b_hz, b_hn = cell.bias_hh.chunk(3)
    r = torch.sigmoid(x @ W_r.T + b_ir + h @ U_r.T + b_hr)
    z = torch.sigmoid(x @ W_z.T + b_iz + h @ U_z.T + b_hz)
    n = torch.tanh(x @ W_n.T + b_in + (r * h) @ U_n.T + b_hn)
    return z * h + (1 - z) * n


def test_gru_reset_before_matches_hand_formula():
    cell = GRUCell(I, H, reset="before").double()
    xs = torch.randn(T, B, I, dtype=torch.float64)
    h_ours = h_ref = torch.randn(B, H, dtype=torch.float64)
    for x in xs.unbind(0):
        h_ours, h_ref = cell(x, h_ours), gru_before_by_hand(cell, x, h_ref)
        torch.testing.assert_close(h_ours, h_ref, **TOL)


def test_gru_reset_before_differs_from_after():
    before = GRUCell(I, H, reset="before").double()
    after = GRUCell(I, H, reset="after").double()
    after.load_state_dict(before.state_dict())  # the two forms share parameters
    x, h = torch.randn(B, I, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    assert (before(x, h) - after(x, h)).abs().max() > 1e-3
    # With h = 0 the reset gate multiplies zero in both forms, up to b_hn's placement.
    zero = torch.zeros(B, H, dtype=torch.float64)
    with torch.no_grad():
        before.bias_hh[2 * H :] = 0
        after.bias_hh[2 * H :] = 0
    torch.testing.assert_close(before(x, zero), after(x, zero), **TOL)


# -- gradcheck -----------------------------------------------------------------------------

GRADCHECK_CELLS = {
    "rnn-tanh": lambda: RNNCell(3, 2),
    "rnn-relu": lambda: RNNCell(3, 2, nonlinearity="relu"),
    "lstm": lambda: LSTMCell(3, 2),
    "gru-after": lambda: GRUCell(3, 2, reset="after"),
    "gru-before": lambda: GRUCell(3, 2, reset="before"),
}


@pytest.mark.parametrize("name", list(GRADCHECK_CELLS))
def test_gradcheck(name):
    cell = GRADCHECK_CELLS[name]().double()
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    state = [
        torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
        for _ in range(cell.num_state_tensors)
    ]
    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]
    names = [n for n, _ in cell.named_parameters()]

    def step(x, *rest):
        n = cell.num_state_tensors
        state, ps = rest[:n], rest[n:]
        new = torch.func.functional_call(
            cell, dict(zip(names, ps)), (x, state[0] if n == 1 else tuple(state))
        )
        return as_tuple(new)

    assert torch.autograd.gradcheck(step, (x, *state, *params))


# -- internals -----------------------------------------------------------------------------


def test_rnn_internals():
    cell = RNNCell(I, H).double()
    x, h = torch.randn(B, I, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    new, internals = cell(x, h, return_internals=True)
    assert set(internals) == {"h"}
    assert torch.equal(internals["h"], new)
    assert torch.equal(new, cell(x, h))


def test_lstm_internals_are_consistent():
    cell = LSTMCell(I, H).double()
    x = torch.randn(B, I, dtype=torch.float64)
    h0, c0 = torch.randn(B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    (h, c), k = cell(x, (h0, c0), return_internals=True)
    assert set(k) == {"i", "f", "g", "o", "c", "h"}
    assert all(v.shape == (B, H) for v in k.values())
    for gate in "ifo":
        assert ((k[gate] > 0) & (k[gate] < 1)).all()
    assert (k["g"].abs() < 1).all()
    torch.testing.assert_close(c, k["f"] * c0 + k["i"] * k["g"], **TOL)
    torch.testing.assert_close(h, k["o"] * torch.tanh(c), **TOL)
    assert torch.equal(k["c"], c) and torch.equal(k["h"], h)
    # The gates are the torch-order blocks of the pre-activation.
    pre = x @ cell.weight_ih.T + cell.bias_ih + h0 @ cell.weight_hh.T + cell.bias_hh
    i, f, g, o = pre.chunk(4, -1)
    torch.testing.assert_close(k["i"], torch.sigmoid(i), **TOL)
    torch.testing.assert_close(k["f"], torch.sigmoid(f), **TOL)
    torch.testing.assert_close(k["g"], torch.tanh(g), **TOL)
    torch.testing.assert_close(k["o"], torch.sigmoid(o), **TOL)


@pytest.mark.parametrize("reset", ["before", "after"])
def test_gru_internals_are_consistent(reset):
    cell = GRUCell(I, H, reset=reset).double()
    x, h0 = torch.randn(B, I, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    h, k = cell(x, h0, return_internals=True)
    assert set(k) == {"r", "z", "n", "h"}
    assert torch.equal(k["h"], h)
    torch.testing.assert_close(h, k["z"] * h0 + (1 - k["z"]) * k["n"], **TOL)
    W_n, U_n = cell.weight_ih[2 * H :], cell.weight_hh[2 * H :]
    b_in, b_hn = cell.bias_ih[2 * H :], cell.bias_hh[2 * H :]
    if reset == "before":
        n = torch.tanh(x @ W_n.T + b_in + (k["r"] * h0) @ U_n.T + b_hn)
    else:
        n = torch.tanh(x @ W_n.T + b_in + k["r"] * (h0 @ U_n.T + b_hn))
    torch.testing.assert_close(k["n"], n, **TOL)


# -- initialisation ----------------------------------------------------------------------


@pytest.mark.parametrize("forget_bias", [1.0, 2.5, -0.5])
def test_forget_bias_lands_in_forget_block(forget_bias):
    torch.manual_seed(7)
    plain = LSTMCell(I, H, forget_bias=0.0)
    torch.manual_seed(7)
    biased = LSTMCell(I, H, forget_bias=forget_bias)
    expected = plain.bias_ih.detach().clone()
    expected[H : 2 * H] += forget_bias
    assert torch.equal(biased.bias_ih, expected)
    for name in ("weight_ih", "weight_hh", "bias_hh"):
        assert torch.equal(getattr(biased, name), getattr(plain, name))


def test_default_init_is_torch_uniform():
    cell = LSTMCell(I, H, forget_bias=0.0)
    bound = 1 / H**0.5
    for p in cell.parameters():
        assert p.abs().max() <= bound


def test_no_bias():
    cell = LSTMCell(I, H, bias=False)
    assert cell.bias_ih is None and cell.bias_hh is None
    assert [n for n, _ in cell.named_parameters()] == ["weight_ih", "weight_hh"]
    h, c = cell(torch.zeros(B, I))
    assert not h.any() and not c.any()  # no bias: zero in, zero out


# -- errors name the argument and the value ----------------------------------------------


@pytest.mark.parametrize("cls", [RNNCell, LSTMCell, GRUCell])
def test_wrong_feature_size(cls):
    cell = cls(I, H)
    with pytest.raises(ValueError, match=rf"`input`.*feature size 7.*input_size={I}"):
        cell(torch.randn(B, 7))


def test_unknown_nonlinearity():
    with pytest.raises(ValueError, match=r"`nonlinearity`.*'sigmoid'"):
        RNNCell(I, H, nonlinearity="sigmoid")


@pytest.mark.parametrize("cls", [GRUCell])
def test_unknown_reset(cls):
    with pytest.raises(ValueError, match=r"`reset`.*'middle'"):
        cls(I, H, reset="middle")


@pytest.mark.parametrize("cls", [RNNCell, LSTMCell, GRUCell])
@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_non_positive_hidden_size(cls, bad):
    with pytest.raises(ValueError, match=rf"`hidden_size`.*{bad!r}"):
        cls(I, bad)


def test_non_positive_input_size():
    with pytest.raises(ValueError, match=r"`input_size`.*0"):
        LSTMCell(0, H)
