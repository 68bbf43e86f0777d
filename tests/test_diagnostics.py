"""Gradient diagnostics against closed forms."""

import pytest
import torch

import rnnkit
from rnnkit.diagnostics import (
    GradientTrace,
    decay_rate,
    gradients_table,
    gradients_through_time,
    hidden_gradient_norms,
    largest_singular_values,
    plot_gradient_norms,
    plot_trace,
    read_trace,
)
from rnnkit.init import init_cell
from rnnkit.layers import record_states, recording


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


# -- a trained model of any task: the recorded per-step path -------------------------------


def _perturbed_norms(stack, x, loss_fn, lengths=None):
    """||dL/dh_t|| by the perturbation route: a zero e_t added to each step's h inside an
    explicit loop over the stack's cell, independent of the recording."""
    cell = stack.layers[0].cell
    B, T = x.shape[:2]
    eps = torch.zeros(T, B, cell.hidden_size, dtype=x.dtype, requires_grad=True)
    state = cell.init_state(B, dtype=x.dtype)
    outs = []
    for t in range(T):
        new = cell(x[:, t], state)
        h = cell.output(new) + eps[t]
        new = (h, new[1]) if isinstance(new, tuple) else h
        if lengths is not None:
            m = (t < lengths).view(B, 1)
            state = tuple(torch.where(m, n, o) for n, o in zip(new, state)) if isinstance(
                new, tuple) else torch.where(m, new, state)  # fmt: skip
            h = h * m
        else:
            state = new
        outs.append(h)
    (g,) = torch.autograd.grad(loss_fn(torch.stack(outs, 1)), eps)
    norms = g.norm(dim=-1)  # (T, B)
    if lengths is None:
        return norms.mean(1)
    valid = torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)
    return torch.stack([norms[t][valid[t]].mean() for t in range(T)])


@pytest.mark.parametrize("cls", [rnnkit.LSTM, rnnkit.GRU, rnnkit.RNN])
def test_recorded_norms_of_a_fused_layer_equal_the_perturbation_route(cls):
    """A layer that runs torch's fused kernel is recorded step by step, and dL/dh_t is
    the total derivative: equal to perturbing h_t in a separate explicit loop."""
    torch.manual_seed(0)
    stack = cls(3, 6, batch_first=True).double()
    x = torch.randn(4, 9, 3, dtype=torch.float64)
    w = torch.randn(6, dtype=torch.float64)

    def loss_fn(out):
        return (out[:, -1] * w).sum() + 0.1 * out.pow(2).sum()

    def probe(model):
        out, _ = model(x)
        return loss_fn(out)

    (layer,) = gradients_through_time(stack, probe)
    assert layer.name == "layers.0" and len(layer.norms) == 9
    expected = _perturbed_norms(stack, x, loss_fn)
    torch.testing.assert_close(torch.tensor(layer.norms, dtype=torch.float64), expected,
                               rtol=1e-10, atol=1e-14)  # fmt: skip
    assert all(p.grad is None for p in stack.parameters())  # weights' gradients untouched
    assert stack.layers[0].backend("cpu") != "per-step cell loop"  # it was fused outside


def test_recorded_norms_average_only_the_real_steps_of_padded_sequences():
    torch.manual_seed(1)
    stack = rnnkit.LSTM(2, 5, batch_first=True).double()
    x = torch.randn(3, 7, 2, dtype=torch.float64)
    lengths = torch.tensor([7, 4, 2])

    def loss_fn(out):
        return out.pow(2).sum()

    (layer,) = gradients_through_time(stack, lambda m: loss_fn(m(x, lengths=lengths)[0]))
    expected = _perturbed_norms(stack, x, loss_fn, lengths)
    torch.testing.assert_close(torch.tensor(layer.norms, dtype=torch.float64), expected,
                               rtol=1e-10, atol=1e-14)  # fmt: skip


def test_bidirectional_stacks_record_each_direction_in_the_order_it_runs():
    torch.manual_seed(2)
    stack = rnnkit.GRU(2, 4, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(2, 12, 2)
    # the loss reads the last step only: the forward layers' gradient is largest at the
    # end, the backward layers' at their own last step (the sequence's first)
    layers = gradients_through_time(stack, lambda m: m(x)[0][:, -1].sum())
    names = [g.name for g in layers]
    assert names == ["layers.0.forward_layer", "layers.0.backward_layer",
                     "layers.1.forward_layer", "layers.1.backward_layer"]  # fmt: skip
    top_forward, top_backward = layers[2].norms, layers[3].norms
    assert top_forward[-1] == max(top_forward) and top_forward[0] < top_forward[-1]
    # the top backward layer reads x[:, -1] first: only that step reaches the loss
    assert top_backward[0] > 0 and all(n == 0 for n in top_backward[1:])
    assert set(layers[0].sigma_max) == {"r", "z", "n"}


def test_a_model_without_a_recurrent_layer_is_refused():
    model = torch.nn.Linear(3, 1)
    with pytest.raises(ValueError, match="Argument `model`: Linear ran no recurrent layer"):
        gradients_through_time(model, lambda m: m(torch.ones(2, 3)).sum())


def test_recording_leaves_the_outputs_and_the_backends_as_they_were():
    torch.manual_seed(3)
    stack = rnnkit.LSTM(3, 5, num_layers=2, batch_first=True)
    x = torch.randn(2, 6, 3)
    plain, _ = stack(x)
    with record_states() as record:
        recorded, _ = stack(x)
    torch.testing.assert_close(recorded, plain, rtol=1e-5, atol=1e-6)
    assert [len(v) for v in record.steps.values()] == [6, 6]
    assert not recording()
    with torch.no_grad():
        again, _ = stack(x)  # outside the block: the fused path again, nothing recorded
    torch.testing.assert_close(again, plain)


def test_recording_and_internals_together_return_both():
    # The cell's per-step internals and the recorder share the per-step loop.
    torch.manual_seed(4)
    stack = rnnkit.LSTM(3, 4, num_layers=2, batch_first=True)
    x = torch.randn(2, 5, 3)
    _, _, plain = stack(x, return_internals=True)
    with record_states() as record:
        _, _, internals = stack(x, return_internals=True)
    assert len(internals) == len(plain) == 2  # one dict per layer
    for got, want in zip(internals, plain):
        assert got.keys() == want.keys()
        for k in want:
            torch.testing.assert_close(got[k], want[k])
    assert [len(v) for v in record.steps.values()] == [5, 5]


def test_trace_keeps_a_point_per_evaluation_and_plots(tmp_path):
    torch.manual_seed(4)
    model = rnnkit.LSTM(2, 4, batch_first=True)
    x = torch.randn(3, 5, 2)
    trace = GradientTrace(lambda m: m(x)[0].sum(), tmp_path / "gradients.json")

    class FakeTrainer:  # what the callback reads of a Trainer
        def __init__(self, step):
            self.model, self.step = model, step

    rng = torch.get_rng_state()
    for step in (10, 20, 30):
        trace(FakeTrainer(step), {"loss": 1.0})
    assert torch.equal(torch.get_rng_state(), rng)
    points = read_trace(tmp_path / "gradients.json")
    assert [p["step"] for p in points] == [10, 20, 30]
    assert len(points[0]["layers"][0].norms) == 5
    restored = GradientTrace(trace.probe)
    restored.load_state_dict(trace.state_dict())
    assert restored.points == trace.points
    png = plot_trace(points, tmp_path / "trace.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "layers.0" in gradients_table(points[-1]["layers"])
