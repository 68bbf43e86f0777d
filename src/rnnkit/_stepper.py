"""Fast one-token steps of an embedding -> rnnkit Stack -> linear language model.

The ``step(ids, state) -> (scores, state)`` that :mod:`rnnkit.decoding` runs, written
for speed at one to a few hundred streams, where the per-call cost of torch's fused
kernels dominates a single step. It is the cells' own math, rearranged:

* the first layer's input projection is a precomputed (V, G*H) table -- embedding
  and ``W_ih`` folded -- so a step costs one row lookup there instead of a product;
* the LSTM runs :func:`lstm_step`, the one specialisation of
  :meth:`rnnkit.LSTMCell.recur`: gate blocks reordered i, f, o, g (one sigmoid call for
  three gates), both biases folded, ``[W_ih W_hh]`` joined into one product for the
  upper layers. The same function runs on NumPy arrays (whose calls cost ~1 us
  against torch's ~5 us: 1.3-2x torch's speed from 1 to 128 streams) and on torch
  tensors, with float32 or bfloat16 products;
* GRU and vanilla RNN stacks step their cells' ``recur``.

The state is a list with each layer's cell state, batch first: (N, H), or (h, c) for
the LSTM.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from .backends import native_bf16
from .cells import LSTMCell
from .layers import State, map_state


class LSTMWeights(NamedTuple):
    """An LSTM stack and its readout, rearranged for :func:`lstm_step` (gates i f o g).

    table (V, 4H): W_ih x + b_ih + b_hh of layer 0 for every token x; hh0_t (H, 4H):
    layer 0's W_hh^T; upper: ([W_ih W_hh]^T (I+H, 4H), b (4H,)) of layers 1..L-1;
    head_t (H, V), head_b (V,): the readout. NumPy arrays or torch tensors.
    """

    table: Any
    hh0_t: Any
    upper: list[tuple[Any, Any]]
    head_t: Any
    head_b: Any


def lstm_step(
    ids: Any,
    states: list[tuple[Any, Any]],
    weights: LSTMWeights,
    mm: Callable[[Any, Any], Any] = operator.matmul,
) -> tuple[Any, list[tuple[Any, Any]]]:
    r"""One step of an LSTM stack and its readout: ids (N,) -> scores (N, V), states.

    :meth:`rnnkit.LSTMCell.recur` and :func:`rnnkit.cells.lstm_pointwise`, layer by
    layer, in the gate order i, f, o, g::

        (i, f, o, g) = (sigma, sigma, sigma, tanh)(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
        c_t = f * c_{t-1} + i * g,    h_t = o * tanh(c_t)

    with layer 0's input half looked up in ``weights.table``. Written with operators
    that NumPy arrays and torch tensors share, so one function serves both; `mm` is
    the matrix product (bfloat16 products: :func:`bf16_mm`).
    """
    xp = np if isinstance(weights.table, np.ndarray) else torch
    new, below = [], None
    for i, (h, c) in enumerate(states):
        H = c.shape[1]
        if i == 0:
            gates = weights.table[ids]  # (N, 4H): the input half, looked up
            gates += mm(h, weights.hh0_t)
        else:
            w_t, b = weights.upper[i - 1]
            gates = mm(xp.concatenate([below, h], 1), w_t)  # [W_ih W_hh] [x; h]: (N, 4H)
            gates += b
        sig = _sigmoid_(gates[:, : 3 * H])  # i, f, o
        g = gates[:, 3 * H :]
        xp.tanh(g, out=g)
        c = c * sig[:, H : 2 * H]  # c_t = f c_{t-1} + i g
        c += sig[:, :H] * g
        below = xp.tanh(c)
        below *= sig[:, 2 * H :]  # h_t = o tanh(c_t)
        new.append((below, c))
    scores = mm(below, weights.head_t)  # (N, V)
    scores += weights.head_b
    return scores, new


def bf16_mm(x: Tensor, w_bf16: Tensor) -> Tensor:
    """x @ w with the product in bfloat16 (w already bfloat16), the result float32."""
    return torch.mm(x.bfloat16(), w_bf16).float()


def _sigmoid_(x: Any) -> Any:
    """sigmoid, in place, on a tensor or a NumPy array (which has no sigmoid ufunc)."""
    if isinstance(x, Tensor):
        return x.sigmoid_()
    x *= 0.5  # sigmoid(x) = (1 + tanh(x / 2)) / 2: one ufunc call
    np.tanh(x, out=x)
    x *= 0.5
    x += 0.5
    return x


class LMStepper:
    """Fast steps of ``embed -> rnn -> head`` for :mod:`rnnkit.decoding`.

    Args:
        embed: ids (...,) -> inputs (..., I) (an embedding, or one-hot vectors).
        vocab_size: V, the tokens `embed` takes and `head` scores.
        rnn: a forward :class:`rnnkit.Stack` of LSTM, GRU or RNN layers.
        head: the readout ``nn.Linear(H, V)``.

    :meth:`step` is the torch float32 step; :meth:`prepare` picks the fastest for a
    number of streams: NumPy up to :attr:`numpy_max_streams` (LSTM on the CPU), and
    bfloat16 products from :attr:`bf16_min_streams` on a CPU with native bfloat16,
    where products (most of a step at many streams) run 2.3x faster (64 x 512 x
    1024); the state, gates and draw stay float32, and the text can then differ from
    float32 sampling by bfloat16 rounding of the weights.
    """

    numpy_max_streams = 128  # NumPy steps up to this many streams (measured faster)
    bf16_min_streams: int | None = 16  # bf16 products from this many streams on; None: never

    def __init__(
        self, embed: Callable[[Tensor], Tensor], vocab_size: int, rnn: nn.Module, head: nn.Linear
    ) -> None:
        self.embed, self.rnn = embed, rnn
        self.layers = list(rnn.layers)
        for i, layer in enumerate(self.layers):
            if not hasattr(layer, "cell") or layer.reverse:
                raise ValueError(
                    f"Argument `rnn`: layer {i} ({type(layer).__name__}) reads backwards; "
                    "a language model steps forward layers only"
                )
        cells = [layer.cell for layer in self.layers]
        self.lstm = all(type(c) is LSTMCell for c in cells)
        self.device = head.weight.device
        self._weights: dict[str, LSTMWeights] = {}
        with torch.inference_mode():
            inputs = embed(torch.arange(vocab_size, device=self.device))  # (V, I)
            self.head_t = head.weight.t().contiguous()  # (H, V)
            self.head_b = head.bias.clone()
            if not self.lstm:
                self.table = cells[0].project_input(inputs).clone()  # (V, G*H)
                return
            H = cells[0].hidden_size
            perm = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H)])
            perm = torch.cat([perm, torch.arange(2 * H, 3 * H)]).to(self.device)  # i f o g

            def bias(c: LSTMCell) -> Tensor:
                if c.bias_ih is None:
                    return c.weight_hh.new_zeros(4 * H)
                return c.bias_ih + c.bias_hh

            c0 = cells[0]
            self._weights["torch"] = LSTMWeights(
                table=(nn.functional.linear(inputs, c0.weight_ih) + bias(c0))[:, perm].contiguous(),
                hh0_t=c0.weight_hh[perm].t().contiguous(),
                upper=[
                    (torch.cat([c.weight_ih, c.weight_hh], 1)[perm].t().contiguous(), bias(c)[perm])
                    for c in cells[1:]
                ],
                head_t=self.head_t,
                head_b=self.head_b,
            )

    # -- state ------------------------------------------------------------------------
    def initial_state(self, num: int) -> list[State]:
        """Each layer's initial state (zeros or learned) for `num` streams."""
        x = self.head_t.new_zeros(1, num, 1)
        states = [layer.initial_state(num, x) for layer in self.layers]  # (1, N, H) each
        return [map_state(lambda t: t[0], s) for s in states]

    def read(self, ids: Tensor) -> list[State]:
        """The state after reading ids (N, T) with the stack's forward pass (one call
        of the fused kernel where it runs); the initial state when T is 0."""
        N, T = ids.shape
        if T == 0:
            return self.initial_state(N)
        x = self.embed(ids)  # (N, T, I)
        _, state = self.rnn(x if self.rnn.batch_first else x.transpose(0, 1))
        L = len(self.layers)  # (L, N, H) or a tuple of them -> per-layer cell states
        if isinstance(state, tuple):
            return [tuple(s[i] for s in state) for i in range(L)]
        return [state[i] for i in range(L)]

    # -- steps ------------------------------------------------------------------------
    def step(self, ids: Tensor, states: list[State]) -> tuple[Tensor, list[State]]:
        """ids (N,) -> scores (N, V) of the next token, the new per-layer states."""
        if self.lstm:
            return lstm_step(ids, states, self._weights["torch"])
        new, h = [], None
        xp = self.table[ids]  # (N, G*H)
        for i, layer in enumerate(self.layers):
            cell = layer.cell
            if i:
                xp = cell.project_input(h)
            s = cell.recur(xp, states[i])
            new.append(s)
            h = cell.output(s)
        return torch.addmm(self.head_b, h, self.head_t), new

    def kind(self, num: int) -> str:
        """The fastest step for `num` streams: "numpy", "bf16" or "torch"."""
        cpu_lstm = self.lstm and self.device.type == "cpu"
        if not cpu_lstm or self.head_t.dtype != torch.float32:
            return "torch"
        bf16 = self.bf16_min_streams is not None and num >= self.bf16_min_streams
        if bf16 and native_bf16(self.device):
            return "bf16"
        return "numpy" if num <= self.numpy_max_streams else "torch"

    def step_fn(self, kind: str) -> Callable[[Any, Any], tuple[Any, Any]]:
        """The step of `kind` (:meth:`kind`); "numpy" and "bf16" are LSTM stacks' only.
        bf16 products are emulated (same numbers, slower) on a CPU without them."""
        if kind == "torch":
            return self.step
        if not self.lstm or kind not in ("numpy", "bf16"):
            raise ValueError(
                f"Argument `kind` must be 'torch', or 'numpy'/'bf16' for an LSTM, got {kind!r}"
            )
        if kind not in self._weights:
            w = self._weights["torch"]
            if kind == "numpy":
                self._weights[kind] = LSTMWeights(
                    _np(w.table), _np(w.hh0_t), [(_np(a), _np(b)) for a, b in w.upper],
                    _np(w.head_t), _np(w.head_b),
                )  # fmt: skip
            else:
                self._weights[kind] = LSTMWeights(
                    w.table, w.hh0_t.bfloat16(), [(a.bfloat16(), b) for a, b in w.upper],
                    w.head_t.bfloat16(), w.head_b,
                )  # fmt: skip
        mm = bf16_mm if kind == "bf16" else operator.matmul
        return partial(lstm_step, weights=self._weights[kind], mm=mm)

    def prepare(
        self, ids: Tensor, states: list[State], kind: str | None = None
    ) -> tuple[Callable, Any, list[State]]:
        """(step, ids, states) for the loop: the fastest step for len(ids) streams (or
        `kind`'s), with ids and states in its arrays (NumPy for "numpy")."""
        kind = kind or self.kind(len(ids))
        step = self.step_fn(kind)
        if kind != "numpy":
            return step, ids, states
        ids = ids.cpu().numpy().astype(np.int64)
        return step, ids, [(_np(h), _np(c)) for h, c in states]


def _np(t: Tensor) -> np.ndarray:
    return np.array(t.detach().cpu().numpy(), dtype=np.float32)  # a copy, C-contiguous
