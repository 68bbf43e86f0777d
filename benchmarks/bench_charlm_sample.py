"""Sampling speed of a character model, in characters per second.

A 2-layer LSTM CharLM, hidden 256, embedding 64, over Shakespeare's 84 characters (random
weights; or a trained model with --checkpoint), samples 2000 characters at temperature
0.8 from a newline with the state carried, for 1 stream and for 64 streams at once:

* ``rnnkit``   ``model.generate(...)`` (``rnnkit.decoding``'s loop on the fast stepper),
               the lists of characters it yields consumed as ``rnnkit sample`` consumes
               them (the stepper's set-up included in the time);
* ``nn.LSTM``  the baseline: the same weights in ``torch.nn.LSTM``
               (``model.rnn.to_torch()``) called once per character on a (N, 1, E) input,
               with the model's embedding and head, the state carried, ``torch.multinomial``
               on the softmax, ids decoded to characters, under ``torch.no_grad()``.

Both run in one process in interleaved rounds (the machines drift by +-20% over
minutes); the table shows medians of the rounds and of the per-round ratios
rnnkit / nn.LSTM. Targets: >= 7,000 chars/s for one stream (ten times the baseline) and
>= 60,000 chars/s for 64 streams. rnnkit's glibc malloc tuning is applied at start-up, as
the CLI does (--no-tune-malloc to compare). A greedy (temperature 0) run of both checks
that they compute the same model.

    python benchmarks/bench_charlm_sample.py              # 7 rounds of 2000 characters
    python benchmarks/bench_charlm_sample.py --quick      # a short run
    python benchmarks/bench_charlm_sample.py --checkpoint runs/demo --json out.json

On a busy machine torch's 2 OpenMP threads fight the other work and every step slows
several-fold; ``--threads 1`` keeps a ``--quick`` check of the script short (not a number
to report).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch import nn

from _machine import environment, print_environment, print_load_after, write_json
from rnnkit._malloc import tune_glibc_malloc
from rnnkit.data.corpora import Vocab, load_shakespeare
from rnnkit.tasks.charlm import CharLM, CharLMConfig, load

TEMPERATURE = 0.8
TARGETS = {1: 7_000.0, 64: 60_000.0}  # chars/s
TARGET_RATIO_1 = 10.0  # one stream, against the nn.LSTM-per-character baseline


# -- the two samplings -----------------------------------------------------------------------


def sample_rnnkit(
    model: CharLM, num: int, length: int, seed: int, greedy: bool = False
) -> list[str]:
    """rnnkit's sampling; the characters collected as ``CharLM.sample`` collects them."""
    chunks: list[list[str]] = [[] for _ in range(num)]
    temperature = 0.0 if greedy else TEMPERATURE
    gen = model.generate("", length, temperature=temperature, num=num, seed=seed)
    for step in gen:
        for i, ch in enumerate(step):
            chunks[i].append(ch)
    return ["".join(c) for c in chunks]


class TorchLSTMSampler:
    """The baseline: torch.nn.LSTM with the model's weights, called once per character."""

    def __init__(self, model: CharLM) -> None:
        self.lstm: nn.LSTM = model.rnn.to_torch().eval()
        self.embedding = model.embedding
        self.head = model.head
        self.chars = model.vocab.chars
        self.start = model.vocab.index.get("\n", 0)  # as the sampler: newline, else chars[0]
        if not self.lstm.batch_first:
            raise RuntimeError("expected a batch_first nn.LSTM from to_torch()")

    @torch.no_grad()
    def sample(self, num: int, length: int, seed: int, greedy: bool = False) -> list[str]:
        gen = torch.Generator().manual_seed(seed)
        chars = self.chars
        chunks: list[list[str]] = [[] for _ in range(num)]
        ids = torch.full((num,), self.start, dtype=torch.long)
        state = None
        for _ in range(length):
            out, state = self.lstm(self.embedding(ids).unsqueeze(1), state)  # (N, 1, H)
            logits = self.head(out[:, 0])  # (N, V)
            if greedy:
                ids = logits.argmax(-1)
            else:
                probs = (logits / TEMPERATURE).softmax(-1)
                ids = torch.multinomial(probs, 1, generator=gen).squeeze(1)
            for i, c in enumerate(ids.tolist()):
                chunks[i].append(chars[c])
        return ["".join(c) for c in chunks]


# -- running and reporting -------------------------------------------------------------------


def build_model(checkpoint: str | None) -> CharLM:
    if checkpoint:
        return load(checkpoint)
    torch.manual_seed(0)
    vocab = Vocab.from_text(load_shakespeare())
    return CharLM(CharLMConfig(cell="lstm", num_layers=2, hidden_size=256), vocab).eval()


def check_same_model(model: CharLM, baseline: TorchLSTMSampler, length: int) -> dict:
    """Greedy text of both, 3 streams: the same unless float ties flip an argmax."""
    ours = sample_rnnkit(model, 3, length, seed=0, greedy=True)
    theirs = baseline.sample(3, length, seed=0, greedy=True)
    agree = [
        next((i for i, (a, b) in enumerate(zip(x, y)) if a != b), length)
        for x, y in zip(ours, theirs)
    ]
    return {"greedy_chars_checked": length, "greedy_chars_agreeing": agree}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a short run: 3 rounds of 400 characters")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7)")
    p.add_argument("--length", type=int, default=None, help="characters per stream (2000)")
    p.add_argument("--streams", default="1,64", help="comma-separated stream counts")
    p.add_argument("--checkpoint", default=None, help="a trained CharLM (run directory)")
    p.add_argument("--no-tune-malloc", action="store_true", help="keep glibc's defaults")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (3 if args.quick else 7)
    args.length = args.length or (400 if args.quick else 2000)
    streams = [int(s) for s in args.streams.split(",")]

    tuned = False if args.no_tune_malloc else tune_glibc_malloc()  # as the CLI does
    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment(tuned)
    print_environment(env)
    model = build_model(args.checkpoint)
    cfg = model.config
    print(
        f"model: {cfg.num_layers}x{cfg.hidden_size} {cfg.cell.upper()}, embedding "
        f"{cfg.embedding_size}, vocabulary {model.vocab_size}, "
        f"{'weights from ' + args.checkpoint if args.checkpoint else 'random weights'}; "
        f"{args.length} characters per stream at temperature {TEMPERATURE}, "
        f"{args.rounds} rounds"
    )
    baseline = TorchLSTMSampler(model)
    check = check_same_model(model, baseline, min(args.length, 200))
    print(
        f"greedy check: characters agreeing of {check['greedy_chars_checked']} "
        f"(3 streams): {check['greedy_chars_agreeing']}"
    )

    variants = {
        "rnnkit": lambda n, r: sample_rnnkit(model, n, args.length, seed=r),
        "nn.LSTM": lambda n, r: baseline.sample(n, args.length, seed=r),
    }
    keys = [(name, n) for n in streams for name in variants]
    for name, n in keys:  # warm-up
        variants[name](n, 0)
    rates: dict[tuple[str, int], list[float]] = {key: [] for key in keys}
    for r in range(args.rounds):
        shift = r % len(keys)  # rotate the order so no variant always runs first
        for name, n in keys[shift:] + keys[:shift]:
            start = time.perf_counter()
            texts = variants[name](n, r + 1)
            seconds = time.perf_counter() - start
            if len(texts) != n or any(len(t) != args.length for t in texts):
                raise RuntimeError(f"{name}: wrong output shape")
            rates[(name, n)].append(n * args.length / seconds)
        print(f"  round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    results = {}
    print(f"\n{'streams':>7} {'variant':<8} {'chars/s':>10} {'vs nn.LSTM':>11}  target")
    for name, n in keys:
        rs, base = rates[(name, n)], rates[("nn.LSTM", n)]
        ratio = statistics.median(a / b for a, b in zip(rs, base))
        res = {
            "variant": name,
            "streams": n,
            "chars_per_s": statistics.median(rs),
            "vs_nn_lstm": ratio,
            "rounds": rs,
        }
        target = ""
        if name == "rnnkit" and n in TARGETS:
            ok = res["chars_per_s"] >= TARGETS[n]
            target = f">= {TARGETS[n]:,.0f} chars/s: {'met' if ok else 'MISSED'}"
            res["target_chars_per_s"] = TARGETS[n]
            if n == 1:
                ok = ratio >= TARGET_RATIO_1
                target += f"; >= {TARGET_RATIO_1:.0f}x nn.LSTM: {'met' if ok else 'MISSED'}"
        results[f"{name}/{n}"] = res
        print(f"{n:7d} {name:<8} {res['chars_per_s']:10,.0f} {ratio:11.2f}  {target}")
    la = print_load_after()
    report = {"environment": env, "args": vars(args), "greedy_check": check}
    write_json(args.json, {**report, "results": results, "loadavg_after": la})


if __name__ == "__main__":
    main()
