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
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.sequences import LabelVocab, read_tsv
from ..structures import POOLS, ManyToOne
from .seqtask import (
    EncoderConfig,
    Examples,
    InputLayer,
    InputSpec,
    PathLike,
    RawSplit,
    RunConfig,
    Task,
    array_examples,
    build_encoder,
    classification_metrics,
    load_task_model,
    read_npz,
    run_model,
    split_indices,
    tokenize,
    train_task,
    word_examples,
)

KIND = "classify"


@dataclass
class ClassifyConfig(EncoderConfig):
    """The classifier: inputs, encoder (see :class:`EncoderConfig`) and the summary."""

    pool: str = "last"  # "last" | "mean" | "max"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pool not in POOLS:
            raise ValueError(f"Argument `pool` must be one of {POOLS}, got {self.pool!r}")


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

BUILTIN = (
    "movie-reviews",
    "mnist-rows",
    "mnist-pixels",
    "mnist-permuted",
    "basic-motions",
    "japanese-vowels",
)

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


def read_tsv_split(path: PathLike) -> RawSplit:
    rows = read_tsv(path, with_lines=True)
    tokens = []
    for _, text, n in rows:
        t = tokenize(text)
        if not t:
            raise ValueError(f"{path}:{n}: the text {text!r} has no words")
        tokens.append(t)
    return RawSplit(tokens, None, None, [r[0] for r in rows], [f"{path}:{r[2]}" for r in rows])


def read_split(path: PathLike) -> RawSplit:
    """A user's file: ``.npz`` numeric sequences, anything else TSV."""
    return read_npz(path, per_step=False) if str(path).endswith(".npz") else read_tsv_split(path)


def builtin_splits(name: str, log: Callable[[str], None] = print) -> dict[str, RawSplit]:
    """{"train", "val" (or absent: held out of train), "test"} of a built-in set."""
    if name == "movie-reviews":
        from ..data.sequences import fetch_dataset

        whole = read_tsv_split(fetch_dataset(name, log=log))
        rest, test = split_indices(len(whole), 0.1, seed=0)  # a fixed tenth for the test
        return {"train": whole.subset(rest), "test": whole.subset(test)}
    if name.startswith("mnist-"):
        from ..data.digits import as_sequences, fetch_mnist, load_mnist

        sets = load_mnist(fetch_mnist(log=log))
        out = {}
        for split, (images, labels) in sets.items():
            x = as_sequences(images, name.removeprefix("mnist-"))
            out[split] = RawSplit(
                None,
                x,
                np.full(len(x), x.shape[1]),
                [str(int(v)) for v in labels],
                [f"{name}/{split}[{i}]" for i in range(len(x))],
            )
        return out
    if name in ("basic-motions", "japanese-vowels"):
        from ..data.signals import fetch_signals, load_signals

        sets = load_signals(name, fetch_signals(name, log=log))
        classes = sets["classes"]
        return {
            split: RawSplit(
                None,
                x,
                lengths,
                [str(classes[int(v)]) for v in y],
                [f"{name}/{split}[{i}]" for i in range(len(y))],
            )
            for split in ("train", "test")
            for x, lengths, y in [sets[split]]
        }
    raise ValueError(f"unknown data set {name!r} for classify; valid names: {', '.join(BUILTIN)}")


# -- training and evaluation ----------------------------------------------------------------


@torch.no_grad()
def evaluate(model: SequenceClassifier, examples: Examples) -> dict[str, Any]:
    """Loss, accuracy and macro-F1 on labelled `examples`, with the predictions."""
    y_pred = np.zeros(len(examples), dtype=np.int64)
    loss = 0.0
    for idx, batch, logits in run_model(model, examples):
        loss += float(F.cross_entropy(logits.float(), batch["y"], reduction="sum"))
        y_pred[idx] = logits.argmax(-1).cpu().numpy()
    y_true = np.asarray(examples.targets, dtype=np.int64)
    metrics = {"loss": loss / len(examples)}
    metrics.update(classification_metrics(y_true, y_pred, len(model.labels)))
    return {"metrics": metrics, "y_true": y_true, "y_pred": y_pred}


def step_fn(model: SequenceClassifier, batch: dict[str, Tensor]):
    logits = model(batch)  # (B, K)
    return F.cross_entropy(logits, batch["y"]), {"items": batch["lengths"].numel()}


def task() -> Task:
    """This task for :func:`rnnkit.seqtask.train_task`."""
    return Task(
        kind=KIND,
        config_cls=ClassifyConfig,
        model_cls=SequenceClassifier,
        per_step=False,
        items="seqs",
        tokenizer="words",
        builtin_splits=builtin_splits,
        read_split=read_split,
        step_fn=step_fn,
        evaluate=evaluate,
        format_metrics=format_metrics,
        score=lambda labels: "accuracy",
    )


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
    log: Callable[[str], None] = print,
) -> tuple[SequenceClassifier, dict]:
    """Train a classifier into run directory `out` on a built-in set (`data`) or the user's
    files (`train`, optional `val` and `test`); return it with the best validation
    weights, and the results (validation and test metrics), also in ``out/results.json``.
    ``resume=True`` continues the run in `out` exactly, with its own settings and data."""
    files = {"train": train, "val": val, "test": test}
    return train_task(task(), out, config, run, data=data, files=files, resume=resume, log=log)


def format_metrics(m: dict[str, float]) -> str:
    return f"accuracy {m['accuracy']:.2f}%, macro-F1 {m['macro_f1']:.2f}"


def load(path: PathLike, *, device: str | torch.device = "cpu") -> SequenceClassifier:
    """The model saved at `path` (a run directory or a checkpoint), in eval mode."""
    return load_task_model(path, KIND, SequenceClassifier, ClassifyConfig, device)
