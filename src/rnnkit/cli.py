"""The ``rnnkit`` command line: one subcommand per job.

rnnkit hello       the lecture's toy RNN learns "hello"
rnnkit gradients   vanishing and exploding gradients, measured and plotted
rnnkit data        list the text corpora and sequence data sets, fetch one into the cache
rnnkit train       train a model: charlm (character language model), classify, tag
rnnkit predict     label texts or tag sentences with a trained classifier or tagger
rnnkit sample      sample text from a character model, streamed as it is made
rnnkit complete    the most likely ends of a word after a prefix, by a character model
rnnkit eval        bits per character (charlm); metrics and a confusion matrix (classify, tag)
rnnkit inspect     colour a text by a character model's cells; find the interpretable ones
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from . import __version__
from . import data as datasets
from ._malloc import tune_glibc_malloc


def _cmd_hello(args: argparse.Namespace) -> int:
    from .tasks.hello import HelloConfig, sample, train_hello

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
    print(datasets.table())
    return 0


def _cmd_data_get(args: argparse.Namespace) -> int:
    from .data.fetch import FetchError

    try:
        path = datasets.get(args.name).fetch(log=lambda msg: print(msg, file=sys.stderr))
    except FetchError as err:
        print(f"rnnkit data get: error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _cmd_train_charlm(args: argparse.Namespace) -> int:
    from .tasks.charlm import CharLMConfig, TrainConfig, train

    model_cfg = CharLMConfig(
        cell=args.cell,
        num_layers=args.layers,
        hidden_size=args.hidden_size,
        embedding_size=args.embedding_size,
        dropout=args.dropout,
        init=args.init,
    )
    train_cfg = TrainConfig(
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        steps=args.steps if args.steps is not None else TrainConfig.steps,
        minutes=args.minutes,
        lr=args.lr,
        schedule=args.schedule,
        warmup_steps=args.warmup,
        clip_norm=args.clip,
        val_fraction=args.val_fraction,
        eval_every=args.eval_every,
        eval_chars=args.eval_chars,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        progress=not args.no_progress,
    )
    corpus = args.corpus if args.text is None else None
    if args.text is None and corpus is None:
        corpus = "shakespeare"
    out = args.out or f"runs/charlm-{corpus or Path(args.text).stem}"
    if args.resume:  # the run's own settings; --steps may extend it
        resume_cfg = train_cfg if args.steps is not None else None
        if resume_cfg is None and args.no_progress:
            resume_cfg = TrainConfig(steps=1, progress=False)
        model, trainer = train(out, resume=True, train_config=resume_cfg)
    else:
        model, trainer = train(out, model_cfg, train_cfg, text=args.text, corpus=corpus)
    print(f"run directory: {out} (best/, latest/, metrics.csv, loss.png)")
    if args.sample:
        text = model.sample(length=args.sample, temperature=0.8, seed=args.seed)
        print(f"\n--- a sample at temperature 0.8 ---\n{text}")
    return 0


def _seq_configs(args: argparse.Namespace, task: str):
    """The model and run configurations: dataclass defaults, then the built-in set's
    tuned preset (the README's settings), then what the command line says."""
    from dataclasses import fields

    from .tasks.sequences import RunConfig

    module = _seq_module(task)
    config_cls = module.ClassifyConfig if task == "classify" else module.TagConfig
    model_kw, run_kw = ({}, {}) if args.data is None else module.PRESETS.get(args.data, ({}, {}))
    model_kw, run_kw = dict(model_kw), dict(run_kw)
    for cls, kw in ((config_cls, model_kw), (RunConfig, run_kw)):
        for f in fields(cls):
            value = getattr(args, f.name, None)
            if value is not None:
                kw[f.name] = value
    run_kw["progress"] = not args.no_progress
    return config_cls(**model_kw), RunConfig(**run_kw)


def _seq_module(task: str):
    if task == "classify":
        from .tasks import classify

        return classify
    from .tasks import tag

    return tag


def _cmd_train_seq(args: argparse.Namespace) -> int:
    module = _seq_module(args.task)
    if args.resume:
        if args.out is None:
            raise ValueError("--resume needs the run directory in --out")
        from .tasks.sequences import RunConfig

        module.train(args.out, run=RunConfig(progress=not args.no_progress), resume=True)
        print(f"run directory: {args.out}")
        return 0
    config, run = _seq_configs(args, args.task)
    name = args.data or Path(args.train).stem
    out = args.out or f"runs/{args.task}-{name}"
    module.train(out, config, run, data=args.data, train=args.train, val=args.val, test=args.test)
    print(f"run directory: {out} (best/, latest/, metrics.csv, results.json, confusion.png)")
    return 0


def _read_examples(args: argparse.Namespace) -> list[str]:
    """Examples for `predict`: the arguments, else the lines of --file, else stdin."""
    from .data.corpora import load_text

    if args.text:
        lines, where = list(args.text), "the arguments"
    elif args.file is not None:
        lines, where = load_text(args.file).splitlines(), str(args.file)
    else:
        raw = sys.stdin.buffer.read()
        try:
            lines, where = raw.decode("utf-8").splitlines(), "standard input"
        except UnicodeDecodeError as err:
            raise ValueError(f"standard input is not UTF-8 text: {err}") from None
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise ValueError(f"{where}: no examples (an empty input)")
    return lines


def _cmd_predict(args: argparse.Namespace) -> int:
    from .tasks import load as load_any

    model = load_any(args.checkpoint, device=_device(args.device))
    kind = getattr(model, "meta", {}).get("kind")
    if kind not in ("classify", "tag"):
        raise ValueError(
            f"{args.checkpoint} is a {kind!r} model; `predict` takes a classifier or a "
            "tagger (use `rnnkit sample` for a character model)"
        )
    if model.spec.kind == "numeric":
        if args.file is None or not str(args.file).endswith(".npz"):
            raise ValueError("this model reads numeric sequences: give them as --file X.npz")
        import numpy as np

        with np.load(args.file, allow_pickle=False) as f:
            if "x" not in f.files:
                raise ValueError(f"{args.file}: missing array 'x' (N, T[, C])")
            x, lengths = f["x"], f["lengths"] if "lengths" in f.files else None
        if kind == "classify":
            for top in model.predict_arrays(x, lengths, top=args.top):
                print("\t".join(f"{label}\t{p:.4f}" for label, p in top))
        else:
            for tags in model.predict_arrays(x, lengths):
                print(" ".join(tags))
        return 0
    lines = _read_examples(args)
    if kind == "classify":
        for line, top in zip(lines, model.predict(lines, top=args.top)):
            print("\t".join([*(f"{label}\t{p:.4f}" for label, p in top), line]))
    else:
        for line, tags in zip(lines, model.predict(lines)):
            print(" ".join(f"{tok}/{t}" for tok, t in zip(line.split(), tags)))
    return 0


def _cmd_eval_seq(args: argparse.Namespace, model) -> int:
    """Metrics of a classifier or tagger on a data set, and its confusion-matrix plot."""
    from .metrics import plot_confusion
    from .tasks.sequences import encode_split

    kind = model.meta["kind"]
    module = _seq_module(kind)
    if args.test is not None:
        split, name = module.read_split(args.test), args.test
    else:
        data = args.data or model.meta["data"].get("data")
        if data is None:
            test = model.meta["data"].get("test")
            if test is None:
                raise ValueError(
                    "give the labelled data to evaluate on: --test FILE or --data NAME"
                )
            split, name = module.read_split(test), test
        else:
            splits = datasets.get(data, kind).splits(lambda m: print(m, file=sys.stderr))
            split, name = splits["test"], f"{data} (test)"
    examples = encode_split(split, model.spec, model.labels, per_step=kind == "tag")
    r = module.evaluate(model, examples)
    print(f"{name}: {len(examples):,} examples")
    print(f"  {module.format_metrics(r['metrics'])}")
    if kind == "classify" or "entity_f1" not in r["metrics"]:
        from sklearn.metrics import classification_report

        labels = model.labels.labels
        print(
            classification_report(
                r["y_true"], r["y_pred"], labels=list(range(len(labels))),
                target_names=labels, digits=3, zero_division=0,
            )
        )  # fmt: skip
    else:
        from seqeval.metrics import classification_report

        gold, pred = r["tags"]
        print(classification_report(gold, pred, digits=3, zero_division=0))
    plot = args.plot or "confusion.png"
    plot_confusion(
        r["y_true"], r["y_pred"], model.labels.labels, plot,
        f"{name}: {module.format_metrics(r['metrics'])}",
    )  # fmt: skip
    print(f"confusion matrix: {plot}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from .tasks.charlm import load

    model = load(args.checkpoint, device=_device(args.device))
    kwargs = dict(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        num=args.num,
        seed=args.seed,
    )
    if args.num == 1:  # stream the text as it is made
        gen = model.generate(args.prime, args.length, **kwargs)
        sys.stdout.write(args.prime)
        for step in gen:
            sys.stdout.write(step[0])
            sys.stdout.flush()
        sys.stdout.write("\n")
        return 0
    for i, text in enumerate(model.sample(args.prime, args.length, **kwargs)):
        print(f"--- sample {i + 1} of {args.num} ---\n{args.prime}{text}")
    return 0


def _cmd_complete(args: argparse.Namespace) -> int:
    from .tasks.charlm import load

    model = load(args.checkpoint, device=_device(args.device))
    found = model.complete(args.prefix, args.k, max_length=args.max_length)
    stops = (" ", "\n")
    word = args.prefix[max(args.prefix.rfind(c) for c in stops) + 1 :]  # its last word
    for text, p in found:
        print(f"{p:.4f}\t{word}{text}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .data.corpora import fetch
    from .tasks import load as load_any
    from .tasks.charlm import score_file

    model = load_any(args.checkpoint, device=_device(args.device))
    if getattr(model, "meta", {}).get("kind") in ("classify", "tag"):
        if args.text is not None or args.corpus is not None:
            raise ValueError("--text and --corpus are for character models; use --test or --data")
        return _cmd_eval_seq(args, model)
    if args.test is not None or args.data is not None:
        raise ValueError("a character model is evaluated on --text FILE or --corpus NAME")
    if args.text is None and args.corpus is None:
        raise ValueError("give the text to score: --text FILE or --corpus NAME")
    path = args.text if args.text is not None else fetch(args.corpus)
    r = score_file(model, path)
    h1 = r["unigram_nats"]
    print(
        f"{path}: {int(r['text_chars']):,} characters\n"
        f"  model:   {r['nats_per_char']:.4f} nats/char  {r['bits_per_char']:.4f} bits/char\n"
        f"  unigram: {h1:.4f} nats/char  {h1 / math.log(2):.4f} bits/char "
        "(character frequencies alone)"
    )
    return 0


def _default_text(model, max_chars: int) -> tuple[str, str]:
    """The text ``rnnkit inspect`` reads without ``--text``, and where it came from.

    The start of the model's own validation text (the last ``val_fraction`` of its
    training text, never trained on) when that text is at hand -- the run's text file,
    or its corpus when bundled or cached; otherwise the last `max_chars` characters of
    the bundled Shakespeare (which are the validation part of ``--corpus
    shakespeare`` runs).
    """
    import numpy as np

    from .data.corpora import (
        CORPORA,
        cache_dir,
        encode_to_memmap,
        fetch,
        load_shakespeare,
        split_by_position,
    )

    meta = getattr(model, "meta", None) or {}
    source = meta.get("data") or {}
    val_fraction = (meta.get("train") or {}).get("val_fraction", 0.1)
    path = None
    if source.get("text") and Path(source["text"]).is_file():
        path = Path(source["text"])
    elif source.get("corpus") in CORPORA:
        corpus = CORPORA[source["corpus"]]
        if corpus.source is None or corpus.is_cached():  # no download
            path = fetch(corpus.name)
    if path is not None:
        ids, vocab = encode_to_memmap(path, cache_dir() / "encoded")
        _, val = split_by_position(ids, val_fraction)
        if vocab == model.vocab and len(val) > 0:
            text = vocab.decode(np.asarray(val[:max_chars]))
            return text, (
                f"the first {len(text):,} characters of the model's validation text "
                f"(the last {val_fraction:g} of {path.name}, never trained on)"
            )
    return load_shakespeare()[-max_chars:], (
        f"the last {max_chars:,} characters of the bundled Shakespeare"
    )


def _load_charlm(checkpoint: str):
    from .tasks.charlm import load

    try:
        return load(checkpoint)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"Argument `checkpoint`: {err}") from None
    except ValueError as err:
        raise ValueError(f"Argument `checkpoint`: {err}") from None


def _read_text(path: str) -> str:
    from .data.corpora import load_text

    if not Path(path).is_file():
        raise FileNotFoundError(f"Argument `text`: no such file: {path}")
    try:
        return load_text(path)
    except ValueError as err:
        raise ValueError(f"Argument `text`: {err}") from None


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .inspect_cells import activations, rank_cells, render_html, text_features
    from .inspect_cells._checks import check_positive

    model = _load_charlm(args.checkpoint)
    check_positive("max_chars", args.max_chars)
    check_positive("page_chars", args.page_chars)
    check_positive("top", args.top)
    if args.text is not None:
        text, source = _read_text(args.text)[: args.max_chars], args.text
    else:
        text, source = _default_text(model, args.max_chars)
    sizes = [layer.hidden_size for layer in model.rnn.layers]
    if args.layer is not None and not 0 <= args.layer < len(sizes):
        raise ValueError(
            f"Argument `layer` must be in 0..{len(sizes) - 1} (the model has {len(sizes)} "
            f"layers), got {args.layer}"
        )
    if args.cell is not None:
        l = args.layer or 0
        if not 0 <= args.cell < sizes[l]:
            raise ValueError(
                f"Argument `cell` must be in 0..{sizes[l] - 1} (layer {l} has {sizes[l]} "
                f"cells), got {args.cell}"
            )
    try:
        acts = activations(model, text, kind=args.kind, max_chars=args.max_chars)
    except ValueError as err:
        if str(err).startswith("Argument `text`"):
            what = "--text" if args.text is not None else f"the default text ({source})"
            raise ValueError(f"{err} (in {what})") from None
        raise
    cfg = model.config
    print(
        f"read {len(acts.text):,} characters of {source} with a {cfg.num_layers}x"
        f"{cfg.hidden_size} {cfg.cell.upper()}: {acts.quantity} of {sum(sizes)} cells"
    )
    highlights, cells_to_show = [], None
    if args.find:
        found = rank_cells(acts.layers, text_features(acts.text), top=args.top)
        print(found.table())
        ranked = sorted(
            ((name, m) for name, ms in found.best.items() for m in ms),
            key=lambda nm: -abs(nm[1].correlation),
        )
        highlights = [(name, m.layer, m.cell, m.correlation) for name, m in ranked]
        if args.only_found:
            cells_to_show = [(m.layer, m.cell) for _, m in ranked]
    layer, cell = args.layer, args.cell
    if layer is not None and cell is None:
        cell = 0
    if cell is not None and layer is None:
        layer = 0
    path = render_html(
        acts.text,
        acts.layers,
        acts.predictions,
        args.out,
        cells_to_show=cells_to_show,
        layer=layer,
        cell=cell,
        highlights=highlights,
        quantity=acts.quantity,
        title=f"Inside a {cfg.num_layers}x{cfg.hidden_size} {cfg.cell.upper()}: {args.checkpoint}",
        about=f"Text: {source}.",
        max_chars=args.page_chars,
    )
    size = path.stat().st_size
    print(f"wrote {path} ({size / 1e6:.1f} MB); open it in a browser")
    return 0


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


class _ShowDefaults(argparse.HelpFormatter):
    """Help that shows each option's default, where it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.option_strings and not any(
            action.default is v for v in (None, False, argparse.SUPPRESS)
        ):
            text += " (default: %(default)s)"
        return text.strip()


def _add_seq_train_parser(train_sub, task: str, what: str) -> None:
    from .tasks.sequences import EncoderConfig as E
    from .tasks.sequences import RunConfig as R

    module = _seq_module(task)
    fmt = "label<TAB>text lines" if task == "classify" else "token<TAB>tag lines"
    q = train_sub.add_parser(
        task,
        help=what,
        formatter_class=_ShowDefaults,
        description=f"Train a sequence {'classifier' if task == 'classify' else 'tagger'}: "
        f"{what}. Data: --data NAME (built-in: {', '.join(module.BUILTIN)}; tuned settings "
        f"preset) or --train FILE ({fmt}, or an .npz with x and y). Unset options take the "
        "built-in set's preset, else the defaults shown.",
    )
    src = q.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", choices=module.BUILTIN, help="a built-in data set")
    src.add_argument("--train", help=f"training file: {fmt}, or .npz")
    q.add_argument("--val", help="validation file (default: --val-fraction of --train)")
    q.add_argument("--test", help="test file, scored with the best weights at the end")
    q.add_argument("--out", help=f"run directory (default runs/{task}-NAME)")
    q.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    g = q.add_argument_group("model (defaults: the built-in set's preset, else these)")
    g.add_argument("--cell", choices=["lstm", "gru", "rnn"], help=f"recurrent cell ({E.cell})")
    g.add_argument("--num-layers", type=int, help=f"stacked layers ({E.num_layers})")
    g.add_argument("--hidden-size", type=int, help=f"units per direction ({E.hidden_size})")
    bi = g.add_mutually_exclusive_group()
    bi.add_argument("--bidirectional", dest="bidirectional", action="store_const", const=True)
    bi.add_argument(
        "--unidirectional",
        dest="bidirectional",
        action="store_const",
        const=False,
        help=f"direction (bidirectional: {E.bidirectional})",
    )
    g.add_argument("--nonlinearity", choices=["tanh", "relu"], help="rnn cell only (tanh)")
    g.add_argument("--init", help="an rnnkit.init scheme, e.g. irnn, orthogonal")
    g.add_argument("--dropout", type=float, help=f"inputs, between layers, output ({E.dropout})")
    g.add_argument("--embedding-size", type=int, help=f"word vectors ({E.embedding_size})")
    g.add_argument(
        "--chars",
        action="store_const",
        const=True,
        help="add a character-level representation of each word",
    )
    g.add_argument("--min-freq", type=int, help=f"rarer words become <unk> ({E.min_freq})")
    g.add_argument("--lower", action="store_const", const=True, help="lowercase the words")
    if task == "classify":
        from .structures import POOLS

        g.add_argument("--pool", choices=POOLS, help="summary of the steps (last)")
    else:
        g.add_argument(
            "--crf", action="store_const", const=True, help="a linear-chain CRF output layer"
        )
    g = q.add_argument_group("training")
    g.add_argument("--epochs", type=float, help=f"passes over the training set ({R.epochs:g})")
    g.add_argument("--batch-size", type=int, help=f"sequences per batch ({R.batch_size})")
    g.add_argument("--lr", type=float, help=f"peak Adam learning rate ({R.lr:g})")
    g.add_argument("--weight-decay", type=float, help=f"({R.weight_decay:g})")
    g.add_argument("--clip-norm", type=float, help=f"gradient-norm clip ({R.clip_norm:g})")
    g.add_argument("--val-fraction", type=float, help=f"held out of --train ({R.val_fraction})")
    g.add_argument("--evals-per-epoch", type=int, help=f"({R.evals_per_epoch})")
    g.add_argument(
        "--augment",
        choices=["translate"],
        help="images read by rows: shift each training image by up to 2 pixels each way",
    )
    g.add_argument("--seed", type=int, help=f"initialisation and batch order ({R.seed})")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], help="(auto)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=_cmd_train_seq, task=task)


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

    p = sub.add_parser(
        "data", help="list the text corpora and sequence data sets, fetch one into the cache"
    )
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    q = data_sub.add_parser("list", help="name, size, source, licence; which are cached")
    q.set_defaults(func=_cmd_data_list)
    q = data_sub.add_parser(
        "get",
        help="fetch a corpus or data set (sha256-checked) into $RNNKIT_DATA, print its path",
    )
    q.add_argument("name", help="a corpus or data set name, see `rnnkit data list`")
    q.set_defaults(func=_cmd_data_get)

    p = sub.add_parser("train", help="train a model: `rnnkit train charlm|classify|tag --help`")
    train_sub = p.add_subparsers(dest="task", metavar="TASK", required=True)
    q = train_sub.add_parser(
        "charlm",
        help="a character-level language model on any UTF-8 text",
        description="Train a character-level language model: embedding -> stacked "
        "LSTM/GRU/RNN -> linear, on B parallel streams with truncated BPTT.",
        formatter_class=_ShowDefaults,
    )
    src = q.add_mutually_exclusive_group()
    src.add_argument("--text", help="a UTF-8 text file to train on")
    src.add_argument(
        "--corpus", help="a named corpus (`rnnkit data list`); default: the bundled shakespeare"
    )
    q.add_argument("--out", help="run directory (default runs/charlm-NAME)")
    q.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    # The defaults are the configuration classes' own (the tuned ones of the README).
    from .tasks.charlm import CharLMConfig as M
    from .tasks.charlm import TrainConfig as T

    q.add_argument("--cell", choices=["lstm", "gru", "rnn"], default=M.cell, help="recurrent cell")
    q.add_argument("--layers", type=int, default=M.num_layers, help="stacked layers")
    q.add_argument("--hidden-size", type=int, default=M.hidden_size, help="units per layer")
    q.add_argument("--embedding-size", type=int, default=M.embedding_size, help="0: one-hot")
    q.add_argument(
        "--dropout", type=float, default=M.dropout, help="between layers, before the output"
    )
    q.add_argument("--init", help="initialisation scheme of rnnkit.init, e.g. orthogonal")
    q.add_argument("--batch-size", type=int, default=T.batch_size, help="parallel streams")
    q.add_argument("--seq-len", type=int, default=T.seq_len, help="characters per TBPTT window")
    q.add_argument("--steps", type=int, help=f"optimizer steps (default {T.steps})")
    q.add_argument(
        "--minutes", type=float, help="train for this long instead of --steps (schedule fits)"
    )
    q.add_argument("--lr", type=float, default=T.lr, help="peak Adam learning rate")
    q.add_argument(
        "--schedule",
        choices=["constant", "cosine", "linear"],
        default=T.schedule,
        help="learning-rate decay after warm-up",
    )
    q.add_argument("--warmup", type=int, default=T.warmup_steps, help="warmup steps")
    q.add_argument("--clip", type=float, default=T.clip_norm, help="gradient-norm clip threshold")
    q.add_argument(
        "--val-fraction", type=float, default=T.val_fraction, help="the end of the text held out"
    )
    q.add_argument("--eval-every", type=int, default=T.eval_every, help="steps; 0: at the end")
    q.add_argument(
        "--eval-chars",
        type=int,
        default=T.eval_chars,
        help="validation characters per evaluation, from its start; 0: all",
    )
    q.add_argument("--checkpoint-every", type=int, default=T.checkpoint_every, help="steps")
    q.add_argument("--sample", type=int, default=300, help="characters to sample at the end")
    q.add_argument("--seed", type=int, default=T.seed, help="initialisation and data order")
    q.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    q.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default=T.precision,
        help="bf16: the forward pass in bfloat16 under autocast; auto: bf16 on CPUs with "
        "native bfloat16 (AVX512-BF16, AMX) when the fused LSTM kernel runs, else fp32",
    )
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=_cmd_train_charlm)

    for task, what in (
        ("classify", "one label per sequence (many to one): sentiment, digits, signals"),
        ("tag", "one tag per step (many to many): parts of speech, named entities"),
    ):
        _add_seq_train_parser(train_sub, task, what)

    p = sub.add_parser("sample", help="sample text from a character model")
    p.add_argument("checkpoint", help="a run directory (its best checkpoint) or a checkpoint")
    p.add_argument("--prime", default="", help="text to start from")
    p.add_argument("--length", type=int, default=1000, help="characters to sample")
    p.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--num", type=int, default=1, help="streams, sampled as one batch")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser(
        "complete",
        help="the most likely ends of a word after a prefix (character model)",
        description="Spelling completion: the k most likely continuations of PREFIX up to "
        "a space or a newline, by beam search; prints probability<TAB>word per line (the "
        "prefix's last word, completed).",
    )
    p.add_argument("checkpoint", help="a run directory (its best checkpoint) or a checkpoint")
    p.add_argument("prefix", help="the text so far")
    p.add_argument("--k", type=int, default=5, help="completions to show (default 5)")
    p.add_argument("--max-length", type=int, default=20, help="most characters to add (default 20)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    p.set_defaults(func=_cmd_complete)

    p = sub.add_parser(
        "eval",
        help="score a model: bits per character (charlm), or metrics and a confusion "
        "matrix (classify, tag)",
    )
    p.add_argument("checkpoint", help="a run directory (its best checkpoint) or a checkpoint")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--text", help="charlm: a UTF-8 text file")
    src.add_argument("--corpus", help="charlm: a named corpus")
    src.add_argument("--test", help="classify/tag: a labelled TSV, CoNLL or .npz file")
    src.add_argument(
        "--data", help="classify/tag: a built-in set's test split (default: the run's own)"
    )
    p.add_argument("--plot", help="classify/tag: confusion-matrix PNG (default ./confusion.png)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "predict",
        help="label texts (classify) or tag sentences (tag), one example per line",
        description="Examples come from the arguments, else --file, else standard input, "
        "one per line. A classifier prints label<TAB>probability<TAB>text, a tagger "
        "token/TAG pairs.",
    )
    p.add_argument("checkpoint", help="a run directory (its best checkpoint) or a checkpoint")
    p.add_argument("text", nargs="*", help="examples (each argument one)")
    p.add_argument("--file", help="a UTF-8 file with one example per line, or an .npz")
    p.add_argument("--top", type=int, default=1, help="classify: the most likely labels to show")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    p.set_defaults(func=_cmd_predict)

    from .inspect_cells import DEFAULT_PAGE_CHARS, KINDS

    p = sub.add_parser(
        "inspect",
        help="colour a text by a character model's cells; find cells that track quotes, "
        "line length, brackets",
        description="Run a character model over a text and write an HTML page (self-contained, "
        "open it in any browser) that colours each character by one cell's activation -- "
        "tanh(c) of an LSTM, h otherwise -- blue -1, white 0, red +1; hover for the model's "
        "guesses of the next character. --find ranks the cells by correlation with "
        "features of the text and shows the best first. Layers and cells count from 0.",
    )
    p.add_argument("checkpoint", help="a run directory (its best checkpoint) or a checkpoint")
    p.add_argument(
        "--text",
        help="a UTF-8 text file, read from its start (default: the start of the model's "
        "validation text when its training text is at hand, else the last --max-chars "
        "characters of the bundled Shakespeare)",
    )
    p.add_argument("--out", default="view.html", help="the HTML page to write (default view.html)")
    p.add_argument("--layer", type=int, help="the layer shown first (default 0, or the best found)")
    p.add_argument("--cell", type=int, help="the cell shown first (default 0, or the best found)")
    p.add_argument(
        "--kind",
        choices=KINDS,
        default="tanh_c",
        help="tanh_c: tanh(c) of LSTM cells, h of others (default); h: the hidden state",
    )
    p.add_argument(
        "--max-chars",
        type=int,
        default=DEFAULT_PAGE_CHARS,
        help=f"characters read and correlated (default {DEFAULT_PAGE_CHARS:,})",
    )
    p.add_argument(
        "--page-chars",
        type=int,
        default=DEFAULT_PAGE_CHARS,
        help=f"of those, characters shown on the page (default {DEFAULT_PAGE_CHARS:,})",
    )
    p.add_argument(
        "--find",
        action="store_true",
        help="rank cells by |correlation| with in_quotes, line_position, bracket_depth, "
        "in_comment, in_if_block; print the table and pre-select the best on the page",
    )
    p.add_argument("--top", type=int, default=3, help="cells per feature for --find (default 3)")
    p.add_argument(
        "--only-found",
        action="store_true",
        help="with --find: store only the found cells in the page (a much smaller file)",
    )
    p.set_defaults(func=_cmd_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tune_glibc_malloc()  # keep freed buffers in the process: steadier, faster steps
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:  # bad input: one line
        print(f"rnnkit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
