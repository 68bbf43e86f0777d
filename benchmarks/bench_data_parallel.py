"""Data-parallel training of the default character model: what more processes give.

Measured on this machine (run it alone: a second program on two cores halves the speed):

* 1 process x 2 threads against 2 processes x 1 thread (``--nproc 2``, DDP over gloo)
  and 1 process x 1 thread, the same global batch of 64 streams, and 2 processes with
  64 streams each (a global batch of 128): characters per second of training (the log
  records' ``items_per_s``, the first record left out);
* the step time of one process at 64, 32, 16 and 8 streams, for the paper estimate.

On paper, for N machines like this one: the gradient bytes each step moves (fp32,
every parameter), a ring allreduce's time on a 10 and a 100 Gbit/s network (each
machine sends and receives 2 (N - 1) / N of the bytes, plus 2 (N - 1) hops of
latency), against the measured step time -- at 64 / N streams per machine (the global
batch of 64 split) and at 64 streams per machine (a global batch of 64 N). No overlap of
communication with the backward pass is assumed (DDP overlaps some).

    python benchmarks/bench_data_parallel.py [--steps 60]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rnnkit.data.corpora import Vocab, load_shakespeare
from rnnkit.tasks.charlm import CharLM, CharLMConfig

LATENCY_S = 50e-6  # one hop of a TCP allreduce on a data-centre network (an assumption)
TRAIN = ["--eval-every", "0", "--checkpoint-every", "0", "--eval-chars", "20000"]
TRAIN += ["--log-every", "10", "--sample", "0", "--no-progress", "--seed", "1"]


def train(out: Path, steps: int, batch: int, threads: int, nproc: int = 1) -> dict:
    cmd = [sys.executable, "-m", "rnnkit", "train", "charlm", "--out", str(out)]
    cmd += ["--steps", str(steps), "--batch-size", str(batch), *TRAIN]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    with open(out / "metrics.csv") as f:
        rates = [float(r["items_per_s"]) for r in csv.DictReader(f) if r.get("items_per_s")]
    chars_per_s = statistics.median(rates[1:])
    return {"chars_per_s": chars_per_s, "step_s": batch * 64 / chars_per_s}


def together(tmp: Path, steps: int) -> dict:
    """Two independent 1-thread runs at once (no DDP): what the machine gives two
    processes. Their characters per second, summed."""
    cmd = [sys.executable, "-m", "rnnkit", "train", "charlm", "--steps", str(steps), *TRAIN]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([*cmd, "--out", str(tmp / f"t{i}")], env=env, stdout=subprocess.DEVNULL)
        for i in range(2)
    ]
    if any(p.wait() for p in procs):
        raise SystemExit("a run failed")
    rates = []
    for i in range(2):
        with open(tmp / f"t{i}" / "metrics.csv") as f:
            r = [float(r["items_per_s"]) for r in csv.DictReader(f) if r.get("items_per_s")]
        rates.append(statistics.median(r[1:]))
    return {"chars_per_s": sum(rates), "each": rates}


def probe_allreduce() -> None:
    """Under torchrun: the time of one gloo allreduce of the gradient and of 16 bytes."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    params = sum(p.numel() for p in CharLM(CharLMConfig(), default_vocab()).parameters())
    for size in (params, 4):
        t = torch.randn(size)
        for _ in range(3):
            dist.all_reduce(t)
        start = time.perf_counter()
        for _ in range(20):
            dist.all_reduce(t)
        if dist.get_rank() == 0:
            print(f"{4 * size:,} bytes: {(time.perf_counter() - start) / 20 * 1e3:.2f} ms")
    dist.destroy_process_group()


def default_vocab() -> Vocab:
    return Vocab.from_text(load_shakespeare())


def allreduce_s(nbytes: float, n: int, gbit_per_s: float) -> float:
    if n == 1:
        return 0.0
    return 2 * (n - 1) / n * nbytes * 8 / (gbit_per_s * 1e9) + 2 * (n - 1) * LATENCY_S


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        return probe_allreduce()
    model = CharLM(CharLMConfig(), default_vocab())
    params = sum(p.numel() for p in model.parameters())
    nbytes = 4 * params

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        two_threads = train(tmp / "a", args.steps, 64, threads=2)
        two_procs = train(tmp / "b", args.steps, 64, threads=1, nproc=2)
        one_thread = train(tmp / "c", args.steps, 64, threads=1)
        two_full = train(tmp / "d", args.steps, 128, threads=1, nproc=2)
        half_one = train(tmp / "e", args.steps, 32, threads=1)
        apart = together(tmp, args.steps)
        print(f"default character model: 1x512 LSTM, {params:,} parameters, 64-step windows")
        print("| processes x threads | streams (global) | chars/s | vs 1 x 1 |")
        print("|---|---|---|---|")
        rows = (
            ("1 x 1", 64, one_thread),
            ("1 x 2", 64, two_threads),
            ("2 x 1", "64 (32 each)", two_procs),
            ("2 x 1", "128 (64 each)", two_full),
            ("1 x 1", 32, half_one),
            ("2 x 1, two separate runs at once (no DDP)", "64 each", apart),
        )
        for name, streams, r in rows:
            ratio = r["chars_per_s"] / one_thread["chars_per_s"]
            print(f"| {name} | {streams} | {r['chars_per_s']:,.0f} | {ratio:.2f}x |")
        each = " and ".join(f"{r:,.0f}" for r in apart["each"])
        print(f"the two separate runs: {each} chars/s")
        print(
            f"one thread's step: {half_one['step_s'] * 1e3:.0f} ms at 32 streams, "
            f"{one_thread['step_s'] * 1e3:.0f} ms at 64"
        )

        step = {64: two_threads["step_s"]}
        for b in (32, 16, 8):
            step[b] = train(tmp / f"s{b}", args.steps, b, threads=2)["step_s"]
    print(f"\ngradient per step: {nbytes / 1e6:.2f} MB (fp32); gloo allreduce on localhost:")
    probe = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    subprocess.run([*probe, "2", __file__, "--probe"], stderr=subprocess.DEVNULL, check=True)
    print("| machines N | allreduce 10 Gbit/s | 100 Gbit/s | 64 / N streams each: step "
          "| speed-up at 10 / 100 | 64 streams each: speed-up at 10 / 100 |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for n, b in ((1, 64), (2, 32), (4, 16), (8, 8)):
        t10, t100 = allreduce_s(nbytes, n, 10), allreduce_s(nbytes, n, 100)
        split = [step[64] / (step[b] + t) for t in (t10, t100)]
        full = [n * step[64] / (step[64] + t) for t in (t10, t100)]
        print(
            f"| {n} | {t10 * 1e3:.2f} ms | {t100 * 1e3:.2f} ms | {step[b] * 1e3:.1f} ms "
            f"| {split[0]:.2f}x / {split[1]:.2f}x | {full[0]:.2f}x / {full[1]:.2f}x |"
        )


if __name__ == "__main__":
    main()
