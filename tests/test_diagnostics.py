"""Gradient diagnostics against closed forms."""

import pytest
import torch

import rnnkit
from rnnkit.diagnostics import (
    decay_rate,
    hidden_gradient_norms,
    largest_singular_values,
    plot_gradient_norms,
)
from rnnkit.init import init_cell


@pytest.mark.parametrize("scale", [0.5, 1.0, 1.5])
def test_norms_follow_powers_of_the_singular_value(scale):
    """Zero input and state keep h at 0, where tanh' = 1: dL/dh_t = (W^T)^(T-t) w.

    With W = s * Q (Q orthogonal) the norm is exactly s^(T-t).
    """
    torch.manual_seed(0)
    T = 30
    cell = rnnkit.RNNCell(2, 16, bias=False)
    init_cell(cell, weight_hh="orthogonal", gain={"weight_hh": scale})
    norms = hidden_gradient_norms(cell, torch.zeros(4, T, 2))
    expected = torch.tensor([scale ** (T - 1 - t) for t in range(T)], dtype=torch.float64)
    torch.testing.assert_close(norms, expected, rtol=1e-5, atol=0)
    assert decay_rate(norms) == pytest.approx(scale, rel=1e-5)
    assert largest_singular_values(cell)["h"] == pytest.approx(scale, rel=1e-5)


def test_total_derivative_matches_autograd_through_the_layer():
    """The norms equal ||dL/dh_t|| computed by perturbing h_t inside a fused torch.nn.GRU."""
    torch.manual_seed(0)
    cell = rnnkit.GRUCell(3, 5).double()
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    norms = hidden_gradient_norms(cell, x, seed=3)
    w = torch.randn(5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    w = w / w.norm()
    # Independent route: add a zero perturbation e_t to h_t and differentiate L w.r.t. it.
    eps = torch.zeros(6, 2, 5, dtype=torch.float64, requires_grad=True)
    h = torch.zeros(2, 5, dtype=torch.float64)
    for t in range(6):
        h = cell(x[:, t], h) + eps[t]
    (g,) = torch.autograd.grad((h * w).sum(), eps)
    torch.testing.assert_close(norms, g.norm(dim=-1).mean(-1), rtol=1e-12, atol=1e-15)


def test_lstm_keeps_gradients_longer_than_a_vanilla_rnn():
    torch.manual_seed(0)
    x = torch.randn(8, 60, 4) * 0.1
    rnn = hidden_gradient_norms(rnnkit.RNNCell(4, 32), x)
    lstm = hidden_gradient_norms(rnnkit.LSTMCell(4, 32, forget_bias=1.0), x)
    assert decay_rate(rnn) < decay_rate(lstm) < 1.0
    assert lstm[0] > 1e6 * rnn[0]


def test_singular_values_per_gate_and_conv():
    cell = rnnkit.LSTMCell(3, 8)
    init_cell(cell, weight_hh="orthogonal", gain={"weight_hh": 2.0})
    assert set(largest_singular_values(cell)) == {"i", "f", "g", "o"}
    assert all(v == pytest.approx(2.0, rel=1e-5) for v in largest_singular_values(cell).values())
    conv = rnnkit.ConvGRUCell(2, 4, 3)
    assert set(largest_singular_values(conv)) == {"r", "z", "n"}
    norms = hidden_gradient_norms(conv, torch.randn(1, 4, 2, 5, 5))
    assert norms.shape == (4,) and torch.all(norms > 0)


def test_plot_writes_a_png_with_the_curves(tmp_path):
    import matplotlib.image

    path = plot_gradient_norms(
        {"a": torch.logspace(-10, 0, 20), "b": torch.ones(20)}, tmp_path / "g.png"
    )
    img = matplotlib.image.imread(path)
    assert img.shape[0] > 300 and img.shape[1] > 500
    assert img[..., :3].std() > 0.05  # not a blank canvas


def test_bad_loss_name():
    with pytest.raises(ValueError, match="loss"):
        hidden_gradient_norms(rnnkit.RNNCell(2, 3), torch.zeros(1, 3, 2), loss="first")
