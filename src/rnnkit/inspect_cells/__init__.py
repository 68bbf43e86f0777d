"""Looking inside a character model: which cells track what (Karpathy's visualisation).

The lecture's "interpreting cell activations": run a trained :class:`~rnnkit.CharLM`
over a text, record every cell's activation after every character, and colour the
text by one cell (blue -1, white 0, red +1). Most cells look like noise; a few
track something nameable -- the position in the line, being inside quotes, the
nesting depth of brackets in code.

Here, the core:

* :func:`activations` -- per layer a (T, H) array: ``tanh(c_t)`` of an LSTM (the
  memory squashed into [-1, 1], what Karpathy plots) or the hidden state ``h_t``
  (other cells, or ``kind="h"``), plus the model's top-k next-character predictions.
* :func:`rank_cells`, :func:`find_cells` -- the cells ranked by the absolute Pearson
  correlation of their activation with each feature of the text.

In the submodules, their public names re-exported here:

* ``features`` -- :func:`text_features`: per-character features of the text
  (``in_quotes``, ``line_position``, ``bracket_depth``, ``in_comment``,
  ``in_if_block``).
* ``page`` -- :func:`render_html`: one self-contained HTML page (no server, nothing
  fetched): the text coloured by a chosen cell, layer and cell pickers, a legend, and
  on hover the model's top guesses for the next character.

``rnnkit inspect RUN --find --out view.html`` does all of it from the command line.
Layers and cells are numbered from 0 everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.nn import functional as F

from ._checks import check_positive
from .features import FEATURES, text_features
from .page import (
    DEFAULT_PAGE_CHARS,
    NEGATIVE_RGB,
    POSITIVE_RGB,
    QUANT,
    diverging_rgb,
    quantize,
    render_html,
)

__all__ = [
    "inspect",
    # the core
    "KINDS",
    "CellActivations",
    "activations",
    "CellMatch",
    "FoundCells",
    "correlations",
    "rank_cells",
    "find_cells",
    # features of the text
    "FEATURES",
    "text_features",
    # the page
    "DEFAULT_PAGE_CHARS",
    "NEGATIVE_RGB",
    "POSITIVE_RGB",
    "QUANT",
    "diverging_rgb",
    "quantize",
    "render_html",
]

KINDS = ("tanh_c", "h")


# -- activations --------------------------------------------------------------------------


@dataclass
class CellActivations:
    """What :func:`activations` returns.

    Attributes:
        text: the text read (cut to ``max_chars``), T characters.
        layers: per layer a float32 array (T, H): row t is every cell's value after
            reading ``text[t]``.
        kind: ``"tanh_c"`` or ``"h"``, as asked.
        quantity: what was recorded, for display: ``"tanh(c)"`` or ``"h"``.
        top_chars: (T, k) the k likeliest next characters after ``text[t]``, best first.
        top_probs: (T, k) float32, their probabilities.
    """

    text: str
    layers: list[np.ndarray]
    kind: str
    quantity: str
    top_chars: np.ndarray
    top_probs: np.ndarray

    @property
    def predictions(self) -> tuple[np.ndarray, np.ndarray]:
        """``(top_chars, top_probs)``, as :func:`render_html` takes them."""
        return self.top_chars, self.top_probs


@torch.no_grad()
def activations(
    model: torch.nn.Module,
    text: str,
    *,
    kind: str = "tanh_c",
    max_chars: int | None = 20_000,
    top_k: int = 5,
    chunk_size: int = 1_000,
) -> CellActivations:
    """Every cell's activation after every character of `text`, and the predictions.

    The model reads the text once, as one stream from its initial state, in chunks of
    `chunk_size` characters with the state carried from chunk to chunk (so the chunking
    changes nothing but the memory used).

    Args:
        model: a :class:`~rnnkit.CharLM` with unidirectional layers.
        text: the characters to read; all must be in ``model.vocab``.
        kind: ``"tanh_c"``: ``tanh(c_t)`` for LSTM layers (each cell's memory squashed to
            [-1, 1]) and ``h_t`` for GRU and vanilla RNN layers, which have no separate
            memory; ``"h"``: the hidden state ``h_t`` of every layer.
        max_chars: read only the first `max_chars` characters; None reads them all.
        top_k: how many next-character guesses to keep per position.
        chunk_size: characters per forward call.
    """
    if kind not in KINDS:
        raise ValueError(f"Argument `kind` must be one of {KINDS}, got {kind!r}")
    if max_chars is not None:
        check_positive("max_chars", max_chars)
        text = text[:max_chars]
    check_positive("top_k", top_k)
    check_positive("chunk_size", chunk_size)
    if not text:
        raise ValueError("Argument `text` is empty; there is nothing to look at")
    ids = model.encode(text)  # (T,) int64; names unknown characters
    k = min(top_k, model.vocab_size)
    device = model.head.weight.device
    was_training = model.training
    model.eval()
    per_layer: list[list[np.ndarray]] = [[] for _ in model.rnn.layers]
    top_ids, top_probs = [], []
    state = None
    try:
        for start in range(0, len(ids), chunk_size):
            x = ids[start : start + chunk_size].unsqueeze(0).to(device)  # (1, t)
            logits, state, internals = model(x, state, return_internals=True)
            probs, best = F.softmax(logits[0].float(), dim=-1).topk(k, dim=-1)  # (t, k) each
            top_ids.append(best.cpu().numpy())
            top_probs.append(probs.cpu().numpy())
            for l, layer in enumerate(internals):
                if "h" not in layer:  # {"forward": ..., "backward": ...}
                    raise ValueError(
                        f"layer {l} is bidirectional; a language model's cells read left "
                        "to right only"
                    )
                if kind == "tanh_c" and "c" in layer:
                    a = torch.tanh(layer["c"][0])  # (t, H)
                else:
                    a = layer["h"][0]  # (t, H)
                per_layer[l].append(a.float().cpu().numpy())
    finally:
        model.train(was_training)
    has_memory = model.config.cell == "lstm"
    chars = np.array(model.vocab.chars, dtype="<U1")
    return CellActivations(
        text=text,
        layers=[np.concatenate(a) for a in per_layer],
        kind=kind,
        quantity="tanh(c)" if kind == "tanh_c" and has_memory else "h",
        top_chars=chars[np.concatenate(top_ids)],
        top_probs=np.concatenate(top_probs).astype(np.float32),
    )


# -- ranking cells ---------------------------------------------------------------------------


class CellMatch(NamedTuple):
    layer: int
    cell: int
    correlation: float  # Pearson's r between the cell's activation and the feature


@dataclass
class FoundCells:
    """Cells ranked per feature, best first (see :func:`rank_cells`).

    Attributes:
        best: feature name -> the `top` cells of highest ``|correlation|``, best first.
        skipped: features that are constant over the text (no correlation exists).
        feature_means: feature name -> its mean over the text (e.g. the fraction of
            characters inside quotes).
        chars: the number of characters the correlations are over.
    """

    best: dict[str, list[CellMatch]]
    skipped: list[str]
    feature_means: dict[str, float]
    chars: int

    def table(self) -> str:
        """The ranking as a plain-text table, one row per feature."""
        top = max((len(m) for m in self.best.values()), default=0)
        head = f"{'feature':14s} {'mean':>7s}  " + "  ".join(
            f"{f'#{i + 1} layer:cell  r':>19s}" for i in range(top)
        )
        lines = [f"cells ranked by |Pearson r| with each feature over {self.chars:,} chars", head]
        for name, matches in self.best.items():
            cells = "  ".join(f"{f'{m.layer}:{m.cell}':>12s} {m.correlation:+.3f}" for m in matches)
            lines.append(f"{name:14s} {self.feature_means[name]:7.2f}  {cells}")
        if self.skipped:
            lines.append(f"skipped (constant over the text): {', '.join(self.skipped)}")
        return "\n".join(lines)


def correlations(acts: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson's r of each column of `acts` (T, H) with `feature` (T,): (H,).

    A column that never changes has no correlation; it gets 0.
    """
    a = acts.astype(np.float64)
    a = a - a.mean(0)  # (T, H)
    f = feature.astype(np.float64) - feature.mean()  # (T,)
    norms = np.sqrt((a * a).sum(0)) * np.sqrt((f * f).sum())  # (H,)
    r = np.zeros(a.shape[1])
    ok = norms > 0
    r[ok] = (a[:, ok].T @ f) / norms[ok]
    return r


def rank_cells(
    layers: Sequence[np.ndarray], features: Mapping[str, np.ndarray], *, top: int = 5
) -> FoundCells:
    """Rank all cells of all `layers` ((T, H) each) by ``|r|`` with each feature (T,).

    Features with a single value over the text are skipped and listed in
    :attr:`FoundCells.skipped`.
    """
    check_positive("top", top)
    T = len(layers[0])
    for name, f in features.items():
        if len(f) != T:
            raise ValueError(f"feature {name!r} has {len(f)} values, the activations {T}")
    where = [(l, h) for l, a in enumerate(layers) for h in range(a.shape[1])]
    best, skipped, means = {}, [], {}
    for name, f in features.items():
        means[name] = float(np.mean(f))
        if np.all(f == f[0]):
            skipped.append(name)
            continue
        r = np.concatenate([correlations(a, f) for a in layers])  # (sum of H,)
        order = np.argsort(-np.abs(r), kind="stable")[:top]
        best[name] = [CellMatch(*where[i], float(r[i])) for i in order]
    return FoundCells(best=best, skipped=skipped, feature_means=means, chars=T)


def find_cells(
    model: torch.nn.Module,
    text: str,
    *,
    kind: str = "tanh_c",
    max_chars: int | None = 20_000,
    top: int = 5,
) -> FoundCells:
    """The cells of `model` that best track each of :data:`FEATURES` over `text`.

    :func:`activations` of `text` ranked by :func:`rank_cells` against
    :func:`text_features` (whose docstring defines the features). A few thousand
    characters are needed for the ranking to mean much; the features that never
    change over the text (no comments in Shakespeare) are skipped.
    """
    acts = activations(model, text, kind=kind, max_chars=max_chars)
    return rank_cells(acts.layers, text_features(acts.text), top=top)


def inspect(
    model: torch.nn.Module,
    text: str,
    out: str | Path,
    *,
    source: str,
    title: str,
    kind: str = "tanh_c",
    max_chars: int = DEFAULT_PAGE_CHARS,
    page_chars: int = DEFAULT_PAGE_CHARS,
    find: bool = False,
    top: int = 3,
    only_found: bool = False,
    layer: int | None = None,
    cell: int | None = None,
    log=print,
) -> Path:
    """``rnnkit inspect``: read `text` with a character model, optionally rank its cells
    by the text's features (`find`), and write the page to `out`, opening on `layer` and
    `cell` (or the best found). `source` says where the text came from."""
    check_positive("max_chars", max_chars)
    check_positive("page_chars", page_chars)
    check_positive("top", top)
    sizes = [la.hidden_size for la in model.rnn.layers]
    if layer is not None and not 0 <= layer < len(sizes):
        raise ValueError(
            f"Argument `layer` must be in 0..{len(sizes) - 1} (the model has {len(sizes)} "
            f"layers), got {layer}"
        )
    if cell is not None:
        l = layer or 0
        if not 0 <= cell < sizes[l]:
            raise ValueError(
                f"Argument `cell` must be in 0..{sizes[l] - 1} (layer {l} has {sizes[l]} "
                f"cells), got {cell}"
            )
    acts = activations(model, text, kind=kind, max_chars=max_chars)
    cfg = model.config
    log(
        f"read {len(acts.text):,} characters of {source} with a {cfg.num_layers}x"
        f"{cfg.hidden_size} {cfg.cell.upper()}: {acts.quantity} of {sum(sizes)} cells"
    )
    highlights, cells_to_show = [], None
    if find:
        found = rank_cells(acts.layers, text_features(acts.text), top=top)
        log(found.table())
        ranked = sorted(
            ((name, m) for name, ms in found.best.items() for m in ms),
            key=lambda nm: -abs(nm[1].correlation),
        )
        highlights = [(name, m.layer, m.cell, m.correlation) for name, m in ranked]
        if only_found:
            cells_to_show = [(m.layer, m.cell) for _, m in ranked]
    if layer is not None and cell is None:
        cell = 0
    if cell is not None and layer is None:
        layer = 0
    return render_html(
        acts.text,
        acts.layers,
        acts.predictions,
        out,
        cells_to_show=cells_to_show,
        layer=layer,
        cell=cell,
        highlights=highlights,
        quantity=acts.quantity,
        title=title,
        about=f"Text: {source}.",
        max_chars=page_chars,
    )
