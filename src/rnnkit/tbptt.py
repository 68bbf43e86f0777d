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

**Synthetic gradients** (decoupled neural interfaces, Jaderberg et al. 2017): cutting
the gradient at a window's end throws away dL_future/dh_end, everything the later
windows' losses would have said about this window. :class:`SyntheticGradients` is a
small module M that predicts it from the state, dL_future/dh ~ M(h). A window
[t, t + k) then backpropagates its own loss plus the prediction injected at its end,

    g_t = d/dh_t ( L_{t:t+k} + <h_{t+k}, M(h_{t+k})> )     (M(h_{t+k}) held constant)

and since that is the window's whole gradient at its start, g_t is also M's training
target at h_t: M(h_t) is regressed onto g_t (mean squared error, M's own Adam), a
target bootstrapped from M's own prediction one window later, as the paper defines it.
At the end of a sequence nothing follows: no prediction is injected, and M(h_end) is
regressed onto 0. M's last layer starts at zero, so training starts as plain
truncation. Both ways in take it (``synthetic=``), for k1 = k2 only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

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


def _tensors(state: State) -> tuple[Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def flatten_state(state: State) -> Tensor:
    """A state (a tensor or a tuple, each (..., B, H): batch second to last, as the
    layers return them) -> one row per sequence, (B, S)."""
    return torch.cat([t.movedim(-2, 0).flatten(1) for t in _tensors(state)], dim=1)


def unflatten_state(flat: Tensor, like: State) -> State:
    """:func:`flatten_state` undone, into the shapes of `like`."""
    out, at = [], 0
    for t in _tensors(like):
        moved = t.movedim(-2, 0).shape
        n = int(torch.Size(moved[1:]).numel())
        out.append(flat[:, at : at + n].reshape(moved).movedim(0, -2))
        at += n
    return tuple(out) if isinstance(like, tuple) else out[0]


class SyntheticGradients(nn.Module):
    """M(h) ~ dL_future/dh at a window's edge (see the module docstring): a linear map
    of the flattened state (every tensor of it: h, and c for an LSTM), or a one-hidden-
    layer ReLU network (`hidden_size`), its last layer zero at the start; trained by its
    own Adam (`lr`) on the bootstrapped targets that :class:`CarriedState` and
    :func:`truncated_bptt` hand it.

    M learns its targets divided by their running root mean square and multiplies its
    output back by it (the scale starts at the first targets' and follows an average
    with weight `target_decay`). A loss averaged over a batch of windows has gradients
    dL/dh of about 1e-4 per number, and Adam moves every weight by about `lr` per step
    whatever the target's size: fitted raw, M's predictions swamped the windows' own
    gradients (the character model's gradient norm went from 0.5 to 186 in 40 updates).
    Normalised, M's steps are the same whatever the loss's scale.

    Args:
        state_size: numbers of one sequence's state (e.g. layers x H, twice for an LSTM).
        hidden_size: 0 for a linear M.
        lr: M's learning rate.
        scale: the factor on the predicted gradient where it is injected (M still learns
            the unscaled target); below 1 a noisy M disturbs the model less.
        target_decay: the weight of the past in the running mean square of the targets.
    """

    def __init__(
        self,
        state_size: int,
        *,
        hidden_size: int = 0,
        lr: float = 1e-4,
        scale: float = 1.0,
        target_decay: float = 0.99,
    ) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f"Argument `scale` must be positive, got {scale!r}.")
        if not 0 <= target_decay < 1:
            raise ValueError(f"Argument `target_decay` must be in [0, 1), got {target_decay!r}.")
        self.scale = float(scale)
        self.target_decay = float(target_decay)
        # the targets' running mean square; 0 until the first non-zero targets arrive
        self.register_buffer("target_ms", torch.zeros(()))
        for name, v, least in (("state_size", state_size, 1), ("hidden_size", hidden_size, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                raise ValueError(f"Argument `{name}` must be an integer >= {least}, got {v!r}.")
        layers: list[nn.Module] = []
        # M's initial weights come from a stream of their own: switching synthetic
        # gradients on leaves the model's random numbers (dropout, data order) as they were
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(state_size)
            if hidden_size:
                layers += [nn.Linear(state_size, hidden_size), nn.ReLU()]
            last = nn.Linear(hidden_size or state_size, state_size)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        self.pending: list[tuple[Tensor, Tensor]] = []  # (state, target) rows to learn
        self.last_loss: float | None = None  # M's last regression loss, in units of the RMS

    @property
    def dtype(self) -> torch.dtype:
        return self.net[-1].weight.dtype

    def forward(self, state: State) -> State:
        """The predicted gradient, in the state's own shapes (no graph to the state; M
        computes in its own dtype, e.g. float32 under a bfloat16 autocast)."""
        flat = flatten_state(detach_state(state)).to(self.dtype)
        return unflatten_state(self.net(flat) * self.target_rms(), state)

    def target_rms(self) -> Tensor:
        """The scale of M's output: the targets' running RMS (1 before any target)."""
        ms = self.target_ms.to(self.dtype)
        return torch.where(ms > 0, ms, torch.ones_like(ms)).sqrt()

    def inject(self, loss: Tensor, end: State, last: bool) -> Tensor:
        """`loss` plus <end, M(end)> (M(end) constant), so that backward gives the window's
        end state the predicted gradient; at a sequence's `last` window nothing follows:
        nothing is injected and M(end) is to learn 0."""
        if last:
            flat = flatten_state(detach_state(end))
            self.pending.append((flat, torch.zeros_like(flat)))
            return loss
        with torch.no_grad():
            delta = self(end)
        push = self.scale * sum((t * d).sum() for t, d in zip(_tensors(end), _tensors(delta)))
        # the gradient of <end, M(end)>, but not its value: the loss reported (and checked
        # for divergence) stays the window's own
        return loss + (push - push.detach())

    def collect(self, start: State | None) -> None:
        """After a window's backward: its start state's gradient (a leaf's ``.grad``) is
        M's target there."""
        if start is None:
            return
        if any(t.grad is None for t in _tensors(start)):
            return  # no backward reached it (e.g. a skipped batch)
        flat = flatten_state(detach_state(start))
        grad = flatten_state(tuple(t.grad for t in _tensors(start)))
        self.pending.append((flat, grad.detach()))

    def learn(self) -> float | None:
        """One Adam step of M on the pending (state, target) rows; their loss."""
        if not self.pending:
            return None
        x = torch.cat([p[0] for p in self.pending]).to(self.dtype)
        y = torch.cat([p[1] for p in self.pending]).to(self.dtype)
        self.pending = []
        ms = y.float().pow(2).mean()
        if ms > 0:  # a batch of end-of-sequence zeros says nothing of the scale
            d = self.target_decay if self.target_ms > 0 else 0.0
            self.target_ms.mul_(d).add_((1 - d) * ms)
        with torch.enable_grad():
            loss = F.mse_loss(self.net(x), y / self.target_rms())  # in units of the RMS
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        self.optimizer.step()
        self.last_loss = float(loss.detach())
        return self.last_loss

    def training_state(self) -> dict[str, Any]:
        """Everything to resume M exactly (weights, optimizer, pending rows), CPU."""
        return {
            "weights": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "pending": [[a.cpu(), b.cpu()] for a, b in self.pending],
        }

    def load_training_state(self, d: dict[str, Any], device: torch.device | str) -> None:
        weights = dict(d["weights"])
        weights.setdefault("target_ms", torch.zeros(()))  # saved before M normalised
        self.load_state_dict(weights)
        self.to(device)
        self.optimizer.load_state_dict(d["optimizer"])
        self.pending = [(a.to(device), b.to(device)) for a, b in d["pending"]]


def _leaf(state: State | None) -> State | None:
    """A detached copy of `state` that records its gradient."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(t.detach().requires_grad_() for t in state)
    return state.detach().requires_grad_()


class CarriedState:
    """The hidden state carried from one window to the next (TBPTT with k1 = k2 = the
    window), for a loop that brings one window per step.

    ``y = carried(model, x)`` runs ``model(x, state)`` from the carried state and keeps
    the new state *detached*: the next window starts where this one ended, but its
    gradients stop at the edge (else backward would run through every window since the
    start, pytorch/examples' ``repackage_hidden``). :meth:`reset` starts afresh (a new
    pass over the data). :meth:`state_dict` travels in checkpoints.

    With `synthetic` (:class:`SyntheticGradients`): pass the window's loss through
    :meth:`loss` before backward, which adds the predicted gradient at the window's
    end; the start state's true gradient is collected on the next call, when M takes
    its step on it.
    """

    def __init__(self, synthetic: SyntheticGradients | None = None) -> None:
        self.state: State | None = None
        self.synthetic = synthetic
        self._start: State | None = None  # the window's start state (a leaf), synthetic only
        self._end: State | None = None  # its end state, with the graph

    def __call__(self, model: Callable, x: Tensor) -> Tensor:
        state = self.state
        if self.synthetic is not None:
            self._learn()
            state = self._start = _leaf(state)
        y, end = model(x, state)
        self._end = end if self.synthetic is not None else None
        self.state = detach_state(end)  # truncated BPTT: cut at the window edge
        return y

    def loss(self, loss: Tensor, *, last: bool = False) -> Tensor:
        """The window's `loss` plus the synthetic gradient at its end (unless it is the
        `last` window of its sequence); `loss` unchanged without synthetic gradients."""
        if self.synthetic is None or self._end is None:
            return loss
        end, self._end = self._end, None
        return self.synthetic.inject(loss, end, last)

    def _learn(self) -> None:
        self.synthetic.collect(self._start)
        self._start = None
        self.synthetic.learn()

    def reset(self) -> None:
        self.state = None

    def state_dict(self) -> dict[str, Any]:
        s = self.state
        if s is None:
            d: dict[str, Any] = {"kind": "none"}
        elif isinstance(s, tuple):
            d = {"kind": "tuple", "tensors": [t.detach().cpu() for t in s]}
        else:
            d = {"kind": "tensor", "tensors": [s.detach().cpu()]}
        if self.synthetic is not None:
            self.synthetic.collect(self._start)  # the last window's target is kept too
            self._start = None
            d["synthetic"] = self.synthetic.training_state()
        return d

    def load_state_dict(self, d: dict[str, Any], device: torch.device | str = "cpu") -> None:
        if d["kind"] == "none":
            self.state = None
        elif d["kind"] == "tuple":
            self.state = tuple(t.to(device) for t in d["tensors"])
        else:
            self.state = d["tensors"][0].to(device)
        if self.synthetic is not None:
            if "synthetic" not in d:
                raise ValueError("this run was saved without synthetic gradients")
            self.synthetic.load_training_state(d["synthetic"], device)
            self._start = None


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
    synthetic: SyntheticGradients | None = None,
    ends: bool = True,
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
        synthetic: synthetic gradients at every window's end (k1 = k2 only); M learns
            from each window's start after its backward.
        ends: whether the sequences end with this batch (then nothing is injected at
            the last window's end, and M learns 0 there), or go on in the next one.

    Returns the loss and pre-clip gradient norm of every update, and the final state
    (detached, ready to carry into the next batch).
    """
    T = inputs.shape[1]
    k2 = k1 if k2 is None else k2
    if synthetic is not None and k2 != k1:
        raise ValueError(f"Argument `synthetic`: for k1 = k2 only, got k1={k1}, k2={k2}.")
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
        if synthetic is not None:
            s = _leaf(s)
            start = s
        if w.cut > w.start:  # k2 < k1: these steps count in the loss, but gradients stop at cut
            y, s = model(inputs[:, w.start : w.cut], s)
            outputs.append(y)
            s = detach_state(s)
        y, s = model(inputs[:, w.cut : w.end], s)
        outputs.append(y)
        y = torch.cat(outputs, 1)[:, w.loss_start - w.start :]
        loss = task_loss = loss_fn(y, targets[:, w.loss_start : w.end])
        if synthetic is not None:
            loss = synthetic.inject(loss, s, last=ends and w.end == T)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if synthetic is not None:
            synthetic.collect(start)
            synthetic.learn()
        params = (p for group in optimizer.param_groups for p in group["params"])
        norm, _ = clip_gradients(params, clip_norm or None)
        optimizer.step()
        result.losses.append(task_loss.item())
        result.grad_norms.append(float(norm))
        # Keep what a later window may start from: saved states lie k1 apart.
        saved = {t: v for t, v in saved.items() if t >= w.end - k1 - k2}
        saved[w.end] = detach_state(s)
    result.state = saved[T]
    return result
