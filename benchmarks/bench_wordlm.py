"""Where a word model's training step spends its time: the recurrence or the softmax.

The Penn Treebank models of the README (2x200 LSTM, 200-wide embeddings, 10,001 words,
32 streams x 35 words of the real training text) are timed in parts, forward and
backward, in one process: with the full softmax (output tied to the embedding) and with
the adaptive softmax (cutoffs 2,000 and 6,000, ``--softmax adaptive``).

* the recurrent part: embedding -> 2-layer LSTM, with a stand-in loss (the sum of the
  outputs) so its backward runs;
* the output part: the output layer and cross-entropy over the 1,120 words of the
  window, from fixed LSTM outputs;
* the whole step (as training runs it, Adam update included).

Each part runs in float32 and under bfloat16 autocast (``--precision bf16``: weights,
optimizer and loss in float32), where the CPU has native bfloat16 arithmetic. Each
figure is the median over the timed repeats, after warm-up.

    python benchmarks/bench_wordlm.py [--repeats 30]
"""

from __future__ import annotations

import argparse

import torch

from _machine import timed
from rnnkit.backends import native_bf16
from rnnkit.tasks.wordlm import WordLM, WordLMConfig, load_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    words = load_data(data="ptb", log=lambda m: None)
    V, B, T = len(words.vocab), 32, 35
    # a real window of the training text: the adaptive softmax's cost depends on how
    # often the targets fall outside its head
    ids = torch.from_numpy(words.splits["train"][: B * (T + 1)].reshape(B, T + 1))
    x, y = ids[:, :-1], ids[:, 1:]
    hidden = torch.randn(B, T, 200, requires_grad=True)
    torch.manual_seed(0)
    models = {
        "full softmax (tied)": WordLM(WordLMConfig(dropout=0.3, tie_weights=True), words.vocab),
        "adaptive softmax": WordLM(WordLMConfig(dropout=0.3, softmax="adaptive"), words.vocab),
    }
    precisions = ["fp32"] + (["bf16"] if native_bf16(torch.device("cpu")) else [])
    print(f"threads {torch.get_num_threads()}; {B} x {T} words a step, vocabulary {V:,}")
    print(
        "| model | part | "
        + " | ".join(f"{p}: forward + backward | share" for p in precisions)
        + " |"
    )
    print("|---|---|" + "---|---|" * len(precisions))
    for label, model in models.items():
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def recurrent(model=model) -> None:
            out, _ = model.rnn(model.embed(x))
            out.sum().backward()

        def output(model=model) -> None:
            model.loss(model.drop(hidden).flatten(0, 1), y.flatten()).backward()

        def step(model=model, opt=opt) -> None:
            opt.zero_grad(set_to_none=True)
            out, _ = model.features(x)
            model.loss(out.flatten(0, 1), y.flatten()).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            opt.step()

        rows: dict[str, list[float]] = {}
        for p in precisions:
            ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=p == "bf16")

            def under(f, ctx=ctx):
                def run() -> None:
                    with ctx:
                        f()

                return run

            parts = (recurrent, output, step)
            rows[p] = [timed(under(f), args.repeats, warmup=3) for f in parts]
        names = [
            "embedding + 2x200 LSTM",
            f"output layer ({V:,} words) + cross-entropy",
            "whole step (Adam update included)",
        ]
        for i, name in enumerate(names):
            cells = [
                f"{rows[p][i] * 1e3:.1f} ms | {rows[p][i] / rows[p][2]:.0%}" for p in precisions
            ]
            print(f"| {label} | {name} | " + " | ".join(cells) + " |")
        speed = " | ".join(f"{B * T / rows[p][2]:,.0f} words/s | " for p in precisions)
        print(f"| {label} | training speed | {speed}")


if __name__ == "__main__":
    main()
