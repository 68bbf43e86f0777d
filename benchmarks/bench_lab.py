"""The long-range lab's tables: configurations compared at the same time budget.

Each configuration trains for `--minutes` of this machine (evaluation not counted) on
one problem; the table is the lab's ``table.md`` (best validation loss, updates,
whether it diverged), with the machine's description above it, and the plot goes to
``--out`` (``curves.png``).

    python benchmarks/bench_lab.py adding --T 200 --cell lstm gru irnn rnn --minutes 4
    python benchmarks/bench_lab.py copy --T 50 --cell lstm --truncation 4 8 \\
        --synthetic off on --minutes 5

``--why RUN [RUN ...] --out PNG`` draws, for finished lab runs (of one problem, from
any comparisons), the gradient norms over t at the start and the end of training.
``--curves LAB [LAB ...] --out PNG`` draws the learning curves of several finished
comparisons of one problem and T (e.g. one with synthetic gradients off, one on) in one
plot, as ``curves.png`` draws one comparison's.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _machine import environment, parse_setting
from rnnkit.tasks import lab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("problem", choices=lab.PROBLEMS)
    parser.add_argument("--T", type=int, default=200)
    parser.add_argument("--cell", nargs="+", default=["lstm", "gru", "irnn", "rnn"])
    parser.add_argument("--init", nargs="+", default=["default"])
    parser.add_argument("--clip", nargs="+", type=float, default=[1.0])
    parser.add_argument("--truncation", nargs="+", type=int, default=[0])
    parser.add_argument("--synthetic", nargs="+", default=["off"])
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="model settings, e.g. hidden_size=64")  # fmt: skip
    parser.add_argument("--train-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="training settings, e.g. batch_size=20 lr=1e-3")  # fmt: skip
    parser.add_argument("--out", help="keep the lab directory here (curves.png, runs)")
    parser.add_argument("--why", nargs="+", metavar="RUN",
                        help="finished runs: draw their gradient norms to --out")  # fmt: skip
    parser.add_argument("--curves", nargs="+", metavar="LAB",
                        help="finished comparisons: their curves together to --out")  # fmt: skip
    args = parser.parse_args()
    if args.curves:
        path = lab.plot_labs(Path(args.out or "curves.png"), [Path(d) for d in args.curves])
        print(f"wrote {path}")
        return
    if args.why:
        path = lab.plot_gradients(Path(args.out or "gradients.png"),
                                  [lab.run_entry(r) for r in args.why])  # fmt: skip
        print(f"wrote {path}")
        return
    comparison = lab.Comparison(args.problem, args.T, args.cell, args.init, args.clip,
                                args.truncation, args.synthetic)  # fmt: skip
    model = dict(parse_setting(kv) for kv in args.set)
    train = {**dict(parse_setting(kv) for kv in args.train_set), "minutes": args.minutes,
             "steps": 10**7, "progress": False}  # fmt: skip
    print(f"# {args.problem}, T = {args.T}, {args.minutes} minutes each, {model}, {train}")
    print(json.dumps(environment()))
    with tempfile.TemporaryDirectory(prefix="bench-lab-") as tmp:
        out = Path(args.out or Path(tmp) / "lab")
        lab.compare(out, comparison, model, train, log=lambda m: None)
        print((out / "table.md").read_text(encoding="utf-8"), end="")
        if args.out:
            print(f"curves: {out / 'curves.png'}")


if __name__ == "__main__":
    main()
