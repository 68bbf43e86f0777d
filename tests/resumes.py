"""The crash-and-resume check every task's tests share: a run killed right after a
checkpoint and resumed must equal the run that was never stopped, step for step."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from rnnkit import runs
from rnnkit.checkpoint import load_checkpoint


class CrashError(RuntimeError):
    pass


def losses(out: Path) -> list[float]:
    """Every logged training loss of run `out` (its metrics.csv)."""
    return [float(r["loss"]) for r in csv.DictReader((out / "metrics.csv").open()) if r["loss"]]


def check_resumes_exactly(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    start: Callable[[Path], object],
    resume: Callable[[Path], object],
    crash_at: int = 3,
) -> None:
    """`start(out)` trains a run from scratch to its end, `resume(out)` continues one:
    ``whole`` runs through; ``cut`` is killed right after its `crash_at`-th ``latest``
    checkpoint, then resumed. Their logged losses and final weights must be equal."""
    start(tmp_path / "whole")
    real_save = runs.save_checkpoint
    saves = []

    def crash(path, **kw):
        real_save(path, **kw)
        if Path(path).name == "latest":
            saves.append(kw["meta"]["step"])
            if len(saves) == crash_at:
                raise CrashError("killed")

    monkeypatch.setattr(runs, "save_checkpoint", crash)
    with pytest.raises(CrashError):
        start(tmp_path / "cut")
    monkeypatch.setattr(runs, "save_checkpoint", real_save)
    resume(tmp_path / "cut")
    assert losses(tmp_path / "cut") == losses(tmp_path / "whole")
    a = load_checkpoint(tmp_path / "whole" / "latest").model_state
    b = load_checkpoint(tmp_path / "cut" / "latest").model_state
    assert all(torch.equal(a[k], b[k]) for k in a)
