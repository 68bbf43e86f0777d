"""Layers: unroll a cell over time, run it backwards, stack layers, pair directions.

* :class:`Recurrent` walks one cell along the time axis, in either direction, with
  optional per-sequence ``lengths`` (right padding).
* :class:`Bidirectional` pairs a forward and a backward layer and merges them.
* :class:`Stack` composes layers in depth with dropout between them.
* :class:`RNN`, :class:`LSTM`, :class:`GRU` build a stack the way ``torch.nn`` does.

States follow ``torch.nn``'s layout throughout: a leading dimension of
``num_layers * num_directions``, so ``h_n`` of a two-layer bidirectional LSTM is
``(4, B, H)`` and a single ``Recurrent`` returns ``(1, B, H)``.

The per-step loop below is the definition of every layer. Where a faster backend
computes the same thing (torch's fused kernel, or rnnkit's whole-sequence kernel,
:mod:`rnnkit.sequence`), the layer runs that instead: :mod:`rnnkit.backends` decides
which and why. ``layer.backend(device)`` names it; ``layer.fused`` and
``layer.not_fused_reason`` tell whether torch's kernel can run and, if not, why.
``fused=True`` insists on it (and raises where it cannot run); ``fused=False`` never
uses it. Inside :func:`record_states` every layer runs the per-step loop and hands each
step's output h_t to the recorder (how :mod:`rnnkit.diagnostics` measures dL/dh_t of a
trained model).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import backends
from .backends import BACKENDS
from .cells import GRUCell, LSTMCell, RNNCell, State
from .init import initialize
from .sequence import run_sequence, sequence_kernel

MERGE_MODES = ("concat", "sum", "mean")
INITIAL_STATES = ("zeros", "learned")

# -- recording every step's output ----------------------------------------------------------


class StateRecord:
    """What :func:`record_states` collects: for each layer (a :class:`Recurrent`), the
    output h_t (B, H, ...) of every step it ran, in the order it ran them (a backward
    layer from the sequence's end; a layer called several times -- one step at a time
    while decoding, or reading and then writing -- continues its series), and which
    sequences were real (not padding) at that step, (B,) bool or None for all."""

    def __init__(self) -> None:
        self.steps: dict[nn.Module, list[tuple[Tensor, Tensor | None]]] = {}

    def add(self, layer: nn.Module, h: Tensor, valid: Tensor | None) -> None:
        self.steps.setdefault(layer, []).append((h, valid))


_RECORDING: ContextVar[StateRecord | None] = ContextVar("rnnkit_recording", default=None)


@contextmanager
def record_states() -> Iterator[StateRecord]:
    """Within this block every layer runs its per-step cell loop (no fused or sequence
    kernel: they keep no per-step tensor in the graph) and records each step's h_t, a
    tensor the later steps are computed from, so that ``torch.autograd.grad(loss, h_t)``
    is the total derivative dL/dh_t, through every later step."""
    record = StateRecord()
    token = _RECORDING.set(record)
    try:
        yield record
    finally:
        _RECORDING.reset(token)


def recording() -> bool:
    """Whether a :func:`record_states` block is active (layers then run per step)."""
    return _RECORDING.get() is not None


# -- small helpers on states (a tensor, or a tuple of tensors for the LSTM) ----------


def map_state(fn: Callable[[Tensor], Tensor], state: State) -> State:
    return tuple(fn(s) for s in state) if isinstance(state, tuple) else fn(state)


def zip_state(fn: Callable[[Tensor, Tensor], Tensor], a: State, b: State) -> State:
    return tuple(fn(x, y) for x, y in zip(a, b)) if isinstance(a, tuple) else fn(a, b)


def cat_states(states: Sequence[State], dim: int = 0) -> State:
    if isinstance(states[0], tuple):
        return tuple(torch.cat(parts, dim) for parts in zip(*states))
    return torch.cat(states, dim)


def detach_state(state: State | None) -> State | None:
    """Cut the graph behind a carried state (truncated BPTT's window boundary).

    The values carry on into the next window, but backpropagation stops here, so the
    next ``backward()`` neither walks into the previous window (whose graph was freed)
    nor grows without bound.
    """
    if state is None:
        return None
    return map_state(lambda s: s.detach(), state)


def check_state(layer_name: str, state: State, expected: State) -> None:
    """Raise a ValueError naming `state` unless it has the structure and shapes of `expected`.

    The fused kernels do not check the state: a wrong batch size runs silently.
    """
    if isinstance(expected, tuple) != isinstance(state, tuple) or (
        isinstance(state, tuple) and len(state) != len(expected)
    ):
        want = f"a tuple of {len(expected)} tensors" if isinstance(expected, tuple) else "a tensor"
        raise ValueError(
            f"{layer_name}: argument `state` must be {want}, got {type(state).__name__}."
        )
    for got, want in zip(
        state if isinstance(state, tuple) else (state,),
        expected if isinstance(expected, tuple) else (expected,),
    ):
        if tuple(got.shape) != tuple(want.shape):
            raise ValueError(
                f"{layer_name}: argument `state` has shape {tuple(got.shape)}, "
                f"expected {tuple(want.shape)} (num_layers*num_directions, B, *state)."
            )


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of a time-major batch within its own length.

    x: (T, B, ...); padded steps stay where they are, so the reversed batch is still
    right-padded. The map is its own inverse.
    """
    if lengths is None:
        return x.flip(0)
    T, B = x.shape[:2]
    t = torch.arange(T, device=x.device).unsqueeze(1)  # (T, 1)
    L = lengths.to(x.device).unsqueeze(0)  # (1, B)
    idx = torch.where(t < L, L - 1 - t, t)  # (T, B)
    idx = idx.view(T, B, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, idx)


def check_lengths(lengths, batch_size: int, max_len: int) -> Tensor:
    """Validate per-sequence lengths: a 1-D integer tensor of B values in [1, T]."""
    if not isinstance(lengths, Tensor):
        lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1 or lengths.shape[0] != batch_size or lengths.is_floating_point():
        raise ValueError(
            f"Argument `lengths` must be a 1-D integer tensor of {batch_size} lengths (one per "
            f"sequence), got {lengths.dtype} of shape {tuple(lengths.shape)}."
        )
    lo, hi = int(lengths.min()), int(lengths.max())
    if lo < 1 or hi > max_len:
        bad = lengths[(lengths < 1) | (lengths > max_len)].tolist()
        raise ValueError(
            f"Argument `lengths` must lie in [1, {max_len}] (the input has {max_len} steps), "
            f"got {bad}."
        )
    return lengths.to(torch.int64).cpu()


def _to_time_major(
    input: Tensor | PackedSequence, lengths, batch_first: bool, layer_name: str
) -> tuple[Tensor, Tensor | None, bool]:
    """(B, T, ...) or (T, B, ...) or packed -> (T, B, ...), checked lengths, was_packed."""
    if isinstance(input, PackedSequence):
        if lengths is not None:
            raise ValueError(f"{layer_name}: pass `lengths` or a PackedSequence, not both.")
        x, lengths = pad_packed_sequence(input, batch_first=False)
        return x, lengths, True
    if not isinstance(input, Tensor) or input.dim() < 3:
        shape = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
        raise ValueError(
            f"{layer_name}: argument `input` must be (B, T, features...) with batch_first=True "
            f"or (T, B, features...) otherwise, got {shape}."
        )
    x = input.transpose(0, 1) if batch_first else input
    if lengths is not None:
        lengths = check_lengths(lengths, x.shape[1], x.shape[0])
        if int(lengths.min()) == x.shape[0]:
            lengths = None  # all full length: nothing to mask
    return x, lengths, False


def _from_time_major(
    out: Tensor, lengths: Tensor | None, batch_first: bool, packed: bool
) -> Tensor | PackedSequence:
    if packed:
        if lengths is None:
            lengths = torch.full((out.shape[1],), out.shape[0], dtype=torch.int64)
        return pack_padded_sequence(out, lengths, enforce_sorted=False)
    return out.transpose(0, 1) if batch_first else out


def _internals_to_batch(internals, batch_first: bool):
    if isinstance(internals, dict):
        return {k: _internals_to_batch(v, batch_first) for k, v in internals.items()}
    if isinstance(internals, list):
        return [_internals_to_batch(v, batch_first) for v in internals]
    return internals.transpose(0, 1) if batch_first else internals


def run_layer(layer: nn.Module, input, state, lengths, return_internals: bool):
    """The public forward of every layer: normalise the input, run the time-major core.

    (B, T, ...) or (T, B, ...) or packed -> layer.run on (T, B, ...) -> the same layout.
    """
    x, lengths, packed = _to_time_major(input, lengths, layer.batch_first, type(layer).__name__)
    out, state, internals = layer.run(x, lengths, state, return_internals=return_internals)
    out = _from_time_major(out, lengths, layer.batch_first, packed)
    if return_internals:
        return out, state, _internals_to_batch(internals, layer.batch_first)
    return out, state


# -- Recurrent: one cell over time ---------------------------------------------------------


class Recurrent(nn.Module):
    """Unroll one cell over the time axis.

    Args:
        cell: any rnnkit cell (or a module with the same contract).
        reverse: run from the last valid step to the first; each sequence is reversed
            within its own length, so padding never reaches the state.
        batch_first: input and output are (B, T, ...) if True, else (T, B, ...).
        initial_state: ``"zeros"``, or ``"learned"`` (a parameter per state tensor,
            shared over the batch). A state passed to ``forward`` overrides it.
        fused: None picks the fastest backend for the device (see :mod:`rnnkit.backends`);
            True requires torch's fused kernel (raises if the cell has none); False
            never uses it.

    ``forward(input, state=None, *, lengths=None, return_internals=False)``:

    * input: (B, T, *features) (batch_first) or a ``PackedSequence``.
    * state: (1, B, *state) or a tuple of them for the LSTM (torch's layout).
    * lengths: (B,) valid steps per sequence, 1 <= length <= T.

    Returns ``(output, final_state)``: output (B, T, H), zero at padded steps, and the
    state after each sequence's last *valid* step. With ``return_internals=True`` a
    third element holds the cell's per-step internals, each (B, T, ...).
    """

    num_directions = 1

    def __init__(
        self,
        cell: nn.Module,
        *,
        reverse: bool = False,
        batch_first: bool = True,
        initial_state: str = "zeros",
        fused: bool | None = None,
    ) -> None:
        super().__init__()
        if initial_state not in INITIAL_STATES:
            raise ValueError(
                f"Argument `initial_state` must be one of {INITIAL_STATES}, got {initial_state!r}."
            )
        if fused not in (None, True, False):
            raise ValueError(f"Argument `fused` must be None, True or False, got {fused!r}.")
        self.cell = cell
        self.reverse = reverse
        self.batch_first = batch_first
        self.fused_request = fused
        self.h0: nn.ParameterList | None = None
        if initial_state == "learned":
            self.h0 = nn.ParameterList(
                nn.Parameter(torch.zeros(1, *cell.state_shape()))  # (1, *state)
                for _ in range(cell.num_state_tensors)
            )
        if fused and self.not_fused_reason:
            raise ValueError(
                f"fused=True, but this layer cannot run fused: {self.not_fused_reason}"
            )

    # -- what the layer is ---------------------------------------------------------
    @property
    def input_size(self) -> int:
        return self.cell.input_size

    @property
    def hidden_size(self) -> int:
        return self.cell.hidden_size

    @property
    def output_size(self) -> int:
        return self.cell.output_size

    @property
    def fused_mode(self) -> str | None:
        return backends.cell_fused_mode(self.cell)

    @property
    def not_fused_reason(self) -> str | None:
        """Why this layer runs the explicit loop, or None if it runs the fused kernel."""
        return backends.cell_not_fused_reason(self.cell, self.fused_request)

    @property
    def fused(self) -> bool:
        return self.not_fused_reason is None

    def backend(self, device: torch.device | str = "cpu") -> str:
        """What runs this layer on `device`: one of ``rnnkit.backends.BACKENDS``."""
        return backends.choose_backend(self, device)

    def extra_repr(self) -> str:
        how = "fused" if self.fused else f"explicit: {self.not_fused_reason}"
        return f"reverse={self.reverse}, batch_first={self.batch_first}, {how}"

    # -- state ----------------------------------------------------------------------
    def initial_state(self, batch_size: int, x: Tensor) -> State:
        """The state before step 1, in layer layout (1, B, *state). x: (T, B, ...)."""
        spatial = tuple(x.shape[-2:]) if x.dim() == 5 else None  # conv cells: (T, B, C, H, W)
        shape = (1, batch_size, *self.cell.state_shape(spatial))
        if self.h0 is None:
            zeros = [x.new_zeros(shape) for _ in range(self.cell.num_state_tensors)]
            return zeros[0] if len(zeros) == 1 else tuple(zeros)
        learned = [p.unsqueeze(1).expand(shape) for p in self.h0]  # (1, B, *state)
        return learned[0] if len(learned) == 1 else tuple(learned)

    def _check_state(self, state: State, batch_size: int, x: Tensor) -> None:
        check_state(type(self).__name__, state, self.initial_state(batch_size, x))

    # -- running ----------------------------------------------------------------------
    def forward(
        self,
        input: Tensor | PackedSequence,
        state: State | None = None,
        *,
        lengths: Tensor | Sequence[int] | None = None,
        return_internals: bool = False,
    ):
        return run_layer(self, input, state, lengths, return_internals)

    def run(
        self,
        x: Tensor,
        lengths: Tensor | None,
        state: State | None,
        *,
        return_internals: bool = False,
    ) -> tuple[Tensor, State, dict | None]:
        """The time-major core: x (T, B, ...) -> output (T, B, H...), state (1, B, ...)."""
        T, B = x.shape[:2]
        if state is None:
            state = self.initial_state(B, x)
        else:
            self._check_state(state, B, x)
        per_step = return_internals or recording()
        if not per_step and backends.choose_backend(self, x.device) == BACKENDS[0]:
            return self._run_fused(x, lengths, state) + (None,)
        return self._run_explicit(x, lengths, state, return_internals)

    def step(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One time step with the explicit cell: x (B, I) -> output (B, H), state (1, B, ...).

        For generation, where each input depends on the previous output. It calls the
        cell directly: the fused kernels are slow for a single step (oneDNN setup costs
        more than the step itself).
        """
        if self.reverse:
            raise ValueError("A reverse layer cannot be stepped: it reads the sequence backwards.")
        if state is None:
            state = self.initial_state(x.shape[0], x.unsqueeze(0))
        else:
            check_state(type(self).__name__, state, self.initial_state(x.shape[0], x.unsqueeze(0)))
        state = self.cell(x, map_state(lambda s: s.squeeze(0), state))
        h = self.cell.output(state)
        record = _RECORDING.get()
        if record is not None:
            record.add(self, h, None)
        return h, map_state(lambda s: s.unsqueeze(0), state)

    def _run_fused(self, x: Tensor, lengths: Tensor | None, state: State) -> tuple[Tensor, State]:
        """torch's kernel on this cell's parameters: x (T, B, I) -> (T, B, H), (1, B, H)."""
        if self.reverse:
            x = reverse_padded(x, lengths)
        out, state = backends.fused_forward(self, x, lengths, state)
        if self.reverse:
            out = reverse_padded(out, lengths)
        return out, state

    def _run_explicit(
        self, x: Tensor, lengths: Tensor | None, state: State, return_internals: bool
    ) -> tuple[Tensor, State, dict | None]:
        cell = self.cell
        T, B = x.shape[:2]
        if self.reverse:
            x = reverse_padded(x, lengths)
        state = map_state(lambda s: s.squeeze(0), state)  # (B, *state)
        record = _RECORDING.get()
        if not return_internals and record is None and sequence_kernel(cell) is not None:
            # The dense cells: the whole sequence as one autograd node with a hand-written
            # backward and one product per weight gradient (rnnkit.sequence), not one per step.
            out, state = run_sequence(cell, x, state, lengths)  # (T, B, H)
            if self.reverse:
                out = reverse_padded(out, lengths)
            return out, map_state(lambda s: s.unsqueeze(0), state), None
        steps = T if lengths is None else int(lengths.max())
        # Hoisted out of the loop: the input half of every step in one product.
        xp = cell.project_input(x[:steps])  # (steps, B, G*H, ...)
        masks = None
        if lengths is not None:
            valid = torch.arange(steps).unsqueeze(1) < lengths.unsqueeze(0)  # (steps, B)
            bshape = (B,) + (1,) * (xp.dim() - 2)
            masks = [m.view(bshape) for m in valid.to(x.device).unbind(0)]
        outputs, records = [], []
        # unbind, not xp[t]: indexing in the loop makes the backward pass quadratic in T.
        for t, xp_t in enumerate(xp.unbind(0)):
            new = cell.recur(xp_t, state, return_internals=return_internals)
            if return_internals:
                new, step_internals = new
                records.append(step_internals)
            h = cell.output(new)
            if record is not None:  # the tensor the next step reads: dL/dh_t is total
                record.add(self, h, None if lengths is None else valid[t].to(x.device))
            if masks is not None:  # padded steps neither change the state nor output
                m = masks[t]
                state = zip_state(lambda n, o, m=m: torch.where(m, n, o), new, state)
                h = h * m
                if return_internals:  # zero at padded steps, like the output
                    records[-1] = {k: v * m for k, v in records[-1].items()}
            else:
                state = new
            outputs.append(h)
        out = torch.stack(outputs)  # (steps, B, H, ...)
        if steps < T:
            out = torch.cat([out, out.new_zeros(T - steps, *out.shape[1:])])
        internals = None
        if return_internals:
            internals = {k: torch.stack([r[k] for r in records]) for k in records[0]}
            if steps < T:
                internals = {
                    k: torch.cat([v, v.new_zeros(T - steps, *v.shape[1:])])
                    for k, v in internals.items()
                }
        if self.reverse:
            out = reverse_padded(out, lengths)
            if internals is not None:
                internals = {k: reverse_padded(v, lengths) for k, v in internals.items()}
        return out, map_state(lambda s: s.unsqueeze(0), state), internals


# -- Bidirectional: a forward and a backward layer -------------------------------------------


def merge_directions(fwd: Tensor, bwd: Tensor, merge: str) -> Tensor:
    """Combine the two directions' outputs along the feature axis (dim 2 of (T, B, F...))."""
    if merge == "concat":
        return torch.cat([fwd, bwd], 2)
    if merge == "sum":
        return fwd + bwd
    return (fwd + bwd) / 2


class Bidirectional(nn.Module):
    """Run a forward and a backward layer over the same input and merge their outputs.

    Args:
        forward_layer: a :class:`Recurrent` with ``reverse=False``.
        backward_layer: a :class:`Recurrent` with ``reverse=True``.
        merge: ``"concat"`` (output 2H), ``"sum"`` or ``"mean"`` (output H).

    The state is (2, B, ...): forward direction first, as in torch.nn. With lengths,
    the backward layer starts at each sequence's own last valid step.
    """

    num_directions = 2

    def __init__(
        self,
        forward_layer: Recurrent,
        backward_layer: Recurrent,
        *,
        merge: str = "concat",
        batch_first: bool = True,
    ) -> None:
        super().__init__()
        if merge not in MERGE_MODES:
            raise ValueError(f"Argument `merge` must be one of {MERGE_MODES}, got {merge!r}.")
        if forward_layer.reverse:
            raise ValueError("Argument `forward_layer` must have reverse=False.")
        if not backward_layer.reverse:
            raise ValueError("Argument `backward_layer` must have reverse=True.")
        if forward_layer.input_size != backward_layer.input_size:
            raise ValueError(
                f"The two directions must read the same input_size, got "
                f"{forward_layer.input_size} and {backward_layer.input_size}."
            )
        if merge != "concat" and forward_layer.output_size != backward_layer.output_size:
            raise ValueError(f"merge={merge!r} needs equal output sizes in both directions.")
        self.forward_layer = forward_layer
        self.backward_layer = backward_layer
        self.merge = merge
        self.batch_first = batch_first

    @property
    def input_size(self) -> int:
        return self.forward_layer.input_size

    @property
    def hidden_size(self) -> int:
        return self.forward_layer.hidden_size

    @property
    def output_size(self) -> int:
        f, b = self.forward_layer.output_size, self.backward_layer.output_size
        return f + b if self.merge == "concat" else f

    @property
    def fused_mode(self) -> str | None:
        return self.forward_layer.fused_mode

    @property
    def not_fused_reason(self) -> str | None:
        return backends.bidirectional_not_fused_reason(self.forward_layer, self.backward_layer)

    @property
    def fused(self) -> bool:
        return self.not_fused_reason is None

    @property
    def fused_request(self) -> bool | None:
        return backends.combine_fused_requests(
            [self.forward_layer.fused_request, self.backward_layer.fused_request]
        )

    def backend(self, device: torch.device | str = "cpu") -> str:
        """What runs this layer on `device`: one of ``rnnkit.backends.BACKENDS``."""
        return backends.choose_backend(self, device)

    def extra_repr(self) -> str:
        how = "fused" if self.fused else f"explicit: {self.not_fused_reason}"
        return f"merge={self.merge!r}, {how}"

    def initial_state(self, batch_size: int, x: Tensor) -> State:
        return cat_states(
            [
                self.forward_layer.initial_state(batch_size, x),
                self.backward_layer.initial_state(batch_size, x),
            ]
        )

    def forward(
        self,
        input: Tensor | PackedSequence,
        state: State | None = None,
        *,
        lengths: Tensor | Sequence[int] | None = None,
        return_internals: bool = False,
    ):
        return run_layer(self, input, state, lengths, return_internals)

    def run(self, x, lengths, state, *, return_internals=False):
        """Time-major core: x (T, B, ...) -> output (T, B, F), state (2, B, ...)."""
        B = x.shape[1]
        if state is None:
            state = self.initial_state(B, x)
        else:
            check_state(type(self).__name__, state, self.initial_state(B, x))
        per_step = return_internals or recording()
        if not per_step and backends.choose_backend(self, x.device) == BACKENDS[0]:
            # Both directions in one kernel call: out (T, B, 2H), forward half first.
            out, state = backends.fused_forward(self, x, lengths, state)
            if self.merge != "concat":
                H = self.forward_layer.output_size
                out = merge_directions(out[:, :, :H], out[:, :, H:], self.merge)
            return out, state, None
        f_state = map_state(lambda s: s[0:1], state)
        b_state = map_state(lambda s: s[1:2], state)
        f_out, f_state, f_int = self.forward_layer.run(
            x, lengths, f_state, return_internals=return_internals
        )
        b_out, b_state, b_int = self.backward_layer.run(
            x, lengths, b_state, return_internals=return_internals
        )
        out = merge_directions(f_out, b_out, self.merge)
        internals = {"forward": f_int, "backward": b_int} if return_internals else None
        return out, cat_states([f_state, b_state]), internals


# -- Stack: layers in depth ----------------------------------------------------------------


class Stack(nn.Module):
    """Layers in depth (a deep RNN), each reading the outputs of the one below.

    Args:
        layers: :class:`Recurrent` or :class:`Bidirectional` layers, bottom first.
        dropout: dropout on the outputs of every layer but the last, while training.
        batch_first: input and output are (B, T, ...) if True.

    The state is (sum of the layers' directions, B, ...): layer 0's directions first,
    exactly torch.nn's ``h_n`` layout. When every layer is fusable with the same cell
    type and size (and bidirectional layers concatenate), the whole stack is one call
    of the fused kernel.
    """

    def __init__(
        self, layers: Sequence[nn.Module], *, dropout: float = 0.0, batch_first: bool = True
    ) -> None:
        super().__init__()
        if len(layers) == 0:
            raise ValueError("Argument `layers` must hold at least one layer, got none.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"Argument `dropout` must lie in [0, 1), got {dropout!r}.")
        for i in range(1, len(layers)):
            below, above = layers[i - 1].output_size, layers[i].input_size
            if below != above:
                raise ValueError(
                    f"Argument `layers`: layer {i} reads input_size={above}, but layer "
                    f"{i - 1} outputs {below}."
                )
        self.layers = nn.ModuleList(layers)
        self.dropout = dropout
        self.batch_first = batch_first

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_directions(self) -> int:
        return self.layers[0].num_directions

    @property
    def input_size(self) -> int:
        return self.layers[0].input_size

    @property
    def hidden_size(self) -> int:
        return self.layers[0].hidden_size

    @property
    def output_size(self) -> int:
        return self.layers[-1].output_size

    @property
    def not_fused_reason(self) -> str | None:
        """None when every layer runs a fused kernel (in one call or layer by layer)."""
        return backends.stack_not_fused_reason(self.layers)

    @property
    def fused(self) -> bool:
        return self.not_fused_reason is None

    @property
    def fused_mode(self) -> str | None:
        return self.layers[0].fused_mode

    @property
    def fused_request(self) -> bool | None:
        return backends.combine_fused_requests(layer.fused_request for layer in self.layers)

    def backend(self, device: torch.device | str = "cpu") -> str:
        """What runs this stack on `device`: one of ``rnnkit.backends.BACKENDS``.

        A stack whose layers differ reports the slowest of them.
        """
        return backends.stack_backend(self, device)

    @property
    def single_call(self) -> bool:
        """Whether the whole stack runs as one call of the fused kernel, as torch.nn does."""
        return self.fused and self.torch_equivalent_reason() is None

    def torch_equivalent_reason(self) -> str | None:
        """Why no single torch.nn.RNN/LSTM/GRU computes this stack, or None if one does.

        Unlike :attr:`not_fused_reason` this ignores ``fused=False``: a stack forced onto
        the explicit path still has a torch.nn twin for :meth:`to_torch`.
        """
        return backends.torch_equivalent_reason(self)

    def extra_repr(self) -> str:
        if self.single_call:
            how = (
                f"fused: one {self.layers[0].fused_mode} kernel call for {self.num_layers} layer(s)"
            )
        elif self.fused:
            how = "fused, layer by layer"
        else:
            how = f"explicit: {self.not_fused_reason}"
        return f"dropout={self.dropout}, batch_first={self.batch_first}, {how}"

    def initial_state(self, batch_size: int, x: Tensor) -> State:
        return cat_states([layer.initial_state(batch_size, x) for layer in self.layers])

    def forward(
        self,
        input: Tensor | PackedSequence,
        state: State | None = None,
        *,
        lengths: Tensor | Sequence[int] | None = None,
        return_internals: bool = False,
    ):
        """input (B, T, I) -> output (B, T, output_size), state (L*D, B, H[, ...]).

        With ``return_internals=True`` also a list with each layer's internals.
        """
        return run_layer(self, input, state, lengths, return_internals)

    def run(self, x, lengths, state, *, return_internals=False):
        """Time-major core: x (T, B, I) -> output (T, B, output_size), state (L*D, B, ...)."""
        B = x.shape[1]
        slots = [layer.num_directions for layer in self.layers]
        if state is None:
            state = self.initial_state(B, x)
        else:
            check_state(type(self).__name__, state, self.initial_state(B, x))
        if (
            self.single_call
            and not (return_internals or recording())
            and backends.choose_backend(self, x.device) == BACKENDS[0]
        ):
            # Every layer in one kernel call, as torch.nn does: (T, B, D*H), (L*D, B, H).
            out, state = backends.fused_forward(self, x, lengths, state, dropout=self.dropout)
            return out, state, None
        finals, internals, start = [], [], 0
        for i, layer in enumerate(self.layers):
            layer_state = map_state(lambda s, a=start, d=slots[i]: s[a : a + d], state)
            start += slots[i]
            x, layer_state, layer_int = layer.run(
                x, lengths, layer_state, return_internals=return_internals
            )
            finals.append(layer_state)
            internals.append(layer_int)
            if self.dropout and self.training and i < len(self.layers) - 1:
                x = nn.functional.dropout(x, self.dropout, training=True)
        return x, cat_states(finals), internals if return_internals else None

    def step(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One time step through every layer: x (B, I) -> output (B, H), state (L, B, ...).

        Only forward (unidirectional) stacks can be stepped. Dropout between layers
        applies in training mode, as in :meth:`forward`.
        """
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Recurrent) or layer.reverse:
                raise ValueError(
                    f"Layer {i} is {type(layer).__name__}"
                    f"{' (reverse)' if isinstance(layer, Recurrent) else ''}: only a stack of "
                    f"forward layers can be stepped one step at a time."
                )
        if state is None:
            state = self.initial_state(x.shape[0], x.unsqueeze(0))
        else:
            check_state(type(self).__name__, state, self.initial_state(x.shape[0], x.unsqueeze(0)))
        finals = []
        for i, layer in enumerate(self.layers):
            x, layer_state = layer.step(x, map_state(lambda s, i=i: s[i : i + 1], state))
            finals.append(layer_state)
            if self.dropout and self.training and i < len(self.layers) - 1:
                x = nn.functional.dropout(x, self.dropout, training=True)
        return x, cat_states(finals)

    # -- weights to and from torch.nn ------------------------------------------------------
    def torch_parameter_names(self) -> dict[str, Tensor]:
        """Our parameters under torch.nn's names (weight_ih_l0, bias_hh_l1_reverse, ...)."""
        return backends.torch_parameter_names(self)

    def load_torch_weights(self, module: nn.RNNBase) -> Stack:
        """Copy the weights of a torch.nn.RNN/LSTM/GRU of the same shape into this stack."""
        return backends.load_torch_weights(self, module)

    def to_torch(self) -> nn.RNNBase:
        """A torch.nn.RNN/LSTM/GRU with a copy of these weights (torch-shaped stacks only)."""
        return backends.to_torch(self)


# -- torch.nn-style constructors -----------------------------------------------------------


class _TorchStyleStack(Stack):
    """What RNN, LSTM and GRU share: `num_layers` layers of one cell, built as torch.nn does.

    ``make_cell(size)`` builds one direction's cell reading `size` features: layer 0
    reads `input_size`, every layer above the output of the one below (2H when
    bidirectional and concatenated). ``init`` (a scheme of :mod:`rnnkit.init`) is
    applied after all layers are built.
    """

    def __init__(
        self,
        make_cell: Callable[[int], nn.Module],
        input_size: int,
        num_layers: int,
        *,
        batch_first: bool,
        dropout: float,
        bidirectional: bool,
        merge: str,
        initial_state: str,
        init: str | dict | None,
        fused: bool | None,
    ) -> None:
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(
                f"Argument `num_layers` must be a positive integer, got {num_layers!r}."
            )
        if merge not in MERGE_MODES:
            raise ValueError(f"Argument `merge` must be one of {MERGE_MODES}, got {merge!r}.")

        def direction(size: int, reverse: bool) -> Recurrent:
            return Recurrent(
                make_cell(size),
                reverse=reverse,
                batch_first=batch_first,
                initial_state=initial_state,
                fused=fused,
            )

        layers, size = [], input_size
        for _ in range(num_layers):
            if bidirectional:
                layer = Bidirectional(
                    direction(size, False),
                    direction(size, True),
                    merge=merge,
                    batch_first=batch_first,
                )
            else:
                layer = direction(size, False)
            layers.append(layer)
            size = layer.output_size
        super().__init__(layers, dropout=dropout, batch_first=batch_first)
        if init is not None:
            initialize(self, init)


class RNN(_TorchStyleStack):
    """A stack of vanilla RNN layers, built like ``torch.nn.RNN`` (but batch_first=True).

    Args mirror torch.nn.RNN: ``input_size, hidden_size, num_layers=1, *, nonlinearity,
    bias, batch_first, dropout, bidirectional``; plus ``merge`` (how bidirectional
    outputs combine), ``initial_state`` ("zeros" or "learned"), ``init`` (a scheme of
    :mod:`rnnkit.init`, e.g. "irnn") and ``fused`` (see :class:`Recurrent`).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        merge: str = "concat",
        initial_state: str = "zeros",
        init: str | dict | None = None,
        fused: bool | None = None,
    ) -> None:
        def make_cell(size: int) -> RNNCell:
            return RNNCell(size, hidden_size, nonlinearity=nonlinearity, bias=bias)

        super().__init__(
            make_cell,
            input_size,
            num_layers,
            batch_first=batch_first,
            dropout=dropout,
            bidirectional=bidirectional,
            merge=merge,
            initial_state=initial_state,
            init=init,
            fused=fused,
        )


class LSTM(_TorchStyleStack):
    """A stack of LSTM layers, built like ``torch.nn.LSTM`` (but batch_first=True).

    As :class:`RNN`, with ``forget_bias`` (default 1.0) in place of ``nonlinearity``.
    The state is ``(h, c)``, each (num_layers * num_directions, B, H).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        merge: str = "concat",
        forget_bias: float = 1.0,
        initial_state: str = "zeros",
        init: str | dict | None = None,
        fused: bool | None = None,
    ) -> None:
        def make_cell(size: int) -> LSTMCell:
            return LSTMCell(size, hidden_size, bias=bias, forget_bias=forget_bias)

        super().__init__(
            make_cell,
            input_size,
            num_layers,
            batch_first=batch_first,
            dropout=dropout,
            bidirectional=bidirectional,
            merge=merge,
            initial_state=initial_state,
            init=init,
            fused=fused,
        )


class GRU(_TorchStyleStack):
    """A stack of GRU layers, built like ``torch.nn.GRU`` (but batch_first=True).

    As :class:`RNN`, with ``reset`` ("after", torch's form, fused; or "before", the
    lecture's form, explicit) in place of ``nonlinearity``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        merge: str = "concat",
        reset: str = "after",
        initial_state: str = "zeros",
        init: str | dict | None = None,
        fused: bool | None = None,
    ) -> None:
        def make_cell(size: int) -> GRUCell:
            return GRUCell(size, hidden_size, bias=bias, reset=reset)

        super().__init__(
            make_cell,
            input_size,
            num_layers,
            batch_first=batch_first,
            dropout=dropout,
            bidirectional=bidirectional,
            merge=merge,
            initial_state=initial_state,
            init=init,
            fused=fused,
        )


STACKS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}  # a cell's name -> its torch-style stack
