"""Image captioning measured: does the decoder read the image, does it beat the nearest
neighbour, and how fast does it caption.

``quality``: one model per setting, each trained for the same `--minutes` of this machine
(validation and feature caching not counted) or `--epochs` on a built-in set, the
weights of the best validation CIDEr kept (``--train-set select=loss`` for the lowest
loss), then scored on the set's test split (greedy and beam 3) beside the
nearest-neighbour baseline (the caption of the closest training image in the encoder's
feature space, Devlin et al. 2015) and, with ``blind``, beside the same model that never
sees the image (what the captions' statistics alone give).

    python benchmarks/bench_caption.py quality --data digit-scenes --minutes 10 \\
        --only cnn blind
    python benchmarks/bench_caption.py quality --data tuxpaint --minutes 5 \\
        --only pretrained cnn
    python benchmarks/bench_caption.py quality --data emoji --epochs 150 \\
        --set dropout=0.5 --only pretrained --scst-epochs 30

With ``--scst-epochs`` each variant is then trained further by self-critical sequence
training (its own sampled captions rewarded by CIDEr-D) from its best weights, a second
row.

``ensemble``: trained runs on one built-in set (other seeds, say, kept by ``quality
--keep``) scored on its test split (``--split val``: validation) one by one and as one
ensemble (the mean of their next-word probabilities), greedy and beam 3 (and with
``--mbr N ...``, minimum Bayes risk decoding of the N likeliest captions), beside the
nearest neighbour in the first run's feature space.

    python benchmarks/bench_caption.py ensemble runs/emoji-s1 runs/emoji-s2 runs/emoji-s3 \\
        --mbr 3 5 8

``retrieval``: trained runs (one, or several as one ensemble) against retrieval and with
it: for each k, the consensus caption of the k nearest training images (the one with the
highest CIDEr-D against the others, Devlin et al. 2015), and the caption among the k
images' captions (and the model's own beam-search caption) that the model finds likeliest,
by log P and by log P per word; test CIDEr each.

    python benchmarks/bench_caption.py retrieval runs/tuxpaint-s1 --k 1 5 10

``speed``: a trained run captions the first `--n` test images with a beam of 3, in
batches of 64 and one image at a time (the same model, the same process), in captions
per second, and counts the captions that differ between the two ways (0 expected).

    python benchmarks/bench_caption.py speed runs/caption-digit-scenes --n 500
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from _machine import environment, parse_setting, timed
from rnnkit.data import get
from rnnkit.tasks import caption
from rnnkit.tasks.caption import CaptionConfig, TrainConfig

# name: (settings of CaptionConfig, what it shows)
VARIANTS: dict[str, tuple[dict, str]] = {
    "pretrained": (
        {"encoder": "efficientnet-lite0"},
        "ImageNet EfficientNet-lite0, frozen, v in every step",
    ),
    "pretrained+attention": (
        {"encoder": "efficientnet-lite0", "attention": True},
        "the same with soft attention over its 7x7 (or 4x4) map",
    ),
    "cnn": ({"encoder": "cnn"}, "a small CNN trained from scratch, v in every step"),
    "cnn+first": ({"encoder": "cnn", "inject": "first"}, "v only as the first input"),
    "cnn+init": ({"encoder": "cnn", "inject": "init"}, "v only as the initial state"),
    "cnn+attention": ({"encoder": "cnn", "attention": True}, "with soft attention"),
    "blind": ({"encoder": "cnn", "blind": True}, "the decoder never sees the image"),
}


def quality(args: argparse.Namespace) -> None:
    names = args.only or list(VARIANTS)
    unknown = sorted(set(names) - VARIANTS.keys())
    if unknown:
        sys.exit(f"--only: unknown variants {unknown}; choose from {list(VARIANTS)}")
    common = dict(parse_setting(kv) for kv in args.set)
    training = dict(parse_setting(kv) for kv in args.train_set)
    budget = f"{args.epochs} epochs" if args.epochs else f"{args.minutes} training minutes"
    print(f"# {args.data}, {budget} each, test split, {common}, {training}")
    print(json.dumps(environment()))
    print("| variant | what | steps (best at) | greedy BLEU-4 / CIDEr / exact % | beam 3 BLEU-4 / "
          "CIDEr / ROUGE-L / exact % | nearest neighbour BLEU-4 / CIDEr / exact % | "
          "minutes |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name in names:
        settings, what = VARIANTS[name]
        config = CaptionConfig(**{**common, **settings})
        budget = (
            {"epochs": args.epochs} if args.epochs else {"epochs": 1e4, "minutes": args.minutes}
        )
        train_config = TrainConfig(**{**training, **budget, "beam": 3, "progress": False})
        with tempfile.TemporaryDirectory(prefix="bench-caption-") as tmp:
            run = Path(tmp) / name
            _, results = caption.train(run, config, train_config, data=args.data,
                                       log=lambda m: None)  # fmt: skip
            row(name, what, results)
            if args.scst_epochs:  # then self-critical training from its best weights
                scst = TrainConfig(**{**training, "epochs": args.scst_epochs, "lr": args.scst_lr,
                                      "objective": "cider", "init_from": str(run), "beam": 3,
                                      "progress": False})  # fmt: skip
                _, results = caption.train(Path(tmp) / f"{name}+scst", None, scst,
                                           data=args.data, log=lambda m: None)  # fmt: skip
                row(f"{name} + scst", f"then {args.scst_epochs:g} epochs of self-critical "
                    f"CIDEr-D training, lr {args.scst_lr:g}", results)  # fmt: skip
            if args.keep:
                import shutil

                shutil.copytree(Path(tmp), Path(args.keep), dirs_exist_ok=True)


def row(name: str, what: str, results: dict) -> None:
    test = results["test"]
    g, m, nn = test["greedy"], test["beam3"], test["nearest_neighbour"]
    print(
        f"| {name} | {what} | {results['train']['steps']:,} "
        f"({results['train']['best_step']:,}) | "
        f"{g['bleu4']:.1f} / {g['cider']:.1f} / {g['exact']:.1f} | {m['bleu4']:.1f} / "
        f"{m['cider']:.1f} / {m['rouge_l']:.1f} / {m['exact']:.1f} | "
        f"{nn['bleu4']:.1f} / {nn['cider']:.1f} / {nn['exact']:.1f} | "
        f"{results['train']['minutes']:.1f} |",
        flush=True,
    )


def ensemble(args: argparse.Namespace) -> None:
    models = [caption.load(run) for run in args.runs]
    together = caption.Ensemble(models, names=args.runs)
    data = args.data or together.meta["data"].get("data")
    if data is None:
        sys.exit("ensemble: give --data NAME (the runs were trained on files)")
    splits = get(data, "caption").splits()
    test = splits[args.split]
    if args.mbr:
        caption.keep_frequencies(together, splits["train"])
    fmaps = together.features(test.images)
    print(f"# {data}: {len(test):,} {args.split} images, {len(models)} runs alone and as one")
    print(json.dumps(environment()))
    mbr = "".join(f" minimum Bayes risk of {n} BLEU-4 / CIDEr |" for n in args.mbr)
    print(f"| model | greedy BLEU-4 / CIDEr | beam 3 BLEU-4 / CIDEr / ROUGE-L |{mbr}")
    print("|---|---|---|" + "---|" * len(args.mbr))
    rows = [(run, model, maps) for run, model, maps in zip(args.runs, models, fmaps)]
    for name, model, maps in [*rows, (f"ensemble of {len(models)}", together, fmaps)]:
        g = caption.score(model, test, maps)["metrics"]
        b = caption.score(model, test, maps, beam=3)["metrics"]
        m = [caption.score(model, test, maps, beam=3, mbr=n)["metrics"] for n in args.mbr]
        cells = "".join(f" {x['bleu4']:.1f} / {x['cider']:.1f} |" for x in m)
        print(f"| {name} | {g['bleu4']:.1f} / {g['cider']:.1f} | {b['bleu4']:.1f} / "
              f"{b['cider']:.1f} / {b['rouge_l']:.1f} |{cells}", flush=True)  # fmt: skip
    nn = caption.caption_scores(caption.baseline_captions(together, splits["train"], fmaps),
                                test.captions)  # fmt: skip
    print(
        f"| nearest neighbour | {nn['bleu4']:.1f} / {nn['cider']:.1f} | - |"
        + " - |" * len(args.mbr)
    )


def likeliest(
    flat: list[str], image: torch.Tensor, score: torch.Tensor, allowed: torch.Tensor
) -> list[str]:
    """For each image, the allowed candidate (``flat[c]`` of image ``image[c]``) of the
    highest `score`."""
    out = []
    for i in range(int(image.max()) + 1):
        rows = ((image == i) & allowed).nonzero()[:, 0]
        out.append(flat[int(rows[score[rows].argmax()])])
    return out


def retrieval(args: argparse.Namespace) -> None:
    """The model against retrieval, and the two together: captions of the k nearest
    training images, their consensus (Devlin et al. 2015), and the one the model finds
    likeliest, among them alone or with its own."""
    models = [caption.load(run) for run in args.runs]
    together = caption.Ensemble(models, names=args.runs)
    data = args.data or together.meta["data"].get("data")
    if data is None:
        sys.exit("retrieval: give --data NAME (the runs were trained on files)")
    splits = get(data, "caption").splits()
    train, test = splits["train"], splits["test"]
    fmaps = together.features(test.images)
    lead = models[0]
    train_vectors, vectors = lead.pool(lead.features(train.images)), lead.pool(fmaps[0])
    near = (
        torch.nn.functional.normalize(vectors, dim=1)
        @ torch.nn.functional.normalize(train_vectors, dim=1).T
    )  # (M, N) cosine similarities
    own = together.caption(test.images, beam=args.beam)
    print(f"# {data}: {len(test):,} test images, {len(models)} run(s), nearest neighbours in "
          f"{args.runs[0]}'s feature space")  # fmt: skip
    print(json.dumps(environment()))
    cider = lambda said: caption.caption_scores(said, test.captions)["cider"]  # noqa: E731
    print(f"model (beam {args.beam}): CIDEr {cider(own):.1f}")
    print("| k | k-NN consensus | likeliest of the k captions, log P | ... log P per word | "
          f"... among them and the model's own (beam {args.beam}), log P per word |")  # fmt: skip
    print("|---|---|---|---|---|")
    for k in args.k:
        consensus = caption.nearest_neighbour_captions(train_vectors, train, vectors, k=k)
        ranked = near.topk(k, dim=1).indices.tolist()
        pools = [list(dict.fromkeys(c for n in row for c in train.captions[n])) for row in ranked]
        with_own = [[*pool, said] for pool, said in zip(pools, own)]
        image = torch.tensor([i for i, cands in enumerate(with_own) for _ in cands])  # (C,)
        flat = [c for cands in with_own for c in cands]
        is_own = torch.tensor(
            [j == len(cands) - 1 for cands in with_own for j in range(len(cands))]
        )
        lp = together.log_prob([f[image] for f in fmaps], flat)  # (C,) log P(caption | image)
        per_word = lp / torch.tensor([len(caption.caption_words(c)) + 1 for c in flat])
        said = [likeliest(flat, image, lp, ~is_own), likeliest(flat, image, per_word, ~is_own),
                likeliest(flat, image, per_word, torch.ones_like(is_own))]  # fmt: skip
        print(f"| {k} | {cider(consensus):.1f} | {cider(said[0]):.1f} | {cider(said[1]):.1f} | "
              f"{cider(said[2]):.1f} |", flush=True)  # fmt: skip


def speed(args: argparse.Namespace) -> None:
    model = caption.load(args.run)
    data = args.data or model.meta["data"].get("data")
    if data is None:
        sys.exit("speed: give --data NAME (the run was trained on files)")
    test = get(data, "caption").splits()["test"]
    images = test.images[: args.n]
    fmaps = model.features(images)
    print(f"# {args.run} ({data}): {len(images):,} test images, beam {args.beam}")
    print(json.dumps(environment()))
    print("| decoding | batched (64) captions/s | one at a time captions/s | batched / one | "
          "differ |")  # fmt: skip
    print("|---|---|---|---|---|")
    for beam in (1, args.beam):
        outs = {}

        def run(batch_size: int, beam: int = beam, outs: dict = outs) -> None:
            outs[batch_size] = model.caption_ids(fmaps, beam=beam, batch_size=batch_size)

        run(64)  # warm-up
        batched = timed(lambda: run(64), args.repeats)
        single = timed(lambda: run(1), 1)
        differ = sum(a != b for a, b in zip(outs[64], outs[1]))
        label = "greedy" if beam == 1 else f"beam {beam}"
        print(
            f"| {label} | {len(images) / batched:,.0f} | {len(images) / single:,.1f} | "
            f"{single / batched:.1f}x | {differ} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("quality", help="each setting at one time budget, against the baselines")
    p.add_argument("--data", default="digit-scenes")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--epochs", type=float, help="train this many epochs instead of --minutes")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="model settings of every variant, e.g. hidden_size=512")  # fmt: skip
    p.add_argument("--train-set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="training settings of every variant, e.g. select=loss")  # fmt: skip
    p.add_argument("--only", nargs="+", help=f"these variants only: {', '.join(VARIANTS)}")
    p.add_argument("--keep", help="copy each run directory here (captions.html, results.json)")
    p.add_argument("--scst-epochs", type=float, default=0.0,
                   help="after each variant, this many epochs of self-critical training "
                        "(objective cider) from its best weights, a row of its own")  # fmt: skip
    p.add_argument("--scst-lr", type=float, default=1e-4, help="its learning rate")
    p.set_defaults(func=quality)
    p = sub.add_parser("ensemble", help="runs alone and as one ensemble, on the test split")
    p.add_argument("runs", nargs="+", help="run directories trained on one built-in set")
    p.add_argument("--data", help="the built-in set (default: the first run's own)")
    p.add_argument("--split", choices=["val", "test"], default="test", help="the split scored")
    p.add_argument(
        "--mbr",
        type=int,
        nargs="*",
        default=[],
        help="also minimum Bayes risk decoding of the N likeliest (beam max(3, N))",
    )
    p.set_defaults(func=ensemble)
    p = sub.add_parser("retrieval", help="the model against and with k nearest neighbours")
    p.add_argument("runs", nargs="+", help="run directories trained on one built-in set")
    p.add_argument("--data", help="the built-in set (default: the first run's own)")
    p.add_argument("--k", type=int, nargs="+", default=[1, 5, 10], help="neighbours")
    p.add_argument("--beam", type=int, default=3, help="the beam of the model's own captions")
    p.set_defaults(func=retrieval)
    p = sub.add_parser("speed", help="captions per second, batched against one at a time")
    p.add_argument("run")
    p.add_argument("--data", help="the built-in set (default: the run's own)")
    p.add_argument("--n", type=int, default=500, help="test images to caption")
    p.add_argument("--beam", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.set_defaults(func=speed)
    args = parser.parse_args()
    torch.manual_seed(0)
    args.func(args)


if __name__ == "__main__":
    main()
