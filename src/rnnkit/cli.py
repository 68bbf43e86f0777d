"""The ``rnnkit`` command line: one subcommand per job, each a few lines that call the
library and print.

rnnkit hello       the lecture's toy RNN learns "hello"
rnnkit gradients   vanishing and exploding gradients, measured and plotted
rnnkit lab         the long-range lab: cells, initialisations, clipping and truncation
                   compared on the adding, copy and sequential-MNIST problems
rnnkit data        list the built-in corpora and data sets, fetch one into the cache
rnnkit train       train a model: charlm (character language model), classify, tag
rnnkit predict     label texts or tag sentences with a trained classifier or tagger
rnnkit sample      sample text from a character model, streamed as it is made
rnnkit complete    the most likely completions of a word's beginning (character model)
rnnkit complete-image  keep the top rows of images, let a pixel model draw the rest
rnnkit eval        bits per character (charlm); metrics and a confusion matrix (classify, tag)
rnnkit inspect     colour a text by a character model's cells; find the interpretable ones

The options of ``train``, ``hello`` and ``gradients`` come from the configuration
dataclasses, one naming rule for all: the field ``hidden_size`` is the flag
``--hidden-size``; its type, choices (a ``Literal``) and default are the field's, and
its help is the comment beside the field (:func:`add_config_flags`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import os
import re
import subprocess
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__, decoding, distributed, tasks
from . import data as datasets
from ._malloc import tune_glibc_malloc
from .data.fetch import FetchError
from .trainer import NonFiniteLossError

DEVICES = ("auto", "cpu", "cuda")

# -- options from configuration dataclasses ---------------------------------------------


def _field_help(cls: type) -> dict[str, str]:
    """Each field's help: the comment beside it in the class's source, or the comment
    lines right above it (fields inherited from a dataclass base included)."""
    helps: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):  # no source at hand: no help text
            continue
        above: list[str] = []
        for line in lines:
            stripped = line.strip()
            if stripped.startswith("#"):
                above.append(stripped.lstrip("# "))
                continue
            m = re.match(r"\s+(\w+)\s*:[^#]*?(?:#\s*(.*))?$", line)
            if m and m.group(1) in {f.name for f in dataclasses.fields(klass)}:
                helps[m.group(1)] = (m.group(2) or " ".join(above)).strip()
            above = []
    return helps


def _flag_type(hint: Any) -> tuple[Any, tuple | None, Any]:
    """(the value type, its choices or None, nargs) of a field's type hint."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint, args = args[0], list(typing.get_args(args[0]))  # X | None -> X
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return type(args[0]), tuple(args), None
    if origin is tuple:
        return args[0], None, len(args)
    if origin is list:
        return args[0], None, "+"
    return hint, None, None


def add_config_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    aliases: dict[str, list[str]] | None = None,
    skip: Sequence[str] = (),
) -> None:
    """One flag per field of the dataclass `cls`: ``--field-name``, typed, with the
    field's choices, its help and its default shown. Every flag defaults to None, so
    :func:`config_from_args` can tell what the command line set (a preset fills the
    rest). `aliases` keeps older spellings working, e.g. ``{"num_layers": ["--layers"]}``.
    A bool field is ``--name`` / ``--no-name``."""
    hints = typing.get_type_hints(cls)
    helps = _field_help(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        names = ["--" + f.name.replace("_", "-"), *(aliases or {}).get(f.name, [])]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        text = f"{helps.get(f.name, '')} (default: {shown})".strip()
        value_type, choices, nargs = _flag_type(hints[f.name])
        if value_type is bool:
            parser.add_argument(
                *names, dest=f.name, action=argparse.BooleanOptionalAction, help=text
            )
        else:
            parser.add_argument(
                *names, dest=f.name, type=value_type, choices=choices, nargs=nargs, help=text
            )


def config_from_args(cls: type, args: argparse.Namespace, preset: dict | None = None) -> Any:
    """`cls` from its defaults, then `preset`, then what the command line set."""
    kw = dict(preset or {})
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            kw[f.name] = tuple(value) if isinstance(f.default, tuple) else value
    return cls(**kw)


def _refuse_on_resume(args: argparse.Namespace, classes: Sequence[type], data: Sequence[str]):
    """--resume continues a run with its own settings and data: refuse the options it
    would ignore instead of dropping them without a word (--steps and --progress are
    the resume's own)."""
    given = [f"--{name.replace('_', '-')}" for name in data if getattr(args, name, None)]
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.name not in ("steps", "progress") and getattr(args, f.name, None) is not None:
                given.append("--" + f.name.replace("_", "-"))
    if given:
        raise ValueError(
            f"--resume continues the run with its own settings and data; it would ignore "
            f"{', '.join(given)} (to change them, start a new run with another --out)"
        )


def _data_parallel(command: Callable[[argparse.Namespace], int]):
    """A training command that also runs data-parallel: under torchrun (``torchrun
    --nproc-per-node N [--nnodes M ...] -m rnnkit train ...``) this process joins the
    group, and only rank 0 prints; ``--nproc N`` starts torchrun's launcher for N
    processes on this machine with the same command line."""

    def run(args: argparse.Namespace) -> int:
        if args.nproc is not None and args.nproc < 1:
            raise ValueError(f"Argument `--nproc` must be a positive integer, got {args.nproc}")
        if args.nproc and args.nproc > 1 and not distributed.launched():
            return _launch(args)
        distributed.setup(getattr(args, "device", None) or "auto")
        try:
            if distributed.is_main():
                return command(args)
            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
                return command(args)
        finally:
            distributed.teardown()

    return run


def _launch(args: argparse.Namespace) -> int:
    """Run this command line again as ``torchrun --standalone --nproc-per-node N -m rnnkit
    ...`` (gloo on CPUs, nccl on GPUs) and return its exit status."""
    argv, skip = [], False
    for a in args.argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            argv.append(a)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd = [*launcher, f"--nproc-per-node={args.nproc}", "-m", "rnnkit", *argv]
    _stderr(f"rnnkit: {args.nproc} processes: {' '.join(cmd[1:])}")
    return subprocess.call(cmd)


def _device(name: str):
    from .trainer import resolve_device

    return resolve_device(name)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


# -- the commands ---------------------------------------------------------------------------


def _cmd_hello(args: argparse.Namespace) -> int:
    from .tasks.hello import HelloConfig, sample, train_hello

    cfg = config_from_args(HelloConfig, args)
    model, _ = train_hello(cfg)
    return 0 if sample(model, "h", len(cfg.word)) == cfg.word else 1


def _cmd_gradients(args: argparse.Namespace) -> int:
    from .diagnostics import GradientsConfig, gradient_experiment, plot_gradient_norms

    if args.run is not None:
        return _gradients_of_run(args)
    cfg = config_from_args(GradientsConfig, args)
    table, curves = gradient_experiment(cfg)
    print(table)
    print(f"\nwrote {plot_gradient_norms(curves, cfg.out)}")
    return 0


def _gradients_of_run(args: argparse.Namespace) -> int:
    """``rnnkit gradients RUN``: the trained model on its own data, and the trace its
    training recorded at each evaluation (``gradients.json``)."""
    import torch

    from .diagnostics import (
        GradientsConfig,
        gradients_table,
        gradients_through_time,
        plot_gradient_norms,
        plot_trace,
        read_trace,
    )

    fresh_only = [
        f.name
        for f in dataclasses.fields(GradientsConfig)
        if f.name not in ("batch", "out") and getattr(args, f.name) is not None
    ]
    if fresh_only:
        names = ", ".join("--" + n.replace("_", "-") for n in fresh_only)
        raise ValueError(f"{names} set up the fresh-network experiment, not a trained RUN")
    if args.batch is not None and args.batch < 1:
        raise ValueError(f"--batch must be at least 1, got {args.batch}")
    model = tasks.load(args.run)
    probe = tasks.gradient_probe(model, batch_size=args.batch or 16, log=_stderr)
    layers = gradients_through_time(model, probe)
    step = model.meta.get("step")
    print(f"{args.run}: {model.meta['kind']} model{f' at step {step:,}' if step else ''}, "
          f"its loss on {args.batch or 16} validation examples")  # fmt: skip
    print(gradients_table(layers))
    run = _run_dir(args.run)
    out = Path(args.out) if args.out else run / "gradients.png"
    curves = {g.name: torch.tensor(g.norms, dtype=torch.float64) for g in layers}
    title = f"{run.name}: gradient norm at each step, the trained model on its own data"
    written = [plot_gradient_norms(curves, out, title=title, xlabel="time step t "
                                   "(in the order each layer runs)")]  # fmt: skip
    trace = run / "gradients.json"
    if trace.is_file():
        points = read_trace(trace)
        title = f"{run.name}: gradient norms at each evaluation"
        written.append(plot_trace(points, out.with_name(out.stem + "-training.png"), title=title))
        steps = ", ".join(f"{p['step']:,}" for p in points[:3])
        more = ", ..." if len(points) > 3 else ""
        print(f"\ntraced at {len(points)} evaluations (steps {steps}{more})")
    print("\nwrote " + " and ".join(str(p) for p in written))
    return 0


def _cmd_lab(args: argparse.Namespace) -> int:
    from .tasks import lab

    comparison = config_from_args(lab.Comparison, args)
    model = _set_fields(lab.LabConfig, args, skip=("problem", "T", "cell", "init"))
    train = _set_fields(lab.TrainConfig, args,
                        skip=("clip_norm", "truncation", "synthetic_gradients"))  # fmt: skip
    out = Path(args.out or f"runs/lab-{comparison.problem}-T{comparison.T}")
    lab.compare(out, comparison, model, train, resume=args.resume)
    print((out / "table.md").read_text(encoding="utf-8"), end="")
    print(f"wrote {out / 'curves.png'} and the runs in {out}/")
    return 0


def _set_fields(cls: type, args: argparse.Namespace, skip: Sequence[str] = ()) -> dict:
    """The fields of `cls` that the command line set."""
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)
        if f.name not in skip and getattr(args, f.name, None) is not None
    }


def _cmd_data_list(args: argparse.Namespace) -> int:
    print(datasets.table())
    return 0


def _cmd_data_get(args: argparse.Namespace) -> int:
    try:
        path = datasets.get(args.name).fetch(log=_stderr)
    except FetchError as err:
        print(f"rnnkit data get: error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


@_data_parallel
def _cmd_train_charlm(args: argparse.Namespace) -> int:
    from .tasks import charlm

    corpus = args.corpus if args.text is None else None
    if args.text is None and corpus is None:
        corpus = "shakespeare"
    out = args.out or f"runs/charlm-{corpus or Path(args.text).stem}"
    if args.resume:  # the run's own settings; --steps may extend it
        _refuse_on_resume(args, [charlm.CharLMConfig, charlm.TrainConfig], ["text", "corpus"])
        model, _ = charlm.train(out, resume=True, steps=args.steps, progress=args.progress)
    else:
        config = config_from_args(charlm.CharLMConfig, args)
        train_config = config_from_args(charlm.TrainConfig, args)
        model, _ = charlm.train(out, config, train_config, text=args.text, corpus=corpus)
    print(f"run directory: {out} (best/, latest/, metrics.csv, loss.png)")
    if args.sample and distributed.is_main():
        seed = args.seed if args.seed is not None else charlm.TrainConfig.seed
        text = model.sample(length=args.sample, temperature=0.8, seed=seed)
        print(f"\n--- a sample at temperature 0.8 ---\n{text}")
    return 0


@_data_parallel
def _cmd_train_wordlm(args: argparse.Namespace) -> int:
    from .tasks import wordlm

    if args.resume:
        if args.out is None:
            raise ValueError("--resume needs the run directory in --out")
        _refuse_on_resume(args, [wordlm.WordLMConfig, wordlm.TrainConfig], ["data", "text"])
        wordlm.train(args.out, resume=True, progress=args.progress)
        print(f"run directory: {args.out}")
        return 0
    data = args.data if args.text is None else None
    if args.text is None and data is None:
        data = "ptb"
    out = args.out or f"runs/wordlm-{data or Path(args.text).stem}"
    config = config_from_args(wordlm.WordLMConfig, args)
    train_config = config_from_args(wordlm.TrainConfig, args)
    wordlm.train(out, config, train_config, data=data, text=args.text)
    print(f"run directory: {out} (best/, latest/, metrics.csv, results.json)")
    return 0


@_data_parallel
def _cmd_train_seq(args: argparse.Namespace) -> int:
    from .tasks.sequences import RunConfig

    module = tasks.module(args.task)
    if args.resume:
        if args.out is None:
            raise ValueError("--resume needs the run directory in --out")
        _refuse_on_resume(args, [module.CONFIG, RunConfig], ["data", "train", "val", "test"])
        module.train(args.out, resume=True, progress=args.progress)
        print(f"run directory: {args.out}")
        return 0
    if (args.data is None) == (args.train is None):
        raise ValueError("give a built-in data set (--data NAME) or a training file (--train)")
    model_preset, run_preset = module.PRESETS.get(args.data, ({}, {}))
    config = config_from_args(module.CONFIG, args, model_preset)
    run = config_from_args(RunConfig, args, run_preset)
    out = args.out or f"runs/{args.task}-{args.data or Path(args.train).stem}"
    module.train(out, config, run, data=args.data, train=args.train, val=args.val, test=args.test)
    print(f"run directory: {out} (best/, latest/, metrics.csv, results.json, confusion.png)")
    return 0


@_data_parallel
def _cmd_train_seq2seq(args: argparse.Namespace) -> int:
    from .tasks import seq2seq

    if args.resume:
        if args.out is None:
            raise ValueError("--resume needs the run directory in --out")
        _refuse_on_resume(
            args, [seq2seq.Seq2SeqConfig, seq2seq.TrainConfig], ["data", "train", "val", "test"]
        )
        seq2seq.train(args.out, resume=True, progress=args.progress)
        print(f"run directory: {args.out}")
        return 0
    if args.data is not None and (args.val or args.test):
        raise ValueError("--val and --test go with --train; a built-in set has its own splits")
    if args.data is None and args.train is None:
        args.data = "numbers"
    files = {"train": args.train, "val": args.val, "test": args.test}
    out = args.out or f"runs/seq2seq-{args.data or Path(args.train).stem}"
    config = config_from_args(seq2seq.Seq2SeqConfig, args)
    train_config = config_from_args(seq2seq.TrainConfig, args)
    seq2seq.train(out, config, train_config, data=args.data, files=files)
    print(f"run directory: {out} (best/, latest/, metrics.csv, results.json)")
    return 0


@_data_parallel
def _cmd_train_caption(args: argparse.Namespace) -> int:
    from .tasks import caption

    if args.resume:
        if args.out is None:
            raise ValueError("--resume needs the run directory in --out")
        _refuse_on_resume(
            args, [caption.CaptionConfig, caption.TrainConfig], ["data", "images", "captions"]
        )
        caption.train(args.out, resume=True, progress=args.progress)
        print(f"run directory: {args.out}")
        return 0
    if args.data is not None and args.images is not None:
        raise ValueError("--images goes with --captions; a built-in set has its own images")
    if args.data is None and args.captions is None:
        args.data = "digit-scenes"
    name = args.data or Path(args.captions).stem
    out = args.out or f"runs/caption-{name}"
    config = config_from_args(caption.CaptionConfig, args)
    train_config = config_from_args(caption.TrainConfig, args)
    caption.train(
        out, config, train_config, data=args.data, images=args.images, captions=args.captions
    )
    print(f"run directory: {out} (best/, latest/, metrics.csv, results.json, captions.html)")
    return 0


@_data_parallel
def _cmd_train_pixels(args: argparse.Namespace) -> int:
    from .tasks import pixels

    if args.resume:
        if args.out is None:
            raise ValueError("--resume needs the run directory in --out")
        _refuse_on_resume(args, [pixels.PixelConfig, pixels.TrainConfig], ["data", "images"])
        pixels.train(args.out, resume=True, progress=args.progress)
        print(f"run directory: {args.out}")
        return 0
    data = args.data or (None if args.images else "mnist-binary")
    out = args.out or f"runs/pixels-{data or Path(args.images).stem}"
    pixels.train(
        out,
        config_from_args(pixels.PixelConfig, args),
        config_from_args(pixels.TrainConfig, args),
        data=data,
        images=args.images,
    )
    print(f"run directory: {out} (best/, latest/, metrics.csv, results.json, completions.png)")
    return 0


def _cmd_complete_image(args: argparse.Namespace) -> int:
    import torch

    from .tasks import pixels

    model = tasks.load(args.checkpoint, device=_device(args.device))
    if getattr(model, "meta", {}).get("kind") != "pixels":
        raise ValueError(
            f"{args.checkpoint} is a {model.meta.get('kind')!r} model; `complete-image` takes "
            "a pixel-by-pixel model (rnnkit train pixels)"
        )
    decoding.check_count("samples", args.samples, 1)
    if args.image:
        originals = torch.cat([pixels.read_image(model, p) for p in args.image])
    else:
        decoding.check_count("test", args.test, 1)
        source = model.meta["data"]
        sets, _ = pixels.load_images(source.get("data"), 0.1, _stderr, source.get("images"))
        originals = sets["test"][pixels.spread(len(sets["test"]), args.test)].long()
    keep = model.shape[0] // 2 if args.keep_rows is None else args.keep_rows
    many = originals.repeat_interleave(args.samples, dim=0)  # every sample in one batch
    done = model.complete(many, keep, temperature=args.temperature, seed=args.seed)
    done = done.view(len(originals), args.samples, *model.shape).cpu()
    out = args.out or _run_dir(args.checkpoint) / "completions.png"
    path = pixels.grid_png(out, originals, originals, done, model.levels, keep)
    print(f"{len(originals)} images x {args.samples} completions below row {keep}: {path}")
    return 0


@_data_parallel
def _cmd_train_video(args: argparse.Namespace) -> int:
    from .tasks import video

    if args.resume:
        if args.out is None:
            raise ValueError("--resume needs the run directory in --out")
        _refuse_on_resume(
            args, [video.VideoConfig, video.TrainConfig], ["data", "videos", "labels_file"]
        )
        video.train(args.out, resume=True, progress=args.progress)
        print(f"run directory: {args.out}")
        return 0
    if args.data is not None and args.videos is not None:
        raise ValueError("--videos goes with --labels-file; a built-in set has its own clips")
    if args.data is None and args.labels_file is None:
        args.data = "moving-digits"
    name = args.data or Path(args.labels_file).stem
    out = args.out or f"runs/video-{name}"
    video.train(
        out, config_from_args(video.VideoConfig, args), config_from_args(video.TrainConfig, args),
        data=args.data, videos=args.videos, labels=args.labels_file,
    )  # fmt: skip
    print(f"run directory: {out} (best/, latest/, metrics.csv, results.json)")
    return 0


def _run_dir(path: str) -> Path:
    """The run directory of `path`: itself, or the run a checkpoint folder lies in."""
    p = Path(path)
    return p.parent if (p / "meta.json").is_file() else p


def _cmd_caption(args: argparse.Namespace) -> int:
    import numpy as np

    from .tasks import caption

    model = tasks.load(args.checkpoint, device=_device(args.device))
    if getattr(model, "meta", {}).get("kind") != "caption":
        raise ValueError(
            f"{args.checkpoint} is a {model.meta.get('kind')!r} model; `caption` takes an "
            "image captioner (rnnkit train caption)"
        )
    decoding.check_count("num", args.num, 1)
    model = _with_ensemble(model, args)
    images = caption.read_images(model, args.images)
    for path, image in zip(args.images, images):
        if args.num == 1 and args.temperature == 0:
            said = model.caption(image[None], beam=args.beam, length_penalty=args.length_penalty,
                                 mbr=args.mbr)  # fmt: skip
        else:
            if args.beam != 1 or args.mbr != 1:
                raise ValueError("--num samples captions: give --temperature, not --beam or --mbr")
            said = model.caption(
                np.repeat(image[None], args.num, axis=0),
                temperature=args.temperature or 1.0,
                top_k=args.top_k,
                top_p=args.top_p,
                seed=args.seed,
            )
        for text in said:
            print(f"{path}\t{text}")
    return 0


def _cmd_translate(args: argparse.Namespace) -> int:
    from .tasks import seq2seq

    model = seq2seq.load(args.checkpoint, device=_device(args.device))
    if args.text:
        sources, names = list(args.text), None
    else:
        sources, names = seq2seq.read_sources(args.file)
    outputs = model.translate(
        sources, beam=args.beam, length_penalty=args.length_penalty,
        max_length=args.max_length, temperature=args.temperature, seed=args.seed,
        names=names, log=_stderr,
    )  # fmt: skip
    print("\n".join(outputs))
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


def _load_sequence_model(args: argparse.Namespace, command: str):
    """The classifier or tagger at args.checkpoint; a clear error for anything else."""
    from .tasks import load

    model = load(args.checkpoint, device=_device(args.device))
    kind = getattr(model, "meta", {}).get("kind")
    if kind not in ("classify", "tag"):
        raise ValueError(
            f"{args.checkpoint} is a {kind!r} model; `{command}` takes a classifier or a "
            "tagger (use `rnnkit sample` for a character model)"
        )
    return model, kind


def _cmd_predict(args: argparse.Namespace) -> int:
    from .checkpoint import checkpoint_kind, resolve_checkpoint

    if checkpoint_kind(resolve_checkpoint(args.checkpoint)) == "video":
        from .tasks import video

        model = video.load(args.checkpoint, device=_device(args.device))
        clips = list(args.text) or ([args.file] if args.file else [])
        if not clips:
            raise ValueError("give the clips to label: video files or frame folders")
        for clip in clips:
            print(f"{clip}\t{' '.join(video.predict_clip(model, clip))}")
        return 0
    model, kind = _load_sequence_model(args, "predict")
    if model.spec.kind == "numeric":
        from .data.readers import read_arrays

        if args.file is None or not str(args.file).endswith(".npz"):
            raise ValueError("this model reads numeric sequences: give them as --file X.npz")
        x, lengths = read_arrays(args.file)
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


def _with_ensemble(model: Any, args: argparse.Namespace) -> Any:
    """The captioner `model`, or with --ensemble RUN ... an ensemble of it and those."""
    if not args.ensemble:
        return model
    from .tasks import caption

    others = [caption.load(run, device=_device(args.device)) for run in args.ensemble]
    names = [str(args.checkpoint), *map(str, args.ensemble)]
    return caption.Ensemble([model, *others], names=names)


def _cmd_eval(args: argparse.Namespace) -> int:
    model = tasks.load(args.checkpoint, device=_device(args.device))
    kind = getattr(model, "meta", {}).get("kind")
    if kind == "seq2seq":
        if args.text is not None or args.corpus is not None:
            raise ValueError("--text and --corpus are for character models; use --test or --data")
        print(
            tasks.module(kind).eval_report(
                model,
                test=args.test,
                data=args.data,
                beam=args.beam,
                length_penalty=args.length_penalty if args.length_penalty is not None else 0.6,
                attention=args.attention or 1,
                plot=args.plot,
                log=_stderr,
            )  # fmt: skip
        )
        return 0
    if kind == "caption":
        if args.text is not None or args.corpus is not None or args.test is not None:
            raise ValueError(
                "a captioner is evaluated on --data NAME or --captions FILE --images DIR"
            )
        print(
            tasks.module(kind).eval_report(
                _with_ensemble(model, args),
                data=args.data,
                images=args.images,
                captions=args.captions,
                beam=args.beam,
                length_penalty=args.length_penalty if args.length_penalty is not None else 0.0,
                mbr=args.mbr,
                page_path=args.page or _run_dir(args.checkpoint) / "captions.html",
                log=_stderr,
            )
        )
        return 0
    if args.images is not None or args.captions is not None or args.page is not None:
        raise ValueError("--images, --captions and --page are for image captioners")
    if args.mbr != 1:
        raise ValueError(f"--mbr is for image captioners; {args.checkpoint} is a {kind}")
    if args.ensemble:
        raise ValueError(f"--ensemble is for image captioners; {args.checkpoint} is a {kind}")
    if kind == "pixels":
        if args.text is not None or args.corpus is not None or args.test is not None:
            raise ValueError("a pixel model is evaluated on its own test images or --data NAME")
        print(tasks.module(kind).eval_report(model, data=args.data, log=_stderr))
        return 0
    if args.beam != 1 or args.attention is not None:
        raise ValueError("--beam and --attention are for encoder-decoder (seq2seq) runs")
    if kind in ("classify", "tag"):
        if args.text is not None or args.corpus is not None:
            raise ValueError("--text and --corpus are for character models; use --test or --data")
        report = tasks.module(kind).eval_report(
            model, test=args.test, data=args.data, plot=args.plot or "confusion.png", log=_stderr
        )
    else:
        if args.test is not None or args.data is not None:
            raise ValueError("a character model is evaluated on --text FILE or --corpus NAME")
        report = tasks.module(kind).eval_report(model, text=args.text, corpus=args.corpus)
    print(report)
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


def _cmd_generate(args: argparse.Namespace) -> int:
    from .tasks.wordlm import load

    model = load(args.checkpoint, device=_device(args.device))
    sentences = model.generate(
        args.prime, args.num, max_words=args.max_words, label=args.label,
        temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, seed=args.seed, guidance=args.guidance,
    )  # fmt: skip
    print("\n".join(sentences))
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


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .data.corpora import load_text
    from .inspect_cells import inspect as inspect_cells
    from .tasks.charlm import load, validation_text

    try:
        model = load(args.checkpoint)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"Argument `checkpoint`: {err}") from None
    except ValueError as err:
        raise ValueError(f"Argument `checkpoint`: {err}") from None
    if args.text is not None:
        if not Path(args.text).is_file():
            raise FileNotFoundError(f"Argument `text`: no such file: {args.text}")
        try:
            text, source = load_text(args.text)[: args.max_chars], args.text
        except ValueError as err:
            raise ValueError(f"Argument `text`: {err}") from None
    else:
        text, source = validation_text(model, args.max_chars)
    cfg = model.config
    try:
        path = inspect_cells(
            model,
            text,
            args.out,
            source=source,
            title=f"Inside a {cfg.num_layers}x{cfg.hidden_size} {cfg.cell.upper()}: "
            f"{args.checkpoint}",
            kind=args.kind,
            max_chars=args.max_chars,
            page_chars=args.page_chars,
            find=args.find,
            top=args.top,
            only_found=args.only_found,
            layer=args.layer,
            cell=args.cell,
        )
    except ValueError as err:
        if str(err).startswith("Argument `text`"):
            what = "--text" if args.text is not None else f"the default text ({source})"
            raise ValueError(f"{err} (in {what})") from None
        raise
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); open it in a browser")
    return 0


# -- the parser -----------------------------------------------------------------------------


def _add_nproc(q: argparse.ArgumentParser) -> None:
    q.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train data-parallel in N processes on this machine (torchrun; --batch-size "
        "is the global batch); for several machines run `torchrun --nnodes M "
        "--nproc-per-node N --rdzv-endpoint HOST:PORT -m rnnkit train ...` on each",
    )


def _add_train_charlm(train_sub) -> None:
    from .tasks.charlm import CharLMConfig, TrainConfig

    q = train_sub.add_parser(
        "charlm",
        help="a character-level language model on any UTF-8 text",
        description="Train a character-level language model: embedding -> stacked "
        "LSTM/GRU/RNN -> linear, on B parallel streams with truncated BPTT. "
        "--resume continues the run in --out with its own settings (--steps may extend it).",
    )
    src = q.add_mutually_exclusive_group()
    src.add_argument("--text", help="a UTF-8 text file to train on")
    src.add_argument(
        "--corpus",
        help=f"a built-in corpus: {', '.join(datasets.names('charlm'))} "
        "(default: the bundled shakespeare)",
    )
    q.add_argument("--out", help="run directory (default runs/charlm-NAME)")
    q.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    _add_nproc(q)
    q.add_argument(
        "--sample", type=int, default=300, help="characters to sample at the end (default: 300)"
    )
    add_config_flags(
        q.add_argument_group("model (rnnkit.charlm.CharLMConfig)"),
        CharLMConfig,
        aliases={"num_layers": ["--layers"]},
    )
    add_config_flags(
        q.add_argument_group("training (rnnkit.charlm.TrainConfig)"),
        TrainConfig,
        aliases={"warmup_steps": ["--warmup"], "clip_norm": ["--clip"]},
    )
    q.set_defaults(func=_cmd_train_charlm)


def _add_train_wordlm(train_sub) -> None:
    from .tasks.wordlm import BUILTIN, TrainConfig, WordLMConfig

    q = train_sub.add_parser(
        "wordlm",
        help="a word-level language model (perplexity; the Penn Treebank built in)",
        description="Train a word-level language model: embedding -> stacked LSTM/GRU/RNN "
        "-> linear over the words, sentences ended by <eos>, truncated BPTT over B streams. "
        "Data: --data ptb, or --text FILE (one sentence a line). Validation perplexity "
        "during training, test perplexity with the best weights at the end. --resume "
        "continues the run in --out with its own settings.",
    )
    src = q.add_mutually_exclusive_group()
    src.add_argument("--data", choices=BUILTIN, help="a built-in data set")
    src.add_argument(
        "--text",
        help="a UTF-8 text file, one sentence a line; or FILE.tsv of label<TAB>text lines "
        "(the model then writes sentences of a label: rnnkit generate RUN --label L)",
    )
    q.add_argument("--out", help="run directory (default runs/wordlm-NAME)")
    q.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    _add_nproc(q)
    add_config_flags(q.add_argument_group("model (rnnkit.wordlm.WordLMConfig)"), WordLMConfig)
    add_config_flags(
        q.add_argument_group("training (rnnkit.wordlm.TrainConfig)"),
        TrainConfig,
        aliases={"warmup_steps": ["--warmup"], "clip_norm": ["--clip"]},
    )
    q.set_defaults(func=_cmd_train_wordlm)


def _add_train_seq2seq(train_sub) -> None:
    from .tasks.seq2seq import Seq2SeqConfig, TrainConfig

    q = train_sub.add_parser(
        "seq2seq",
        help="an encoder-decoder: translation, spelling to pronunciation",
        description="Train an encoder-decoder: an encoder stack reads the source, a decoder "
        "stack writes the target token by token (teacher forcing), with Bahdanau or Luong "
        "attention or none, and the lecture's four tips as switches. Data: --data NAME or "
        "--train FILE of source<TAB>target lines (--val, --test: held-out files). At the "
        "end the best weights are scored (BLEU, chrF, exact matches, token error). "
        "--resume continues the run in --out with its own settings.",
    )
    src = q.add_mutually_exclusive_group()
    src.add_argument(
        "--data",
        choices=datasets.names("seq2seq"),
        help="a built-in set of pairs (default: numbers)",
    )
    src.add_argument("--train", help="training file: source<TAB>target lines")
    q.add_argument("--val", help="validation file (default: --val-fraction of --train)")
    q.add_argument("--test", help="test file, scored with the best weights at the end")
    q.add_argument("--out", help="run directory (default runs/seq2seq-NAME)")
    q.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    _add_nproc(q)
    add_config_flags(q.add_argument_group("model (rnnkit.seq2seq.Seq2SeqConfig)"), Seq2SeqConfig)
    add_config_flags(
        q.add_argument_group("training (rnnkit.seq2seq.TrainConfig)"),
        TrainConfig,
        aliases={"warmup_steps": ["--warmup"], "clip_norm": ["--clip"]},
    )
    q.set_defaults(func=_cmd_train_seq2seq)


def _add_train_caption(train_sub) -> None:
    from .tasks.caption import CaptionConfig, TrainConfig

    q = train_sub.add_parser(
        "caption",
        help="image captioning: a CNN reads the picture, an RNN writes the sentence",
        description="Train an image captioner: a CNN (a small one from scratch, or the "
        "ImageNet-pretrained EfficientNet-lite0, frozen with its features cached) turns the "
        "image into a vector v that enters a recurrent decoder (every step, first step or "
        "initial state), optionally with soft attention over the feature map; the decoder "
        "writes the caption word by word (teacher forcing). Data: --data NAME or --images "
        "DIR --captions FILE.json (COCO captions schema). At the end the best weights are "
        "scored (BLEU-1..4, CIDEr, ROUGE-L) beside the nearest-neighbour baseline and "
        "captions.html shows the test images. --resume continues the run in --out.",
    )
    src = q.add_mutually_exclusive_group()
    src.add_argument(
        "--data",
        choices=datasets.names("caption"),
        help="a built-in set of captioned images (default: digit-scenes)",
    )
    src.add_argument("--captions", help="a COCO captions JSON file (with --images DIR)")
    q.add_argument("--images", help="the folder of the images that --captions names")
    q.add_argument("--out", help="run directory (default runs/caption-NAME)")
    q.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    _add_nproc(q)
    add_config_flags(q.add_argument_group("model (rnnkit.caption.CaptionConfig)"), CaptionConfig)
    add_config_flags(
        q.add_argument_group("training (rnnkit.caption.TrainConfig)"),
        TrainConfig,
        aliases={"warmup_steps": ["--warmup"], "clip_norm": ["--clip"]},
    )
    q.set_defaults(func=_cmd_train_caption)


def _add_train_pixels(train_sub) -> None:
    from .tasks.pixels import PixelConfig, TrainConfig

    q = train_sub.add_parser(
        "pixels",
        help="pixel by pixel: a recurrent generative model of images (completion)",
        description="Train a generative model of images read pixel by pixel in raster "
        "order: a row RNN summarises the rows above, a pixel RNN runs along each row "
        "from the left; Bernoulli outputs for binarised images, a softmax over grey "
        "levels otherwise. Reports the test negative log-likelihood (nats per image, bits "
        "per dimension) and draws completions of test images. --resume continues the "
        "run in --out.",
    )
    src = q.add_mutually_exclusive_group()
    src.add_argument(
        "--data",
        choices=datasets.names("pixels"),
        help="a built-in set of images (default: mnist-binary)",
    )
    src.add_argument(
        "--images",
        help="your own images: an .npz with integer arrays train and test (N, H, W) and "
        "optionally levels (default 2 for 0/1 values, else 256)",
    )
    q.add_argument("--out", help="run directory (default runs/pixels-NAME)")
    q.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    _add_nproc(q)
    add_config_flags(q.add_argument_group("model (rnnkit.pixels.PixelConfig)"), PixelConfig)
    add_config_flags(
        q.add_argument_group("training (rnnkit.pixels.TrainConfig)"),
        TrainConfig,
        aliases={"warmup_steps": ["--warmup"], "clip_norm": ["--clip"]},
    )
    q.set_defaults(func=_cmd_train_pixels)


def _add_train_video(train_sub) -> None:
    from .tasks.video import TrainConfig, VideoConfig

    q = train_sub.add_parser(
        "video",
        help="video classification: a CNN per frame, an RNN over the frames",
        description="Train a video classifier: a small CNN reads each frame, an rnnkit "
        "stack (or a ConvLSTM/ConvGRU over the feature maps, or no recurrence: the "
        "averaging baseline, --temporal mean) reads the frames in order; a label per clip "
        "(--labels clip) or per frame (--labels frames). Data: --data NAME or --videos DIR "
        "--labels-file FILE.csv (clip,label or clip,frame,label lines). --resume continues "
        "the run in --out.",
    )
    src = q.add_mutually_exclusive_group()
    src.add_argument("--data", choices=datasets.names("video"),
                     help="a built-in set of clips (default: moving-digits)")  # fmt: skip
    src.add_argument("--labels-file", help="a CSV of clip,label (or clip,frame,label) lines")
    q.add_argument("--videos", help="the folder of the clips (video files or frame folders)")
    q.add_argument("--out", help="run directory (default runs/video-NAME)")
    q.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    _add_nproc(q)
    add_config_flags(q.add_argument_group("model (rnnkit.video.VideoConfig)"), VideoConfig)
    add_config_flags(
        q.add_argument_group("training (rnnkit.video.TrainConfig)"),
        TrainConfig,
        aliases={"warmup_steps": ["--warmup"], "clip_norm": ["--clip"]},
    )
    q.set_defaults(func=_cmd_train_video)


def _add_train_seq(train_sub, task: str, what: str) -> None:
    from .tasks.sequences import RunConfig

    module = tasks.module(task)
    fmt = "label<TAB>text lines" if task == "classify" else "token<TAB>tag lines"
    q = train_sub.add_parser(
        task,
        help=what,
        description=f"Train a sequence {'classifier' if task == 'classify' else 'tagger'}: "
        f"{what}. Data: --data NAME (a built-in set, with its tuned settings as the "
        f"preset) or --train FILE ({fmt}, or an .npz with x and y). Unset options take the "
        "built-in set's preset, else the defaults shown. --resume continues the run in "
        "--out with its own settings.",
    )
    src = q.add_mutually_exclusive_group()
    src.add_argument("--data", choices=module.BUILTIN, help="a built-in data set")
    src.add_argument("--train", help=f"training file: {fmt}, or .npz")
    q.add_argument("--val", help="validation file (default: --val-fraction of --train)")
    q.add_argument("--test", help="test file, scored with the best weights at the end")
    q.add_argument("--out", help=f"run directory (default runs/{task}-NAME)")
    q.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    _add_nproc(q)
    g = q.add_argument_group(f"model (rnnkit.{task}.{module.CONFIG.__name__})")
    add_config_flags(g, module.CONFIG)
    g.add_argument(  # the spelling of older versions
        "--unidirectional", dest="bidirectional", action="store_const", const=False,
        help="the same as --no-bidirectional",
    )  # fmt: skip
    add_config_flags(q.add_argument_group("training (rnnkit.RunConfig)"), RunConfig)
    q.set_defaults(func=_cmd_train_seq, task=task)


def build_parser() -> argparse.ArgumentParser:
    from .diagnostics import GradientsConfig
    from .inspect_cells import DEFAULT_PAGE_CHARS, KINDS
    from .tasks.hello import HelloConfig

    parser = argparse.ArgumentParser(
        prog="rnnkit", description="Recurrent neural networks, from the lectures to real use."
    )
    parser.add_argument("--version", action="version", version=f"rnnkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("hello", help='the lecture\'s toy RNN learns "hello"')
    add_config_flags(p, HelloConfig)
    p.set_defaults(func=_cmd_hello)

    p = sub.add_parser(
        "gradients", help="measure and plot vanishing/exploding gradients through time"
    )
    p.add_argument(
        "run", nargs="?", default=None,
        help="a trained run directory (or checkpoint) of any task: its loss on --batch "
        "validation examples, the norm at every step of every recurrent layer, sigma_max "
        "of W_hh, and the norms its training traced at each evaluation; without RUN, the "
        "lecture's experiment on fresh cells",
    )  # fmt: skip
    add_config_flags(p, GradientsConfig)
    p.set_defaults(func=_cmd_gradients)

    _add_lab(sub)

    p = sub.add_parser("data", help="list the built-in corpora and data sets, fetch one")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    q = data_sub.add_parser("list", help="name, task, size, source, licence; which are cached")
    q.set_defaults(func=_cmd_data_list)
    q = data_sub.add_parser(
        "get",
        help="fetch a corpus or data set (sha256-checked) into $RNNKIT_DATA, print its path",
    )
    q.add_argument("name", help="a corpus or data set name, see `rnnkit data list`")
    q.set_defaults(func=_cmd_data_get)

    p = sub.add_parser(
        "train",
        help="train a model: `rnnkit train charlm|wordlm|seq2seq|caption|pixels|video|classify|"
        "tag --help`",
    )
    train_sub = p.add_subparsers(dest="task", metavar="TASK", required=True)
    _add_train_charlm(train_sub)
    _add_train_wordlm(train_sub)
    _add_train_seq2seq(train_sub)
    _add_train_caption(train_sub)
    _add_train_pixels(train_sub)
    _add_train_video(train_sub)
    for task, what in (
        ("classify", "one label per sequence (many to one): sentiment, digits, signals"),
        ("tag", "one tag per step (many to many): parts of speech, named entities"),
    ):
        _add_train_seq(train_sub, task, what)

    p = sub.add_parser("sample", help="sample text from a character model")
    p.add_argument("checkpoint", help="a run directory (its best checkpoint) or a checkpoint")
    p.add_argument("--prime", default="", help="text to start from")
    p.add_argument("--length", type=int, default=1000, help="characters to sample")
    p.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--num", type=int, default=1, help="streams, sampled as one batch")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=DEVICES, default="cpu")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser(
        "generate",
        help="sentences from a word model, word by word until <eos>",
        description="Sample NUM sentences from a word-level language model: each starts "
        "where a sentence begins (after <eos>, then --prime) and the model, fed its own "
        "samples, writes words until it writes <eos> (or --max-words; then it ends in ...).",
    )
    p.add_argument("checkpoint", help="a run directory (its best checkpoint) or a checkpoint")
    p.add_argument("--prime", default="", help="the first words of every sentence")
    p.add_argument("--num", type=int, default=5, help="sentences, sampled as one batch")
    p.add_argument("--max-words", type=int, default=60, help="a sentence's words at most")
    p.add_argument("--label", help="the label of the sentences (a model trained on labels)")
    p.add_argument(
        "--guidance", type=float, default=0.0,
        help="with --label: push words toward the label and away from the others (e.g. 2)",
    )  # fmt: skip
    p.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=DEVICES, default="cpu")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser(
        "translate",
        help="an encoder-decoder's outputs: translations, pronunciations (seq2seq)",
        description="Translate each source with a trained encoder-decoder: the TEXT "
        "arguments, else the lines of --file, else standard input (one source a line). "
        "Greedy by default; --beam K searches K prefixes (ranked with the length penalty); "
        "--temperature samples. Tokens never seen in training read as <unk> (one note on "
        "stderr).",
    )
    p.add_argument("checkpoint", help="a run directory (its best checkpoint) or a checkpoint")
    p.add_argument("text", nargs="*", help="sources to translate")
    p.add_argument("--file", help="a UTF-8 file of sources, one a line")
    p.add_argument("--beam", type=int, default=1, help="beam width (default 1: greedy)")
    p.add_argument(
        "--length-penalty", type=float, default=0.6, help="beam search's alpha (default 0.6)"
    )
    p.add_argument("--max-length", type=int, help="tokens at most (default: the model's)")
    p.add_argument("--temperature", type=float, default=0.0, help="> 0: sample (default 0)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=DEVICES, default="cpu")
    p.set_defaults(func=_cmd_translate)

    p = sub.add_parser(
        "caption",
        help="captions of images by a trained captioner",
        description="Caption each IMAGE (PNG, JPEG, SVG, ...; resized like the training "
        "images): greedy by default, --beam K for beam search, --num N samples at "
        "--temperature (default 1). Prints IMAGE<TAB>caption per line.",
    )
    p.add_argument("checkpoint", help="a run directory (its best checkpoint) or a checkpoint")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--beam", type=int, default=1, help="beam width (default 1: greedy)")
    p.add_argument("--length-penalty", type=float, default=0.0, help="beam search's alpha")
    p.add_argument(
        "--mbr", type=int, default=1, metavar="N",
        help="minimum Bayes risk decoding: of the N likeliest captions (beam search), the one "
        "with the highest CIDEr-D against the others, weighted by their probabilities "
        "(default 1: off)",
    )  # fmt: skip
    p.add_argument(
        "--ensemble", nargs="+", metavar="RUN",
        help="more runs on the same data writing with this one as one, the mean of their "
        "next-word probabilities (after the images)",
    )  # fmt: skip
    p.add_argument("--num", type=int, default=1, help="sampled captions per image")
    p.add_argument("--temperature", type=float, default=0.0, help="> 0: sample (default 0)")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=DEVICES, default="cpu")
    p.set_defaults(func=_cmd_caption)

    p = sub.add_parser(
        "complete-image",
        help="keep the top rows of images and let a pixel model draw the rest",
        description="Image completion by a pixel-by-pixel model (rnnkit train pixels): "
        "keeps the top --keep-rows rows of each image (--image FILE of the model's size, "
        "or --test N test images of its data set, spread over it) and samples the rest pixel "
        "by pixel, --samples times each, all in one batch; writes a PNG grid of the "
        "originals, the kept parts and the completions.",
    )
    p.add_argument("checkpoint", help="a run directory (its best checkpoint) or a checkpoint")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--image", nargs="+", help="image files of the model's size")
    src.add_argument(
        "--test", type=int, default=8, help="N test images, spread over the set (default 8)"
    )
    p.add_argument("--keep-rows", type=int, help="rows kept from the top (default: half)")
    p.add_argument("--samples", type=int, default=4, help="completions per image (default 4)")
    p.add_argument("--temperature", type=float, default=1.0, help="0: the likeliest values")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="the PNG to write (default RUN/completions.png)")
    p.add_argument("--device", choices=DEVICES, default="cpu")
    p.set_defaults(func=_cmd_complete_image)

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
    p.add_argument("--device", choices=DEVICES, default="cpu")
    p.set_defaults(func=_cmd_complete)

    p = sub.add_parser(
        "eval",
        help="score a model: bits per character (charlm), metrics and a confusion "
        "matrix (classify, tag), BLEU, chrF and error rates with an attention map (seq2seq), "
        "BLEU-4 and CIDEr (caption), nats per image and bits per dimension (pixels)",
    )
    p.add_argument("checkpoint", help="a run directory (its best checkpoint) or a checkpoint")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--text", help="charlm: a UTF-8 text file")
    src.add_argument("--corpus", help="charlm: a named corpus")
    src.add_argument(
        "--test",
        help="classify/tag: a labelled TSV, CoNLL or .npz file; seq2seq: source<TAB>target lines",
    )
    src.add_argument(
        "--data",
        help="classify/tag/seq2seq/caption/pixels: a built-in set's test split (default: the "
        "run's own)",
    )
    p.add_argument(
        "--plot",
        help="classify/tag: confusion-matrix PNG (default ./confusion.png); seq2seq: the "
        "attention heat map (default ./attention.png)",
    )
    p.add_argument("--beam", type=int, default=1, help="seq2seq, caption: beam width (1: greedy)")
    p.add_argument(
        "--length-penalty", type=float,
        help="seq2seq, caption: beam search's alpha (default 0.6 and 0)",
    )  # fmt: skip
    p.add_argument(
        "--mbr", type=int, default=1, metavar="N",
        help="caption: minimum Bayes risk decoding of the N likeliest captions (default 1: off)",
    )  # fmt: skip
    p.add_argument("--images", help="caption: the folder of the images of --captions")
    p.add_argument("--captions", help="caption: a COCO captions JSON file to score on")
    p.add_argument(
        "--page", help="caption: the HTML page of test images (default RUN/captions.html)"
    )
    p.add_argument(
        "--ensemble", nargs="+", metavar="RUN",
        help="caption: more runs on the same data, writing with this one as one (the mean of "
        "their next-word probabilities)",
    )  # fmt: skip
    p.add_argument(
        "--attention", type=int, metavar="N",
        help="seq2seq: draw the attention of the N-th scored source (default 1)",
    )  # fmt: skip
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "predict",
        help="label texts (classify), tag sentences (tag) or label clips (video)",
        description="Examples come from the arguments, else --file, else standard input, "
        "one per line. A classifier prints label<TAB>probability<TAB>text, a tagger "
        "token/TAG pairs; a video classifier takes clips (video files or frame folders) "
        "and prints CLIP<TAB>label, or the label of each frame.",
    )
    p.add_argument("checkpoint", help="a run directory (its best checkpoint) or a checkpoint")
    p.add_argument("text", nargs="*", help="examples (each argument one)")
    p.add_argument("--file", help="a UTF-8 file with one example per line, or an .npz")
    p.add_argument("--top", type=int, default=1, help="classify: the most likely labels to show")
    p.add_argument("--device", choices=DEVICES, default="cpu")
    p.set_defaults(func=_cmd_predict)

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


def _add_lab(sub) -> None:
    from .tasks.lab import PROBLEMS, Comparison, LabConfig, TrainConfig

    p = sub.add_parser(
        "lab",
        help="the long-range lab: compare cells, initialisations, clipping and truncation",
        description="Train every combination of --cell, --init, --clip, --truncation and "
        "--synthetic (synthetic gradients, with a truncation) on "
        "one problem for the same budget (--steps or --minutes); write the learning curves "
        "against the baseline (curves.png), a table (table.md) and each run's directory. "
        "Finished runs are kept; --resume continues unfinished ones exactly.",
    )
    p.add_argument("problem", choices=PROBLEMS, help="adding, copy, or MNIST by pixels, rows "
                   "or permuted pixels")  # fmt: skip
    add_config_flags(p.add_argument_group("configurations"), Comparison, skip=("problem",))
    add_config_flags(p.add_argument_group("model (rnnkit.lab.LabConfig)"), LabConfig,
                     skip=("problem", "T", "cell", "init"))  # fmt: skip
    add_config_flags(p.add_argument_group("training (rnnkit.lab.TrainConfig)"), TrainConfig,
                     skip=("clip_norm", "truncation", "synthetic_gradients"))  # fmt: skip
    p.add_argument("--out", help="the lab's directory (default runs/lab-PROBLEM-TT)")
    p.add_argument("--resume", action="store_true", help="continue unfinished runs in --out")
    p.set_defaults(func=_cmd_lab)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # what --nproc hands torchrun
    tune_glibc_malloc()  # keep freed buffers in the process: steadier, faster steps
    try:
        return args.func(args)
    except (ValueError, OSError, NonFiniteLossError, FetchError) as err:
        # bad input, a file that cannot be read or written (missing, no permission, a full
        # disk), a data set that could not be fetched, or a run that went NaN: one line,
        # not a traceback
        where = f" (rank {os.environ['RANK']})" if distributed.launched() else ""
        print(f"rnnkit {args.command}{where}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
