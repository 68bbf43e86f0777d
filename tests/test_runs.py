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


def _toy_trainer(losses=None, **config) -> Trainer:
    """A linear model on a fixed batch; `losses` maps a step (1-based) to a loss to
    return instead of the real one (e.g. NaN)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    batch = torch.randn(4, 2)
    calls = {"n": 0}

    def step_fn(m, x):
        calls["n"] += 1
        loss = m(x).pow(2).mean()
        if losses and calls["n"] in losses:
            loss = loss * 0 + losses[calls["n"]]
        return loss

    cfg = TrainerConfig(**{"max_steps": 5, "progress": False, "device": "cpu", **config})
    return Trainer(cfg, model, step_fn, train_batches=[batch])


def test_with_a_moving_average_best_keeps_the_average_and_latest_the_last_weights(tmp_path):
    trainer = _toy_trainer(max_steps=6, lr=0.1, eval_every=3, ema=0.5)
    trainer.eval_fn = lambda m: {"loss": -float(trainer.step)}  # the last evaluation wins
    out = tmp_path / "run"
    runs.fit(trainer, out, {"kind": "toy"}, best=runs.KeepBest(out, {"kind": "toy"}),
             log=lambda m: None)  # fmt: skip
    best, latest = load_checkpoint(out / "best"), load_checkpoint(out / "latest")
    assert best.meta["step"] == latest.meta["step"] == 6
    for name, average, weights in zip(
        ("weight", "bias"), trainer.averaged, trainer.model.parameters()
    ):
        assert torch.equal(best.model_state[name], average)
        assert torch.equal(latest.model_state[name], weights)
        assert not torch.equal(average, weights)


def test_a_nan_loss_stops_the_run_before_the_update_and_names_the_last_checkpoint(tmp_path):
    from rnnkit.trainer import NonFiniteLossError

    trainer = _toy_trainer({4: float("nan")}, checkpoint_every=2)
    with pytest.raises(NonFiniteLossError, match=r"step 4: the loss is nan.*step 2\)"):
        runs.fit(trainer, tmp_path / "run", {"kind": "toy"}, log=lambda m: None)
    assert trainer.step == 3  # steps 1-3 taken, the NaN step not
    assert load_checkpoint(tmp_path / "run" / "latest").meta["step"] == 2
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


@pytest.mark.parametrize("huge", [1e6, 1e30])
def test_a_diverged_finite_loss_stops_the_run_like_a_nan(tmp_path, huge):
    from rnnkit.trainer import NonFiniteLossError

    trainer = _toy_trainer({3: huge}, checkpoint_every=2, max_loss=runs.MAX_LOSS)
    with pytest.raises(NonFiniteLossError, match=r"step 3: the loss is 1e\+\d+, above max_loss"):
        runs.fit(trainer, tmp_path / "run", {"kind": "toy"}, log=lambda m: None)
    assert trainer.step == 2 and load_checkpoint(tmp_path / "run" / "latest").meta["step"] == 2
    assert _toy_trainer({3: runs.MAX_LOSS}, max_loss=runs.MAX_LOSS).fit()  # at the limit: on


def test_skip_leaves_the_weights_of_a_nan_batch_alone_and_stops_after_too_many():
    from rnnkit.trainer import MAX_SKIPS, NonFiniteLossError

    trainer = _toy_trainer({2: float("inf")}, nonfinite="skip")
    trainer.fit()
    assert trainer.step == 5 and trainer.skipped_batches == 1
    always = {n: float("nan") for n in range(1, MAX_SKIPS + 5)}
    trainer = _toy_trainer(always, nonfinite="skip")
    with pytest.raises(NonFiniteLossError, match="step 1"):
        trainer.fit()
    assert trainer.skipped_batches == MAX_SKIPS


def test_a_second_process_in_the_same_run_directory_is_refused(tmp_path):
    import fcntl
    import os

    out = tmp_path / "run"
    out.mkdir()
    fd = os.open(out / runs.LOCK_FILE, os.O_RDWR | os.O_CREAT)  # another process's lock
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with pytest.raises(FileExistsError, match="is in use: another rnnkit process"):
            runs.fit(_toy_trainer(), out, {"kind": "toy"}, log=lambda m: None)
        assert not (out / "latest").exists()
    finally:
        os.close(fd)
    runs.fit(_toy_trainer(), out, {"kind": "toy"}, log=lambda m: None)  # free again
    assert load_checkpoint(out / "latest").meta["step"] == 5


def test_a_save_killed_between_its_renames_is_recovered_not_lost(tmp_path):
    out = tmp_path / "run"
    runs.fit(_toy_trainer(), out, {"kind": "toy"}, log=lambda m: None)
    (out / "latest").rename(out / ".latest.old")  # the kill: only the backup is left
    (out / ".latest.abcd1234.tmp").mkdir()  # and a killed save's staging folder
    with pytest.raises(FileExistsError, match="already holds a run"):
        runs.start_run(out, False, "toy")  # a new run must not delete it
    _, ckpt = runs.start_run(out, True, "toy")
    assert ckpt.meta["step"] == 5 and (out / "latest").is_dir()
    assert not (out / ".latest.old").exists()
    runs.save_latest(_toy_trainer(), out, {"kind": "toy"})
    assert not (out / ".latest.abcd1234.tmp").exists()  # cleaned by the next save


def test_evaluations_per_epoch_may_be_a_fraction_and_are_checked_where_set():
    from rnnkit.tasks.caption import TrainConfig as CaptionRun
    from rnnkit.tasks.sequences import RunConfig

    assert runs.eval_interval(9, 1) == 9 and runs.eval_interval(313, 2) == 156  # as before
    assert runs.eval_interval(9, 0.1) == 90  # every ten epochs of 9 batches
    assert runs.eval_interval(3, 4) == 1  # never fewer than one step apart
    config = runs.epoch_trainer_config(CaptionRun(epochs=100, evals_per_epoch=0.25), 9)
    assert config.eval_every == config.checkpoint_every == 36 and config.max_steps == 900
    for bad in (0, -1, True, "2", float("nan")):
        with pytest.raises(ValueError, match=f"`evals_per_epoch`.*{bad!r}"):
            CaptionRun(evals_per_epoch=bad)
        with pytest.raises(ValueError, match="`evals_per_epoch`"):
            RunConfig(evals_per_epoch=bad)
