r"""Vanishing and exploding gradients, measured.

Backpropagating from step T to step t multiplies the error by one Jacobian per step:

.. math::
    \frac{\partial L}{\partial h_t} = \frac{\partial L}{\partial h_T}
    \prod_{k=t+1}^{T} \frac{\partial h_k}{\partial h_{k-1}}, \qquad
    \frac{\partial h_k}{\partial h_{k-1}} = \mathrm{diag}(f'(a_k))\, W_{hh}
    \ \text{(vanilla RNN)}

so its norm shrinks or grows geometrically with the distance T - t, at a rate
bounded by the largest singular value of W_hh (times max |f'|, 1 for tanh): below 1
the gradient vanishes, above 1 it can explode (Bengio et al. 1994; Pascanu et al.
2013). :func:`hidden_gradient_norms` measures ||dL/dh_t|| for every t;
:func:`largest_singular_values` gives sigma_max of each gate block of W_hh;
:func:`plot_gradient_norms` draws the curves on a log scale.
:func:`gradient_experiment` is ``rnnkit gradients``: vanilla RNNs with W_hh scaled
below, at and above 1, torch's default RNN, an LSTM and a GRU, side by side.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

LOSSES = ("last", "all")


def hidden_gradient_norms(
    cell: nn.Module,
    x: Tensor,
    *,
    state=None,
    loss: str = "last",
    seed: int = 0,
) -> Tensor:
    """||dL/dh_t|| for every step t of a sequence, averaged over the batch.

    Args:
        cell: any rnnkit cell (or a :class:`rnnkit.Recurrent`, whose cell is used).
        x: (B, T, ...) input sequence.
        state: initial cell state; zeros if None.
        loss: ``"last"``: L = w . h_T reads only the last step, so dL/dh_t is the
            error signal after travelling T - t steps back (the lecture's picture);
            ``"all"``: L = sum_t w . h_t.
        seed: seeds the fixed random readout w (unit norm).

    Returns a (T,) float64 tensor. dL/dh_t is the *total* derivative: through every
    later step. The computation runs on a float64 copy of the cell, so a vanishing
    gradient shows as 1e-30 rather than underflowing to 0.
    """
    if loss not in LOSSES:
        raise ValueError(f"Argument `loss` must be one of {LOSSES}, got {loss!r}.")
    cell = copy.deepcopy(getattr(cell, "cell", cell)).double()
    x = x.double()
    if state is not None:
        state = tuple(s.double() for s in state) if isinstance(state, tuple) else state.double()
    B, T = x.shape[:2]
    if state is None:
        spatial = tuple(x.shape[-2:]) if x.dim() == 5 else None
        state = cell.init_state(B, spatial_size=spatial, device=x.device, dtype=x.dtype)
    hs = []
    for x_t in x.unbind(1):
        state = cell(x_t, state)
        hs.append(cell.output(state))
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(hs[0].shape[1:], generator=g, dtype=x.dtype).to(x.device)
    w = w / w.norm()
    readout = hs[-1:] if loss == "last" else hs
    L = sum((h * w).sum() for h in readout)
    grads = torch.autograd.grad(L, hs)
    return torch.stack([gr.flatten(1).norm(dim=1).mean() for gr in grads]).detach()


def largest_singular_values(cell: nn.Module) -> dict[str, float]:
    """sigma_max of each gate block of ``weight_hh`` (conv kernels flattened)."""
    cell = getattr(cell, "cell", cell)
    W = cell.weight_hh.detach()
    names = {1: ["h"], 3: ["r", "z", "n"], 4: ["i", "f", "g", "o"]}[cell.num_gates]
    blocks = W.chunk(cell.num_gates, 0)
    return {
        name: float(torch.linalg.matrix_norm(b.reshape(b.shape[0], -1).float(), ord=2))
        for name, b in zip(names, blocks)
    }


def decay_rate(norms: Tensor) -> float:
    """Geometric factor per step by which ||dL/dh_t|| changes going back in time.

    Fitted as exp of the slope of log-norm against (T - t) over the finite, non-zero
    values: < 1 vanishing, > 1 exploding.
    """
    T = norms.shape[0]
    dist = torch.arange(T - 1, -1, -1, dtype=torch.float64)
    logn = norms.double().log()
    ok = torch.isfinite(logn)
    if ok.sum() < 2:
        return float("nan")
    d, y = dist[ok], logn[ok]
    slope = ((d - d.mean()) * (y - y.mean())).sum() / ((d - d.mean()) ** 2).sum()
    return float(slope.exp())


def plot_gradient_norms(
    curves: Mapping[str, Tensor], path: str | Path, *, title: str | None = None
) -> Path:
    """Plot ||dL/dh_t|| against t for several runs, on a log scale, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for label, norms in curves.items():
        n = norms.detach().cpu().double()
        ax.semilogy(range(1, len(n) + 1), n.clamp_min(1e-300), label=label)
    ax.set_xlabel("time step t (the loss reads the last step)")
    ax.set_ylabel(r"$\|\partial L / \partial h_t\|$")
    ax.set_title(title or "Gradient norm at each step, backpropagated from the last")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# -- the lecture's experiment --------------------------------------------------------------


@dataclass
class GradientsConfig:
    """``rnnkit gradients``: one random batch through several cells, L = w . h_T."""

    steps: int = 100  # sequence length T
    batch: int = 16  # sequences in the random batch
    input_size: int = 8  # features per step
    hidden_size: int = 64  # units of every cell
    input_std: float = 0.1  # std of the random inputs
    nonlinearity: Literal["tanh", "relu"] = "tanh"  # the vanilla RNNs'
    # vanilla RNNs with W_hh = scale x orthogonal, one per scale
    scales: list[float] = field(default_factory=lambda: [0.5, 1.0, 1.5])
    out: str = "gradients.png"  # where to write the plot
    seed: int = 0  # the inputs and the initialisation


def gradient_experiment(config: GradientsConfig) -> tuple[str, dict[str, Tensor]]:
    """||dL/dh_t|| of every cell of the experiment: (the table as text, the curves).

    Vanilla RNNs with W_hh = s x orthogonal for each scale s (Xavier inputs), one with
    torch's default initialisation, an LSTM (forget bias 1) and a GRU, all on the same
    inputs; the table gives sigma_max of W_hh per gate, the norm at the first and the
    middle step, and the fitted factor per step back (< 0.99 vanishing, > 1.01
    exploding).
    """
    from .cells import GRUCell, LSTMCell, RNNCell
    from .init import init_cell

    c = config
    torch.manual_seed(c.seed)
    B, T, I, H = c.batch, c.steps, c.input_size, c.hidden_size
    x = torch.randn(B, T, I) * c.input_std
    cells: dict[str, nn.Module] = {}
    for s in c.scales:
        cell = RNNCell(I, H, nonlinearity=c.nonlinearity)
        init_cell(cell, weight_ih="xavier", weight_hh="orthogonal", gain={"weight_hh": s})
        cells[f"RNN, W_hh = {s:g} x orthogonal"] = cell
    cells["RNN, torch default init"] = RNNCell(I, H, nonlinearity=c.nonlinearity)
    cells["LSTM (forget bias 1)"] = LSTMCell(I, H)
    cells["GRU"] = GRUCell(I, H)

    lines = [
        f"T={T} steps, batch {B}, input {I} (std {c.input_std:g}), hidden {H}; "
        f"L = w . h_T (the loss reads the last step)\n",
        f"{'cell':34s} {'sigma_max(W_hh) per gate':34s} {'|dL/dh_1|':>10s} "
        f"{'|dL/dh_T/2|':>11s} {'per step':>9s}",
    ]
    curves = {}
    for label, cell in cells.items():
        norms = hidden_gradient_norms(cell, x)
        curves[label] = norms
        sv = " ".join(f"{k}={v:.2f}" for k, v in largest_singular_values(cell).items())
        rate = decay_rate(norms)
        trend = "vanishing" if rate < 0.99 else "exploding" if rate > 1.01 else "steady"
        lines.append(
            f"{label:34s} {sv:34s} {float(norms[0]):10.2e} {float(norms[T // 2]):11.2e} "
            f"{rate:9.3f}  {trend}"
        )
    return "\n".join(lines), curves
