"""A run directory: what every task's training writes, and how a run resumes.

    RUN/latest/        weights, trainer state (optimizer, schedule, step, RNG states, the
                       task's data cursor ...) and meta: what ``--resume`` continues from
    RUN/best/          the weights of the best validation score so far
    RUN/metrics.csv    every log and evaluation record
    RUN/results.json   the final metrics, for tasks that report them
    RUN/.latest.prev/  the latest checkpoint before that one (a resume falls back to it
                       when latest/ is damaged: every file's sha256 is checked on load)
    RUN/.lock          held by the process training in it (a second one is refused)

A task calls these plain functions in order (nothing here calls the task back)::

    out, ckpt = start_run(out, resume, kind)   # refuse to overwrite; or latest/ to resume
    seed_everything(seed)
    trainer = Trainer(...)                     # the task's model, step and evaluation
    best = KeepBest(out, meta, metric="accuracy")
    fit(trainer, out, meta, best=best, resume_from=ckpt)
    write_results(out, {...})

Checkpoints are written atomically (:mod:`rnnkit.checkpoint`): a crash mid-save leaves
the previous one intact, and a resumed run continues with exactly the losses an
uninterrupted run would have had.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    import fcntl  # POSIX; elsewhere runs are not locked
except ImportError:  # pragma: no cover - Windows
    fcntl = None

from . import distributed
from .checkpoint import (
    Checkpoint,
    atomic_write_bytes,
    load_checkpoint,
    previous_path,
    recover,
    save_checkpoint,
)
from .diagnostics import GradientTrace, Probe
from .trainer import NonFiniteLossError, Trainer, TrainerConfig, to_device

PathLike = str | os.PathLike
LOCK_FILE = ".lock"
# a mean cross-entropy above this many nats puts probability e^-1000 on the truth: only
# a diverged run gets there (a uniform guess over 10,000 classes is 9.2 nats); the tasks'
# Trainer stops there as at a NaN (TrainerConfig.max_loss)
MAX_LOSS = 1e3
_held: dict[Path, int] = {}  # run directory -> the open lock file this process holds


def lock(out: PathLike) -> None:
    """Hold `out`'s lock for this process: a second process that starts in the same run
    directory gets a clear error instead of both writing it (the last writer winning).
    The lock is an ``flock`` on ``out/.lock``: the system drops it when the process ends,
    however it ends, so a killed run leaves no lock behind."""
    out = Path(out)
    key = out.resolve()
    if key in _held or fcntl is None or not distributed.is_main():  # rank 0 writes
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise FileExistsError(f"cannot use {out} as a run directory: {err.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FileExistsError(
            f"{out} is in use: another rnnkit process is training in it (it holds "
            f"{out / LOCK_FILE}); wait for it to end or choose another --out"
        ) from None
    _held[key] = fd


def unlock(out: PathLike) -> None:
    """Release what :func:`lock` holds (the end of the process releases it too)."""
    fd = _held.pop(Path(out).resolve(), None)
    if fd is not None:
        os.close(fd)


def start_run(
    out: PathLike, resume: bool, kind: str, *, log: Callable[[str], None] = print
) -> tuple[Path, Checkpoint | None]:
    """(out, the checkpoint to resume from, or None for a new run).

    A new run never writes into an old one: FileExistsError if `out` holds a run (and
    again in :func:`fit`, which takes the directory's lock before its first write, for
    a run another process began meanwhile).
    """
    out = Path(out)
    if distributed.is_main():  # the one writer; the other ranks wait for it
        recover(out / "latest")  # a save killed mid-swap left the last good one aside
        recover(out / "best")
    distributed.barrier()
    if resume:
        try:
            return out, load_checkpoint(out / "latest", expected_kind=kind)
        except ValueError as err:  # damaged: the one saved before it is kept beside it
            previous = previous_path(out / "latest")
            if not previous.is_dir():
                raise
            log(f"{err}; falling back to the checkpoint saved before it")
            return out, load_checkpoint(previous, expected_kind=kind)
    if (out / "latest").exists():
        raise FileExistsError(
            f"{out} already holds a run; pass --resume to continue it or choose another --out"
        )
    return out, None


def seed_everything(seed: int) -> None:
    """Seed torch's and NumPy's global generators (initialisation, data order)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def save_latest(trainer: Trainer, out: PathLike, meta: Mapping[str, Any]) -> None:
    """``out/latest`` with everything to resume exactly (weights, trainer state, ``meta``
    plus the step), and ``out/metrics.csv``: a run's ``on_checkpoint``. Under torchrun
    every rank calls it (the trainer's state gathers every rank's) and rank 0 writes."""
    out = Path(out)
    train_state = trainer.state_dict()
    if not distributed.is_main():
        return
    save_checkpoint(
        out / "latest",
        model_state=trainer.model.state_dict(),
        train_state=train_state,
        meta={**meta, "step": trainer.step},
        keep_previous=True,  # the last two: a damaged newest one has a good one beside it
    )
    trainer.write_history(out / "metrics.csv")


def check_evals_per_epoch(value: Any) -> None:
    """`evals_per_epoch` of a run's settings: a positive number (a fraction spaces the
    evaluations more than an epoch apart)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(
            f"Argument `evals_per_epoch` must be a positive number (0.1: every ten epochs), "
            f"got {value!r}"
        )


def eval_interval(steps_per_epoch: int, evals_per_epoch: float) -> int:
    """Steps between evaluations (and checkpoints): an epoch's steps / `evals_per_epoch`,
    rounded down, at least 1. A fraction such as 0.1 evaluates every ten epochs: on a
    set of a few batches an epoch, evaluating after each would take most of the time."""
    return max(1, int(steps_per_epoch / evals_per_epoch))


def epoch_trainer_config(run: Any, steps_per_epoch: int) -> TrainerConfig:
    """The trainer's settings of a task's run settings counted in epochs: `run` has
    ``epochs``, ``evals_per_epoch``, ``lr``, ``schedule``, ``warmup_steps`` (at most a
    tenth of the run), ``min_lr_ratio``, ``clip_norm``, ``progress``, ``device``,
    ``minutes``, ``nonfinite`` and ``ema``; Adam; evaluation and checkpoint `evals_per_epoch`
    times an epoch (:func:`eval_interval`)."""
    steps = max(1, int(math.ceil(run.epochs * steps_per_epoch)))
    every = eval_interval(steps_per_epoch, run.evals_per_epoch)
    return TrainerConfig(
        max_steps=steps,
        lr=run.lr,
        optimizer="adam",
        schedule=run.schedule,
        warmup_steps=min(run.warmup_steps, max(1, steps // 10)),
        min_lr_ratio=run.min_lr_ratio,
        clip_norm=run.clip_norm,
        eval_every=every,
        log_every=max(1, min(20, every)),
        checkpoint_every=every,
        progress=run.progress,
        device=run.device,
        max_minutes=run.minutes,
        nonfinite=run.nonfinite,
        max_loss=MAX_LOSS,
        ema=run.ema,
    )


class KeepBest:
    """Keeps ``out/best`` at the evaluation with the best `metric`.

    Higher is better (``higher_is_better=False`` for a loss); on a tie the lower
    validation loss wins (small validation sets tie often). Its state -- the best
    score, loss and step -- travels in the trainer's checkpoint, so a resumed run
    compares against the same best.
    """

    def __init__(
        self,
        out: PathLike,
        meta: Mapping[str, Any],
        *,
        metric: str = "loss",
        higher_is_better: bool = False,
    ) -> None:
        self.out, self.meta, self.metric = Path(out), meta, metric
        self.sign = 1.0 if higher_is_better else -1.0
        self.best: dict[str, float] = {"score": -math.inf, "loss": math.inf, "step": 0}

    def __call__(self, trainer: Trainer, metrics: Mapping[str, float]) -> None:
        """An ``on_eval`` callback: save ``best/`` if these metrics beat the best so far."""
        score = self.sign * metrics[self.metric]
        if (score, -metrics["loss"]) > (self.best["score"], -self.best["loss"]):
            self.best.update(score=score, loss=metrics["loss"], step=trainer.step)
            if not distributed.is_main():  # every rank keeps the score, rank 0 the weights
                return
            save_checkpoint(
                self.out / "best",
                model_state=trainer.model.state_dict(),
                train_state=None,
                meta={
                    **self.meta,
                    "step": trainer.step,
                    "val": dict(metrics),
                    "val_loss": metrics["loss"],
                },
            )

    @property
    def value(self) -> float:
        """The best `metric` so far."""
        return self.sign * self.best["score"]

    def state_dict(self) -> dict[str, float]:
        return dict(self.best)

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        state = dict(state)
        if "score" not in state:  # runs written before KeepBest kept only the loss
            state["score"] = -state.get("loss", math.inf)
        self.best.update(state)


def fit(
    trainer: Trainer,
    out: PathLike,
    meta: Mapping[str, Any],
    *,
    best: KeepBest | None = None,
    resume_from: Checkpoint | None = None,
    probe: Probe | None = None,
    log: Callable[[str], None] = print,
) -> Trainer:
    """Train to the end, saving ``latest/`` at every checkpoint and ``best/`` at every
    better evaluation; resume first from `resume_from` when given. Writes metrics.csv.

    With a `probe` (the task's loss on a fixed batch, its ``gradient_probe``), every
    evaluation also measures ||dL/dh_t|| through time into ``gradients.json``
    (:class:`rnnkit.diagnostics.GradientTrace`; a run begun without it resumes without)."""
    out = Path(out)
    lock(out)  # from here on this process is the run's one writer
    if resume_from is None and distributed.is_main() and (out / "latest").exists():
        unlock(out)
        raise FileExistsError(f"{out} already holds a run (another process began it)")
    if best is not None:
        trainer.add_extra_state("best", best.state_dict, best.load_state_dict)
        trainer.add_callback("on_eval", best)
    trainer.add_callback("on_checkpoint", lambda t: save_latest(t, out, meta))
    traced = resume_from is None or "gradients" in resume_from.train_state.get("extra", {})
    if probe is not None and traced:
        trace = GradientTrace(probe, out / "gradients.json")
        trainer.add_extra_state("gradients", trace.state_dict, trace.load_state_dict)
        trainer.add_callback("on_eval", trace)
    if resume_from is not None:
        trainer.model.load_state_dict(resume_from.model_state)
        trainer.load_state_dict(resume_from.train_state)
        log(f"resuming {out} at step {trainer.step} of {trainer.config.max_steps}")
    try:
        trainer.fit()
    except NonFiniteLossError as err:  # nothing good was overwritten: say where it is
        latest = out / "latest"
        kept = (
            f"the last good checkpoint is {latest} (step {load_checkpoint(latest).meta['step']})"
            if latest.exists()
            else "no checkpoint was written before it"
        )
        raise NonFiniteLossError(f"{err}; {kept}") from None
    finally:
        unlock(out)
    if distributed.is_main():
        trainer.write_history(out / "metrics.csv")
    distributed.barrier()  # what rank 0 wrote (best/) is there for every rank to read
    return trainer


def batch_probe(step_fn: Callable, batch: Any, device: torch.device | str) -> Probe:
    """A task's own training loss on one fixed `batch`, as a function of the model: the
    probe of :func:`fit` and of ``rnnkit gradients RUN`` for a task whose ``step_fn``
    keeps no state between batches."""
    batch = to_device(batch, torch.device(device))

    def probe(model: torch.nn.Module) -> torch.Tensor:
        out = step_fn(model, batch)
        return out[0] if isinstance(out, tuple) else out

    return probe


def write_results(out: PathLike, results: Mapping[str, Any]) -> Path:
    """``out/results.json``, written atomically (by rank 0 under torchrun)."""
    path = Path(out) / "results.json"
    if distributed.is_main():
        atomic_write_bytes(path, (json.dumps(results, indent=2) + "\n").encode("utf-8"))
    return path
