"""Truncated backpropagation through time.

Full BPTT over a long sequence keeps every step's activations and takes one update
per sequence. Truncated BPTT walks the sequence forward carrying the hidden state,
and every ``k1`` steps takes an update whose gradients flow back at most ``k2``
steps (Williams & Peng 1990; Sutskever 2013, sec. 2.8.6):

* ``k1 == k2`` (char-rnn's way): cut the sequence into windows of k1 steps; each
  window's loss is backpropagated through that window only. The state carries over
  the boundary, detached.
* ``k2 > k1``: each update re-runs its k1 new steps plus the k2 - k1 steps before
  them, from the state saved there, so gradients of the newest loss flow back k2
  steps (the re-run costs k2/k1 forward passes per step).
* ``k2 < k1``: the state is detached k2 steps before each update, so no gradient
  reaches further back than that.

The model contract is the layers': ``model(x, state) -> (y, state)`` with x
(B, T, ...) batch first.

Two ways in: :func:`truncated_bptt` trains on one long batch held in memory, window by
window; :class:`CarriedState` is the same carry for a training loop that brings the
windows one at a time (the character model reads B streams through a text this way:
one window per :class:`~rnnkit.trainer.Trainer` step, the state carried between
steps, detached at each edge, and saved in checkpoints so a resumed run carries on).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .layers import State, detach_state
from .trainer import clip_gradients


@dataclass
class Window:
    """One update of truncated BPTT over steps [start, end).

    The forward pass starts at ``start`` from a detached state, the state is cut
    again at ``cut`` (gradients stop there), and the loss covers [loss_start, end).
    """

    start: int
    cut: int
    loss_start: int
    end: int


def tbptt_windows(T: int, k1: int, k2: int | None = None) -> list[Window]:
    """The updates of TBPTT(k1, k2) over a sequence of T steps."""
    k2 = k1 if k2 is None else k2
    for name, v in (("k1", k1), ("k2", k2), ("T", T)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"Argument `{name}` must be a positive integer, got {v!r}.")
    ends = list(range(k1, T + 1, k1)) + ([T] if T % k1 else [])
    windows, loss_start = [], 0
    for end in ends:
        start = max(0, loss_start - max(0, k2 - k1))  # k2 - k1 steps of extra history
        windows.append(Window(start, max(start, end - k2), loss_start, end))
        loss_start = end
    return windows


class CarriedState:
    """The hidden state carried from one window to the next (TBPTT with k1 = k2 = the
    window), for a loop that brings one window per step.

    ``y = carried(model, x)`` runs ``model(x, state)`` from the carried state and keeps
    the new state *detached*: the next window starts where this one ended, but its
    gradients stop at the edge (else backward would run through every window since the
    start, pytorch/examples' ``repackage_hidden``). :meth:`reset` starts afresh (a new
    pass over the data). :meth:`state_dict` travels in checkpoints.
    """

    def __init__(self) -> None:
        self.state: State | None = None

    def __call__(self, model: Callable, x: Tensor) -> Tensor:
        y, state = model(x, self.state)
        self.state = detach_state(state)  # truncated BPTT: cut at the window edge
        return y

    def reset(self) -> None:
        self.state = None

    def state_dict(self) -> dict[str, Any]:
        s = self.state
        if s is None:
            return {"kind": "none"}
        if isinstance(s, tuple):
            return {"kind": "tuple", "tensors": [t.detach().cpu() for t in s]}
        return {"kind": "tensor", "tensors": [s.detach().cpu()]}

    def load_state_dict(self, d: dict[str, Any], device: torch.device | str = "cpu") -> None:
        if d["kind"] == "none":
            self.state = None
        elif d["kind"] == "tuple":
            self.state = tuple(t.to(device) for t in d["tensors"])
        else:
            self.state = d["tensors"][0].to(device)


@dataclass
class TBPTTResult:
    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    state: State | None = None


def truncated_bptt(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    k1: int,
    k2: int | None = None,
    state: State | None = None,
    clip_norm: float | None = None,
) -> TBPTTResult:
    """Train on one long batch of sequences with TBPTT(k1, k2).

    Args:
        model: ``model(x, state) -> (y, state)``; x (B, T, ...).
        inputs: (B, T, ...); targets: (B, T, ...) aligned with the model's outputs.
        loss_fn: ``loss_fn(y_window, targets_window) -> scalar``.
        optimizer: stepped once per window.
        k1: steps between updates. k2: steps of backpropagation (default k1).
        state: the state before step 0 (carried in from the previous batch).
        clip_norm: clip the gradient norm to this value before each update.

    Returns the loss and pre-clip gradient norm of every update, and the final state
    (detached, ready to carry into the next batch).
    """
    T = inputs.shape[1]
    k2 = k1 if k2 is None else k2
    result = TBPTTResult()
    saved = {0: detach_state(state)}  # detached states at the ends of updates
    for w in tbptt_windows(T, k1, k2):
        # The state at `start`: run forward without gradients from the nearest saved one.
        begin = max(t for t in saved if t <= w.start)
        s = saved[begin]
        if begin < w.start:
            with torch.no_grad():
                _, s = model(inputs[:, begin : w.start], s)
        outputs = []
        if w.cut > w.start:  # k2 < k1: these steps count in the loss, but gradients stop at cut
            y, s = model(inputs[:, w.start : w.cut], s)
            outputs.append(y)
            s = detach_state(s)
        y, s = model(inputs[:, w.cut : w.end], s)
        outputs.append(y)
        y = torch.cat(outputs, 1)[:, w.loss_start - w.start :]
        loss = loss_fn(y, targets[:, w.loss_start : w.end])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = (p for group in optimizer.param_groups for p in group["params"])
        norm, _ = clip_gradients(params, clip_norm or None)
        optimizer.step()
        result.losses.append(loss.item())
        result.grad_norms.append(float(norm))
        # Keep what a later window may start from: saved states lie k1 apart.
        saved = {t: v for t, v in saved.items() if t >= w.end - k1 - k2}
        saved[w.end] = detach_state(s)
    result.state = saved[T]
    return result
