"""The applications, one file each, read top to bottom: config, model, batches, loss,
train, evaluate, load.

    charlm.py     character-level language models (the lectures' flagship)
    wordlm.py     word-level language models (Penn Treebank perplexity, generation)
    classify.py   many to one: a label per sequence (sentiment, digits, signals)
    tag.py        many to many, aligned: a tag per step (parts of speech, entities)
    seq2seq.py    encoder-decoder: one sequence into another (translation, pronunciation)
    caption.py    one to many: a CNN reads an image, an RNN writes its caption
    pixels.py     pixel by pixel: a generative model of images, image completion
    video.py      a CNN per frame, an RNN over frames: a label per clip or per frame
    lab.py        the long-range lab: cells, initialisations, clipping, truncation compared
    hello.py      the lecture's toy: a vanilla RNN learns "hello"
    sequences.py  what classify and tag share (inputs, encoder, batches, run steps)

A new task is one new file here, its line in :data:`TASKS` (the checkpoint kind it
writes, and its module, which provides ``load(path, device=...)``) and its subcommand
in ``cli.py``. Loading a run finds its task from the checkpoint's kind through this
table (imported on demand, so no module here imports another's task).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import torch
from torch import nn

from ..checkpoint import checkpoint_kind, load_checkpoint, resolve_checkpoint

TASKS = {  # checkpoint kind -> the module that trains, evaluates and loads it
    "charlm": "rnnkit.tasks.charlm",
    "classify": "rnnkit.tasks.classify",
    "tag": "rnnkit.tasks.tag",
    "wordlm": "rnnkit.tasks.wordlm",
    "seq2seq": "rnnkit.tasks.seq2seq",
    "caption": "rnnkit.tasks.caption",
    "pixels": "rnnkit.tasks.pixels",
    "video": "rnnkit.tasks.video",
    "lab": "rnnkit.tasks.lab",
}


def module(kind: str) -> ModuleType:
    """The task module that writes checkpoints of `kind` (e.g. ``"classify"``)."""
    if kind not in TASKS:
        raise ValueError(f"no rnnkit task writes {kind!r}; the tasks are {', '.join(TASKS)}")
    return importlib.import_module(TASKS[kind])


def load(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> nn.Module:
    """The model saved at `path` (a run directory: its best checkpoint; or a checkpoint),
    of whichever task wrote it, in eval mode."""
    ckpt_dir = resolve_checkpoint(path)
    kind = checkpoint_kind(ckpt_dir)
    if kind is None:  # not an rnnkit checkpoint, or one without a kind: say which
        load_checkpoint(ckpt_dir)
    if kind not in TASKS:
        raise ValueError(
            f"{path} holds a checkpoint of kind {kind!r}, which no rnnkit task reads "
            f"(known kinds: {', '.join(TASKS)})"
        )
    return module(kind).load(ckpt_dir, device=device)


def gradient_probe(model: nn.Module, *, batch_size: int = 16, log=print):
    """The task's loss on `batch_size` examples of the run's own validation data, as a
    function of the model: what ``rnnkit gradients RUN`` differentiates
    (:func:`rnnkit.diagnostics.gradients_through_time`). `model` comes from :func:`load`."""
    kind = getattr(model, "meta", {}).get("kind")
    return module(kind).gradient_probe(model, batch_size=batch_size, log=log)
