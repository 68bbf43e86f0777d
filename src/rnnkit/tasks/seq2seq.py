"""The encoder-decoder: read one sequence, write another (translation, spelling to sound).

The lecture's "many to many" in two halves::

    source ids (B, S) -> embedding -> encoder stack (B, S, D*H), final state
                                          |  bridge (bidirectional: linear + tanh)
    <start> y1 .. y_{n-1} -> embedding -> decoder stack (B, T, H) -> linear (B, T, V)
                                          = logits of y1 .. yn <end>

trained with the right previous word fed in (teacher forcing, padded target positions
masked out of the loss) and run on its own outputs at test time, through
:mod:`rnnkit.decoding` (greedy, sampling, beam search with a length penalty, batched).

The lecture's four tips are options, each switched on and off (and measured in the
README):

* ``separate_weights``: the decoder has its own recurrent weights (off: the encoder's
  stack writes too; a one-way encoder without the inputs below);
* ``context_every_step``: the encoder's final state c joins every decoder input,
  s_t = f(s_{t-1}, [y_{t-1}; c]);
* ``feed_previous``: the previous target word is the next input (off: the decoder
  runs on its state, and c when given, alone);
* ``reverse_source``: the source is read backwards (Sutskever et al. 2014), so its first
  words lie next to the first words written.

Attention (beyond the lectures): at every step a weighting a_t of the encoder states
h_1..h_S, a_t = softmax(score(s, h_j)) over the real (unpadded) positions, and the
context c_t = sum_j a_tj h_j:

* ``bahdanau`` (additive, Bahdanau et al. 2015): score = v^T tanh(W s_{t-1} + U h_j),
  computed from the previous state, c_t joins the decoder's input;
* ``luong`` (multiplicative "general", Luong et al. 2015): score = s_t^T W h_j from the
  new state; the decoder then runs over the whole target in one fused call in training,
  the scores of all steps in one batched product.

Either way the output reads h~_t = tanh(W_c [c_t; s_t]). :meth:`Seq2Seq.attention`
returns the weights, drawn as a heat map by ``rnnkit eval`` (:func:`rnnkit.metrics.plot_attention`).

Tokens are words (words and punctuation runs, :func:`rnnkit.data.readers.tokenize`),
characters, or subwords (the pieces of a SentencePiece unigram model trained on that
side's training texts, ``--subword-vocab-size`` pieces, kept in the checkpoint), chosen
per side: a pronunciation is spelled in characters and written in phonemes
(``--source-tokens chars --target-tokens words``). Subword outputs are scored as words.
Vocabularies are built from the training pairs: ``<pad>``, ``<unk>`` (tokens never
seen), ``<start>``, ``<end>``.

Built-in pairs (:mod:`rnnkit.data.pairs`): ``numbers``, ``cmudict-g2p`` (spelling to
phonemes), ``bible-en-es`` and ``bible-es-en`` (verses, split by book). Or ``--train FILE`` of
``source<TAB>target`` lines (``--val``, ``--test``: held-out files of the same kind;
without ``--val`` a fixed ``val_fraction`` of the training pairs).
"""

from __future__ import annotations

import base64
import io
import math
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .. import data as datasets
from .. import decoding, distributed, runs
from ..checkpoint import Checkpoint, config_from_dict, load_checkpoint, resolve_checkpoint
from ..data.pairs import PAIR_SETS
from ..data.readers import WordVocab, read_pairs, split_indices, tokenize
from ..layers import STACKS, reverse_padded
from ..metrics import plot_attention, sequence_scores
from ..trainer import Trainer, TrainerConfig, resolve_device
from .sequences import BucketBatches, own_share

KIND = "seq2seq"
PathLike = str | os.PathLike
START, END = "<start>", "<end>"
TOKENS = ("words", "chars", "subwords")
ATTENTION = ("none", "bahdanau", "luong")
PROBE_SIZE = 16  # validation pairs on which gradients through time are measured


# -- settings ------------------------------------------------------------------------------


@dataclass
class Seq2SeqConfig:
    """The model: what a checkpoint needs to rebuild it (besides the vocabularies)."""

    cell: Literal["lstm", "gru", "rnn"] = "lstm"  # the recurrent cell (rnn: tanh)
    num_layers: int = 1  # layers of the encoder and of the decoder
    hidden_size: int = 256  # units per layer (and direction)
    embedding_size: int = 128  # token vectors of either side
    bidirectional: bool = True  # the encoder reads both ways
    dropout: float = 0.1  # on embeddings, between layers and before the output
    attention: Literal["none", "bahdanau", "luong"] = "luong"  # over the encoder's states
    separate_weights: bool = True  # tip 1: the decoder's own recurrent weights
    context_every_step: bool = False  # tip 2: the encoder's final state in every input
    feed_previous: bool = True  # tip 3: the previous target token is the next input
    reverse_source: bool = False  # tip 4: read the source backwards
    # how each side splits into tokens; auto: the data set's choice (cmudict-g2p: chars ->
    # words), otherwise words; subwords: a SentencePiece model trained on that side
    source_tokens: Literal["auto", "words", "chars", "subwords"] = "auto"
    target_tokens: Literal["auto", "words", "chars", "subwords"] = "auto"
    subword_vocab_size: int = 8000  # pieces of each subword model (unigram LM)
    lowercase: bool = False  # lower-case both sides before splitting
    min_freq: int = 1  # training tokens seen fewer times become <unk>
    max_source_len: int = 250  # tokens; a longer source is refused
    max_target_len: int = 250  # tokens; longer training targets are refused, outputs cut
    init: str | None = None  # a scheme of rnnkit.init, e.g. orthogonal (unset: torch's)

    def __post_init__(self) -> None:
        if self.cell not in STACKS:
            raise ValueError(f"Argument `cell` must be one of {sorted(STACKS)}, got {self.cell!r}")
        for name in ("num_layers", "hidden_size", "embedding_size", "min_freq",
                     "subword_vocab_size"):  # fmt: skip
            _positive(name, getattr(self, name))
        for name in ("max_source_len", "max_target_len"):
            _positive(name, getattr(self, name))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Argument `dropout` must lie in [0, 1), got {self.dropout!r}")
        if self.attention not in ATTENTION:
            raise ValueError(
                f"Argument `attention` must be one of {ATTENTION}, got {self.attention!r}"
            )
        for side in ("source_tokens", "target_tokens"):
            if getattr(self, side) not in ("auto", *TOKENS):
                raise ValueError(
                    f"Argument `{side}` must be one of {('auto', *TOKENS)}, got "
                    f"{getattr(self, side)!r}"
                )
        if not self.separate_weights:
            clash = [
                name
                for name, on in (
                    ("bidirectional", self.bidirectional),
                    ("context_every_step", self.context_every_step),
                    ("attention='bahdanau'", self.attention == "bahdanau"),
                )
                if on
            ]
            if clash:
                raise ValueError(
                    "Argument `separate_weights`: the decoder can share the encoder's stack "
                    "only when it reads what the encoder reads (one direction, token "
                    f"vectors only); switch off {', '.join(clash)} (--no-bidirectional, ...)"
                )


def _positive(name: str, v: Any) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"Argument `{name}` must be a positive integer, got {v!r}")


@dataclass
class TrainConfig:
    """One training run."""

    epochs: float = 20.0  # passes over the training pairs (fractions allowed)
    minutes: float | None = None  # train this long instead (eval not counted)
    batch_size: int = 64  # pairs per batch (grouped by source length)
    lr: float = 2e-3  # peak Adam learning rate
    schedule: Literal["constant", "cosine", "linear"] = "linear"  # decay after warm-up
    warmup_steps: int = 100  # at most a tenth of the run
    min_lr_ratio: float = 0.05  # the decay ends at lr * min_lr_ratio
    clip_norm: float = 1.0  # the gradient norm is clipped to this
    # evaluate, keep as best and test the exponential moving average of the weights with
    # this decay (0.999: about the last thousand steps) instead of the last step's
    ema: float | None = None
    val_fraction: float = 0.05  # of the training pairs, when no validation set is given
    evals_per_epoch: float = 1  # validations (and checkpoints) per epoch (0.1: every ten epochs)
    beam: int = 1  # beam width of the final scores (1: greedy)
    length_penalty: float = 0.6  # beam search's alpha (GNMT's length penalty)
    seed: int = 1234  # initialisation and batch order
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA where available
    progress: bool = True  # a progress bar with loss and speed
    nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/inf loss: stop there, or skip the batch

    def __post_init__(self) -> None:
        for name in ("batch_size", "beam"):
            _positive(name, getattr(self, name))
        runs.check_evals_per_epoch(self.evals_per_epoch)
        if not (isinstance(self.epochs, (int, float)) and self.epochs > 0):
            raise ValueError(f"Argument `epochs` must be a positive number, got {self.epochs!r}")
        if self.minutes is not None and not self.minutes > 0:
            raise ValueError(f"Argument `minutes` must be positive, got {self.minutes!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(
                f"Argument `val_fraction` must lie in (0, 1), got {self.val_fraction!r}"
            )
        if not 0.0 <= self.length_penalty < math.inf:
            raise ValueError(
                f"Argument `length_penalty` must be a number >= 0, got {self.length_penalty!r}"
            )

    def trainer_config(self, steps_per_epoch: int) -> TrainerConfig:
        return runs.epoch_trainer_config(self, steps_per_epoch)


# -- tokens --------------------------------------------------------------------------------


def split_text(text: str, how: str, lowercase: bool = False) -> list[str]:
    """A text's tokens: words and punctuation runs, or characters (spaces included)."""
    text = text.lower() if lowercase else text
    return list(text) if how == "chars" else tokenize(text)


_NO_SPACE_BEFORE = set(".,;:!?%)]}'»")
_NO_SPACE_AFTER = set("([{¿¡«")


def join_tokens(tokens: Sequence[str], how: str) -> str:
    """Tokens back into text: characters as they are; words with spaces, none before
    closing punctuation or after opening brackets."""
    if how == "chars":
        return "".join(tokens)
    out = ""
    for t in tokens:
        glue = not out or out[-1] in _NO_SPACE_AFTER or (t and t[0] in _NO_SPACE_BEFORE)
        out += t if glue else " " + t
    return out


class Side:
    """How one side's texts become tokens and back: words, characters, or the pieces of
    a SentencePiece model (Kudo and Richardson 2018) trained on that side's training
    texts (:meth:`train`) and kept, serialized, in the checkpoint."""

    def __init__(self, how: str, lowercase: bool = False, model: bytes | None = None):
        if (how == "subwords") != (model is not None):
            raise ValueError(f"a {how} side takes {'a' if how == 'subwords' else 'no'} model")
        self.how, self.lowercase, self.model = how, lowercase, model
        self._sp = None
        if model is not None:
            import sentencepiece

            self._sp = sentencepiece.SentencePieceProcessor(model_proto=model)

    @classmethod
    def train(cls, texts: Sequence[str], how: str, lowercase: bool, vocab_size: int) -> Side:
        """A side of kind `how`; for subwords, a unigram model of at most `vocab_size`
        pieces learnt from `texts` (fewer where the texts hold fewer)."""
        if how != "subwords":
            return cls(how, lowercase)
        import sentencepiece

        lines = [(t.lower() if lowercase else t) for t in texts]
        buffer = io.BytesIO()
        size = vocab_size
        while True:
            try:
                sentencepiece.SentencePieceTrainer.train(
                    sentence_iterator=iter(lines), model_writer=buffer, vocab_size=size,
                    model_type="unigram", character_coverage=1.0, num_threads=1,
                    hard_vocab_limit=False, minloglevel=2,
                )  # fmt: skip
                break
            except RuntimeError as err:  # too few distinct pieces for `size`
                if size <= 16 or "vocab_size" not in str(err):
                    raise
                size //= 2
        return cls(how, lowercase, buffer.getvalue())

    def split(self, text: str) -> list[str]:
        """A text's tokens: words and punctuation runs, characters (spaces included), or
        subword pieces (``▁`` marks a word's start)."""
        text = text.lower() if self.lowercase else text
        if self._sp is not None:
            return self._sp.encode(text, out_type=str)
        return split_text(text, self.how)

    def join(self, tokens: Sequence[str]) -> str:
        if self._sp is not None:
            return self._sp.decode_pieces(list(tokens))
        return join_tokens(tokens, self.how)

    def to_meta(self) -> str | None:
        return None if self.model is None else base64.b64encode(self.model).decode("ascii")


def make_sides(config: Seq2SeqConfig, meta: dict[str, str | None] | None) -> dict[str, Side]:
    """The source and target :class:`Side` of `config`, their subword models from a
    checkpoint's `meta` (``{"source": base64, "target": base64}``)."""
    meta = meta or {}
    return {
        side: Side(
            getattr(config, f"{side}_tokens"),
            config.lowercase,
            base64.b64decode(meta[side]) if meta.get(side) else None,
        )
        for side in ("source", "target")
    }


def build_vocab(sequences: Sequence[Sequence[str]], min_freq: int) -> WordVocab:
    """``<pad>`` 0, ``<unk>`` 1, ``<start>`` 2, ``<end>`` 3, then the tokens seen at least
    `min_freq` times, most frequent first."""
    return WordVocab.build(sequences, min_freq=min_freq, specials=(START, END))


PAD_ID, UNK_ID, START_ID, END_ID = 0, 1, 2, 3


# -- the model -----------------------------------------------------------------------------


class Encoded(NamedTuple):
    """What the decoder reads of a batch of sources (every tensor batch-first)."""

    memory: Tensor  # (B, S, M) the encoder's states, M = directions x H
    keys: Tensor | None  # (B, S, H) the memory projected for the attention's score
    mask: Tensor  # (B, S) bool: real source positions
    final: Tensor  # (B, M) the top layer's final state (both directions)
    state: Any  # the decoder's initial state, (L, B, H) or a tuple of them


class Seq2Seq(nn.Module):
    """An encoder stack and a decoder stack, with the options of :class:`Seq2SeqConfig`.

    :meth:`forward` is the teacher-forced pass of training; :meth:`step` one decoding
    step for :mod:`rnnkit.decoding` (``step(ids, state) -> (logits, state)``, the state a
    tuple of batch-first tensors, so beam search can reorder it); :meth:`translate`
    turns texts into texts.
    """

    def __init__(
        self,
        config: Seq2SeqConfig,
        source_vocab: WordVocab,
        target_vocab: WordVocab,
        sides: dict[str, Side] | None = None,
    ):
        super().__init__()
        config = resolve_tokens(config, None)
        self.config, self.source_vocab, self.target_vocab = config, source_vocab, target_vocab
        self.sides = sides or make_sides(config, None)  # how texts become tokens
        c = config
        E, H, D = c.embedding_size, c.hidden_size, 2 if c.bidirectional else 1
        M = D * H
        self.memory_size = M
        self.source_embedding = nn.Embedding(len(source_vocab), E, padding_idx=PAD_ID)
        self.target_embedding = nn.Embedding(len(target_vocab), E, padding_idx=PAD_ID)
        stack = STACKS[c.cell]
        self.encoder = stack(
            E, H, c.num_layers, dropout=c.dropout, batch_first=True,
            bidirectional=c.bidirectional, init=c.init,
        )  # fmt: skip
        decoder_input = E + (M if c.context_every_step else 0)
        decoder_input += M if c.attention == "bahdanau" else 0
        if c.separate_weights:
            self.decoder = stack(
                decoder_input, H, c.num_layers, dropout=c.dropout, batch_first=True, init=c.init
            )
        else:
            self.decoder = self.encoder  # tip 1 off: one stack reads and writes
        # a bidirectional encoder's two final states -> the decoder's one, per layer
        self.bridge = nn.Linear(M, H) if D == 2 else None
        self.bridge_cell = nn.Linear(M, H) if D == 2 and c.cell == "lstm" else None
        if c.attention == "luong":
            self.attention_key = nn.Linear(M, H, bias=False)  # score = s^T W h_j
        elif c.attention == "bahdanau":
            self.attention_key = nn.Linear(M, H, bias=False)  # U h_j
            self.attention_query = nn.Linear(H, H)  # W s_{t-1} (+ b)
            self.attention_v = nn.Linear(H, 1, bias=False)  # v^T tanh(...)
        if c.attention != "none":
            self.combine = nn.Linear(M + H, H)  # h~_t = tanh(W_c [c_t; s_t])
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(H, len(target_vocab))

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    # -- encoder ----------------------------------------------------------------------
    def encode(self, source: Tensor, lengths: Tensor) -> Encoded:
        """source (B, S) ids right-padded, lengths (B,) -> :class:`Encoded`."""
        c = self.config
        if source.dim() != 2:
            raise ValueError(
                f"Argument `source` must be (B, S) ids, got shape {tuple(source.shape)}"
            )
        B, S = source.shape
        lengths = lengths.to(torch.int64)
        if c.reverse_source:  # tip 4: the last word first, padding still on the right
            source = reverse_padded(source.t(), lengths).t()
        x = self.drop(self.source_embedding(source))  # (B, S, E)
        memory, state = self.encoder(x, lengths=lengths.cpu())  # (B, S, M)
        mask = torch.arange(S, device=source.device)[None, :] < lengths.to(source.device)[:, None]
        h = state[0] if isinstance(state, tuple) else state  # (L*D, B, H)
        D = 2 if c.bidirectional else 1
        final = h[-D:].transpose(0, 1).reshape(B, D * c.hidden_size)  # (B, M)
        keys = self.attention_key(memory) if c.attention != "none" else None
        return Encoded(memory, keys, mask, final, self._bridge(state))

    def _bridge(self, state: Any) -> Any:
        """The encoder's final state (L*D, B, H) -> the decoder's initial (L, B, H)."""
        if self.bridge is None:
            return state

        def join(t: Tensor) -> Tensor:  # (L*2, B, H) -> (L, B, 2H): both directions
            L2, B, H = t.shape
            return t.view(L2 // 2, 2, B, H).permute(0, 2, 1, 3).reshape(L2 // 2, B, 2 * H)

        if isinstance(state, tuple):  # LSTM: (h, c)
            h, cell = state
            return torch.tanh(self.bridge(join(h))), self.bridge_cell(join(cell))
        return torch.tanh(self.bridge(join(state)))

    # -- decoder ----------------------------------------------------------------------
    def _inputs(self, previous: Tensor, final: Tensor) -> Tensor:
        """previous (B, T) target ids -> decoder inputs (B, T, E [+ M])."""
        c = self.config
        if c.feed_previous:
            x = self.drop(self.target_embedding(previous))
        else:  # tip 3 off: no previous token, a zero vector in its place
            x = self.target_embedding.weight.new_zeros(*previous.shape, c.embedding_size)
        if c.context_every_step:
            x = torch.cat([x, final[:, None, :].expand(-1, x.shape[1], -1)], dim=-1)
        return x

    def _attend(self, scores: Tensor, mask: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        """scores (B, T, S) -> context (B, T, M), weights (B, T, S) over real positions."""
        weights = scores.masked_fill(~mask[:, None, :], -math.inf).softmax(-1)
        return weights @ memory, weights

    def _bahdanau(self, s_prev: Tensor, enc: Encoded) -> tuple[Tensor, Tensor]:
        """s_prev (B, H) -> context (B, M), weights (B, S)."""
        e = self.attention_v(torch.tanh(self.attention_query(s_prev)[:, None, :] + enc.keys))
        context, weights = self._attend(e.squeeze(-1)[:, None, :], enc.mask, enc.memory)
        return context[:, 0], weights[:, 0]

    def _readout(self, out: Tensor, context: Tensor | None) -> Tensor:
        """Decoder outputs (..., H) [and contexts (..., M)] -> logits (..., V)."""
        if context is not None:
            out = torch.tanh(self.combine(torch.cat([context, out], dim=-1)))
        return self.head(self.drop(out))

    def decode(self, enc: Encoded, previous: Tensor) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing: previous (B, T) = <start> y1 .. y_{T-1} -> logits (B, T, V)
        and the attention weights (B, T, S) (None without attention)."""
        x = self._inputs(previous, enc.final)  # (B, T, I)
        if self.config.attention == "bahdanau":  # the context enters the input: step by step
            state = decoding.batch_first_state(enc.state)
            logits, weights = [], []
            for t in range(previous.shape[1]):
                lt, state, wt = self._step(x[:, t], state, enc)
                logits.append(lt)
                weights.append(wt)
            return torch.stack(logits, 1), torch.stack(weights, 1)
        out, _ = self.decoder(x, enc.state)  # (B, T, H): one fused call
        if self.config.attention == "luong":
            context, weights = self._attend(out @ enc.keys.transpose(1, 2), enc.mask, enc.memory)
            return self._readout(out, context), weights
        return self._readout(out, None), None

    def forward(
        self, source: Tensor, lengths: Tensor, previous: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """source (B, S), lengths (B,), previous (B, T) -> logits (B, T, V), attention."""
        return self.decode(self.encode(source, lengths), previous)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        """Mean cross-entropy (nats) per target token; padded positions masked out."""
        logits, _ = self(batch["source"], batch["lengths"], batch["previous"])
        return F.cross_entropy(logits.flatten(0, 1), batch["target"].flatten(), ignore_index=PAD_ID)

    def _step(self, x: Tensor, state: Any, enc: Encoded) -> tuple[Tensor, Any, Tensor | None]:
        """One decoder step from inputs x (B, I) and the batch-first state: logits (B, V),
        the new batch-first state, attention weights (B, S) or None."""
        context = weights = None
        if self.config.attention == "bahdanau":
            top = state[0][:, -1] if isinstance(state, tuple) else state[:, -1]  # (B, H)
            context, weights = self._bahdanau(top, enc)
            x = torch.cat([x, context], dim=-1)
        out, new = self.decoder(x[:, None, :], decoding.layer_first_state(state))  # (B, 1, H)
        out = out[:, 0]
        if self.config.attention == "luong":
            context, weights = self._attend(
                (out[:, None, :] @ enc.keys.transpose(1, 2)), enc.mask, enc.memory
            )
            context, weights = context[:, 0], weights[:, 0]
        return self._readout(out, context), decoding.batch_first_state(new), weights

    def start(self, source: Tensor, lengths: Tensor) -> tuple[Tensor, tuple]:
        """The first ids (<start>, (B,)) and state of :meth:`step` for a batch of sources."""
        enc = self.encode(source, lengths)
        ids = torch.full((len(source),), START_ID, dtype=torch.int64, device=source.device)
        # the decoder state travels batch-first beside the encoding, not inside it
        return ids, (decoding.batch_first_state(enc.state), enc._replace(state=None))

    def step(self, ids: Tensor, state: tuple) -> tuple[Tensor, tuple]:
        """:mod:`rnnkit.decoding`'s step: previous ids (N,) -> logits (N, V), new state."""
        dec, enc = state
        x = self._inputs(ids[:, None], enc.final)[:, 0]
        logits, dec, _ = self._step(x, dec, enc)
        return logits, (dec, enc)

    # -- texts ------------------------------------------------------------------------
    def source_ids(
        self, texts: Sequence[str], names: Sequence[str] | None = None
    ) -> tuple[list[list[int]], Counter]:
        """Each text's source ids (no <start>/<end>) and the count of unseen tokens; a
        ValueError naming the text (`names`, default ``sources[i]``) when it is empty
        or longer than ``max_source_len`` tokens."""
        c = self.config
        ids, unseen = [], Counter()
        for i, text in enumerate(texts):
            where = names[i] if names is not None else f"Argument `sources[{i}]`"
            tokens = self.sides["source"].split(text) if text.strip() else []
            if not tokens:
                raise ValueError(f"{where}: the source is empty")
            if len(tokens) > c.max_source_len:
                raise ValueError(
                    f"{where}: the source has {len(tokens)} tokens, more than this model's "
                    f"max_source_len {c.max_source_len}"
                )
            row = self.source_vocab.encode(tokens)
            unseen.update(t for t, k in zip(tokens, row) if k == UNK_ID)
            ids.append(row)
        return ids, unseen

    @torch.inference_mode()
    def translate(
        self,
        sources: Sequence[str],
        *,
        beam: int = 1,
        length_penalty: float = 0.6,
        max_length: int | None = None,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        batch_size: int = 64,
        names: Sequence[str] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> list[str]:
        """The model's output text for each source: greedy (beam 1, temperature 0),
        sampled (temperature > 0, with top-k / top-p) or by beam search of width `beam`
        (ranked with GNMT's `length_penalty`), in batches of similar length, until
        ``<end>`` or `max_length` tokens (default the model's ``max_target_len``).
        Tokens never seen in training read as ``<unk>``; `log` hears of them once."""
        return [
            self.sides["target"].join(t)
            for t in self.translate_tokens(
                sources,
                beam=beam,
                length_penalty=length_penalty,
                max_length=max_length,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                seed=seed,
                batch_size=batch_size,
                names=names,
                log=log,
            )  # fmt: skip
        ]

    @torch.inference_mode()
    def translate_tokens(
        self,
        sources: Sequence[str],
        *,
        beam: int = 1,
        length_penalty: float = 0.6,
        max_length: int | None = None,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        batch_size: int = 64,
        names: Sequence[str] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> list[list[str]]:
        """:meth:`translate`'s outputs as target tokens."""
        decoding.check_count("beam", beam, 1)
        decoding.check_count("batch_size", batch_size, 1)
        decoding.check_sampling(temperature=temperature, top_k=top_k, top_p=top_p)
        if beam > 1 and temperature > 0:
            raise ValueError("give a beam width or a sampling temperature, not both")
        max_length = self.config.max_target_len if max_length is None else max_length
        decoding.check_count("max_length", max_length, 1)
        ids, unseen = self.source_ids(sources, names)
        if unseen and log is not None:
            shown = ", ".join(f"{t!r} ({n})" for t, n in unseen.most_common(8))
            more = f" and {len(unseen) - 8} more" if len(unseen) > 8 else ""
            log(f"note: {sum(unseen.values())} source tokens never seen in training read as "
                f"<unk>: {shown}{more}")  # fmt: skip
        generator = decoding.make_generator(seed, self.device) if temperature > 0 else None
        out: list[list[str]] = [[] for _ in ids]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        was_training = self.training
        self.eval()
        try:
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                source, lengths = pad_ids([ids[i] for i in idx], self.device)
                first, state = self.start(source, lengths)
                if beam > 1:
                    found = decoding.beam_search(
                        self.step, first, state, max_length + 1, k=1, beam_size=beam,
                        end=END_ID, alpha=length_penalty,
                    )  # fmt: skip
                    rows = [hyps[0].tokens for hyps in found]
                else:
                    seqs = decoding.sample(
                        self.step, first, state, max_length + 1, temperature=temperature,
                        top_k=top_k, top_p=top_p, end=END_ID, generator=generator,
                    )  # fmt: skip
                    rows = [
                        [k for k in t[:n].tolist() if k != END_ID]
                        for t, n in zip(seqs.tokens, seqs.lengths.tolist())
                    ]
                for i, row in zip(idx, rows):
                    out[i] = [self.target_vocab.tokens[k] for k in row]
        finally:
            self.train(was_training)
        return out

    @torch.inference_mode()
    def attention(self, source: str, target_tokens: Sequence[str]) -> np.ndarray:
        """The attention weights (T + 1, S) while writing `target_tokens` (and <end>) after
        `source`, teacher-forced; rows sum to 1 over the source tokens."""
        if self.config.attention == "none":
            raise ValueError("this model has no attention (trained with --attention none)")
        (row,), _ = self.source_ids([source])
        src, lengths = pad_ids([row], self.device)
        previous = torch.tensor(
            [[START_ID, *self.target_vocab.encode(list(target_tokens))]], device=self.device
        )
        was_training = self.training
        self.eval()
        try:
            _, weights = self(src, lengths, previous)
        finally:
            self.train(was_training)
        weights = weights[0].float().cpu().numpy()  # (T + 1, S)
        return weights[:, ::-1].copy() if self.config.reverse_source else weights


def pad_ids(rows: Sequence[Sequence[int]], device: torch.device | str = "cpu") -> tuple:
    """Right-padded ids (B, S) and lengths (B,)."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
    out = torch.full((len(rows), int(lengths.max())), PAD_ID, dtype=torch.int64)
    for b, r in enumerate(rows):
        out[b, : len(r)] = torch.tensor(r, dtype=torch.int64)
    return out.to(device), lengths.to(device)


# -- data ----------------------------------------------------------------------------------


@dataclass
class Pairs:
    """Encoded pairs of one split: source ids, target ids (without <start>/<end>), and
    the raw texts (for scoring against every reference of a source)."""

    source: list[np.ndarray]
    target: list[np.ndarray]
    texts: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.source)

    @property
    def lengths(self) -> list[int]:  # what the bucketing groups by
        return [len(s) for s in self.source]

    def subset(self, idx: Sequence[int]) -> Pairs:
        return Pairs(
            [self.source[i] for i in idx],
            [self.target[i] for i in idx],
            [self.texts[i] for i in idx],
        )


def collate(pairs: Pairs, idx: Sequence[int]) -> dict[str, Tensor]:
    """A padded batch: ``source`` (B, S), ``lengths`` (B,), ``previous`` (B, T) =
    <start> y1 .. yn, ``target`` (B, T) = y1 .. yn <end>, both padded with <pad>."""
    source, lengths = pad_ids([pairs.source[i] for i in idx])
    T = max(len(pairs.target[i]) for i in idx) + 1
    previous = torch.zeros(len(idx), T, dtype=torch.int64)
    target = torch.zeros(len(idx), T, dtype=torch.int64)
    for b, i in enumerate(idx):
        y = torch.from_numpy(pairs.target[i])
        previous[b, 0], previous[b, 1 : len(y) + 1] = START_ID, y
        target[b, : len(y)], target[b, len(y)] = y, END_ID
    return {"source": source, "lengths": lengths, "previous": previous, "target": target}


def read_split_file(path: PathLike) -> list[tuple[str, str]]:
    return [(s, t) for s, t, _ in read_pairs(path)]


def resolve_tokens(config: Seq2SeqConfig, data: str | None) -> Seq2SeqConfig:
    """`config` with "auto" token kinds made concrete: built-in set `data`'s own
    (``PairSet.tokens``), otherwise words."""
    default = PAIR_SETS[data].tokens if data in PAIR_SETS else ("words", "words")
    chosen = {
        side: getattr(config, side) if getattr(config, side) != "auto" else kind
        for side, kind in zip(("source_tokens", "target_tokens"), default)
    }
    return replace(config, **chosen)


def load_pairs(
    *, data: str | None, files: dict[str, PathLike | None], val_fraction: float, log=print
) -> tuple[dict[str, list[tuple[str, str]]], dict[str, Any]]:
    """(source, target) texts of every split, and where they came from."""
    if (data is None) == (files.get("train") is None):
        raise ValueError("give either a built-in data set (`data`) or a training file (`train`)")
    if data is not None:
        splits, source = datasets.get(data, KIND).splits(log), {"data": data}
    else:
        splits = {k: read_split_file(p) for k, p in files.items() if p is not None}
        source = {k: str(Path(p).resolve()) for k, p in files.items() if p is not None}
    if "val" not in splits:
        keep, held = split_indices(len(splits["train"]), val_fraction, seed=0)
        train = splits["train"]
        splits = {**splits, "train": [train[i] for i in keep], "val": [train[i] for i in held]}
    return splits, source


def encode_pairs(
    texts: Sequence[tuple[str, str]],
    config: Seq2SeqConfig,
    source_vocab: WordVocab,
    target_vocab: WordVocab,
    where: str,
    sides: dict[str, Side] | None = None,
) -> Pairs:
    """Token ids of every pair; ValueError naming the pair when a side is empty or over
    its maximum length."""
    src, tgt = [], []
    c = config
    sides = sides or make_sides(config, None)
    for n, (s, t) in enumerate(texts):
        a, b = sides["source"].split(s), sides["target"].split(t)
        for side, tokens, most in (
            ("source", a, c.max_source_len),
            ("target", b, c.max_target_len),
        ):
            if not tokens:
                raise ValueError(f"{where}: pair {n + 1}: the {side} has no tokens: {(s, t)!r}")
            if len(tokens) > most:
                raise ValueError(
                    f"{where}: pair {n + 1}: the {side} has {len(tokens)} tokens, more than "
                    f"max_{side}_len {most} (raise --max-{side}-len)"
                )
        src.append(np.asarray(source_vocab.encode(a), dtype=np.int64))
        tgt.append(np.asarray(target_vocab.encode(b), dtype=np.int64))
    return Pairs(src, tgt, list(texts))


# -- scoring -------------------------------------------------------------------------------


@torch.no_grad()
def validation_loss(model: Seq2Seq, pairs: Pairs, batch_size: int = 128) -> dict[str, float]:
    """Teacher-forced cross-entropy per target token and the share of target tokens the
    model ranks first (sharded under torchrun, reduced)."""
    was = model.training
    model.eval()
    order = sorted(range(len(pairs)), key=lambda i: pairs.lengths[i])
    order = list(distributed.shard(order))
    nats = tokens = right = 0.0
    try:
        for s in range(0, len(order), batch_size):
            batch = {
                k: v.to(model.device) for k, v in collate(pairs, order[s : s + batch_size]).items()
            }
            logits, _ = model(batch["source"], batch["lengths"], batch["previous"])
            y = batch["target"].flatten()
            real = y != PAD_ID
            flat = logits.flatten(0, 1).float()
            nats += float(F.cross_entropy(flat, y, ignore_index=PAD_ID, reduction="sum"))
            right += float((flat.argmax(-1)[real] == y[real]).sum())
            tokens += float(real.sum())
    finally:
        model.train(was)
    nats, right, tokens = distributed.sum_floats(nats, right, tokens)
    return {"loss": nats / tokens, "token_accuracy": 100.0 * right / tokens}


def score(
    model: Seq2Seq,
    texts: Sequence[tuple[str, str]],
    *,
    beam: int = 1,
    length_penalty: float = 0.6,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Decode every distinct source of `texts` and score it against all its targets
    (a word's alternative pronunciations): :func:`rnnkit.metrics.sequence_scores`.
    Returns {"metrics", "sources", "hypotheses"}."""
    c = model.config
    target = model.sides["target"]
    # subword outputs are scored as words: the pieces are the model's business
    scored = target if c.target_tokens != "subwords" else Side("words", c.lowercase)
    refs: dict[str, list[list[str]]] = {}
    written: dict[str, list[str]] = {}  # the references as written: what BLEU reads
    for s, t in texts:
        refs.setdefault(s, []).append(scored.split(t))
        written.setdefault(s, []).append(t.lower() if c.lowercase else t)
    sources = list(refs)
    hyps = model.translate_tokens(
        sources, beam=beam, length_penalty=length_penalty, batch_size=batch_size
    )
    detokenized = [target.join(h) for h in hyps]
    if scored is not target:
        hyps = [scored.split(t) for t in detokenized]
    metrics = sequence_scores(
        hyps, [refs[s] for s in sources], texts=(detokenized, [written[s] for s in sources])
    )
    metrics["sources"] = float(len(sources))
    return {"metrics": metrics, "sources": sources, "hypotheses": hyps}


def format_scores(m: dict[str, float]) -> str:
    return (
        f"exact {m['exact']:.1f}%, token error {m['token_error']:.1f}%, "
        f"BLEU {m['bleu']:.1f}, chrF {m['chrf']:.1f} ({int(m['sources']):,} sources)"
    )


def draw_attention(model: Seq2Seq, source: str, path: PathLike, *, beam: int = 1) -> Path:
    """The heat map of what `model` attends to while translating `source`."""
    (tokens,) = model.translate_tokens([source], beam=beam)
    weights = model.attention(source, tokens)
    c = model.config
    src = model.sides["source"].split(source)
    shown = [t if t.strip() else "␣" for t in src]
    return plot_attention(weights, shown, [*tokens, END], path, title=f"{c.attention} attention")


# -- training ------------------------------------------------------------------------------


def make_step_fn() -> Callable:
    def step_fn(model: Seq2Seq, batch: dict[str, Tensor]):
        loss = model.loss(batch)
        return loss, {"items": int((batch["target"] != PAD_ID).sum())}

    return step_fn


def train(
    out: PathLike,
    config: Seq2SeqConfig | None = None,
    train_config: TrainConfig | None = None,
    *,
    data: str | None = None,
    files: dict[str, PathLike | None] | None = None,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Seq2Seq, dict]:
    """Train an encoder-decoder into run directory `out`: built-in pairs `data` or the
    files {"train", "val", "test"} of ``source<TAB>target`` lines. ``best/`` keeps the
    lowest validation loss; at the end the best weights translate the validation and
    test sources (greedy, and beam search when ``beam`` > 1) and are scored against
    every reference (``results.json``); an attention model draws ``attention.png``.
    ``resume=True`` continues from ``out/latest`` with the run's own settings."""
    out, ckpt = runs.start_run(out, resume, KIND, log=log)
    files = dict(files or {})
    source_vocab = target_vocab = None
    if ckpt is not None:
        config = config_from_dict(Seq2SeqConfig, ckpt.meta["model"])
        train_config = config_from_dict(TrainConfig, ckpt.meta["train"])
        data = ckpt.meta["data"].get("data")
        files = {k: ckpt.meta["data"].get(k) for k in ("train", "val", "test")}
        source_vocab = WordVocab.from_dict(ckpt.meta["source_vocab"])
        target_vocab = WordVocab.from_dict(ckpt.meta["target_vocab"])
        sides = make_sides(config_from_dict(Seq2SeqConfig, ckpt.meta["model"]),
                           ckpt.meta.get("subwords"))  # fmt: skip
    config, train_config = config or Seq2SeqConfig(), train_config or TrainConfig()
    config = resolve_tokens(config, data)
    if progress is not None:
        train_config.progress = progress
    with distributed.main_first():  # under torchrun: rank 0 fetches once
        texts, source = load_pairs(
            data=data, files=files, val_fraction=train_config.val_fraction, log=log
        )
    c = config
    if source_vocab is None:
        sides = {
            side: Side.train([p[k] for p in texts["train"]], getattr(c, f"{side}_tokens"),
                             c.lowercase, c.subword_vocab_size)
            for k, side in enumerate(("source", "target"))
        }  # fmt: skip
        source_vocab = build_vocab(
            [sides["source"].split(s) for s, _ in texts["train"]], c.min_freq
        )
        target_vocab = build_vocab(
            [sides["target"].split(t) for _, t in texts["train"]], c.min_freq
        )
    where = {k: source.get("data") or source.get(k) or source.get("train") for k in texts}
    splits = {
        k: encode_pairs(v, config, source_vocab, target_vocab, f"{where[k]} ({k})", sides)
        for k, v in texts.items()
    }
    runs.seed_everything(train_config.seed)
    model = Seq2Seq(config, source_vocab, target_vocab, sides)
    device = resolve_device(train_config.device)
    batches = BucketBatches(splits["train"], train_config.batch_size, train_config.seed, collate)
    val = splits["val"]
    trainer = Trainer(
        train_config.trainer_config(len(batches)), model, own_share(make_step_fn()),
        train_batches=batches, eval_fn=lambda m: validation_loss(m, val),
    )  # fmt: skip
    trainer.items_name = "tokens"
    trainer.add_extra_state("data", batches.state_dict, batches.load_state_dict)
    trainer.add_callback(
        "on_eval",
        lambda t, m: log(
            f"epoch {t.step / len(batches):.2f} (step {t.step}): validation loss "
            f"{m['loss']:.4f}, token accuracy {m['token_accuracy']:.1f}%"
        ),
    )
    meta = {
        "kind": KIND,
        "model": asdict(config),
        "source_vocab": source_vocab.to_dict(),
        "target_vocab": target_vocab.to_dict(),
        "subwords": {k: side.to_meta() for k, side in sides.items()},
        "train": asdict(train_config),
        "data": source,
    }
    if ckpt is None:
        n_params = sum(p.numel() for p in model.parameters())
        sizes = ", ".join(f"{len(v):,} {k}" for k, v in splits.items())
        log(
            f"seq2seq {data or files.get('train')}: {sizes} pairs; vocabularies "
            f"{len(source_vocab):,} -> {len(target_vocab):,} ({c.source_tokens} -> "
            f"{c.target_tokens}); {describe(model, device)}, {n_params / 1e6:.2f} M parameters"
        )
    best = runs.KeepBest(out, meta, metric="loss")
    probe_batch = collate(val, list(range(min(PROBE_SIZE, len(val)))))
    probe = runs.batch_probe(make_step_fn(), probe_batch, device)
    runs.fit(trainer, out, meta, best=best, resume_from=ckpt, probe=probe, log=log)
    model = load(out / "best", device=device)
    results = report(model, texts, out, beam=train_config.beam,
                     length_penalty=train_config.length_penalty, log=log)  # fmt: skip
    results["train"] = {"steps": trainer.step, "minutes": trainer.train_s / 60}
    runs.write_results(out, results)
    return model, results


def report(
    model: Seq2Seq,
    texts: dict[str, list[tuple[str, str]]],
    out: Path,
    *,
    beam: int,
    length_penalty: float,
    log: Callable[[str], None] = print,
) -> dict:
    """Scores of the validation and test splits (greedy; and beam search when `beam` >
    1), and the attention heat map of the first test (else validation) source."""
    results: dict[str, Any] = {}
    for split in ("val", "test"):
        if split not in texts:
            continue
        results[split] = {"greedy": score(model, texts[split])["metrics"]}
        log(f"{split}, greedy: {format_scores(results[split]['greedy'])}")
        if beam > 1:
            results[split][f"beam{beam}"] = score(
                model, texts[split], beam=beam, length_penalty=length_penalty
            )["metrics"]
            log(f"{split}, beam {beam}: {format_scores(results[split][f'beam{beam}'])}")
    if model.config.attention != "none" and distributed.is_main():
        first = texts.get("test", texts["val"])[0][0]
        path = draw_attention(model, first, out / "attention.png", beam=beam)
        log(f"attention of {first[:60]!r}: {path}")
    return results


def describe(model: Seq2Seq, device: torch.device) -> str:
    c = model.config
    tips = [
        name
        for name, on in (
            ("shared encoder-decoder weights", not c.separate_weights),
            ("context every step", c.context_every_step),
            ("no previous token fed", not c.feed_previous),
            ("source reversed", c.reverse_source),
        )
        if on
    ]
    direction = "bidirectional " if c.bidirectional else ""
    return (
        f"{c.num_layers}x{c.hidden_size} {direction}{c.cell.upper()} encoder "
        f"({model.encoder.backend(device)}), {c.attention} attention"
        + (f", {', '.join(tips)}" if tips else "")
    )


def load(path: PathLike, *, device: str | torch.device = "cpu") -> Seq2Seq:
    """The :class:`Seq2Seq` saved at `path` (a run directory or checkpoint), in eval mode."""
    ckpt: Checkpoint = load_checkpoint(resolve_checkpoint(path), expected_kind=KIND)
    config = config_from_dict(Seq2SeqConfig, ckpt.meta["model"])
    model = Seq2Seq(
        config,
        WordVocab.from_dict(ckpt.meta["source_vocab"]),
        WordVocab.from_dict(ckpt.meta["target_vocab"]),
        make_sides(config, ckpt.meta.get("subwords")),
    )
    model.load_state_dict(ckpt.model_state)
    model.meta = ckpt.meta
    return model.to(device).eval()


def gradient_probe(
    model: Seq2Seq, *, batch_size: int = PROBE_SIZE, log: Callable[[str], None] = print
) -> Callable[[Seq2Seq], Tensor]:
    """The run's teacher-forced loss on its first `batch_size` validation pairs, one
    padded batch as in training (``rnnkit gradients RUN``): the validation split rebuilt
    from the run's own data (a built-in set's, its ``--val`` file, or the same
    ``val_fraction`` of its training file). `model` comes from :func:`load`."""
    meta = model.meta
    source = meta["data"]
    tc = config_from_dict(TrainConfig, meta["train"])
    files = {k: source.get(k) for k in ("train", "val", "test")}
    texts, _ = load_pairs(data=source.get("data"), files=files, val_fraction=tc.val_fraction,
                          log=log)  # fmt: skip
    where = f"{source.get('data') or source.get('val') or source.get('train')} (val)"
    val = encode_pairs(texts["val"][:batch_size], model.config, model.source_vocab,
                       model.target_vocab, where, model.sides)  # fmt: skip
    batch = collate(val, list(range(len(val))))
    return runs.batch_probe(make_step_fn(), batch, model.device)


def read_sources(path: PathLike | None) -> tuple[list[str], list[str]]:
    """The sources of a file (one a line; `path` None: standard input) and their names
    (``FILE:LINE``) for error messages; blank lines are errors too (an empty source)."""
    if path is None:
        text, name = sys.stdin.read(), "<stdin>"
    else:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"Argument `file`: no such file: {p}")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"Argument `file`: {p} is not UTF-8 text ({err.reason})") from None
        name = str(p)
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()  # a trailing newline or two is not an empty source
    if not lines:
        raise ValueError(f"{name}: no sources (the input is empty)")
    return lines, [f"{name}:{n}" for n in range(1, len(lines) + 1)]


def eval_report(
    model: Seq2Seq,
    *,
    test: PathLike | None = None,
    data: str | None = None,
    beam: int = 1,
    length_penalty: float = 0.6,
    attention: int | None = 1,
    plot: PathLike | None = None,
    log: Callable[[str], None] = print,
) -> str:
    """``rnnkit eval`` of an encoder-decoder: the scores on a ``source<TAB>target`` file
    `test`, a built-in set's test split (`data`), or by default the run's own test split
    (else its validation split); and, for an attention model, the heat map of the
    `attention`-th scored source (1-based) in `plot` (default ``attention.png``)."""
    if test is not None:
        texts, name = read_split_file(test), str(test)
    else:
        source = getattr(model, "meta", {}).get("data", {})
        data = data or source.get("data")
        if data is not None:
            splits, name = datasets.get(data, KIND).splits(log), data
        elif source.get("test") or source.get("val"):
            split = "test" if source.get("test") else "val"
            splits, name = {split: read_split_file(source[split])}, source[split]
        else:
            raise ValueError("this run has no held-out file of its own; give --test FILE")
        split = "test" if "test" in splits else "val"
        texts, name = splits[split], f"{name} ({split})"
    r = score(model, texts, beam=beam, length_penalty=length_penalty)
    how = "greedy" if beam == 1 else f"beam {beam}, length penalty {length_penalty}"
    lines = [f"{name}, {how}: {format_scores(r['metrics'])}"]
    if attention is not None and model.config.attention != "none":
        if not 1 <= attention <= len(r["sources"]):
            raise ValueError(
                f"Argument `attention` must lie in [1, {len(r['sources'])}] (a scored "
                f"source), got {attention}"
            )
        chosen = r["sources"][attention - 1]
        path = draw_attention(model, chosen, plot or "attention.png", beam=beam)
        lines.append(f"attention while translating {chosen[:60]!r}: {path}")
    return "\n".join(lines)
