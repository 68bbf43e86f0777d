"""The NumPy reference (hand-written BPTT) against finite differences, torch.nn and rnnkit.

Every check uses the same random scalar loss

    L = sum(w_hs * hs) + sum(w_h * h_T) [+ sum(w_c * c_T) for the LSTM]

so the reference's backward gets dhs = w_hs, dh_last = w_h (and dc_last = w_c), and the
torch side gets the same gradients from autograd.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from rnnkit import GRUCell, LSTMCell, RNNCell
from rnnkit import reference as ref

T, B, I, H = 4, 2, 3, 5
PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


@dataclass(frozen=True)
class Case:
    kind: str  # "rnn", "lstm" or "gru"
    option: str | None = None  # the RNN's nonlinearity or the GRU's reset form

    @property
    def gates(self) -> int:
        return {"rnn": 1, "lstm": 4, "gru": 3}[self.kind]

    @property
    def states(self) -> tuple[str, ...]:
        return ("h0", "c0") if self.kind == "lstm" else ("h0",)

    def __str__(self) -> str:
        return self.kind if self.option is None else f"{self.kind}-{self.option}"


CASES = [
    Case("rnn", "tanh"),
    Case("rnn", "relu"),
    Case("lstm"),
    Case("gru", "after"),
    Case("gru", "before"),
]
TORCH_NN_CASES = [c for c in CASES if c != Case("gru", "before")]  # torch.nn.GRU resets after


def make_problem(case: Case, seed: int = 0, bias: bool = True):
    """Random inputs, states and parameters (float64 arrays) and the loss weights."""
    rng = np.random.default_rng(seed)
    G = case.gates
    arrays = {"x": rng.normal(size=(T, B, I))}
    for state in case.states:
        arrays[state] = rng.normal(size=(B, H))
    arrays["weight_ih"] = rng.normal(size=(G * H, I)) / np.sqrt(I)
    arrays["weight_hh"] = rng.normal(size=(G * H, H)) / np.sqrt(H)
    arrays["bias_ih"] = rng.normal(size=G * H) * 0.5 if bias else None
    arrays["bias_hh"] = rng.normal(size=G * H) * 0.5 if bias else None
    loss_weights = {"hs": rng.normal(size=(T, B, H)), "h_last": rng.normal(size=(B, H))}
    if case.kind == "lstm":
        loss_weights["c_last"] = rng.normal(size=(B, H))
    return arrays, loss_weights


def loss_of(outputs: dict, loss_weights: dict):
    return sum((loss_weights[k] * outputs[k]).sum() for k in loss_weights)


# -- the reference side ---------------------------------------------------------------


def reference_forward(case: Case, a: dict):
    params = {k: a[k] for k in PARAMS}
    if case.kind == "rnn":
        hs, cache = ref.rnn_forward(a["x"], a["h0"], params, nonlinearity=case.option)
        return {"hs": hs, "h_last": hs[-1]}, cache
    if case.kind == "lstm":
        hs, cs, cache = ref.lstm_forward(a["x"], a["h0"], a["c0"], params)
        return {"hs": hs, "h_last": hs[-1], "c_last": cs[-1]}, cache
    hs, cache = ref.gru_forward(a["x"], a["h0"], params, reset=case.option)
    return {"hs": hs, "h_last": hs[-1]}, cache


def reference_outputs_and_grads(case: Case, a: dict, lw: dict):
    outputs, cache = reference_forward(case, a)
    if case.kind == "rnn":
        grads = ref.rnn_backward(lw["hs"], cache, dh_last=lw["h_last"])
    elif case.kind == "lstm":
        grads = ref.lstm_backward(lw["hs"], cache, dh_last=lw["h_last"], dc_last=lw["c_last"])
    else:
        grads = ref.gru_backward(lw["hs"], cache, dh_last=lw["h_last"])
    return outputs, grads


# -- the torch side -------------------------------------------------------------------


def run_torch_nn(case: Case, a: dict):
    """torch.nn.RNN / LSTM / GRU with the reference's weights; returns outputs and leaves."""
    kwargs = {"nonlinearity": case.option} if case.kind == "rnn" else {}
    module_class = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[case.kind]
    module = module_class(I, H, dtype=torch.float64, **kwargs)
    leaves = {name: getattr(module, f"{name}_l0") for name in PARAMS}
    with torch.no_grad():
        for name, param in leaves.items():
            param.copy_(torch.from_numpy(a[name]))
    leaves.update({k: torch.tensor(a[k], requires_grad=True) for k in ("x", *case.states)})
    if case.kind == "lstm":
        hs, (h_n, c_n) = module(leaves["x"], (leaves["h0"][None], leaves["c0"][None]))
        return {"hs": hs, "h_last": h_n[0], "c_last": c_n[0]}, leaves
    hs, h_n = module(leaves["x"], leaves["h0"][None])
    return {"hs": hs, "h_last": h_n[0]}, leaves


def run_rnnkit_cell(case: Case, a: dict):
    """The rnnkit cell in float64, looped over time; returns outputs and leaves."""
    bias = a["bias_ih"] is not None
    if case.kind == "rnn":
        cell = RNNCell(I, H, nonlinearity=case.option, bias=bias)
    elif case.kind == "lstm":
        cell = LSTMCell(I, H, bias=bias)
    else:
        cell = GRUCell(I, H, reset=case.option, bias=bias)
    cell = cell.double()
    leaves = {name: getattr(cell, name) for name in PARAMS if a[name] is not None}
    with torch.no_grad():
        for name, param in leaves.items():
            param.copy_(torch.from_numpy(a[name]))
    leaves.update({k: torch.tensor(a[k], requires_grad=True) for k in ("x", *case.states)})
    state = tuple(leaves[s] for s in case.states) if case.kind == "lstm" else leaves["h0"]
    hs = []
    for t in range(T):
        state = cell(leaves["x"][t], state)
        hs.append(cell.output(state))
    outputs = {"hs": torch.stack(hs), "h_last": hs[-1]}
    if case.kind == "lstm":
        outputs["c_last"] = state[1]
    return outputs, leaves


def torch_outputs_and_grads(run, case: Case, a: dict, lw: dict):
    outputs, leaves = run(case, a)
    torch_lw = {k: torch.from_numpy(v) for k, v in lw.items()}
    loss_of(outputs, torch_lw).backward()
    outputs = {k: v.detach().numpy() for k, v in outputs.items()}
    grads = {k: leaf.grad.numpy() for k, leaf in leaves.items()}
    return outputs, grads


def assert_same(ref_outputs, ref_grads, torch_outputs, torch_grads):
    assert ref_outputs.keys() == torch_outputs.keys()
    for k in ref_outputs:
        np.testing.assert_allclose(
            ref_outputs[k], torch_outputs[k], rtol=1e-8, atol=1e-10, err_msg=f"output {k}"
        )
    expected_keys = {k for k, g in ref_grads.items() if g is not None}
    assert expected_keys == torch_grads.keys()
    for k in expected_keys:
        np.testing.assert_allclose(
            ref_grads[k], torch_grads[k], rtol=1e-8, atol=1e-10, err_msg=f"gradient of {k}"
        )


# -- 1. finite differences ------------------------------------------------------------


def numerical_gradient(case: Case, a: dict, lw: dict, name: str, eps: float = 1e-6):
    """Central differences of the loss with respect to every entry of a[name]."""
    grad = np.zeros_like(a[name])
    for index in np.ndindex(a[name].shape):
        losses = []
        for step in (eps, -eps):
            perturbed = dict(a)
            perturbed[name] = a[name].copy()
            perturbed[name][index] += step
            losses.append(loss_of(reference_forward(case, perturbed)[0], lw))
        grad[index] = (losses[0] - losses[1]) / (2 * eps)
    return grad


@pytest.mark.parametrize("case", CASES, ids=str)
def test_backward_matches_finite_differences(case):
    a, lw = make_problem(case, seed=1)
    _, grads = reference_outputs_and_grads(case, a, lw)
    names = ("x", *case.states, *PARAMS)
    assert set(grads) == set(names)
    for name in names:
        numerical = numerical_gradient(case, a, lw, name)
        assert np.abs(numerical).max() > 1e-3, f"{name}: the loss barely depends on it"
        error = np.linalg.norm(grads[name] - numerical) / (
            np.linalg.norm(grads[name]) + np.linalg.norm(numerical)
        )
        assert error < 1e-6, f"{case} d/d{name}: relative error {error:.2e}"


def test_relu_rnn_passes_no_gradient_through_units_that_are_off():
    """With the loss on step 1 only, a unit off (h = 0) for the whole batch gets nothing."""
    case = Case("rnn", "relu")
    a, lw = make_problem(case, seed=2)
    a["bias_ih"][:2] = -10.0  # switch units 0 and 1 off
    outputs, cache = reference_forward(case, a)
    dead = (outputs["hs"][0] == 0.0).all(axis=0)  # (H,): off at step 1 for every sequence
    assert dead.tolist() == [True, True, False, False, False]
    dhs = np.zeros((T, B, H))
    dhs[0] = lw["hs"][0]
    grads = ref.rnn_backward(dhs, cache)
    for name in PARAMS:
        np.testing.assert_array_equal(grads[name][dead], 0.0)
        assert np.abs(grads[name][~dead]).max() > 0.0


# -- 2. against torch -----------------------------------------------------------------


@pytest.mark.parametrize("case", TORCH_NN_CASES, ids=str)
def test_matches_torch_nn(case):
    torch.manual_seed(0)
    a, lw = make_problem(case, seed=3)
    assert_same(
        *reference_outputs_and_grads(case, a, lw),
        *torch_outputs_and_grads(run_torch_nn, case, a, lw),
    )


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_rnnkit_cells(case, bias):
    torch.manual_seed(0)
    a, lw = make_problem(case, seed=4, bias=bias)
    assert_same(
        *reference_outputs_and_grads(case, a, lw),
        *torch_outputs_and_grads(run_rnnkit_cell, case, a, lw),
    )


def test_gru_reset_forms_differ():
    """The two GRU forms share parameters but are different functions."""
    a, _ = make_problem(Case("gru", "after"), seed=5)
    after = reference_forward(Case("gru", "after"), a)[0]["hs"]
    before = reference_forward(Case("gru", "before"), a)[0]["hs"]
    assert np.abs(after - before).max() > 1e-3


# -- 3. input validation --------------------------------------------------------------


def test_bad_shapes_raise_value_errors_naming_the_argument():
    a, _ = make_problem(Case("lstm"))
    p = {k: a[k] for k in PARAMS}
    x, h0, c0 = a["x"], a["h0"], a["c0"]
    with pytest.raises(ValueError, match=r"`x`.*\(2, 3\)"):
        ref.lstm_forward(x[0], h0, c0, p)
    with pytest.raises(ValueError, match=r"`h0`.*\(2, 4\)"):
        ref.lstm_forward(x, h0[:, :4], c0, p)
    with pytest.raises(ValueError, match=r"`c0`.*\(3, 5\)"):
        ref.lstm_forward(x, h0, np.zeros((3, 5)), p)
    with pytest.raises(ValueError, match=r"`params\['weight_ih'\]`.*\(20, 2\)"):
        ref.lstm_forward(x[:, :, :2], h0, c0, p)
    with pytest.raises(ValueError, match=r"`params\['bias_hh'\]`.*\(19,\)"):
        ref.lstm_forward(x, h0, c0, {**p, "bias_hh": p["bias_hh"][:19]})
    with pytest.raises(ValueError, match=r"`params\['weight_hh'\]`.*\(20, 5\).*G=3"):
        ref.gru_forward(x, h0, p)  # LSTM weights are not GRU weights
    with pytest.raises(ValueError, match=r"`params`.*weight_hh"):
        ref.rnn_forward(x, h0, {"weight_ih": p["weight_ih"]})
    _, _, cache = ref.lstm_forward(x, h0, c0, p)
    with pytest.raises(ValueError, match=r"`dhs`.*\(3, 2, 5\)"):
        ref.lstm_backward(np.zeros((3, 2, 5)), cache)
    with pytest.raises(ValueError, match=r"`dc_last`.*\(2, 6\)"):
        ref.lstm_backward(None, cache, dc_last=np.zeros((2, 6)))


def test_bad_options_raise_value_errors():
    a, _ = make_problem(Case("gru", "after"))
    p = {k: a[k] for k in PARAMS}
    with pytest.raises(ValueError, match="`reset`"):
        ref.gru_forward(a["x"], a["h0"], p, reset="middle")
    with pytest.raises(ValueError, match="`nonlinearity`"):
        ref.rnn_forward(a["x"], a["h0"], p, nonlinearity="sigmoid")
