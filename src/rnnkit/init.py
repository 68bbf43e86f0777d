r"""Initialisation schemes for recurrent cells, applied per gate block.

A cell's ``weight_ih`` (G*H, I) and ``weight_hh`` (G*H, H) stack G gate blocks of H
rows each (convolutional cells: (G*C, C_in, k, k) and (G*C, C, k, k)). Every scheme
below is applied to each block ``W[g*H:(g+1)*H]`` on its own, so "orthogonal" makes
each gate's recurrent matrix orthogonal (not the stacked (4H, H) matrix), and the
variances are those of one gate's matrix. For a convolutional block the formulas use
torch's convolution fan convention: ``fan_in = C_in*k*k``, ``fan_out = H*k*k``; for a
dense block ``fan_in`` is its number of columns and ``fan_out = H``. Below, ``a`` is
the ``gain``.

=============  ==========================================================================
scheme         each gate block
=============  ==========================================================================
"uniform"      torch's default :math:`U(-b, b)`, :math:`b = a/\sqrt{n_{hh}}`, with
               :math:`n_{hh}` the fan-in of ``weight_hh`` (H dense, H*k*k conv),
               i.e. :math:`\mathrm{Var} = a^2 / (3 n_{hh})` (the cells' ``reset_parameters``).
"xavier"       Glorot: :math:`U(-b, b)`, :math:`b = a\sqrt{6/(n_{in}+n_{out})}`, i.e.
               :math:`\mathrm{Var} = a^2 \cdot 2/(n_{in}+n_{out})`.
"lecun"        LeCun ("1/n"): :math:`N(0, \sigma^2)`, :math:`\sigma^2 = a^2 / n_{in}`.
"orthogonal"   a (semi-)orthogonal matrix times a (flattened to (H, n_in) for conv):
               :math:`W W^T = a^2 I` when H <= n_in, else :math:`W^T W = a^2 I`
               (``torch.nn.init.orthogonal_``); entries have variance
               :math:`a^2/\max(H, n_{in})`.
"identity"     :math:`a I` (the IRNN of Le et al. 2015); for a conv block the Dirac
               kernel times a (``torch.nn.init.dirac_``), so ``W * h = a h``. Needs square
               blocks (H == I, or C == C_in for conv); otherwise ValueError.
"normal"       the small Gaussian of Le et al. 2015: :math:`N(0, (0.001 a)^2)`.
"zeros"        0.
=============  ==========================================================================

A scheme may also be a callable ``fn(block)`` that fills one block (a view of the
parameter, dense (H, I) or conv (H, C_in, k, k)) in place.

Biases: both ``bias_ih`` and ``bias_hh`` are set to ``bias`` (a float, or ``"uniform"``
for torch's :math:`U(-b, b)` as above with a = 1), then for LSTM cells the forget-gate
bias is *added* to the forget block (block 1; order i, f, g, o) of ``bias_ih`` only,
so the effective forget bias ``b_ih + b_hh`` is ``2*bias + forget_bias`` for a float
``bias``. Cells created with ``bias=False`` keep no biases and ignore both arguments.

Examples::

    init_cell(lstm)                                        # xavier ih, orthogonal hh
    init_cell(rnn, weight_hh="identity", gain={"weight_hh": 0.5})  # W_hh = 0.5 I
    init_cell(rnn, weight_hh="orthogonal", gain={"weight_hh": 1.5})  # 1.5 * orthogonal
    initialize(model, "irnn")                              # every cell in the model
    initialize(model.layers[0], "torch")                   # one layer only
    initialize(model, {"weight_hh": "orthogonal", "forget_bias": 2.0})
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from numbers import Real

import torch
from torch import Tensor, nn

__all__ = ["SCHEMES", "PRESETS", "init_cell", "initialize", "is_cell"]

SCHEMES = ("uniform", "xavier", "lecun", "orthogonal", "identity", "normal", "zeros")
"""Names of the per-matrix schemes accepted for ``weight_ih`` and ``weight_hh``."""

BIAS_SCHEMES = ("uniform",)
"""Non-float values accepted for ``bias``."""

IRNN_INPUT_STD = 0.001
"""Standard deviation of the ``"normal"`` scheme (Le et al. 2015) before the gain."""

_MATRICES = ("weight_ih", "weight_hh")
_KEYS = ("weight_ih", "weight_hh", "bias", "forget_bias", "gain")

_PRESET_TABLE: dict[str, dict[str, object]] = {
    # torch's default for every parameter; the forget bias is still added when the
    # cell has one (as the LSTM cells' own reset_parameters do).
    "torch": {"weight_ih": "uniform", "weight_hh": "uniform", "bias": "uniform"},
    "xavier": {"weight_ih": "xavier", "weight_hh": "xavier", "bias": 0.0},
    "lecun": {"weight_ih": "lecun", "weight_hh": "lecun", "bias": 0.0},
    "orthogonal": {"weight_ih": "xavier", "weight_hh": "orthogonal", "bias": 0.0},
    "xavier-orthogonal": {"weight_ih": "xavier", "weight_hh": "orthogonal", "bias": 0.0},
    # Le et al. 2015: W_hh = I, W_ih ~ N(0, 0.001^2), b = 0.
    "identity": {"weight_ih": "normal", "weight_hh": "identity", "bias": 0.0},
    "irnn": {"weight_ih": "normal", "weight_hh": "identity", "bias": 0.0},
}

PRESETS = tuple(_PRESET_TABLE)
"""Names accepted by :func:`initialize` as ``scheme``.

* ``"torch"``: every weight and both biases ~ torch's :math:`U(-1/\\sqrt{H}, 1/\\sqrt{H})`
  (H*k*k for conv); LSTM cells still get their forget bias added to ``bias_ih``.
* ``"xavier"``: xavier / xavier, biases 0.
* ``"lecun"``: lecun / lecun, biases 0.
* ``"orthogonal"``, ``"xavier-orthogonal"`` (the default): xavier ``weight_ih``,
  orthogonal ``weight_hh``, biases 0.
* ``"identity"``, ``"irnn"``: ``weight_hh`` = I, ``weight_ih`` ~ N(0, 0.001^2), biases 0
  (Le et al. 2015; meant for ``RNNCell(nonlinearity="relu")``).

In every preset ``forget_bias`` is left at the cell's own ``forget_bias``; pass
``forget_bias=...`` to override it.
"""

Scheme = str | Callable[[Tensor], object]


# -- validation -----------------------------------------------------------------------
def _check_scheme(arg: str, value: object) -> None:
    if callable(value):
        return
    if not isinstance(value, str) or value not in SCHEMES:
        raise ValueError(f"Argument `{arg}` must be one of {SCHEMES} or a callable, got {value!r}.")


def _check_bias(value: object) -> None:
    if isinstance(value, str):
        if value not in BIAS_SCHEMES:
            raise ValueError(
                f"Argument `bias` must be a float or one of {BIAS_SCHEMES}, got {value!r}."
            )
    elif not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(
            f"Argument `bias` must be a finite float or one of {BIAS_SCHEMES}, got {value!r}."
        )


def _check_real(arg: str, value: object) -> float:
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"Argument `{arg}` must be a finite float, got {value!r}.")
    return float(value)


def _gains(gain: object) -> dict[str, float]:
    """A float (both matrices) or a mapping {"weight_ih": a, "weight_hh": a} (missing: 1)."""
    if isinstance(gain, Mapping):
        bad = [k for k in gain if k not in _MATRICES]
        if bad:
            raise ValueError(
                f"Argument `gain` has unknown key {bad[0]!r}; valid keys are {_MATRICES}."
            )
        return {m: _check_real(f"gain[{m!r}]", gain.get(m, 1.0)) for m in _MATRICES}
    value = _check_real("gain", gain)
    return dict.fromkeys(_MATRICES, value)


def is_cell(module: nn.Module) -> bool:
    """Whether `module` is a recurrent cell: it has ``num_gates``, ``weight_ih``, ``weight_hh``."""
    return all(hasattr(module, a) for a in ("num_gates", "weight_ih", "weight_hh"))


def _block_size(cell: nn.Module) -> int:
    G = int(cell.num_gates)
    rows = cell.weight_hh.shape[0]
    if G < 1 or rows % G or cell.weight_ih.shape[0] != rows:
        raise ValueError(
            f"{type(cell).__name__}: cannot split weight_ih {tuple(cell.weight_ih.shape)} and "
            f"weight_hh {tuple(cell.weight_hh.shape)} into num_gates={G} gate blocks."
        )
    return rows // G


def _blocks(weight: Tensor, H: int) -> list[Tensor]:
    """The gate blocks of `weight` as views: weight[g*H:(g+1)*H]."""
    return list(weight.split(H, dim=0))


def _check_identity(cell: nn.Module, arg: str, weight: Tensor, H: int) -> None:
    block_shape = (H, *weight.shape[1:])
    if weight.dim() not in (2, 4) or weight.shape[1] != H:
        raise ValueError(
            f"Argument `{arg}`='identity' needs square gate blocks, but "
            f"{type(cell).__name__}.{arg} has shape {tuple(weight.shape)} with gate blocks of "
            f"shape {block_shape} ({weight.shape[1]} inputs != {H} outputs)."
        )


# -- the schemes ----------------------------------------------------------------------
def _fans(block: Tensor) -> tuple[int, int]:
    """torch's fan convention: fan_in = C_in*k*k, fan_out = H*k*k (dense: cols, rows)."""
    receptive = block[0, 0].numel() if block.dim() > 2 else 1
    return block.shape[1] * receptive, block.shape[0] * receptive


def _fill(block: Tensor, scheme: Scheme, gain: float, uniform_bound: float) -> None:
    if callable(scheme):
        scheme(block)
        return
    if scheme == "uniform":
        b = gain * uniform_bound
        nn.init.uniform_(block, -b, b)
    elif scheme == "xavier":
        fan_in, fan_out = _fans(block)
        b = gain * math.sqrt(6.0 / (fan_in + fan_out))
        nn.init.uniform_(block, -b, b)
    elif scheme == "lecun":
        fan_in, _ = _fans(block)
        nn.init.normal_(block, 0.0, gain / math.sqrt(fan_in))
    elif scheme == "orthogonal":
        nn.init.orthogonal_(block, gain=gain)
    elif scheme == "identity":
        if block.dim() == 2:
            block.copy_(torch.eye(block.shape[0], dtype=block.dtype, device=block.device))
        else:
            nn.init.dirac_(block)
        block.mul_(gain)
    elif scheme == "normal":
        nn.init.normal_(block, 0.0, IRNN_INPUT_STD * gain)
    elif scheme == "zeros":
        nn.init.zeros_(block)
    else:  # pragma: no cover - validated before
        raise ValueError(f"unknown scheme {scheme!r}")


def _resolve(weight_ih, weight_hh, bias, forget_bias, gain) -> tuple:
    _check_scheme("weight_ih", weight_ih)
    _check_scheme("weight_hh", weight_hh)
    _check_bias(bias)
    if forget_bias is not None:
        forget_bias = _check_real("forget_bias", forget_bias)
    return weight_ih, weight_hh, bias, forget_bias, _gains(gain)


def _prepare(cell: nn.Module, weight_ih, weight_hh, forget_bias) -> int:
    """Check that the arguments fit this cell (before anything is written); return H."""
    if not is_cell(cell):
        raise ValueError(
            f"Argument `cell` must be a recurrent cell (with num_gates, weight_ih, weight_hh), "
            f"got {type(cell).__name__}."
        )
    H = _block_size(cell)
    for arg, scheme in (("weight_ih", weight_ih), ("weight_hh", weight_hh)):
        if scheme == "identity":
            _check_identity(cell, arg, getattr(cell, arg), H)
    if forget_bias and not hasattr(cell, "forget_bias"):
        raise ValueError(
            f"Argument `forget_bias`={forget_bias!r} given, but {type(cell).__name__} has no "
            f"forget gate."
        )
    return H


@torch.no_grad()
def _apply(cell: nn.Module, H: int, weight_ih, weight_hh, bias, forget_bias, gains) -> None:
    bound = 1.0 / math.sqrt(cell.weight_hh[0].numel())  # torch: 1/sqrt(H), conv 1/sqrt(H k^2)
    for name, scheme in (("weight_ih", weight_ih), ("weight_hh", weight_hh)):
        for block in _blocks(getattr(cell, name), H):
            _fill(block, scheme, gains[name], bound)
    b_ih, b_hh = getattr(cell, "bias_ih", None), getattr(cell, "bias_hh", None)
    for b in (b_ih, b_hh):
        if b is None:
            continue
        if bias == "uniform":
            nn.init.uniform_(b, -bound, bound)
        else:
            b.fill_(float(bias))
    if forget_bias is None:
        forget_bias = float(getattr(cell, "forget_bias", 0.0))
    if b_ih is not None and forget_bias and hasattr(cell, "forget_bias"):
        b_ih[H : 2 * H] += forget_bias  # forget gate: block 1 of (i, f, g, o)


def init_cell(
    cell: nn.Module,
    *,
    weight_ih: Scheme = "xavier",
    weight_hh: Scheme = "orthogonal",
    bias: float | str = 0.0,
    forget_bias: float | None = None,
    gain: float | Mapping[str, float] = 1.0,
) -> nn.Module:
    r"""Initialise one recurrent cell in place, gate block by gate block; return it.

    Args:
        cell: a cell of :mod:`rnnkit.cells` or :mod:`rnnkit.conv` (anything with
            ``num_gates``, ``weight_ih``, ``weight_hh`` and optional ``bias_ih``,
            ``bias_hh``).
        weight_ih, weight_hh: a name from :data:`SCHEMES` or a callable filling one
            block in place. See the module docstring for each scheme's distribution:
            uniform :math:`\mathrm{Var} = a^2/(3 n_{hh})`, xavier
            :math:`a^2 \cdot 2/(n_{in}+n_{out})`, lecun :math:`a^2/n_{in}`,
            orthogonal :math:`W W^T = a^2 I`, identity :math:`a I`, normal
            :math:`(0.001a)^2`, zeros.
        bias: value of every entry of ``bias_ih`` and ``bias_hh`` (float), or
            ``"uniform"`` for torch's :math:`U(-1/\sqrt{H}, 1/\sqrt{H})`.
        forget_bias: added to the forget-gate block (block 1) of ``bias_ih`` of an LSTM
            cell. None uses the cell's own ``forget_bias`` attribute (0 for cells without
            one). A nonzero value for a cell without a forget gate raises ValueError.
            The cell's ``forget_bias`` attribute itself is not changed.
        gain: multiplier ``a`` of the weight schemes: a float for both matrices, or a
            mapping ``{"weight_ih": a_ih, "weight_hh": a_hh}`` (missing keys: 1.0), e.g.
            ``weight_hh="identity", gain={"weight_hh": 0.5}`` for :math:`W_{hh} = 0.5 I`.

    Raises:
        ValueError: unknown scheme names, bad values, or ``"identity"`` on a matrix
            whose gate blocks are not square. Nothing is written when it raises.
    """
    args = _resolve(weight_ih, weight_hh, bias, forget_bias, gain)
    H = _prepare(cell, args[0], args[1], args[3])
    _apply(cell, H, *args)
    return cell


def initialize(
    module: nn.Module, scheme: str | Mapping[str, object] = "xavier-orthogonal", **overrides
) -> nn.Module:
    """Apply :func:`init_cell` to every recurrent cell inside `module`; return `module`.

    Cells are the entries of ``module.modules()`` with attributes ``num_gates``,
    ``weight_ih`` and ``weight_hh``, so `module` may be one cell, one layer or a whole
    model; to give layers different schemes, call this on each layer.

    Args:
        module: the module whose cells are initialised (in place).
        scheme: a preset name from :data:`PRESETS` (see there), or a mapping with any
            of the keys ``"weight_ih"``, ``"weight_hh"``, ``"bias"``, ``"forget_bias"``,
            ``"gain"`` (the arguments of :func:`init_cell`; missing keys take
            init_cell's defaults).
        **overrides: the same keys, applied on top of `scheme`, e.g.
            ``initialize(model, "irnn", gain={"weight_hh": 0.9})``.

    A ``forget_bias`` is applied only to cells that have a forget gate (a
    ``forget_bias`` attribute); other cells ignore it here.

    Raises:
        ValueError: an unknown preset name or key, a bad value, a scheme that does not
            fit some cell (e.g. ``"identity"`` on non-square blocks), or no cell found.
            All cells are checked before any is written.
    """
    if isinstance(scheme, str):
        if scheme not in _PRESET_TABLE:
            raise ValueError(
                f"Argument `scheme` must be one of {PRESETS} or a dict, got {scheme!r}."
            )
        spec = dict(_PRESET_TABLE[scheme])
    elif isinstance(scheme, Mapping):
        bad = [k for k in scheme if k not in _KEYS]
        if bad:
            raise ValueError(
                f"Argument `scheme` has unknown key {bad[0]!r}; valid keys are {_KEYS}."
            )
        spec = dict(scheme)
    else:
        raise ValueError(
            f"Argument `scheme` must be one of {PRESETS} or a dict with keys {_KEYS}, "
            f"got {scheme!r}."
        )
    bad = [k for k in overrides if k not in _KEYS]
    if bad:
        raise ValueError(f"Unknown keyword argument {bad[0]!r}; valid keys are {_KEYS}.")
    spec.update(overrides)

    kwargs = {
        "weight_ih": spec.get("weight_ih", "xavier"),
        "weight_hh": spec.get("weight_hh", "orthogonal"),
        "bias": spec.get("bias", 0.0),
        "forget_bias": spec.get("forget_bias"),
        "gain": spec.get("gain", 1.0),
    }
    args = _resolve(**kwargs)
    cells = [m for m in module.modules() if is_cell(m)]
    if not cells:
        raise ValueError(
            f"Argument `module` ({type(module).__name__}) contains no recurrent cell "
            f"(a module with num_gates, weight_ih and weight_hh)."
        )
    plans = []
    for cell in cells:
        fb = args[3] if hasattr(cell, "forget_bias") else None
        plans.append((cell, _prepare(cell, args[0], args[1], fb), fb))
    for cell, H, fb in plans:
        _apply(cell, H, args[0], args[1], args[2], fb, args[4])
    return module
