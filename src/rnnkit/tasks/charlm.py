"""Character-level language models: the lectures' flagship application, end to end.

A :class:`CharLM` reads characters and predicts the next one::

    ids (B, T) -> embedding (B, T, E) -> stacked LSTM/GRU/RNN (B, T, H) -> dropout
               -> linear (B, T, V) = logits of the next character

trained on B parallel streams through the text with truncated BPTT that carries the
hidden state from window to window (char-rnn's scheme). The loss is the cross-entropy
in nats per character; bits per character are nats / ln 2.

Everything a user does with one lives here: :class:`CharLMConfig` (the model) and
:class:`TrainConfig` (the run), :class:`StreamBatches` (the data with a resumable
cursor), :func:`train` (through the model-agnostic :class:`rnnkit.Trainer`),
:meth:`CharLM.sample` / :meth:`CharLM.generate` (streamed, batched, temperature,
top-k, top-p) and :meth:`CharLM.complete` (the k most likely ends of a word), both
through :mod:`rnnkit.decoding`, :meth:`CharLM.score` (bits per character) and :func:`load`.

A run directory holds::

    RUN/latest/       checkpoint of the last save (weights, optimizer, RNG, data cursor,
                      carried hidden state) -- what ``--resume`` continues from
    RUN/best/         weights of the best validation loss so far
    RUN/metrics.csv   one row per log record and per evaluation
    RUN/loss.png      training and validation loss against characters seen
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .. import data as datasets
from .. import decoding, distributed, runs
from .._stepper import LMStepper
from ..backends import native_bf16
from ..cells import LSTMCell
from ..checkpoint import Checkpoint, config_from_dict, load_checkpoint, resolve_checkpoint
from ..data.corpora import (
    Vocab,
    cache_dir,
    encode_to_memmap,
    iter_text_chunks,
    load_shakespeare,
    release_pages,
    split_by_position,
)
from ..layers import BACKENDS, STACKS, State
from ..metrics import entropy
from ..tbptt import CarriedState, SyntheticGradients
from ..trainer import Trainer, TrainerConfig, resolve_device

KIND = "charlm"
PathLike = str | os.PathLike
PRECISIONS = ("auto", "fp32", "bf16")
MAX_HELD_CHARS = 100_000_000  # what sample() collects in memory at most
# a batch's mean loss above this many times a uniform guess's ln(V) nats per character
# (the mean over B x T characters) only comes from a diverged run: it stops there
MAX_LOSS_UNIFORMS = 20
PROBE_SIZE = 16  # validation windows on which gradients through time are measured
RELEASE_EVERY = 256  # windows read between drops of the memory-mapped text's pages


# -- configuration ----------------------------------------------------------------------


@dataclass
class CharLMConfig:
    """The model: what a checkpoint needs to rebuild it (besides the vocabulary)."""

    cell: Literal["lstm", "gru", "rnn"] = "lstm"  # the recurrent cell (rnn: tanh)
    num_layers: int = 1  # stacked layers; one wide layer beat 2x256 and 2x320 when tuned
    hidden_size: int = 512  # units per layer
    embedding_size: int = 64  # 0: one-hot inputs (input_size = vocabulary size)
    dropout: float = 0.0  # between layers and before the output layer, while training
    init: str | None = None  # a scheme of rnnkit.init, e.g. orthogonal (unset: torch's)

    def __post_init__(self) -> None:
        if self.cell not in STACKS:
            raise ValueError(
                f"CharLMConfig `cell` must be one of {sorted(STACKS)}, got {self.cell!r}"
            )
        for name in ("num_layers", "hidden_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"CharLMConfig `{name}` must be a positive integer, got {v!r}")
        if not isinstance(self.embedding_size, int) or self.embedding_size < 0:
            raise ValueError(
                "CharLMConfig `embedding_size` must be an integer >= 0, "
                f"got {self.embedding_size!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"CharLMConfig `dropout` must lie in [0, 1), got {self.dropout!r}")


@dataclass
class TrainConfig:
    """One training run. The defaults are the tuned ones of the README's benchmark."""

    batch_size: int = 64  # parallel streams through the text
    seq_len: int = 64  # characters per truncated-BPTT window
    steps: int = 4000  # optimizer steps (ignored when minutes is set)
    minutes: float | None = None  # train this long instead (eval not counted); steps follow
    lr: float = 1.5e-2  # peak Adam learning rate
    schedule: Literal["constant", "cosine", "linear"] = "linear"  # decay after warm-up
    warmup_steps: int = 50  # linear warm-up of the learning rate
    min_lr_ratio: float = 0.0  # the decay ends at lr * min_lr_ratio
    weight_decay: float = 0.0  # on matrices and embeddings, not biases
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's moment decay rates
    clip_norm: float = 1.0  # the gradient norm is clipped to this
    # evaluate, keep as best and test the exponential moving average of the weights with
    # this decay (0.999: about the last thousand steps) instead of the last step's
    ema: float | None = None
    val_fraction: float = 0.1  # the last part of the text, by position
    eval_every: int = 500  # steps; 0: only at the end
    eval_chars: int = 1_000_000  # validation characters per evaluation (its start); 0: all
    checkpoint_every: int = 500  # steps; 0: only at the end
    log_every: int = 20  # steps between log records (metrics.csv, progress bar)
    seed: int = 1234  # initialisation and data order
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA where available
    # "bf16": the forward pass under torch.autocast in bfloat16 (weights, optimizer and
    # loss stay float32); "auto": bf16 where the CPU has native bfloat16 arithmetic
    # (AVX512-BF16 or AMX) and the layers run torch's fused kernel, else "fp32"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    progress: bool = True  # a progress bar with loss, bits per character and speed
    nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/inf loss: stop there, or skip the batch
    # a learned dL_future/dh injected at each window's end (decoupled neural interfaces,
    # rnnkit.tbptt.SyntheticGradients): the gradient truncation cuts, predicted
    synthetic_gradients: bool = False
    synthetic_lr: float = 1e-4  # the synthetic-gradient module's own Adam rate
    synthetic_scale: float = 0.1  # the factor on the synthetic gradient where it is added

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"Argument `precision` must be one of {PRECISIONS}, got {self.precision!r}"
            )
        for name in ("batch_size", "seq_len", "steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Argument `{name}` must be a positive integer, got {v!r}")
        if self.minutes is not None and not (
            isinstance(self.minutes, (int, float)) and self.minutes > 0
        ):
            raise ValueError(f"Argument `minutes` must be a positive number, got {self.minutes!r}")
        if not self.synthetic_scale > 0:
            raise ValueError(
                f"Argument `synthetic_scale` must be positive, got {self.synthetic_scale!r}"
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(
                f"Argument `val_fraction` must lie in (0, 1), got {self.val_fraction!r}"
            )

    def trainer_config(self) -> TrainerConfig:
        steps = self.steps  # exactly these many (a short run's warm-up is cut to fit)
        return TrainerConfig(
            max_steps=steps,
            lr=self.lr,
            optimizer="adam",
            weight_decay=self.weight_decay,
            betas=tuple(self.betas),
            schedule=self.schedule,
            warmup_steps=min(self.warmup_steps, steps),
            min_lr_ratio=self.min_lr_ratio,
            clip_norm=self.clip_norm,
            eval_every=self.eval_every,
            log_every=self.log_every,
            checkpoint_every=self.checkpoint_every,
            progress=self.progress,
            device=self.device,
            max_minutes=self.minutes,
            nonfinite=self.nonfinite,
            ema=self.ema,
        )


# -- the model -----------------------------------------------------------------------------


class CharLM(nn.Module):
    """Embedding -> stacked recurrent layers -> linear, over a character vocabulary.

    Args:
        config: the architecture.
        vocab: the characters; ``len(vocab)`` is the output size.
    """

    def __init__(self, config: CharLMConfig, vocab: Vocab) -> None:
        super().__init__()
        self.config = config
        self.vocab = vocab
        V, E, H = len(vocab), config.embedding_size, config.hidden_size
        self.embedding = nn.Embedding(V, E) if E else None
        self.rnn = STACKS[config.cell](
            E or V, H, config.num_layers, dropout=config.dropout, batch_first=True, init=config.init
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(H, V)  # y_t = W_hy h_t + b_y

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def embed(self, ids: Tensor) -> Tensor:
        """ids (...,) -> inputs (..., E), or one-hot (..., V) when embedding_size is 0."""
        if self.embedding is None:
            return F.one_hot(ids, self.vocab_size).to(self.head.weight.dtype)
        return self.embedding(ids)

    def forward(self, ids: Tensor, state: State | None = None, *, return_internals: bool = False):
        """ids (B, T) int64 -> logits (B, T, V), final state [, per-layer internals]."""
        if ids.dim() != 2:
            raise ValueError(f"Argument `ids` must be (B, T), got shape {tuple(ids.shape)}")
        out = self.rnn(self.embed(ids), state, return_internals=return_internals)
        logits = self.head(self.drop(out[0]))  # (B, T, V)
        return (logits, out[1], out[2]) if return_internals else (logits, out[1])

    # -- text in, text out ------------------------------------------------------------------
    def encode(self, text: str, *, argument: str = "text") -> Tensor:
        """(len(text),) int64 ids; ValueError naming `argument` and unknown characters."""
        try:
            return torch.from_numpy(self.vocab.encode(text).astype(np.int64))
        except ValueError as err:
            raise ValueError(f"Argument `{argument}`: {err}") from None

    @torch.no_grad()
    def score(self, text: str, *, batch_size: int = 16, window: int = 256) -> dict[str, float]:
        """Cross-entropy of the model on `text`: ``nats_per_char``, ``bits_per_char``.

        The text is cut into `batch_size` streams read in windows of `window`
        characters, the state carried across windows (as in training); every
        character but each stream's first is predicted.
        """
        ids = self.encode(text)
        if len(ids) < 2:
            raise ValueError(f"Argument `text` needs at least 2 characters, got {len(ids)}")
        return evaluate(self, ids.numpy(), batch_size=batch_size, window=window)

    # -- generation: through rnnkit.decoding -----------------------------------------------
    def stepper(self) -> LMStepper:
        """The fast one-character step :mod:`rnnkit.decoding` runs (weights read now)."""
        return LMStepper(self.embed, self.vocab_size, self.rnn, self.head)

    def _start(self, text: str, argument: str) -> Tensor:
        """The ids of `text`, or of a newline (else the vocabulary's first character)
        when it is empty: where generation starts."""
        if not text:
            text = "\n" if "\n" in self.vocab.index else self.vocab.chars[0]
        return self.encode(text, argument=argument)

    def generate(
        self,
        prime: str = "",
        length: int = 200,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        num: int | None = None,
        seed: int | None = None,
    ) -> Iterator[list[str]]:
        """Yield the next character of each of `num` streams, `length` times.

        The prime is read by the model's forward pass in one call; then
        :func:`rnnkit.decoding.decode` runs the lecture's loop (scores / T -> softmax ->
        draw -> feed back) on the fastest step for `num` streams (:class:`LMStepper`).

        Args:
            prime: text that starts every stream; "" starts from a newline (or, in a
                vocabulary without one, its first character).
            temperature: logits are divided by it; 0 takes the most likely character
                (greedy, deterministic).
            top_k: sample among the k most likely characters only.
            top_p: sample from the smallest set of characters holding probability p.
            num: streams, sampled together as one batch (default 1).
            seed: seeds a private generator, so the same seed gives the same text;
                None draws from the global RNG.
        """
        n = 1 if num is None else num
        decoding.check_count("length", length, 0)
        decoding.check_count("num", n, 1)
        decoding.check_sampling(temperature=temperature, top_k=top_k, top_p=top_p)
        prime_ids = self._start(prime, "prime")
        pick = partial(decoding.next_token, temperature=temperature, top_k=top_k, top_p=top_p)
        return self._generate(prime_ids, length, n, pick, seed)

    @torch.inference_mode()
    def _generate(
        self, prime_ids: Tensor, length: int, num: int, pick: Callable, seed: int | None
    ) -> Iterator[list[str]]:
        was_training = self.training
        self.eval()
        try:
            device = self.head.weight.device
            ids = prime_ids.to(device).expand(num, -1)  # (N, P)
            stepper = self.stepper()
            states = stepper.read(ids[:, :-1])
            step, last, states = stepper.prepare(ids[:, -1].contiguous(), states)
            pick = partial(pick, generator=decoding.make_generator(seed, device))
            chars = self.vocab.chars
            for nxt in decoding.decode(step, last, states, length, pick):  # (N,)
                yield [chars[i] for i in nxt.tolist()]
        finally:
            self.train(was_training)

    def sample(self, prime: str = "", length: int = 200, **kwargs: Any) -> str | list[str]:
        """`length` sampled characters after `prime` (the prime not included).

        Keyword arguments as for :meth:`generate`. Returns a string, or a list of
        `num` strings when ``num`` is given.
        """
        num = kwargs.get("num")
        if isinstance(num, int) and isinstance(length, int) and num * length > MAX_HELD_CHARS:
            raise ValueError(
                f"Arguments `num` x `length` = {num * length:,} characters would be held in "
                f"memory (at most {MAX_HELD_CHARS:,}); stream them with generate() instead "
                "(the CLI streams one stream at a time: --num 1)"
            )
        chunks = [[] for _ in range(num or 1)]
        for step in self.generate(prime, length, **kwargs):
            for i, ch in enumerate(step):
                chunks[i].append(ch)
        texts = ["".join(c) for c in chunks]
        return texts if num is not None else texts[0]

    @torch.inference_mode()
    def complete(
        self,
        prefix: str,
        k: int = 5,
        *,
        max_length: int = 20,
        stops: Sequence[str] | None = None,
        beam_size: int | None = None,
    ) -> list[tuple[str, float]]:
        """The lecture's spelling completion: the k most likely continuations of
        `prefix` up to a stop character, with their probabilities.

        A continuation ends where the model emits a stop character; its probability
        is that of its characters times that of stopping after them. Found by beam
        search (:func:`rnnkit.decoding.complete`) over at most `max_length`
        characters before the stop.

        Args:
            prefix: the text so far ("" starts after a newline, as :meth:`generate`).
            k: continuations returned, most likely first (fewer when fewer stop
                within `max_length`).
            stops: the stop characters; default a space and a newline (those of the
                vocabulary).
            beam_size: prefixes the search keeps (default `k`).

        Returns:
            ``[(continuation, probability), ...]``, the stop character not included.
        """
        decoding.check_count("k", k, 1)
        decoding.check_count("max_length", max_length, 0)
        if stops is None:
            stops = [c for c in (" ", "\n") if c in self.vocab.index]
        if isinstance(stops, str) or not stops or any(len(c) != 1 for c in stops):
            raise ValueError(f"Argument `stops` must be a list of single characters, got {stops!r}")
        stop_ids = self.encode("".join(stops), argument="stops").tolist()
        prefix_ids = self._start(prefix, "prefix")
        was_training = self.training
        self.eval()
        try:
            ids = prefix_ids.to(self.head.weight.device)[None]  # (1, P)
            stepper = self.stepper()
            states = stepper.read(ids[:, :-1])
            (found,) = decoding.complete(
                stepper.step, ids[:, -1], states, stop_ids,
                k=k, max_length=max_length, beam_size=beam_size,
            )  # fmt: skip
        finally:
            self.train(was_training)
        return [(self.vocab.decode(h.tokens), math.exp(h.log_prob)) for h in found]


# -- evaluation ------------------------------------------------------------------------------


def stream_starts(n: int, batch_size: int) -> tuple[int, int]:
    """(stream length, batch size) for cutting n characters into parallel streams."""
    batch_size = max(1, min(batch_size, n - 1))
    return (n - 1) // batch_size, batch_size


@torch.no_grad()
def evaluate(
    model: CharLM,
    ids: np.ndarray,
    *,
    batch_size: int = 16,
    window: int = 256,
    target: Callable[[Tensor], Tensor] | None = None,
) -> dict[str, float]:
    """Mean cross-entropy of `model` over the id array `ids` (any integer dtype).

    `batch_size` streams, each read left to right in windows of `window` steps with the
    state carried over; the few characters left over after cutting are skipped.
    `target` maps the ids that follow to the ids to predict, for streams whose ids carry
    more than the token (a word model's label, :mod:`.wordlm`); default: the ids.
    """
    was_training = model.training
    model.eval()
    device = model.head.weight.device
    L, B = stream_starts(len(ids), batch_size)
    total, count, state = 0.0, 0, None
    streams = distributed.shard(range(B))  # under torchrun each rank reads its share
    try:
        for k, start in enumerate(range(0, L, window) if streams else ()):
            if k % RELEASE_EVERY == RELEASE_EVERY - 1:
                release_pages(ids)  # keep memory flat over a long memory-mapped text
            end = min(start + window, L)
            # one window of every stream, read from `ids` (a memmap stays on disk)
            rows = np.stack([ids[b * L + start : b * L + end + 1] for b in streams])
            chunk = torch.from_numpy(rows.astype(np.int64)).to(device)  # (B, w+1)
            x, y = chunk[:, :-1], chunk[:, 1:]
            y = y if target is None else target(y)
            logits, state = model(x, state)
            total += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum"))
            count += y.numel()
    finally:
        model.train(was_training)
    total, count = distributed.sum_floats(total, count)
    nats = total / count
    return {"nats_per_char": nats, "bits_per_char": nats / math.log(2), "chars": float(count)}


def score_file(
    model: CharLM, path: PathLike, *, batch_size: int = 16, window: int = 256
) -> dict[str, float]:
    """:func:`evaluate` on a UTF-8 file of any size, plus its unigram entropy.

    The file is decoded and encoded chunk by chunk into a temporary id file that is
    then memory-mapped, so memory stays flat however big the file (reading it whole
    as a str would take 1-4 bytes per character, and the ids as many again).
    Returns ``nats_per_char``, ``bits_per_char``, ``chars`` (characters predicted),
    ``text_chars`` and ``unigram_nats`` (the entropy of the file's character
    frequencies: what a model that ignores context reaches at best).
    """
    vocab = model.vocab
    counts = np.zeros(len(vocab), dtype=np.int64)
    n = 0
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="score-") as tmp:
        ids_path = Path(tmp) / "ids.bin"
        with open(ids_path, "wb") as f:
            for chunk in iter_text_chunks(path):
                try:
                    ids = vocab.encode(chunk)
                except ValueError as err:
                    raise ValueError(f"Argument `text` ({path}): {err}") from None
                counts += np.bincount(ids, minlength=len(vocab))
                n += len(ids)
                f.write(ids.tobytes())
        if n < 2:
            raise ValueError(f"Argument `text` ({path}) needs at least 2 characters, got {n}")
        ids = np.memmap(ids_path, dtype=vocab.dtype, mode="r", shape=(n,))
        result = evaluate(model, ids, batch_size=batch_size, window=window)
        del ids
    return {**result, "text_chars": float(n), "unigram_nats": entropy(counts)}


# -- data -------------------------------------------------------------------------------------


class StreamBatches:
    """B parallel streams through a text, read in windows of T characters.

    The text (N ids) is cut into B equal streams of L = (N - 1) // B characters; call
    k returns window k mod W (W = L // T) of every stream as ``(x, y)``, (B, T) int64
    each, y the characters one step after x. Consecutive windows continue each stream,
    so the hidden state at the end of one is the right start for the next. When the
    windows wrap around, :attr:`epoch` increases and :attr:`wrapped` is True for that
    call (the carried state must be reset). The cursor is resumable through
    :meth:`state_dict`.

    Under torchrun each rank reads its own block of the B streams (:attr:`streams`; the
    processes must divide B) and never another's; the cursor is the same on every rank.
    """

    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int) -> None:
        n = len(ids)
        needed = batch_size * (seq_len + 1)  # at least one window of every stream
        if n < needed:
            raise ValueError(
                f"the training text has {n:,} characters, too short for one window of "
                f"batch_size={batch_size} streams x (seq_len={seq_len} + 1) = {needed:,}; "
                "use a longer text or lower --batch-size / --seq-len"
            )
        self.ids = ids
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.stream_len = (n - 1) // batch_size
        self.windows = self.stream_len // seq_len
        self.streams = distributed.split_evenly(batch_size, "batch_size")  # this rank's
        self.cursor = 0  # the next window
        self.epoch = 0
        self.wrapped = False

    def __call__(self) -> tuple[Tensor, Tensor]:
        T, L = self.seq_len, self.stream_len
        k = self.cursor % self.windows
        self.wrapped = k == 0 and self.cursor > 0
        if self.wrapped:
            self.epoch += 1
        self.cursor += 1
        if self.cursor % RELEASE_EVERY == 0:
            release_pages(self.ids)  # else an epoch leaves the whole text resident
        starts = np.asarray(self.streams) * L + k * T
        rows = np.stack([self.ids[s : s + T + 1] for s in starts]).astype(np.int64)  # (b, T+1)
        chunk = torch.from_numpy(rows)
        return chunk[:, :-1], chunk[:, 1:]

    def state_dict(self) -> dict[str, int]:
        return {"cursor": self.cursor, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.cursor, self.epoch = int(state["cursor"]), int(state["epoch"])


@dataclass
class TextData:
    """The encoded text of a run: ids (memory-mapped), vocabulary, split, provenance."""

    ids: np.ndarray
    vocab: Vocab
    train: np.ndarray
    val: np.ndarray
    source: dict[str, Any] = field(default_factory=dict)


def load_data(
    *, text: PathLike | None = None, corpus: str | None = None, val_fraction: float = 0.1
) -> TextData:
    """Encode a text file or a named corpus (fetched on first use), memory-mapped.

    The encoding is cached under ``$RNNKIT_DATA/encoded``; a text of any size costs a
    bounded amount of memory (see :func:`rnnkit.data.corpora.encode_to_memmap`).
    """
    if (text is None) == (corpus is None):
        raise ValueError("give exactly one of `text` (a file) and `corpus` (a name)")
    if corpus is not None:
        path = datasets.get(corpus, "charlm").fetch()
        source = {"corpus": corpus}
    else:
        path = Path(text)
        if path.is_dir():
            raise ValueError(f"Argument `text`: {path} is a folder, not a text file")
        if not path.is_file():
            raise FileNotFoundError(f"Argument `text`: no such file: {path}")
        source = {"text": str(path.resolve())}
    ids, vocab = encode_to_memmap(path, cache_dir() / "encoded")
    train_ids, val_ids = split_by_position(ids, val_fraction)
    if len(val_ids) < 2:
        raise ValueError(
            f"{path} has {len(ids):,} characters: too short to hold out "
            f"val_fraction={val_fraction} of it for validation (needs at least 2 characters)"
        )
    if len(vocab) < 2:
        raise ValueError(
            f"{path} uses one character only ({vocab.chars[0]!r}): there is nothing to "
            "predict; a character model needs at least two distinct characters"
        )
    source["chars"] = int(len(ids))
    return TextData(ids, vocab, train_ids, val_ids, source)


# -- training ---------------------------------------------------------------------------------


def make_step_fn(
    batches: StreamBatches, carried: CarriedState, precision: str = "fp32"
) -> Callable:
    """One truncated-BPTT window per trainer step: the state carried in from the last
    window (detached at the edge), cross-entropy in nats per character."""
    bf16 = precision == "bf16"

    def step_fn(model: CharLM, batch: tuple[Tensor, Tensor]):
        x, y = batch  # (B, T) each
        if batches.wrapped:  # a new pass: the streams restart at their beginnings
            carried.reset()
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = carried(model, x)  # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        # the streams never end: every window's end gets the synthetic gradient
        return carried.loss(loss), {"items": y.numel(), "bpc": loss.detach() / math.log(2)}

    return step_fn


def resolve_precision(precision: str, model: CharLM, device: torch.device) -> str:
    """ "fp32" or "bf16" for `precision` ("auto", "fp32", "bf16") on `device`.

    "auto" picks bf16 only where it is measured to pay: a CPU with native bfloat16
    and layers on torch's fused kernel (oneDNN's bf16 LSTM: 1.3-1.6x the steps per
    second of float32 on an AVX512-BF16 CPU, benchmarks/bench_charlm_train.py). CUDA
    stays float32 under "auto" (not measured here); ask for "bf16" there.
    """
    fused = model.rnn.backend(device) == BACKENDS[0]
    if precision == "bf16" and not fused:
        raise ValueError(
            "Argument `precision`: 'bf16' needs layers on torch's fused kernel, but this "
            f"{model.config.cell.upper()} runs the {model.rnn.backend(device)} on {device.type}"
        )
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cpu" and fused and native_bf16(device) else "fp32"


def run_meta(config: CharLMConfig, vocab: Vocab, train: TrainConfig | None, source: dict) -> dict:
    return {
        "kind": KIND,
        "model": asdict(config),
        "vocab": vocab.to_dict(),
        "train": asdict(train) if train is not None else None,
        "data": source,
    }


def train(
    out: PathLike,
    config: CharLMConfig | None = None,
    train_config: TrainConfig | None = None,
    *,
    text: PathLike | None = None,
    corpus: str | None = None,
    resume: bool = False,
    steps: int | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> tuple[CharLM, Trainer]:
    """Train a character model into the run directory `out` (layout: module docstring).

    With ``resume=True`` the run continues from ``out/latest`` exactly where it stopped,
    with its own model, run configuration and data (``config``, ``text`` and ``corpus``
    are not used). `steps` (or ``train_config.steps``) extends it when it lies beyond
    the run's end (the steps a time budget decided, else its own); `progress` (or
    ``train_config.progress``) switches the progress bar.
    """
    out, ckpt = runs.start_run(out, resume, KIND, log=log)
    if ckpt is not None:
        meta = ckpt.meta
        config = config_from_dict(CharLMConfig, meta["model"])
        asked = train_config
        train_config = config_from_dict(TrainConfig, meta["train"])
        steps = steps if steps is not None else (asked.steps if asked is not None else None)
        end = ckpt.train_state.get("budget_steps") or train_config.steps
        if steps is not None and steps > end:  # extend the run, past any time budget
            train_config.steps, train_config.minutes = steps, None
        if progress is None and asked is not None:
            progress = asked.progress
        text, corpus = meta["data"].get("text"), meta["data"].get("corpus")
    config = config or CharLMConfig()
    train_config = train_config or TrainConfig()
    if progress is not None:
        train_config.progress = progress

    with distributed.main_first():  # under torchrun: rank 0 fetches and encodes once
        data = load_data(text=text, corpus=corpus, val_fraction=train_config.val_fraction)
    if ckpt is not None and Vocab.from_dict(ckpt.meta["vocab"]) != data.vocab:
        raise ValueError(
            f"the text at {text or corpus} changed since the run began (its vocabulary "
            "differs); cannot resume"
        )
    batches = StreamBatches(data.train, train_config.batch_size, train_config.seq_len)
    runs.seed_everything(train_config.seed)
    model = CharLM(config, data.vocab)
    device = resolve_device(train_config.device)
    carried = new_carried(train_config, model.rnn, device)
    val = data.val[: train_config.eval_chars] if train_config.eval_chars else data.val

    def eval_fn(m: CharLM) -> dict[str, float]:
        r = evaluate(m, val)
        return {"loss": r["nats_per_char"], "bpc": r["bits_per_char"]}

    # A resumed run keeps the precision it began with (what "auto" chose then), so that
    # its carried state and its numbers go on as they were.
    asked_precision = ckpt.meta.get("precision") if ckpt is not None else None
    precision = resolve_precision(asked_precision or train_config.precision, model, device)
    trainer_config = train_config.trainer_config()
    trainer_config.max_loss = MAX_LOSS_UNIFORMS * math.log(len(data.vocab))
    trainer = Trainer(
        trainer_config,
        model,
        make_step_fn(batches, carried, precision),
        train_batches=batches,
        eval_fn=eval_fn,
    )
    trainer.items_name, trainer.progress_keys = "chars", ["bpc"]
    trainer.add_extra_state("data", batches.state_dict, batches.load_state_dict)
    trainer.add_extra_state(*carried_state(carried, batches.streams, trainer))
    meta = run_meta(config, data.vocab, train_config, data.source)
    meta["precision"] = precision  # what "auto" chose on this machine

    def on_eval(t: Trainer, metrics: dict[str, float]) -> None:
        log(
            f"step {t.step}: val {metrics['loss']:.4f} nats/char, {metrics['bpc']:.4f} bits/char"
            f" ({t.step * batches.batch_size * batches.seq_len / 1e6:.2f} M chars seen)"
        )

    trainer.add_callback("on_eval", on_eval)
    if ckpt is None:
        n_params = sum(p.numel() for p in model.parameters())
        log(
            f"training a {config.num_layers}x{config.hidden_size} {config.cell.upper()} "
            f"({n_params / 1e6:.2f} M parameters) on {data.source.get('corpus') or text}: "
            f"{len(data.train):,} training and {len(data.val):,} validation characters, "
            f"vocabulary {len(data.vocab)}; backend {model.rnn.backend(device)}, "
            f"precision {precision}"
        )
    best = runs.KeepBest(out, meta, metric="loss")  # the lowest validation loss
    probe = probe_on(*probe_windows(data.val, PROBE_SIZE, train_config.seq_len, device))
    runs.fit(trainer, out, meta, best=best, resume_from=ckpt, probe=probe, log=log)
    trainer.keep_average()  # with --ema, the sample after training uses the average
    try:
        if distributed.is_main():
            plot_history(trainer.history, out / "loss.png", batches.batch_size * batches.seq_len)
    except Exception as err:  # a plot must never cost the run
        log(f"could not write the loss plot: {err}")
    return model, trainer


def probe_windows(
    ids: np.ndarray, batch_size: int, steps: int, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """x, y (B, steps): the first window of `batch_size` streams through `ids`, cut as
    the training streams are: what gradients through time are measured on."""
    L, B = stream_starts(len(ids), batch_size)
    steps = min(steps, L)
    rows = np.stack([np.asarray(ids[b * L : b * L + steps + 1]) for b in range(B)])
    chunk = torch.from_numpy(rows.astype(np.int64)).to(device)  # (B, steps + 1)
    return chunk[:, :-1], chunk[:, 1:]


def probe_on(x: Tensor, y: Tensor) -> Callable[[CharLM], Tensor]:
    """The cross-entropy of a model on the window x -> y, read from a zero state."""

    def probe(model: CharLM) -> Tensor:
        logits, _ = model(x)
        return F.cross_entropy(logits.flatten(0, 1), y.flatten())

    return probe


def gradient_probe(
    model: CharLM, *, batch_size: int = PROBE_SIZE, log: Callable[[str], None] = print
) -> Callable[[CharLM], Tensor]:
    """The run's loss on one training-length window of `batch_size` streams through its
    own validation text (``rnnkit gradients RUN``)."""
    source, train = model.meta["data"], model.meta["train"]
    data = load_data(text=source.get("text"), corpus=source.get("corpus"),
                     val_fraction=train["val_fraction"])  # fmt: skip
    if data.vocab != model.vocab:
        raise ValueError(f"the text at {source.get('text') or source.get('corpus')} changed "
                         "since the run was trained (its vocabulary differs)")  # fmt: skip
    device = model.head.weight.device
    return probe_on(*probe_windows(data.val, batch_size, train["seq_len"], device))


def new_carried(train_config: TrainConfig, rnn: nn.Module, device: torch.device) -> CarriedState:
    """The state carried across windows; with ``synthetic_gradients`` a
    :class:`~rnnkit.tbptt.SyntheticGradients` for the whole state of stack `rnn`."""
    if not train_config.synthetic_gradients:
        return CarriedState()
    if distributed.world_size() > 1:
        raise ValueError("Argument `synthetic_gradients`: they train in one process only")
    cells = [layer.cell for layer in rnn.layers]
    size = sum(c.hidden_size * (2 if isinstance(c, LSTMCell) else 1) for c in cells)
    synthetic = SyntheticGradients(size, lr=train_config.synthetic_lr,
                                   scale=train_config.synthetic_scale).to(device)  # fmt: skip
    return CarriedState(synthetic)


def carried_state(carried: CarriedState, streams: range, trainer: Trainer) -> tuple:
    """(name, get, set) of the trainer's extra state for the carried hidden state.

    Saved whole: under torchrun the ranks' (layers, b, H) blocks are gathered into
    (layers, B, H), and each rank takes back its own streams' rows, so a run resumes
    on any number of processes that divides B.
    """

    def get() -> dict:
        d = carried.state_dict()
        if distributed.world_size() > 1 and d["kind"] != "none":
            d["tensors"] = [distributed.gather_rows(t, 1) for t in d["tensors"]]
        return d

    def set_(d: dict) -> None:
        if d["kind"] != "none":
            d = {**d, "tensors": [t[:, streams.start : streams.stop] for t in d["tensors"]]}
        carried.load_state_dict(d, trainer.device)

    return "carried_state", get, set_


def plot_history(history: Sequence[dict], path: PathLike, chars_per_step: int) -> Path:
    """Training and validation loss (nats/char) against millions of characters seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..checkpoint import save_figure

    train_pts = [(r["step"], r["loss"]) for r in history if "loss" in r]
    val_pts = [(r["step"], r["eval_loss"]) for r in history if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    scale = chars_per_step / 1e6
    if train_pts:
        s, v = zip(*train_pts, strict=True)
        ax.plot([x * scale for x in s], v, lw=1, label="training (window mean)")
    if val_pts:
        s, v = zip(*val_pts, strict=True)
        ax.plot([x * scale for x in s], v, "o-", lw=1.5, label="validation")
    ax.set_xlabel("characters seen (millions)")
    ax.set_ylabel("cross-entropy (nats/char)")
    ax.grid(alpha=0.3)
    ax.legend()
    secondary = ax.secondary_yaxis(
        "right", functions=(lambda n: n / math.log(2), lambda b: b * math.log(2))
    )
    secondary.set_ylabel("bits/char")
    fig.tight_layout()
    return save_figure(fig, path)


# -- loading ----------------------------------------------------------------------------------


def load(path: PathLike, *, device: str | torch.device = "cpu") -> CharLM:
    """The :class:`CharLM` saved at `path` (see :func:`resolve_checkpoint`), in eval mode.

    Raises FileNotFoundError for a missing path and ValueError for anything that is not
    a character-model checkpoint.
    """
    ckpt: Checkpoint = load_checkpoint(resolve_checkpoint(path), expected_kind=KIND)
    model = CharLM(
        config_from_dict(CharLMConfig, ckpt.meta["model"]), Vocab.from_dict(ckpt.meta["vocab"])
    )
    model.load_state_dict(ckpt.model_state)
    model.meta = ckpt.meta
    return model.to(device).eval()


def eval_report(model: CharLM, *, text: PathLike | None = None, corpus: str | None = None) -> str:
    """``rnnkit eval`` of a character model: bits per character on a text file or a
    corpus, beside the unigram entropy of its characters (context ignored)."""
    if (text is None) == (corpus is None):
        raise ValueError("give the text to score: --text FILE or --corpus NAME")
    path = text if text is not None else datasets.get(corpus, "charlm").fetch()
    r = score_file(model, path)
    h1 = r["unigram_nats"]
    return (
        f"{path}: {int(r['text_chars']):,} characters\n"
        f"  model:   {r['nats_per_char']:.4f} nats/char  {r['bits_per_char']:.4f} bits/char\n"
        f"  unigram: {h1:.4f} nats/char  {h1 / math.log(2):.4f} bits/char "
        "(character frequencies alone)"
    )


def validation_text(model: CharLM, max_chars: int) -> tuple[str, str]:
    """(text, where it came from): the start of the model's own validation text (the
    last ``val_fraction`` of its training text, never trained on) when that text is at
    hand -- the run's text file, or its corpus when bundled or cached; otherwise the
    last `max_chars` characters of the bundled Shakespeare (which are the validation
    part of ``--corpus shakespeare`` runs). ``rnnkit inspect`` reads it by default."""
    meta = getattr(model, "meta", None) or {}
    source = meta.get("data") or {}
    val_fraction = (meta.get("train") or {}).get("val_fraction", 0.1)
    path = None
    if source.get("text") and Path(source["text"]).is_file():
        path = Path(source["text"])
    elif source.get("corpus") in datasets.names("charlm"):
        corpus = datasets.get(source["corpus"], "charlm")
        if corpus.bundled or corpus.is_cached():  # no download
            path = corpus.fetch()
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


def unigram_entropy(ids: np.ndarray, vocab_size: int) -> float:
    """Entropy in nats of the character frequencies of `ids`: what a model that
    ignores context can reach at best."""
    return entropy(np.bincount(np.asarray(ids), minlength=vocab_size))
