"""What sequence classification (:mod:`.classify`) and tagging (:mod:`.tag`) share:
the inputs, the encoder, length-bucketed batches, and the steps of one run.

Inputs are either words or numbers:

* words: a :class:`~rnnkit.data.readers.WordVocab` (minimum frequency, ``<unk>``)
  feeding a learned embedding, optionally joined by a character-level word
  representation (characters -> embedding -> convolution -> max over the word's
  characters, as in Ma & Hovy 2016), which sees the spelling of words the vocabulary
  lacks;
* numbers: (T, C) float frames (pixels, sensor channels, cepstra), standardised per
  channel with the training set's mean and standard deviation, kept in the weights.

The encoder is any rnnkit stack (``RNN``/``LSTM``/``GRU``; layers, direction, dropout,
initialisation such as ``irnn``). Batches group examples of similar length
(:class:`~rnnkit.batching.BucketBatchSampler`) and carry their lengths, so every layer
reads only the valid steps: the padding never changes a prediction (tested).

A task's ``train`` takes the steps in order: :func:`prepare` (start or resume the run
directory, read and encode the splits), :func:`new_model`, :func:`fit` (the shared
:class:`~rnnkit.trainer.Trainer` through :func:`rnnkit.runs.fit`), :func:`report`
(``results.json`` and ``confusion.png``). The run directory is :mod:`rnnkit.runs`'.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from .. import data as datasets
from .. import distributed, runs
from ..batching import BucketBatchSampler
from ..checkpoint import config_from_dict, load_checkpoint, resolve_checkpoint
from ..data.readers import (
    PAD,
    UNK,
    LabelVocab,
    RawSplit,
    WordVocab,
    check_numeric,
    split_indices,
    tokenize,
)
from ..layers import STACKS
from ..metrics import plot_confusion
from ..runs import KeepBest, seed_everything, start_run, write_results
from ..trainer import Trainer, TrainerConfig, resolve_device

PathLike = str | os.PathLike
CELLS = tuple(STACKS)  # "lstm", "gru", "rnn"
INPUTS = ("words", "numeric")
AUGMENTS = (None, "translate")
MAX_SHIFT = 2  # pixels, for augment="translate"
PROBE_SIZE = 16  # validation examples on which gradients through time are measured
MAX_WORD_CHARS = 20  # characters of a word the character encoder reads


def _positive_int(name: str, v: Any) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"Argument `{name}` must be a positive integer, got {v!r}")


# -- configuration ------------------------------------------------------------------------


@dataclass
class EncoderConfig:
    """The input representation and the recurrent encoder, shared by both tasks."""

    cell: Literal["lstm", "gru", "rnn"] = "lstm"  # the recurrent cell
    num_layers: int = 1  # stacked layers
    hidden_size: int = 128  # units per direction
    bidirectional: bool = True  # read both ways (--unidirectional: left to right only)
    nonlinearity: Literal["tanh", "relu"] = "tanh"  # the vanilla RNN's (rnn cell only)
    init: str | None = None  # a scheme of rnnkit.init, e.g. irnn, orthogonal (unset: torch's)
    dropout: float = 0.0  # on the inputs, between layers and before the output
    embedding_size: int = 100  # words only: the word vectors' size
    chars: bool = False  # words only: add the character-level representation
    char_embedding_size: int = 25  # with --chars: character vectors
    char_filters: int = 50  # with --chars: convolution filters, the size of a word's vector
    min_freq: int = 1  # words only: rarer words become <unk>
    lower: bool = False  # words only: lowercase before the vocabulary

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"Argument `cell` must be one of {CELLS}, got {self.cell!r}")
        if self.nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"Argument `nonlinearity` must be 'tanh' or 'relu', got {self.nonlinearity!r}"
            )
        for name in ("num_layers", "hidden_size", "embedding_size"):
            _positive_int(name, getattr(self, name))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Argument `dropout` must lie in [0, 1), got {self.dropout!r}")


@dataclass
class RunConfig:
    """One training run of a sequence task."""

    epochs: float = 10.0  # passes over the training set (fractions allowed)
    batch_size: int = 32  # sequences per batch
    lr: float = 2e-3  # peak Adam learning rate
    schedule: Literal["constant", "cosine", "linear"] = "linear"  # decay after warm-up
    warmup_steps: int = 50  # at most a tenth of the run
    min_lr_ratio: float = 0.05  # the decay ends at lr * min_lr_ratio
    weight_decay: float = 0.0  # on matrices and embeddings, not biases
    clip_norm: float = 5.0  # the gradient norm is clipped to this
    # evaluate, keep as best and test the exponential moving average of the weights with
    # this decay (0.999: about the last thousand steps) instead of the last step's
    ema: float | None = None
    val_fraction: float = 0.1  # of the training data, when no validation file is given
    evals_per_epoch: float = 1  # validations (and checkpoints) per epoch (0.1: every ten epochs)
    # numeric inputs read from images (rows as steps, pixels as channels): "translate"
    # shifts every training image by up to 2 pixels each way, zero filled
    augment: Literal["translate"] | None = None
    seed: int = 1234  # initialisation and batch order
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA where available
    progress: bool = True  # a progress bar with loss and speed
    nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/inf loss: stop there, or skip the batch

    def __post_init__(self) -> None:
        _positive_int("batch_size", self.batch_size)
        runs.check_evals_per_epoch(self.evals_per_epoch)
        if not (isinstance(self.epochs, (int, float)) and self.epochs > 0):
            raise ValueError(f"Argument `epochs` must be a positive number, got {self.epochs!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(
                f"Argument `val_fraction` must lie in (0, 1), got {self.val_fraction!r}"
            )
        if self.augment not in AUGMENTS:
            raise ValueError(f"Argument `augment` must be one of {AUGMENTS}, got {self.augment!r}")


# -- inputs -------------------------------------------------------------------------------


@dataclass
class InputSpec:
    """How raw examples become tensors; saved with the model so prediction reads alike."""

    kind: str  # "words" | "numeric"
    words: WordVocab | None = None
    chars: list[str] | None = None  # the character vocabulary, PAD and UNK first
    features: int = 0  # numeric: channels per step
    tokenizer: str = "words"  # text given whole (classification): "words" | "whitespace"

    def __post_init__(self) -> None:
        if self.kind not in INPUTS:
            raise ValueError(f"Argument `kind` must be one of {INPUTS}, got {self.kind!r}")
        self.char_index = {c: i for i, c in enumerate(self.chars or [])}

    @classmethod
    def for_words(
        cls,
        sentences: Sequence[Sequence[str]],
        *,
        min_freq: int = 1,
        lower: bool = False,
        chars: bool = False,
        tokenizer: str = "words",
    ) -> InputSpec:
        vocab = WordVocab.build(sentences, min_freq=min_freq, lower=lower)
        char_list = None
        if chars:
            seen = sorted({c for s in sentences for t in s for c in t})
            char_list = [PAD, UNK, *seen]
        return cls("words", vocab, char_list, tokenizer=tokenizer)

    def split(self, text: str) -> list[str]:
        return text.split() if self.tokenizer == "whitespace" else tokenize(text)

    def encode_words(self, tokens: Sequence[str]) -> dict[str, np.ndarray]:
        """One example's arrays: ``x`` (T,) ids and, with characters, ``chars`` (T, W)."""
        out = {"x": np.asarray(self.words.encode(tokens), dtype=np.int64)}
        if self.chars is not None:
            W = max(1, min(MAX_WORD_CHARS, max((len(t) for t in tokens), default=1)))
            c = np.zeros((len(tokens), W), dtype=np.int64)
            for i, t in enumerate(tokens):
                ids = [self.char_index.get(ch, 1) for ch in t[:MAX_WORD_CHARS]]
                c[i, : len(ids)] = ids
            out["chars"] = c
        return out

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "words": self.words.to_dict() if self.words is not None else None,
            "chars": self.chars,
            "features": self.features,
            "tokenizer": self.tokenizer,
        }

    @classmethod
    def from_dict(cls, d: dict) -> InputSpec:
        words = WordVocab.from_dict(d["words"]) if d.get("words") else None
        return cls(d["kind"], words, d.get("chars"), int(d.get("features", 0)), d["tokenizer"])


def word_examples(spec: InputSpec, texts: Sequence[str | Sequence[str]], argument: str) -> Examples:
    """Unlabelled examples for prediction: strings (split by the model's tokenizer) or
    lists of tokens."""
    if spec.kind != "words":
        raise ValueError("this model reads numeric sequences; use predict_arrays")
    sentences = []
    for n, text in enumerate(texts):
        tokens = spec.split(text) if isinstance(text, str) else list(text)
        if not tokens:
            raise ValueError(f"Argument `{argument}`: example {n} has no words: {text!r}")
        sentences.append(tokens)
    return Examples([spec.encode_words(t) for t in sentences], [None] * len(sentences))


def array_examples(spec: InputSpec, x: np.ndarray, lengths: np.ndarray | None) -> Examples:
    """Unlabelled examples of numeric sequences x (N, T[, C]), for prediction."""
    if spec.kind != "numeric":
        raise ValueError("this model reads text; use predict")
    x, lengths = check_numeric(x, lengths, "Argument `x`")
    if x.shape[2] != spec.features:
        raise ValueError(
            f"Argument `x` must have {spec.features} channels per step, got {x.shape[2]}"
        )
    return Examples([{"x": x[i, : lengths[i]]} for i in range(len(x))], [None] * len(x))


class CharEncoder(nn.Module):
    """Characters of each word -> one vector: embedding, width-3 convolution, ReLU, and
    the maximum over the word's own characters (padding masked out)."""

    def __init__(self, num_chars: int, embedding_size: int, filters: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_chars, embedding_size, padding_idx=0)
        self.conv = nn.Conv1d(embedding_size, filters, kernel_size=3, padding=1)
        self.output_size = filters

    def forward(self, chars: Tensor) -> Tensor:
        B, T, W = chars.shape  # (B, T, W) char ids, 0 = padding
        e = self.embedding(chars.view(B * T, W)).transpose(1, 2)  # (BT, E, W)
        h = torch.relu(self.conv(e))  # (BT, F, W)
        valid = (chars.view(B * T, 1, W) != 0).to(h.dtype)
        h = (h * valid - (1 - valid) * 1e4).amax(2)  # (BT, F)
        return (h * valid.amax(2)).view(B, T, -1)  # padded words -> zeros


class InputLayer(nn.Module):
    """Raw batch inputs -> (B, T, I) vectors for the encoder."""

    def __init__(self, spec: InputSpec, config: EncoderConfig) -> None:
        super().__init__()
        self.kind = spec.kind
        self.embedding = self.chars = None
        if spec.kind == "words":
            self.embedding = nn.Embedding(len(spec.words), config.embedding_size, padding_idx=0)
            size = config.embedding_size
            if spec.chars is not None:
                self.chars = CharEncoder(
                    len(spec.chars), config.char_embedding_size, config.char_filters
                )
                size += self.chars.output_size
        else:
            size = spec.features
            self.register_buffer("mean", torch.zeros(size))
            self.register_buffer("std", torch.ones(size))
        self.output_size = size
        self.drop = nn.Dropout(config.dropout)

    def set_standardization(self, x: np.ndarray, lengths: np.ndarray) -> None:
        """Mean and std per channel over the valid steps of the training frames."""
        valid = np.arange(x.shape[1])[None, :] < lengths[:, None]
        frames = x[valid].astype(np.float64)  # (steps, C); float64: no overflow in the sums
        mean, std = frames.mean(0), frames.std(0)
        too_big = ~(np.isfinite(mean) & np.isfinite(std) & (np.abs(mean) + std < 1e30))
        if too_big.any():
            raise ValueError(
                f"the training data's channel {int(np.flatnonzero(too_big)[0])} holds values "
                "too large to standardise (beyond 1e30); rescale the inputs"
            )
        self.mean.copy_(torch.from_numpy(mean.astype(np.float32)))
        self.std.copy_(torch.from_numpy(np.maximum(std, 1e-6).astype(np.float32)))

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        if self.kind == "numeric":
            return (batch["x"] - self.mean) / self.std  # (B, T, C)
        e = self.embedding(batch["x"])  # (B, T, E)
        if self.chars is not None:
            e = torch.cat([e, self.chars(batch["chars"])], -1)  # (B, T, E + F)
        return self.drop(e)


def build_encoder(config: EncoderConfig, input_size: int) -> nn.Module:
    """The rnnkit stack a configuration names (fused torch kernel where it matches)."""
    kwargs = dict(
        bidirectional=config.bidirectional,
        dropout=config.dropout if config.num_layers > 1 else 0.0,
        batch_first=True,
        init=config.init,
    )
    if config.cell == "rnn":
        kwargs["nonlinearity"] = config.nonlinearity
    return STACKS[config.cell](input_size, config.hidden_size, config.num_layers, **kwargs)


def translate(x: Tensor, max_shift: int = MAX_SHIFT, *, edge: str = "zero") -> Tensor:
    """Shift each image in x (B, H, W, ...) (rows as steps; or (B, H, W, C) pixels) by its
    own random (dy, dx) in [-max_shift, max_shift]; what comes in from outside is zeros
    (``edge="zero"``) or the nearest edge pixel repeated (``"repeat"``: a white or black
    background stays whole). Draws from torch's global generator, which the trainer
    saves and restores, so a resumed run sees the same shifts."""
    if edge not in ("zero", "repeat"):
        raise ValueError(f"Argument `edge` must be 'zero' or 'repeat', got {edge!r}")
    B, H, W = x.shape[:3]
    k = max_shift
    dy = torch.randint(-k, k + 1, (B,))
    dx = torch.randint(-k, k + 1, (B,))
    rows = (torch.arange(H)[None, :] - dy[:, None]).to(x.device)  # (B, H): source rows
    cols = (torch.arange(W)[None, :] - dx[:, None]).to(x.device)  # (B, W)
    b = torch.arange(B, device=x.device)[:, None, None]
    out = x[b, rows.clamp(0, H - 1)[:, :, None], cols.clamp(0, W - 1)[:, None, :]]
    if edge == "zero":
        inside = ((rows >= 0) & (rows < H))[:, :, None] & ((cols >= 0) & (cols < W))[:, None, :]
        out = out * inside.view(B, H, W, *[1] * (x.dim() - 3)).to(x.dtype)  # (B, H, W, ...)
    return out


def augmented(step_fn: Callable, how: str | None) -> Callable:
    """`step_fn` with the training batch's inputs augmented first (None: unchanged)."""
    if how is None:
        return step_fn

    def step(model: nn.Module, batch: dict[str, Tensor]):
        lengths = batch["lengths"]
        if batch["x"].dim() != 3 or bool((lengths != batch["x"].shape[1]).any()):
            raise ValueError(
                "augment='translate' needs images read by rows: numeric inputs of one length"
            )
        return step_fn(model, {**batch, "x": translate(batch["x"])})

    return step


# -- batches ------------------------------------------------------------------------------


@dataclass
class Examples:
    """Encoded examples: per-example arrays, lengths and targets (a label id, or a tag id
    per step; None when unlabelled)."""

    inputs: list[dict[str, np.ndarray]]
    targets: list[Any]

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def lengths(self) -> list[int]:
        return [len(next(iter(d.values()))) for d in self.inputs]


def collate(examples: Examples, idx: Sequence[int]) -> dict[str, Tensor]:
    """A padded batch: ``x`` (B, T) ids or (B, T, C) frames, ``chars`` (B, T, W),
    ``lengths`` (B,), ``y`` (B,) labels or (B, T) tags padded with -100."""
    items = [examples.inputs[i] for i in idx]
    lengths = np.array([len(d["x"]) for d in items], dtype=np.int64)
    B, T = len(items), int(lengths.max())
    first = items[0]["x"]
    x = np.zeros((B, T, *first.shape[1:]), dtype=first.dtype)
    for b, d in enumerate(items):
        x[b, : lengths[b]] = d["x"]
    batch = {"x": torch.from_numpy(x), "lengths": torch.from_numpy(lengths)}
    if "chars" in items[0]:
        W = max(d["chars"].shape[1] for d in items)
        c = np.zeros((B, T, W), dtype=np.int64)
        for b, d in enumerate(items):
            c[b, : lengths[b], : d["chars"].shape[1]] = d["chars"]
        batch["chars"] = torch.from_numpy(c)
    targets = [examples.targets[i] for i in idx]
    if targets and targets[0] is not None:
        if np.ndim(targets[0]) == 0:
            batch["y"] = torch.tensor(targets, dtype=torch.int64)
        else:
            y = np.full((B, T), -100, dtype=np.int64)
            for b, t in enumerate(targets):
                y[b, : len(t)] = t
            batch["y"] = torch.from_numpy(y)
    return batch


class BucketBatches:
    """Training batches as a callable with a cursor, so a resumed run continues exactly.

    Each epoch's order is :class:`BucketBatchSampler`'s for (seed, epoch): shuffled,
    grouped by length, then shuffled as batches. Under torchrun every rank walks the same
    global batches and takes its share of each (every world_size-th example of the
    length-sorted batch), so each example is seen once per epoch on any number of
    processes. A rank whose share is empty (a batch smaller than the group) gets a
    stand-in example marked ``stand_in``, which :func:`own_share` weighs 0.

    `examples` is anything with ``len()`` and per-example ``lengths`` that `collate`
    (examples, indices) -> batch reads: :class:`Examples` and :func:`collate` by default,
    the encoder-decoder's pairs and their collate too.
    """

    def __init__(
        self, examples: Any, batch_size: int, seed: int, collate: Callable = collate
    ) -> None:
        self.examples, self.collate = examples, collate
        self.sampler = BucketBatchSampler(examples.lengths, batch_size, seed=seed)
        self.epoch, self.position = 0, 0
        self._order = list(self.sampler)

    def __len__(self) -> int:
        return len(self._order)

    def __call__(self) -> dict[str, Tensor]:
        if self.position == len(self._order):
            self.epoch, self.position = self.epoch + 1, 0
            self.sampler.set_epoch(self.epoch)
            self._order = list(self.sampler)
        idx = self._order[self.position]
        self.position += 1
        mine = distributed.shard(idx)
        if not mine:  # nothing for this rank: it still takes part in the step, weighing 0
            return {**self.collate(self.examples, idx[:1]), "stand_in": torch.ones(1)}
        return self.collate(self.examples, mine)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.sampler.set_epoch(self.epoch)
        self._order = list(self.sampler)


def own_share(step_fn: Callable) -> Callable:
    """`step_fn` counting no items for a rank's stand-in batch (see :class:`BucketBatches`):
    the trainer weighs each rank's loss by its items, so the stand-in adds nothing."""

    def step(model: nn.Module, batch: dict[str, Tensor]):
        if "stand_in" not in batch:
            return step_fn(model, batch)
        batch = {k: v for k, v in batch.items() if k != "stand_in"}
        loss, stats = step_fn(model, batch)
        return loss, {**stats, "items": 0}

    return step


def eval_batches(examples: Examples, batch_size: int = 256, *, sharded: bool = False):
    """(indices, batch) in length order: little padding, same results as any order.
    `sharded`: under torchrun, only this rank's share (every world_size-th example)."""
    order = sorted(range(len(examples)), key=lambda i: examples.lengths[i])
    if sharded:
        order = list(distributed.shard(order))
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        yield idx, collate(examples, idx)


# -- the run ------------------------------------------------------------------------------


def trainer_config(run: RunConfig, steps_per_epoch: int) -> TrainerConfig:
    steps = max(1, int(math.ceil(run.epochs * steps_per_epoch)))
    every = runs.eval_interval(steps_per_epoch, run.evals_per_epoch)
    return TrainerConfig(
        max_steps=steps,
        lr=run.lr,
        optimizer="adam",
        weight_decay=run.weight_decay,
        schedule=run.schedule,
        warmup_steps=min(run.warmup_steps, steps // 10),  # a short run warms up briefly
        min_lr_ratio=run.min_lr_ratio,
        clip_norm=run.clip_norm,
        eval_every=every,
        log_every=max(1, min(20, every)),
        checkpoint_every=every,
        progress=run.progress,
        device=run.device,
        nonfinite=run.nonfinite,
        max_loss=runs.MAX_LOSS,
        ema=run.ema,
    )


# -- reading data -------------------------------------------------------------------------


def encode_split(raw: RawSplit, spec: InputSpec, labels: Any, *, per_step: bool) -> Examples:
    """Arrays and label ids of a split; an unseen label is an error naming file and line."""
    if (spec.kind == "words") != (raw.tokens is not None):
        have = "text" if raw.tokens is not None else "numeric arrays"
        raise ValueError(f"{raw.where[0]}: the model reads {spec.kind}, this data is {have}")
    if raw.tokens is not None:
        inputs = [spec.encode_words(t) for t in raw.tokens]
    else:
        if raw.x.shape[2] != spec.features:
            raise ValueError(
                f"{raw.where[0]}: the model reads {spec.features} channels per step, "
                f"this data has {raw.x.shape[2]}"
            )
        inputs = [{"x": raw.x[i, : raw.lengths[i]]} for i in range(len(raw))]
    if per_step:
        targets = [
            np.asarray([labels.encode([t], w)[0] for t, w in zip(tags, wh)], dtype=np.int64)
            for tags, wh in zip(raw.labels, raw.where)
        ]
    else:
        targets = [labels.encode([y], w)[0] for y, w in zip(raw.labels, raw.where)]
    return Examples(inputs, targets)


def build_spec(raw: RawSplit, config: EncoderConfig, *, tokenizer: str = "words") -> InputSpec:
    if raw.tokens is not None:
        return InputSpec.for_words(
            raw.tokens,
            min_freq=config.min_freq,
            lower=config.lower,
            chars=config.chars,
            tokenizer=tokenizer,
        )
    return InputSpec("numeric", features=int(raw.x.shape[2]))


def hold_out(train: RawSplit, val: RawSplit | None, fraction: float) -> tuple:
    """(train, validation): the given validation split, else a fixed share of train."""
    if val is not None:
        return train, val
    keep, held = split_indices(len(train), fraction, seed=0)
    return train.subset(keep), train.subset(held)


@torch.no_grad()
def run_model(
    model: nn.Module, examples: Examples, batch_size: int = 256, *, sharded: bool = False
):
    """Yield (indices, batch, output) over `examples` in length order, in eval mode
    (`sharded`: this rank's share only, under torchrun; the caller reduces)."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for idx, batch in eval_batches(examples, batch_size, sharded=sharded):
            batch = {k: v.to(device) for k, v in batch.items()}
            yield idx, batch, model(batch)
    finally:
        model.train(was)


def load_model(path: PathLike, kind: str, cls: type, config_cls: type, device) -> nn.Module:
    """A classifier or tagger saved at `path` (run directory or checkpoint), in eval mode."""
    ckpt = load_checkpoint(resolve_checkpoint(path), expected_kind=kind)
    model = cls(
        config_from_dict(config_cls, ckpt.meta["model"]),
        InputSpec.from_dict(ckpt.meta["input"]),
        LabelVocab.from_dict(ckpt.meta["labels"]),
    )
    model.load_state_dict(ckpt.model_state)
    model.meta = ckpt.meta
    return model.to(device).eval()


def describe(model: nn.Module, device: torch.device) -> str:
    """E.g. "1x128 bidirectional LSTM (torch fused kernel) + CRF"."""
    c = model.config
    direction = "bidirectional " if c.bidirectional else ""
    extra = f" {c.nonlinearity}" if c.cell == "rnn" else ""
    if c.init:
        extra += f", init {c.init}"
    crf = " + CRF" if getattr(c, "crf", False) else ""
    return (
        f"{c.num_layers}x{c.hidden_size} {direction}{c.cell.upper()}{extra} "
        f"({model.encoder.backend(device)}){crf}"
    )


# -- one run, in the steps a task takes ----------------------------------------------------


@dataclass
class Prepared:
    """What :func:`prepare` hands a task: the settings, inputs, labels and encoded splits
    of a new or resumed run, and the checkpoint it resumes from."""

    out: Path
    config: EncoderConfig
    run: RunConfig
    spec: InputSpec
    labels: LabelVocab
    splits: dict[str, Examples]  # "train", "val" and, when there is one, "test"
    raw_train: RawSplit
    meta: dict
    resume_from: Any = None

    @property
    def device(self) -> torch.device:
        return resolve_device(self.run.device)


def prepare(
    kind: str,
    config_cls: type,
    out: PathLike,
    config: EncoderConfig | None,
    run: RunConfig | None,
    *,
    data: str | None,
    files: dict[str, PathLike | None],
    read: Callable[[PathLike], RawSplit],
    per_step: bool,
    tokenizer: str,
    resume: bool,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> Prepared:
    """Start or resume run directory `out`: its settings, the splits of a built-in set
    (`data`) or of the user's files ({"train", "val", "test"}, read with `read`), the
    input spec and labels built from the training split (or the resumed run's own),
    every split encoded. A resumed run takes its own settings and data; the given
    `progress` (or the given `run`'s) then only decides whether to show progress."""
    out, ckpt = start_run(out, resume, kind, log=log)
    if ckpt is not None:
        if progress is None:
            progress = run.progress if run is not None else True
        config = config_from_dict(config_cls, ckpt.meta["model"])
        run = config_from_dict(RunConfig, ckpt.meta["train"])
        run.progress = progress
        source = ckpt.meta["data"]
        data, files = source.get("data"), {k: source.get(k) for k in ("train", "val", "test")}
    config, run = config or config_cls(), run or RunConfig()
    if (data is None) == (files.get("train") is None):
        raise ValueError("give either a built-in data set (`data`) or a training file (`train`)")
    with distributed.main_first():  # under torchrun: rank 0 fetches once
        if data is not None:
            splits, source = datasets.get(data, kind).splits(log), {"data": data}
        else:
            splits, source = {}, {}
            for key, path in files.items():
                if path is not None:
                    splits[key], source[key] = read(path), str(path)
    train, val = hold_out(splits["train"], splits.get("val"), run.val_fraction)
    if ckpt is not None:
        spec = InputSpec.from_dict(ckpt.meta["input"])
        labels = LabelVocab.from_dict(ckpt.meta["labels"])
    else:
        spec = build_spec(train, config, tokenizer=tokenizer)
        seen = (t for s in train.labels for t in s) if per_step else train.labels
        labels = LabelVocab.build(seen)
        if len(labels) < 2:
            what = "tag" if per_step else "label"
            raise ValueError(
                f"{source.get('data') or source.get('train')}: the training data has one "
                f"{what} only ({labels.labels[0]!r}); there is nothing to learn (give at "
                f"least two {what}s)"
            )
    encoded = {
        name: encode_split(split, spec, labels, per_step=per_step)
        for name, split in (("train", train), ("val", val), ("test", splits.get("test")))
        if split is not None
    }
    meta = {
        "kind": kind,
        "model": asdict(config),
        "input": spec.to_dict(),
        "labels": labels.to_dict(),
        "train": asdict(run),
        "data": source,
    }
    return Prepared(out, config, run, spec, labels, encoded, train, meta, ckpt)


def new_model(p: Prepared, model_cls: type) -> nn.Module:
    """The task's model for a prepared run, seeded; numeric inputs standardised with the
    training split's statistics."""
    seed_everything(p.run.seed)
    model = model_cls(p.config, p.spec, p.labels)
    if p.spec.kind == "numeric":
        model.inputs.set_standardization(p.raw_train.x, p.raw_train.lengths)
    return model


def log_start(p: Prepared, model: nn.Module, what: str, log: Callable[[str], None]) -> None:
    """One line on what is trained on what (a resumed run says so in :func:`fit`)."""
    if p.resume_from is not None:
        return
    n_params = sum(q.numel() for q in model.parameters())
    sizes = ", ".join(f"{len(ex):,} {name}" for name, ex in p.splits.items())
    per_step = what == "tags"  # a tagger counts the tokens it trains on
    steps = f" ({sum(p.splits['train'].lengths):,} training steps)" if per_step else ""
    source = p.meta["data"].get("data") or p.meta["data"].get("train")
    log(
        f"{p.meta['kind']} {source}: {sizes} sequences{steps}; {len(p.labels)} {what}; "
        f"{describe(model, p.device)}, {n_params / 1e6:.2f} M parameters"
    )


def fit(
    p: Prepared,
    model: nn.Module,
    step_fn: Callable,
    evaluate: Callable[[nn.Module, Examples], dict],
    *,
    metric: str,
    items: str,
    log: Callable[[str], None] = print,
) -> KeepBest:
    """Train with the shared trainer; ``best/`` keeps the highest validation `metric`
    (ties: the lower validation loss), ``latest/`` everything to resume."""
    run = p.run
    batches = BucketBatches(p.splits["train"], run.batch_size, run.seed)
    val = p.splits["val"]
    trainer = Trainer(
        trainer_config(run, len(batches)),
        model,
        own_share(augmented(step_fn, run.augment)),
        train_batches=batches,
        eval_fn=lambda m: evaluate(m, val)["metrics"],
    )
    trainer.items_name = items
    trainer.add_extra_state("data", batches.state_dict, batches.load_state_dict)

    def on_eval(t: Trainer, metrics: dict[str, float]) -> None:
        shown = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if k != "loss")
        log(
            f"epoch {t.step / len(batches):.2f} (step {t.step}): validation loss "
            f"{metrics['loss']:.4f}, {shown}"
        )

    trainer.add_callback("on_eval", on_eval)
    best = KeepBest(p.out, p.meta, metric=metric, higher_is_better=True)
    probe = runs.batch_probe(step_fn, probe_batch(val), p.device)
    runs.fit(trainer, p.out, p.meta, best=best, resume_from=p.resume_from, probe=probe, log=log)
    log(f"best validation {metric} {best.value:.2f} at step {best.best['step']}")
    return best


def probe_batch(examples: Examples, batch_size: int = PROBE_SIZE) -> dict[str, Tensor]:
    """The first `batch_size` examples as one padded training batch: what gradients
    through time are measured on (:func:`rnnkit.diagnostics.gradients_through_time`)."""
    return collate(examples, range(min(batch_size, len(examples))))


def validation_split(
    model: nn.Module, read: Callable[[PathLike], RawSplit], log: Callable[[str], None] = print
) -> Examples:
    """A saved model's validation examples, held out of its own data as in training."""
    kind, source = model.meta["kind"], model.meta["data"]
    if source.get("data") is not None:
        splits = datasets.get(source["data"], kind).splits(log)
    else:
        splits = {k: read(source[k]) for k in ("train", "val") if source.get(k) is not None}
    _, val = hold_out(splits["train"], splits.get("val"), model.meta["train"]["val_fraction"])
    return encode_split(val, model.spec, model.labels, per_step=kind == "tag")


def report(
    model: nn.Module,
    p: Prepared,
    evaluate: Callable[[nn.Module, Examples], dict],
    format_metrics: Callable[[dict], str],
    log: Callable[[str], None] = print,
) -> dict:
    """Evaluate the best weights on validation and test; write results.json and the
    confusion matrix (tokens for a tagger) of the test set, else of validation."""
    val_ex, test_ex = p.splits["val"], p.splits.get("test")
    results = {"val": evaluate(model, val_ex)["metrics"]}
    name, final = ("val", val_ex) if test_ex is None else ("test", test_ex)
    r = evaluate(model, final)
    results[name] = r["metrics"]
    if distributed.is_main():
        plot_confusion(
            r["y_true"],
            r["y_pred"],
            model.labels.labels,
            p.out / "confusion.png",
            f"{name}: {format_metrics(r['metrics'])}",
        )
    results["config"] = {"model": asdict(model.config), "train": model.meta.get("train")}
    write_results(p.out, results)
    for split in ("val", "test"):
        if split in results:
            log(f"{split}: {format_metrics(results[split])}")
    return results


# -- scoring a saved model (``rnnkit eval``) ----------------------------------------------


def labelled_split(
    model: nn.Module,
    read: Callable[[PathLike], RawSplit],
    *,
    test: PathLike | None = None,
    data: str | None = None,
    log: Callable[[str], None] = print,
) -> tuple[str, Examples]:
    """(name, examples) to score: the file `test`, else the test split of built-in set
    `data` (default: the run's own), else the run's own test file."""
    kind = model.meta["kind"]
    per_step = kind == "tag"
    if test is not None:
        split, name = read(test), str(test)
    else:
        data = data or model.meta["data"].get("data")
        if data is None:
            test = model.meta["data"].get("test")
            if test is None:
                raise ValueError(
                    "give the labelled data to evaluate on: --test FILE or --data NAME"
                )
            split, name = read(test), str(test)
        else:
            split, name = datasets.get(data, kind).splits(log)["test"], f"{data} (test)"
    return name, encode_split(split, model.spec, model.labels, per_step=per_step)


def eval_report(
    model: nn.Module,
    name: str,
    examples: Examples,
    result: dict,
    summary: str,
    detail: str,
    plot: PathLike,
) -> str:
    """The text ``rnnkit eval`` prints for a classifier or tagger, and its confusion
    matrix written to `plot`. `detail` is the per-label (or per-entity) report."""
    plot_confusion(
        result["y_true"], result["y_pred"], model.labels.labels, plot, f"{name}: {summary}"
    )
    return f"{name}: {len(examples):,} examples\n  {summary}\n{detail}\nconfusion matrix: {plot}"


def label_report(result: dict, labels: Sequence[str]) -> str:
    """scikit-learn's per-label precision, recall and F1 of an evaluation."""
    from sklearn.metrics import classification_report

    return classification_report(
        result["y_true"], result["y_pred"], labels=list(range(len(labels))),
        target_names=labels, digits=3, zero_division=0,
    )  # fmt: skip
