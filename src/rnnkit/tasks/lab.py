"""The long-range lab: where plain recurrent networks forget, and which fix helps.

The lectures' middle part on a real problem: gradients that vanish or explode through
time, clipping, initialisation (Xavier, 1/n, orthogonal, identity) and gated cells,
compared on the problems of :mod:`rnnkit.data.longrange` and sequential MNIST::

    adding    x (B, T, 2) number and marker -> the sum of the two marked numbers, read
              after the last step; mean squared error (baseline: always 1, 0.167)
    copy      x (B, T + 20) symbols -> the same length of symbols: blank, then the 10
              symbols seen at the start; cross-entropy per step (baseline 10 ln 8 / (T + 20))
    pixels    a digit read one pixel at a time, (B, 784, 1) -> its class after the last
    rows      ... one row at a time, (B, 28, 28)
    permuted  ... one pixel at a time in a fixed random order; cross-entropy, accuracy

One configuration is a cell (``lstm``, ``gru``, ``rnn``: tanh, or ``irnn``: ReLU with
W_hh = I, Le et al. 2015), an initialisation (``default``: the cell's own, or any preset
of :mod:`rnnkit.init`), a gradient-norm clip (0: none) and a truncation: 0 trains with
backpropagation through the whole sequence; k > 0 cuts it into windows of k steps, one
update per window, the state carried over each edge but not its gradient (truncated
BPTT, k1 = k2 = k, :class:`rnnkit.tbptt.CarriedState`), so nothing learns across more
than k steps. :func:`compare` trains every configuration for the same budget (steps or
minutes) and writes their learning curves against the baseline (``curves.png``), a
table (``table.md``) and each run's directory; every run resumes exactly.

Every training sequence is drawn from (seed, sequence number), so a resumed run draws
the very sequences it would have; the validation sequences come from their own seed.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .. import runs
from ..checkpoint import (
    Checkpoint,
    atomic_write_bytes,
    config_from_dict,
    load_checkpoint,
    resolve_checkpoint,
    save_figure,
)
from ..data import digits, longrange
from ..diagnostics import gradients_through_time
from ..init import PRESETS
from ..layers import STACKS
from ..tbptt import CarriedState, SyntheticGradients
from ..trainer import Trainer, TrainerConfig, resolve_device
from .sequences import _positive_int

KIND = "lab"
PathLike = str | os.PathLike
PROBLEMS = ("adding", "copy", "pixels", "rows", "permuted")
MNIST_PROBLEMS = ("pixels", "rows", "permuted")
CELLS = ("lstm", "gru", "rnn", "irnn")
INITS = ("default", *PRESETS)
VAL_SIZE = 1000  # validation sequences of the synthetic problems
PROBE_SIZE = 16  # validation sequences on which gradients through time are measured


# -- settings ------------------------------------------------------------------------------


@dataclass
class LabConfig:
    """One configuration's model: what a checkpoint needs to rebuild it."""

    problem: Literal["adding", "copy", "pixels", "rows", "permuted"] = "adding"
    T: int = 200  # adding: steps; copy: the gap (T + 20 steps); MNIST: fixed (784 or 28)
    cell: Literal["lstm", "gru", "rnn", "irnn"] = "lstm"  # irnn: ReLU, W_hh = I (Le et al.)
    init: str = "default"  # default (the cell's own; irnn: identity) or an rnnkit.init preset
    hidden_size: int = 128
    num_layers: int = 1

    def __post_init__(self) -> None:
        if self.problem not in PROBLEMS:
            raise ValueError(f"Argument `problem` must be one of {PROBLEMS}, got {self.problem!r}")
        if self.cell not in CELLS:
            raise ValueError(f"Argument `cell` must be one of {CELLS}, got {self.cell!r}")
        if self.init not in INITS:
            raise ValueError(f"Argument `init` must be one of {INITS}, got {self.init!r}")
        least = 2 if self.problem == "adding" else 1
        if isinstance(self.T, bool) or not isinstance(self.T, int) or least > self.T:
            raise ValueError(
                f"Argument `T` must be an integer >= {least} for {self.problem}, got {self.T!r}"
            )
        for name in ("hidden_size", "num_layers"):
            _positive_int(name, getattr(self, name))

    @property
    def steps(self) -> int:
        """Time steps of one sequence."""
        return {"adding": self.T, "copy": self.T + 2 * longrange.COPY_LENGTH, "rows": 28}.get(
            self.problem, 784
        )


@dataclass
class TrainConfig:
    """One configuration's training."""

    steps: int = 2000  # updates (with truncation: windows)
    minutes: float | None = None  # train this long instead (evaluation not counted)
    batch_size: int = 50  # sequences per batch
    lr: float = 1e-3  # Adam
    clip_norm: float = 1.0  # the gradient norm is clipped to this; 0: no clipping
    truncation: int = 0  # 0: BPTT over the whole sequence; k: windows of k steps
    synthetic_gradients: bool = False  # at each window's end, a learned dL_future/dh (DNI)
    synthetic_lr: float = 1e-4  # the synthetic-gradient module's own Adam rate
    synthetic_scale: float = 0.1  # the factor on the synthetic gradient where it is added
    eval_every: int = 100  # updates between validations (and checkpoints)
    seed: int = 1234  # initialisation and training sequences
    device: Literal["auto", "cpu", "cuda"] = "auto"
    progress: bool = True
    nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/inf loss: end the run there (diverged)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every"):
            _positive_int(name, getattr(self, name))
        if self.minutes is not None and not self.minutes > 0:
            raise ValueError(f"Argument `minutes` must be positive, got {self.minutes!r}")
        if not self.clip_norm >= 0:
            raise ValueError(f"Argument `clip_norm` must be >= 0 (0: off), got {self.clip_norm!r}")
        if (
            isinstance(self.truncation, bool)
            or not isinstance(self.truncation, int)
            or (self.truncation < 0)
        ):
            raise ValueError(
                f"Argument `truncation` must be an integer >= 0 (0: none), got {self.truncation!r}"
            )
        if not self.synthetic_scale > 0:
            raise ValueError(
                f"Argument `synthetic_scale` must be positive, got {self.synthetic_scale!r}"
            )
        if self.synthetic_gradients and not self.truncation:
            raise ValueError(
                "Argument `synthetic_gradients`: they stand in for the gradient a truncation "
                "cuts; give a `truncation` too"
            )

    def trainer_config(self) -> TrainerConfig:
        return TrainerConfig(
            max_steps=self.steps, max_minutes=self.minutes, lr=self.lr, optimizer="adam",
            clip_norm=self.clip_norm or None, eval_every=self.eval_every,
            log_every=max(1, min(20, self.eval_every)), checkpoint_every=self.eval_every,
            progress=self.progress, device=self.device, nonfinite=self.nonfinite,
            max_loss=runs.MAX_LOSS,
        )  # fmt: skip


# -- the problems --------------------------------------------------------------------------


def baseline(config: LabConfig) -> dict[str, float]:
    """What the network must beat: the loss of the best answer that ignores the input's
    long-range part (and, where there is one, its accuracy)."""
    if config.problem == "adding":
        return {"loss": longrange.adding_baseline()}
    if config.problem == "copy":
        return {"loss": longrange.copy_baseline(config.T), "accuracy": 100.0 / 8}
    return {"loss": math.log(10), "accuracy": 10.0}


class Problem:
    """Batches of one problem: ``(x, y)`` tensors; x (B, L, input) float or (B, L) ids;
    y (B,) float (adding), (B, L) ids (copy) or (B,) class ids (MNIST)."""

    def __init__(self, config: LabConfig, log: Callable[[str], None] = print) -> None:
        self.config = config
        self.images: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if config.problem in MNIST_PROBLEMS:
            split = digits.load_mnist(digits.fetch_mnist(log=log))
            images, labels = split["train"]
            n_val = len(images) // 10  # the last tenth of the training digits
            self.images = {
                "train": (images[:-n_val], labels[:-n_val]),
                "val": (images[-n_val:], labels[-n_val:]),
                "test": split["test"],
            }

    def draw(self, n: int, seed: Sequence[int]) -> tuple[Tensor, Tensor]:
        """`n` training sequences from `seed` (a sequence of ints for default_rng)."""
        c = self.config
        if c.problem == "adding":
            x, y = longrange.adding_problem(n, c.T, seed)
        elif c.problem == "copy":
            x, y = longrange.copy_problem(n, c.T, seed)
        else:
            images, labels = self.images["train"]
            idx = np.random.default_rng(seed).choice(len(images), n, replace=False)
            x, y = digits.as_sequences(images[idx], c.problem), labels[idx]
        return torch.from_numpy(x), torch.from_numpy(np.asarray(y))

    def fixed(self, split: str, seed: int) -> tuple[Tensor, Tensor]:
        """The validation (or MNIST test) sequences."""
        c = self.config
        if c.problem in MNIST_PROBLEMS:
            images, labels = self.images[split]
            return (torch.from_numpy(digits.as_sequences(images, c.problem)),
                    torch.from_numpy(labels.astype(np.int64)))  # fmt: skip
        return self.draw(VAL_SIZE, [1 if split == "val" else 2, seed])


# -- the model -----------------------------------------------------------------------------


class LabModel(nn.Module):
    """Inputs -> one rnnkit stack of `config.cell` -> a linear readout (one value for
    adding, a symbol per step for copy, a class for MNIST)."""

    def __init__(self, config: LabConfig):
        super().__init__()
        self.config = c = config
        inputs = {"adding": 2, "copy": longrange.COPY_VOCAB, "rows": 28}.get(c.problem, 1)
        cell = "rnn" if c.cell == "irnn" else c.cell
        init = c.init if c.init != "default" else ("irnn" if c.cell == "irnn" else None)
        extra = {"nonlinearity": "relu" if c.cell == "irnn" else "tanh"} if cell == "rnn" else {}
        self.rnn = STACKS[cell](inputs, c.hidden_size, c.num_layers, batch_first=True,
                                init=init, **extra)  # fmt: skip
        outputs = {"adding": 1, "copy": longrange.COPY_VOCAB}.get(c.problem, 10)
        self.head = nn.Linear(c.hidden_size, outputs)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def inputs(self, x: Tensor) -> Tensor:
        """The stack's input (B, L, I): symbols one-hot (copy), numbers as they are."""
        if self.config.problem == "copy":
            return F.one_hot(x, longrange.COPY_VOCAB).float()
        return x.float()

    def run(self, x: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """x (B, L[, I]) -> the stack's outputs (B, L, H) and its state."""
        return self.rnn(self.inputs(x.to(self.device)), state)

    def loss(self, out: Tensor, y: Tensor, last: bool = True) -> Tensor:
        """The loss of outputs `out` (B, L, H) against targets `y`: the per-step targets
        of this window (copy), or the sequence's target read at the window's last step
        when it is the sequence's last (`last`); a window that holds no target gives 0
        (with a graph, so that it still steps through the trainer)."""
        y = y.to(self.device)
        if self.config.problem == "copy":
            logits = self.head(out)  # (B, L, V)
            return F.cross_entropy(logits.flatten(0, 1), y.flatten())
        if not last:
            return out.sum() * 0.0
        read = self.head(out[:, -1])  # (B, 1) or (B, 10)
        if self.config.problem == "adding":
            return F.mse_loss(read.squeeze(1), y.float())
        return F.cross_entropy(read, y)

    @torch.no_grad()
    def score(self, x: Tensor, y: Tensor, batch_size: int = 500) -> dict[str, float]:
        """Validation metrics over whole sequences: loss (MSE or cross-entropy per step),
        accuracy % (copy: of the 10 copied symbols; MNIST: of the classes)."""
        was = self.training
        self.eval()
        total = right = count = 0.0
        try:
            for s in range(0, len(x), batch_size):
                xb, yb = x[s : s + batch_size], y[s : s + batch_size].to(self.device)
                out, _ = self.run(xb)
                total += float(self.loss(out, yb)) * len(xb)
                if self.config.problem == "copy":
                    k = longrange.COPY_LENGTH
                    guess = self.head(out[:, -k:]).argmax(-1)
                    right += float((guess == yb[:, -k:]).sum())
                    count += guess.numel()
                elif self.config.problem in MNIST_PROBLEMS:
                    right += float((self.head(out[:, -1]).argmax(-1) == yb).sum())
                    count += len(xb)
        finally:
            self.train(was)
        m = {"loss": total / len(x)}
        if count:
            m["accuracy"] = 100.0 * right / count
        return m


# -- training ------------------------------------------------------------------------------


class Windows:
    """Training windows as a callable with a cursor (a resumed run continues exactly):
    sequence n is drawn from (seed, n); with truncation k each is cut into windows of
    k steps, one per call."""

    def __init__(self, problem: Problem, batch_size: int, truncation: int, seed: int) -> None:
        self.problem, self.batch_size, self.seed = problem, batch_size, seed
        L = problem.config.steps
        k = truncation or L
        self.edges = list(range(0, L, k)) + [L]
        self.sequence, self.window = 0, 0
        self._current: tuple[Tensor, Tensor] | None = None

    def __call__(self) -> dict[str, Any]:
        if self.window == len(self.edges) - 1:
            self.sequence, self.window, self._current = self.sequence + 1, 0, None
        if self._current is None:
            self._current = self.problem.draw(self.batch_size, [0, self.seed, self.sequence])
        x, y = self._current
        a, b = self.edges[self.window], self.edges[self.window + 1]
        last = b == self.edges[-1]
        self.window += 1
        per_step = self.problem.config.problem == "copy"
        return {"x": x[:, a:b], "y": y[:, a:b] if per_step else y,
                "first": a == 0, "last": last}  # fmt: skip

    def state_dict(self) -> dict[str, int]:
        return {"sequence": self.sequence, "window": self.window}

    def load_state_dict(self, d: dict[str, int]) -> None:
        self.sequence, self.window, self._current = int(d["sequence"]), int(d["window"]), None


def make_step_fn(carried: CarriedState) -> Callable:
    """One window per trainer step, from the state carried in (reset at a sequence's
    first window); the state leaves detached (truncated BPTT), its end given the
    synthetic gradient when the carry has them."""

    def step_fn(model: LabModel, batch: dict[str, Any]):
        if batch["first"]:
            carried.reset()
        out = carried(model.run, batch["x"])
        loss = model.loss(out, batch["y"], last=batch["last"])
        stats = {"items": int(batch["x"].shape[0] * batch["x"].shape[1])}
        if carried.synthetic is not None:  # M's regression loss (float32, as a resumed sum)
            stats["sg_loss"] = torch.tensor(carried.synthetic.last_loss or 0.0)
        return carried.loss(loss, last=batch["last"]), stats

    return step_fn


def train(
    out: PathLike,
    config: LabConfig | None = None,
    train_config: TrainConfig | None = None,
    *,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> tuple[LabModel, dict]:
    """Train one configuration into run directory `out`; ``best/`` keeps the lowest
    validation loss; ``results.json`` gets its validation (and MNIST test) metrics and
    the baseline. ``resume=True`` continues from ``out/latest``."""
    out, ckpt = runs.start_run(out, resume, KIND, log=log)
    if ckpt is not None:
        config = config_from_dict(LabConfig, ckpt.meta["model"])
        train_config = config_from_dict(TrainConfig, ckpt.meta["train"])
    config, train_config = config or LabConfig(), train_config or TrainConfig()
    if progress is not None:
        train_config.progress = progress
    problem = Problem(config, log)
    val = problem.fixed("val", train_config.seed)
    runs.seed_everything(train_config.seed)
    model = LabModel(config)
    if ckpt is not None:
        model.load_state_dict(ckpt.model_state)
    device = resolve_device(train_config.device)
    model.to(device)
    windows = Windows(problem, train_config.batch_size, train_config.truncation,
                      train_config.seed)  # fmt: skip
    synthetic = None
    if train_config.synthetic_gradients:
        size = config.num_layers * config.hidden_size * (2 if config.cell == "lstm" else 1)
        synthetic = SyntheticGradients(size, lr=train_config.synthetic_lr,
                                       scale=train_config.synthetic_scale).to(device)  # fmt: skip
    carried = CarriedState(synthetic)
    trainer = Trainer(train_config.trainer_config(), model, make_step_fn(carried),
                      train_batches=windows, eval_fn=lambda m: m.score(*val))  # fmt: skip
    trainer.items_name = "steps"
    trainer.add_extra_state("data", windows.state_dict, windows.load_state_dict)
    trainer.add_extra_state(
        "carried", carried.state_dict, lambda d: carried.load_state_dict(d, device)
    )
    curve: list[dict[str, float]] = []  # each validation: step, training minutes, metrics

    def on_eval(t: Trainer, m: dict[str, float]) -> None:
        curve.append({"step": t.step, "minutes": t.train_s / 60, **m})
        log(f"step {t.step}: validation {_fmt(m)}")

    trainer.add_callback("on_eval", on_eval)
    trainer.add_extra_state("curve", lambda: [dict(p) for p in curve], curve.__init__)
    meta = {"kind": KIND, "model": asdict(config), "train": asdict(train_config)}
    if ckpt is None:
        log(f"lab {name_of(config, train_config)}: {describe(model, device)}")
    best = runs.KeepBest(out, meta, metric="loss")
    try:
        probe = probe_on(val[0][:PROBE_SIZE], val[1][:PROBE_SIZE])
        runs.fit(trainer, out, meta, best=best, resume_from=ckpt, probe=probe, log=log)
        diverged = None
    except runs.NonFiniteLossError as err:  # exploding gradients: a result, not a crash
        diverged = str(err)
        log(f"diverged: {err}")
    results: dict[str, Any] = {"baseline": baseline(config)}
    if (out / "best").exists():
        model = load(out / "best", device=device)
        results["val"] = model.score(*val)
        if config.problem in MNIST_PROBLEMS:
            results["test"] = model.score(*problem.fixed("test", train_config.seed))
    results["train"] = {
        "steps": trainer.step, "minutes": trainer.train_s / 60,
        "best_step": best.best["step"] if best.best else None, "diverged": diverged,
        "curve": curve,
    }  # fmt: skip
    runs.write_results(out, results)
    return model, results


def probe_on(x: Tensor, y: Tensor) -> Callable[[LabModel], Tensor]:
    """The loss of a model on these whole sequences (no truncation): what
    :func:`rnnkit.diagnostics.gradients_through_time` differentiates."""

    def probe(model: LabModel) -> Tensor:
        out, _ = model.run(x)
        return model.loss(out, y)

    return probe


def gradient_probe(
    model: LabModel, *, batch_size: int = PROBE_SIZE, log: Callable[[str], None] = print
) -> Callable[[LabModel], Tensor]:
    """The run's loss on its first `batch_size` validation sequences (``rnnkit gradients
    RUN``): drawn from the run's seed, as in training."""
    seed = model.meta["train"]["seed"]
    x, y = Problem(model.config, log).fixed("val", seed)
    return probe_on(x[:batch_size], y[:batch_size])


def _fmt(m: dict[str, float]) -> str:
    acc = f", accuracy {m['accuracy']:.1f}%" if "accuracy" in m else ""
    return f"loss {m['loss']:.4f}{acc}"


def describe(model: LabModel, device: torch.device) -> str:
    c = model.config
    init = c.init if c.init != "default" else ("identity" if c.cell == "irnn" else "default")
    return (
        f"{c.problem} (T = {c.T}, {c.steps} steps) -> {c.num_layers}x{c.hidden_size} "
        f"{c.cell.upper()} (init {init}; {model.rnn.backend(device)})"
    )


def load(path: PathLike, *, device: str | torch.device = "cpu") -> LabModel:
    """The :class:`LabModel` saved at `path` (a run directory or checkpoint)."""
    ckpt: Checkpoint = load_checkpoint(resolve_checkpoint(path), expected_kind=KIND)
    model = LabModel(config_from_dict(LabConfig, ckpt.meta["model"]))
    model.load_state_dict(ckpt.model_state)
    model.meta = ckpt.meta
    return model.to(device).eval()


# -- comparing configurations ----------------------------------------------------------------


def name_of(config: LabConfig, train_config: TrainConfig) -> str:
    """A configuration's short name, e.g. ``lstm``, ``rnn-orthogonal-clip0-k50``."""
    parts = [config.cell]
    if config.init != "default":
        parts.append(config.init)
    if train_config.clip_norm != TrainConfig.clip_norm:
        parts.append(f"clip{train_config.clip_norm:g}")
    if train_config.truncation:
        parts.append(f"k{train_config.truncation}")
    if train_config.synthetic_gradients:
        parts.append("sg")
    return "-".join(parts)


@dataclass
class Comparison:
    """Configurations to compare: every combination of the lists."""

    problem: str = "adding"  # adding, copy, pixels, rows or permuted
    T: int = 200  # adding: steps; copy: the gap (T + 20 steps); MNIST: fixed
    cell: list[str] = field(default_factory=lambda: ["lstm", "gru", "irnn", "rnn"])  # cells
    init: list[str] = field(default_factory=lambda: ["default"])  # initialisations
    clip: list[float] = field(default_factory=lambda: [1.0])  # gradient-norm clips (0: none)
    truncation: list[int] = field(default_factory=lambda: [0])  # TBPTT windows (0: none)
    synthetic: list[str] = field(default_factory=lambda: ["off"])  # synthetic gradients: off, on

    def configurations(
        self, model: dict[str, Any], train: dict[str, Any]
    ) -> list[tuple[LabConfig, TrainConfig]]:
        out = []
        for choice in self.synthetic:
            if choice not in ("off", "on"):
                raise ValueError(f"Argument `synthetic` must be 'off' or 'on', got {choice!r}")
        for cell, init, clip, k, sg in itertools.product(
            self.cell, self.init, self.clip, self.truncation, self.synthetic
        ):
            if sg == "on" and not k:
                continue  # nothing is cut without a truncation: nothing to stand in for
            config = LabConfig(**{**model, "problem": self.problem, "T": self.T, "cell": cell,
                                  "init": init})  # fmt: skip
            settings = {"clip_norm": clip, "truncation": k, "synthetic_gradients": sg == "on"}
            out.append((config, TrainConfig(**{**train, **settings})))
        names = [name_of(c, t) for c, t in out]
        if len(set(names)) != len(names):
            raise ValueError(f"the configurations repeat: {', '.join(names)}")
        return out


def compare(
    out: PathLike, comparison: Comparison, model: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None, *, resume: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, dict]:  # fmt: skip
    """Train every configuration of `comparison` for the same budget into ``out/NAME``
    (finished runs are kept; with `resume`, unfinished ones continue), then write
    ``curves.png``, ``table.md`` and ``results.json`` in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for config, train_config in comparison.configurations(model or {}, train or {}):
        name = name_of(config, train_config)
        run = out / name
        done = run / "results.json"
        if done.is_file():
            log(f"{name}: finished before, kept")
            results[name] = json.loads(done.read_text())
            continue
        again = resume and (run / "latest").exists()
        _, results[name] = train_one(run, config, train_config, again, log)
    configurations = comparison.configurations(model or {}, train or {})
    write_comparison(out, comparison, results, baseline(configurations[0][0]))
    entries = [(out / name_of(c, t), c, t) for c, t in configurations]
    plot_gradients(out / "gradients.png", entries, log)
    return results


def train_one(run: Path, config: LabConfig, train_config: TrainConfig, resume: bool,
              log: Callable[[str], None]) -> tuple[LabModel, dict]:  # fmt: skip
    if resume:
        return train(run, resume=True, log=log)
    return train(run, config, train_config, log=log)


def write_comparison(out: Path, comparison: Comparison, results: dict[str, dict],
                     base: dict[str, float]) -> None:  # fmt: skip
    """``table.md`` (one row per configuration), ``results.json`` and ``curves.png``:
    validation loss against updates and against training minutes, the baseline dashed."""
    metric = "MSE" if comparison.problem == "adding" else "cross-entropy"
    lines = [
        f"# {comparison.problem}, T = {comparison.T}: validation {metric} (baseline "
        f"{base['loss']:.4f})",
        "",
        f"| configuration | updates | minutes | best {metric} | at update | accuracy % "
        "| diverged |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        t, v = r["train"], r.get("val", {})
        loss = f"{v['loss']:.4f}" if "loss" in v else "-"
        acc = f"{v['accuracy']:.1f}" if "accuracy" in v else "-"
        lines.append(
            f"| {name} | {t['steps']:,} | {t['minutes']:.1f} | {loss} | "
            f"{t['best_step'] or '-'} | {acc} | {'yes' if t['diverged'] else 'no'} |"
        )
    atomic_write_bytes(out / "table.md", ("\n".join(lines) + "\n").encode("utf-8"))
    runs.write_results(out, {"baseline": base, "runs": results})
    plot_curves(out / "curves.png", comparison, results, base)


def start_and_end(run: Path, config: LabConfig, train_config: TrainConfig,
                  log: Callable[[str], None] = print) -> dict[str, list]:  # fmt: skip
    """||dL/dh_t|| of one configuration's network (its first layer) on its first
    validation sequences, at the start of training (the seeded initialisation, rebuilt)
    and at its end (the best weights; none if the run diverged before an evaluation)."""
    x, y = Problem(config, log).fixed("val", train_config.seed)
    probe = probe_on(x[:PROBE_SIZE], y[:PROBE_SIZE])
    runs.seed_everything(train_config.seed)  # as train() does before building the model
    norms = {"start": gradients_through_time(LabModel(config), probe)[0].norms, "end": []}
    if (run / "best").exists():
        norms["end"] = gradients_through_time(load(run / "best"), probe)[0].norms
    return norms


def run_entry(run: PathLike) -> tuple[Path, LabConfig, TrainConfig]:
    """(run, its model config, its training config) of a lab run directory."""
    meta = load_checkpoint(resolve_checkpoint(run), expected_kind=KIND).meta
    return (Path(run), config_from_dict(LabConfig, meta["model"]),
            config_from_dict(TrainConfig, meta["train"]))  # fmt: skip


def plot_gradients(path: Path, entries: Sequence[tuple[Path, LabConfig, TrainConfig]],
                   log: Callable[[str], None] = print) -> Path:  # fmt: skip
    """Why the winner wins: for every configuration, ||dL/dh_t|| over t at the start of
    training (dashed) and at its end (solid), on one log scale: where the loss's
    gradient still reaches the early steps, the network can learn from them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(entries)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.6), sharey=True, squeeze=False)
    for ax, (run, config, train_config) in zip(axes[0], entries):
        name = name_of(config, train_config)
        if train_config.lr != TrainConfig.lr:
            name += f", lr {train_config.lr:g}"
        norms = start_and_end(run, config, train_config, log)
        for key, style in (("start", "--"), ("end", "-")):
            if norms[key]:
                values = np.clip(np.asarray(norms[key]), 1e-30, None)
                ax.semilogy(range(1, len(values) + 1), values, style, label=key)
        ax.set_title(name + ("" if norms["end"] else " (diverged)"), fontsize=9)
        ax.set_xlabel("time step t")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(r"$\|\partial L / \partial h_t\|$ (validation)")
    c = entries[0][1]
    fig.suptitle(f"{c.problem}, T = {c.T}: the gradient at each step, before and after "
                 "training", fontsize=10)  # fmt: skip
    fig.tight_layout()
    return save_figure(fig, path)


def plot_labs(path: Path, labs: Sequence[Path]) -> Path:
    """The learning curves of several finished comparisons (their ``results.json``) in
    one plot; they must share the problem and T (and so the baseline)."""
    results: dict[str, dict] = {}
    kinds, base = set(), {}
    for lab_dir in labs:
        file = Path(lab_dir) / "results.json"
        if not file.is_file():
            raise ValueError(f"Argument `labs`: {str(lab_dir)!r} holds no finished comparison "
                             "(no results.json)")  # fmt: skip
        saved = json.loads(file.read_text(encoding="utf-8"))
        base = saved["baseline"]
        for name, r in saved["runs"].items():
            config = run_entry(Path(lab_dir) / name)[1]
            kinds.add((config.problem, config.T))
            results[name] = r
    if len(kinds) != 1:
        raise ValueError(f"Argument `labs`: they mix problems or lengths: {sorted(kinds)}")
    problem, T = kinds.pop()
    return plot_curves(path, Comparison(problem=problem, T=T), results, base)


def plot_curves(path: Path, comparison: Comparison, results: dict[str, dict],
                base: dict[str, float]) -> Path:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for name, r in results.items():
        curve = r["train"]["curve"]
        if not curve:
            continue
        for ax, x in zip(axes, ("step", "minutes")):
            ax.plot([p[x] for p in curve], [p["loss"] for p in curve], label=name)
    for ax, label in zip(axes, ("updates", "training minutes")):
        ax.axhline(base["loss"], color="k", linestyle="--", linewidth=1, label="baseline")
        ax.set_xlabel(label)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation loss")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{comparison.problem}, T = {comparison.T}")
    fig.tight_layout()
    return save_figure(fig, path)
