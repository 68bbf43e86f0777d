"""The pixel-by-pixel model measured: negative log-likelihood at a time budget, and how
much faster a grid of samples is drawn in one batch than one image at a time.

``quality``: one model per data set, trained for `--minutes` of this machine
(``rnnkit.pixels.train`` with ``minutes``; validation not counted), then its test NLL:
nats per image (binarised digits) and bits per dimension (grey levels).

    python benchmarks/bench_pixels.py quality --data mnist-binary --minutes 30
    python benchmarks/bench_pixels.py quality --data fashion-mnist --minutes 30

``speed``: a trained run (or a fresh model of the default size) completes `--n` test
images from their top half, `--samples` completions each: all in one batch, and one
image at a time (the same model, in the same process), in completed images per second.
The pixels drawn differ between the two ways (one random stream per call), not their
distribution.

    python benchmarks/bench_pixels.py speed runs/pixels-mnist-binary --n 8 --samples 4
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from _machine import environment, parse_setting, timed
from rnnkit.tasks import pixels
from rnnkit.tasks.pixels import PixelConfig, PixelRNN, TrainConfig


def quality(args: argparse.Namespace) -> None:
    model_settings = dict(parse_setting(kv) for kv in args.set)
    train_settings = dict(parse_setting(kv) for kv in args.train_set)
    print(f"# {args.data}, {args.minutes} training minutes, {model_settings}, {train_settings}")
    print(json.dumps(environment()))
    print(
        "| data | model | steps (best at) | validation | **test** nats / image | test bits / dim |"
    )
    print("|---|---|---|---|---|---|")
    config = PixelConfig(**model_settings)
    train_config = TrainConfig(
        **{"epochs": 1000.0, **train_settings, "minutes": args.minutes, "progress": False}
    )
    with tempfile.TemporaryDirectory(prefix="bench-pixels-") as tmp:
        out = Path(args.keep) if args.keep else Path(tmp) / "run"
        model, results = pixels.train(out, config, train_config, data=args.data, log=print)
        what = pixels.describe(model, model.device)
    t, v = results["test"], results["val"]
    print(
        f"| {args.data} | {what} | {results['train']['steps']:,} "
        f"({results['train']['best_step']:,}) | {v['nats_per_image']:.2f} | "
        f"**{t['nats_per_image']:.2f}** | {t['bits_per_dim']:.4f} |",
        flush=True,
    )


def speed(args: argparse.Namespace) -> None:
    if args.run:
        model = pixels.load(args.run)
        source = model.meta["data"]
        sets, _ = pixels.load_images(source.get("data"), 0.1, print, source.get("images"))
    else:
        sets, levels = pixels.load_images(args.data, 0.1, print)
        model = PixelRNN(PixelConfig(levels=levels), tuple(sets["test"].shape[1:])).eval()
    images = sets["test"][: args.n].long()
    keep = model.shape[0] // 2
    many = images.repeat_interleave(args.samples, dim=0)
    print(f"# {args.run or 'a fresh model'}: {len(images)} test images x {args.samples} "
          f"completions below row {keep}, {pixels.describe(model, model.device)}")  # fmt: skip
    print(json.dumps(environment()))
    batched = timed(lambda: model.complete(many, keep, seed=0), args.repeats, warmup=1)
    single = timed(
        lambda: [model.complete(many[k : k + 1], keep, seed=k) for k in range(len(many))], 1
    )
    print("| completions | in one batch, images/s | one at a time, images/s | batch / one |")
    print("|---|---|---|---|")
    print(f"| {len(many)} | {len(many) / batched:.1f} | {len(many) / single:.2f} | "
          f"{single / batched:.1f}x |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("quality", help="test NLL after a time budget")
    p.add_argument("--data", default="mnist-binary")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="model settings, e.g. hidden_size=512")  # fmt: skip
    p.add_argument("--train-set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="training settings, e.g. batch_size=64")  # fmt: skip
    p.add_argument("--keep", help="write the run directory here (completions.png, results)")
    p.set_defaults(func=quality)
    p = sub.add_parser("speed", help="completions per second, in one batch against one by one")
    p.add_argument("run", nargs="?", help="a trained run (default: a fresh model)")
    p.add_argument("--data", default="mnist-binary", help="without a run: the images")
    p.add_argument("--n", type=int, default=8, help="test images")
    p.add_argument("--samples", type=int, default=4, help="completions per image")
    p.add_argument("--repeats", type=int, default=3)
    p.set_defaults(func=speed)
    args = parser.parse_args()
    torch.manual_seed(0)
    args.func(args)


if __name__ == "__main__":
    main()
