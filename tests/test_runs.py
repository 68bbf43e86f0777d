"""Run directories: a new run never overwrites an old one, KeepBest keeps the best
evaluation (ties: the lower loss) and its state survives a resume."""

from __future__ import annotations

import math

import pytest
import torch

from rnnkit import runs
from rnnkit.checkpoint import load_checkpoint
from rnnkit.trainer import Trainer, TrainerConfig


class _Step:
    step = 0

    def __init__(self) -> None:
        self.model = torch.nn.Linear(2, 1)


def test_keep_best_keeps_the_highest_score_and_on_a_tie_the_lower_loss(tmp_path):
    best = runs.KeepBest(tmp_path, {"kind": "toy"}, metric="accuracy", higher_is_better=True)
    t = _Step()
    for step, acc, loss in [(1, 50.0, 1.0), (2, 70.0, 0.9), (3, 60.0, 0.1), (4, 70.0, 0.5)]:
        t.step = step
        best(t, {"accuracy": acc, "loss": loss})
    assert best.best == {"score": 70.0, "loss": 0.5, "step": 4} and best.value == 70.0
    assert load_checkpoint(tmp_path / "best").meta["step"] == 4


def test_keep_best_of_a_loss_and_the_state_of_runs_written_before_it(tmp_path):
    best = runs.KeepBest(tmp_path, {"kind": "toy"})  # the lowest loss
    t = _Step()
    for step, loss in [(1, 2.0), (2, 1.5), (3, 1.7)]:
        t.step = step
        best(t, {"loss": loss})
    assert best.best["step"] == 2 and best.value == 1.5
    old = runs.KeepBest(tmp_path, {"kind": "toy"})
    old.load_state_dict({"loss": 1.5, "step": 2})  # what 0.1.0 saved for a char model
    assert old.best["score"] == -1.5 and old.value == 1.5
    t.step = 4
    old(t, {"loss": 1.6})  # worse: best/ stays at step 2
    assert load_checkpoint(tmp_path / "best").meta["step"] == 2


def test_start_run_refuses_to_overwrite_and_resumes_latest(tmp_path):
    model = torch.nn.Linear(2, 1)

    def step_fn(m, batch):
        return m(batch).pow(2).mean()

    trainer = Trainer(
        TrainerConfig(max_steps=3, progress=False, device="cpu"),
        model,
        step_fn,
        train_batches=[torch.randn(4, 2)],
    )
    out, ckpt = runs.start_run(tmp_path / "run", False, "toy")
    assert ckpt is None
    runs.fit(trainer, out, {"kind": "toy"}, log=lambda m: None)
    with pytest.raises(FileExistsError, match="--resume"):
        runs.start_run(tmp_path / "run", False, "toy")
    _, ckpt = runs.start_run(tmp_path / "run", True, "toy")
    assert ckpt.meta["step"] == 3 and (tmp_path / "run" / "metrics.csv").is_file()
    with pytest.raises(ValueError):
        runs.start_run(tmp_path / "run", True, "another-kind")
    assert math.isfinite(trainer.history[-1]["loss"])
