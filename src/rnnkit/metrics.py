"""Metrics and their pictures, shared by the tasks: accuracy and macro-F1
(scikit-learn), the confusion matrix, the entropy of a distribution."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .checkpoint import save_figure

PathLike = str | os.PathLike


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], n: int) -> dict:
    """Accuracy and macro-averaged F1 (scikit-learn), in percent."""
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "accuracy": 100.0 * accuracy_score(y_true, y_pred),
        "macro_f1": 100.0
        * f1_score(y_true, y_pred, labels=list(range(n)), average="macro", zero_division=0),
    }


def plot_confusion(
    y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str], path: PathLike, title: str
) -> Path:
    """Row-normalised confusion matrix (true label down, predicted across), counts in cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    K = len(labels)
    cm = confusion_matrix(y_true, y_pred, labels=list(range(K)))
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = min(16.0, 2.5 + 0.45 * K)
    fig, ax = plt.subplots(figsize=(size + 1.2, size), dpi=110)
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(K), labels, rotation=90 if K > 4 else 0, fontsize=8)
    ax.set_yticks(range(K), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    if K <= 25:
        for i in range(K):
            for j in range(K):
                if cm[i, j]:
                    colour = "white" if rates[i, j] > 0.5 else "black"
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7, c=colour)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true label's items")
    fig.tight_layout()
    return save_figure(fig, path)


def entropy(counts: np.ndarray) -> float:
    """Entropy in nats of the distribution proportional to `counts`."""
    counts = np.asarray(counts)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())
