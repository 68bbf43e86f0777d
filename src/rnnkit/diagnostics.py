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

For a trained model of any task, :func:`gradients_through_time` takes a *probe* -- a
function of the model that returns the task's own loss on a fixed batch of its own data
(each task module's ``gradient_probe``) -- and measures ||dL/dh_t|| at every step of every
recurrent layer the loss ran through (:func:`rnnkit.layers.record_states`), with
sigma_max of each layer's W_hh; :class:`GradientTrace` does it at every evaluation of a
training run, so the run directory shows where gradients vanish as training goes
(``gradients.json``, ``rnnkit gradients RUN``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from . import distributed
from .checkpoint import atomic_write_bytes, rng_state, set_rng_state
from .layers import record_states

LOSSES = ("last", "all")
Probe = Callable[[nn.Module], Tensor]  # model -> a task's scalar loss on a fixed batch


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
    curves: Mapping[str, Tensor],
    path: str | Path,
    *,
    title: str | None = None,
    xlabel: str = "time step t (the loss reads the last step)",
) -> Path:
    """Plot ||dL/dh_t|| against t for several runs, on a log scale, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for label, norms in curves.items():
        n = norms.detach().cpu().double()
        ax.semilogy(range(1, len(n) + 1), n.clamp_min(1e-300), label=label)
    ax.set_xlabel(xlabel)
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


# -- a trained model of any task ------------------------------------------------------------


@dataclass
class LayerGradients:
    """One recurrent layer of a model, measured on a probe batch."""

    name: str  # the layer's module path in the model, e.g. "rnn.layers.0"
    norms: list[float]  # mean ||dL/dh_t|| over the sequences real at step t, in the
    #                     order the layer ran its steps (a backward layer from the end)
    sigma_max: dict[str, float]  # of W_hh, per gate block

    @property
    def ratio(self) -> float:
        """||dL/dh_1|| / ||dL/dh_T||: how much of the gradient at the last step reaches
        the first (tiny: vanished; huge: exploded)."""
        first, last = self.norms[0], self.norms[-1]
        return first / last if last > 0 else float("inf") if first > 0 else float("nan")


def gradients_through_time(model: nn.Module, probe: Probe) -> list[LayerGradients]:
    """||dL/dh_t|| at every step of every recurrent layer that ``probe(model)`` runs.

    The model runs in eval mode (no dropout) with every layer on its per-step loop
    (:func:`rnnkit.layers.record_states`); dL/dh_t is the total derivative through
    every later step, averaged over the sequences that are real (not padding) at t.
    Parameters' ``.grad`` are left untouched. Raises ValueError naming the model when
    the probe ran no recurrent layer.
    """
    was = model.training
    model.eval()
    try:
        with torch.enable_grad(), record_states() as record:
            loss = probe(model)
        if not record.steps:
            raise ValueError(
                f"Argument `model`: {type(model).__name__} ran no recurrent layer on its "
                "batch; gradients through time need one (an averaging model has no h_t)"
            )
        hs = [h for steps in record.steps.values() for h, _ in steps]
        grads = iter(torch.autograd.grad(loss, hs, allow_unused=True))
    finally:
        model.train(was)
    names = {m: n for n, m in model.named_modules()}
    layers = []
    for layer, steps in record.steps.items():
        norms = []
        for h, valid in steps:
            g = next(grads)
            n = torch.zeros(h.shape[0], device=h.device) if g is None else g.flatten(1).norm(dim=1)
            if valid is not None:
                n = n[valid] if valid.any() else n[:0]
            norms.append(float(n.double().mean()) if n.numel() else 0.0)
        layers.append(LayerGradients(names.get(layer, type(layer).__name__), norms,
                                     largest_singular_values(layer.cell)))  # fmt: skip
    return layers


def gradients_table(layers: Sequence[LayerGradients]) -> str:
    """A text table: per layer, its steps, sigma_max of W_hh, the norm at the first,
    middle and last step, the fitted factor per step back and the first/last ratio."""
    w = max([len("layer"), *(len(g.name) for g in layers)])
    lines = [
        f"{'layer':{w}s} {'steps':>5s} {'sigma_max(W_hh) per gate':34s} {'|dL/dh_1|':>10s} "
        f"{'|dL/dh_T/2|':>11s} {'|dL/dh_T|':>10s} {'per step':>9s}"
    ]
    for g in layers:
        sv = " ".join(f"{k}={v:.2f}" for k, v in g.sigma_max.items())
        n = g.norms
        rate = decay_rate(torch.tensor(n, dtype=torch.float64)) if len(n) > 1 else float("nan")
        lines.append(
            f"{g.name:{w}s} {len(n):5d} {sv:34s} {n[0]:10.2e} {n[len(n) // 2]:11.2e} "
            f"{n[-1]:10.2e} {rate:9.3f}"
        )
    return "\n".join(lines)


class GradientTrace:
    """An ``on_eval`` callback of :class:`rnnkit.trainer.Trainer`: at every evaluation,
    :func:`gradients_through_time` on the probe, kept in :attr:`points` (and written to
    `path` as JSON when given). Its state travels in the trainer's checkpoint
    (``add_extra_state``), so a resumed run's trace is whole. The global RNG states are
    restored after each probe, so tracing does not change the training run."""

    def __init__(self, probe: Probe, path: str | Path | None = None) -> None:
        self.probe, self.path = probe, Path(path) if path is not None else None
        self.points: list[dict] = []  # {"step": n, "layers": [LayerGradients as dicts]}

    def __call__(self, trainer, metrics: Mapping[str, float]) -> None:
        rng = rng_state()
        try:
            layers = gradients_through_time(trainer.model, self.probe)
        finally:
            set_rng_state(rng)
        self.points.append({"step": trainer.step, "layers": [asdict(g) for g in layers]})
        self.write()

    def write(self) -> None:
        if self.path is None:
            return
        if distributed.is_main():
            atomic_write_bytes(self.path, (json.dumps(self.points) + "\n").encode("utf-8"))

    def state_dict(self) -> list[dict]:
        return copy.deepcopy(self.points)

    def load_state_dict(self, points: list[dict]) -> None:
        self.points = copy.deepcopy(list(points))


def read_trace(path: str | Path) -> list[dict]:
    """The points of a run's ``gradients.json``: [{"step", "layers": [LayerGradients]}]."""
    points = json.loads(Path(path).read_text(encoding="utf-8"))
    return [{"step": p["step"], "layers": [LayerGradients(**g) for g in p["layers"]]}
            for p in points]  # fmt: skip


def plot_trace(
    points: Sequence[dict], path: str | Path, *, title: str | None = None, most: int = 6
) -> Path:
    """||dL/dh_t|| against t at up to `most` evaluations (first, last and evenly between),
    one panel per layer, on a log scale, to a PNG: where the gradient vanishes as
    training goes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not points:
        raise ValueError("Argument `points`: no evaluation was traced")
    pick = sorted({round(i * (len(points) - 1) / max(1, most - 1)) for i in range(most)})
    chosen = [points[i] for i in pick]
    names = [g.name for g in chosen[-1]["layers"]]
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4), dpi=110, squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, name in zip(axes[0], names):
        for k, p in enumerate(chosen):
            for g in p["layers"]:
                if g.name == name:
                    n = torch.tensor(g.norms, dtype=torch.float64).clamp_min(1e-300)
                    colour = cmap(k / max(1, len(chosen) - 1))
                    ax.semilogy(range(1, len(n) + 1), n, color=colour, label=f"step {p['step']:,}")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("time step t (in the order the layer runs)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel(r"$\|\partial L / \partial h_t\|$")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title or "Gradient norm at each step, at each evaluation", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
