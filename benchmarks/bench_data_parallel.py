"""Data-parallel training of the default character model: what more processes give.

Measured on this machine (run it alone: a second program on two cores halves the speed):

* 1 process x 2 threads against 2 processes x 1 thread (``--nproc 2``, DDP over gloo)
  and 1 process x 1 thread, the same global batch of 64 streams: characters per second
  of training (the log records' ``items_per_s``, the first record left out);
* the step time of one process at 64, 32, 16 and 8 streams, for the paper estimate.

On paper, for N machines like this one with the global batch of 64 split over them:
the gradient bytes each step moves (fp32, every parameter), a ring allreduce's time on
a 10 and a 100 Gbit/s network (each machine sends and receives 2 (N - 1) / N of the
bytes, plus 2 (N - 1) hops of latency), against the measured step time at 64 / N streams.
No overlap of communication with the backward pass is assumed (DDP overlaps some).

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


def allreduce_s(nbytes: float, n: int, gbit_per_s: float) -> float:
    if n == 1:
        return 0.0
    return 2 * (n - 1) / n * nbytes * 8 / (gbit_per_s * 1e9) + 2 * (n - 1) * LATENCY_S


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    vocab = Vocab.from_text(load_shakespeare())
    model = CharLM(CharLMConfig(), vocab)
    params = sum(p.numel() for p in model.parameters())
    nbytes = 4 * params

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        two_threads = train(tmp / "a", args.steps, 64, threads=2)
        two_procs = train(tmp / "b", args.steps, 64, threads=1, nproc=2)
        one_thread = train(tmp / "c", args.steps, 64, threads=1)
        print(f"default character model: 1x512 LSTM, {params:,} parameters, batch 64 x 64")
        print("| processes x threads | chars/s | vs 1 x 1 |")
        print("|---|---|---|")
        for name, r in (("1 x 1", one_thread), ("1 x 2", two_threads), ("2 x 1", two_procs)):
            ratio = r["chars_per_s"] / one_thread["chars_per_s"]
            print(f"| {name} | {r['chars_per_s']:,.0f} | {ratio:.2f}x |")

        step = {64: two_threads["step_s"]}
        for b in (32, 16, 8):
            step[b] = train(tmp / f"s{b}", args.steps, b, threads=2)["step_s"]
    print(f"\ngradient per step: {nbytes / 1e6:.2f} MB (fp32)")
    print("| machines N | streams each | step (measured) | allreduce 10 Gbit/s | "
          "allreduce 100 Gbit/s | speed-up at 10 | at 100 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for n, b in ((1, 64), (2, 32), (4, 16), (8, 8)):
        t10, t100 = allreduce_s(nbytes, n, 10), allreduce_s(nbytes, n, 100)
        s10, s100 = step[64] / (step[b] + t10), step[64] / (step[b] + t100)
        print(
            f"| {n} | {b} | {step[b] * 1e3:.1f} ms | {t10 * 1e3:.2f} ms | {t100 * 1e3:.2f} ms "
            f"| {s10:.2f}x | {s100:.2f}x |"
        )
    weak10 = step[64] / (step[64] + allreduce_s(nbytes, 8, 10))
    print(
        f"\n64 streams on each of 8 machines (a global batch of 512): {8 * weak10:.1f}x the "
        f"characters per second of one at 10 Gbit/s"
    )


if __name__ == "__main__":
    main()
