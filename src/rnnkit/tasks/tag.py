"""Sequence tagging, the lecture's aligned "many to many": a tag for every word
(parts of speech, named entities), where a bidirectional encoder sees both sides of
each word ("Teddy bear" against "Teddy Roosevelt").

    words (B, T) -> embedding [+ characters] -> rnnkit encoder (B, T, F)
        -> linear emissions (B, T, K) -> softmax per step, or a linear-chain CRF

With the CRF (``crf=True``) training minimises -log p(tags | words) of the whole tag
sequence and prediction is the Viterbi path (:class:`~rnnkit.crf.LinearChainCRF`).
Metrics: token accuracy and macro-F1 over tags (scikit-learn) and, for BIO tags,
entity precision, recall and F1 with ``seqeval`` (an entity counts only when its
type and both ends are right).

Data: a built-in set (:data:`BUILTIN`), a CoNLL-style file (``token<TAB>tag`` lines,
a blank line between sentences), or an ``.npz`` of numeric sequences with a tag per
step (``x`` (N, T[, C]), ``y`` (N, T), optional ``lengths``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import data as datasets
from .. import distributed, runs
from ..batching import lengths_to_mask
from ..crf import LinearChainCRF
from ..data.readers import LabelVocab, RawSplit, read_conll_split, read_npz
from ..metrics import classification_metrics
from . import sequences as seq
from .sequences import (
    EncoderConfig,
    Examples,
    InputLayer,
    InputSpec,
    PathLike,
    RunConfig,
    array_examples,
    build_encoder,
    run_model,
    word_examples,
)

KIND = "tag"


@dataclass
class TagConfig(EncoderConfig):
    """The tagger: inputs, encoder (see :class:`EncoderConfig`) and the output layer."""

    crf: bool = False  # a linear-chain CRF over the tags instead of a softmax per step


CONFIG = TagConfig  # what `rnnkit train tag` builds its model options from


class SequenceTagger(nn.Module):
    """Inputs -> encoder -> dropout -> linear emissions per step [-> CRF]."""

    def __init__(self, config: TagConfig, spec: InputSpec, tags: LabelVocab) -> None:
        super().__init__()
        self.config, self.spec, self.labels = config, spec, tags
        self.inputs = InputLayer(spec, config)
        self.encoder = build_encoder(config, self.inputs.output_size)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(self.encoder.output_size, len(tags))
        self.crf = LinearChainCRF(len(tags)) if config.crf else None

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """batch["x"] (B, T) ids or (B, T, C) frames, batch["lengths"] (B,) ->
        emissions (B, T, K); padded steps are to be masked by the caller."""
        outputs, _ = self.encoder(self.inputs(batch), lengths=batch["lengths"].cpu())
        return self.head(self.drop(outputs))

    def loss(self, emissions: Tensor, tags: Tensor, lengths: Tensor) -> Tensor:
        """Mean over valid steps: cross-entropy per step, or the CRF's -log p(tags)."""
        if self.crf is None:
            return F.cross_entropy(emissions.flatten(0, 1), tags.flatten(), ignore_index=-100)
        mask = lengths_to_mask(lengths, emissions.shape[1]).to(emissions.device)
        return self.crf.nll(emissions.float(), tags.clamp(min=0), mask)

    def decode(self, emissions: Tensor, lengths: Tensor) -> list[list[int]]:
        """Tag ids per sequence, cut to its length: Viterbi with the CRF, else argmax."""
        if self.crf is not None:
            mask = lengths_to_mask(lengths, emissions.shape[1]).to(emissions.device)
            return self.crf.decode(emissions.float(), mask)
        best = emissions.argmax(-1).cpu().numpy()
        return [best[b, :n].tolist() for b, n in enumerate(lengths.tolist())]

    def _tag(self, examples: Examples) -> list[list[str]]:
        out: list[Any] = [None] * len(examples)
        names = self.labels.labels
        for idx, batch, emissions in run_model(self, examples):
            for i, path in zip(idx, self.decode(emissions, batch["lengths"])):
                out[i] = [names[k] for k in path]
        return out

    def predict(self, sentences: Sequence[str | Sequence[str]]) -> list[list[str]]:
        """Tags of each sentence: a list of tokens, or a string split at whitespace."""
        return self._tag(word_examples(self.spec, sentences, "sentences"))

    def predict_arrays(self, x: np.ndarray, lengths: np.ndarray | None = None) -> list[list[str]]:
        """Tags of numeric sequences x (N, T[, C])."""
        return self._tag(array_examples(self.spec, x, lengths))


# -- data ---------------------------------------------------------------------------------

BUILTIN = tuple(datasets.names("tag"))  # the registry's labelled sets for this task

# The settings of the README's results table, per built-in set: (model, run) overrides.
PRESETS: dict[str, tuple[dict, dict]] = {
    "brown-pos": ({"hidden_size": 128, "chars": True, "dropout": 0.25, "min_freq": 2},
                  {"epochs": 2, "batch_size": 32, "lr": 3e-3, "evals_per_epoch": 2}),
    "tweets-ner": ({"hidden_size": 100, "chars": True, "dropout": 0.3, "crf": True},
                   {"epochs": 20, "batch_size": 16}),
}  # fmt: skip


def read_split(path: PathLike) -> RawSplit:
    """A user's file: ``.npz`` numeric sequences, anything else CoNLL columns."""
    return read_npz(path, per_step=True) if str(path).endswith(".npz") else read_conll_split(path)


# -- training and evaluation ----------------------------------------------------------------


def is_bio(tags: Sequence[str]) -> bool:
    """Whether the tag set is BIO-style entity spans (B-X / I-X / O)."""
    return any(t.startswith("B-") for t in tags) and all(
        t == "O" or t[:2] in ("B-", "I-") for t in tags
    )


@torch.no_grad()
def evaluate(model: SequenceTagger, examples: Examples) -> dict[str, Any]:
    """Loss, token accuracy, macro-F1 over tags and, for BIO tags, entity P/R/F1; with
    the flat tag ids (``y_true``, ``y_pred``) and the tag names per sentence (``tags``:
    gold, predicted)."""
    paths: list[tuple[int, list[int]]] = []  # this rank's share under torchrun
    loss = steps = 0.0
    for idx, batch, emissions in run_model(model, examples, sharded=True):
        n = float(batch["lengths"].sum())
        loss += float(model.loss(emissions, batch["y"], batch["lengths"])) * n
        steps += n
        paths += zip(idx, model.decode(emissions, batch["lengths"]))
    loss, steps = distributed.sum_floats(loss, steps)
    pred = distributed.gather_by_index(len(examples), paths)
    y_true = np.concatenate(examples.targets)
    y_pred = np.concatenate([np.asarray(p, dtype=np.int64) for p in pred])
    metrics = {"loss": loss / steps}
    metrics.update(classification_metrics(y_true, y_pred, len(model.labels)))
    names = model.labels.labels
    gold = [[names[k] for k in t] for t in examples.targets]
    guess = [[names[k] for k in p] for p in pred]
    if is_bio(names):
        from seqeval.metrics import f1_score, precision_score, recall_score

        metrics["entity_precision"] = 100.0 * precision_score(gold, guess, zero_division=0)
        metrics["entity_recall"] = 100.0 * recall_score(gold, guess, zero_division=0)
        metrics["entity_f1"] = 100.0 * f1_score(gold, guess, zero_division=0)
    return {"metrics": metrics, "y_true": y_true, "y_pred": y_pred, "tags": (gold, guess)}


def step_fn(model: SequenceTagger, batch: dict[str, Tensor]):
    emissions = model(batch)  # (B, T, K)
    loss = model.loss(emissions, batch["y"], batch["lengths"])
    return loss, {"items": batch["lengths"].sum()}


def train(
    out: PathLike,
    config: TagConfig | None = None,
    run: RunConfig | None = None,
    *,
    data: str | None = None,
    train: PathLike | None = None,
    val: PathLike | None = None,
    test: PathLike | None = None,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> tuple[SequenceTagger, dict]:
    """Train a tagger into run directory `out` on a built-in set (`data`) or the user's
    files (`train`, optional `val` and `test`); return it with the best validation
    weights, and the results (validation and test metrics), also in ``out/results.json``.
    ``resume=True`` continues the run in `out` exactly, with its own settings and data
    (`progress`, when given, switches the progress bar on or off)."""
    files = {"train": train, "val": val, "test": test}
    p = seq.prepare(
        KIND,
        TagConfig,
        out,
        config,
        run,
        data=data,
        files=files,
        read=read_split,
        per_step=True,
        tokenizer="whitespace",
        resume=resume,
        progress=progress,
        log=log,
    )
    model = seq.new_model(p, SequenceTagger)
    seq.log_start(p, model, "tags", log)
    metric = "entity_f1" if is_bio(p.labels.labels) else "accuracy"
    seq.fit(p, model, step_fn, evaluate, metric=metric, items="tokens", log=log)
    best = load(p.out / "best", device=p.device)
    return best, seq.report(best, p, evaluate, format_metrics, log)


def format_metrics(m: dict[str, float]) -> str:
    text = f"token accuracy {m['accuracy']:.2f}%, macro-F1 {m['macro_f1']:.2f}"
    if "entity_f1" in m:
        text += (
            f", entities P {m['entity_precision']:.2f} R {m['entity_recall']:.2f} "
            f"F1 {m['entity_f1']:.2f}"
        )
    return text


def gradient_probe(
    model: SequenceTagger, *, batch_size: int = seq.PROBE_SIZE, log: Callable[[str], None] = print
) -> Callable[[SequenceTagger], Tensor]:
    """The run's training loss on its first `batch_size` validation examples (``rnnkit
    gradients RUN``), held out of its own data as in training."""
    batch = seq.probe_batch(seq.validation_split(model, read_split, log), batch_size)
    return runs.batch_probe(step_fn, batch, next(model.parameters()).device)


def load(path: PathLike, *, device: str | torch.device = "cpu") -> SequenceTagger:
    """The model saved at `path` (a run directory or a checkpoint), in eval mode."""
    return seq.load_model(path, KIND, SequenceTagger, TagConfig, device)


def eval_report(
    model: nn.Module,
    *,
    test: PathLike | None = None,
    data: str | None = None,
    plot: PathLike = "confusion.png",
    log: Callable[[str], None] = print,
) -> str:
    """``rnnkit eval``: metrics on the file `test`, else a built-in set's test split
    (`data`, default the run's own), per-label report, and the confusion matrix."""
    name, examples = seq.labelled_split(model, read_split, test=test, data=data, log=log)
    r = evaluate(model, examples)
    if "entity_f1" in r["metrics"]:
        from seqeval.metrics import classification_report

        detail = classification_report(*r["tags"], digits=3, zero_division=0)
    else:
        detail = seq.label_report(r, model.labels.labels)
    return seq.eval_report(model, name, examples, r, format_metrics(r["metrics"]), detail, plot)
