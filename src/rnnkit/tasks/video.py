"""Video classification: a CNN reads each frame, an RNN reads the frames in order.

The lectures' video application, "many to one" for a label per clip and "many to many"
for a label per frame::

    frames (B, T, H, W, C) uint8 -> CNN per frame -> maps (B, T, F, h, w)
        (a small CNN trained here, or the ImageNet-pretrained EfficientNet-lite0, frozen:
        its maps are computed once per frame and cached, ``--encoder efficientnet-lite0``)
        temporal "rnn":  v_t = relu(W_v flatten(map_t)) (B, T, D) -> any rnnkit stack -> (B, T, H)
        temporal "conv": a ConvLSTM / ConvGRU over the maps (the lectures' last slide: a
                         convolutional GRU over feature maps) -> mean over positions (B, T, H)
        temporal "mean": the baseline without recurrence: v_t alone (B, T, D)
    clip label:  the output at the clip's last frame (``readout last``; a bidirectional
                 stack adds its backward half at the first frame) or the mean over frames
    frame labels: the output at each frame

The ``mean`` baseline classifies a clip from the average of its frames' vectors and a
frame from that frame alone: it cannot use the order of the frames, which is what the
recurrence is for. Clips of different lengths are zero-padded; the layers take their
lengths, and padded frames are never read nor scored.

Built-in sets: ``moving-digits`` (:mod:`rnnkit.data.videos`, composed from real MNIST
digits: the direction in which a digit sets off, per clip; whether it moved left or
right, per frame) and ``wesnoth-actions`` (:mod:`rnnkit.data.wesnoth`, artist-drawn
sprite animations: the action, per clip or at every frame). Or a user's clips:
``--videos DIR --labels FILE.csv``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .. import data as datasets
from .. import distributed, runs, vision
from ..checkpoint import Checkpoint, config_from_dict, load_checkpoint, resolve_checkpoint
from ..conv import ConvGRUCell, ConvLSTMCell
from ..data.fetch import cache_dir
from ..data.readers import split_indices
from ..data.videos import ClipSet, read_clip, read_labelled_clips
from ..layers import STACKS, Recurrent
from ..trainer import Trainer, TrainerConfig, resolve_device
from ..vision import EfficientNetLite0, SmallCNN, frozen_features
from .sequences import BucketBatches, _positive_int, own_share

KIND = "video"
ENCODERS = ("cnn", "efficientnet-lite0")
PathLike = str | os.PathLike
IGNORE = -1  # a frame without a label
PROBE_SIZE = 16  # validation clips on which gradients through time are measured


@dataclass
class VideoConfig:
    """The model: what a checkpoint needs to rebuild it (besides the label names)."""

    labels: Literal["clip", "frames"] = "clip"  # a label per clip (many to one) or per frame
    temporal: Literal["rnn", "conv", "mean"] = "rnn"  # across frames: a stack, ConvLSTM/GRU, none
    cell: Literal["lstm", "gru", "rnn"] = "lstm"  # the stack's cell (conv: lstm or gru)
    hidden_size: int = 128  # units (conv: channels) per layer
    num_layers: int = 1  # layers of the stack
    bidirectional: bool = False  # the stack reads the frames both ways (not for conv)
    readout: Literal["last", "mean"] = "last"  # a clip's label from its last frame or all
    # per frame: a small CNN trained here, or the ImageNet-pretrained EfficientNet-lite0,
    # frozen (its maps computed once per frame and cached)
    encoder: Literal["cnn", "efficientnet-lite0"] = "cnn"
    image_size: int = 128  # efficientnet-lite0: frames resized to this side (maps of side/32)
    cnn_width: int = 16  # channels of the CNN's first block (doubling per block)
    cnn_blocks: int = 3  # CNN blocks, each halving the frame: 64x64 -> 8x8 maps
    frame_vector_size: int = 128  # v_t, each frame's vector (rnn and mean)
    kernel_size: int = 3  # the ConvLSTM/ConvGRU's kernel
    dropout: float = 0.2  # on frame vectors and before the output layer

    def __post_init__(self) -> None:
        if self.labels not in ("clip", "frames"):
            raise ValueError(f"Argument `labels` must be 'clip' or 'frames', got {self.labels!r}")
        if self.temporal not in ("rnn", "conv", "mean"):
            raise ValueError(
                f"Argument `temporal` must be one of ('rnn', 'conv', 'mean'), got {self.temporal!r}"
            )
        if self.cell not in STACKS:
            raise ValueError(f"Argument `cell` must be one of {sorted(STACKS)}, got {self.cell!r}")
        if self.temporal == "conv" and self.cell == "rnn":
            raise ValueError(
                "Argument `cell`: the convolutional recurrence is lstm or gru, got 'rnn'"
            )
        if self.temporal == "conv" and self.bidirectional:
            raise ValueError("Argument `bidirectional`: not for the convolutional recurrence")
        if self.readout not in ("last", "mean"):
            raise ValueError(f"Argument `readout` must be 'last' or 'mean', got {self.readout!r}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"Argument `encoder` must be one of {ENCODERS}, got {self.encoder!r}")
        for name in ("hidden_size", "num_layers", "cnn_width", "cnn_blocks",
                     "frame_vector_size", "kernel_size", "image_size"):  # fmt: skip
            _positive_int(name, getattr(self, name))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Argument `dropout` must lie in [0, 1), got {self.dropout!r}")


@dataclass
class TrainConfig:
    """One training run."""

    epochs: float = 10.0  # passes over the training clips (fractions allowed)
    minutes: float | None = None  # train this long instead (evaluation not counted)
    batch_size: int = 32  # clips per batch
    lr: float = 2e-3  # peak Adam learning rate
    schedule: Literal["constant", "cosine", "linear"] = "linear"  # decay after warm-up
    warmup_steps: int = 50  # at most a tenth of the run
    min_lr_ratio: float = 0.05  # the decay ends at lr * min_lr_ratio
    clip_norm: float = 1.0  # the gradient norm is clipped to this
    # evaluate, keep as best and test the exponential moving average of the weights with
    # this decay (0.999: about the last thousand steps) instead of the last step's
    ema: float | None = None
    val_fraction: float = 0.1  # of a user's clips held out for validation
    test_fraction: float = 0.1  # ... and for the test
    evals_per_epoch: float = 1  # validations (and checkpoints) per epoch (0.1: every ten epochs)
    seed: int = 1234  # initialisation and batch order
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA where available
    progress: bool = True  # a progress bar with loss and speed
    nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/inf loss: stop there, or skip the batch

    def __post_init__(self) -> None:
        _positive_int("batch_size", self.batch_size)
        runs.check_evals_per_epoch(self.evals_per_epoch)
        if not (isinstance(self.epochs, (int, float)) and self.epochs > 0):
            raise ValueError(f"Argument `epochs` must be a positive number, got {self.epochs!r}")
        if self.minutes is not None and not self.minutes > 0:
            raise ValueError(f"Argument `minutes` must be positive, got {self.minutes!r}")
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 < getattr(self, name) < 0.5:
                raise ValueError(
                    f"Argument `{name}` must lie in (0, 0.5), got {getattr(self, name)!r}"
                )

    def trainer_config(self, steps_per_epoch: int) -> TrainerConfig:
        return runs.epoch_trainer_config(self, steps_per_epoch)


# -- the model -----------------------------------------------------------------------------


class VideoClassifier(nn.Module):
    """A per-frame CNN and a recurrence over the frames (see the module docstring), for
    frames of `frame_shape` (H, W, C) and `num_labels` labels."""

    def __init__(self, config: VideoConfig, frame_shape: Sequence[int], num_labels: int):
        super().__init__()
        self.config = config
        self.frame_shape = tuple(int(n) for n in frame_shape)
        if len(self.frame_shape) != 3 or min(self.frame_shape) < 1:
            raise ValueError(f"Argument `frame_shape` must be (H, W, C), got {frame_shape!r}")
        _positive_int("num_labels", num_labels)
        c = config
        H, W, C = self.frame_shape
        self.frozen = c.encoder != "cnn"
        if self.frozen:  # pretrained weights: loaded by `train`, or with a checkpoint
            self.cnn = EfficientNetLite0()
            self.cnn.requires_grad_(False)
            h = w = -(-c.image_size // self.cnn.stride)
        else:
            self.cnn = SmallCNN(in_channels=C, width=c.cnn_width, blocks=c.cnn_blocks)
            h, w = H, W
            for _ in range(c.cnn_blocks):
                h, w = (h + 1) // 2, (w + 1) // 2
        Fm = self.cnn.out_channels
        self.map_size = (h, w)
        self.drop = nn.Dropout(c.dropout)
        if c.temporal == "conv":
            cell = (ConvLSTMCell if c.cell == "lstm" else ConvGRUCell)(
                Fm, c.hidden_size, c.kernel_size
            )
            self.temporal = Recurrent(cell, batch_first=True)
            out = c.hidden_size
        else:
            self.frame_vector = nn.Linear(Fm * h * w, c.frame_vector_size)
            if c.temporal == "rnn":
                self.temporal = STACKS[c.cell](
                    c.frame_vector_size, c.hidden_size, c.num_layers, dropout=c.dropout,
                    batch_first=True, bidirectional=c.bidirectional,
                )  # fmt: skip
                out = c.hidden_size * (2 if c.bidirectional else 1)
            else:
                out = c.frame_vector_size
        self.head = nn.Linear(out, num_labels)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def train(self, mode: bool = True) -> VideoClassifier:
        super().train(mode)
        if self.frozen:  # a frozen encoder keeps its batch-norm statistics
            self.cnn.eval()
        return self

    def frame_maps(self, frames: Tensor) -> Tensor:
        """uint8 frames (B, T, H, W, C) -> the CNN's maps (B, T, F, h, w); a frozen
        encoder's exactly as :func:`encoder_maps` caches them (before float16)."""
        if frames.dim() != 5 or tuple(frames.shape[2:]) != self.frame_shape:
            raise ValueError(
                f"Argument `frames` must be (B, T, {', '.join(map(str, self.frame_shape))}) "
                f"uint8, got shape {tuple(frames.shape)}"
            )
        B, T = frames.shape[:2]
        if self.frozen:
            size = self.config.image_size
            maps = frozen_features(self.cnn, frames.flatten(0, 1), size=size).to(self.device)
        else:
            x = frames.to(self.device).flatten(0, 1).permute(0, 3, 1, 2).float() / 255.0
            maps = self.cnn(x)  # (B*T, F, h, w)
        return maps.view(B, T, *maps.shape[1:])

    def forward(self, frames: Tensor, lengths: Tensor) -> Tensor:
        """frames (B, T, H, W, C) uint8 (or a frozen encoder's cached maps, float
        (B, T, F, h, w)), lengths (B,) -> logits: (B, labels) per clip, or (B, T, labels)
        per frame (padded frames' logits are there but never read)."""
        c = self.config
        lengths = lengths.to(self.device)
        if frames.is_floating_point():
            maps = frames.to(self.device, torch.float32)  # (B, T, F, h, w)
        else:
            maps = self.frame_maps(frames)  # (B, T, F, h, w)
        if c.temporal == "conv":
            out, _ = self.temporal(maps, lengths=lengths)  # (B, T, Hc, h, w)
            out = out.mean(dim=(3, 4))  # (B, T, Hc)
        else:
            v = self.drop(F.relu(self.frame_vector(maps.flatten(2))))  # (B, T, D)
            out = v if c.temporal == "mean" else self.temporal(v, lengths=lengths)[0]
        if c.labels == "frames":
            return self.head(self.drop(out))  # (B, T, labels)
        return self.head(self.drop(self.clip_vector(out, lengths)))

    def clip_vector(self, out: Tensor, lengths: Tensor) -> Tensor:
        """Outputs per frame (B, T, O) -> one per clip (B, O): the mean over the clip's
        frames (``mean``, and always for the ``mean`` baseline), or the output at its last
        frame (a bidirectional stack: its backward half at the first frame)."""
        T = out.shape[1]
        valid = torch.arange(T, device=out.device)[None, :] < lengths[:, None]  # (B, T)
        if self.config.readout == "mean" or self.config.temporal == "mean":
            return (out * valid[..., None]).sum(1) / lengths[:, None].to(out.dtype)
        last = out[torch.arange(len(out), device=out.device), lengths - 1]  # (B, O)
        if self.config.temporal == "rnn" and self.config.bidirectional:
            half = out.shape[-1] // 2
            return torch.cat([last[:, :half], out[:, 0, half:]], dim=-1)
        return last

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        logits = self(batch["frames"], batch["lengths"])
        y = batch["labels"].to(logits.device)
        return F.cross_entropy(logits.flatten(0, -2), y.flatten(), ignore_index=IGNORE)

    @torch.no_grad()
    def predict(self, frames: Tensor, lengths: Tensor) -> Tensor:
        """Label ids: (B,) per clip or (B, T) per frame."""
        was = self.training
        self.eval()
        try:
            return self(frames, lengths).argmax(-1)
        finally:
            self.train(was)


# -- data ----------------------------------------------------------------------------------


class _Clips:
    """A split's labelled clips: their frames, or (`maps`: a frozen encoder's maps of
    every clip's frames one clip after another, (sum of lengths, F, h, w)) their maps."""

    def __init__(self, clips: ClipSet, per_frame: bool, maps: Tensor | None = None) -> None:
        self.frames = torch.from_numpy(clips.frames)
        self.lengths = clips.lengths.tolist()
        self.maps = maps
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)]).tolist()
        labels = clips.frame_labels if per_frame else clips.clip_labels
        if labels is None:
            raise ValueError(f"these clips have no {'frame' if per_frame else 'clip'} labels")
        self.labels = torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.frames)


def _collate(examples: _Clips, idx: Sequence[int]) -> dict[str, Tensor]:
    rows = torch.as_tensor(list(idx), dtype=torch.int64)
    lengths = torch.tensor([examples.lengths[i] for i in idx])
    T = int(lengths.max())
    labels = examples.labels[rows]
    if examples.maps is not None:
        frames = examples.maps.new_zeros((len(rows), T, *examples.maps.shape[1:]))
        for k, i in enumerate(idx):
            frames[k, : examples.lengths[i]] = examples.maps[
                examples.starts[i] : examples.starts[i + 1]
            ]
    else:
        frames = examples.frames[rows, :T]
    return {
        "frames": frames,
        "lengths": lengths,
        "labels": labels[:, :T] if labels.dim() == 2 else labels,
    }


def load_clips(
    *, data: str | None, videos: PathLike | None, labels: PathLike | None,
    train_config: TrainConfig, size: tuple[int, int] = (64, 64), channels: int = 3,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, ClipSet], dict[str, Any]]:  # fmt: skip
    """The train, val and test clips of built-in set `data`, or of the user's `videos`
    with their `labels` file read at `size` (split by clip: fixed fractions, seed 0)."""
    if (data is None) == (labels is None):
        raise ValueError("give either a built-in data set (`data`) or a labels file (`labels`)")
    if data is not None:
        return datasets.get(data, KIND).splits(log), {"data": data}
    if videos is None:
        raise ValueError("Argument `videos`: give the folder of the clips that `labels` names")
    whole = read_labelled_clips(videos, labels, size, channels)
    rest, test = split_indices(len(whole), train_config.test_fraction, seed=0)
    keep, val = split_indices(
        len(rest), train_config.val_fraction / (1 - train_config.test_fraction), seed=0
    )
    if not len(val) or not len(test) or not len(keep):
        raise ValueError(
            f"Argument `labels`: {labels} names {len(whole)} clips, too few to hold out a "
            "validation and a test clip each"
        )
    splits = {
        "train": whole.subset([rest[i] for i in keep]),
        "val": whole.subset([rest[i] for i in val]),
        "test": whole.subset(list(test)),
    }
    return splits, {"videos": str(Path(videos).resolve()), "labels": str(Path(labels).resolve())}


def encoder_maps(
    model: VideoClassifier, clips: ClipSet, log: Callable[[str], None] = print
) -> Tensor:
    """The frozen encoder's maps of every frame of `clips`, one clip after another
    (sum of lengths, F, h, w) float16: computed once and kept in ``$RNNKIT_DATA/features``,
    keyed by the frames' bytes, the input size and the encoder's weights."""
    c = model.config
    frames = np.concatenate([clips.frames[k, :n] for k, n in enumerate(clips.lengths)])
    key = vision.features_key(model.cnn, frames, c.encoder, c.image_size, frames.shape)

    def compute() -> Tensor:
        log(f"{c.encoder}: computing the feature maps of {len(frames):,} frames once ...")
        return frozen_features(model.cnn, frames, size=c.image_size)

    return vision.cached_features(cache_dir() / "features" / f"video-{c.encoder}-{key}.npy",
                                  compute)  # fmt: skip


# -- metrics -------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: VideoClassifier, clips: _Clips, batch_size: int = 64) -> dict[str, float]:
    """Cross-entropy and accuracy (%) over the labelled clips or frames (sharded under
    torchrun, reduced)."""
    was = model.training
    model.eval()
    idx = list(distributed.shard(list(range(len(clips)))))
    nats = right = count = 0.0
    try:
        for s in range(0, len(idx), batch_size):
            batch = _collate(clips, idx[s : s + batch_size])
            logits = model(batch["frames"], batch["lengths"]).flatten(0, -2)
            y = batch["labels"].to(logits.device).flatten()
            real = y != IGNORE
            nats += float(F.cross_entropy(logits, y, ignore_index=IGNORE, reduction="sum"))
            right += float((logits.argmax(-1)[real] == y[real]).sum())
            count += float(real.sum())
    finally:
        model.train(was)
    nats, right, count = distributed.sum_floats(nats, right, count)
    return {"loss": nats / max(count, 1.0), "accuracy": 100.0 * right / max(count, 1.0)}


# -- training ------------------------------------------------------------------------------


def make_step_fn() -> Callable:
    def step_fn(model: VideoClassifier, batch: dict[str, Tensor]):
        return model.loss(batch), {"items": int((batch["labels"] != IGNORE).sum())}

    return step_fn


def train(
    out: PathLike,
    config: VideoConfig | None = None,
    train_config: TrainConfig | None = None,
    *,
    data: str | None = None,
    videos: PathLike | None = None,
    labels: PathLike | None = None,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> tuple[VideoClassifier, dict]:
    """Train a video classifier into run directory `out` on built-in set `data` or on the
    user's `videos` and their `labels`; ``best/`` keeps the best validation accuracy; at
    the end the validation and test accuracy go to ``results.json``. ``resume=True``
    continues from ``out/latest``."""
    out, ckpt = runs.start_run(out, resume, KIND, log=log)
    if ckpt is not None:
        config = config_from_dict(VideoConfig, ckpt.meta["model"])
        train_config = config_from_dict(TrainConfig, ckpt.meta["train"])
        source = ckpt.meta["data"]
        data, videos, labels = source.get("data"), source.get("videos"), source.get("labels")
    if data is None and labels is None:
        data = "moving-digits"
    config, train_config = config or VideoConfig(), train_config or TrainConfig()
    if progress is not None:
        train_config.progress = progress
    with distributed.main_first():
        splits, source = load_clips(data=data, videos=videos, labels=labels,
                                    train_config=train_config, log=log)  # fmt: skip
    per_frame = config.labels == "frames"
    names = splits["train"].frame_names if per_frame else splits["train"].clip_names
    frame_shape = tuple(splits["train"].frames.shape[2:])
    runs.seed_everything(train_config.seed)
    model = VideoClassifier(config, frame_shape, len(names))
    if ckpt is not None:
        model.load_state_dict(ckpt.model_state)
    elif model.frozen:
        from ..data.weights import load_efficientnet_lite0

        with distributed.main_first():  # under torchrun: rank 0 fetches once
            model.cnn.load_state_dict(load_efficientnet_lite0(log=log).state_dict())
    with distributed.main_first():  # the maps are cached by rank 0, read by the others
        maps = {k: encoder_maps(model, v, log) if model.frozen else None
                for k, v in splits.items()}  # fmt: skip
    sets = {k: _Clips(v, per_frame, maps[k]) for k, v in splits.items()}
    device = resolve_device(train_config.device)
    model.to(device)
    batches = BucketBatches(sets["train"], train_config.batch_size, train_config.seed, _collate)
    trainer = Trainer(
        train_config.trainer_config(len(batches)), model, own_share(make_step_fn()),
        train_batches=batches, eval_fn=lambda m: evaluate(m, sets["val"]),
    )  # fmt: skip
    trainer.items_name = "frames" if per_frame else "clips"
    trainer.add_extra_state("data", batches.state_dict, batches.load_state_dict)
    trainer.add_callback(
        "on_eval",
        lambda t, m: log(
            f"epoch {t.step / len(batches):.2f} (step {t.step}): validation "
            f"loss {m['loss']:.4f}, accuracy {m['accuracy']:.1f}%"
        ),  # fmt: skip
    )
    meta = {
        "kind": KIND, "model": asdict(config), "labels": list(names),
        "frame_shape": list(frame_shape), "train": asdict(train_config), "data": source,
    }  # fmt: skip
    where = source.get("data") or source.get("labels")
    if ckpt is None:
        sizes = ", ".join(f"{len(v):,} {k}" for k, v in splits.items())
        n_params = sum(p.numel() for p in model.parameters())
        log(f"video {where}: {sizes} clips, {len(names)} {config.labels} labels; "
            f"{describe(model, device)}; {n_params / 1e6:.2f} M parameters")  # fmt: skip
    best = runs.KeepBest(out, meta, metric="accuracy", higher_is_better=True)
    probe = None  # the averaging baseline has no h_t to measure
    if config.temporal != "mean":
        val = sets["val"]
        probe_batch = _collate(val, list(range(min(PROBE_SIZE, len(val)))))
        probe = runs.batch_probe(make_step_fn(), probe_batch, device)
    runs.fit(trainer, out, meta, best=best, resume_from=ckpt, probe=probe, log=log)
    model = load(out / "best", device=device)
    results: dict[str, Any] = {}
    for split in ("val", "test"):
        results[split] = evaluate(model, sets[split])
        log(f"{split}: accuracy {results[split]['accuracy']:.1f}% ({config.labels} labels)")
    results["train"] = {"steps": trainer.step, "minutes": trainer.train_s / 60,
                        "best_step": best.best["step"]}  # fmt: skip
    runs.write_results(out, results)
    return model, results


def describe(model: VideoClassifier, device: torch.device) -> str:
    c = model.config
    if model.frozen:
        h, w = model.map_size
        cnn = f"{c.encoder} (ImageNet, frozen, maps {h}x{w} at {c.image_size} px cached) per frame"
    else:
        cnn = f"CNN ({c.cnn_blocks} blocks from {c.cnn_width} channels) per frame"
    if c.temporal == "mean":
        across = "no recurrence (frame vectors averaged: the baseline)"
    elif c.temporal == "conv":
        across = f"Conv{c.cell.upper()} {c.hidden_size} channels over the maps"
    else:
        d = "bidirectional " if c.bidirectional else ""
        across = (
            f"{d}{c.num_layers}x{c.hidden_size} {c.cell.upper()} ({model.temporal.backend(device)})"
        )
    return f"{cnn} -> {across}, a label per {'frame' if c.labels == 'frames' else 'clip'}"


def load(path: PathLike, *, device: str | torch.device = "cpu") -> VideoClassifier:
    """The :class:`VideoClassifier` saved at `path` (a run directory or checkpoint)."""
    ckpt: Checkpoint = load_checkpoint(resolve_checkpoint(path), expected_kind=KIND)
    config = config_from_dict(VideoConfig, ckpt.meta["model"])
    model = VideoClassifier(config, ckpt.meta["frame_shape"], len(ckpt.meta["labels"]))
    model.load_state_dict(ckpt.model_state)
    model.meta = ckpt.meta
    return model.to(device).eval()


def gradient_probe(
    model: VideoClassifier, *, batch_size: int = PROBE_SIZE, log: Callable[[str], None] = print
) -> Callable[[VideoClassifier], Tensor]:
    """The run's loss on its first `batch_size` validation clips, one padded batch as in
    training (``rnnkit gradients RUN``): the validation split rebuilt from the run's own
    data (a built-in set's, or the same fractions of its labelled clips), their frames,
    or a frozen encoder's maps (cached, as training read them). `model` comes from
    :func:`load`; the ``mean`` baseline runs no recurrent layer, so
    :func:`rnnkit.diagnostics.gradients_through_time` refuses its probe."""
    meta = model.meta
    source = meta["data"]
    tc = config_from_dict(TrainConfig, meta["train"])
    H, W, C = model.frame_shape
    splits, _ = load_clips(data=source.get("data"), videos=source.get("videos"),
                           labels=source.get("labels"), train_config=tc, size=(H, W),
                           channels=C, log=log)  # fmt: skip
    val = splits["val"]
    maps = encoder_maps(model, val, log) if model.frozen else None
    clips = _Clips(val, model.config.labels == "frames", maps)
    batch = _collate(clips, list(range(min(batch_size, len(clips)))))
    return runs.batch_probe(make_step_fn(), batch, model.device)


def predict_clip(model: VideoClassifier, path: PathLike) -> list[str]:
    """The label of a clip file or frame folder (one item), or the label of each frame."""
    H, W, C = model.frame_shape
    frames = torch.from_numpy(read_clip(path, (H, W), C))[None]  # (1, T, H, W, C)
    ids = model.predict(frames, torch.tensor([frames.shape[1]]))[0]
    names = model.meta["labels"]
    return [names[int(i)] for i in np.atleast_1d(ids.cpu().numpy())]
