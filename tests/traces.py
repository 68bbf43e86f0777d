"""The gradient-trace check every task's tests share: a run traces ||dL/dh_t|| at each
evaluation (``gradients.json``), and ``rnnkit gradients RUN`` measures the same norms
again on the trained run's own data."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from rnnkit.cli import main
from rnnkit.diagnostics import gradients_through_time, read_trace


def check_trace(
    run: Path, task: ModuleType, steps: dict[str, int], capsys: pytest.CaptureFixture
) -> list[dict]:
    """`run` (a finished run of `task`) traced every evaluation; each layer named in
    `steps` recorded that many steps; its best weights measured again through the
    task's ``gradient_probe`` give the norms traced at the best step; the command
    prints every layer and writes both pictures. Returns the trace."""
    points = read_trace(run / "gradients.json")
    assert points and [p["step"] for p in points] == sorted({p["step"] for p in points})
    for p in points:
        recorded = {g.name: len(g.norms) for g in p["layers"]}
        assert recorded == steps, recorded
        assert all(n >= 0 for g in p["layers"] for n in g.norms)
    model = task.load(run)
    again = gradients_through_time(model, task.gradient_probe(model, log=lambda m: None))
    traced = next(p for p in points if p["step"] == model.meta["step"])
    for now, then in zip(again, traced["layers"], strict=True):
        assert now.name == then.name
        assert now.norms == pytest.approx(then.norms, rel=1e-3, abs=1e-9)
        assert now.sigma_max == pytest.approx(then.sigma_max, rel=1e-5)
    capsys.readouterr()
    out = run.parent / f"{run.name}-gradients.png"
    assert main(["gradients", str(run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in steps), printed
    assert f"traced at {len(points)} evaluations" in printed
    for png in (out, out.with_name(out.stem + "-training.png")):
        assert png.read_bytes()[:4] == b"\x89PNG"
    return points
