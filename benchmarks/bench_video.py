"""Video classification measured: the recurrent models against the averaging baseline.

Each variant is trained for the same `--minutes` of this machine (or `--epochs`) on a
built-in set, with a label per clip and a label per frame, and scored on the test split
(the weights of the best validation accuracy). The ``mean`` variant is the same CNN with
the frames' vectors averaged (per clip) or each frame alone (per frame): no recurrence.

    python benchmarks/bench_video.py --data moving-digits --minutes 5
    python benchmarks/bench_video.py --data moving-digits --epochs 5 --only rnn mean
    python benchmarks/bench_video.py --data wesnoth-actions --minutes 5 --only rnn mean \
        --set encoder=efficientnet-lite0

With the frozen EfficientNet-lite0 the maps of every frame are computed once (and cached
on disk) before the clock starts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from _machine import environment, parse_setting
from rnnkit.tasks import video
from rnnkit.tasks.video import TrainConfig, VideoConfig

VARIANTS = {
    "rnn": ({"temporal": "rnn"}, "an LSTM over the frames' vectors"),
    "conv": ({"temporal": "conv"}, "a ConvLSTM over the frames' feature maps"),
    "mean": ({"temporal": "mean"}, "no recurrence: frame vectors averaged (per clip) or alone"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="moving-digits")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--epochs", type=float, help="train this many epochs instead")
    parser.add_argument("--labels", nargs="+", default=["clip", "frames"])
    parser.add_argument("--only", nargs="+", help=f"these variants only: {', '.join(VARIANTS)}")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="model settings of every variant")  # fmt: skip
    parser.add_argument("--train-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="training settings of every variant (e.g. batch_size=16)")  # fmt: skip
    args = parser.parse_args()
    names = args.only or list(VARIANTS)
    if set(names) - VARIANTS.keys():
        sys.exit(f"--only: choose from {list(VARIANTS)}")
    common = dict(parse_setting(kv) for kv in args.set)
    train_common = dict(parse_setting(kv) for kv in args.train_set)
    torch.manual_seed(0)
    budget = f"{args.epochs} epochs" if args.epochs else f"{args.minutes} minutes"
    print(f"# {args.data}, {budget} each, test split, {common}, {train_common}")
    print(json.dumps(environment()))
    print("| labels | variant | what | steps | minutes | val accuracy % | **test accuracy %** |")
    print("|---|---|---|---|---|---|---|")
    for labels in args.labels:
        for name in names:
            settings, what = VARIANTS[name]
            config = VideoConfig(**{**common, **settings, "labels": labels})
            how = (
                {"epochs": args.epochs} if args.epochs else {"epochs": 1e4, "minutes": args.minutes}
            )
            train_config = TrainConfig(**{**train_common, **how, "progress": False})
            with tempfile.TemporaryDirectory(prefix="bench-video-") as tmp:
                _, r = video.train(Path(tmp) / "run", config, train_config, data=args.data,
                                   log=lambda m: None)  # fmt: skip
            print(
                f"| {labels} | {name} | {what} | {r['train']['steps']:,} | "
                f"{r['train']['minutes']:.1f} | {r['val']['accuracy']:.1f} | "
                f"**{r['test']['accuracy']:.1f}** |",
                flush=True,
            )


if __name__ == "__main__":
    main()
