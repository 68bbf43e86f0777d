"""The model-agnostic training loop: learning, clipping, schedules, hooks, exact resume."""

from __future__ import annotations

import csv
import json
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnkit.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from rnnkit.trainer import Trainer, TrainerConfig, lr_multiplier


def config(**overrides) -> TrainerConfig:
    defaults = dict(max_steps=20, lr=1e-2, log_every=1, progress=False, device="cpu")
    return TrainerConfig(**{**defaults, **overrides})


def regression_data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)  # (N, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.01 * torch.randn(n, 1, generator=g)
    return x, y  # (N, 4), (N, 1)


def mse_step(model, batch):
    x, y = batch
    return F.mse_loss(model(x), y), {"items": x.shape[0]}


# -- learning -------------------------------------------------------------------------


def test_toy_regression_loss_falls():
    torch.manual_seed(0)
    x, y = regression_data()
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]  # 4 batches
    trainer = Trainer(
        config(max_steps=150, lr=0.05, log_every=10, schedule="cosine", warmup_steps=10),
        nn.Linear(4, 1),
        mse_step,
        train_batches=batches,
    )
    history = trainer.fit()
    assert trainer.step == 150
    assert trainer.epoch == 37  # 150 steps over 4 batches: 37 full passes
    assert history[-1]["loss"] < 0.01 * history[0]["loss"]
    record = history[-1]
    assert {"step", "loss", "lr", "grad_norm", "clipped", "items_per_s", "elapsed_s"} <= set(record)
    assert record["items_per_s"] > 0


def test_toy_classifier_with_eval_fn_and_callable_batches():
    torch.manual_seed(0)
    x = torch.randn(128, 2)
    labels = (x[:, 0] * x[:, 1] > 0).long()  # XOR-like quadrants
    model = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2))

    def next_batch():
        idx = torch.randint(0, 128, (32,))
        return x[idx], labels[idx]

    def step_fn(model, batch):
        xb, yb = batch
        logits = model(xb)  # (B, 2)
        acc = (logits.argmax(-1) == yb).float().mean()
        return F.cross_entropy(logits, yb), {"items": len(yb), "acc": acc}

    modes = []

    def eval_fn(model):
        modes.append((model.training, torch.is_grad_enabled()))
        return {"acc": (model(x).argmax(-1) == labels).float().mean()}

    trainer = Trainer(
        config(max_steps=300, lr=0.05, log_every=50, eval_every=100),
        model,
        step_fn,
        train_batches=next_batch,
        eval_fn=eval_fn,
    )
    trainer.fit()
    assert modes == [(False, False)] * 3  # steps 100, 200, 300; eval mode, no grad
    assert model.training
    assert trainer.last_eval["acc"] > 0.9
    train_records = [r for r in trainer.history if "loss" in r]
    assert train_records[-1]["loss"] < 0.5 * train_records[0]["loss"]
    assert "acc" in train_records[-1]
    assert [r["step"] for r in trainer.history if "eval_acc" in r] == [100, 200, 300]


# -- clipping ---------------------------------------------------------------------------


def global_grad_norm(model: nn.Module) -> float:
    return math.sqrt(sum(p.grad.double().pow(2).sum().item() for p in model.parameters()))


@pytest.mark.parametrize("clip_norm", [0.5, None])
def test_clipping_bounds_the_norm_and_logs_the_preclip_norm(clip_norm):
    torch.manual_seed(0)
    x, y = regression_data()
    batch = (x, 100 * y)  # large targets: large gradients
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    reference = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    reference.load_state_dict(model.state_dict())
    before = [p.detach().clone() for p in model.parameters()]

    # Independent pre-clip norm on an identical copy.
    F.mse_loss(reference(x), 100 * y).backward()
    expected_norm = global_grad_norm(reference)
    assert expected_norm > 10

    cfg = config(max_steps=1, lr=1.0, optimizer="sgd", clip_norm=clip_norm)
    trainer = Trainer(cfg, model, mse_step, train_batches=[batch])
    trainer.fit()
    record = trainer.history[0]
    assert record["grad_norm"] == pytest.approx(expected_norm, rel=1e-5)
    # SGD with lr=1: the update is exactly the (clipped) gradient.
    update = math.sqrt(
        sum((b - p.detach()).pow(2).sum().item() for b, p in zip(before, model.parameters()))
    )
    if clip_norm is None:
        assert record["clipped"] == 0.0
        assert update == pytest.approx(expected_norm, rel=1e-5)
    else:
        assert record["clipped"] == 1.0
        assert global_grad_norm(model) <= clip_norm + 1e-6  # grads left after the last step
        assert update == pytest.approx(clip_norm, rel=1e-5)


# -- schedules --------------------------------------------------------------------------


def test_schedule_values_match_the_formulas():
    c = config(max_steps=11, warmup_steps=4, schedule="cosine", min_lr_ratio=0.1)
    assert [lr_multiplier(s, c) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    # after warmup p runs from 0 (step 4) to 1 (step 10 = max_steps - 1)
    assert lr_multiplier(4, c) == pytest.approx(1.0)
    assert lr_multiplier(7, c) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_multiplier(10, c) == pytest.approx(0.1)
    lin = config(max_steps=11, warmup_steps=0, schedule="linear", min_lr_ratio=0.0)
    assert [lr_multiplier(s, lin) for s in (0, 5, 10)] == pytest.approx([1.0, 0.5, 0.0])
    const = config(max_steps=11, warmup_steps=2, schedule="constant")
    assert [lr_multiplier(s, const) for s in (0, 1, 2, 10)] == [0.5, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
def test_trainer_uses_the_schedule(schedule):
    cfg = config(max_steps=12, lr=0.2, warmup_steps=3, schedule=schedule, min_lr_ratio=0.25)
    x, y = regression_data(8)
    trainer = Trainer(cfg, nn.Linear(4, 1), mse_step, train_batches=[(x, y)])
    trainer.fit()
    logged = [r["lr"] for r in trainer.history]
    assert logged == pytest.approx([0.2 * lr_multiplier(s, cfg) for s in range(12)])


# -- hooks --------------------------------------------------------------------------------


def test_callbacks_cadence_stop_and_epochs():
    x, y = regression_data(12)
    batches = [(x[i : i + 4], y[i : i + 4]) for i in (0, 4, 8)]
    events = []
    trainer = Trainer(
        config(max_steps=12, log_every=4, eval_every=5, checkpoint_every=5),
        nn.Linear(4, 1),
        mse_step,
        train_batches=batches,
        eval_fn=lambda m: {"zero": 0.0},
        callbacks={
            "on_log": lambda t, r: events.append(("log", r["step"])),
            "on_eval": lambda t, m: events.append(("eval", t.step)),
            "on_checkpoint": [lambda t: events.append(("ckpt", t.step))],
        },
    )
    trainer.fit()
    assert events == [
        ("log", 4),
        ("eval", 5),
        ("ckpt", 5),
        ("log", 8),
        ("eval", 10),
        ("ckpt", 10),
        ("log", 12),
        ("eval", 12),
        ("ckpt", 12),
    ]
    assert trainer.epoch == 3  # 12 steps over 3 batches, the 4th pass is complete but unseen

    stopper = Trainer(config(max_steps=50), nn.Linear(4, 1), mse_step, train_batches=batches)
    stopper.add_callback("on_log", lambda t, r: t.stop() if r["step"] == 7 else None)
    stopper.fit()
    assert stopper.step == 7
    with pytest.raises(ValueError, match="on_batch_end"):
        stopper.add_callback("on_batch_end", print)


def test_one_shot_iterator_is_rejected_on_its_second_pass():
    x, y = regression_data(8)
    trainer = Trainer(config(max_steps=3), nn.Linear(4, 1), mse_step, train_batches=iter([(x, y)]))
    with pytest.raises(ValueError, match="train_batches"):
        trainer.fit()


def test_write_history_csv_and_jsonl(tmp_path):
    x, y = regression_data(8)
    trainer = Trainer(
        config(max_steps=4, eval_every=2),
        nn.Linear(4, 1),
        mse_step,
        train_batches=[(x, y)],
        eval_fn=lambda m: {"mse": F.mse_loss(m(x), y)},
    )
    trainer.fit()
    trainer.write_history(tmp_path / "h.jsonl")
    lines = (tmp_path / "h.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == trainer.history
    trainer.write_history(tmp_path / "h.csv")
    rows = list(csv.DictReader((tmp_path / "h.csv").open()))
    assert len(rows) == len(trainer.history) == 6  # 4 log records + 2 eval records
    assert float(rows[0]["loss"]) == pytest.approx(trainer.history[0]["loss"])
    assert rows[2]["eval_mse"] != "" and rows[0]["eval_mse"] == ""
    with pytest.raises(ValueError, match="h.txt"):
        trainer.write_history(tmp_path / "h.txt")


# -- exact resume ----------------------------------------------------------------------


class Stream:
    """A data source with a cursor, drawing noise from python's and NumPy's RNGs."""

    def __init__(self) -> None:
        self.x, self.y = regression_data(48, seed=1)  # 6 batches: step 10 is mid-epoch
        self.cursor = 0

    def __call__(self):
        i = self.cursor % 48
        self.cursor += 8
        noise = random.gauss(0, 0.1) + float(np.random.randn()) * 0.1
        return self.x[i : i + 8], self.y[i : i + 8] + noise

    def state_dict(self) -> dict:
        return {"cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.cursor = state["cursor"]


def dropout_model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 1))


def resume_setup(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    model = dropout_model()
    stream = Stream()
    cfg = config(
        max_steps=20, lr=1e-2, optimizer="adamw", weight_decay=0.1, schedule="cosine",
        warmup_steps=3, clip_norm=0.5, checkpoint_every=5,
    )  # fmt: skip

    def eval_fn(model):
        torch.rand(3)  # eval may draw random numbers (sampling); must not shift training
        random.random()
        return {"mse": F.mse_loss(model(stream.x), stream.y)}

    trainer = Trainer(cfg, model, mse_step, train_batches=stream, eval_fn=eval_fn)
    trainer.add_extra_state("data", stream.state_dict, stream.load_state_dict)
    return trainer


def train_records(trainer: Trainer) -> list[tuple]:
    return [(r["step"], r["loss"], r["lr"], r["grad_norm"]) for r in trainer.history if "loss" in r]


def stopped_and_resumed(setup, tmp_path) -> tuple[Trainer, Checkpoint]:
    """A run of ``setup(0)`` stopped at step 10 (checkpointed there), then resumed from
    that checkpoint by ``setup(123)`` (another init and RNG: all must come from the
    checkpoint) and trained to the end; the resumed trainer and the checkpoint."""
    first = setup(0)
    first.add_callback(
        "on_checkpoint",
        lambda t: save_checkpoint(
            tmp_path / "ckpt",
            model_state=t.model.state_dict(),
            train_state=t.state_dict(),
            meta={"kind": "toy"},
        ),
    )
    first.add_callback("on_log", lambda t, r: t.stop() if t.step == 10 else None)
    first.fit()
    assert first.step == 10
    resumed = setup(123)
    ckpt = load_checkpoint(tmp_path / "ckpt", expected_kind="toy")
    resumed.model.load_state_dict(ckpt.model_state)
    resumed.load_state_dict(ckpt.train_state)
    resumed.fit()
    return resumed, ckpt


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    full = resume_setup(seed=0)
    full.fit()
    resumed, ckpt = stopped_and_resumed(resume_setup, tmp_path)
    assert ckpt.train_state["step"] == 10

    assert resumed.step == 20
    assert train_records(resumed) == train_records(full)  # exact float equality
    assert len(train_records(full)) == 20
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_evaluation_never_changes_the_training_run():
    quiet = resume_setup(seed=0)
    quiet.eval_fn = None
    quiet.fit()
    evaluated = resume_setup(seed=0)
    evaluated.config.eval_every = 3
    evaluated.fit()
    assert len([r for r in evaluated.history if "eval_mse" in r]) == 7  # 3, 6, ..., 18, 20
    assert train_records(evaluated) == train_records(quiet)


def test_load_state_dict_requires_the_same_extra_state():
    trainer = resume_setup(seed=0)
    state = trainer.state_dict()
    other = Trainer(config(), dropout_model(), mse_step, train_batches=Stream())
    with pytest.raises(ValueError, match="data"):
        other.load_state_dict(state)


# -- the moving average of the weights ------------------------------------------------


def test_the_moving_average_is_the_formula_over_the_weights_of_every_step():
    ema = 0.8
    trainer = resume_setup(seed=0)
    trainer.config.ema = ema
    live: list[list[torch.Tensor]] = [[p.detach().clone() for p in trainer.model.parameters()]]
    trainer.add_callback(
        "on_log", lambda t, r: live.append([p.detach().clone() for p in t.model.parameters()])
    )
    seen: list[list[torch.Tensor]] = []
    trainer.eval_fn = lambda m: seen.append([p.detach().clone() for p in m.parameters()]) or {}
    trainer.fit()

    assert len(live) == 21 and len(seen) == 1  # the start, 20 steps; one evaluation
    average = live[0]
    for n, weights in enumerate(live[1:], start=1):
        d = min(ema, (1 + n) / (10 + n))  # 0.18, 0.25, ..., then 0.8 from step 26 on
        average = [d * a + (1 - d) * w for a, w in zip(average, weights)]
    for got, want, last in zip(seen[0], average, live[-1]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(got, last)  # the average, not the last step's weights
    for p, last in zip(trainer.model.parameters(), live[-1]):
        assert torch.equal(p, last)  # after evaluating, the model holds its own weights
    trainer.keep_average()  # and for good, when asked: the weights evaluation saw
    for p, got in zip(trainer.model.parameters(), seen[0]):
        assert torch.equal(p, got)


def test_the_average_changes_no_training_step():
    plain = resume_setup(seed=0)
    plain.config.eval_every = 3
    plain.fit()
    averaged = resume_setup(seed=0)
    averaged.config.eval_every = 3
    averaged.config.ema = 0.9
    averaged.fit()
    assert train_records(averaged) == train_records(plain)
    evals = [[r["eval_mse"] for r in t.history if "eval_mse" in r] for t in (plain, averaged)]
    assert len(evals[0]) == 7 and evals[0] != evals[1]  # evaluated on other weights


def test_a_resumed_run_keeps_the_moving_average(tmp_path):
    def setup(seed: int) -> Trainer:
        trainer = resume_setup(seed)
        trainer.config.ema = 0.9
        return trainer

    full = setup(seed=0)
    full.fit()
    resumed, ckpt = stopped_and_resumed(setup, tmp_path)
    for a, b in zip(full.averaged, resumed.averaged):
        assert torch.equal(a, b)
    assert full.last_eval == resumed.last_eval

    other = Trainer(config(ema=0.9), nn.Linear(4, 1), mse_step, train_batches=Stream())
    other.add_extra_state("data", lambda: None, lambda s: None)
    with pytest.raises(ValueError, match="moving average has 4 tensors.*2 trained"):
        other.load_state_dict(ckpt.train_state)


# -- config validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_steps", 0),
        ("max_steps", 2.5),
        ("lr", -1.0),
        ("lr", float("nan")),
        ("optimizer", "lion"),
        ("weight_decay", -0.1),
        ("betas", (0.9,)),
        ("betas", (0.9, 1.0)),
        ("momentum", -1),
        ("schedule", "step"),
        ("warmup_steps", 50),
        ("min_lr_ratio", 2.0),
        ("clip_norm", 0.0),
        ("eval_every", -1),
        ("log_every", 0),
        ("checkpoint_every", 1.5),
        ("progress", "yes"),
        ("device", "tpu"),
        ("ema", 1.0),
        ("ema", 0.0),
    ],
)
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(
        ValueError, match=f"`{field}`.*got {value!r}".replace("(", r"\(").replace(")", r"\)")
    ):
        TrainerConfig(**{"max_steps": 20, field: value})


def test_progress_bar_runs_without_a_tty(capsys):
    x, y = regression_data(8)
    trainer = Trainer(
        config(max_steps=3, progress=True), nn.Linear(4, 1), mse_step, train_batches=[(x, y)]
    )
    trainer.fit()
    assert "train" in capsys.readouterr().err


def test_a_resume_mid_log_window_logs_the_same_means_as_a_run_never_stopped():
    def make(**config) -> Trainer:
        torch.manual_seed(0)
        model = nn.Linear(3, 1)
        x = torch.randn(8, 3)
        cfg = TrainerConfig(
            max_steps=10, log_every=4, lr=0.1, progress=False, device="cpu", **config
        )
        return Trainer(cfg, model, lambda m, b: m(b).pow(2).mean(), train_batches=[x])

    whole = make()
    whole.fit()
    # A checkpoint at step 6 falls inside the log window of steps 5-8; the run dies there.
    cut, saved = make(checkpoint_every=6), {}

    def checkpoint_then_die(t: Trainer) -> None:
        saved.update(model=dict(t.model.state_dict()), train=t.state_dict())
        t.stop()

    cut.add_callback("on_checkpoint", checkpoint_then_die)
    cut.fit()
    assert saved["train"]["window"]["steps"] == 2  # steps 5 and 6, not yet logged
    resumed = make()
    resumed.model.load_state_dict(saved["model"])
    resumed.load_state_dict(saved["train"])
    resumed.fit()
    assert [r["loss"] for r in resumed.history if "loss" in r] == [
        r["loss"] for r in whole.history if "loss" in r
    ]


def test_a_time_budget_ends_on_time_when_the_machine_slows_down(monkeypatch):
    """A fake clock: steps take 10 ms, then from step 150 on 30 ms (other programs
    started). The run must end within 5% of its 6-second budget, not at the step
    count planned from the fast start."""
    import rnnkit.trainer as trainer_module

    clock = {"t": 0.0}
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: clock["t"])
    model = nn.Linear(2, 1)
    batch = torch.randn(4, 2)
    calls = {"n": 0}

    def step_fn(m, x):
        calls["n"] += 1
        clock["t"] += 0.010 if calls["n"] < 150 else 0.030
        return m(x).pow(2).mean()

    cfg = TrainerConfig(
        max_steps=100_000, max_minutes=0.1, log_every=5, warmup_steps=10, lr=1e-3,
        schedule="linear", progress=False, device="cpu",
    )  # fmt: skip
    trainer = Trainer(cfg, model, step_fn, train_batches=[batch])
    trainer.fit()
    assert abs(trainer.train_s - 6.0) <= 0.05 * 6.0
    assert trainer.step == trainer.config.max_steps == trainer.budget_steps
    fast_plan = int(6.0 / 0.010)  # what planning from the first steps alone would run
    assert trainer.step < 0.8 * fast_plan
    state = trainer.state_dict()
    assert state["budget_steps"] == trainer.step and state["train_s"] == trainer.train_s
