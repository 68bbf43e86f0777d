"""The long-range lab: the models read each problem as stated, truncation carries the
state but not its gradient across window edges, full BPTT learns what truncation cannot,
runs resume exactly, and the command compares configurations and refuses bad input."""

from __future__ import annotations

import json

import pytest
import torch

from resumes import check_resumes_exactly
from rnnkit.cli import main
from rnnkit.data import longrange
from rnnkit.diagnostics import read_trace
from rnnkit.tasks import lab
from rnnkit.tasks.lab import LabConfig, LabModel, TrainConfig


def quiet(msg: str) -> None:
    pass


def small(**kw) -> TrainConfig:
    base = dict(steps=60, batch_size=16, eval_every=20, progress=False, device="cpu")
    return TrainConfig(**{**base, **kw})


def test_each_problem_reads_its_inputs_and_scores_against_its_baseline():
    torch.manual_seed(0)
    for problem, T, steps in [("adding", 9, 9), ("copy", 5, 25), ("rows", 1, 28)]:
        config = LabConfig(problem=problem, T=T, hidden_size=8)
        assert config.steps == steps
        model = LabModel(config)
        x, y = lab.Problem(config, quiet).fixed("val", 0) if problem != "rows" else (
            torch.rand(4, 28, 28), torch.tensor([1, 2, 3, 4]))  # fmt: skip
        out, _ = model.run(x[:4])
        assert out.shape == (4, steps, 8)
        m = model.score(x[:4], y[:4])
        assert m["loss"] > 0 and ("accuracy" in m) == (problem != "adding")
    assert lab.baseline(LabConfig(problem="copy", T=100))["loss"] == longrange.copy_baseline(100)
    irnn = LabModel(LabConfig(cell="irnn", hidden_size=6))
    cell = irnn.rnn.layers[0].cell
    assert torch.equal(cell.weight_hh, torch.eye(6)) and cell.nonlinearity == "relu"


def test_truncation_carries_the_state_across_edges_but_not_its_gradient():
    torch.manual_seed(0)
    config = LabConfig(problem="copy", T=6, hidden_size=8, cell="gru")
    model = LabModel(config)
    problem = lab.Problem(config, quiet)
    windows = lab.Windows(problem, batch_size=3, truncation=10, seed=0)
    batches = [windows() for _ in range(3)]  # 26 steps: windows of 10, 10, 6
    assert [b["x"].shape[1] for b in batches] == [10, 10, 6]
    assert [b["first"] for b in batches] == [True, False, False]
    assert [b["last"] for b in batches] == [False, False, True]
    x = torch.cat([b["x"] for b in batches], 1)
    full, _ = model.run(x)
    carried = lab.CarriedState()
    step = lab.make_step_fn(carried)
    outs = []
    for b in batches:
        if b["first"]:
            carried.reset()
        outs.append(carried(model.run, b["x"]))
    torch.testing.assert_close(torch.cat(outs, 1), full)  # the state carried exactly
    # the last window's loss: its gradient is that of a run from the carried-in state
    # held fixed, so nothing flows back past the edge
    carried.reset()
    for b in batches[:2]:
        loss, _ = step(model, b)
    state = carried.state
    model.zero_grad()
    loss, _ = step(model, batches[2])
    loss.backward()
    windowed = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out, _ = model.run(batches[2]["x"], state)
    model.loss(out, batches[2]["y"]).backward()
    for a, p in zip(windowed, model.parameters()):
        torch.testing.assert_close(a, p.grad)
    assert windows.state_dict() == {"sequence": 0, "window": 3}
    assert windows()["first"] and windows.state_dict() == {"sequence": 1, "window": 1}


def test_full_bptt_learns_the_adding_problem_where_short_truncation_cannot(tmp_path):
    """T = 12: the first marker lies in the first 6 steps; windows of 3 steps never
    carry its gradient to the answer."""
    common = dict(problem="adding", T=12, hidden_size=32)
    tc = dict(steps=400, batch_size=32, lr=1e-2, eval_every=400)
    _, full = lab.train(tmp_path / "full", LabConfig(**common), small(**tc), log=quiet)
    _, cut = lab.train(tmp_path / "cut", LabConfig(**common), small(**tc, truncation=3),
                       log=quiet)  # fmt: skip
    base = longrange.adding_baseline()
    assert full["val"]["loss"] < 0.2 * base, full["val"]
    assert cut["val"]["loss"] > 0.4 * base, cut["val"]


@pytest.mark.parametrize("synthetic", [False, True])
def test_an_interrupted_run_resumes_exactly(tmp_path, monkeypatch, synthetic):
    config = LabConfig(problem="copy", T=4, hidden_size=8, cell="lstm")
    tc = dict(steps=30, eval_every=5, truncation=7, synthetic_gradients=synthetic)

    check_resumes_exactly(
        tmp_path,
        monkeypatch,
        lambda out: lab.train(out, config, small(**tc), log=quiet),
        lambda out: lab.train(out, resume=True, log=quiet),
    )
    curve = json.loads((tmp_path / "cut" / "results.json").read_text())["train"]["curve"]
    assert [p["step"] for p in curve] == [5, 10, 15, 20, 25, 30]
    # the gradient trace came through the crash whole: one point per evaluation, equal
    trace = [read_trace(tmp_path / run / "gradients.json") for run in ("whole", "cut")]
    assert [p["step"] for p in trace[1]] == [5, 10, 15, 20, 25, 30]
    for a, b in zip(*trace, strict=True):
        assert [g.norms for g in a["layers"]] == [g.norms for g in b["layers"]]


def test_the_command_compares_configurations_and_refuses_bad_input(tmp_path, capsys):
    out = tmp_path / "lab"
    args = ["lab", "adding", "--T", "6", "--cell", "lstm", "irnn", "--clip", "1", "0",
            "--steps", "10", "--eval-every", "5", "--hidden-size", "8", "--batch-size", "8",
            "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    names = ["lstm", "lstm-clip0", "irnn", "irnn-clip0"]
    for name in names:
        assert f"| {name} |" in printed
        assert (out / name / "best").exists()
    assert (out / "curves.png").stat().st_size > 0
    assert (out / "gradients.png").read_bytes()[:4] == b"\x89PNG"
    # the figure's "end" is the best weights measured again: the trace at the best step
    norms = lab.start_and_end(*lab.run_entry(out / "lstm"))
    traced = read_trace(out / "lstm" / "gradients.json")
    best = lab.load(out / "lstm").meta["step"]
    at_best = next(p for p in traced if p["step"] == best)["layers"][0].norms
    assert norms["end"] == pytest.approx(at_best, rel=1e-4)
    assert len(norms["start"]) == 6 and norms["start"] != norms["end"]
    results = json.loads((out / "results.json").read_text())
    assert sorted(results["runs"]) == sorted(names)
    assert results["baseline"]["loss"] == pytest.approx(1 / 6)
    merged = lab.plot_labs(tmp_path / "merged.png", [out])  # bench_lab.py --curves
    assert merged.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="Argument `labs`: .* holds no finished comparison"):
        lab.plot_labs(tmp_path / "x.png", [out, tmp_path])
    assert main(args) == 0  # finished runs are kept, not trained again
    assert capsys.readouterr().out.count("finished before, kept") == 4
    cases = [
        (["lab", "adding", "--T", "0"], "Argument `T` must be an integer >= 2"),
        (["lab", "copy", "--T", "0"], "Argument `T` must be an integer >= 1"),
        (["lab", "copy", "--cell", "lsmt"], "Argument `cell` must be one of"),
        (["lab", "copy", "--init", "glorious"], "Argument `init` must be one of"),
    ]
    for argv, message in cases:
        assert main([*argv, "--out", str(tmp_path / "bad"), "--steps", "1"]) == 2, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
        assert len(err.strip().splitlines()) == 1, err
