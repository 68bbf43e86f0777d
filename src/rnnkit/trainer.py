"""One training loop for every rnnkit task.

Nothing in this file knows about characters, classes or tags (minGPT's trainer:
"nothing in this file really has anything to do with GPT"). A task hands the
:class:`Trainer` its model and a ``step_fn(model, batch) -> (loss, stats)``; the
trainer owns the optimizer, the learning-rate schedule, gradient clipping,
logging, evaluation cadence and exact resumption. A minimal task::

    def step_fn(model, batch):
        x, y = batch                                    # x: (B, T), y: (B, T)
        logits = model(x)                               # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        return loss, {"items": y.numel()}               # items: for tokens/s

    trainer = Trainer(TrainerConfig(max_steps=2000, lr=3e-3), model, step_fn,
                      train_batches=loader, eval_fn=lambda m: {"loss": val_loss(m)})
    trainer.fit()

A task that keeps a run directory (``latest/`` to resume, ``best/``, metrics.csv)
hands its trainer to :func:`rnnkit.runs.fit` instead of calling ``fit`` itself.

Data-parallel: under torchrun (:mod:`rnnkit.distributed`) every rank starts from rank
0's weights; after backward one allreduce weighs each rank's gradients, loss and stats
by its ``stats["items"]``, so every rank steps with the global batch's gradient and
logs the global loss; every rank runs the same steps, evaluations and callbacks, and
:meth:`state_dict` gathers every rank's RNG states.

Resuming: build the same model and Trainer, ``model.load_state_dict(ckpt.model_state)``,
``trainer.load_state_dict(ckpt.train_state)`` (restores optimizer, schedule, step,
epoch, history and RNG states), then ``trainer.fit()`` continues to ``max_steps`` with
exactly the losses an uninterrupted run would have had -- provided the task's data
position is restored too, through :meth:`Trainer.add_extra_state`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import distributed
from .checkpoint import atomic_write_bytes, rng_state, set_rng_state

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "linear")
DEVICES = ("auto", "cpu", "cuda")
EVENTS = ("on_log", "on_eval", "on_checkpoint")
NONFINITE = ("stop", "skip")
MAX_SKIPS = 20  # batches skipped in a row before a "skip" run stops all the same


class NonFiniteLossError(ArithmeticError):
    """Training met a NaN or infinite loss or gradient norm and stopped before the
    update, so no weights or checkpoints were touched by it."""


StepFn = Callable[[nn.Module, Any], "tuple[Tensor, Mapping[str, Any]] | Tensor"]
EvalFn = Callable[[nn.Module], Mapping[str, float]]


@dataclass
class TrainerConfig:
    max_steps: int = 1000
    # a time budget instead: max_steps follows the measured step time so that training
    # ends after this many minutes (evaluation and checkpoints not counted), also when the
    # machine slows down part way
    max_minutes: float | None = None
    lr: float = 1e-3  # peak learning rate, reached after warmup
    optimizer: str = "adamw"  # "adam" | "adamw" | "sgd"
    weight_decay: float = 0.0  # applied to matrices and embeddings only, never to biases
    betas: tuple[float, float] = (0.9, 0.999)  # adam/adamw only
    momentum: float = 0.0  # sgd only
    schedule: str = "constant"  # after warmup: "constant" | "cosine" | "linear" decay
    warmup_steps: int = 0  # linear ramp from lr/warmup_steps up to lr
    min_lr_ratio: float = 0.1  # cosine/linear decay ends at lr * min_lr_ratio on the last step
    clip_norm: float | None = 1.0  # max global gradient norm; None disables clipping
    eval_every: int = 0  # 0: evaluate only at the end
    log_every: int = 10
    checkpoint_every: int = 0  # 0: on_checkpoint only at the end
    progress: bool = True  # tqdm progress bar
    # a loss or gradient norm that is NaN or infinite: "stop" the run at that step (no
    # update, nothing saved), or "skip" the batch (at most MAX_SKIPS in a row)
    nonfinite: str = "stop"
    # a loss above this is treated as non-finite: the run diverged (e.g. 1e3 for a mean
    # cross-entropy, which puts probability e^-1000 on the truth); None: no limit
    max_loss: float | None = None
    device: str = "auto"  # "auto": cuda if available, else cpu
    # the decay of an exponential moving average of the weights (Polyak averaging, as
    # timm's ModelEma and fairseq's --ema-decay keep it), which evaluation -- and so
    # best/ -- uses instead of the last step's weights; None: off. Early on the decay
    # is min(ema, (1 + step) / (10 + step)), so the first weights soon fade out
    ema: float | None = None

    def __post_init__(self) -> None:
        def fail(field: str, expected: str) -> None:
            raise ValueError(
                f"TrainerConfig field `{field}` must be {expected}, got {getattr(self, field)!r}."
            )

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_real(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        if not is_int(self.max_steps) or self.max_steps < 1:
            fail("max_steps", "a positive integer")
        if self.max_minutes is not None and (
            not is_real(self.max_minutes) or self.max_minutes <= 0
        ):
            fail("max_minutes", "None or a positive number")
        if not is_real(self.lr) or self.lr <= 0:
            fail("lr", "a positive finite float")
        if self.optimizer not in OPTIMIZERS:
            fail("optimizer", f"one of {OPTIMIZERS}")
        if not is_real(self.weight_decay) or self.weight_decay < 0:
            fail("weight_decay", "a float >= 0")
        if (
            not isinstance(self.betas, (tuple, list))
            or len(self.betas) != 2
            or not all(is_real(b) and 0 <= b < 1 for b in self.betas)
        ):
            fail("betas", "a pair of floats in [0, 1)")
        self.betas = tuple(self.betas)
        if not is_real(self.momentum) or self.momentum < 0:
            fail("momentum", "a float >= 0")
        if self.schedule not in SCHEDULES:
            fail("schedule", f"one of {SCHEDULES}")
        if not is_int(self.warmup_steps) or not 0 <= self.warmup_steps <= self.max_steps:
            fail("warmup_steps", f"an integer in [0, max_steps={self.max_steps}]")
        if not is_real(self.min_lr_ratio) or not 0 <= self.min_lr_ratio <= 1:
            fail("min_lr_ratio", "a float in [0, 1]")
        if self.clip_norm is not None and (not is_real(self.clip_norm) or self.clip_norm <= 0):
            fail("clip_norm", "None or a positive finite float")
        for field in ("eval_every", "checkpoint_every"):
            if not is_int(getattr(self, field)) or getattr(self, field) < 0:
                fail(field, "an integer >= 0 (0: only at the end)")
        if not is_int(self.log_every) or self.log_every < 1:
            fail("log_every", "a positive integer")
        if not isinstance(self.progress, bool):
            fail("progress", "a bool")
        if self.max_loss is not None and (not is_real(self.max_loss) or self.max_loss <= 0):
            fail("max_loss", "None or a positive finite float")
        if self.nonfinite not in NONFINITE:
            fail("nonfinite", f"one of {NONFINITE}")
        if self.device not in DEVICES:
            fail("device", f"one of {DEVICES}")
        if self.ema is not None and (not is_real(self.ema) or not 0 < self.ema < 1):
            fail("ema", "None or a float in (0, 1)")


def lr_multiplier(step: int, config: TrainerConfig) -> float:
    """The factor on ``config.lr`` for 0-based optimizer step `step`.

    Warmup: ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps, so the
    last warmup step uses the full rate. Then, with ``p`` going from 0 at the first
    step after warmup to 1 at the last step (``max_steps - 1``) and ``m = min_lr_ratio``:

    * constant: ``1``
    * linear:   ``m + (1 - m) * (1 - p)``
    * cosine:   ``m + (1 - m) * (1 + cos(pi * p)) / 2``
    """
    W = config.warmup_steps
    if step < W:
        return (step + 1) / W
    if config.schedule == "constant":
        return 1.0
    p = min(1.0, (step - W) / max(1, config.max_steps - 1 - W))
    m = config.min_lr_ratio
    if config.schedule == "linear":
        return m + (1 - m) * (1 - p)
    return m + (1 - m) * 0.5 * (1 + math.cos(math.pi * p))


def make_optimizer(model: nn.Module, config: TrainerConfig) -> torch.optim.Optimizer:
    """The configured optimizer; weight decay only on parameters with >= 2 dims.

    nanoGPT's rule: matrices and embeddings decay, biases and gains do not.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": group, "weight_decay": wd}
        for group, wd in ((decay, config.weight_decay), (no_decay, 0.0))
        if group
    ]
    if not groups:
        raise ValueError("Argument `model` has no trainable parameters.")
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=config.lr, betas=config.betas)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor inside nested tuples/lists/dicts to `device`; leave the rest."""
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a namedtuple
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def clip_gradients(params: Iterable[Tensor], max_norm: float | None) -> tuple[Tensor, Tensor]:
    """Global-norm clipping: if ||g|| > c then g <- c g / ||g||, over all of `params`.

    Returns the pre-clip norm and whether it was clipped, as tensors, so a training loop
    need not wait for the GPU each step. With ``max_norm=None`` nothing is scaled, but
    the norm is still computed (it is worth logging).
    """
    max_norm = math.inf if max_norm is None else max_norm
    grad_norm = torch.nn.utils.clip_grad_norm_(list(params), max_norm)
    return grad_norm, grad_norm > max_norm


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"``: CUDA where available, else the CPU; ``"cpu"``, ``"cuda"`` as named
    (ValueError if CUDA is asked for and absent)."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("Argument `device` is 'cuda', but CUDA is not available on this machine")
    if name == "cuda" and distributed.launched():  # one GPU per process of a group
        return torch.device("cuda", distributed.local_rank())
    return torch.device(name)


class Trainer:
    """Model-agnostic training loop with clipping, schedules, logging and exact resume.

    Args:
        config: a :class:`TrainerConfig`.
        model: any ``nn.Module``; moved to the configured device.
        step_fn: ``step_fn(model, batch) -> (loss, stats)``; `loss` is a scalar tensor,
            `stats` a dict of scalars (floats or 0-dim tensors). ``stats["items"]`` counts
            the units of work in the batch (characters, tokens, sequences) for the
            throughput ``items_per_s``; without it each step counts as one item. Other
            stats are averaged over the log window into the log record.
        train_batches: an iterable of batches (a list, a DataLoader), iterated again
            when exhausted -- ``trainer.epoch`` counts the completed passes -- or a
            callable returning the next batch. Tensors in a batch are moved to the
            device before `step_fn` sees it.
        eval_fn: ``eval_fn(model) -> dict[str, float]``, run every ``eval_every`` steps
            and at the end, in ``model.eval()`` mode under ``torch.no_grad()``. It may
            draw random numbers (sampling text): the global RNG states are restored
            afterwards, so evaluation never changes the training run.
        callbacks: ``{event: fn or [fns]}``, the same as calling :meth:`add_callback`.

    Events (each ``fn(trainer, ...)``): ``on_log(trainer, record)`` after each log
    record; ``on_eval(trainer, metrics)`` after each evaluation;
    ``on_checkpoint(trainer)`` every ``checkpoint_every`` steps and at the end -- the
    task saves there, e.g. with :func:`rnnkit.checkpoint.save_checkpoint`. A callback
    may call :meth:`stop` to end training after the current step.

    With ``config.ema`` the trainer keeps an exponential moving average of the trained
    parameters (buffers such as batch-norm statistics stay the model's own). Evaluation
    and ``on_eval`` run with the average in the model (:meth:`averaged_weights`), so a
    callback that saves the best weights there saves the average; ``on_checkpoint``
    sees the last step's weights, and :meth:`state_dict` carries the average.
    """

    def __init__(
        self,
        config: TrainerConfig,
        model: nn.Module,
        step_fn: StepFn,
        *,
        train_batches: Iterable[Any] | Callable[[], Any],
        eval_fn: EvalFn | None = None,
        callbacks: Mapping[str, Callable[..., Any] | Iterable[Callable[..., Any]]] | None = None,
    ) -> None:
        if not isinstance(config, TrainerConfig):
            raise TypeError(f"Argument `config` must be a TrainerConfig, got {type(config)!r}.")
        self.config = config
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        # under torchrun: rank 0's weights everywhere, and from here on each rank draws
        # random numbers of its own (dropout, augmentation)
        self.world = distributed.world_size()
        if self.world > 1:
            distributed.broadcast_module(self.model)
            distributed.offset_rng()
        self.step_fn = step_fn
        self.train_batches = train_batches
        self.eval_fn = eval_fn
        self.optimizer = make_optimizer(model, config)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_multiplier(step, config)
        )
        self.step = 0  # optimizer steps taken
        self.budget_steps: int | None = None  # max_steps planned by the time budget, once known
        self.train_s = 0.0  # training time over all fit()s, evaluation and checkpoints not
        self.step_s: float | None = None  # the time budget's moving average time per step
        self.skipped_batches = 0  # batches skipped for a non-finite loss (nonfinite="skip")
        self._skipped = 0  # of them, in a row
        self._window: _Window | None = None  # the log window of the fit() in progress
        self._resumed_window: _Window | None = None  # one restored by load_state_dict
        self.epoch = 0  # completed passes over an iterable train_batches
        self.elapsed_s = 0.0  # wall time spent in fit(), over all runs
        self.history: list[dict[str, Any]] = []  # log records and eval records
        self.last_eval: dict[str, float] | None = None
        self._callbacks: dict[str, list[Callable[..., Any]]] = {event: [] for event in EVENTS}
        self._extra_state: dict[str, tuple[Callable[[], Any], Callable[[Any], None]]] = {}
        self._batch_iter: Any = None
        self._stop = False
        self._bar: Any = None
        # the trained parameters and their moving average (config.ema), which fit()
        # starts from the weights it finds, so that weights loaded after __init__ count
        self._trained = [p for p in self.model.parameters() if p.requires_grad]
        self.averaged: list[Tensor] | None = None
        self.items_name = "items"  # what stats["items"] counts, for the progress bar
        self.progress_keys: list[str] = []  # stats shown on the progress bar besides loss
        for event, fns in (callbacks or {}).items():
            for fn in [fns] if callable(fns) else fns:
                self.add_callback(event, fn)

    # -- hooks ------------------------------------------------------------------------
    def add_callback(self, event: str, fn: Callable[..., Any]) -> None:
        """Call ``fn(trainer, ...)`` on `event` (one of ``EVENTS``)."""
        if event not in self._callbacks:
            raise ValueError(f"Argument `event` must be one of {EVENTS}, got {event!r}.")
        self._callbacks[event].append(fn)

    def _fire(self, event: str, *args: Any) -> None:
        if not self._callbacks[event]:
            return
        # a callback that prints (a validation line) prints above the bar, not into it
        with tqdm.external_write_mode():
            for fn in self._callbacks[event]:
                fn(self, *args)

    def add_extra_state(
        self, name: str, get_state: Callable[[], Any], set_state: Callable[[Any], None]
    ) -> None:
        """Save ``get_state()`` under `name` in :meth:`state_dict`; give it to ``set_state``.

        For what only the task knows: its data cursor, a hidden state carried across
        truncated-BPTT windows. ``get_state()`` must return weights_only-loadable values
        (tensors, dicts, lists, numbers, strings). An object with torch-style methods
        registers as ``add_extra_state("data", data.state_dict, data.load_state_dict)``.
        """
        if name in self._extra_state:
            raise ValueError(f"Argument `name`: extra state {name!r} is already registered.")
        self._extra_state[name] = (get_state, set_state)

    def set_max_steps(self, max_steps: int) -> None:
        """Change where training ends, e.g. from a time budget measured in the first steps.

        The learning-rate schedule follows (it reads ``config.max_steps`` each step).
        """
        if not isinstance(max_steps, int) or max_steps < max(1, self.step):
            raise ValueError(
                f"Argument `max_steps` must be an integer >= the current step {self.step}, "
                f"got {max_steps!r}."
            )
        self.config.max_steps = max_steps
        if self._bar is not None:
            self._bar.total = max_steps
            self._bar.refresh()

    def stop(self) -> None:
        """Ask :meth:`fit` to stop after the current step (e.g. early stopping)."""
        self._stop = True

    # -- the loop ---------------------------------------------------------------------
    def _next_batch(self) -> Any:
        if callable(self.train_batches):
            return self.train_batches()
        if self._batch_iter is None:
            self._batch_iter = iter(self.train_batches)
        try:
            return next(self._batch_iter)
        except StopIteration:
            self.epoch += 1
            self._batch_iter = iter(self.train_batches)
            try:
                return next(self._batch_iter)
            except StopIteration:
                raise ValueError(
                    "Argument `train_batches` yielded no batches on a new pass: it is empty "
                    "or a one-shot iterator; pass a list, a DataLoader or a callable."
                ) from None

    def fit(self) -> list[dict[str, Any]]:
        """Train from the current step to ``config.max_steps`` (or :meth:`stop`).

        Each step: zero the gradients, ``loss, stats = step_fn(model, batch)``, backward,
        clip the global gradient norm to ``clip_norm``, optimizer step, schedule step.
        Returns :attr:`history`.
        """
        cfg = self.config
        self._stop = False
        self.model.train()
        start_step, fit_start = self.step, time.perf_counter()
        elapsed_before = self.elapsed_s
        window = self._window = self._resumed_window or _Window()
        self._resumed_window = None
        budget: dict[str, float] = {}  # the time budget's view of this fit()
        if cfg.ema is not None and self.averaged is None:
            self.averaged = [p.detach().clone() for p in self._trained]
        last_eval_step = last_checkpoint_step = -1
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            disable=not (cfg.progress and distributed.is_main()),
            desc="train",
        )
        self._bar = bar
        try:
            while self.step < cfg.max_steps and not self._stop:
                lr = self.optimizer.param_groups[0]["lr"]  # the rate this step uses
                self.optimizer.zero_grad(set_to_none=True)
                out = self.step_fn(self.model, to_device(self._next_batch(), self.device))
                loss, stats = (out, {}) if isinstance(out, Tensor) else out
                if loss.dim() != 0:
                    raise ValueError(
                        f"step_fn must return a scalar loss, got shape {tuple(loss.shape)}."
                    )
                loss.backward()
                if self.world > 1:  # the global batch's gradient, loss and stats
                    loss, stats = self._share(loss, stats)
                grad_norm, clipped = self._clip_gradients()
                if not self._sane(loss, grad_norm):
                    self._nonfinite(loss, grad_norm)  # raises, or skips this batch
                    continue
                self._skipped = 0
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                if self.averaged is not None:
                    self._update_average()
                bar.update(1)
                window.add(loss, grad_norm, clipped, stats, lr)

                if self.step % cfg.log_every == 0:
                    self.elapsed_s = elapsed_before + time.perf_counter() - fit_start
                    self._log(window.record(self.step, self.elapsed_s), bar)
                    self.train_s += window.seconds
                    if self.world > 1:  # the slowest rank's time: every rank decides alike
                        self.train_s = distributed.max_float(self.train_s)
                    window = self._window = _Window()
                    if cfg.max_minutes is not None:
                        self._spend_time_budget(budget)
                if cfg.eval_every and self.step % cfg.eval_every == 0:
                    window.pause(self.evaluate)
                    last_eval_step = self.step
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    window.pause(lambda: self._fire("on_checkpoint"))
                    last_checkpoint_step = self.step

            if window.steps:  # a partial window at max_steps or after stop()
                self.elapsed_s = elapsed_before + time.perf_counter() - fit_start
                self._log(window.record(self.step, self.elapsed_s), bar)
                self.train_s += window.seconds
                window = self._window = _Window()
            if self.step > start_step:  # the end, unless there was nothing left to do
                if last_eval_step != self.step:
                    self.evaluate()
                if last_checkpoint_step != self.step:
                    self._fire("on_checkpoint")
        finally:
            bar.close()
            self._bar = None
            self.elapsed_s = elapsed_before + time.perf_counter() - fit_start
        return self.history

    @torch.no_grad()
    def _update_average(self) -> None:
        """averaged <- d averaged + (1 - d) weights, d = min(ema, (1 + n) / (10 + n))
        after the n-th update (TensorFlow's ExponentialMovingAverage with num_updates)."""
        assert self.config.ema is not None and self.averaged is not None
        decay = min(self.config.ema, (1 + self.step) / (10 + self.step))
        for average, p in zip(self.averaged, self._trained):
            average.lerp_(p.detach(), 1.0 - decay)

    @contextlib.contextmanager
    def averaged_weights(self) -> Iterator[nn.Module]:
        """Inside, the model holds the moving average of its weights (``config.ema``);
        on leaving, its own again. Without ``ema`` (or before any step) nothing changes.
        Evaluation, and so what ``on_eval`` callbacks save as best, runs inside."""
        if self.averaged is None:
            yield self.model
            return
        own = [p.detach().clone() for p in self._trained]
        self._load_weights(self.averaged)
        try:
            yield self.model
        finally:
            self._load_weights(own)

    @torch.no_grad()
    def _load_weights(self, tensors: list[Tensor]) -> None:
        for p, t in zip(self._trained, tensors):
            p.copy_(t)

    def keep_average(self) -> None:
        """Put the moving average into the model for good (after training, so that what
        comes next -- sampling, a report -- uses the weights evaluation used). Nothing
        without ``ema``."""
        if self.averaged is not None:
            self._load_weights(self.averaged)

    def _spend_time_budget(self, seen: dict[str, float]) -> None:
        """Keep ``max_steps`` where training ends after ``max_minutes`` of training time
        (evaluation and checkpoints not counted), even when the machine slows down.

        At every log record the recent time per step (a moving average over the log
        windows; the first window of a fit() is skipped: start-up costs) plans the step
        at which the budget runs out; ``max_steps`` follows the plan when it moves by
        more than 2% (the schedule decays over it), and training ends at the first log
        record past the budget whatever the plan said. The plan, the time spent and the
        step time travel in the checkpoint (:attr:`budget_steps`, ``train_s``), so a
        resumed run continues the same budget.
        """
        budget_s = self.config.max_minutes * 60
        if "step" not in seen:
            seen.update(step=self.step, time=self.train_s)
            return
        steps, seconds = self.step - seen["step"], self.train_s - seen["time"]
        seen.update(step=self.step, time=self.train_s)
        if steps > 0:
            rate = seconds / steps
            self.step_s = rate if self.step_s is None else 0.7 * self.step_s + 0.3 * rate
        if self.train_s >= budget_s:  # spent: this is the end
            self.budget_steps = self.step
            self.set_max_steps(self.step)
            return
        if self.step_s is None or self.step < max(20, self.config.warmup_steps):
            return
        plan = self.step + int((budget_s - self.train_s) / self.step_s)
        if self.budget_steps is None or abs(plan - self.config.max_steps) > 0.02 * plan:
            self.budget_steps = max(self.step + 1, plan)
            self.set_max_steps(self.budget_steps)

    def _share(self, loss: Tensor, stats: Mapping[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        """(the global batch's loss, its stats), the gradients made the global batch's.

        Each rank's loss is a mean over its ``stats["items"]`` (one item without it); one
        allreduce weighs every rank's gradients, loss and stats by its items
        (:func:`rnnkit.distributed.average_gradients`), so the gradient is exactly one
        process's on the whole batch, also when the shares differ (or are empty: 0
        items). ``items`` is summed.
        """
        weight = stats.get("items", 1)
        keys = [k for k in stats if k != "items"]
        values = [loss] + [torch.as_tensor(stats[k], device=loss.device) for k in keys]
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        total, means = distributed.average_gradients(params, weight, values)
        shared: dict[str, Any] = dict(zip(keys, means[1:]))
        if "items" in stats:
            shared["items"] = total
        return means[0], shared

    def _sane(self, loss: Tensor, grad_norm: Tensor) -> bool:
        """A finite loss (at most ``max_loss``) and a finite gradient norm."""
        loss = loss.detach()
        ok = torch.isfinite(loss) & torch.isfinite(grad_norm)
        if self.config.max_loss is not None:
            ok &= loss <= self.config.max_loss
        return bool(ok)

    def _nonfinite(self, loss: Tensor, grad_norm: Tensor) -> None:
        """A NaN, infinite or diverged loss or gradient: stop before the update, or skip it."""
        value = float(loss.detach())
        if not math.isfinite(value):
            what = f"the loss is {value}"
        elif not torch.isfinite(grad_norm):
            what = f"the gradient norm is {float(grad_norm)}"
        else:
            what = f"the loss is {value:.4g}, above max_loss={self.config.max_loss:g} (diverged)"
        self.optimizer.zero_grad(set_to_none=True)
        self._skipped += 1
        if self.config.nonfinite == "skip" and self._skipped <= MAX_SKIPS:
            self.skipped_batches += 1
            return
        hint = " (nonfinite=skip skips such batches)" if self.config.nonfinite == "stop" else ""
        raise NonFiniteLossError(
            f"step {self.step + 1}: {what}; training stopped before the update{hint}, "
            "e.g. lower the learning rate"
        )

    def _clip_gradients(self) -> tuple[Tensor, Tensor]:
        params = (p for g in self.optimizer.param_groups for p in g["params"])
        return clip_gradients(params, self.config.clip_norm)

    def _log(self, record: dict[str, Any], bar: Any) -> None:
        self.history.append(record)
        postfix = {"loss": f"{record['loss']:.4f}"}
        for key in self.progress_keys:  # the task's own stats, e.g. bits per character
            if key in record:
                postfix[key] = f"{record[key]:.4f}"
        postfix[f"{self.items_name}/s"] = f"{record['items_per_s']:.4g}"
        postfix["lr"] = f"{record['lr']:.2e}"
        bar.set_postfix(postfix)
        self._fire("on_log", record)

    def evaluate(self) -> dict[str, float] | None:
        """Run ``eval_fn`` in eval mode without gradients, record and report the metrics.

        The model's train/eval mode and the global RNG states are restored afterwards.
        Returns None when there is no ``eval_fn``.
        """
        if self.eval_fn is None:
            return None
        was_training, rng = self.model.training, rng_state()
        with self.averaged_weights():
            self.model.eval()
            try:
                with torch.no_grad():
                    metrics = {k: float(v) for k, v in self.eval_fn(self.model).items()}
            finally:
                self.model.train(was_training)
                set_rng_state(rng)
            self.last_eval = metrics
            self.history.append({"step": self.step, **{f"eval_{k}": v for k, v in metrics.items()}})
            self._fire("on_eval", metrics)
        return metrics

    # -- state ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything but the weights needed to resume exactly; weights_only-loadable."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "elapsed_s": self.elapsed_s,
            "history": [dict(r) for r in self.history],
            "rng": rng_state(),
            "extra": {name: get() for name, (get, _) in self._extra_state.items()},
            "budget_steps": self.budget_steps,
            "train_s": self.train_s,
            "step_s": self.step_s,
            # the log window in progress, so a resumed run logs the means it would have
            "window": self._window.state_dict() if self._window is not None else None,
            "config": asdict(self.config),  # for reference; the live config is used
            # under torchrun: every rank's generators (dropout, augmentation), in rank order
            "world_size": self.world,
            "rng_ranks": distributed.all_gather_objects(rng_state()) if self.world > 1 else None,
            "averaged": [t.clone() for t in self.averaged] if self.averaged is not None else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output; call it last, just before :meth:`fit`.

        The global RNGs are set here, so anything drawing random numbers between this
        call and ``fit()`` would shift the resumed run away from the uninterrupted one.
        Every registered extra state must be in `state` and vice versa.
        """
        saved, registered = set(state["extra"]), set(self._extra_state)
        if saved != registered:
            raise ValueError(
                f"extra state mismatch: the state has {sorted(saved)}, this trainer "
                f"registered {sorted(registered)} (see Trainer.add_extra_state)."
            )
        averaged = state.get("averaged")
        if averaged is not None and len(averaged) != len(self._trained):
            raise ValueError(
                f"the state's moving average has {len(averaged)} tensors, this model "
                f"{len(self._trained)} trained parameters: it is another model's state."
            )
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.elapsed_s = float(state["elapsed_s"])
        self.history = [dict(r) for r in state["history"]]
        window = state.get("window")
        self._resumed_window = _Window.from_state(window, self.device) if window else None
        self.budget_steps = state.get("budget_steps")
        self.train_s = float(state.get("train_s", state["elapsed_s"]))
        self.step_s = state.get("step_s")
        if self.budget_steps is not None and self.config.max_minutes is not None:
            self.set_max_steps(max(self.budget_steps, self.step))  # decided before: keep it
        for name, (_, set_fn) in self._extra_state.items():
            set_fn(state["extra"][name])
        self._batch_iter = None  # an iterable restarts; its position is the task's business
        # a run saved without ema and resumed with it averages from the weights it has
        self.averaged = (
            [t.to(p.device, p.dtype).clone() for t, p in zip(averaged, self._trained)]
            if averaged is not None and self.config.ema is not None
            else None
        )
        ranks = state.get("rng_ranks")
        if ranks and len(ranks) == self.world:
            set_rng_state(ranks[distributed.rank()])
        else:  # saved on another number of processes: rank 0's, and new ones for the rest
            set_rng_state(state["rng"])
            if self.world > 1:
                distributed.offset_rng()

    def write_history(self, path: str | Path) -> None:
        """Write :attr:`history` as ``.csv`` (one column per key seen) or ``.jsonl``."""
        path = Path(path)
        if path.suffix == ".jsonl":
            text = "".join(json.dumps(record) + "\n" for record in self.history)
        elif path.suffix == ".csv":
            columns = list(dict.fromkeys(k for record in self.history for k in record))
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.history)
            text = buffer.getvalue()
        else:
            raise ValueError(f"Argument `path` must end in .csv or .jsonl, got {str(path)!r}.")
        atomic_write_bytes(path, text.encode("utf-8"))


class _Window:
    """Running sums over the steps since the last log record.

    Sums stay tensors until the record is made, so the loop syncs with the GPU only
    once per log window.
    """

    def __init__(self) -> None:
        self.steps = 0
        self.loss: Any = 0.0
        self.grad_norm: Any = 0.0
        self.clipped: Any = 0.0
        self.items: Any = 0.0
        self.stats: dict[str, Any] = {}
        self.lr = 0.0
        self.start = time.perf_counter()
        self.paused_s = 0.0  # eval and checkpoint time, left out of the throughput

    def add(
        self, loss: Tensor, grad_norm: Tensor, clipped: Tensor, stats: Mapping, lr: float
    ) -> None:
        self.steps += 1
        self.lr = lr  # the rate of the window's last step
        self.loss = self.loss + loss.detach()
        self.grad_norm = self.grad_norm + grad_norm
        self.clipped = self.clipped + clipped.float()
        for key, value in stats.items():
            value = value.detach() if isinstance(value, Tensor) else value
            if key == "items":
                self.items = self.items + value
            else:
                self.stats[key] = self.stats.get(key, 0.0) + value
        if "items" not in stats:
            self.items = self.items + 1

    def state_dict(self) -> dict[str, Any]:
        """The sums so far (not the timing): a resumed run logs the same window means."""
        return {
            "steps": self.steps,
            "lr": self.lr,
            "loss": float(self.loss),
            "grad_norm": float(self.grad_norm),
            "clipped": float(self.clipped),
            "stats": {k: float(v) for k, v in self.stats.items()},
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], device: torch.device) -> _Window:
        window = cls()
        if state["steps"]:  # the sums were float32 tensors: continue them as such

            def tensor(v: float) -> Tensor:
                return torch.tensor(v, dtype=torch.float32, device=device)

            window.steps, window.lr = int(state["steps"]), float(state["lr"])
            window.loss, window.grad_norm = tensor(state["loss"]), tensor(state["grad_norm"])
            window.clipped = tensor(state["clipped"])
            window.stats = {k: tensor(v) for k, v in state["stats"].items()}
        return window

    def pause(self, fn: Callable[[], Any]) -> None:
        start = time.perf_counter()
        fn()
        self.paused_s += time.perf_counter() - start

    def record(self, step: int, elapsed_s: float) -> dict[str, Any]:
        n = self.steps
        seconds = max(time.perf_counter() - self.start - self.paused_s, 1e-9)
        self.seconds = seconds  # training time of the window: what a time budget spends
        return {
            "step": step,
            "loss": float(self.loss) / n,  # mean over the window
            "lr": self.lr,  # of the window's last step
            "grad_norm": float(self.grad_norm) / n,  # mean pre-clip global norm
            "clipped": float(self.clipped) / n,  # fraction of steps that were clipped
            "items_per_s": float(self.items) / seconds,
            "elapsed_s": elapsed_s,
            **{key: float(value) / n for key, value in self.stats.items()},
        }
