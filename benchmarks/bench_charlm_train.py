"""Training speed of ``rnnkit train charlm`` against a bare torch.nn.LSTM loop, in chars/s.

Both train the same character model on the bundled Shakespeare (vocabulary 84): embedding
64 -> 2-layer LSTM, hidden 256 -> linear; batch 32 streams x 64-character windows, the
hidden state carried from window to window and detached, cross-entropy, gradient norm
clipped to 1.0, Adam at the default learning rate.

rnnkit's default precision is "auto": on a CPU with native bfloat16 (AVX512-BF16 or AMX)
the forward pass runs under ``torch.autocast`` in bfloat16, which oneDNN's LSTM kernel
turns into fewer, cheaper steps; elsewhere float32. So that the framework's own cost is
visible too, the in-process comparison then also runs ``rnnkit-fp32`` (rnnkit forced
to float32, the bare loop's arithmetic) against the same bare loop.

* ``rnnkit``  the loop ``rnnkit train charlm`` runs with its defaults: the Trainer of
              :func:`rnnkit.tasks.charlm.train` (``StreamBatches`` over the memory-mapped
              encoded corpus, ``make_step_fn`` with ``rnnkit.tbptt.CarriedState``, global-norm
              clipping, the cosine schedule with warm-up, the log window every 20 steps,
              the tqdm progress bar -- on, writing to /dev/null, unless --no-progress).
              It is built here line for line as ``train()`` builds it, without the
              periodic evaluation and checkpoint callbacks (the Trainer leaves their time
              out of its own throughput too, and the bare loop has none).
* ``bare``    a hand-written char-rnn loop: torch.nn.Embedding -> torch.nn.LSTM ->
              torch.nn.Linear, the encoded text as one int64 tensor cut into 32 streams
              (PyTorch's word_language_model "batchify"), windows sliced from it.

Two comparisons, both as medians of per-round ratios rnnkit / bare:

1. in one process, both variants alive, both under rnnkit's glibc malloc tuning (the CLI
   applies it at start-up), run in interleaved rounds of the same number of steps after
   a warm-up (these machines drift by +-20% in speed over minutes).
   Target: >= 0.95.
2. against a bare loop under glibc's default allocator: in each round one subprocess
   runs the bare loop WITHOUT ``tune_glibc_malloc`` and one runs the rnnkit loop with it
   (as the CLI does), in alternating order; each times N steps after a warm-up and
   prints its chars/s as JSON. Target: >= 1.0.

    python benchmarks/bench_charlm_train.py             # 7 + 5 rounds, a few minutes
    python benchmarks/bench_charlm_train.py --quick     # a short run, < 1 minute
    python benchmarks/bench_charlm_train.py --json out.json --no-progress

On a busy machine torch's 2 OpenMP threads fight the other work and every step slows
several-fold; ``--threads 1`` keeps a ``--quick`` check of the script short (not a number
to report).

The corpus is prepared as the CLI prepares it: decompressed and encoded into
``$RNNKIT_DATA`` (default ``~/.cache/rnnkit``) on first use. Run it on a quiet machine:
the load average is printed, and the numbers mean little when other work is running.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from _machine import environment, print_environment, print_load_after, write_json
from rnnkit._malloc import tune_glibc_malloc
from rnnkit.tasks.charlm import (
    CharLM,
    CharLMConfig,
    StreamBatches,
    TrainConfig,
    load_data,
    make_step_fn,
    resolve_precision,
)
from rnnkit.tbptt import CarriedState
from rnnkit.trainer import Trainer, resolve_device

LOG_EVERY = TrainConfig.log_every  # 20: chunks are whole log windows


# -- the two loops -----------------------------------------------------------------------


class RnnkitLoop:
    """The Trainer of ``rnnkit.tasks.charlm.train`` with the CLI's defaults; run(n) = n steps."""

    def __init__(self, total_steps: int, progress: bool, precision: str = "auto") -> None:
        cfg = TrainConfig(steps=max(TrainConfig.steps, total_steps + 2 * LOG_EVERY))
        cfg.progress = progress
        cfg.precision = precision
        self.name = "rnnkit" if precision == "auto" else f"rnnkit-{precision}"
        self.config = cfg
        data = load_data(corpus="shakespeare", val_fraction=cfg.val_fraction)
        batches = StreamBatches(data.train, cfg.batch_size, cfg.seq_len)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        model = CharLM(CharLMConfig(), data.vocab)
        carried = CarriedState()
        self.precision = resolve_precision(precision, model, resolve_device(cfg.device))
        step_fn = make_step_fn(batches, carried, self.precision)
        self.trainer = Trainer(cfg.trainer_config(), model, step_fn, train_batches=batches)
        self.trainer.items_name, self.trainer.progress_keys = "chars", ["bpc"]  # as train()
        self.trainer.add_extra_state("data", batches.state_dict, batches.load_state_dict)
        self.until = 0
        self.trainer.add_callback("on_log", self._stop_at)
        self.chars_per_step = cfg.batch_size * cfg.seq_len
        self.backend = model.rnn.backend(self.trainer.device)

    def _stop_at(self, trainer: Trainer, record: dict) -> None:
        if trainer.step >= self.until:
            trainer.stop()

    def run(self, steps: int) -> float:
        """Seconds for `steps` steps (a multiple of the log window) through Trainer.fit()."""
        self.until = self.trainer.step + steps
        with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
            start = time.perf_counter()
            self.trainer.fit()  # tqdm takes sys.stderr (here /dev/null) when it starts
            seconds = time.perf_counter() - start
        if self.trainer.step != self.until:
            raise RuntimeError(f"expected to stop at step {self.until}, at {self.trainer.step}")
        return seconds


class BareLoop:
    """A hand-written char-rnn loop over torch.nn.LSTM of the same size, same data."""

    name = "bare"

    def __init__(self) -> None:
        cfg = TrainConfig()
        mc = CharLMConfig()
        data = load_data(corpus="shakespeare", val_fraction=cfg.val_fraction)
        torch.manual_seed(cfg.seed)
        V, B, T = len(data.vocab), cfg.batch_size, cfg.seq_len
        ids = torch.from_numpy(np.asarray(data.train, dtype=np.int64))
        L = (len(ids) - 1) // B
        self.xs = ids[: B * L].view(B, L)  # "batchify": B streams side by side
        self.ys = ids[1 : B * L + 1].view(B, L)
        self.windows = L // T
        self.k = 0
        self.T, self.V = T, V
        self.embed = nn.Embedding(V, mc.embedding_size)
        self.lstm = nn.LSTM(mc.embedding_size, mc.hidden_size, mc.num_layers, batch_first=True)
        self.head = nn.Linear(mc.hidden_size, V)
        self.params = [
            *self.embed.parameters(),
            *self.lstm.parameters(),
            *self.head.parameters(),
        ]
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr)
        self.state = None
        self.losses: list[float] = []
        self.chars_per_step = B * T

    def step(self) -> None:
        k, T = self.k % self.windows, self.T
        if k == 0:
            self.state = None  # a new pass over the text
        self.k += 1
        x, y = self.xs[:, k * T : (k + 1) * T], self.ys[:, k * T : (k + 1) * T]
        self.opt.zero_grad(set_to_none=True)
        out, state = self.lstm(self.embed(x), self.state)
        self.state = tuple(s.detach() for s in state)
        loss = F.cross_entropy(self.head(out).reshape(-1, self.V), y.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        if self.k % LOG_EVERY == 0:
            self.losses.append(loss.item())  # the usual occasional print of the loss

    def run(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        return time.perf_counter() - start


# -- the worker: one loop in a fresh process ------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    tuned = tune_glibc_malloc() if args.worker_tune else False
    if args.worker == "bare":
        loop = BareLoop()
    else:
        loop = RnnkitLoop(args.warmup + args.steps, args.progress)
    loop.run(args.warmup)
    seconds = loop.run(args.steps)
    result = {
        "variant": loop.name,
        "malloc_tuned": tuned,
        "steps": args.steps,
        "seconds": seconds,
        "chars_per_s": args.steps * loop.chars_per_step / seconds,
        "threads": torch.get_num_threads(),
        "pid": os.getpid(),
    }
    print(json.dumps(result), flush=True)


def run_worker(variant: str, tune: bool, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        variant,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    cmd += ["--worker-tune"] if tune else []
    cmd += ["--threads", str(args.threads)] if args.threads else []
    cmd += [] if args.progress else ["--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {variant} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the two comparisons --------------------------------------------------------------------


def in_process(args: argparse.Namespace) -> dict:
    total = args.warmup + args.rounds * args.steps
    loops = [RnnkitLoop(total, args.progress), BareLoop()]
    if loops[0].precision != "fp32":  # also the same arithmetic as the bare loop
        loops.append(RnnkitLoop(total, args.progress, "fp32"))
    print(f"rnnkit backend: {loops[0].backend}, precision {loops[0].precision}", file=sys.stderr)
    for loop in loops:
        loop.run(args.warmup)
    rates: dict[str, list[float]] = {loop.name: [] for loop in loops}
    for r in range(args.rounds):
        order = loops[r % len(loops) :] + loops[: r % len(loops)]  # rotate the order
        for loop in order:
            seconds = loop.run(args.steps)
            rates[loop.name].append(args.steps * loop.chars_per_step / seconds)
        print(f"  in-process round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    ratios = [a / b for a, b in zip(rates["rnnkit"], rates["bare"])]
    result = {
        "rnnkit_chars_per_s": statistics.median(rates["rnnkit"]),
        "bare_chars_per_s": statistics.median(rates["bare"]),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "rounds": rates,
        "steps_per_measurement": args.steps,
        "rnnkit_backend": loops[0].backend,
        "rnnkit_precision": loops[0].precision,
    }
    if "rnnkit-fp32" in rates:
        fp32 = [a / b for a, b in zip(rates["rnnkit-fp32"], rates["bare"])]
        result["fp32_chars_per_s"] = statistics.median(rates["rnnkit-fp32"])
        result["fp32_ratio"] = statistics.median(fp32)
        result["fp32_ratios"] = fp32
    return result


def subprocesses(args: argparse.Namespace) -> dict:
    runs: dict[str, list[dict]] = {"rnnkit": [], "bare": []}
    jobs = [("rnnkit", True), ("bare", False)]
    for r in range(args.proc_rounds):
        order = jobs if r % 2 == 0 else jobs[::-1]
        for variant, tune in order:
            runs[variant].append(run_worker(variant, tune, args))
        print(f"  subprocess round {r + 1}/{args.proc_rounds} done", file=sys.stderr, flush=True)
    rn = [x["chars_per_s"] for x in runs["rnnkit"]]
    bare = [x["chars_per_s"] for x in runs["bare"]]
    ratios = [a / b for a, b in zip(rn, bare)]
    return {
        "rnnkit_chars_per_s": statistics.median(rn),
        "bare_chars_per_s": statistics.median(bare),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "runs": runs,
        "steps_per_measurement": args.steps,
    }


def verdict(ratio: float, target: float) -> str:
    return f"{'meets' if ratio >= target else 'MISSES'} the target >= {target:.2f}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a short run: 3 + 1 rounds of 20 steps")
    p.add_argument("--rounds", type=int, default=None, help="in-process rounds (default 7)")
    p.add_argument(
        "--proc-rounds", type=int, default=None, help="subprocess rounds (default 5; 0: skip)"
    )
    p.add_argument(
        "--steps", type=int, default=None, help="timed steps per measurement (default 60)"
    )
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 20)")
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="run rnnkit without its progress bar (default: on, written to /dev/null)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (all runs)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--worker", choices=("rnnkit", "bare"), help=argparse.SUPPRESS)
    p.add_argument("--worker-tune", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.rounds = args.rounds if args.rounds is not None else (3 if args.quick else 7)
    args.proc_rounds = (
        args.proc_rounds if args.proc_rounds is not None else (1 if args.quick else 5)
    )
    args.steps = args.steps or (LOG_EVERY if args.quick else 3 * LOG_EVERY)
    args.warmup = args.warmup if args.warmup is not None else LOG_EVERY
    for name in ("steps", "warmup"):
        if getattr(args, name) % LOG_EVERY:
            p.error(f"--{name} must be a multiple of the log window, {LOG_EVERY}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        worker(args)
        return

    tuned = tune_glibc_malloc()  # as the CLI does at start-up
    env = environment(tuned)
    print_environment(env)
    cfg = TrainConfig()
    mc = CharLMConfig()
    print(
        f"config: {mc.num_layers}x{mc.hidden_size} LSTM, embedding {mc.embedding_size}, "
        f"batch {cfg.batch_size}, seq_len {cfg.seq_len}, Adam lr {cfg.lr}, clip {cfg.clip_norm}; "
        f"rnnkit progress bar: {'on (to /dev/null)' if args.progress else 'off'}; "
        f"{args.steps} timed steps per measurement after {args.warmup} warm-up steps"
    )
    report: dict = {"environment": env, "args": vars(args)}
    report["in_process"] = ip = in_process(args)
    if args.proc_rounds:
        report["subprocess"] = sp = subprocesses(args)

    print(f"\n{'comparison':<46} {'rnnkit chars/s':>15} {'bare chars/s':>13} {'ratio':>6}")
    print(
        f"{'1. in one process, both malloc-tuned':<46} {ip['rnnkit_chars_per_s']:15,.0f} "
        f"{ip['bare_chars_per_s']:13,.0f} {ip['ratio']:6.3f}  {verdict(ip['ratio'], 0.95)}"
    )
    if args.proc_rounds:
        print(
            f"{'2. rnnkit tuned vs bare default malloc (procs)':<46} "
            f"{sp['rnnkit_chars_per_s']:15,.0f} {sp['bare_chars_per_s']:13,.0f} "
            f"{sp['ratio']:6.3f}  {verdict(sp['ratio'], 1.0)}"
        )
    if "fp32_ratio" in ip:
        print(
            f"{'1b. the same, rnnkit forced to fp32':<46} {ip['fp32_chars_per_s']:15,.0f} "
            f"{ip['bare_chars_per_s']:13,.0f} {ip['fp32_ratio']:6.3f}  "
            f"{verdict(ip['fp32_ratio'], 0.95)}"
        )
    print(f"rnnkit precision: {ip['rnnkit_precision']} (auto)")
    print(f"per-round ratios, 1: {' '.join(f'{r:.3f}' for r in ip['ratios'])}")
    if args.proc_rounds:
        print(f"per-round ratios, 2: {' '.join(f'{r:.3f}' for r in sp['ratios'])}")
    report["loadavg_after"] = print_load_after()
    write_json(args.json, report)


if __name__ == "__main__":
    main()
