"""Pixel by pixel: a recurrent generative model of images, and image completion.

The lectures' "input top and left pixel to predict a new pixel": an image x of H x W
pixels, each one of ``levels`` values (2 for binarised digits, 256 for grey levels), is
read in raster order, and its probability is the product of each pixel's probability
given the pixels above it and to its left::

    p(x) = prod_{i, j} p(x_ij | x_{<i, :}, x_{i, <j})

Two recurrences carry that context, so that no pixel ever sees itself or a later one:

* the **row RNN** runs down the image, reading row i-1 whole when it reaches row i:
  r_i = RNN_row([x_{i-1, 0} .. x_{i-1, W-1}], r_{i-1}), r_0 from a blank row: the summary
  of every row above row i; a linear map turns it into a vector per column, c_ij;
* the **pixel RNN** runs along row i from left to right (all rows at once: their inputs
  are known in training), its state starting from r_i:
  h_ij = RNN_pixel([e(x_{i, j-1}); x_{i-1, j-k} .. x_{i-1, j+k}; c_ij], h_{i, j-1}),
  reading the pixel to the left (e: an embedding; a start symbol at j = 0), the 2k + 1
  pixels of the row above around column j (all before x_ij in raster order), and the
  column's vector;
* the output: p(x_ij | ...) = sigmoid(w^T h_ij + b) for 2 levels (Bernoulli), a softmax
  over the levels otherwise.

Training is one teacher-forced pass (both recurrences are fused kernels over whole
sequences); its loss is the mean negative log-likelihood per pixel, reported as nats per
image (binarised) and bits per dimension (grey levels). Sampling runs row by row: the row
RNN one step, then the row's pixels one at a time through :mod:`rnnkit.decoding`, every
image of a grid in one batch. :meth:`PixelRNN.complete` keeps the top rows of images and
samples the rest.

Built-in sets (:mod:`rnnkit.data.digits`): ``mnist-binary`` (the 10,000 real MNIST
digits, binarised once by drawing each pixel from its grey level with a fixed seed),
``mnist-grey`` (their 256 grey levels).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .. import data as datasets
from .. import decoding, distributed, runs
from ..checkpoint import (
    Checkpoint,
    config_from_dict,
    load_checkpoint,
    resolve_checkpoint,
    save_figure,
)
from ..layers import STACKS
from ..trainer import Trainer, TrainerConfig, resolve_device
from .sequences import BucketBatches, _positive_int, own_share

KIND = "pixels"
PROBE_SIZE = 16  # validation images on which gradients through time are measured
PathLike = str | os.PathLike


# -- settings ------------------------------------------------------------------------------


@dataclass
class PixelConfig:
    """The model: what a checkpoint needs to rebuild it."""

    cell: Literal["lstm", "gru", "rnn"] = "lstm"  # the cell of both recurrences (rnn: tanh)
    hidden_size: int = 256  # units of the pixel RNN (along a row)
    row_size: int = 256  # units of the row RNN (down the image)
    num_layers: int = 1  # layers of the pixel RNN
    embedding_size: int = 16  # the vector of the pixel to the left
    window: int = 3  # pixels of the row above read on each side of the column (0: just it)
    column_size: int = 32  # the per-column vector read from the rows above
    dropout: float = 0.0  # between the pixel RNN's layers and before the output
    levels: int = 0  # values a pixel takes (0: the data's: 2 binarised, 256 grey)

    def __post_init__(self) -> None:
        if self.cell not in STACKS:
            raise ValueError(f"Argument `cell` must be one of {sorted(STACKS)}, got {self.cell!r}")
        for name in ("hidden_size", "row_size", "num_layers", "embedding_size", "column_size"):
            _positive_int(name, getattr(self, name))
        if not isinstance(self.window, int) or self.window < 0:
            raise ValueError(f"Argument `window` must be an integer >= 0, got {self.window!r}")
        if not isinstance(self.levels, int) or self.levels == 1 or self.levels < 0:
            raise ValueError(
                f"Argument `levels` must be 0 (the data's) or at least 2, got {self.levels!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Argument `dropout` must lie in [0, 1), got {self.dropout!r}")


@dataclass
class TrainConfig:
    """One training run."""

    epochs: float = 20.0  # passes over the training images (fractions allowed)
    minutes: float | None = None  # train this long instead (evaluation not counted)
    batch_size: int = 32  # images per batch
    lr: float = 2e-3  # peak Adam learning rate
    schedule: Literal["constant", "cosine", "linear"] = "linear"  # decay after warm-up
    warmup_steps: int = 100  # at most a tenth of the run
    min_lr_ratio: float = 0.05  # the decay ends at lr * min_lr_ratio
    clip_norm: float = 1.0  # the gradient norm is clipped to this
    # evaluate, keep as best and test the exponential moving average of the weights with
    # this decay (0.999: about the last thousand steps) instead of the last step's
    ema: float | None = None
    val_fraction: float = 0.1  # of the training images held out for validation
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
        if not 0.0 < self.val_fraction < 0.5:
            raise ValueError(
                f"Argument `val_fraction` must lie in (0, 0.5), got {self.val_fraction!r}"
            )

    def trainer_config(self, steps_per_epoch: int) -> TrainerConfig:
        return runs.epoch_trainer_config(self, steps_per_epoch)


# -- the model -----------------------------------------------------------------------------


class PixelRNN(nn.Module):
    """The raster-order model of the module docstring, for images of `shape` (H, W)
    whose pixels take ``config.levels`` values (>= 2).

    :meth:`forward`: images (B, H, W) int64 -> logits (B, H, W, K), K = 1 for two levels
    (the Bernoulli's logit) and K = levels otherwise; logit (i, j) reads only the pixels
    before (i, j) in raster order. :meth:`log_prob` sums them per image;
    :meth:`sample` and :meth:`complete` draw images.
    """

    def __init__(self, config: PixelConfig, shape: Sequence[int]):
        super().__init__()
        if config.levels < 2:
            raise ValueError("set the config's `levels` first (the data's number of values)")
        self.config = config
        self.shape = tuple(int(n) for n in shape)
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise ValueError(f"Argument `shape` must be (H, W), got {shape!r}")
        c = config
        H, W = self.shape
        self.levels = c.levels
        self.start_id = c.levels  # the "left of the first column" symbol
        self.rows = STACKS[c.cell](W, c.row_size, 1, batch_first=True)
        self.columns = nn.Linear(c.row_size, W * c.column_size)  # r_i -> c_i0 .. c_i(W-1)
        self.embedding = nn.Embedding(c.levels + 1, c.embedding_size)
        inputs = c.embedding_size + 2 * c.window + 1 + c.column_size
        self.pixels = STACKS[c.cell](
            inputs, c.hidden_size, c.num_layers, dropout=c.dropout, batch_first=True
        )
        self.init_state = nn.Linear(c.row_size, c.num_layers * c.hidden_size)  # r_i -> h_i,-1
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.hidden_size, 1 if c.levels == 2 else c.levels)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    # -- pieces -----------------------------------------------------------------------
    def check_images(self, images: Tensor, name: str = "images") -> Tensor:
        """int images (B, H, W) with values in [0, levels) -> int64 on the model's device;
        a ValueError naming the argument otherwise."""
        if images.dim() != 3 or tuple(images.shape[1:]) != self.shape:
            raise ValueError(
                f"Argument `{name}` must be (B, {self.shape[0]}, {self.shape[1]}) pixel "
                f"values, got shape {tuple(images.shape)}"
            )
        if images.is_floating_point():
            raise ValueError(
                f"Argument `{name}` must hold integer pixel values, got {images.dtype}"
            )
        if images.numel() and (int(images.min()) < 0 or int(images.max()) >= self.levels):
            raise ValueError(
                f"Argument `{name}`: pixel values must lie in [0, {self.levels}), got "
                f"[{int(images.min())}, {int(images.max())}]"
            )
        return images.long().to(self.device)

    def scaled(self, values: Tensor) -> Tensor:
        """Pixel values -> floats in [0, 1]."""
        return values.float() / (self.levels - 1)

    def row_summaries(self, rows_above: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """rows_above (B, T, W) ints, the rows each step reads -> r (B, T, R), new state."""
        out, state = self.rows(self.scaled(rows_above), state)
        return out, state

    def row_inputs(self, above: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        """For N rows: the row above (N, W) ints and the summary of all rows above (N, R)
        -> the window and column part of every pixel's input (N, W, 2k+1+C) and the
        pixel RNN's initial state (layer-first)."""
        k = self.config.window
        row = F.pad(self.scaled(above), (k, k))  # (N, W + 2k), 0 (black) outside
        window = row.unfold(1, 2 * k + 1, 1)  # (N, W, 2k+1)
        columns = self.columns(r).view(len(r), self.shape[1], -1)  # (N, W, C)
        h0 = torch.tanh(self.init_state(r)).view(len(r), self.config.num_layers, -1)
        h0 = h0.transpose(0, 1).contiguous()  # (L, N, H)
        state = (h0, torch.zeros_like(h0)) if self.config.cell == "lstm" else h0
        return torch.cat([window, columns], dim=-1), state

    def _logits(self, out: Tensor) -> Tensor:
        return self.head(self.drop(out))

    # -- training ---------------------------------------------------------------------
    def forward(self, images: Tensor) -> Tensor:
        """images (B, H, W) ints -> logits (B, H, W, K) (see the class docstring)."""
        x = self.check_images(images)
        B, (H, W) = len(x), self.shape
        blank = x.new_zeros(B, 1, W)
        above = torch.cat([blank, x[:, :-1]], dim=1)  # (B, H, W): row i-1 for row i
        r, _ = self.row_summaries(above)  # (B, H, R): r_i reads rows 0..i-1
        context, state = self.row_inputs(above.reshape(B * H, W), r.reshape(B * H, -1))
        start = x.new_full((B * H, 1), self.start_id)
        left = torch.cat([start, x.reshape(B * H, W)[:, :-1]], dim=1)  # (B*H, W)
        inputs = torch.cat([self.embedding(left), context], dim=-1)  # (B*H, W, I)
        out, _ = self.pixels(inputs, state)  # (B*H, W, Hs)
        return self._logits(out).view(B, H, W, -1)

    def pixel_nll(self, images: Tensor) -> Tensor:
        """-log p(x_ij | the pixels before it), in nats: (B, H, W)."""
        logits = self(images)
        x = images.long().to(logits.device)
        if self.levels == 2:
            return F.binary_cross_entropy_with_logits(logits[..., 0], x.float(), reduction="none")
        return F.cross_entropy(logits.permute(0, 3, 1, 2), x, reduction="none")

    def log_prob(self, images: Tensor) -> Tensor:
        """log p(x) of each image (B,), in nats."""
        return -self.pixel_nll(images).sum(dim=(1, 2))

    def loss(self, images: Tensor) -> Tensor:
        """Mean negative log-likelihood per pixel (nats)."""
        return self.pixel_nll(images).mean()

    # -- sampling ---------------------------------------------------------------------
    def _step(self, ids: Tensor, state: tuple) -> tuple[Tensor, tuple]:
        """:mod:`rnnkit.decoding`'s step along a row: the previous pixel (N,) -> the
        logits of the next one over the levels (N, levels), the new state."""
        rnn_state, context, j = state
        x = torch.cat([self.embedding(ids), context[:, j]], dim=-1)  # (N, I)
        out, rnn_state = self.pixels(x[:, None, :], rnn_state)
        logit = self._logits(out[:, 0])  # (N, K)
        if self.levels == 2:  # Bernoulli as a softmax over (0, logit): exactly the same
            logit = torch.cat([torch.zeros_like(logit), logit], dim=-1)
        return logit, (rnn_state, context, j + 1)

    @torch.no_grad()
    def complete(
        self,
        images: Tensor,
        keep_rows: int,
        *,
        temperature: float = 1.0,
        generator: Any = None,
        seed: int | None = None,
    ) -> Tensor:
        """The images (N, H, W) with their top `keep_rows` rows kept and the rest sampled
        pixel by pixel (all images in one batch); temperature 0 takes the likeliest value."""
        x = self.check_images(images).clone()
        N, (H, W) = len(x), self.shape
        if not isinstance(keep_rows, int) or not 0 <= keep_rows <= H:
            raise ValueError(
                f"Argument `keep_rows` must be an integer in [0, {H}], got {keep_rows!r}"
            )
        decoding.check_sampling(temperature=temperature)
        if generator is None and temperature > 0:
            generator = decoding.make_generator(seed, self.device)
        was = self.training
        self.eval()
        try:
            # r_i reads a blank row, then rows 0 .. i-1: for the first sampled row, all kept
            out, row_state = self.row_summaries(
                torch.cat([x.new_zeros(N, 1, W), x[:, :keep_rows]], 1)
            )
            r_i = out[:, -1]
            for i in range(keep_rows, H):
                if i > keep_rows:  # one more row read down: the one just sampled
                    out, row_state = self.row_summaries(x[:, i - 1 : i], row_state)
                    r_i = out[:, 0]
                previous = x[:, i - 1] if i > 0 else x.new_zeros(N, W)
                context, state = self.row_inputs(previous, r_i)
                first = x.new_full((N,), self.start_id)
                row = decoding.sample(
                    self._step, first, (state, context, 0), W,
                    temperature=temperature, generator=generator,
                )  # fmt: skip
                x[:, i] = row.tokens.to(x.device)
        finally:
            self.train(was)
        return x

    def sample(self, n: int, *, temperature: float = 1.0, seed: int | None = None) -> Tensor:
        """`n` images drawn from the model, (n, H, W) ints."""
        decoding.check_count("n", n, 1)
        blank = torch.zeros(n, *self.shape, dtype=torch.int64)
        return self.complete(blank, 0, temperature=temperature, seed=seed)


# -- data ----------------------------------------------------------------------------------


class ImageBatches(BucketBatches):
    """Shuffled batches of images (all of one size: the bucketing only shuffles), with
    the cursor of :class:`BucketBatches`, so a resumed run continues exactly."""

    def __init__(self, images: Tensor, batch_size: int, seed: int) -> None:
        super().__init__(_Images(images), batch_size, seed, _collate)


class _Images:
    def __init__(self, images: Tensor) -> None:
        self.images = images
        self.lengths = [1] * len(images)

    def __len__(self) -> int:
        return len(self.images)


def _collate(examples: _Images, idx: Sequence[int]) -> dict[str, Tensor]:
    return {"images": examples.images[torch.as_tensor(list(idx), dtype=torch.int64)]}


def read_npz(path: PathLike) -> tuple[dict[str, np.ndarray], int]:
    """A user's images: an ``.npz`` with ``train`` and ``test`` arrays of integer pixel
    values (N, H, W) of one size, and optionally ``levels`` (default: 2 when every value
    is 0 or 1, else 256). One-line errors name the file and what is wrong."""
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"Argument `images`: {path} is not a readable .npz file ({err})") from None
    for key in ("train", "test"):
        if key not in arrays:
            raise ValueError(f"Argument `images`: {path} has no {key!r} array (it has "
                             f"{sorted(arrays)})")  # fmt: skip
        a = arrays[key]
        if a.ndim != 3 or not len(a) or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"Argument `images`: {path}: {key!r} must be integer images "
                             f"(N, H, W), got {a.dtype} {a.shape}")  # fmt: skip
    if arrays["train"].shape[1:] != arrays["test"].shape[1:]:
        raise ValueError(
            f"Argument `images`: {path}: train images are "
            f"{arrays['train'].shape[1:]}, test ones {arrays['test'].shape[1:]}"
        )
    top = max(int(arrays["train"].max()), int(arrays["test"].max()))
    levels = int(arrays["levels"]) if "levels" in arrays else (2 if top <= 1 else 256)
    low = min(int(arrays["train"].min()), int(arrays["test"].min()))
    if levels < 2 or low < 0 or top >= levels:
        raise ValueError(f"Argument `images`: {path}: pixel values in [{low}, {top}] do not "
                         f"fit {levels} levels")  # fmt: skip
    return {"train": arrays["train"], "test": arrays["test"]}, levels


def load_images(
    data: str | None, val_fraction: float, log: Callable[[str], None] = print,
    images: PathLike | None = None,
) -> tuple[dict[str, Tensor], int]:  # fmt: skip
    """The train, val and test images (uint8 (N, H, W)) of built-in set `data`, or of the
    user's `.npz` file `images` (:func:`read_npz`), and the number of values a pixel
    takes; val is the last `val_fraction` of the training images."""
    if (data is None) == (images is None):
        raise ValueError("give either a built-in set (`data`) or an .npz file (`images`)")
    if data is not None:
        splits, levels = datasets.get(data, KIND).splits(log), datasets.PIXEL_LEVELS[data]
    else:
        splits, levels = read_npz(images)
    train = splits["train"]
    n_val = max(1, int(round(len(train) * val_fraction)))
    if len(train) - n_val < 1:
        raise ValueError(f"{data or images}: {len(train)} training images, too few to hold "
                         "out validation ones")  # fmt: skip
    out = {
        "train": train[:-n_val],
        "val": train[-n_val:],
        "test": splits["test"],
    }
    dtype = np.uint8 if levels <= 256 else np.int64
    return {
        k: torch.from_numpy(np.ascontiguousarray(v, dtype=dtype)) for k, v in out.items()
    }, levels


# -- metrics -------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: PixelRNN, images: Tensor, batch_size: int = 256) -> dict[str, float]:
    """Negative log-likelihood of `images` (sharded under torchrun, reduced): ``loss``
    per pixel (nats), ``nats_per_image`` and ``bits_per_dim``."""
    was = model.training
    model.eval()
    idx = list(distributed.shard(list(range(len(images)))))
    total = 0.0
    try:
        for s in range(0, len(idx), batch_size):
            batch = images[torch.as_tensor(idx[s : s + batch_size], dtype=torch.int64)]
            total += float(-model.log_prob(batch).sum())
    finally:
        model.train(was)
    total, n = distributed.sum_floats(total, float(len(idx)))
    pixels = model.shape[0] * model.shape[1]
    return {
        "loss": total / (n * pixels),
        "nats_per_image": total / n,
        "bits_per_dim": total / (n * pixels * math.log(2)),
    }


def format_metrics(m: dict[str, float]) -> str:
    return f"{m['nats_per_image']:.2f} nats per image, {m['bits_per_dim']:.4f} bits per dimension"


def spread(n: int, k: int) -> Tensor:
    """`k` indices spread evenly over `n` items (the built-in test sets come in class
    order: the first ones would all be zeros)."""
    return torch.from_numpy(np.unique(np.linspace(0, n - 1, min(k, n)).astype(np.int64)))


# -- pictures ------------------------------------------------------------------------------


def grid_png(
    path: PathLike, originals: Tensor, kept: Tensor, completions: Tensor, levels: int,
    keep_rows: int,
) -> Path:  # fmt: skip
    """A PNG grid, a row per image: the original, the kept part (the rest grey), then its
    completions. originals and kept (N, H, W), completions (N, S, H, W), pixel values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    N, S = completions.shape[:2]
    fig, axes = plt.subplots(N, S + 2, figsize=(1.1 * (S + 2), 1.1 * N + 0.4), squeeze=False)
    for n in range(N):
        shown = kept[n].float().clone() / (levels - 1)
        shown[keep_rows:] = 0.5
        pictures = [originals[n].float() / (levels - 1), shown]
        pictures += [completions[n, s].float() / (levels - 1) for s in range(S)]
        for k, picture in enumerate(pictures):
            ax = axes[n, k]
            ax.imshow(picture.cpu().numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if n == 0:
                title = ["original", f"top {keep_rows} rows"][k] if k < 2 else f"sample {k - 1}"
                ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


# -- training ------------------------------------------------------------------------------


def make_step_fn() -> Callable:
    def step_fn(model: PixelRNN, batch: dict[str, Tensor]):
        images = batch["images"]
        return model.loss(images), {"items": int(images.numel())}

    return step_fn


def train(
    out: PathLike,
    config: PixelConfig | None = None,
    train_config: TrainConfig | None = None,
    *,
    data: str | None = None,
    images: PathLike | None = None,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> tuple[PixelRNN, dict]:
    """Train a pixel model into run directory `out` on built-in set `data` (default
    mnist-binary) or the user's `.npz` file `images` (:func:`read_npz`); ``best/``
    keeps the lowest validation loss; at the end its NLL on the test images goes to
    ``results.json`` and a grid of test completions to ``completions.png``.
    ``resume=True`` continues from ``out/latest``."""
    out, ckpt = runs.start_run(out, resume, KIND, log=log)
    if ckpt is not None:
        config = config_from_dict(PixelConfig, ckpt.meta["model"])
        train_config = config_from_dict(TrainConfig, ckpt.meta["train"])
        data, images = ckpt.meta["data"].get("data"), ckpt.meta["data"].get("images")
    if data is None and images is None:
        data = "mnist-binary"
    config, train_config = config or PixelConfig(), train_config or TrainConfig()
    if progress is not None:
        train_config.progress = progress
    with distributed.main_first():  # under torchrun: rank 0 fetches once
        sets, levels = load_images(data, train_config.val_fraction, log, images)
    where = data or str(images)
    if config.levels == 0:
        config = replace(config, levels=levels)
    elif config.levels != levels:
        raise ValueError(f"Argument `levels`: {where} has {levels} levels, got {config.levels}")
    shape = tuple(sets["train"].shape[1:])
    runs.seed_everything(train_config.seed)
    model = PixelRNN(config, shape)
    if ckpt is not None:
        model.load_state_dict(ckpt.model_state)
    device = resolve_device(train_config.device)
    model.to(device)
    batches = ImageBatches(sets["train"], train_config.batch_size, train_config.seed)
    trainer = Trainer(
        train_config.trainer_config(len(batches)), model, own_share(make_step_fn()),
        train_batches=batches, eval_fn=lambda m: evaluate(m, sets["val"]),
    )  # fmt: skip
    trainer.items_name = "pixels"
    trainer.add_extra_state("data", batches.state_dict, batches.load_state_dict)
    trainer.add_callback(
        "on_eval",
        lambda t, m: log(
            f"epoch {t.step / len(batches):.2f} (step {t.step}): validation {format_metrics(m)}"
        ),  # fmt: skip
    )
    meta = {
        "kind": KIND, "model": asdict(config), "shape": list(shape), "train": asdict(train_config),
        "data": {"data": data} if data else {"images": str(Path(images).resolve())},
    }  # fmt: skip
    if ckpt is None:
        n_params = sum(p.numel() for p in model.parameters())
        sizes = ", ".join(f"{len(v):,} {k}" for k, v in sets.items())
        log(f"pixels {where}: {sizes} images of {shape[0]}x{shape[1]}, {levels} levels; "
            f"{describe(model, device)}; {n_params / 1e6:.2f} M parameters")  # fmt: skip
    best = runs.KeepBest(out, meta, metric="loss")
    probe = runs.batch_probe(make_step_fn(), probe_batch(sets["val"]), device)
    runs.fit(trainer, out, meta, best=best, resume_from=ckpt, probe=probe, log=log)
    model = load(out / "best", device=device)
    results = {split: evaluate(model, sets[split]) for split in ("val", "test")}
    for split, m in results.items():
        log(f"{split}: {format_metrics(m)}")
    if distributed.is_main():
        test = sets["test"][spread(len(sets["test"]), 8)]
        keep = shape[0] // 2
        completions = torch.stack(
            [model.complete(test, keep, seed=s) for s in range(4)], dim=1
        )  # (8, 4, H, W)
        path = grid_png(out / "completions.png", test, test, completions.cpu(), levels, keep)
        log(f"test completions: {path}")
    results["train"] = {"steps": trainer.step, "minutes": trainer.train_s / 60,
                        "best_step": best.best["step"]}  # fmt: skip
    runs.write_results(out, results)
    return model, results


def probe_batch(images: Tensor, batch_size: int = PROBE_SIZE) -> dict[str, Tensor]:
    """The first `batch_size` of `images` as a training batch: what gradients through time
    are measured on (the row RNN's 28 steps down, the pixel RNN's 28 along each row)."""
    return _collate(_Images(images), range(min(batch_size, len(images))))


def gradient_probe(
    model: PixelRNN, *, batch_size: int = PROBE_SIZE, log: Callable[[str], None] = print
) -> Callable[[PixelRNN], Tensor]:
    """The run's training loss on its first `batch_size` validation images (``rnnkit
    gradients RUN``), held out as in training."""
    source, train = model.meta["data"], model.meta["train"]
    sets, _ = load_images(source.get("data"), train["val_fraction"], log, source.get("images"))
    return runs.batch_probe(make_step_fn(), probe_batch(sets["val"], batch_size), model.device)


def describe(model: PixelRNN, device: torch.device) -> str:
    c = model.config
    return (
        f"row {c.cell.upper()} {c.row_size} ({model.rows.backend(device)}) -> "
        f"{c.num_layers}x{c.hidden_size} pixel {c.cell.upper()} ({model.pixels.backend(device)}), "
        f"window {2 * c.window + 1}, "
        + ("Bernoulli outputs" if c.levels == 2 else f"{c.levels}-way softmax")
    )


def load(path: PathLike, *, device: str | torch.device = "cpu") -> PixelRNN:
    """The :class:`PixelRNN` saved at `path` (a run directory or checkpoint), in eval mode."""
    ckpt: Checkpoint = load_checkpoint(resolve_checkpoint(path), expected_kind=KIND)
    model = PixelRNN(config_from_dict(PixelConfig, ckpt.meta["model"]), ckpt.meta["shape"])
    model.load_state_dict(ckpt.model_state)
    model.meta = ckpt.meta
    return model.to(device).eval()


def read_image(model: PixelRNN, path: PathLike) -> Tensor:
    """An image file as the model's pixel values (1, H, W): grey, of exactly the model's
    size (a one-line error otherwise), quantised to its levels (binarised at one half)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            grey = np.asarray(im.convert("L"))
    except (OSError, UnidentifiedImageError) as err:
        raise ValueError(f"Argument `image`: {path} is not a readable image ({err})") from None
    if grey.shape != model.shape:
        raise ValueError(
            f"Argument `image`: {path} is {grey.shape[0]}x{grey.shape[1]} pixels; this model "
            f"reads {model.shape[0]}x{model.shape[1]}"
        )
    values = np.rint(grey.astype(np.float64) / 255.0 * (model.levels - 1)).astype(np.int64)
    return torch.from_numpy(values)[None]


def eval_report(model: PixelRNN, *, data: str | None = None, log: Callable = print) -> str:
    """``rnnkit eval`` of a pixel model: its negative log-likelihood on the test images of
    its own data (or of built-in set `data`, whose images must be of its size)."""
    source = getattr(model, "meta", {}).get("data", {})
    images = None if data else source.get("images")
    data = data or source.get("data")
    sets, levels = load_images(data, 0.1, log, images)
    test = sets["test"]
    if levels != model.levels or tuple(test.shape[1:]) != model.shape:
        raise ValueError(
            f"Argument `data`: {data or images} holds {tuple(test.shape[1:])} images of "
            f"{levels} levels; this model reads {model.shape} of {model.levels}"
        )
    return f"{data or images} (test, {len(test):,} images): {format_metrics(evaluate(model, test))}"
