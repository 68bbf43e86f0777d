"""Where a word model's training step spends its time: the recurrence or the softmax.

The Penn Treebank model of the README (2x200 LSTM, tied 200-wide embeddings, 10,001
words, 32 streams x 35 words) is timed in parts, forward and backward, in one process:

* the recurrent part: embedding -> 2-layer LSTM, with a stand-in loss (the sum of the
  outputs) so its backward runs;
* the output part: linear 200 -> 10,001 and cross-entropy over the 1,120 words of the
  window, from fixed LSTM outputs;
* the whole step (as training runs it, Adam update included).

Each figure is the median over the timed repeats, after warm-up.

    python benchmarks/bench_wordlm.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional as F

from rnnkit.data.readers import WordVocab
from rnnkit.tasks.wordlm import WordLM, WordLMConfig


def timed(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    V, B, T = 10_001, 32, 35
    vocab = WordVocab(["<pad>", "<unk>", *[f"w{i}" for i in range(V - 2)]])
    torch.manual_seed(0)
    model = WordLM(WordLMConfig(dropout=0.3, tie_weights=True), vocab)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randint(0, V, (B, T))
    y = torch.randint(0, V, (B, T))
    hidden = torch.randn(B, T, 200, requires_grad=True)

    def recurrent() -> None:
        out, _ = model.rnn(model.embed(x))
        out.sum().backward()

    def output() -> None:
        logits = model.head(model.drop(hidden))
        F.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        logits, _ = model(x)
        F.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()

    r, o, s = (timed(f, args.repeats) for f in (recurrent, output, step))
    print(f"threads {torch.get_num_threads()}; {B} x {T} words a step, vocabulary {V:,}")
    print("| part | forward + backward | share of the step |")
    print("|---|---|---|")
    print(f"| embedding + 2x200 LSTM | {r * 1e3:.1f} ms | {r / s:.0%} |")
    print(f"| linear 200 -> {V:,} + softmax cross-entropy | {o * 1e3:.1f} ms | {o / s:.0%} |")
    print(f"| whole step (Adam update included) | {s * 1e3:.1f} ms | 100% |")
    print(f"words per second: {B * T / s:,.0f}")


if __name__ == "__main__":
    main()
