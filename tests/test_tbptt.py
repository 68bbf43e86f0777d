"""Truncated BPTT: windows, gradient cut at the boundary, carried state, clipping."""

import math

import pytest
import torch

import rnnkit
from rnnkit.tbptt import tbptt_windows, truncated_bptt


class SeqModel(torch.nn.Module):
    """x (B, T, I) -> y (B, T, O), carrying the recurrent state."""

    def __init__(self, I=2, H=5, O=1, cell="rnn"):
        super().__init__()
        cls = {"rnn": rnnkit.RNN, "lstm": rnnkit.LSTM, "gru": rnnkit.GRU}[cell]
        self.rnn = cls(I, H)
        self.out = torch.nn.Linear(H, O)

    def forward(self, x, state=None):
        h, state = self.rnn(x, state)
        return self.out(h), state


def mse(y, t):
    return ((y - t) ** 2).mean()


@pytest.mark.parametrize(
    "T, k1, k2, expected",
    [
        (10, 4, None, [(0, 0, 0, 4), (4, 4, 4, 8), (8, 8, 8, 10)]),
        (10, 4, 6, [(0, 0, 0, 4), (2, 2, 4, 8), (6, 6, 8, 10)]),
        (10, 4, 2, [(0, 2, 0, 4), (4, 6, 4, 8), (8, 8, 8, 10)]),
        (3, 5, None, [(0, 0, 0, 3)]),
    ],
)
def test_windows(T, k1, k2, expected):
    got = [(w.start, w.cut, w.loss_start, w.end) for w in tbptt_windows(T, k1, k2)]
    assert got == expected
    # every step's loss is counted exactly once
    assert [t for w in tbptt_windows(T, k1, k2) for t in range(w.loss_start, w.end)] == list(
        range(T)
    )


@pytest.mark.parametrize("name, bad", [("k1", 0), ("k2", -1), ("T", 0)])
def test_windows_reject_bad_sizes(name, bad):
    args = {"T": 10, "k1": 3, "k2": 3} | {name: bad}
    with pytest.raises(ValueError, match=name):
        tbptt_windows(args["T"], args["k1"], args["k2"])


def _frozen_run(model, x, y, k1, k2):
    """Run TBPTT with lr=0 so weights stay put; return x.grad."""
    x = x.clone().requires_grad_(True)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    truncated_bptt(model, x, y, mse, opt, k1=k1, k2=k2)
    return x.grad


def test_gradient_stops_at_window_boundary():
    torch.manual_seed(0)
    model = SeqModel().double()
    x = torch.randn(3, 12, 2, dtype=torch.float64)
    y = torch.randn(3, 12, 1, dtype=torch.float64)
    grad = _frozen_run(model, x, y, k1=4, k2=4)

    # Independent computation: each window's loss backpropagated within the window only,
    # from the true carried state (computed without gradients).
    expected = torch.zeros_like(x)
    with torch.no_grad():
        _, s4 = model(x[:, :4])
        _, s8 = model(x[:, :8])
    for a, b, s in [(0, 4, None), (4, 8, s4), (8, 12, s8)]:
        xw = x[:, a:b].clone().requires_grad_(True)
        out, _ = model(xw, s)
        (g,) = torch.autograd.grad(mse(out, y[:, a:b]), xw)
        expected[:, a:b] = g
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-14)

    # Full BPTT would differ: later losses reach back into earlier windows.
    xf = x.clone().requires_grad_(True)
    out, _ = model(xf)
    losses = [mse(out[:, a:b], y[:, a:b]) for a, b in [(0, 4), (4, 8), (8, 12)]]
    (full,) = torch.autograd.grad(sum(losses), xf)
    assert not torch.allclose(full[:, :4], grad[:, :4])


def test_longer_backprop_k2_reaches_back_k2_steps():
    torch.manual_seed(1)
    model = SeqModel().double()
    x = torch.randn(2, 6, 2, dtype=torch.float64)
    y = torch.randn(2, 6, 1, dtype=torch.float64)
    grad = _frozen_run(model, x, y, k1=2, k2=4)
    # windows: losses [0,2) from 0; [2,4) from 0; [4,6) from 2.
    xf = x.clone().requires_grad_(True)
    out, _ = model(xf[:, :4])
    (g_early,) = torch.autograd.grad(mse(out[:, :2], y[:, :2]) + mse(out[:, 2:4], y[:, 2:4]), xf)
    torch.testing.assert_close(grad[:, :2], g_early[:, :2], rtol=1e-10, atol=1e-14)
    with torch.no_grad():
        _, s2 = model(x[:, :2])
    xw = x[:, 2:6].clone().requires_grad_(True)
    out, _ = model(xw, s2)
    (g_last,) = torch.autograd.grad(mse(out[:, 2:], y[:, 4:6]), xw)
    torch.testing.assert_close(grad[:, 2:4], g_early[:, 2:4] + g_last[:, :2], rtol=1e-10, atol=0)
    torch.testing.assert_close(grad[:, 4:6], g_last[:, 2:], rtol=1e-10, atol=0)


def test_shorter_backprop_k2_detaches_inside_the_window():
    torch.manual_seed(2)
    model = SeqModel().double()
    x = torch.randn(2, 4, 2, dtype=torch.float64)
    y = torch.randn(2, 4, 1, dtype=torch.float64)
    grad = _frozen_run(model, x, y, k1=4, k2=1)
    # Only the last step is backpropagated through the recurrence: the loss at step t
    # reaches x_t, and (for t < 3) nothing earlier, because the state is cut at step 3.
    xf = x.clone().requires_grad_(True)
    out, _ = model(xf)
    (full,) = torch.autograd.grad(mse(out, y), xf)
    assert torch.allclose(grad[:, 3], full[:, 3])  # last step: same as full BPTT
    assert not torch.allclose(grad[:, :3], full[:, :3])


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_trains_across_windows_carrying_state(cell):
    """A long sequence in windows: no 'backward through the graph a second time', loss falls."""
    torch.manual_seed(0)
    t = torch.arange(201, dtype=torch.float32)
    wave = torch.sin(t * 2 * math.pi / 25).view(1, -1, 1).repeat(4, 1, 1)
    x, y = wave[:, :-1], wave[:, 1:]
    model = SeqModel(I=1, H=16, cell=cell)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    first = truncated_bptt(model, x, y, mse, opt, k1=20)
    state = first.state
    for _ in range(5):
        res = truncated_bptt(model, x, y, mse, opt, k1=20, state=state)
        state = res.state
    assert len(first.losses) == math.ceil(200 / 20)
    assert res.losses[-1] < 0.1 * first.losses[0]
    h = state[0] if isinstance(state, tuple) else state
    assert not h.requires_grad  # detached: safe to carry into the next batch


def test_clipping_bounds_the_update():
    torch.manual_seed(0)
    model = SeqModel()
    x, y = torch.randn(2, 8, 2) * 10, torch.randn(2, 8, 1) * 10
    before = torch.nn.utils.parameters_to_vector(model.parameters()).clone()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    res = truncated_bptt(model, x, y, mse, opt, k1=8, clip_norm=0.01)
    after = torch.nn.utils.parameters_to_vector(model.parameters())
    assert res.grad_norms[0] > 0.01  # the pre-clip norm was larger ...
    assert (after - before).norm().item() == pytest.approx(0.01, rel=1e-4)  # ... the step is not


# -- synthetic gradients -------------------------------------------------------------------


class _Net(torch.nn.Module):
    """An LSTM stack and a linear readout: model(x, state) -> (outputs, state)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.rnn = rnnkit.LSTM(3, 5, 2, batch_first=True)
        self.head = torch.nn.Linear(5, 1)

    def forward(self, x, state=None):
        return self.rnn(x, state)

    def window_loss(self, out):
        return (self.head(out) ** 2).mean()


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


def test_synthetic_gradients_equal_to_the_true_ones_give_full_backpropagation():
    """With M fixed to the true dL_2/dh at the edge, window 1's update plus window 2's
    is exactly the gradient of backpropagation through both windows."""
    from rnnkit.tbptt import CarriedState, SyntheticGradients, flatten_state

    model = _Net()
    x = torch.randn(4, 10, 3)
    out, _ = model(x)
    model.zero_grad()
    (model.window_loss(out[:, :6]) + model.window_loss(out[:, 6:])).backward()
    full = _grads(model)

    # the true gradient at the edge: dL_2/dh_6 through window 2 only
    _, edge = model(x[:, :6])
    edge = tuple(t.detach().requires_grad_() for t in edge)
    out2, _ = model(x[:, 6:], edge)
    true = torch.autograd.grad(model.window_loss(out2), edge)

    sg = SyntheticGradients(flatten_state(edge).shape[1])
    sg.forward = lambda state: true  # M fixed to the truth
    carried = CarriedState(sg)
    model.zero_grad()
    carried.loss(model.window_loss(carried(model, x[:, :6]))).backward()
    carried.loss(model.window_loss(carried(model, x[:, 6:])), last=True).backward()
    for a, b in zip(_grads(model), full):
        torch.testing.assert_close(a, b)
    # without the synthetic gradient the sum misses everything window 2 says of window 1
    plain = CarriedState()
    model.zero_grad()
    model.window_loss(plain(model, x[:, :6])).backward()
    model.window_loss(plain(model, x[:, 6:])).backward()
    assert not all(torch.allclose(a, b) for a, b in zip(_grads(model), full))


def test_a_scaled_synthetic_gradient_adds_that_share_of_the_edge_gradient():
    """scale s: window 1's gradient is its own plus s times what window 2 says through
    the edge, so the three runs (s = 0 by leaving M out, 0.5, 1) lie on one line."""
    from rnnkit.tbptt import CarriedState, SyntheticGradients, flatten_state

    model = _Net()
    x = torch.randn(4, 10, 3)
    _, edge = model(x[:, :6])
    edge = tuple(t.detach().requires_grad_() for t in edge)
    out2, _ = model(x[:, 6:], edge)
    true = torch.autograd.grad(model.window_loss(out2), edge)

    def first_window(scale):
        sg = None
        if scale:
            sg = SyntheticGradients(flatten_state(edge).shape[1], scale=scale)
            sg.forward = lambda state: true
        carried = CarriedState(sg)
        model.zero_grad()
        carried.loss(model.window_loss(carried(model, x[:, :6]))).backward()
        return _grads(model)

    none, half, whole = first_window(0), first_window(0.5), first_window(1.0)
    for n, h, w in zip(none, half, whole):
        torch.testing.assert_close(h, n + 0.5 * (w - n))
    assert any(not torch.allclose(n, w) for n, w in zip(none, whole))
    with pytest.raises(ValueError, match="Argument `scale` must be positive"):
        SyntheticGradients(4, scale=0.0)


def test_the_synthetic_gradient_target_is_the_bootstrapped_gradient_at_the_window_start():
    """M's target at h_t is d/dh_t (L_{t:t+k} + <h_{t+k}, M(h_{t+k})>), M(h_{t+k}) held
    constant; at the sequence's end M learns 0."""
    from rnnkit.tbptt import CarriedState, SyntheticGradients, flatten_state

    model = _Net()
    x = torch.randn(4, 12, 3)
    sg = SyntheticGradients(2 * 2 * 5, hidden_size=7)
    torch.nn.init.normal_(sg.net[-1].weight, std=0.3)  # a non-zero M: the bootstrap matters
    before = {k: v.clone() for k, v in sg.state_dict().items()}
    carried = CarriedState(sg)
    carried.loss(model.window_loss(carried(model, x[:, :4]))).backward()
    h4 = carried.state
    carried.loss(model.window_loss(carried(model, x[:, 4:8]))).backward()
    state = carried.state_dict()  # collects window 2's start gradient
    (got_h, got_target) = sg.pending[-1]

    # independently: window 2 from h_4 with M(h_8) injected, M as it was then
    start = tuple(t.detach().requires_grad_() for t in h4)
    out, end = model(x[:, 4:8], start)
    fixed = SyntheticGradients(20, hidden_size=7)
    fixed.load_state_dict(before)
    with torch.no_grad():
        m = fixed(end)
    L = model.window_loss(out) + sum((e * d).sum() for e, d in zip(end, m))
    want = flatten_state(torch.autograd.grad(L, start))
    torch.testing.assert_close(got_h, flatten_state(h4))
    torch.testing.assert_close(got_target, want)
    assert state["synthetic"]["pending"][-1][1].shape == want.shape
    assert sg.last_loss is None  # window 1 began from nothing (zeros): no target, no step

    carried.loss(model.window_loss(carried(model, x[:, 8:])), last=True).backward()
    assert sg.last_loss is not None  # learned on window 2's start when window 3 began
    end_row, zero = sg.pending[0]
    assert torch.equal(zero, torch.zeros_like(end_row))  # the end: nothing follows


def test_synthetic_gradients_need_equal_k1_and_k2_and_train_inside_truncated_bptt():
    from rnnkit.tbptt import SyntheticGradients

    model = _Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(4, 12, 3), torch.randn(4, 12, 1)

    def loss_fn(out, target):
        return ((model.head(out) - target) ** 2).mean()

    sg = SyntheticGradients(20)
    with pytest.raises(ValueError, match="Argument `synthetic`: for k1 = k2 only"):
        truncated_bptt(model, x, y, loss_fn, opt, k1=4, k2=8, synthetic=sg)
    result = truncated_bptt(model, x, y, loss_fn, opt, k1=4, synthetic=sg)
    assert len(result.losses) == 3 and sg.last_loss is not None
    assert any(p.abs().sum() > 0 for p in sg.net[-1].parameters())  # M has moved off zero


def test_m_learns_the_same_way_whatever_the_scale_of_the_gradients():
    """M fits its targets in units of their running RMS: targets 1e-4 times smaller
    give predictions exactly 1e-4 times smaller (fitted raw, Adam's steps of about `lr`
    per weight would not shrink with them), and the scale resumes with M."""
    from rnnkit.tbptt import SyntheticGradients

    torch.manual_seed(0)
    x, y = torch.randn(6, 8), torch.randn(6, 8)
    big, small = SyntheticGradients(8, lr=1e-2), SyntheticGradients(8, lr=1e-2)
    for _ in range(30):
        for sg, target in ((big, y), (small, 1e-4 * y)):
            sg.pending = [(x, target)]
            sg.learn()
    torch.testing.assert_close(small(x), 1e-4 * big(x))
    assert big.last_loss < 0.9  # it learned (the loss starts at about 1 in RMS units)
    assert big(x).abs().mean() > 0.1  # and predicts at the targets' scale, not 1e-4
    torch.testing.assert_close(big.target_ms, y.pow(2).mean(), rtol=0.2, atol=0)
    again = SyntheticGradients(8, lr=1e-2)
    again.load_training_state(big.training_state(), "cpu")
    torch.testing.assert_close(again(x), big(x))
    with pytest.raises(ValueError, match="Argument `target_decay`"):
        SyntheticGradients(8, target_decay=1.0)
