"""Metrics and their pictures, shared by the tasks: accuracy and macro-F1
(scikit-learn), the confusion matrix, the entropy of a distribution; for generated
sequences BLEU and chrF (sacrebleu), exact matches and token error rates (rapidfuzz's edit
distance) against one or several references, and the attention heat map."""

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


def sequence_scores(
    hypotheses: Sequence[Sequence[str]],
    references: Sequence[Sequence[Sequence[str]]],
    *,
    joiner: str = " ",
    texts: tuple[Sequence[str], Sequence[Sequence[str]]] | None = None,
) -> dict[str, float]:
    """Scores of generated token sequences, each against one or more references.

    Args:
        hypotheses: N token lists.
        references: for each hypothesis its references (one or more token lists), e.g.
            a word's alternative pronunciations.
        joiner: how tokens join into the text BLEU and chrF read ("" for characters).
        texts: the texts BLEU and chrF read instead of joined tokens: the detokenized
            hypotheses and, for each, its references as written. Sentences should be
            scored so (sacrebleu's standard: its own tokenisation of plain text); joined
            tokens put spaces before punctuation and change the score.

    Returns (all in percent):
        ``exact``: hypotheses equal to one of their references (for pronunciations:
        100 minus the word error rate);
        ``token_error``: edits (substitutions, deletions, insertions of tokens) to the
        closest reference over that reference's tokens, summed over the corpus (for
        pronunciations: the phoneme error rate; for sentences: the word error rate);
        ``bleu`` and ``chrf``: sacrebleu's corpus BLEU (13a tokenisation) and chrF over
        the joined texts, every reference counted.
    """
    import sacrebleu
    from rapidfuzz.distance import Levenshtein

    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError(
            f"Argument `references`: {len(references)} reference lists for "
            f"{len(hypotheses)} hypotheses (need as many, at least one)"
        )
    exact, edits, ref_tokens = 0, 0, 0
    for hyp, refs in zip(hypotheses, references):
        hyp = list(hyp)
        # the closest reference: fewest edits (on token lists, so a space is a token too)
        cost, ref = min((Levenshtein.distance(hyp, list(r)), list(r)) for r in refs)
        exact += cost == 0
        edits, ref_tokens = edits + cost, ref_tokens + len(ref)
    if texts is None:
        texts = (
            [joiner.join(h) for h in hypotheses],
            [[joiner.join(r) for r in refs] for refs in references],
        )
    hyp_texts, ref_texts = texts
    if len(hyp_texts) != len(hypotheses) or len(ref_texts) != len(hypotheses):
        raise ValueError(
            f"Argument `texts`: {len(hyp_texts)} hypothesis and {len(ref_texts)} reference "
            f"texts for {len(hypotheses)} hypotheses (need as many)"
        )
    width = max(len(r) for r in ref_texts)
    streams = [  # sacrebleu wants equal streams: a repeated reference changes nothing
        [refs[min(i, len(refs) - 1)] for refs in ref_texts] for i in range(width)
    ]
    return {
        "exact": 100.0 * exact / len(hypotheses),
        "token_error": 100.0 * edits / max(ref_tokens, 1),
        "bleu": float(sacrebleu.corpus_bleu(list(hyp_texts), streams).score),
        "chrf": float(sacrebleu.corpus_chrf(list(hyp_texts), streams).score),
    }


def plot_attention(
    weights: np.ndarray,
    source: Sequence[str],
    target: Sequence[str],
    path: PathLike,
    title: str = "",
) -> Path:
    """The attention heat map: one row per generated token (down), one column per source
    token (across); a cell is how much the token attended to that source position."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = np.asarray(weights, dtype=np.float32)
    if weights.shape != (len(target), len(source)):
        raise ValueError(
            f"Argument `weights`: shape {weights.shape}, expected (target, source) = "
            f"({len(target)}, {len(source)})"
        )
    w, h = 2.5 + 0.32 * len(source), 1.8 + 0.32 * len(target)
    fig, ax = plt.subplots(figsize=(min(w, 24.0), min(h, 24.0)), dpi=110)
    im = ax.imshow(weights, cmap="Greys", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(source)), source, rotation=90, fontsize=8)
    ax.set_yticks(range(len(target)), target, fontsize=8)
    ax.set_xlabel("source")
    ax.set_ylabel("generated")
    if title:
        ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, label="attention weight")
    fig.tight_layout()
    return save_figure(fig, path)
