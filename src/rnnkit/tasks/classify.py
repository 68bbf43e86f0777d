"""Sequence classification, the lecture's "many to one": a sentence's sentiment, a
digit read row by row, an activity from sensor traces.

    words or frames (B, T, I) -> rnnkit encoder -> summary (B, F) -> linear -> (B, K)

The summary is the last valid state (both directions' final states for a
bidirectional encoder), or the mean or maximum over the valid steps
(:class:`~rnnkit.structures.ManyToOne`). Loss: cross-entropy. Metrics: accuracy and
macro-F1 (scikit-learn), with a confusion-matrix plot.

Data: a built-in set (:data:`BUILTIN`), a TSV file of ``label<TAB>text`` lines, or an
``.npz`` of numeric sequences (``x`` (N, T[, C]), ``y`` (N,), optional ``lengths``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import data as datasets
from .. import distributed, runs
from ..data.readers import LabelVocab, RawSplit, read_npz, read_tsv_split
from ..metrics import classification_metrics
from ..structures import POOLS, ManyToOne
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

KIND = "classify"


@dataclass
class ClassifyConfig(EncoderConfig):
    """The classifier: inputs, encoder (see :class:`EncoderConfig`) and the summary."""

    pool: Literal["last", "mean", "max"] = "last"  # the summary of the steps

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pool not in POOLS:
            raise ValueError(f"Argument `pool` must be one of {POOLS}, got {self.pool!r}")


CONFIG = ClassifyConfig  # what `rnnkit train classify` builds its model options from


class SequenceClassifier(nn.Module):
    """Inputs -> encoder -> summary -> dropout -> linear: logits over the labels."""

    def __init__(self, config: ClassifyConfig, spec: InputSpec, labels: LabelVocab) -> None:
        super().__init__()
        self.config, self.spec, self.labels = config, spec, labels
        self.inputs = InputLayer(spec, config)
        self.summary = ManyToOne(build_encoder(config, self.inputs.output_size), pool=config.pool)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(self.summary.output_size, len(labels))

    @property
    def encoder(self) -> nn.Module:
        return self.summary.encoder

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """batch["x"] (B, T) ids or (B, T, C) frames, batch["lengths"] (B,) -> (B, K)."""
        lengths = batch["lengths"].cpu()
        return self.head(self.drop(self.summary(self.inputs(batch), lengths)))

    # -- prediction -----------------------------------------------------------------------
    def _predict(self, examples: Examples, top: int) -> list[list[tuple[str, float]]]:
        out: list[Any] = [None] * len(examples)
        for idx, _, logits in run_model(self, examples):
            p, k = F.softmax(logits.float(), -1).topk(min(top, len(self.labels)), -1)
            for row, i in enumerate(idx):
                out[i] = [(self.labels.labels[int(j)], float(q)) for q, j in zip(p[row], k[row])]
        return out

    def predict(
        self, texts: Sequence[str | Sequence[str]], *, top: int = 1
    ) -> list[list[tuple[str, float]]]:
        """The `top` (label, probability) pairs of each text (a string, or a list of
        tokens), most likely first."""
        return self._predict(word_examples(self.spec, texts, "texts"), top)

    def predict_arrays(
        self, x: np.ndarray, lengths: np.ndarray | None = None, *, top: int = 1
    ) -> list[list[tuple[str, float]]]:
        """As :meth:`predict` for numeric sequences x (N, T[, C])."""
        return self._predict(array_examples(self.spec, x, lengths), top)


# -- data ---------------------------------------------------------------------------------

BUILTIN = tuple(datasets.names("classify"))  # the registry's labelled sets for this task

# The settings of the README's results table, per built-in set: (model, run) overrides.
PRESETS: dict[str, tuple[dict, dict]] = {
    "movie-reviews": ({"hidden_size": 64, "dropout": 0.5, "lower": True, "min_freq": 2,
                       "pool": "mean"},
                      {"epochs": 10, "batch_size": 32, "lr": 3e-3, "weight_decay": 1e-5,
                       "evals_per_epoch": 2}),
    "mnist-rows": ({"cell": "gru", "num_layers": 2, "hidden_size": 128, "bidirectional": False,
                    "dropout": 0.3},
                   {"epochs": 40, "batch_size": 64, "lr": 3e-3, "augment": "translate"}),
    "mnist-pixels": ({"hidden_size": 128, "bidirectional": False},
                     {"epochs": 10, "batch_size": 32, "lr": 1e-3, "clip_norm": 1.0}),
    "mnist-permuted": ({"hidden_size": 128, "bidirectional": False},
                       {"epochs": 10, "batch_size": 32, "lr": 1e-3, "clip_norm": 1.0}),
    "basic-motions": ({"hidden_size": 64, "dropout": 0.3, "pool": "max"},
                      {"epochs": 60, "batch_size": 8}),
    "japanese-vowels": ({"hidden_size": 128, "dropout": 0.3}, {"epochs": 40, "batch_size": 16}),
}  # fmt: skip


def read_split(path: PathLike) -> RawSplit:
    """A user's file: ``.npz`` numeric sequences, anything else TSV."""
    return read_npz(path, per_step=False) if str(path).endswith(".npz") else read_tsv_split(path)


# -- training and evaluation ----------------------------------------------------------------


@torch.no_grad()
def evaluate(model: SequenceClassifier, examples: Examples) -> dict[str, Any]:
    """Loss, accuracy and macro-F1 on labelled `examples`, with the predictions."""
    pred: list[tuple[int, int]] = []  # (example, label): this rank's share under torchrun
    loss = 0.0
    for idx, batch, logits in run_model(model, examples, sharded=True):
        loss += float(F.cross_entropy(logits.float(), batch["y"], reduction="sum"))
        pred += zip(idx, logits.argmax(-1).tolist())
    (loss,) = distributed.sum_floats(loss)
    y_pred = np.asarray(distributed.gather_by_index(len(examples), pred), dtype=np.int64)
    y_true = np.asarray(examples.targets, dtype=np.int64)
    metrics = {"loss": loss / len(examples)}
    metrics.update(classification_metrics(y_true, y_pred, len(model.labels)))
    return {"metrics": metrics, "y_true": y_true, "y_pred": y_pred}


def step_fn(model: SequenceClassifier, batch: dict[str, Tensor]):
    logits = model(batch)  # (B, K)
    return F.cross_entropy(logits, batch["y"]), {"items": batch["lengths"].numel()}


def train(
    out: PathLike,
    config: ClassifyConfig | None = None,
    run: RunConfig | None = None,
    *,
    data: str | None = None,
    train: PathLike | None = None,
    val: PathLike | None = None,
    test: PathLike | None = None,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> tuple[SequenceClassifier, dict]:
    """Train a classifier into run directory `out` on a built-in set (`data`) or the user's
    files (`train`, optional `val` and `test`); return it with the best validation
    weights, and the results (validation and test metrics), also in ``out/results.json``.
    ``resume=True`` continues the run in `out` exactly, with its own settings and data
    (`progress`, when given, switches the progress bar on or off)."""
    files = {"train": train, "val": val, "test": test}
    p = seq.prepare(
        KIND,
        ClassifyConfig,
        out,
        config,
        run,
        data=data,
        files=files,
        read=read_split,
        per_step=False,
        tokenizer="words",
        resume=resume,
        progress=progress,
        log=log,
    )
    model = seq.new_model(p, SequenceClassifier)
    seq.log_start(p, model, "labels", log)
    seq.fit(p, model, step_fn, evaluate, metric="accuracy", items="seqs", log=log)
    best = load(p.out / "best", device=p.device)
    return best, seq.report(best, p, evaluate, format_metrics, log)


def format_metrics(m: dict[str, float]) -> str:
    return f"accuracy {m['accuracy']:.2f}%, macro-F1 {m['macro_f1']:.2f}"


def gradient_probe(
    model: SequenceClassifier,
    *,
    batch_size: int = seq.PROBE_SIZE,
    log: Callable[[str], None] = print,
) -> Callable[[SequenceClassifier], Tensor]:
    """The run's training loss on its first `batch_size` validation examples (``rnnkit
    gradients RUN``), held out of its own data as in training."""
    batch = seq.probe_batch(seq.validation_split(model, read_split, log), batch_size)
    return runs.batch_probe(step_fn, batch, next(model.parameters()).device)


def load(path: PathLike, *, device: str | torch.device = "cpu") -> SequenceClassifier:
    """The model saved at `path` (a run directory or a checkpoint), in eval mode."""
    return seq.load_model(path, KIND, SequenceClassifier, ClassifyConfig, device)


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
    detail = seq.label_report(r, model.labels.labels)
    return seq.eval_report(model, name, examples, r, format_metrics(r["metrics"]), detail, plot)
