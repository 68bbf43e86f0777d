"""The encoder-decoder measured: the lecture's tips and attention at one time budget, and
how fast a trained model translates.

``variants``: one model per setting, each trained for the same `--minutes` of this
machine on a built-in set (``rnnkit.seq2seq.train`` with ``minutes``; validation not
counted), then scored on the set's test split, greedy. The settings: the default (a
bidirectional LSTM encoder, Luong attention, the tips as the defaults have them), each
attention switched, and each of the lecture's four tips switched against an encoder
without attention (where a tip matters most: the final state is all the decoder gets).

    python benchmarks/bench_seq2seq.py variants --data cmudict-g2p --minutes 3
    python benchmarks/bench_seq2seq.py variants --data bible-en-es --minutes 5 \\
        --only luong none --set source_tokens=subwords target_tokens=subwords

``speed``: a trained run translates the first `--n` test sources of its set greedy and
with a beam of 5, in batches of 64 and one sentence at a time (the same model, the same
process), in sentences per second; it also counts the sources whose output differs
between the two ways (padding must never change a translation: 0 expected).

    python benchmarks/bench_seq2seq.py speed runs/g2p --n 1000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from _machine import environment, parse_setting, timed
from rnnkit.checkpoint import load_checkpoint, resolve_checkpoint
from rnnkit.data import get
from rnnkit.tasks import seq2seq
from rnnkit.tasks.seq2seq import Seq2SeqConfig, TrainConfig

# name: (settings of Seq2SeqConfig, what it shows)
VARIANTS: dict[str, tuple[dict, str]] = {
    "luong": ({}, "the default: bidirectional encoder, Luong attention"),
    "bahdanau": ({"attention": "bahdanau"}, "additive attention instead"),
    "none": ({"attention": "none"}, "no attention: the final state only"),
    "none+context": (
        {"attention": "none", "context_every_step": True},
        "tip 2: the final state in every decoder input",
    ),
    "none+reverse": (
        {"attention": "none", "reverse_source": True, "bidirectional": False},
        "tip 4: a one-way encoder reading the source backwards",
    ),
    "none+forward": (
        {"attention": "none", "bidirectional": False},
        "its baseline: a one-way encoder reading forwards",
    ),
    "none+shared": (
        {"attention": "none", "bidirectional": False, "separate_weights": False},
        "tip 1 off: the decoder shares the encoder's weights",
    ),
    "none-feed": (
        {"attention": "none", "feed_previous": False, "context_every_step": True},
        "tip 3 off: the previous token is not fed (the context is)",
    ),
}


def variants(args: argparse.Namespace) -> None:
    names = args.only or list(VARIANTS)
    unknown = sorted(set(names) - VARIANTS.keys())
    if unknown:
        sys.exit(f"--only: unknown variants {unknown}; choose from {list(VARIANTS)}")
    common = dict(parse_setting(kv) for kv in args.set)
    print(f"# {args.data}, {args.minutes} training minutes each, test split, greedy, {common}")
    print(json.dumps(environment()))
    print("| variant | what | steps | exact % | token error % | BLEU | chrF |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        settings, what = VARIANTS[name]
        config = Seq2SeqConfig(**{**common, **settings})
        train_config = TrainConfig(epochs=1000.0, minutes=args.minutes, progress=False)
        with tempfile.TemporaryDirectory(prefix="bench-seq2seq-") as tmp:
            _, results = seq2seq.train(
                Path(tmp) / name, config, train_config, data=args.data, log=lambda m: None
            )
        m = results["test"]["greedy"]
        print(
            f"| {name} | {what} | {results['train']['steps']:,} | {m['exact']:.1f} | "
            f"{m['token_error']:.1f} | {m['bleu']:.1f} | {m['chrf']:.1f} |",
            flush=True,
        )


def speed(args: argparse.Namespace) -> None:
    model = seq2seq.load(args.run)
    meta = load_checkpoint(resolve_checkpoint(args.run)).meta
    data = args.data or meta["data"].get("data")
    if data is None:
        sys.exit("speed: give --data NAME (the run was trained on files)")
    test = get(data, "seq2seq").splits()["test"]
    sources = list(dict.fromkeys(s for s, _ in test))[: args.n]
    print(f"# {args.run} ({data}): {len(sources):,} test sources")
    print(json.dumps(environment()))
    print("| decoding | batched (64) sent/s | one at a time sent/s | batched / one | differ |")
    print("|---|---|---|---|---|")
    for beam in (1, 5):
        outs = {}

        def run(batch_size: int, beam: int = beam, outs: dict = outs) -> None:
            outs[batch_size] = model.translate(sources, beam=beam, batch_size=batch_size)

        run(64)  # warm-up
        batched = timed(lambda: run(64), args.repeats)
        single = timed(lambda: run(1), 1)
        differ = sum(a != b for a, b in zip(outs[64], outs[1]))
        name = "greedy" if beam == 1 else f"beam {beam}"
        print(
            f"| {name} | {len(sources) / batched:,.0f} | {len(sources) / single:,.1f} | "
            f"{single / batched:.1f}x | {differ} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("variants", help="each tip and attention at one time budget")
    p.add_argument("--data", default="cmudict-g2p")
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="settings of every variant, e.g. source_tokens=subwords")  # fmt: skip
    p.add_argument("--only", nargs="+", help=f"these variants only: {', '.join(VARIANTS)}")
    p.set_defaults(func=variants)
    p = sub.add_parser("speed", help="translation speed, batched against one at a time")
    p.add_argument("run")
    p.add_argument("--data", help="the built-in set (default: the run's own)")
    p.add_argument("--n", type=int, default=1000, help="test sources to translate")
    p.add_argument("--repeats", type=int, default=3)
    p.set_defaults(func=speed)
    args = parser.parse_args()
    torch.manual_seed(0)
    args.func(args)


if __name__ == "__main__":
    main()
