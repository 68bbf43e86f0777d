r"""A NumPy reference for the vanilla RNN, the LSTM and the GRU, with hand-written BPTT.

This module is the lecture's derivation turned into code. It is deliberately slow and
plain: float64 throughout, vectorised over the batch, an explicit Python loop over
time, and every derivative written out by hand (no autograd). It imports NumPy only,
so it is an independent check on the torch cells in :mod:`rnnkit.cells` and on
torch.nn itself.

Conventions (the same as :mod:`rnnkit.cells`, which are the same as torch.nn):

* ``x`` is (T, B, I): time first, then batch, then features. States are (B, H).
* ``params`` is a dict with ``weight_ih`` (G*H, I), ``weight_hh`` (G*H, H),
  ``bias_ih`` (G*H,) and ``bias_hh`` (G*H,), the G gate blocks stacked along the
  first axis in torch's order: G=1 for the RNN, (i, f, g, o) for the LSTM,
  (r, z, n) for the GRU. A bias may be ``None`` (a cell built with ``bias=False``);
  its gradient is then ``None`` too.
* Row vectors: with a batch ``x_t`` of shape (B, I), ``W x_t`` is written
  ``x_t @ W.T``.

Every ``*_forward`` returns the hidden states of all steps and a cache; the matching
``*_backward`` takes ``dhs``, the gradient of the loss with respect to each step's
output h_t, (T, B, H) — only the *direct* part: what reaches h_t through h_{t+1} is
what backpropagation through time adds — and optionally a gradient on the final state
(``dh_last``, for a loss on h_T such as a classifier on the last step; ``dc_last``
for the LSTM's memory). It returns a dict with the gradients of the four parameters
and of ``x``, ``h0`` (and ``c0``).

Each backward loop has the same three beats, in the lecture's notation:

1. ``dh = dhs[t] + dh_next`` — the total gradient on h_t: the loss at step t plus
   what flows back from step t+1;
2. the gate derivatives, from the chain rule through the elementwise step;
3. ``dh_next = da @ W_hh`` — the gradient on h_{t-1}, i.e. :math:`W_{hh}^\top
   \delta` for column vectors, handed to step t-1.

The weight gradients are sums over time (the weights are shared across steps) and
over the batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "sigmoid",
    "rnn_forward",
    "rnn_backward",
    "lstm_forward",
    "lstm_backward",
    "gru_forward",
    "gru_backward",
    "RNNCache",
    "LSTMCache",
    "GRUCache",
]

NONLINEARITIES = ("tanh", "relu")
GRU_RESET_FORMS = ("before", "after")
PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")

Params = Mapping[str, np.ndarray | None]


# -- helpers --------------------------------------------------------------------------


def sigmoid(a: np.ndarray) -> np.ndarray:
    """The logistic function 1 / (1 + e^-a), written as (1 + tanh(a/2)) / 2.

    The tanh form equals the textbook one and never overflows for large |a|.
    """
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def _as_float64(name: str, value, ndim: int) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != ndim:
        raise ValueError(f"Argument `{name}` must have {ndim} dimensions, got shape {array.shape}.")
    return array


def _check_shape(name: str, array: np.ndarray, expected: tuple[int, ...], meaning: str) -> None:
    if array.shape != expected:
        raise ValueError(
            f"Argument `{name}` has shape {array.shape}, expected {meaning} = {expected}."
        )


def _check_inputs(
    x, params: Params, num_gates: int
) -> tuple[np.ndarray, dict[str, np.ndarray | None], int]:
    """Validate x (T, B, I) and the parameters; return them as float64 and H."""
    x = _as_float64("x", x, 3)
    if not isinstance(params, Mapping):
        raise ValueError(f"Argument `params` must be a dict, got {type(params).__name__}.")
    missing = [k for k in ("weight_ih", "weight_hh") if k not in params]
    if missing:
        raise ValueError(f"Argument `params` lacks {missing}; it needs keys {PARAM_NAMES}.")
    W_hh = _as_float64("params['weight_hh']", params["weight_hh"], 2)
    G = num_gates
    if W_hh.shape[0] % G or W_hh.shape[1] * G != W_hh.shape[0]:
        raise ValueError(
            f"Argument `params['weight_hh']` has shape {W_hh.shape}, "
            f"expected (G*H, H) with G={G} gate blocks."
        )
    H = W_hh.shape[1]
    T, B, I = x.shape
    W_ih = _as_float64("params['weight_ih']", params["weight_ih"], 2)
    _check_shape("params['weight_ih']", W_ih, (G * H, I), "(G*H, I)")
    checked: dict[str, np.ndarray | None] = {"weight_ih": W_ih, "weight_hh": W_hh}
    for key in ("bias_ih", "bias_hh"):
        bias = params.get(key)
        if bias is not None:
            bias = _as_float64(f"params['{key}']", bias, 1)
            _check_shape(f"params['{key}']", bias, (G * H,), "(G*H,)")
        checked[key] = bias
    if T == 0:
        raise ValueError(f"Argument `x` has shape {x.shape}: the sequence needs T >= 1 steps.")
    return x, checked, H


def _check_state(name: str, value, B: int, H: int) -> np.ndarray:
    state = _as_float64(name, value, 2)
    _check_shape(name, state, (B, H), "(B, H)")
    return state


def _check_grad(name: str, value, shape: tuple[int, ...], meaning: str) -> np.ndarray:
    """A gradient argument: zeros if None, else float64 of exactly `shape`."""
    if value is None:
        return np.zeros(shape)
    grad = _as_float64(name, value, len(shape))
    _check_shape(name, grad, shape, meaning)
    return grad


def _linear(x: np.ndarray, W: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """W x + b for a batch of row vectors x (B, n): x @ W.T + b."""
    out = x @ W.T
    return out if b is None else out + b


def _zero_grads(params: Params) -> dict[str, np.ndarray | None]:
    return {k: None if params[k] is None else np.zeros_like(params[k]) for k in PARAM_NAMES}


def _accumulate(grads: dict, da: np.ndarray, x_t: np.ndarray, h_prev: np.ndarray) -> None:
    """Add one step's weight gradients: dW_ih += da^T x_t, dW_hh += da^T h_{t-1}, db += da.

    da (B, G*H) is the gradient on the pre-activations W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
    (the RNN and the LSTM; the GRU splits its W_hh and does this inline).
    """
    grads["weight_ih"] += da.T @ x_t
    grads["weight_hh"] += da.T @ h_prev
    for key in ("bias_ih", "bias_hh"):
        if grads[key] is not None:
            grads[key] += da.sum(axis=0)


# -- vanilla RNN ----------------------------------------------------------------------


@dataclass
class RNNCache:
    """What :func:`rnn_backward` needs: inputs, parameters and every step's h."""

    x: np.ndarray  # (T, B, I)
    h0: np.ndarray  # (B, H)
    params: dict
    nonlinearity: str
    pre: np.ndarray  # (T, B, H) pre-activations a_t
    hs: np.ndarray  # (T, B, H)


def rnn_forward(x, h0, params: Params, nonlinearity: str = "tanh"):
    r"""The vanilla RNN over a sequence.

    .. math::
        a_t = W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}, \qquad h_t = f(a_t)

    with f = tanh or ReLU.

    Args:
        x: (T, B, I) inputs.
        h0: (B, H) initial state.
        params: ``weight_ih`` (H, I), ``weight_hh`` (H, H), ``bias_ih``, ``bias_hh`` (H,).
        nonlinearity: ``"tanh"`` or ``"relu"``.

    Returns:
        ``(hs, cache)``: hs (T, B, H) the states h_1..h_T; cache for :func:`rnn_backward`.
    """
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(
            f"Argument `nonlinearity` must be one of {NONLINEARITIES}, got {nonlinearity!r}."
        )
    x, p, H = _check_inputs(x, params, num_gates=1)
    T, B, _ = x.shape
    h = _check_state("h0", h0, B, H)
    h0 = h
    pre = np.empty((T, B, H))
    hs = np.empty((T, B, H))
    for t in range(T):
        pre[t] = _linear(x[t], p["weight_ih"], p["bias_ih"]) + _linear(
            h, p["weight_hh"], p["bias_hh"]
        )
        h = np.tanh(pre[t]) if nonlinearity == "tanh" else np.maximum(pre[t], 0.0)
        hs[t] = h
    return hs, RNNCache(x, h0, p, nonlinearity, pre, hs)


def rnn_backward(dhs, cache: RNNCache, dh_last=None) -> dict:
    r"""Backpropagation through time for :func:`rnn_forward`.

    For t = T..1:

    .. math::
        \frac{\partial L}{\partial h_t} = \texttt{dhs}[t] + W_{hh}^\top \delta_{t+1},
        \qquad
        \delta_t = \frac{\partial L}{\partial a_t}
                 = \frac{\partial L}{\partial h_t} \odot f'(a_t)

    with :math:`f'(a) = 1 - \tanh^2(a)` for tanh and :math:`[a > 0]` for ReLU; then
    :math:`\partial L / \partial W_{ih} = \sum_t \delta_t x_t^\top`,
    :math:`\partial L / \partial W_{hh} = \sum_t \delta_t h_{t-1}^\top`,
    :math:`\partial L / \partial b = \sum_t \delta_t` and
    :math:`\partial L / \partial x_t = W_{ih}^\top \delta_t`.

    Args:
        dhs: (T, B, H) dL/dh_t from the loss at each step (None: zeros).
        cache: from :func:`rnn_forward`.
        dh_last: optional (B, H) extra gradient on h_T.

    Returns:
        dict of ``weight_ih, weight_hh, bias_ih, bias_hh, x, h0`` gradients.
    """
    x, p, hs = cache.x, cache.params, cache.hs
    T, B, _ = x.shape
    H = hs.shape[2]
    dhs = _check_grad("dhs", dhs, (T, B, H), "(T, B, H)")
    dh_next = _check_grad("dh_last", dh_last, (B, H), "(B, H)")
    grads = _zero_grads(p)
    dx = np.empty_like(x)
    for t in reversed(range(T)):
        h_prev = hs[t - 1] if t > 0 else cache.h0
        # 1. total gradient on h_t: this step's loss + what came back from step t+1
        dh = dhs[t] + dh_next
        # 2. through the nonlinearity: delta_t = dL/da_t = dL/dh_t * f'(a_t)
        f_prime = 1.0 - hs[t] ** 2 if cache.nonlinearity == "tanh" else cache.pre[t] > 0
        da = dh * f_prime
        _accumulate(grads, da, x[t], h_prev)
        dx[t] = da @ p["weight_ih"]
        # 3. on to h_{t-1}: W_hh^T delta_t
        dh_next = da @ p["weight_hh"]
    grads["x"] = dx
    grads["h0"] = dh_next
    return grads


# -- LSTM -----------------------------------------------------------------------------


@dataclass
class LSTMCache:
    """What :func:`lstm_backward` needs: inputs, parameters, every step's gates and states."""

    x: np.ndarray  # (T, B, I)
    h0: np.ndarray  # (B, H)
    c0: np.ndarray  # (B, H)
    params: dict
    gates: np.ndarray  # (T, B, 4H): the activated gates i, f, g, o
    hs: np.ndarray  # (T, B, H)
    cs: np.ndarray  # (T, B, H)


def lstm_forward(x, h0, c0, params: Params):
    r"""The LSTM over a sequence (gate blocks in torch's order i, f, g, o).

    .. math::
        a_t = W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}
            = (a^i_t, a^f_t, a^g_t, a^o_t)

        i_t = \sigma(a^i_t), \quad f_t = \sigma(a^f_t), \quad
        g_t = \tanh(a^g_t), \quad o_t = \sigma(a^o_t)

        c_t = f_t \odot c_{t-1} + i_t \odot g_t, \qquad h_t = o_t \odot \tanh(c_t)

    Args:
        x: (T, B, I); h0, c0: (B, H); params: as for :func:`rnn_forward` with 4H rows.

    Returns:
        ``(hs, cs, cache)``: hs and cs (T, B, H), and the cache for :func:`lstm_backward`.
    """
    x, p, H = _check_inputs(x, params, num_gates=4)
    T, B, _ = x.shape
    h = _check_state("h0", h0, B, H)
    c = _check_state("c0", c0, B, H)
    h0, c0 = h, c
    gates = np.empty((T, B, 4 * H))
    hs = np.empty((T, B, H))
    cs = np.empty((T, B, H))
    for t in range(T):
        a = _linear(x[t], p["weight_ih"], p["bias_ih"]) + _linear(h, p["weight_hh"], p["bias_hh"])
        a_i, a_f, a_g, a_o = np.split(a, 4, axis=1)
        i, f, g, o = sigmoid(a_i), sigmoid(a_f), np.tanh(a_g), sigmoid(a_o)
        c = f * c + i * g
        h = o * np.tanh(c)
        gates[t] = np.concatenate([i, f, g, o], axis=1)
        hs[t], cs[t] = h, c
    return hs, cs, LSTMCache(x, h0, c0, p, gates, hs, cs)


def lstm_backward(dhs, cache: LSTMCache, dh_last=None, dc_last=None) -> dict:
    r"""Backpropagation through time for :func:`lstm_forward`.

    For t = T..1, with :math:`\bar c_t = \tanh(c_t)`:

    .. math::
        dh_t = \texttt{dhs}[t] + W_{hh}^\top \delta_{t+1}

        do_t = dh_t \odot \bar c_t, \qquad
        dc_t = dc_{t+1} \odot f_{t+1} + dh_t \odot o_t \odot (1 - \bar c_t^2)

        di_t = dc_t \odot g_t, \quad dg_t = dc_t \odot i_t, \quad
        df_t = dc_t \odot c_{t-1}

        \delta_t = (di_t\, i_t(1-i_t),\; df_t\, f_t(1-f_t),\;
                    dg_t\,(1-g_t^2),\; do_t\, o_t(1-o_t))

    The memory path :math:`dc_{t-1} = dc_t \odot f_t` has no matrix product and no
    squashing derivative: that is why the LSTM's gradient survives long sequences.
    Weight, bias and input gradients follow from :math:`\delta_t` as in
    :func:`rnn_backward`.

    Args:
        dhs: (T, B, H) dL/dh_t from the loss at each step (None: zeros).
        cache: from :func:`lstm_forward`.
        dh_last, dc_last: optional (B, H) extra gradients on h_T and c_T.

    Returns:
        dict of ``weight_ih, weight_hh, bias_ih, bias_hh, x, h0, c0`` gradients.
    """
    x, p, hs, cs = cache.x, cache.params, cache.hs, cache.cs
    T, B, _ = x.shape
    H = hs.shape[2]
    dhs = _check_grad("dhs", dhs, (T, B, H), "(T, B, H)")
    dh_next = _check_grad("dh_last", dh_last, (B, H), "(B, H)")
    dc_next = _check_grad("dc_last", dc_last, (B, H), "(B, H)")
    grads = _zero_grads(p)
    dx = np.empty_like(x)
    for t in reversed(range(T)):
        h_prev = hs[t - 1] if t > 0 else cache.h0
        c_prev = cs[t - 1] if t > 0 else cache.c0
        i, f, g, o = np.split(cache.gates[t], 4, axis=1)
        tanh_c = np.tanh(cs[t])
        # 1. total gradient on h_t
        dh = dhs[t] + dh_next
        # 2. through h_t = o * tanh(c_t), then c_t = f * c_{t-1} + i * g
        do = dh * tanh_c
        dc = dc_next + dh * o * (1.0 - tanh_c**2)
        di, df, dg = dc * g, dc * c_prev, dc * i
        da = np.concatenate(
            [di * i * (1.0 - i), df * f * (1.0 - f), dg * (1.0 - g**2), do * o * (1.0 - o)],
            axis=1,
        )  # (B, 4H): dL/d(pre-activations)
        _accumulate(grads, da, x[t], h_prev)
        dx[t] = da @ p["weight_ih"]
        # 3. on to step t-1: h through W_hh, c through the forget gate
        dh_next = da @ p["weight_hh"]
        dc_next = dc * f
    grads["x"] = dx
    grads["h0"] = dh_next
    grads["c0"] = dc_next
    return grads


# -- GRU ------------------------------------------------------------------------------


@dataclass
class GRUCache:
    """What :func:`gru_backward` needs: inputs, parameters, every step's gates and h."""

    x: np.ndarray  # (T, B, I)
    h0: np.ndarray  # (B, H)
    params: dict
    reset: str
    r: np.ndarray  # (T, B, H) reset gate
    z: np.ndarray  # (T, B, H) update gate
    n: np.ndarray  # (T, B, H) candidate state (the lecture's h-tilde)
    hn: np.ndarray  # (T, B, H) W_hn h_{t-1} + b_hn ("after") or W_hn (r*h_{t-1}) + b_hn
    hs: np.ndarray  # (T, B, H)


def gru_forward(x, h0, params: Params, reset: str = "after"):
    r"""The GRU over a sequence (gate blocks in torch's order r, z, n).

    .. math::
        r_t = \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}), \qquad
        z_t = \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz})

        \text{reset="after" (torch.nn.GRU):}\quad
        n_t = \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn}))

        \text{reset="before" (the lecture's):}\quad
        n_t = \tanh(W_{in} x_t + b_{in} + W_{hn} (r_t \odot h_{t-1}) + b_{hn})

        h_t = z_t \odot h_{t-1} + (1 - z_t) \odot n_t

    Args:
        x: (T, B, I); h0: (B, H); params: as for :func:`rnn_forward` with 3H rows.
        reset: ``"after"`` or ``"before"``.

    Returns:
        ``(hs, cache)``: hs (T, B, H) and the cache for :func:`gru_backward`.
    """
    if reset not in GRU_RESET_FORMS:
        raise ValueError(f"Argument `reset` must be one of {GRU_RESET_FORMS}, got {reset!r}.")
    x, p, H = _check_inputs(x, params, num_gates=3)
    T, B, _ = x.shape
    h = _check_state("h0", h0, B, H)
    h0 = h
    W_hh, b_hh = p["weight_hh"], p["bias_hh"]
    W_hrz, W_hn = W_hh[: 2 * H], W_hh[2 * H :]
    b_hrz, b_hn = (None, None) if b_hh is None else (b_hh[: 2 * H], b_hh[2 * H :])
    r_all, z_all, n_all, hn_all, hs = (np.empty((T, B, H)) for _ in range(5))
    for t in range(T):
        x_r, x_z, x_n = np.split(_linear(x[t], p["weight_ih"], p["bias_ih"]), 3, axis=1)
        h_r, h_z = np.split(_linear(h, W_hrz, b_hrz), 2, axis=1)
        r = sigmoid(x_r + h_r)
        z = sigmoid(x_z + h_z)
        if reset == "after":
            hn = _linear(h, W_hn, b_hn)
            n = np.tanh(x_n + r * hn)
        else:
            hn = _linear(r * h, W_hn, b_hn)
            n = np.tanh(x_n + hn)
        h = z * h + (1.0 - z) * n
        r_all[t], z_all[t], n_all[t], hn_all[t], hs[t] = r, z, n, hn, h
    return hs, GRUCache(x, h0, p, reset, r_all, z_all, n_all, hn_all, hs)


def gru_backward(dhs, cache: GRUCache, dh_last=None) -> dict:
    r"""Backpropagation through time for :func:`gru_forward`.

    For t = T..1, with :math:`a^n_t` the argument of the tanh that gives :math:`n_t`:

    .. math::
        dh_t = \texttt{dhs}[t] + \text{(gradient on } h_t \text{ from step } t+1)

        dz_t = dh_t \odot (h_{t-1} - n_t), \qquad
        da^n_t = dh_t \odot (1 - z_t) \odot (1 - n_t^2)

    reset="after": :math:`dr_t = da^n_t \odot (W_{hn} h_{t-1} + b_{hn})`, and
    :math:`W_{hn} h_{t-1} + b_{hn}` receives :math:`r_t \odot da^n_t`.

    reset="before": :math:`W_{hn}` sees :math:`r_t \odot h_{t-1}`, whose gradient is
    :math:`d(rh)_t = W_{hn}^\top da^n_t`; so :math:`dr_t = d(rh)_t \odot h_{t-1}`
    and :math:`h_{t-1}` receives :math:`d(rh)_t \odot r_t`.

    Then :math:`da^r_t = dr_t\, r_t (1 - r_t)`, :math:`da^z_t = dz_t\, z_t (1 - z_t)`,
    and the gradient on :math:`h_{t-1}` collects three paths: the direct one
    :math:`dh_t \odot z_t`, the gates' :math:`W_{hr}^\top da^r_t + W_{hz}^\top
    da^z_t`, and the candidate's (through :math:`W_{hn}` above).

    Args:
        dhs: (T, B, H) dL/dh_t from the loss at each step (None: zeros).
        cache: from :func:`gru_forward`.
        dh_last: optional (B, H) extra gradient on h_T.

    Returns:
        dict of ``weight_ih, weight_hh, bias_ih, bias_hh, x, h0`` gradients.
    """
    x, p, hs = cache.x, cache.params, cache.hs
    T, B, _ = x.shape
    H = hs.shape[2]
    dhs = _check_grad("dhs", dhs, (T, B, H), "(T, B, H)")
    dh_next = _check_grad("dh_last", dh_last, (B, H), "(B, H)")
    grads = _zero_grads(p)
    dx = np.empty_like(x)
    W_hh = p["weight_hh"]
    W_hrz, W_hn = W_hh[: 2 * H], W_hh[2 * H :]
    for t in reversed(range(T)):
        h_prev = hs[t - 1] if t > 0 else cache.h0
        r, z, n, hn = cache.r[t], cache.z[t], cache.n[t], cache.hn[t]
        # 1. total gradient on h_t
        dh = dhs[t] + dh_next
        # 2. through h_t = z * h_{t-1} + (1 - z) * n, then n = tanh(a_n)
        dz = dh * (h_prev - n)
        da_n = dh * (1.0 - z) * (1.0 - n**2)
        if cache.reset == "after":
            dr = da_n * hn
            da_hn = da_n * r  # gradient on W_hn h_{t-1} + b_hn
            dh_prev_n = da_hn @ W_hn  # the candidate's path to h_{t-1}
            hn_input = h_prev  # what W_hn multiplied
        else:
            drh = da_n @ W_hn  # gradient on r * h_{t-1}
            dr = drh * h_prev
            da_hn = da_n
            dh_prev_n = drh * r
            hn_input = r * h_prev
        da_r = dr * r * (1.0 - r)
        da_z = dz * z * (1.0 - z)
        da_x = np.concatenate([da_r, da_z, da_n], axis=1)  # on W_ih x_t + b_ih
        da_hrz = np.concatenate([da_r, da_z], axis=1)  # on W_hr h + b_hr, W_hz h + b_hz
        grads["weight_ih"] += da_x.T @ x[t]
        grads["weight_hh"][: 2 * H] += da_hrz.T @ h_prev
        grads["weight_hh"][2 * H :] += da_hn.T @ hn_input
        if grads["bias_ih"] is not None:
            grads["bias_ih"] += da_x.sum(axis=0)
        if grads["bias_hh"] is not None:
            grads["bias_hh"] += np.concatenate([da_hrz, da_hn], axis=1).sum(axis=0)
        dx[t] = da_x @ p["weight_ih"]
        # 3. on to h_{t-1}: the direct path, the gates' W_hh^T, the candidate's path
        dh_next = dh * z + da_hrz @ W_hrz + dh_prev_n
    grads["x"] = dx
    grads["h0"] = dh_next
    return grads
