"""Training speed of rnnkit's layers against torch.nn, in steps per second.

One training step of a character language model: embedding (or a random input) ->
recurrent stack -> linear -> cross-entropy -> backward -> Adam. For each cell type:

* ``torch.nn``   torch.nn.LSTM / GRU / RNN, the baseline;
* ``fused``      ``fused=True``: torch's fused kernel on rnnkit's parameters;
* ``explicit``   ``fused=False``: rnnkit's own time loop (rnnkit.sequence for dense cells);
                 with the default ``fused=None`` the CPU runs this for GRU and RNN, and
                 ``fused`` for the LSTM (see ``rnnkit.backends.CPU_SEQUENCE_FASTER``);
* ``stepped``    the generic per-step loop every other cell takes (a subclass of the cell,
                 so the whole-sequence kernel does not apply): what ``explicit`` replaced;
* ``reset=before`` (GRU only) the lecture's GRU, which has no fused kernel.

These 2-core machines drift by +-20% over minutes, so all variants run in one process,
interleaved in rounds, after a warm-up; each round's speed is divided by the torch.nn
speed of the same round, and the table shows medians over rounds.

    python benchmarks/bench_layers.py            # configs b and c, 7 rounds
    python benchmarks/bench_layers.py --quick    # a short run
    python benchmarks/bench_layers.py --tune-malloc --json out.json

``--tune-malloc`` applies rnnkit's glibc mallopt settings first; it changes the whole
process, so compare it against a separate run without the flag.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

import rnnkit
from rnnkit import GRUCell, LSTMCell, Recurrent, RNNCell, Stack
from rnnkit._malloc import tune_glibc_malloc


@dataclass(frozen=True)
class Config:
    name: str
    num_layers: int
    hidden_size: int
    batch_size: int
    seq_len: int

    def __str__(self) -> str:
        return (
            f"config {self.name}: {self.num_layers} layers, hidden {self.hidden_size}, "
            f"batch {self.batch_size}, {self.seq_len} steps"
        )


CONFIGS = {
    "a": Config("a", 1, 128, 32, 64),
    "b": Config("b", 2, 256, 32, 64),
    "c": Config("c", 2, 512, 64, 100),
}
CELLS = ("lstm", "gru", "rnn")
VOCAB = 65  # tiny-shakespeare's character set


# -- the models ------------------------------------------------------------------------


class SteppedLSTMCell(LSTMCell):
    """A subclass, so rnnkit.sequence does not recognise it: the generic per-step loop."""


class SteppedGRUCell(GRUCell):
    """See SteppedLSTMCell."""


class SteppedRNNCell(RNNCell):
    """See SteppedLSTMCell."""


def build_rnn(cell: str, variant: str, cfg: Config, input_size: int) -> nn.Module:
    H, L = cfg.hidden_size, cfg.num_layers
    if variant == "torch.nn":
        cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
        return cls(input_size, H, L, batch_first=True)
    if variant == "stepped":
        cls = {"lstm": SteppedLSTMCell, "gru": SteppedGRUCell, "rnn": SteppedRNNCell}[cell]
        sizes = [input_size] + [H] * (L - 1)
        return Stack([Recurrent(cls(size, H), fused=False) for size in sizes])
    cls = {"lstm": rnnkit.LSTM, "gru": rnnkit.GRU, "rnn": rnnkit.RNN}[cell]
    kwargs = {"fused": variant == "fused"}
    if variant == "reset=before":
        kwargs = {"reset": "before"}
    if cell == "lstm":
        kwargs["forget_bias"] = 0.0  # torch's initialisation, same as the baseline
    model = cls(input_size, H, L, **kwargs)
    expected = variant == "fused"
    if model.fused != expected:
        raise RuntimeError(f"{cell} {variant}: expected fused={expected}, got {model!r}")
    return model


class CharModel(nn.Module):
    """tokens (B, T) -> logits (B, T, V); or a random (B, T, E) input straight to the RNN."""

    def __init__(self, rnn: nn.Module, input_size: int, hidden_size: int, embed: bool) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, input_size) if embed else None
        self.rnn = rnn
        self.head = nn.Linear(hidden_size, VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x) if self.embed is not None else x  # (B, T, E)
        out, _ = self.rnn(x)  # (B, T, H)
        return self.head(out)  # (B, T, V)


class Trainer:
    """One model, its optimiser and a fixed batch: `step()` is one timed training step."""

    def __init__(self, cell: str, variant: str, cfg: Config, args: argparse.Namespace) -> None:
        torch.manual_seed(0)
        E = args.input_size or cfg.hidden_size
        rnn = build_rnn(cell, variant, cfg, E)
        self.model = CharModel(rnn, E, cfg.hidden_size, embed=args.input == "embedding")
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        B, T = cfg.batch_size, cfg.seq_len
        g = torch.Generator().manual_seed(1)
        if args.input == "embedding":
            self.x = torch.randint(VOCAB, (B, T), generator=g)
        else:
            self.x = torch.randn(B, T, E, generator=g)
        self.y = torch.randint(VOCAB, (B, T), generator=g)
        self.steps = 1  # per measurement, set by calibrate()

    def step(self) -> None:
        logits = self.model(self.x)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), self.y.reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def measure(self) -> float:
        """Steps per second over self.steps steps."""
        start = time.perf_counter()
        for _ in range(self.steps):
            self.step()
        return self.steps / (time.perf_counter() - start)

    def calibrate(self, warmup: int, target_s: float) -> None:
        for _ in range(warmup):
            self.step()
        self.steps = 1
        rate = self.measure()
        self.steps = max(1, round(target_s * rate))


# -- running and reporting -------------------------------------------------------------


def variants_of(cell: str) -> list[str]:
    names = ["torch.nn", "fused", "explicit", "stepped"]
    return names + ["reset=before"] if cell == "gru" else names


def run_config(cfg: Config, cells: list[str], args: argparse.Namespace) -> dict:
    trainers = {
        (cell, v): Trainer(cell, v, cfg, args)
        for cell in cells
        for v in variants_of(cell)
        if v != "stepped" or args.stepped
    }
    for t in trainers.values():
        t.calibrate(args.warmup, args.target)
    rates = {key: [] for key in trainers}
    keys = list(trainers)
    for r in range(args.rounds):
        shift = r % len(keys)  # rotate the order so no variant always runs first
        for key in keys[shift:] + keys[:shift]:
            rates[key].append(trainers[key].measure())
        print(f"  round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    results = {}
    for (cell, v), rs in rates.items():
        base = rates[(cell, "torch.nn")]
        fused = rates[(cell, "fused")]
        results[f"{cell}/{v}"] = {
            "cell": cell,
            "variant": v,
            "steps_per_s": statistics.median(rs),
            "chars_per_s": statistics.median(rs) * cfg.batch_size * cfg.seq_len,
            "vs_torch": statistics.median(a / b for a, b in zip(rs, base)),
            "vs_fused": statistics.median(a / b for a, b in zip(rs, fused)),
            "rounds": rs,
            "steps_per_measurement": trainers[(cell, v)].steps,
        }
    return results


def print_table(cfg: Config, results: dict) -> None:
    print(f"\n{cfg}")
    print(
        f"{'cell':<5} {'variant':<13} {'steps/s':>8} {'chars/s':>9} {'vs torch.nn':>12} "
        f"{'vs fused':>9}"
    )
    for r in results.values():
        print(
            f"{r['cell']:<5} {r['variant']:<13} {r['steps_per_s']:8.2f} {r['chars_per_s']:9,.0f} "
            f"{r['vs_torch']:12.2f} {r['vs_fused']:9.2f}"
        )


def lstm_uses_onednn() -> bool:
    """Whether torch.nn.LSTM's training forward on CPU runs oneDNN's fused RNN kernel."""
    lstm = nn.LSTM(8, 8, batch_first=True)
    x = torch.randn(2, 3, 8)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        lstm(x)[0].sum().backward()
    return any("mkldnn_rnn" in e.name for e in prof.events())


def environment(args: argparse.Namespace, malloc_tuned: bool) -> dict:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "onednn_available": torch.backends.mkldnn.is_available(),
        "onednn_enabled": torch.backends.mkldnn.enabled,
        "nn_lstm_uses_onednn": lstm_uses_onednn(),
        "malloc_tuned": malloc_tuned,
        "input": args.input,
        "rounds": args.rounds,
        "target_s": args.target,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a short run: 3 rounds, short samples")
    p.add_argument("--configs", default="b,c", help=f"comma-separated, of {sorted(CONFIGS)}")
    p.add_argument("--cells", default=",".join(CELLS), help=f"comma-separated, of {CELLS}")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7)")
    p.add_argument("--target", type=float, default=None, help="seconds per measurement")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    p.add_argument("--input", choices=("embedding", "random"), default="embedding")
    p.add_argument("--input-size", type=int, default=None, help="embedding size (default H)")
    p.add_argument(
        "--no-stepped",
        dest="stepped",
        action="store_false",
        help="skip the generic per-step loop (the slowest variant)",
    )
    p.add_argument("--tune-malloc", action="store_true", help="apply rnnkit's glibc mallopt")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (3 if args.quick else 7)
    args.target = args.target or (0.4 if args.quick else 1.5)
    configs = [CONFIGS[name] for name in args.configs.split(",")]
    cells = args.cells.split(",")
    if any(c not in CELLS for c in cells):
        p.error(f"--cells must be among {CELLS}, got {args.cells!r}")

    malloc_tuned = tune_glibc_malloc() if args.tune_malloc else False
    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment(args, malloc_tuned)
    print(
        f"torch {env['torch']}, {env['threads']} threads, "
        f"oneDNN available={env['onednn_available']} enabled={env['onednn_enabled']}, "
        f"nn.LSTM uses oneDNN: {env['nn_lstm_uses_onednn']}, "
        f"glibc malloc tuned: {malloc_tuned}, input: {args.input}"
    )
    report = {"environment": env, "configs": {}}
    for cfg in configs:
        print(f"{cfg} ...", file=sys.stderr, flush=True)
        results = run_config(cfg, cells, args)
        print_table(cfg, results)
        report["configs"][cfg.name] = {"config": asdict(cfg), "results": results}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
