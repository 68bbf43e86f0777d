"""Data-parallel training under torchrun, on this machine's CPUs (gloo, localhost).

Each test starts real processes through torchrun's launcher (``rnnkit train ...
--nproc 2``, or two ``torchrun --nnodes 2`` launchers meeting at a c10d rendezvous) and
holds the runs against each other: 2 processes x B/2 against 1 process x B, a killed and
resumed 2-process run against one never stopped, a resume on another number of
processes.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rnnkit import distributed
from rnnkit.checkpoint import load_checkpoint
from rnnkit.tasks import charlm

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is not available in this build",
)

CHARLM = [
    "train", "charlm", "--hidden-size", "48", "--embedding-size", "8", "--batch-size", "8",
    "--seq-len", "16", "--log-every", "4", "--eval-every", "8", "--checkpoint-every", "4",
    "--eval-chars", "3000", "--sample", "0", "--no-progress", "--precision", "fp32",
]  # fmt: skip


def rnnkit(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rnnkit", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        **kw,
    )


def losses(run: Path, column: str = "loss") -> list[float]:
    with open(run / "metrics.csv") as f:
        return [float(r[column]) for r in csv.DictReader(f) if r.get(column)]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "latest").model_state


def ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr[-3000:]


def test_two_processes_with_half_the_streams_each_train_as_one_with_all(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    ok(rnnkit(*CHARLM, "--steps", "16", "--out", str(one)))
    ok(rnnkit(*CHARLM, "--steps", "16", "--out", str(two), "--nproc", "2"))
    a, b = losses(one), losses(two)
    assert len(a) == len(b) == 4
    assert a == pytest.approx(b, rel=1e-5)
    assert losses(one, "eval_loss") == pytest.approx(losses(two, "eval_loss"), rel=1e-5)
    for name, w in weights(one).items():
        torch.testing.assert_close(weights(two)[name], w, rtol=1e-4, atol=1e-5)
    # rank 0 alone wrote: one checkpoint, one plot, and the other rank's state travels in it
    state = load_checkpoint(two / "latest").train_state
    assert state["world_size"] == 2 and len(state["rng_ranks"]) == 2
    assert (two / "loss.png").is_file()


def _kill_when_saved(cmd: list[str], out: Path, step: int) -> int:
    """Start `cmd` (torchrun and its workers) and kill -9 all of it once ``latest/`` holds
    `step` or later; the step it was killed after."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnkit", *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the launcher and its workers: one process group
    )
    meta = out / "latest" / "meta.json"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                saved = load_checkpoint(out / "latest").meta["step"] if meta.is_file() else 0
            except (OSError, ValueError):  # caught mid-save: look again
                saved = 0
            if saved >= step:
                break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # torchrun starts its workers in sessions of their own: they die with their launcher
    # (not trained on as orphans, writing into `out` while the test copies it)
    deadline = time.monotonic() + 10
    while _processes_naming(out) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _processes_naming(out), "workers outlived their killed launcher"
    return load_checkpoint(out / "latest").meta["step"]


def _processes_naming(path: Path) -> list[int]:
    """The live processes whose command line names `path`."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(path) in cmdline and state != "Z":
            found.append(int(d.name))
    return found


def test_a_killed_two_process_run_resumes_to_the_uninterrupted_one(tmp_path):
    steps = ["--steps", "120"]
    whole, killed, moved = tmp_path / "whole", tmp_path / "killed", tmp_path / "moved"
    ok(rnnkit(*CHARLM, *steps, "--out", str(whole), "--nproc", "2"))
    at = _kill_when_saved([*CHARLM, *steps, "--out", str(killed), "--nproc", "2"], killed, 8)
    assert 8 <= at < 120, "the run was not killed part way"
    assert not (killed / "loss.png").exists()
    subprocess.run(["cp", "-r", str(killed), str(moved)], check=True)
    # the same number of processes: bit for bit
    ok(rnnkit("train", "charlm", "--resume", "--out", str(killed), "--nproc", "2"))
    assert losses(killed) == losses(whole)
    for name, w in weights(whole).items():
        assert torch.equal(weights(killed)[name], w), name
    # one process with all 8 streams takes over from two (their carried states joined)
    ok(rnnkit("train", "charlm", "--resume", "--out", str(moved)))
    assert losses(moved) == pytest.approx(losses(whole), rel=1e-4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_classifier_on_two_nodes_trains_as_one_process(tmp_path):
    """Two torchrun launchers (``--nnodes 2``, one process each) meet at a c10d rendezvous
    on localhost, as two machines would; batches of 33 split 17/16 and the last, smaller
    batches of a bucket pool leave a rank with a stand-in that weighs nothing."""
    data = tmp_path / "train.tsv"
    words = ["good film", "bad plot", "great fine movie", "awful dull film", "lovely", "poor"]
    label = ["pos", "neg"]
    lines = [f"{label[i % 2]}\t{words[i % 6]} {'x ' * (i % 7)}" for i in range(70)]
    data.write_text("\n".join(lines) + "\n")
    common = [
        "train", "classify", "--train", str(data), "--hidden-size", "16",
        "--embedding-size", "8", "--batch-size", "33", "--epochs", "4", "--no-progress",
    ]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    ok(rnnkit(*common, "--out", str(one)))
    port = _free_port()
    torchrun = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "test",
    ]  # fmt: skip
    launchers = [
        subprocess.Popen(
            [*torchrun, "-m", "rnnkit", *common, "--out", str(two)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    for p in launchers:
        output, _ = p.communicate(timeout=300)
        assert p.returncode == 0, output[-3000:]
    assert losses(one) == pytest.approx(losses(two), rel=1e-5)
    assert losses(one, "eval_accuracy") == losses(two, "eval_accuracy")
    val = [json.loads((r / "results.json").read_text())["val"] for r in (one, two)]
    assert val[0]["accuracy"] == val[1]["accuracy"] and val[0]["macro_f1"] == val[1]["macro_f1"]
    assert val[0]["loss"] == pytest.approx(val[1]["loss"], rel=1e-5)


def _toy_files(tmp_path: Path) -> tuple[Path, Path]:
    """A toy language for the word model and copy pairs of unequal lengths for the
    encoder-decoder."""
    import random

    rng = random.Random(0)
    nouns, verbs = ["dogs", "cats", "kids", "birds"], ["see", "like", "chase"]
    text = tmp_path / "toy.txt"
    lines = [f"{rng.choice(nouns)} {rng.choice(verbs)} {rng.choice(nouns)}" for _ in range(400)]
    text.write_text("\n".join(lines) + "\n")
    pairs = tmp_path / "pairs.tsv"
    rows = []
    for _ in range(150):
        src = " ".join(rng.choice("abcdef") for _ in range(rng.randint(1, 6)))
        rows.append(f"{src}\t{src}")
    pairs.write_text("\n".join(rows) + "\n")
    return text, pairs


@pytest.mark.parametrize("task", ["wordlm", "seq2seq"])
def test_the_newer_tasks_train_on_two_processes_as_on_one(tmp_path, task):
    """The word model's streams and the encoder-decoder's bucketed batches (25 pairs: 13
    and 12 a rank) shared by two processes give one process's losses."""
    text, pairs = _toy_files(tmp_path)
    small = ["--hidden-size", "16", "--embedding-size", "8", "--dropout", "0", "--no-progress"]
    if task == "wordlm":
        args = ["train", "wordlm", "--text", str(text), "--batch-size", "8", "--seq-len", "8",
                "--steps", "12", "--log-every", "3", "--eval-every", "6",
                "--precision", "fp32"]  # fmt: skip
    else:
        args = ["train", "seq2seq", "--train", str(pairs), "--batch-size", "25",
                "--epochs", "3", "--evals-per-epoch", "1"]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    ok(rnnkit(*args, *small, "--out", str(one)))
    ok(rnnkit(*args, *small, "--out", str(two), "--nproc", "2"))
    a, b = losses(one), losses(two)
    assert len(a) >= 3 and a == pytest.approx(b, rel=1e-5)
    assert load_checkpoint(two / "latest").train_state["world_size"] == 2
    assert losses(one, "eval_loss") == pytest.approx(losses(two, "eval_loss"), rel=1e-5)
    for name, w in weights(one).items():
        torch.testing.assert_close(weights(two)[name], w, rtol=1e-4, atol=1e-5)


def test_the_character_streams_must_split_evenly(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    assert distributed.split_evenly(9, "batch_size") == range(3, 6)
    with pytest.raises(ValueError, match=r"`batch_size`: 8 does not split evenly over 3"):
        charlm.StreamBatches(torch.zeros(1000, dtype=torch.int64).numpy(), 8, 4)


def test_a_plain_process_is_a_group_of_one():
    assert not distributed.active() and distributed.rank() == 0 and distributed.is_main()
    assert distributed.shard([1, 2, 3]) == [1, 2, 3]
    assert distributed.sum_floats(1.5, 2) == [1.5, 2.0]
    assert distributed.gather_by_index(3, [(2, "c"), (0, "a")]) == ["a", None, "c"]
    model = torch.nn.Linear(2, 2)
    model(torch.ones(3, 2)).pow(2).mean().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    total, (mean,) = distributed.average_gradients(list(model.parameters()), 3, [torch.tensor(2.0)])
    assert total == 3 and float(mean) == 2.0
    assert all(torch.allclose(p.grad, g) for p, g in zip(model.parameters(), grads))
