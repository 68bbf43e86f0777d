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

from .seqdata import LabelVocab, read_tsv
from .seqtask import (
    BucketBatches,
    EncoderConfig,
    Examples,
    InputLayer,
    InputSpec,
    PathLike,
    RawSplit,
    RunConfig,
    build_encoder,
    build_spec,
    check_numeric,
    classification_metrics,
    device_of,
    encode_split,
    fit_run,
    hold_out,
    load_splits,
    load_task_model,
    meta_for,
    read_npz,
    report,
    resume_settings,
    run_model,
    seed_all,
    split_indices,
    start_run,
    tokenize,
)
from .structures import POOLS, ManyToOne

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

    def predict(self, texts: Sequence[str], *, top: int = 1) -> list[list[tuple[str, float]]]:
        """The `top` (label, probability) pairs of each text, most likely first."""
        if self.spec.kind != "words":
            raise ValueError("this model reads numeric sequences; use predict_arrays")
        tokens = []
        for n, text in enumerate(texts):
            t = self.spec.split(text)
            if not t:
                raise ValueError(f"Argument `texts`: example {n} has no words: {text!r}")
            tokens.append(t)
        inputs = [self.spec.encode_words(t) for t in tokens]
        return self._predict(Examples(inputs, [None] * len(inputs)), top)

    def predict_arrays(
        self, x: np.ndarray, lengths: np.ndarray | None = None, *, top: int = 1
    ) -> list[list[tuple[str, float]]]:
        """As :meth:`predict` for numeric sequences x (N, T[, C])."""
        if self.spec.kind != "numeric":
            raise ValueError("this model reads text; use predict")
        x, lengths = check_numeric(x, lengths, "Argument `x`")
        if x.shape[2] != self.spec.features:
            raise ValueError(
                f"Argument `x` must have {self.spec.features} channels per step, got {x.shape[2]}"
            )
        inputs = [{"x": x[i, : lengths[i]]} for i in range(len(x))]
        return self._predict(Examples(inputs, [None] * len(inputs)), top)


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
                   {"epochs": 40, "batch_size": 64, "lr": 3e-3}),
    "mnist-pixels": ({"hidden_size": 128, "bidirectional": False},
                     {"epochs": 6, "batch_size": 64, "lr": 2e-3, "clip_norm": 1.0}),
    "mnist-permuted": ({"hidden_size": 128, "bidirectional": False},
                       {"epochs": 6, "batch_size": 64, "lr": 2e-3, "clip_norm": 1.0}),
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
    return RawSplit(
        tokens,
        None,
        None,
        [r[0] for r in rows],
        [f"{path}:{r[2]}" for r in rows],
        [r[1] for r in rows],
    )


def read_split(path: PathLike) -> RawSplit:
    """A user's file: ``.npz`` numeric sequences, anything else TSV."""
    return read_npz(path, per_step=False) if str(path).endswith(".npz") else read_tsv_split(path)


def builtin_splits(name: str, log: Callable[[str], None] = print) -> dict[str, RawSplit]:
    """{"train", "val" (or absent: held out of train), "test"} of a built-in set."""
    if name == "movie-reviews":
        from .seqdata import fetch_dataset

        whole = read_tsv_split(fetch_dataset(name, log=log))
        rest, test = split_indices(len(whole), 0.1, seed=0)  # a fixed tenth for the test
        return {"train": whole.subset(rest), "test": whole.subset(test)}
    if name.startswith("mnist-"):
        from .digits import as_sequences, fetch_mnist, load_mnist

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
        from .signals import fetch_signals, load_signals

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
    """Train a classifier into run directory `out`; return it (best weights) and the
    results (validation and test metrics), also written to ``out/results.json``."""
    out, ckpt = start_run(out, resume, KIND)
    if ckpt is not None:  # the run's own settings and data
        config, run, data, files = resume_settings(ckpt, ClassifyConfig, run)
    else:
        files = {"train": train, "val": val, "test": test}
    config, run = config or ClassifyConfig(), run or RunConfig()
    splits, source = load_splits(data, files, builtin_splits, read_split, log)
    tr, va = hold_out(splits["train"], splits.get("val"), run.val_fraction)
    spec = build_spec(tr, config)
    labels = LabelVocab.build(tr.labels)
    if ckpt is not None:
        spec = InputSpec.from_dict(ckpt.meta["input"])
        labels = LabelVocab.from_dict(ckpt.meta["labels"])
    train_ex = encode_split(tr, spec, labels, per_step=False)
    val_ex = encode_split(va, spec, labels, per_step=False)
    test_ex = (
        encode_split(splits["test"], spec, labels, per_step=False) if "test" in splits else None
    )

    seed_all(run.seed)
    model = SequenceClassifier(config, spec, labels)
    if spec.kind == "numeric":
        model.inputs.set_standardization(tr.x, tr.lengths)
    batches = BucketBatches(train_ex, run.batch_size, run.seed)
    meta = meta_for(KIND, config, spec, labels, run, source)
    if ckpt is None:
        n_params = sum(p.numel() for p in model.parameters())
        log(
            f"classify {data or train}: {len(train_ex):,} training, {len(val_ex):,} validation"
            f"{f', {len(test_ex):,} test' if test_ex else ''} examples, {len(labels)} labels; "
            f"{describe(model, device_of(run))}, {n_params / 1e6:.2f} M parameters"
        )
    fit_run(
        out,
        model,
        step_fn,
        batches,
        lambda m: evaluate(m, val_ex)["metrics"],
        run,
        meta,
        score="accuracy",
        items="seqs",
        resume_from=ckpt,
        log=log,
    )
    best = load(out / "best", device=device_of(run))
    return best, report(best, out, val_ex, test_ex, evaluate, format_metrics, log)


def describe(model: nn.Module, device: torch.device) -> str:
    c = model.config
    direction = "bidirectional " if c.bidirectional else ""
    extra = ""
    if c.cell == "rnn":
        extra = f" {c.nonlinearity}"
    if c.init:
        extra += f", init {c.init}"
    return (
        f"{c.num_layers}x{c.hidden_size} {direction}{c.cell.upper()}{extra} "
        f"({model.encoder.backend(device)})"
    )


def format_metrics(m: dict[str, float]) -> str:
    return f"accuracy {m['accuracy']:.2f}%, macro-F1 {m['macro_f1']:.2f}"


def load(path: PathLike, *, device: str | torch.device = "cpu") -> SequenceClassifier:
    """The model saved at `path` (a run directory or a checkpoint), in eval mode."""
    return load_task_model(path, KIND, SequenceClassifier, ClassifyConfig, device)
