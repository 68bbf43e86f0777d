"""The whole-sequence kernels (rnnkit.sequence) against the per-step loop and gradcheck.

The reference is the generic per-step loop of Recurrent, reached through a subclass of
each cell (sequence_kernel only takes the exact dense classes): same parameters, same
arithmetic step by step, every step recorded by autograd.
"""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit import GRUCell, LSTMCell, Recurrent, RNNCell
from rnnkit.conv import ConvLSTMCell
from rnnkit.sequence import KERNELS, run_sequence, sequence_kernel

T, B, I, H = 6, 5, 3, 4
TOL = dict(rtol=1e-10, atol=1e-10)
LENGTHS = {
    "none": None,
    "unsorted": [4, 2, 5, 1, 4],  # max 5 < T: the last step is padding for all
    "sorted": [6, 5, 5, 3, 1],  # longest first: no reordering
    "one short": [6, 6, 6, 6, 2],
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class SteppedRNNCell(RNNCell):
    pass


class SteppedLSTMCell(LSTMCell):
    pass


class SteppedGRUCell(GRUCell):
    pass


def make_cell(kernel: str, *, bias: bool = True, stepped: bool = False, input_size: int = I):
    """The cell that `kernel` runs, in float64; stepped=True: a subclass, for the loop."""
    if kernel.startswith("rnn"):
        cls = SteppedRNNCell if stepped else RNNCell
        cell = cls(input_size, H, nonlinearity=kernel[4:], bias=bias)
    elif kernel == "lstm":
        cell = (SteppedLSTMCell if stepped else LSTMCell)(input_size, H, bias=bias)
    else:
        cls = SteppedGRUCell if stepped else GRUCell
        cell = cls(input_size, H, reset=kernel[4:], bias=bias)
    return cell.double()


def twins(kernel: str, *, bias: bool = True, reverse: bool = False):
    """Two layers with equal weights: one runs the sequence kernel, one the step loop."""
    fast = Recurrent(make_cell(kernel, bias=bias), reverse=reverse, fused=False)
    slow = Recurrent(make_cell(kernel, bias=bias, stepped=True), reverse=reverse, fused=False)
    slow.load_state_dict(fast.state_dict())
    with torch.no_grad():  # non-zero biases everywhere, so that folding them is tested
        for p in fast.parameters():
            p.add_(0.1 * torch.randn_like(p))
    slow.load_state_dict(fast.state_dict())
    return fast, slow


def graph_names(t: torch.Tensor, depth: int = 6) -> set[str]:
    """Names of the autograd nodes within `depth` steps of t's grad_fn."""
    names, frontier = set(), [t.grad_fn]
    for _ in range(depth):
        frontier = [f for f in frontier if f is not None]
        names |= {f.name() for f in frontier}
        frontier = [g for f in frontier for g, _ in f.next_functions]
    return names


def run_and_grad(layer, x, state, lengths, w_out, w_state):
    """Outputs, final states and the gradients of a random linear loss wrt everything."""
    out, final = layer(x, state, lengths=lengths)
    finals = final if isinstance(final, tuple) else (final,)
    loss = (out * w_out).sum() + sum((f * w).sum() for f, w in zip(finals, w_state))
    states = state if isinstance(state, tuple) else (state,)
    grads = torch.autograd.grad(loss, [x, *states, *layer.parameters()])
    return out.detach(), [f.detach() for f in finals], grads


# -- equality with the per-step loop -------------------------------------------------------


@pytest.mark.parametrize("lengths", list(LENGTHS), ids=str)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_equals_step_loop(kernel, bias, reverse, lengths):
    fast, slow = twins(kernel, bias=bias, reverse=reverse)
    lengths = LENGTHS[lengths]
    x = torch.randn(B, T, I, dtype=torch.float64, requires_grad=True)
    n_states = 2 if kernel == "lstm" else 1
    states = [
        torch.randn(1, B, H, dtype=torch.float64, requires_grad=True) for _ in range(n_states)
    ]
    state = tuple(states) if n_states == 2 else states[0]
    w_out = torch.randn(B, T, H, dtype=torch.float64)
    w_state = [torch.randn(1, B, H, dtype=torch.float64) for _ in range(n_states)]

    out, finals, grads = run_and_grad(fast, x, state, lengths, w_out, w_state)
    out_ref, finals_ref, grads_ref = run_and_grad(slow, x, state, lengths, w_out, w_state)
    torch.testing.assert_close(out, out_ref, **TOL)
    for f, f_ref in zip(finals, finals_ref):
        torch.testing.assert_close(f, f_ref, **TOL)
    names = ["x", *(f"state{i}" for i in range(n_states)), *dict(fast.named_parameters())]
    for name, g, g_ref in zip(names, grads, grads_ref):
        torch.testing.assert_close(g, g_ref, **TOL, msg=lambda m, name=name: f"{name}: {m}")
    if lengths is not None:  # padded outputs are exact zeros
        for b, n in enumerate(lengths):
            assert torch.all(out[b, n:] == 0)


@pytest.mark.parametrize("kernel", KERNELS)
def test_stack_bidirectional_equals_step_loop(kernel):
    """Two bidirectional layers, lengths, learned initial states: the whole Stack."""

    def layer(size, reverse, stepped):
        cell = make_cell(kernel, stepped=stepped, input_size=size)
        return Recurrent(cell, reverse=reverse, initial_state="learned", fused=False)

    def stack(stepped):
        layers = [
            rnnkit.Bidirectional(layer(size, False, stepped), layer(size, True, stepped))
            for size in (I, 2 * H)
        ]
        return rnnkit.Stack(layers).double()

    fast, slow = stack(False), stack(True)
    with torch.no_grad():
        for p in fast.parameters():
            p.normal_(0, 0.5)
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(B, T, I, dtype=torch.float64, requires_grad=True)
    lengths = LENGTHS["unsorted"]
    out, state = fast(x, lengths=lengths)
    out_ref, state_ref = slow(x, lengths=lengths)
    torch.testing.assert_close(out, out_ref, **TOL)
    w = torch.randn_like(out)
    g = torch.autograd.grad((out * w).sum(), [x, *fast.parameters()])
    g_ref = torch.autograd.grad((out_ref * w).sum(), [x, *slow.parameters()])
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("kernel", KERNELS)
def test_partial_requires_grad(kernel):
    """Frozen weights and an input without grad: the remaining gradients are unchanged."""
    fast, slow = twins(kernel)
    for layer in (fast, slow):
        layer.cell.weight_ih.requires_grad_(False)
        layer.cell.weight_hh.requires_grad_(False)
    x = torch.randn(B, T, I, dtype=torch.float64)
    for layer in (fast, slow):
        out, _ = layer(x, lengths=LENGTHS["unsorted"])
        (out**2).sum().backward()
    for p, q in zip(fast.parameters(), slow.parameters()):
        assert (p.grad is None) == (q.grad is None) == (not p.requires_grad)
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, **TOL)


@pytest.mark.parametrize("kernel", KERNELS)
def test_inference_without_grad(kernel):
    fast, slow = twins(kernel)
    x = torch.randn(B, T, I, dtype=torch.float64)
    with torch.no_grad():
        out, _ = fast(x, lengths=LENGTHS["unsorted"])
        out_ref, _ = slow(x, lengths=LENGTHS["unsorted"])
    torch.testing.assert_close(out, out_ref, **TOL)


@pytest.mark.parametrize("kernel", ["lstm", "gru_after"])
def test_float32_close_to_step_loop(kernel):
    fast, slow = twins(kernel)
    fast.float()
    slow.float()
    x = torch.randn(B, T, I, requires_grad=True)
    out, _ = fast(x)
    out_ref, _ = slow(x)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-6)
    (g,) = torch.autograd.grad(out.sum(), x)
    (g_ref,) = torch.autograd.grad(out_ref.sum(), x)
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-6)


# -- gradcheck -----------------------------------------------------------------------------


@pytest.mark.parametrize("lengths", [None, [3, 1, 4]], ids=["full", "lengths"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_gradcheck(kernel, lengths):
    cell = make_cell(kernel, input_size=2)
    names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    params = [getattr(cell, n).detach().clone().requires_grad_() for n in names]
    x = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)  # (T, B, I)
    n_states = 2 if kernel == "lstm" else 1
    states = [torch.randn(3, H, dtype=torch.float64, requires_grad=True) for _ in range(n_states)]
    if lengths is not None:
        lengths = torch.tensor(lengths)

    def f(x, *args):
        states, weights = args[:n_states], args[n_states:]
        for n, w in zip(names, weights):
            setattr(cell, n, w)  # plain tensors in place of the parameters
        state = tuple(states) if n_states == 2 else states[0]
        out, final = run_sequence(cell, x, state, lengths)
        return (out, *final) if isinstance(final, tuple) else (out, final)

    for n in names:
        delattr(cell, n)
    assert torch.autograd.gradcheck(f, (x, *states, *params))


# -- selection -----------------------------------------------------------------------------


def test_sequence_kernel_names():
    assert sequence_kernel(RNNCell(2, 3)) == "rnn_tanh"
    assert sequence_kernel(RNNCell(2, 3, nonlinearity="relu")) == "rnn_relu"
    assert sequence_kernel(LSTMCell(2, 3)) == "lstm"
    assert sequence_kernel(GRUCell(2, 3)) == "gru_after"
    assert sequence_kernel(GRUCell(2, 3, reset="before")) == "gru_before"
    assert sequence_kernel(SteppedLSTMCell(2, 3)) is None  # a subclass may change the step
    assert sequence_kernel(ConvLSTMCell(2, 3, kernel_size=3)) is None


@pytest.mark.parametrize(
    ("model", "node"),
    [
        (lambda: rnnkit.LSTM(I, H, fused=False), "LSTMSequenceBackward"),
        (lambda: rnnkit.GRU(I, H, reset="before"), "GRUResetBeforeSequenceBackward"),
        (lambda: rnnkit.GRU(I, H, fused=False), "GRUSequenceBackward"),
        (lambda: rnnkit.RNN(I, H, fused=False, nonlinearity="relu"), "RNNSequenceBackward"),
    ],
)
def test_explicit_path_selects_the_sequence_kernel(model, node):
    x = torch.randn(B, T, I, requires_grad=True)
    out, _ = model()(x)
    assert node in graph_names(out)


def test_internals_and_fused_paths_do_not_use_it():
    model = rnnkit.LSTM(I, H, fused=False)
    x = torch.randn(B, T, I, requires_grad=True)
    out, _, _ = model(x, return_internals=True)  # the per-step loop records the gates
    assert not any("Sequence" in n for n in graph_names(out))
    out, _ = rnnkit.LSTM(I, H)(x)
    assert not any("Sequence" in n for n in graph_names(out))


def test_run_sequence_rejects_other_cells_and_sizes():
    x = torch.randn(T, B, I)
    with pytest.raises(ValueError, match="RNNCell, LSTMCell or GRUCell"):
        run_sequence(SteppedRNNCell(I, H), x, torch.zeros(B, H))
    with pytest.raises(ValueError, match="input_size=5"):
        run_sequence(RNNCell(5, H), x, torch.zeros(B, H))
