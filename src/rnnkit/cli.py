"""The ``rnnkit`` command line: one subcommand per job.

rnnkit hello       the lecture's toy RNN learns "hello"
rnnkit gradients   vanishing and exploding gradients, measured and plotted
rnnkit data        list the text corpora, fetch one into the cache
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from . import __version__
from ._malloc import tune_glibc_malloc


def _cmd_hello(args: argparse.Namespace) -> int:
    from .hello import HelloConfig, sample, train_hello

    cfg = HelloConfig(hidden_size=args.hidden_size, steps=args.steps, lr=args.lr, seed=args.seed)
    model, _ = train_hello(cfg)
    return 0 if sample(model, "h", len(cfg.word)) == cfg.word else 1


def _cmd_gradients(args: argparse.Namespace) -> int:
    from .cells import GRUCell, LSTMCell, RNNCell
    from .diagnostics import (
        decay_rate,
        hidden_gradient_norms,
        largest_singular_values,
        plot_gradient_norms,
    )
    from .init import init_cell

    torch.manual_seed(args.seed)
    B, T, I, H = args.batch, args.steps, args.input_size, args.hidden_size
    x = torch.randn(B, T, I) * args.input_std
    cells = {}
    for s in args.scales:
        cell = RNNCell(I, H, nonlinearity=args.nonlinearity)
        init_cell(cell, weight_ih="xavier", weight_hh="orthogonal", gain={"weight_hh": s})
        cells[f"RNN, W_hh = {s:g} x orthogonal"] = cell
    cells["RNN, torch default init"] = RNNCell(I, H, nonlinearity=args.nonlinearity)
    cells["LSTM (forget bias 1)"] = LSTMCell(I, H)
    cells["GRU"] = GRUCell(I, H)

    curves = {}
    print(
        f"T={T} steps, batch {B}, input {I} (std {args.input_std:g}), hidden {H}; "
        f"L = w . h_T (the loss reads the last step)\n"
    )
    print(
        f"{'cell':34s} {'sigma_max(W_hh) per gate':34s} {'|dL/dh_1|':>10s} "
        f"{'|dL/dh_T/2|':>11s} {'per step':>9s}"
    )
    for label, cell in cells.items():
        norms = hidden_gradient_norms(cell, x)
        curves[label] = norms
        sv = " ".join(f"{k}={v:.2f}" for k, v in largest_singular_values(cell).items())
        rate = decay_rate(norms)
        trend = "vanishing" if rate < 0.99 else "exploding" if rate > 1.01 else "steady"
        print(
            f"{label:34s} {sv:34s} {float(norms[0]):10.2e} {float(norms[T // 2]):11.2e} "
            f"{rate:9.3f}  {trend}"
        )
    path = plot_gradient_norms(curves, args.out)
    print(f"\nwrote {path}")
    return 0


def _cmd_data_list(args: argparse.Namespace) -> int:
    from .corpora import CORPORA, cache_dir

    print(f"corpora (cache: {cache_dir()}):")
    for c in CORPORA.values():
        state = "bundled" if c.source is None else "cached" if c.is_cached() else "-"
        source = c.source or "bundled with rnnkit"
        print(f"  {c.name:12s} {state:8s} {c.chars / 1e6:6.2f} M chars  {c.description}")
        print(f"  {'':12s} {'':8s} {'':14s}  source {source}; licence {c.licence}")
    return 0


def _cmd_data_get(args: argparse.Namespace) -> int:
    from .corpora import FetchError, fetch

    try:
        path = fetch(args.name, log=lambda msg: print(msg, file=sys.stderr))
    except FetchError as err:
        print(f"rnnkit data get: error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnkit", description="Recurrent neural networks, from the lectures to real use."
    )
    parser.add_argument("--version", action="version", version=f"rnnkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("hello", help='the lecture\'s toy RNN learns "hello"')
    p.add_argument("--hidden-size", type=int, default=3, help="hidden units (default 3)")
    p.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate (default 0.05)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_hello)

    p = sub.add_parser(
        "gradients", help="measure and plot vanishing/exploding gradients through time"
    )
    p.add_argument("--steps", type=int, default=100, help="sequence length T (default 100)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--input-size", type=int, default=8)
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--input-std", type=float, default=0.1, help="std of the random inputs")
    p.add_argument("--nonlinearity", choices=["tanh", "relu"], default="tanh")
    p.add_argument(
        "--scales",
        type=float,
        nargs="+",
        default=[0.5, 1.0, 1.5],
        help="vanilla RNNs with W_hh = scale x orthogonal (default 0.5 1 1.5)",
    )
    p.add_argument("--out", default="gradients.png", help="where to write the plot")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_gradients)

    p = sub.add_parser("data", help="list the text corpora, fetch one into the cache")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    q = data_sub.add_parser("list", help="name, size, source, licence; which are cached")
    q.set_defaults(func=_cmd_data_list)
    q = data_sub.add_parser(
        "get",
        help="fetch a corpus (sha256-checked) into $RNNKIT_DATA and print its path",
    )
    q.add_argument("name", help="corpus name, see `rnnkit data list`")
    q.set_defaults(func=_cmd_data_get)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tune_glibc_malloc()  # keep freed buffers in the process: steadier, faster steps
    try:
        return args.func(args)
    except ValueError as err:  # bad input: one clear line, no traceback
        print(f"rnnkit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
