"""Which backend runs a layer, and why; and the same weights under torch.nn's names.

``layer.backend(device)`` names one of :data:`BACKENDS`:

* *torch fused kernel*: where a configuration is exactly what ``torch.nn.RNN``,
  ``LSTM`` or ``GRU`` computes, the layer hands its *own parameters* to the kernel
  those modules call (oneDNN on CPU for the LSTM, cuDNN on GPU), variable lengths
  included (through packing). A ``Stack`` of one cell type and size is one kernel
  call for all its layers, as ``torch.nn.LSTM`` is.
* *rnnkit sequence kernel* (:mod:`rnnkit.sequence`): for the dense cells, the whole
  sequence as one autograd node with backpropagation through time written out. It
  serves ``GRUCell(reset="before")`` and ``fused=False``, and on the CPU the GRU and
  vanilla RNN by default: torch fuses only the LSTM there, and this kernel trains the
  other two faster than torch's per-step CPU loop.
* *per-step cell loop*: any other cell (convolutional, custom), and every layer asked
  for ``return_internals=True``.

``fused=True`` insists on torch's kernel (the layer raises where it cannot run),
``fused=False`` never uses it, and ``layer.not_fused_reason`` says why it cannot run.

The functions here read a layer through its attributes, so this module needs no layer
class: a *layer* is a ``Recurrent`` (``.cell``) or a ``Bidirectional``
(``.forward_layer``, ``.backward_layer``); a *stack* has ``.layers``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import torch
from torch import _VF, Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .cells import GRUCell, LSTMCell, RNNCell, State, check_input_size
from .sequence import sequence_kernel

BACKENDS = ("torch fused kernel", "rnnkit sequence kernel", "per-step cell loop")

# torch.nn's fused kernels, by the cells' ``fused_mode``.
_KERNELS = {"LSTM": _VF.lstm, "GRU": _VF.gru, "RNN_TANH": _VF.rnn_tanh, "RNN_RELU": _VF.rnn_relu}

# On the CPU torch fuses only the LSTM (oneDNN); its GRU and vanilla RNN run a generic
# per-step loop, which rnnkit's whole-sequence kernels (rnnkit.sequence) beat in training
# (benchmarks/bench_layers.py: 1.04-1.29x) and match in inference. So with fused=None
# those two run rnnkit's kernel on the CPU and torch's (cuDNN) on the GPU.
CPU_SEQUENCE_FASTER = frozenset({"GRU", "RNN_TANH", "RNN_RELU"})


# -- cells and their parameters ---------------------------------------------------------


def is_plain_cell(cell: nn.Module) -> bool:
    """Whether `cell` is exactly an rnnkit RNNCell, LSTMCell or GRUCell (no subclass)."""
    return type(cell) in (RNNCell, LSTMCell, GRUCell)


def cell_fused_mode(cell: nn.Module) -> str | None:
    """The torch.nn kernel ("LSTM", "GRU", "RNN_TANH", "RNN_RELU") that computes `cell`, or None."""
    return getattr(cell, "fused_mode", None) if is_plain_cell(cell) else None


def layer_cells(layer: nn.Module) -> list[nn.Module]:
    """The cells of a layer in torch's order.

    [cell] of a Recurrent, [forward cell, backward cell] of a Bidirectional, and for a
    stack every layer's cells, bottom layer first.
    """
    if hasattr(layer, "layers"):  # a stack
        return [c for sub in layer.layers for c in layer_cells(sub)]
    if hasattr(layer, "forward_layer"):  # a Bidirectional
        return [layer.forward_layer.cell, layer.backward_layer.cell]
    return [layer.cell]


def cell_weights(cell: nn.Module) -> list[Tensor]:
    """One cell's parameters in torch's order: w_ih, w_hh[, b_ih, b_hh]."""
    ws = [cell.weight_ih, cell.weight_hh]
    return ws + [cell.bias_ih, cell.bias_hh] if cell.bias else ws


# -- why a layer runs fused or not --------------------------------------------------------


def cell_not_fused_reason(cell: nn.Module, fused_request: bool | None) -> str | None:
    """Why a one-direction layer of `cell` cannot run torch's kernel, or None if it can."""
    if fused_request is False:
        return "fused=False was requested"
    if not is_plain_cell(cell):
        return getattr(cell, "not_fused_reason", None) or (
            f"{type(cell).__name__} is not an rnnkit RNNCell, LSTMCell or GRUCell"
        )
    return cell.not_fused_reason


def bidirectional_not_fused_reason(
    forward_layer: nn.Module, backward_layer: nn.Module
) -> str | None:
    """Why two directions cannot run as one bidirectional kernel call, or None.

    Both must be fusable on their own, with the same cell type, hidden_size and bias.
    """
    for name, layer in (("forward", forward_layer), ("backward", backward_layer)):
        if layer.not_fused_reason:
            return f"{name} direction: {layer.not_fused_reason}"
    f, b = forward_layer.cell, backward_layer.cell
    if f.fused_mode != b.fused_mode or f.hidden_size != b.hidden_size or f.bias != b.bias:
        return "the two directions differ in cell type, hidden_size or bias"
    return None


def stack_not_fused_reason(layers: Iterable[nn.Module]) -> str | None:
    """None when every layer runs a fused kernel (in one call or layer by layer)."""
    for i, layer in enumerate(layers):
        if layer.not_fused_reason:
            return f"layer {i}: {layer.not_fused_reason}"
    return None


def combine_fused_requests(requests: Iterable[bool | None]) -> bool | None:
    """The ``fused`` request of several layers: True if any insists, else False if any refuses."""
    requests = set(requests)
    return True if True in requests else False if False in requests else None


# -- which backend runs -------------------------------------------------------------------


def choose_backend(layer: nn.Module, device: torch.device | str) -> str:
    """Which of BACKENDS a layer (or a stack run as one call) runs on `device`.

    Without ``return_internals``: torch's kernel where the layer is fused, except on the
    CPU for the kernels in ``CPU_SEQUENCE_FASTER`` unless ``fused=True`` was asked for;
    otherwise rnnkit's sequence kernel if every cell has one; otherwise the cell loop.
    """
    device = torch.device(device)
    if layer.fused:
        wants_torch = getattr(layer, "fused_request", None) is True
        if wants_torch or device.type != "cpu" or layer.fused_mode not in CPU_SEQUENCE_FASTER:
            return BACKENDS[0]
    if all(sequence_kernel(c) is not None for c in layer_cells(layer)):
        return BACKENDS[1]
    return BACKENDS[2]


def stack_backend(stack: nn.Module, device: torch.device | str) -> str:
    """What runs a stack on `device`: the slowest of its layers' backends."""
    return max((choose_backend(layer, device) for layer in stack.layers), key=BACKENDS.index)


# -- running torch's kernel on our parameters --------------------------------------------


def fused_forward(
    layer: nn.Module,
    x: Tensor,
    lengths: Tensor | None,
    hx: State,
    *,
    dropout: float = 0.0,
) -> tuple[Tensor, State]:
    """Run torch.nn's fused kernel on a layer's own parameters.

    `layer` is a fused Recurrent or Bidirectional, or a stack that one torch.nn module
    computes (``Stack.single_call``): then one call runs all its layers.

    x: (T, B, I), hx: (L*D, B, H) (a tuple (h, c) for the LSTM) -> output (T, B, D*H)
    and the final state (L*D, B, H). The kernel gets torch's flat weight list: per layer
    and direction w_ih, w_hh[, b_ih, b_hh]. `dropout` applies between layers while
    training, as in torch.nn. Variable lengths go through packing, as torch.nn.LSTM does
    with a PackedSequence.
    """
    cells = layer_cells(layer)
    # The kernels do not check the input's feature size.
    check_input_size(type(cells[0]).__name__, x, cells[0].input_size)
    if _cpu_bf16_without_hardware(x):
        # oneDNN's LSTM/GRU primitive has no bfloat16 path on a CPU without AVX512-BF16 or
        # AMX ("could not create a primitive descriptor"): there the recurrence runs in
        # float32 and the rest of the model stays under bfloat16 autocast.
        with torch.autocast("cpu", enabled=False):
            hx = tuple(h.float() for h in hx) if isinstance(hx, tuple) else hx.float()
            return fused_forward(layer, x.float(), lengths, hx, dropout=dropout)
    mode = layer.fused_mode
    kernel = _KERNELS[mode]
    weights = [w for c in cells for w in cell_weights(c)]
    has_bias = cells[0].bias
    num_directions = layer.num_directions
    num_layers = len(cells) // num_directions
    bidirectional = num_directions == 2
    if lengths is None:
        out = kernel(
            x, hx, weights, has_bias, num_layers, dropout, layer.training, bidirectional, False
        )
        return out[0], (out[1], out[2]) if mode == "LSTM" else out[1]
    T = x.shape[0]
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    order, unorder = packed.sorted_indices.to(x.device), packed.unsorted_indices.to(x.device)
    hx = _select_batch(hx, order)
    out = kernel(
        packed.data,
        packed.batch_sizes,
        hx,
        weights,
        has_bias,
        num_layers,
        dropout,
        layer.training,
        bidirectional,
    )
    output = PackedSequence(
        out[0], packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices
    )
    output, _ = pad_packed_sequence(output, total_length=T)
    h_n = (out[1], out[2]) if mode == "LSTM" else out[1]
    return output, _select_batch(h_n, unorder)


def _select_batch(state: State, index: Tensor) -> State:
    """The sequences `index` of a state: (N, B, H) -> (N, len(index), H), per tensor."""
    if isinstance(state, tuple):
        return tuple(s.index_select(1, index) for s in state)
    return state.index_select(1, index)


# -- the same weights under torch.nn's names ---------------------------------------------


def torch_equivalent_reason(stack: nn.Module) -> str | None:
    """Why no single torch.nn.RNN/LSTM/GRU computes `stack`, or None if one does.

    Unlike ``not_fused_reason`` this ignores ``fused=False``: a stack forced onto the
    explicit path still has a torch.nn twin for :func:`to_torch`.
    """
    first = stack.layers[0]
    bias = layer_cells(first)[0].bias
    for i, layer in enumerate(stack.layers):
        cells = layer_cells(layer)
        if not all(is_plain_cell(c) and c.fused_mode for c in cells):
            reason = next(
                c.not_fused_reason or f"{type(c).__name__} has no torch.nn kernel"
                for c in cells
                if not (is_plain_cell(c) and c.fused_mode)
            )
            return f"layer {i}: {reason}"
        if type(layer) is not type(first) or any(
            c.fused_mode != cells[0].fused_mode or c.fused_mode != first.fused_mode for c in cells
        ):
            return f"layer {i} differs from layer 0 in cell type or direction"
        if layer.hidden_size != first.hidden_size or any(c.bias != bias for c in cells):
            return f"layer {i} differs from layer 0 in hidden_size or bias"
        if getattr(layer, "reverse", False):
            return f"layer {i} runs reversed on its own (torch.nn has no such layer)"
        if getattr(layer, "merge", "concat") != "concat":
            return f"layer {i} merges directions by {layer.merge!r} (torch.nn concatenates)"
    return None


def torch_parameter_names(stack: nn.Module) -> dict[str, Tensor]:
    """A stack's parameters under torch.nn's names (weight_ih_l0, bias_hh_l1_reverse, ...)."""
    names = {}
    for i, layer in enumerate(stack.layers):
        for d, cell in enumerate(layer_cells(layer)):
            suffix = f"_l{i}" + ("_reverse" if d == 1 else "")
            for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                if getattr(cell, w) is not None:
                    names[w + suffix] = getattr(cell, w)
    return names


@torch.no_grad()
def load_torch_weights(stack: nn.Module, module: nn.RNNBase) -> nn.Module:
    """Copy the weights of a torch.nn.RNN/LSTM/GRU of the same shape into `stack`."""
    ours = torch_parameter_names(stack)
    theirs = dict(module.named_parameters())
    if set(ours) != set(theirs):
        raise ValueError(
            f"Argument `module` has parameters {sorted(theirs)}, this stack {sorted(ours)}."
        )
    for name, p in ours.items():
        if p.shape != theirs[name].shape:
            raise ValueError(
                f"Argument `module`: {name} has shape {tuple(theirs[name].shape)}, "
                f"expected {tuple(p.shape)}."
            )
        p.copy_(theirs[name])
    return stack


@torch.no_grad()
def to_torch(stack: nn.Module) -> nn.RNNBase:
    """A torch.nn.RNN/LSTM/GRU with a copy of `stack`'s weights (torch-shaped stacks only)."""
    reason = torch_equivalent_reason(stack)
    if reason:
        raise ValueError(f"This stack has no torch.nn equivalent: {reason}.")
    mode = stack.layers[0].fused_mode
    cls = {"LSTM": nn.LSTM, "GRU": nn.GRU}.get(mode, nn.RNN)
    kwargs = {"nonlinearity": "tanh" if mode == "RNN_TANH" else "relu"} if cls is nn.RNN else {}
    cell0 = layer_cells(stack.layers[0])[0]
    module = cls(
        stack.input_size,
        stack.hidden_size,
        stack.num_layers,
        bias=cell0.bias,
        batch_first=stack.batch_first,
        dropout=stack.dropout,
        bidirectional=stack.num_directions == 2,
        **kwargs,
    ).to(device=cell0.weight_hh.device, dtype=cell0.weight_hh.dtype)
    for name, p in torch_parameter_names(stack).items():
        getattr(module, name).copy_(p)
    return module


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes in bfloat16 natively (not emulated in float32)."""
    if device.type == "cpu":
        return _cpu_has_bf16()
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


@functools.cache
def _cpu_has_bf16() -> bool:
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def _cpu_bf16_without_hardware(x: Tensor) -> bool:
    """Whether `x` is about to enter a CPU kernel under bfloat16 autocast on a CPU that
    has no bfloat16 instructions."""
    return (
        x.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
        and not _cpu_has_bf16()
    )
