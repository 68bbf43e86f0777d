"""Word-level language models: the lectures' text generation, one word at a time.

A :class:`WordLM` reads words and predicts the next one::

    ids (B, T) -> embedding (B, T, E) -> dropout -> stacked LSTM/GRU/RNN (B, T, H)
               -> dropout -> linear (B, T, V) = logits of the next word

Sentences are read as one stream, each ended by ``<eos>`` (as the Penn Treebank is
distributed and measured), so the model learns where a sentence ends and a new one
starts. Training is the character model's: B parallel streams, truncated BPTT that
carries the hidden state from window to window (:class:`~.charlm.StreamBatches`,
:class:`~rnnkit.tbptt.CarriedState`), the shared :class:`~rnnkit.Trainer`, run
directories of :mod:`rnnkit.runs` (exact resume, best/ by validation perplexity). The
output layer may share the embedding's weights (``tie_weights``, Press & Wolf 2017;
Inan et al. 2017), which needs ``embedding_size == hidden_size``.

Perplexity is exp(mean cross-entropy in nats per word, ``<eos>`` included), on the
validation split during training and on the test split with the best weights at the
end (``results.json``). Words outside the training vocabulary are ``<unk>``.

Built-in data: ``ptb``, the standard Penn Treebank language-model split (10,000 words;
:mod:`rnnkit.data.treebank`). Or ``--text FILE``: one sentence a line, words split on
whitespace, the last ``val_fraction`` of the lines for validation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
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
from ..checkpoint import Checkpoint, config_from_dict, load_checkpoint, resolve_checkpoint
from ..data.readers import LabelVocab, WordVocab, read_tsv_split, split_indices
from ..data.treebank import EOS, load_ptb
from ..layers import STACKS, State
from ..tbptt import CarriedState
from ..trainer import Trainer, resolve_device
from . import charlm

KIND = "wordlm"
PathLike = str | os.PathLike
BUILTIN = ("ptb", "movie-reviews")  # movie-reviews: sentences of a label (pos, neg)


@dataclass
class WordLMConfig:
    """The model: what a checkpoint needs to rebuild it (besides the vocabulary)."""

    cell: Literal["lstm", "gru", "rnn"] = "lstm"  # the recurrent cell (rnn: tanh)
    num_layers: int = 2  # stacked layers
    hidden_size: int = 200  # units per layer
    embedding_size: int = 200  # word vectors
    dropout: float = 0.0  # on the embeddings, between layers and before the output
    tie_weights: bool = False  # the output layer uses the embedding's matrix (E == H)
    init: str | None = None  # a scheme of rnnkit.init, e.g. orthogonal (unset: torch's)
    label_embedding_size: int = 16  # labelled data only: the label vector v in every step
    # the output layer: "full" softmax over the vocabulary, or "adaptive" (Grave et al.
    # 2017): frequent words in a head, rarer ones in clusters of smaller projections
    softmax: Literal["full", "adaptive"] = "full"
    cutoffs: list[int] = field(default_factory=lambda: [2000, 6000])  # adaptive's clusters
    div_value: float = 4.0  # adaptive: each cluster's projection this many times narrower

    def __post_init__(self) -> None:
        if self.cell not in STACKS:
            raise ValueError(f"Argument `cell` must be one of {sorted(STACKS)}, got {self.cell!r}")
        for name in ("num_layers", "hidden_size", "embedding_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Argument `{name}` must be a positive integer, got {v!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Argument `dropout` must lie in [0, 1), got {self.dropout!r}")
        if self.tie_weights and self.embedding_size != self.hidden_size:
            raise ValueError(
                "Argument `tie_weights` needs embedding_size == hidden_size, got "
                f"{self.embedding_size} and {self.hidden_size}"
            )
        if self.softmax not in ("full", "adaptive"):
            raise ValueError(
                f"Argument `softmax` must be 'full' or 'adaptive', got {self.softmax!r}"
            )
        if self.softmax == "adaptive" and self.tie_weights:
            raise ValueError(
                "Argument `tie_weights` ties a full softmax's output matrix to the embedding; "
                "the adaptive softmax has none (--softmax adaptive: leave tie_weights off)"
            )
        cut = list(self.cutoffs)
        if not cut or any(not isinstance(c, int) or c < 1 for c in cut) or cut != sorted(set(cut)):
            raise ValueError(
                f"Argument `cutoffs` must be increasing positive integers, got {self.cutoffs!r}"
            )
        if not self.div_value >= 1.0:
            raise ValueError(f"Argument `div_value` must be at least 1, got {self.div_value!r}")


@dataclass
class TrainConfig(charlm.TrainConfig):
    """One training run: the character model's, with defaults for words."""

    batch_size: int = 32  # parallel streams through the text
    seq_len: int = 35  # words per truncated-BPTT window
    steps: int = 6000  # optimizer steps (ignored when minutes is set)
    lr: float = 3e-3  # peak Adam learning rate
    clip_norm: float = 0.5  # the gradient norm is clipped to this
    eval_every: int = 1000  # steps; 0: only at the end
    eval_chars: int = 0  # validation words per evaluation (its start); 0: all
    checkpoint_every: int = 1000  # steps; 0: only at the end
    precision: Literal["auto", "fp32", "bf16"] = "fp32"  # bf16: autocast on fused layers


class WordLM(nn.Module):
    """Embedding -> dropout -> stacked recurrent layers -> dropout -> linear.

    With `labels` (a sentence's label: positive or negative, ...) the model writes
    sentences of a given label: the label's vector v joins every step's input, the
    lectures' captioning equation with a label in place of the image,
    h_t = tanh(W_xh x_t + W_hh h_{t-1} + W_ih v) (one to many, conditioned at every
    step). Its input ids then carry the label of the word to predict: id + V x label
    (:func:`to_ids`), so the streams, their cursor and the carried state stay the
    character model's.
    """

    def __init__(
        self, config: WordLMConfig, vocab: WordVocab, labels: LabelVocab | None = None
    ) -> None:
        super().__init__()
        self.config, self.vocab, self.labels = config, vocab, labels
        V, E, H = len(vocab), config.embedding_size, config.hidden_size
        self.embedding = nn.Embedding(V, E)
        L = config.label_embedding_size if labels is not None else 0
        self.label_embedding = nn.Embedding(len(labels), L) if labels is not None else None
        self.rnn = STACKS[config.cell](
            E + L, H, config.num_layers, dropout=config.dropout, batch_first=True,
            init=config.init,
        )  # fmt: skip
        self.drop = nn.Dropout(config.dropout)
        if config.softmax == "adaptive":
            self.head: nn.Module = AdaptiveHead(H, V, config.cutoffs, config.div_value)
        else:
            self.head = nn.Linear(H, V)  # y_t = W_hy h_t + b_y
        if config.tie_weights:
            self.head.weight = self.embedding.weight  # (V, E) == (V, H)

    def embed(self, ids: Tensor, labels: Tensor | None = None) -> Tensor:
        """ids (...,) -> inputs (..., E [+ L]); a labelled model reads the label from
        ids >= V (id + V x label) unless `labels` are given."""
        if self.label_embedding is None:
            return self.drop(self.embedding(ids))
        if labels is None:
            ids, labels = ids % len(self.vocab), ids // len(self.vocab)
        x = self.drop(self.embedding(ids))
        return torch.cat([x, self.label_embedding(labels).to(x.dtype)], dim=-1)

    def features(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """ids (B, T) int64 -> what the output layer reads (B, T, H), final state."""
        if ids.dim() != 2:
            raise ValueError(f"Argument `ids` must be (B, T), got shape {tuple(ids.shape)}")
        out, state = self.rnn(self.embed(ids), state)
        return self.drop(out), state

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """ids (B, T) int64 -> logits (B, T, V) (the adaptive softmax's: log-probabilities),
        final state."""
        out, state = self.features(ids, state)
        return self.head(out), state

    def loss(self, features: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy (nats) of the words `targets` (N,) after `features` (N, H);
        the adaptive softmax scores only the clusters the targets fall in."""
        if isinstance(self.head, AdaptiveHead):
            return self.head.loss(features, targets)
        return F.cross_entropy(self.head(features), targets)

    def target(self, ids: Tensor) -> Tensor:
        """The word ids to predict in a stream's ids (a labelled model's carry labels)."""
        return ids % len(self.vocab)

    def encode(self, words: Sequence[str]) -> Tensor:
        """(len(words),) int64 ids; words outside the vocabulary become ``<unk>``."""
        return torch.tensor(self.vocab.encode(list(words)), dtype=torch.int64)

    @torch.inference_mode()
    def generate(
        self,
        prime: str = "",
        num: int = 1,
        *,
        max_words: int = 60,
        label: str | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        guidance: float = 0.0,
    ) -> list[str]:
        """`num` sentences, each sampled word by word after `prime` until the model writes
        ``<eos>`` (or `max_words`), through :func:`rnnkit.decoding.decode`: the lecture's
        loop at test time, the model fed its own samples. Every stream starts after an
        ``<eos>``: where a sentence begins. A sentence cut at `max_words` ends in "...".

        A labelled model writes sentences of `label`. With `guidance` g > 0 each word is
        drawn from log p(w | label) + g (log p(w | label) - mean over the other labels of
        log p(w | other)): the same model run beside itself with the other labels, the
        words that tell the labels apart pushed up (classifier-free guidance, Ho and
        Salimans 2022, with the other labels in place of no label). A label moves a word
        model's likelihood little; guidance makes it show in what is written.
        """
        decoding.check_count("num", num, 1)
        decoding.check_count("max_words", max_words, 1)
        decoding.check_sampling(temperature=temperature, top_k=top_k, top_p=top_p)
        if not (isinstance(guidance, (int, float)) and 0.0 <= guidance < math.inf):
            raise ValueError(f"Argument `guidance` must be a number >= 0, got {guidance!r}")
        if guidance and (self.labels is None or len(self.labels) < 2):
            raise ValueError(
                f"Argument `guidance` ({guidance}) contrasts labels: it needs a model trained "
                "on two or more labels"
            )
        embed = self.embedding
        if self.labels is not None:
            if label is None:
                raise ValueError(
                    f"Argument `label`: this model writes sentences of a label; give one of "
                    f"{', '.join(self.labels.labels)}"
                )
            (k,) = self.labels.encode([label], "--label")
            v = torch.tensor(k, device=self.head.weight.device)
            embed = lambda ids: self.embed(ids, v.expand_as(ids))  # noqa: E731
        elif label is not None:
            raise ValueError(f"Argument `label`: this model was trained without labels ({label!r})")
        eos = self.vocab.index[EOS]
        start = self.encode([EOS, *prime.split()])
        was_training = self.training
        self.eval()
        try:
            device = self.head.weight.device
            ids = start.to(device).expand(num, -1)  # (N, P)
            if guidance:
                step, last, states = self._guided_steps(ids, k, guidance)
            elif isinstance(self.head, nn.Linear):  # the fast steps of a linear readout
                stepper = LMStepper(embed, len(self.vocab), self.rnn, self.head)
                states = stepper.read(ids[:, :-1])
                step, last, states = stepper.prepare(ids[:, -1].contiguous(), states)
            else:
                step, last, states = self._steps(embed, ids)
            pick = partial(
                decoding.next_token, temperature=temperature, top_k=top_k, top_p=top_p,
                generator=decoding.make_generator(seed, device),
            )  # fmt: skip
            words: list[list[str]] = [prime.split() for _ in range(num)]
            done = [False] * num
            for nxt in decoding.decode(step, last, states, max_words, pick, end=eos):
                for i, k in enumerate(nxt.tolist()):
                    if not done[i]:
                        done[i] = k == eos
                        if not done[i]:
                            words[i].append(self.vocab.tokens[k])
        finally:
            self.train(was_training)
        return [" ".join(w) + ("" if d else " ...") for w, d in zip(words, done)]

    def _guided_steps(
        self, ids: Tensor, label: int, guidance: float
    ) -> tuple[Callable, Tensor, State | None]:
        """:meth:`_steps` of guided sampling: the N streams of `ids` (N, P) run once per
        label, (L*N) rows in one batch, and each step's scores are label `label`'s pushed
        away from the mean of the others'."""
        L, N = len(self.labels), ids.shape[0]
        rows = torch.arange(L, device=ids.device).repeat_interleave(N)[:, None]  # (L*N, 1)
        inner, last, state = self._steps(
            lambda x: self.embed(x, rows.expand_as(x)), ids.repeat(L, 1)
        )

        def step(last: Tensor, state: State | None) -> tuple[Tensor, State]:
            scores, state = inner(last.repeat(L), state)  # (L*N, V)
            logp = F.log_softmax(scores.float(), dim=-1).view(L, N, -1)
            mine = logp[label]
            others = (logp.sum(0) - mine) / (L - 1)
            return mine + guidance * (mine - others), state

        return step, last[:N], state

    def _steps(self, embed: Callable, ids: Tensor) -> tuple[Callable, Tensor, State | None]:
        """(step, last ids, state) for :func:`rnnkit.decoding.decode` through the stack and
        any output layer: the state after all of `ids` (N, P) but the last."""
        state = None
        if ids.shape[1] > 1:
            _, state = self.rnn(embed(ids[:, :-1]))

        def step(last: Tensor, state: State | None) -> tuple[Tensor, State]:
            out, state = self.rnn(embed(last[:, None]), state)  # (N, 1, H)
            return self.head(out[:, 0]), state

        return step, ids[:, -1].contiguous(), state

    @torch.no_grad()
    def perplexity(self, ids: np.ndarray, *, batch_size: int = 16, window: int = 128) -> float:
        """exp(mean cross-entropy) over the word ids `ids`, read as `batch_size` streams."""
        r = charlm.evaluate(self, ids, batch_size=batch_size, window=window, target=self.target)
        return math.exp(r["nats_per_char"])


class AdaptiveHead(nn.Module):
    """The adaptive softmax (Grave et al. 2017) as an output layer: the words below the
    first cutoff (the frequent ones: most of any text) and one entry per cluster in a
    full-width head; each rarer cluster behind a projection `div_value` times narrower
    than the last. Training scores only the head and the clusters its targets fall in
    (:meth:`loss`, :class:`torch.nn.AdaptiveLogSoftmaxWithLoss`); :meth:`forward` gives
    every word's log-probability, a normalised distribution, so perplexity and sampling
    read it like logits. On the Penn Treebank's 10,001 words (cutoffs 2,000 and 6,000)
    this output layer's forward and backward measured about 6x faster than the full
    softmax's (``benchmarks/bench_wordlm.py``).
    """

    def __init__(self, in_features: int, vocab_size: int, cutoffs: Sequence[int], div_value: float):
        super().__init__()
        if cutoffs[-1] >= vocab_size:
            raise ValueError(
                f"Argument `cutoffs` must lie below the vocabulary's {vocab_size:,} words, "
                f"got {list(cutoffs)}"
            )
        self.asm = nn.AdaptiveLogSoftmaxWithLoss(
            in_features, vocab_size, list(cutoffs), div_value=div_value
        )

    @property
    def weight(self) -> Tensor:
        """The head's matrix: where the layer lives (device, dtype)."""
        return self.asm.head.weight

    def forward(self, features: Tensor) -> Tensor:
        """features (..., H) -> log-probabilities (..., V)."""
        flat = features.reshape(-1, features.shape[-1]).float()
        with torch.autocast(features.device.type, enabled=False):  # as in :meth:`loss`
            return self.asm.log_prob(flat).reshape(*features.shape[:-1], -1)

    def loss(self, features: Tensor, targets: Tensor) -> Tensor:
        """features (N, H), targets (N,) -> mean negative log-likelihood. In float32 even
        under bfloat16 autocast: torch's adaptive softmax copies cluster rows into a
        float32 output and refuses bfloat16 ones."""
        with torch.autocast(features.device.type, enabled=False):
            return self.asm(features.float(), targets).loss


# -- data ------------------------------------------------------------------------------------


@dataclass
class WordData:
    """The splits of a run as id arrays (sentences joined, each ended by ``<eos>``)."""

    vocab: WordVocab
    splits: dict[str, np.ndarray]  # "train", "val" and, when there is one, "test"
    source: dict[str, Any]
    labels: LabelVocab | None = None  # labelled sentences: the ids carry the labels


def read_sentences(path: PathLike) -> list[list[str]]:
    """A text file's sentences: one a line, words split on whitespace (blank lines
    skipped); ValueError naming the file when it holds none or is not UTF-8."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"Argument `text`: {path} is a folder, not a text file")
    if not path.is_file():
        raise FileNotFoundError(f"Argument `text`: no such file: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"Argument `text`: {path} is not UTF-8 text ({err.reason})") from None
    sentences = [line.split() for line in text.splitlines() if line.strip()]
    if len(sentences) < 2:
        raise ValueError(
            f"Argument `text`: {path} has {len(sentences)} non-empty lines; a word model "
            "needs sentences to train on and to validate on (one sentence a line)"
        )
    return sentences


def to_ids(
    vocab: WordVocab,
    sentences: Sequence[Sequence[str]],
    labels: Sequence[int] | None = None,
) -> np.ndarray:
    """One stream of ids: every sentence's words, then ``<eos>``. With `labels` (one per
    sentence) each id is ``id + V x label of the next word``: what the model reads
    alongside a word is the label of the sentence it is to continue."""
    words = [w for s in sentences for w in (*s, EOS)]
    ids = np.asarray(vocab.encode(words), dtype=np.int64)
    if labels is None:
        return ids
    per_word = np.repeat(np.asarray(labels, dtype=np.int64), [len(s) + 1 for s in sentences])
    following = np.append(per_word[1:], per_word[-1:])  # the label of the word after
    return ids + len(vocab) * following


def load_data(
    *, data: str | None = None, text: PathLike | None = None, val_fraction: float = 0.1,
    vocab: WordVocab | None = None, labels: LabelVocab | None = None,
    log: Callable[[str], None] = print,
) -> WordData:  # fmt: skip
    """The splits of built-in set `data` or of the file `text` (its last `val_fraction`
    of sentences for validation), encoded with `vocab` (default: built from training).

    A labelled built-in set of the classifier (``movie-reviews``), or a ``.tsv`` file of
    ``label<TAB>text`` lines, gives labelled sentences: lower-cased (a built-in set's
    words with a training count below 2 as ``<unk>``, its own test split), a fixed
    `val_fraction` of the training sentences for validation.
    """
    if (data is None) == (text is None):
        raise ValueError("give exactly one of `data` (a built-in set) and `text` (a file)")
    tags: dict[str, list[str]] | None = None
    min_freq = 1
    labelled = data is not None and data in datasets.names("classify")
    if labelled or (text is not None and str(text).endswith(".tsv")):
        raw = datasets.get(data, "classify").splits(log) if labelled else {
            "train": read_tsv_split(text)
        }  # fmt: skip
        if raw["train"].tokens is None:
            raise ValueError(f"Argument `data`: {data} is not text")
        keep, held = split_indices(len(raw["train"]), val_fraction, seed=0)
        parts = {"train": raw["train"].subset(keep), "val": raw["train"].subset(held)}
        if "test" in raw:
            parts["test"] = raw["test"]
        sentences = {k: [[w.lower() for w in t] for t in v.tokens] for k, v in parts.items()}
        tags = {k: v.labels for k, v in parts.items()}
        labels = labels or LabelVocab.build(tags["train"])
        source: dict[str, Any] = {"data": data} if labelled else {"text": str(text)}
        min_freq = 2 if labelled else 1
    elif data is not None:
        datasets.get(data, KIND).fetch(log=log)
        ptb = load_ptb()
        sentences = {"train": ptb["train"], "val": ptb["valid"], "test": ptb["test"]}
        source = {"data": data}
    else:
        whole = read_sentences(text)
        cut = len(whole) - max(1, int(len(whole) * val_fraction))
        sentences = {"train": whole[:cut], "val": whole[cut:]}
        source = {"text": str(Path(text).resolve())}
    vocab = vocab or WordVocab.build([[*s, EOS] for s in sentences["train"]], min_freq=min_freq)
    splits = {
        k: to_ids(vocab, v, None if tags is None else labels.encode(tags[k], k))
        for k, v in sentences.items()
    }
    source["words"] = {k: int(len(v)) for k, v in splits.items()}
    return WordData(vocab, splits, source, labels if tags is not None else None)


# -- training --------------------------------------------------------------------------------


def make_step_fn(batches: charlm.StreamBatches, carried: CarriedState, precision: str) -> Callable:
    """One truncated-BPTT window per step: cross-entropy in nats per word."""
    bf16 = precision == "bf16"

    def step_fn(model: WordLM, batch: tuple[Tensor, Tensor]):
        x, y = batch  # (B, T) each
        if batches.wrapped:  # a new pass: the streams restart at their beginnings
            carried.reset()
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = carried(model.features, x)  # (B, T, H)
            loss = model.loss(out.flatten(0, 1), model.target(y).flatten())
        # the streams never end: every window's end gets the synthetic gradient
        return carried.loss(loss.float()), {"items": y.numel()}

    return step_fn


def train(
    out: PathLike,
    config: WordLMConfig | None = None,
    train_config: TrainConfig | None = None,
    *,
    data: str | None = None,
    text: PathLike | None = None,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> tuple[WordLM, dict]:
    """Train a word model into run directory `out`; returns the best weights and the
    results (validation and test perplexity), also in ``out/results.json``. With
    ``resume=True`` the run continues from ``out/latest`` with its own settings."""
    out, ckpt = runs.start_run(out, resume, KIND, log=log)
    vocab = labels = None
    if ckpt is not None:
        config = config_from_dict(WordLMConfig, ckpt.meta["model"])
        train_config = config_from_dict(TrainConfig, ckpt.meta["train"])
        data, text = ckpt.meta["data"].get("data"), ckpt.meta["data"].get("text")
        vocab = WordVocab.from_dict(ckpt.meta["vocab"])
        if ckpt.meta.get("labels"):
            labels = LabelVocab.from_dict(ckpt.meta["labels"])
    config, train_config = config or WordLMConfig(), train_config or TrainConfig()
    if progress is not None:
        train_config.progress = progress
    with distributed.main_first():  # under torchrun: rank 0 fetches once
        words = load_data(
            data=data, text=text, val_fraction=train_config.val_fraction, vocab=vocab,
            labels=labels, log=log,
        )  # fmt: skip
    B, T = train_config.batch_size, train_config.seq_len
    batches = charlm.StreamBatches(words.splits["train"], B, T)
    runs.seed_everything(train_config.seed)
    model = WordLM(config, words.vocab, words.labels)
    device = resolve_device(train_config.device)
    precision = charlm.resolve_precision(train_config.precision, model, device)
    carried = charlm.new_carried(train_config, model.rnn, device)
    val = words.splits["val"]
    val = val[: train_config.eval_chars] if train_config.eval_chars else val

    def eval_fn(m: WordLM) -> dict[str, float]:
        nats = charlm.evaluate(m, val, target=m.target)["nats_per_char"]
        return {"loss": nats, "ppl": math.exp(nats)}

    trainer_config = train_config.trainer_config()
    trainer_config.max_loss = charlm.MAX_LOSS_UNIFORMS * math.log(len(words.vocab))
    trainer = Trainer(
        trainer_config, model, make_step_fn(batches, carried, precision),
        train_batches=batches, eval_fn=eval_fn,
    )  # fmt: skip
    trainer.items_name = "words"
    trainer.add_extra_state("data", batches.state_dict, batches.load_state_dict)
    trainer.add_extra_state(*charlm.carried_state(carried, batches.streams, trainer))
    trainer.add_callback(
        "on_eval",
        lambda t, m: log(f"step {t.step}: validation perplexity {m['ppl']:.2f}"),
    )
    meta = {
        "kind": KIND,
        "model": asdict(config),
        "vocab": words.vocab.to_dict(),
        "labels": words.labels.to_dict() if words.labels is not None else None,
        "train": asdict(train_config),
        "data": words.source,
        "precision": precision,
    }
    if ckpt is None:
        n_params = sum(p.numel() for p in model.parameters())
        sizes = ", ".join(f"{n:,} {k}" for k, n in words.source["words"].items())
        log(
            f"training a {config.num_layers}x{config.hidden_size} {config.cell.upper()} "
            f"({n_params / 1e6:.2f} M parameters{', tied' if config.tie_weights else ''}) on "
            f"{data or text}: {sizes} words, vocabulary {len(words.vocab):,}; "
            f"backend {model.rnn.backend(device)}, precision {precision}"
        )
    best = runs.KeepBest(out, meta, metric="loss")
    x, y = charlm.probe_windows(words.splits["val"], charlm.PROBE_SIZE, train_config.seq_len,
                                device)  # fmt: skip
    runs.fit(trainer, out, meta, best=best, resume_from=ckpt, probe=probe_on(x, y), log=log)
    model = load(out / "best", device=device)
    results = {
        split: {"ppl": model.perplexity(ids), "words": int(len(ids))}
        for split, ids in words.splits.items()
        if split != "train"
    }
    results["train"] = {"steps": trainer.step, "minutes": trainer.train_s / 60}
    runs.write_results(out, results)
    for split in ("val", "test"):
        if split in results:
            log(f"{split}: perplexity {results[split]['ppl']:.2f}")
    return model, results


def probe_on(x: Tensor, y: Tensor) -> Callable[[WordLM], Tensor]:
    """The training loss of a model on the window x -> y, read from a zero state."""

    def probe(model: WordLM) -> Tensor:
        out, _ = model.features(x)
        return model.loss(out.flatten(0, 1), model.target(y).flatten())

    return probe


def gradient_probe(
    model: WordLM, *, batch_size: int = charlm.PROBE_SIZE, log: Callable[[str], None] = print
) -> Callable[[WordLM], Tensor]:
    """The run's loss on one training-length window of `batch_size` streams through its
    own validation words (``rnnkit gradients RUN``), encoded with its vocabulary."""
    source, train = model.meta["data"], model.meta["train"]
    words = load_data(data=source.get("data"), text=source.get("text"),
                      val_fraction=train["val_fraction"], vocab=model.vocab,
                      labels=model.labels, log=log)  # fmt: skip
    device = next(model.parameters()).device
    x, y = charlm.probe_windows(words.splits["val"], batch_size, train["seq_len"], device)
    return probe_on(x, y)


def load(path: PathLike, *, device: str | torch.device = "cpu") -> WordLM:
    """The :class:`WordLM` saved at `path` (a run directory or checkpoint), in eval mode."""
    ckpt: Checkpoint = load_checkpoint(resolve_checkpoint(path), expected_kind=KIND)
    labels = ckpt.meta.get("labels")
    model = WordLM(
        config_from_dict(WordLMConfig, ckpt.meta["model"]),
        WordVocab.from_dict(ckpt.meta["vocab"]),
        LabelVocab.from_dict(labels) if labels else None,
    )
    model.load_state_dict(ckpt.model_state)
    model.meta = ckpt.meta
    return model.to(device).eval()
