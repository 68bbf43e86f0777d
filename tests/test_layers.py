"""Tests of the layers: torch.nn parity, fused vs explicit, padding, states, errors."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit import Bidirectional, GRUCell, LSTMCell, Recurrent, RNNCell, Stack

B, T, I, H = 4, 5, 4, 3  # batch, steps, input features, hidden features
# Unsorted, and sorting them is not its own inverse: packing must restore the batch order.
LENGTHS = [3, 5, 2, 4]
TOL = dict(rtol=1e-10, atol=1e-10)
KINDS = ["rnn-tanh", "rnn-relu", "lstm", "gru"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -- helpers -------------------------------------------------------------------------------


def torch_kernel(kind: str, fused: bool | None) -> bool | None:
    """fused=None in these tests means torch's kernel wherever one exists.

    (On the CPU, a layer left at fused=None runs rnnkit's sequence kernel for the GRU and
    vanilla RNN, because it is faster there; fused=True asks for torch's kernel.)
    """
    return True if fused is None and kind != "gru-before" else fused


def make(kind: str, **kwargs) -> Stack:
    """An rnnkit RNN/LSTM/GRU in float64. kind: rnn-tanh, rnn-relu, lstm, gru, gru-before."""
    kwargs["fused"] = torch_kernel(kind, kwargs.get("fused"))
    if kind.startswith("rnn"):
        model = rnnkit.RNN(I, H, nonlinearity=kind[4:], **kwargs)
    elif kind == "lstm":
        model = rnnkit.LSTM(I, H, **kwargs)
    else:
        model = rnnkit.GRU(I, H, reset="before" if kind == "gru-before" else "after", **kwargs)
    return model.double()


def make_cell(kind: str, input_size: int = I):
    if kind.startswith("rnn"):
        return RNNCell(input_size, H, nonlinearity=kind[4:]).double()
    if kind == "lstm":
        return LSTMCell(input_size, H).double()
    return GRUCell(input_size, H, reset="before" if kind == "gru-before" else "after").double()


def twins(kind: str, **kwargs) -> tuple[Stack, Stack]:
    """The same model twice with equal weights: default (fused if possible) and fused=False."""
    fused, explicit = make(kind, **kwargs), make(kind, fused=False, **kwargs)
    with torch.no_grad():  # non-zero learned initial states, so that they matter
        for name, p in fused.named_parameters():
            if ".h0." in name:
                p.normal_()
    explicit.load_state_dict(fused.state_dict())
    return fused, explicit


def randn(*shape, requires_grad: bool = False, device="cpu") -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, device=device, requires_grad=requires_grad)


def random_state(kind: str, slots: int, batch: int = B, requires_grad=False, device="cpu"):
    """A random state in torch's layout: (slots, B, H), a pair of them for the LSTM."""
    parts = tuple(
        randn(slots, batch, H, requires_grad=requires_grad, device=device)
        for _ in range(2 if kind == "lstm" else 1)
    )
    return parts if kind == "lstm" else parts[0]


def as_tuple(state) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def assert_states_close(a, b, **tol) -> None:
    a, b = as_tuple(a), as_tuple(b)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, **(tol or TOL))


def weighted_loss(out: torch.Tensor, state) -> torch.Tensor:
    """A scalar that every output and final-state entry reaches with its own weight."""
    g = torch.Generator().manual_seed(123)  # the same weights in every call
    loss = 0
    for t in (out, *as_tuple(state)):
        w = torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device)
        loss = loss + (t * w).sum()
    return loss


def grads(loss: torch.Tensor, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    names = list(tensors)
    values = torch.autograd.grad(loss, [tensors[n] for n in names], allow_unused=True)
    return dict(zip(names, values))


def assert_grads_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] is not None and b[name] is not None, name
        torch.testing.assert_close(a[name], b[name], **TOL, msg=lambda m, n=name: f"{n}: {m}")


def slots(num_layers: int, bidirectional: bool) -> int:
    return num_layers * (2 if bidirectional else 1)


# -- against torch.nn ----------------------------------------------------------------------


def torch_module(kind: str, **kwargs) -> nn.RNNBase:
    if kind.startswith("rnn"):
        return nn.RNN(I, H, nonlinearity=kind[4:], **kwargs).double()
    return (nn.LSTM if kind == "lstm" else nn.GRU)(I, H, **kwargs).double()


@pytest.mark.parametrize("fused", [None, False], ids=["fused", "explicit"])
@pytest.mark.parametrize("batch_first", [True, False], ids=["bf", "tm"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("kind", KINDS)
def test_matches_torch_nn(kind, num_layers, bidirectional, batch_first, fused):
    config = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first)
    ref = torch_module(kind, **config)
    ours = make(kind, fused=fused, **config).load_torch_weights(ref)
    assert ours.single_call == (fused is None)

    x = randn(*((B, T, I) if batch_first else (T, B, I)), requires_grad=True)
    s0 = random_state(kind, slots(num_layers, bidirectional), requires_grad=True)
    out_ref, s_ref = ref(x, s0)
    out, s = ours(x, s0)
    assert out.shape == out_ref.shape
    torch.testing.assert_close(out, out_ref, **TOL)
    assert_states_close(s, s_ref)

    inputs = {"x": x, **{f"state{i}": t for i, t in enumerate(as_tuple(s0))}}
    g_ours = grads(weighted_loss(out, s), {**inputs, **ours.torch_parameter_names()})
    g_ref = grads(weighted_loss(out_ref, s_ref), {**inputs, **dict(ref.named_parameters())})
    assert_grads_close(g_ours, g_ref)


@pytest.mark.parametrize("kind", KINDS)
def test_to_torch_copies_weights_and_config(kind):
    ours = make(kind, num_layers=2, bidirectional=True, batch_first=False, dropout=0.25)
    ref = ours.to_torch()
    expected_cls = {"lstm": nn.LSTM, "gru": nn.GRU}.get(kind, nn.RNN)
    assert type(ref) is expected_cls
    assert (ref.num_layers, ref.bidirectional, ref.batch_first) == (2, True, False)
    assert ref.dropout == 0.25
    if expected_cls is nn.RNN:
        assert ref.nonlinearity == kind[4:]
    ours_params = ours.torch_parameter_names()
    assert set(ours_params) == {n for n, _ in ref.named_parameters()}
    for name, p in ref.named_parameters():
        assert torch.equal(p, ours_params[name])
        assert p.data_ptr() != ours_params[name].data_ptr()  # a copy, not shared storage
    ours.eval()
    ref.eval()
    x = randn(T, B, I)
    out, s = ours(x)
    out_ref, s_ref = ref(x)
    torch.testing.assert_close(out, out_ref, **TOL)
    assert_states_close(s, s_ref)


def test_torch_parameter_names():
    names = make("lstm", num_layers=2, bidirectional=True).torch_parameter_names()
    assert set(names) == {n for n, _ in nn.LSTM(I, H, 2, bidirectional=True).named_parameters()}
    assert set(make("gru", bias=False).torch_parameter_names()) == {"weight_ih_l0", "weight_hh_l0"}


def test_load_torch_weights_rejects_mismatch():
    with pytest.raises(ValueError, match="`module`"):
        make("lstm", num_layers=2).load_torch_weights(nn.LSTM(I, H, 1).double())
    with pytest.raises(ValueError, match=r"`module`.*weight_ih_l0.*\(12, 5\)"):
        make("lstm").load_torch_weights(nn.LSTM(I + 1, H).double())


def test_to_torch_rejects_non_fusable():
    with pytest.raises(ValueError, match="no torch.nn equivalent.*reset"):
        make("gru-before").to_torch()
    with pytest.raises(ValueError, match="no torch.nn equivalent"):
        make("lstm", bidirectional=True, merge="sum").to_torch()


# -- fused vs explicit ---------------------------------------------------------------------

CASES = {
    "lstm-2-layers": dict(kind="lstm", num_layers=2),
    "rnn-relu-2-layers-bi": dict(kind="rnn-relu", num_layers=2, bidirectional=True),
    "gru-2-layers-bi": dict(kind="gru", num_layers=2, bidirectional=True),
    "rnn-tanh-time-major": dict(kind="rnn-tanh", num_layers=2, batch_first=False),
    "lstm-bi-sum": dict(kind="lstm", num_layers=2, bidirectional=True, merge="sum"),
    "gru-bi-mean": dict(kind="gru", bidirectional=True, merge="mean"),
    "lstm-learned": dict(kind="lstm", num_layers=2, bidirectional=True, initial_state="learned"),
    "gru-learned": dict(kind="gru", num_layers=2, initial_state="learned"),
}


@pytest.mark.parametrize("inputs", ["full", "lengths", "packed"])
@pytest.mark.parametrize("case", list(CASES))
def test_fused_matches_explicit(case, inputs):
    config = dict(CASES[case])
    kind = config.pop("kind")
    fused, explicit = twins(kind, **config)
    concat = config.get("merge", "concat") == "concat"
    assert fused.fused and fused.not_fused_reason is None
    assert fused.single_call == concat
    assert not explicit.fused and not explicit.single_call
    assert "fused=False was requested" in explicit.not_fused_reason

    batch_first = config.get("batch_first", True)
    x = randn(*((B, T, I) if batch_first else (T, B, I)), requires_grad=True)
    lengths = torch.tensor(LENGTHS) if inputs != "full" else None

    def run(model):
        if inputs == "packed":
            packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
            out, s = model(packed)
            assert isinstance(out, nn.utils.rnn.PackedSequence)
            out, out_lengths = pad_packed_sequence(out, batch_first=batch_first)
            assert out_lengths.tolist() == LENGTHS
        else:
            out, s = model(x, lengths=lengths)
        params = {n: p for n, p in model.named_parameters()}
        return out, s, grads(weighted_loss(out, s), {"x": x, **params})

    out_f, s_f, g_f = run(fused)
    out_e, s_e, g_e = run(explicit)
    torch.testing.assert_close(out_f, out_e, **TOL)
    assert_states_close(s_f, s_e)
    assert_grads_close(g_f, g_e)
    if config.get("initial_state") == "learned":
        assert all(g.abs().sum() > 0 for n, g in g_f.items() if ".h0." in n)


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("kind", KINDS)
def test_reverse_single_layer_fused_matches_explicit(kind, lengths):
    cell = make_cell(kind)
    fused = Recurrent(cell, reverse=True, fused=torch_kernel(kind, None))
    explicit = Recurrent(cell, reverse=True, fused=False)  # the same cell, the same weights
    assert fused.fused and not explicit.fused
    stack = Stack([fused])
    assert stack.fused and not stack.single_call  # torch.nn has no reverse-only layer

    x = randn(B, T, I, requires_grad=True)
    s0 = random_state(kind, 1, requires_grad=True)
    results = []
    for layer in (fused, explicit):
        out, s = layer(x, s0, lengths=lengths)
        tensors = {"x": x, "s0": as_tuple(s0)[0], **dict(cell.named_parameters())}
        results.append((out, s, grads(weighted_loss(out, s), tensors)))
    (out_f, s_f, g_f), (out_e, s_e, g_e) = results
    torch.testing.assert_close(out_f, out_e, **TOL)
    assert_states_close(s_f, s_e)
    assert_grads_close(g_f, g_e)


@pytest.mark.parametrize("fused", [None, False], ids=["fused", "explicit"])
def test_reverse_is_forward_on_each_flipped_sequence(fused):
    cell = make_cell("gru")
    backward = Recurrent(cell, reverse=True, fused=torch_kernel("gru", fused))
    forward = Recurrent(cell, fused=torch_kernel("gru", fused))
    x = randn(B, T, I)
    out, h = backward(x, lengths=LENGTHS)
    for b, L in enumerate(LENGTHS):
        out_f, h_f = forward(x[b : b + 1, :L].flip(1))
        torch.testing.assert_close(out[b : b + 1, :L], out_f.flip(1), **TOL)
        torch.testing.assert_close(h[:, b : b + 1], h_f, **TOL)


def test_reverse_padded_flips_within_lengths():
    x = torch.arange(T * B).reshape(T, B)  # (T, B)
    lengths = torch.tensor(LENGTHS)
    y = rnnkit.reverse_padded(x, lengths)
    for b, L in enumerate(LENGTHS):
        assert torch.equal(y[:L, b], x[:L, b].flip(0))
        assert torch.equal(y[L:, b], x[L:, b])  # padding stays in place
    assert torch.equal(rnnkit.reverse_padded(y, lengths), x)
    assert torch.equal(rnnkit.reverse_padded(x, None), x.flip(0))


def test_gru_reset_before_is_not_fused():
    model = make("gru-before", num_layers=2)
    assert not model.fused and not model.single_call
    assert "reset" in model.not_fused_reason
    assert "reset" in model.layers[0].not_fused_reason
    with pytest.raises(ValueError, match="fused=True.*reset"):
        make("gru-before", fused=True)
    with pytest.raises(ValueError, match="fused=True.*reset"):
        Recurrent(GRUCell(I, H, reset="before"), fused=True)
    out, h = model(randn(B, T, I))  # the explicit path runs it
    assert out.shape == (B, T, H) and h.shape == (2, B, H)


def test_fused_true_accepted_when_possible():
    model = make("lstm", num_layers=2, bidirectional=True, fused=True)
    assert model.fused and model.single_call


@pytest.mark.parametrize("fused", [None, False], ids=["fused", "explicit"])
@pytest.mark.parametrize("merge", ["sum", "mean"])
def test_merge_modes_combine_the_concat_halves(merge, fused):
    concat = make("lstm", bidirectional=True, fused=fused)
    merged = make("lstm", bidirectional=True, merge=merge, fused=fused)
    merged.load_state_dict(concat.state_dict())
    assert merged.output_size == H and concat.output_size == 2 * H
    x = randn(B, T, I)
    out, state = merged(x, lengths=LENGTHS)
    out_cat, state_cat = concat(x, lengths=LENGTHS)
    total = out_cat[..., :H] + out_cat[..., H:]
    torch.testing.assert_close(out, total if merge == "sum" else total / 2, **TOL)
    assert_states_close(state, state_cat)  # merging touches outputs only


@pytest.mark.parametrize("fused", [None, False], ids=["fused", "explicit"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("kind", KINDS + ["gru-before"])
def test_layer_gradcheck_with_lengths(kind, reverse, fused):
    cell = make_cell(kind, input_size=2)
    layer = Recurrent(cell, reverse=reverse, fused=torch_kernel(kind, fused))
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    x = randn(2, 3, 2, requires_grad=True)  # (B, T, I)
    s0 = random_state(kind, 1, batch=2, requires_grad=True)
    n = len(as_tuple(s0))

    def run(x, *rest):
        state = rest[0] if n == 1 else tuple(rest[:n])
        out, final = torch.func.functional_call(
            layer, dict(zip(names, rest[n:])), (x, state), {"lengths": [3, 2]}
        )
        return (out, *as_tuple(final))

    assert torch.autograd.gradcheck(run, (x, *as_tuple(s0), *params))


# -- padding never changes a result --------------------------------------------------------


def build(kind: str, direction: str, fused: bool | None) -> nn.Module:
    if direction == "reverse":
        return Recurrent(make_cell(kind), reverse=True, fused=torch_kernel(kind, fused))
    return make(kind, num_layers=2, bidirectional=direction == "bidirectional", fused=fused)


@pytest.mark.parametrize("fused", [None, False], ids=["fused", "explicit"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("kind", ["rnn-tanh", "lstm", "gru", "gru-before"])
def test_padding_never_changes_a_result(kind, direction, fused):
    model = build(kind, direction, fused)
    x = randn(B, T, I, requires_grad=True)
    out, state = model(x, lengths=LENGTHS)

    for b, L in enumerate(LENGTHS):
        assert torch.equal(out[b, L:], torch.zeros_like(out[b, L:]))  # exactly zero
        out_alone, state_alone = model(x[b : b + 1, :L])  # unpadded, on its own
        torch.testing.assert_close(out[b : b + 1, :L], out_alone, **TOL)
        for s, s_alone in zip(as_tuple(state), as_tuple(state_alone)):
            torch.testing.assert_close(s[:, b : b + 1], s_alone, **TOL)

    # Garbage in the padded positions changes nothing, gradients included.
    valid = (torch.arange(T)[None, :] < torch.tensor(LENGTHS)[:, None])[..., None]  # (B, T, 1)
    noisy = torch.where(valid, x.detach(), 1e6 * randn(B, T, I)).requires_grad_()
    out_noisy, state_noisy = model(noisy, lengths=LENGTHS)
    torch.testing.assert_close(out_noisy, out, **TOL)
    assert_states_close(state_noisy, state)
    (g_clean,) = torch.autograd.grad(weighted_loss(out, state), x)
    (g_noisy,) = torch.autograd.grad(weighted_loss(out_noisy, state_noisy), noisy)
    torch.testing.assert_close(g_noisy, g_clean, **TOL)
    assert not g_noisy.masked_select(~valid).any()  # padded inputs get no gradient
    assert g_noisy.abs().sum() > 0


def test_full_lengths_equal_no_lengths():
    model = make("lstm", num_layers=2, bidirectional=True)
    x = randn(B, T, I)
    out, state = model(x)
    out_l, state_l = model(x, lengths=[T] * B)
    torch.testing.assert_close(out_l, out, **TOL)
    assert_states_close(state_l, state)


# -- learned initial state -----------------------------------------------------------------


@pytest.mark.parametrize("fused", [None, False], ids=["fused", "explicit"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_learned_initial_state(kind, fused):
    model = make(kind, num_layers=2, bidirectional=True, initial_state="learned", fused=fused)
    h0 = {n: p for n, p in model.named_parameters() if ".h0." in n}
    per_layer = 2 if kind == "lstm" else 1  # (h, c) or h
    assert len(h0) == 2 * 2 * per_layer  # a parameter per layer, direction and state tensor
    assert all(p.shape == (1, H) and not p.any() for p in h0.values())  # zeros at first
    with torch.no_grad():
        for p in h0.values():
            p.normal_()

    # The learned state is what runs when no state is passed ...
    recurrents = [r for layer in model.layers for r in layer.children()]
    learned = tuple(
        torch.cat([r.h0[k].detach().expand(B, H)[None] for r in recurrents])  # (4, B, H)
        for k in range(per_layer)
    )
    learned = learned if kind == "lstm" else learned[0]
    zeros_model = make(kind, num_layers=2, bidirectional=True, fused=fused)
    zeros_model.load_state_dict(model.state_dict(), strict=False)
    x = randn(B, T, I)
    out, state = model(x)
    out_ref, state_ref = zeros_model(x, learned)
    torch.testing.assert_close(out, out_ref, **TOL)
    assert_states_close(state, state_ref)

    # ... it receives gradients ...
    g = grads(weighted_loss(out, state), h0)
    assert all(v is not None and v.abs().sum() > 0 for v in g.values())

    # ... and a state passed explicitly overrides it.
    s0 = random_state(kind, 4)
    out, state = model(x, s0)
    out_ref, state_ref = zeros_model(x, s0)
    torch.testing.assert_close(out, out_ref, **TOL)
    assert_states_close(state, state_ref)
    g = grads(weighted_loss(out, state), h0)
    assert all(v is None or not v.any() for v in g.values())


# -- dropout between layers ----------------------------------------------------------------


@pytest.mark.parametrize("fused", [None, False], ids=["fused", "explicit"])
def test_dropout_between_layers(fused):
    model = make("lstm", num_layers=2, dropout=0.5, fused=fused)
    no_dropout = make("lstm", num_layers=2, fused=fused)
    no_dropout.load_state_dict(model.state_dict())
    x = randn(B, T, I)

    model.eval()
    torch.testing.assert_close(model(x)[0], no_dropout(x)[0], **TOL)
    model.train()
    assert (model(x)[0] - no_dropout(x)[0]).abs().max() > 1e-3

    # One layer: nothing lies between layers, so training mode changes nothing.
    single = make("lstm", num_layers=1, dropout=0.5, fused=fused).train()
    single_eval = make("lstm", num_layers=1, fused=fused).eval()
    single_eval.load_state_dict(single.state_dict())
    torch.testing.assert_close(single(x)[0], single_eval(x)[0], **TOL)


# -- internals -----------------------------------------------------------------------------


@pytest.mark.parametrize("batch_first", [True, False], ids=["bf", "tm"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_stack_internals(kind, batch_first):
    model = make(kind, num_layers=2, batch_first=batch_first)
    x = randn(*((B, T, I) if batch_first else (T, B, I)))
    out, state, internals = model(x, return_internals=True)
    assert isinstance(internals, list) and len(internals) == 2
    keys = {"i", "f", "g", "o", "c", "h"} if kind == "lstm" else {"r", "z", "n", "h"}
    shape = (B, T, H) if batch_first else (T, B, H)
    for layer_internals in internals:
        assert set(layer_internals) == keys
        assert all(v.shape == shape for v in layer_internals.values())
    torch.testing.assert_close(internals[-1]["h"], out, **TOL)
    out_plain, state_plain = model(x)  # the fused path, without internals
    torch.testing.assert_close(out, out_plain, **TOL)
    assert_states_close(state, state_plain)


def test_bidirectional_internals_with_lengths():
    model = make("lstm", num_layers=2, bidirectional=True)
    x = randn(B, T, I)
    out, _, internals = model(x, lengths=LENGTHS, return_internals=True)
    assert len(internals) == 2
    for layer_internals in internals:
        assert set(layer_internals) == {"forward", "backward"}
        for direction in layer_internals.values():
            assert set(direction) == {"i", "f", "g", "o", "c", "h"}
            assert all(v.shape == (B, T, H) for v in direction.values())
            for b, L in enumerate(LENGTHS):  # padded steps are zero, like the output
                assert all(not v[b, L:].any() for v in direction.values())
    top = internals[-1]
    torch.testing.assert_close(
        torch.cat([top["forward"]["h"], top["backward"]["h"]], -1), out, **TOL
    )


# -- errors name the argument and the value ------------------------------------------------


@pytest.mark.parametrize("fused", [None, False], ids=["fused", "explicit"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_wrong_feature_size(bidirectional, fused):
    model = make("lstm", num_layers=2, bidirectional=bidirectional, fused=fused)
    with pytest.raises(ValueError, match=rf"`input`.*feature size {I + 1}.*input_size={I}"):
        model(randn(B, T, I + 1))
    layer = Recurrent(make_cell("gru"), fused=fused)
    with pytest.raises(ValueError, match=rf"`input`.*feature size {I + 1}.*input_size={I}"):
        layer(randn(B, T, I + 1))


def test_input_must_be_a_sequence():
    with pytest.raises(ValueError, match=rf"`input`.*\({B}, {I}\)"):
        make("gru")(randn(B, I))


@pytest.mark.parametrize(
    "lengths, pattern",
    [
        ([5, 6, 2, 7], r"`lengths`.*\[1, 5\].*\[6, 7\]"),
        ([0, 3, 2, 1], r"`lengths`.*\[1, 5\].*\[0\]"),
        ([-1, 3, 2, 1], r"`lengths`.*\[-1\]"),
        ([5, 3], r"`lengths`.*4 lengths.*shape \(2,\)"),
        ([[5, 3, 2, 1]], r"`lengths`.*shape \(1, 4\)"),
        (torch.tensor([5.0, 3.0, 2.0, 1.0]), r"`lengths`.*torch.float32"),
    ],
    ids=["too-long", "zero", "negative", "batch-size", "2-d", "float"],
)
@pytest.mark.parametrize("fused", [None, False], ids=["fused", "explicit"])
def test_bad_lengths(lengths, pattern, fused):
    with pytest.raises(ValueError, match=pattern):
        make("lstm", bidirectional=True, fused=fused)(randn(B, T, I), lengths=lengths)


def test_lengths_and_packed_sequence_together():
    packed = pack_padded_sequence(randn(B, T, I), LENGTHS, batch_first=True, enforce_sorted=False)
    with pytest.raises(ValueError, match="`lengths` or a PackedSequence"):
        make("gru")(packed, lengths=LENGTHS)


def test_unknown_merge_mode():
    with pytest.raises(ValueError, match=r"`merge`.*'max'"):
        make("lstm", bidirectional=True, merge="max")
    with pytest.raises(ValueError, match=r"`merge`.*'max'"):
        Bidirectional(
            Recurrent(make_cell("gru")), Recurrent(make_cell("gru"), reverse=True), merge="max"
        )


def shape(*dims) -> str:
    return re.escape(str(dims))


@pytest.mark.parametrize(
    "spec, bad_state, pattern",
    [
        (
            "lstm-2",
            (randn(2, B, H + 1), randn(2, B, H)),
            f"{shape(2, B, H + 1)}, expected {shape(2, B, H)}",
        ),
        ("lstm-2", (randn(2, B + 1, H), randn(2, B + 1, H)), shape(2, B + 1, H)),
        ("lstm-2", randn(2, B, H), "must be a tuple of 2 tensors, got Tensor"),
        (
            "lstm-2",
            (randn(1, B, H), randn(1, B, H)),
            f"{shape(1, B, H)}, expected {shape(2, B, H)}",
        ),
        ("gru-bi", randn(1, B, H), f"{shape(1, B, H)}, expected {shape(2, B, H)}"),
        ("gru-bi", randn(2, B, H + 1), f"{shape(2, B, H + 1)}, expected {shape(2, B, H)}"),
        ("gru-bi-2", randn(2, B, H), f"{shape(2, B, H)}, expected {shape(4, B, H)}"),
        ("rec-lstm", randn(1, B, H), "must be a tuple of 2 tensors"),
        ("rec-gru", randn(B, H), f"{shape(B, H)}, expected {shape(1, B, H)}"),
    ],
    ids=[
        "wrong-hidden",
        "wrong-batch",
        "tensor-for-pair",
        "too-few-layers",
        "bi-one-direction",
        "bi-wrong-hidden",
        "bi-too-few-layers",
        "layer-tensor-for-pair",
        "layer-no-slot-dim",
    ],
)
@pytest.mark.parametrize("fused", [None, False], ids=["fused", "explicit"])
def test_bad_state(spec, bad_state, pattern, fused):
    if spec.startswith("rec-"):
        layer = Recurrent(make_cell(spec[4:]), fused=fused)
    else:
        kind, *rest = spec.split("-")
        layer = make(
            kind, num_layers=2 if rest[-1] == "2" else 1, bidirectional="bi" in rest, fused=fused
        )
    with pytest.raises(ValueError, match="argument `state`.*" + pattern):
        layer(randn(B, T, I), bad_state)


def test_bidirectional_reverse_flags():
    with pytest.raises(ValueError, match="`forward_layer`.*reverse=False"):
        Bidirectional(
            Recurrent(make_cell("gru"), reverse=True), Recurrent(make_cell("gru"), reverse=True)
        )
    with pytest.raises(ValueError, match="`backward_layer`.*reverse=True"):
        Bidirectional(Recurrent(make_cell("gru")), Recurrent(make_cell("gru")))


def test_stack_rejects_mismatched_sizes():
    below, above = Recurrent(make_cell("lstm")), Recurrent(make_cell("lstm", input_size=H + 2))
    with pytest.raises(ValueError, match=rf"input_size={H + 2}.*outputs {H}"):
        Stack([below, above])
    with pytest.raises(ValueError, match="`layers`"):
        Stack([])


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match=r"`num_layers`.*0"):
        make("lstm", num_layers=0)
    with pytest.raises(ValueError, match=r"`dropout`.*1\.5"):
        make("lstm", num_layers=2, dropout=1.5)
    with pytest.raises(ValueError, match=r"`initial_state`.*'random'"):
        make("gru", initial_state="random")
    with pytest.raises(ValueError, match=r"`fused`.*'yes'"):
        Recurrent(make_cell("gru"), fused="yes")


# -- a hand-built stack equals the constructor ---------------------------------------------


def test_hand_built_stack_equals_constructor():
    model = make("gru", num_layers=2, bidirectional=True)
    layers = [
        Bidirectional(Recurrent(make_cell("gru", n)), Recurrent(make_cell("gru", n), reverse=True))
        for n in (I, 2 * H)
    ]
    stack = Stack(layers)
    stack.load_torch_weights(model.to_torch())
    assert stack.single_call
    x = randn(B, T, I)
    out, h = stack(x, lengths=LENGTHS)
    out_ref, h_ref = model(x, lengths=LENGTHS)
    torch.testing.assert_close(out, out_ref, **TOL)
    torch.testing.assert_close(h, h_ref, **TOL)


# -- GPU -----------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", KINDS)
def test_fused_matches_explicit_on_gpu(kind):
    fused, explicit = twins(kind, num_layers=2, bidirectional=True)
    fused, explicit = fused.cuda(), explicit.cuda()
    x = randn(B, T, I, device="cuda", requires_grad=True)
    s0 = random_state(kind, 4, device="cuda")
    results = []
    for model in (fused, explicit):
        out, s = model(x, s0, lengths=LENGTHS)
        assert out.is_cuda
        g = grads(weighted_loss(out, s), {"x": x, **dict(model.named_parameters())})
        results.append((out, s, g))
    (out_f, s_f, g_f), (out_e, s_e, g_e) = results
    tol = dict(rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(out_f, out_e, **tol)
    assert_states_close(s_f, s_e, **tol)
    for name in g_f:
        torch.testing.assert_close(g_f[name], g_e[name], **tol)


# -- detach_state --------------------------------------------------------------------------


def test_detach_state():
    h = randn(1, B, H, requires_grad=True) * 2
    c = randn(1, B, H, requires_grad=True) * 2
    for state in (h, (h, c)):
        detached = rnnkit.detach_state(state)
        assert type(detached) is type(state)
        for d, s in zip(as_tuple(detached), as_tuple(state)):
            assert not d.requires_grad and d.grad_fn is None
            assert torch.equal(d, s) and d.data_ptr() == s.data_ptr()  # same values, no copy
        assert all(s.requires_grad for s in as_tuple(state))  # the original is untouched
    assert rnnkit.detach_state(None) is None


def test_to_torch_works_for_a_stack_forced_onto_the_explicit_path():
    model = rnnkit.LSTM(3, 4, 2, fused=False).double()
    assert not model.single_call and model.torch_equivalent_reason() is None
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(model(x)[0], model.to_torch()(x)[0])
    with pytest.raises(ValueError, match="merges directions by 'sum'"):
        rnnkit.GRU(3, 4, bidirectional=True, merge="sum").to_torch()


def test_step_matches_forward_and_checks_the_state():
    torch.manual_seed(0)
    model = rnnkit.GRU(3, 4, 2).double().eval()
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    out, final = model(x)
    state, steps = None, []
    for t in range(6):
        y, state = model.step(x[:, t], state)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), out)
    torch.testing.assert_close(state, final)
    with pytest.raises(ValueError, match=r"argument `state` has shape \(2, 3, 4\)"):
        model.step(x[:, 0], torch.zeros(2, 3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="forward layers"):
        rnnkit.GRU(3, 4, bidirectional=True).step(x[:, 0].float())


def test_backend_says_what_runs_where():
    """On the CPU the GRU and RNN run rnnkit's sequence kernel (faster than torch's
    unfused CPU loop); the LSTM runs oneDNN; on CUDA all three run cuDNN."""
    from rnnkit.backends import BACKENDS

    torch_k, seq_k, loop = BACKENDS
    assert rnnkit.LSTM(3, 4, 2).backend("cpu") == torch_k
    assert rnnkit.GRU(3, 4, 2).backend("cpu") == seq_k
    assert rnnkit.RNN(3, 4, bidirectional=True).backend("cpu") == seq_k
    for model in (rnnkit.LSTM(3, 4), rnnkit.GRU(3, 4), rnnkit.RNN(3, 4)):
        assert model.backend("cuda") == torch_k
    assert rnnkit.GRU(3, 4, fused=True).backend("cpu") == torch_k
    assert rnnkit.GRU(3, 4, reset="before").backend("cuda") == seq_k
    assert rnnkit.LSTM(3, 4, fused=False).backend("cpu") == seq_k
    assert Recurrent(rnnkit.ConvGRUCell(3, 4)).backend("cpu") == loop
    # and it is what actually runs: the sequence kernel is one autograd node
    x = torch.randn(2, 5, 3, requires_grad=True)
    out, _ = rnnkit.GRU(3, 4)(x)
    assert any("GRUSequence" in type(f).__name__ for f in _walk(out.grad_fn))
    out, _ = rnnkit.GRU(3, 4, fused=True)(x)
    assert not any("Sequence" in type(f).__name__ for f in _walk(out.grad_fn))


def _walk(fn, seen=None):
    """Every node of an autograd graph below `fn`."""
    seen = set() if seen is None else seen
    stack = [fn]
    while stack:
        f = stack.pop()
        if f is None or f in seen:
            continue
        seen.add(f)
        yield f
        stack.extend(n for n, _ in f.next_functions)
