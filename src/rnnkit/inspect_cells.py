"""Looking inside a character model: which cells track what (Karpathy's visualisation).

The lecture's "interpreting cell activations": run a trained :class:`~rnnkit.CharLM`
over a text, record every cell's activation after every character, and colour the
text by one cell (blue -1, white 0, red +1). Most cells look like noise; a few
track something nameable -- the position in the line, being inside quotes, the
nesting depth of brackets in code.

* :func:`activations` -- per layer a (T, H) array: ``tanh(c_t)`` of an LSTM (the
  memory squashed into [-1, 1], what Karpathy plots) or the hidden state ``h_t``
  (other cells, or ``kind="h"``), plus the model's top-k next-character predictions.
* :func:`render_html` -- one self-contained HTML page (no server, nothing fetched):
  the text coloured by a chosen cell, layer and cell pickers, a legend, and on hover
  the model's top guesses for the next character.
* :func:`text_features`, :func:`rank_cells`, :func:`find_cells` -- per-character
  features of the text (``in_quotes``, ``line_position``, ``bracket_depth``,
  ``in_comment``, ``in_if_block``) and the cells ranked by the absolute Pearson
  correlation of their activation with each feature.
* ``rnnkit inspect RUN --find --out view.html`` -- all of it from the command line
  (:func:`add_inspect_parser`).

Layers and cells are numbered from 0 everywhere.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.nn import functional as F

from .checkpoint import atomic_write_bytes

PathLike = str | os.PathLike

KINDS = ("tanh_c", "h")
FEATURES = ("in_quotes", "line_position", "bracket_depth", "in_comment", "in_if_block")
DEFAULT_PAGE_CHARS = 5_000  # 2 layers x 256 cells x 5,000 chars: a 3.4 MB page
NEGATIVE_RGB = (33, 102, 172)  # the colour of -1 (blue); white is 0
POSITIVE_RGB = (202, 35, 45)  # the colour of +1 (red)
QUANT = 127  # activations travel to the page as int8: round(a * 127), steps of 0.008


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


def _check_positive(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"Argument `{name}` must be a positive integer, got {value!r}")


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
        _check_positive("max_chars", max_chars)
        text = text[:max_chars]
    _check_positive("top_k", top_k)
    _check_positive("chunk_size", chunk_size)
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


# -- features of the text ------------------------------------------------------------------


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def text_features(text: str) -> dict[str, np.ndarray]:
    """Per-character features of `text`, each a float32 array (T,).

    Every feature describes the state *after reading* character t, as the model's
    activation at t does:

    * ``line_position``: characters since the last newline (0 at the newline itself).
    * ``in_quotes``: 1 inside a double-quoted span, the opening quote included and the
      closing one not. Double quotes only: in prose a single quote is mostly an
      apostrophe ("'tis", "o'er"). A backslash escapes the next character inside a
      string (C's ``"\\""``), and C character literals (``'x'``, ``'\\n'``, ``'"'``)
      are skipped whole. A blank line ends an open quote (at the blank line's newline):
      one stray quote -- a ditto mark, a quotation that runs on into the next paragraph
      -- must not put the rest of a book inside quotes; C strings never span lines.
    * ``bracket_depth``: the nesting depth of ``( [ {`` (closers lower it, never below
      0), outside strings and comments.
    * ``in_comment``: 1 inside a C comment, from the second character of ``/*`` or
      ``//`` up to the ``*`` of ``*/`` (the closing ``/`` is 0) or to the newline
      that ends a ``//`` comment (0).
    * ``in_if_block``: 1 inside the braces of an ``if (...) { ... }`` block of C (also
      ``else if``), nested blocks included: from the opening ``{`` to just before its
      matching ``}``. A heuristic: the keyword ``if``, a parenthesised condition
      balanced to its ``)``, then only whitespace before ``{``. An ``if`` without
      braces or an ``else { ... }`` opens no block; a comment between ``)`` and ``{``
      hides the block; preprocessor lines are read as code.
    """
    T = len(text)
    out = {name: np.zeros(T, dtype=np.float32) for name in FEATURES}
    in_string = escaped = in_line_comment = in_block_comment = False
    comment_start = -1  # index of the '*' that opened the block comment
    last_code_slash = -2  # index of the last '/' read as code
    skip = 0  # characters left of a C character literal
    line_position = depth = 0
    braces: list[bool] = []  # per open '{': does it open an if block?
    if_blocks = 0  # how many of them do
    if_state = None  # None | "paren" (after `if`) | "cond" (inside its ()) | "brace" (after)
    cond_depth = 0
    blank_line = True  # no visible character yet on the current line
    for t, ch in enumerate(text):
        line_position = 0 if ch == "\n" else line_position + 1
        ends_blank_line = ch == "\n" and blank_line
        blank_line = ch == "\n" or (blank_line and ch.isspace())
        if in_line_comment:
            in_line_comment = ch != "\n"
        elif in_block_comment:
            if ch == "/" and text[t - 1] == "*" and t - 1 > comment_start:
                in_block_comment = False
        elif in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"' or ends_blank_line:
                in_string = False
        elif skip:
            skip -= 1
        else:  # code (or prose)
            if ch == '"':
                in_string = True
            elif ch == "'" and t + 2 < T and text[t + 2] == "'" and text[t + 1] != "\\":
                skip = 2  # 'x'
            elif ch == "'" and t + 3 < T and text[t + 1] == "\\" and text[t + 3] == "'":
                skip = 3  # '\n'
            elif ch == "/" and last_code_slash == t - 1:
                in_line_comment = True
            elif ch == "*" and last_code_slash == t - 1:
                in_block_comment, comment_start = True, t
            if ch == "/":
                last_code_slash = t
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth = max(0, depth - 1)
            # the if-block heuristic
            if ch == "{":
                opens_if = if_state == "brace"
                braces.append(opens_if)
                if_blocks += opens_if
                if_state = None
            elif ch == "}":
                if braces:
                    if_blocks -= braces.pop()
                if_state = None
            elif (
                ch == "f"
                and t >= 1
                and text[t - 1] == "i"
                and (t < 2 or not _is_word_char(text[t - 2]))
                and (t + 1 >= T or not _is_word_char(text[t + 1]))
            ):
                if_state = "paren"
            elif if_state == "paren":
                if ch == "(":
                    if_state, cond_depth = "cond", 1
                elif not ch.isspace():
                    if_state = None
            elif if_state == "cond":
                cond_depth += (ch == "(") - (ch == ")")
                if cond_depth == 0:
                    if_state = "brace"
            elif if_state == "brace" and not ch.isspace():
                if_state = None
        out["line_position"][t] = line_position
        out["in_quotes"][t] = in_string
        out["bracket_depth"][t] = depth
        out["in_comment"][t] = in_line_comment or in_block_comment
        out["in_if_block"][t] = if_blocks > 0
    return out


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
    _check_positive("top", top)
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


# -- the HTML page ---------------------------------------------------------------------------


def diverging_rgb(value: float) -> tuple[int, int, int]:
    """The page's colour of an activation: blue at -1, white at 0, red at +1 (clipped).

    The page's JavaScript computes the same (integers rounded half up).
    """
    t = min(1.0, abs(value))
    end = NEGATIVE_RGB if value < 0 else POSITIVE_RGB
    return tuple(math.floor(255 + (e - 255) * t + 0.5) for e in end)


def quantize(acts: np.ndarray) -> np.ndarray:
    """Activations -> int8 ``round(a * 127)``, clipped to [-1, 1] first (a ReLU RNN's h)."""
    return np.round(np.clip(acts, -1.0, 1.0) * QUANT).astype(np.int8)


def _char_span(ch: str) -> str:
    if ch == "\n":  # a visible mark that takes the colour, then the line break
        return '<span class="nl">\u21b5\n</span>'
    return f"<span>{html.escape(ch)}</span>"


def _json_for_script(payload: object) -> str:
    """JSON that cannot end its <script> element early: <, > and & as \\u escapes."""
    s = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(
    text: str,
    acts: Sequence[np.ndarray],
    predictions: tuple[np.ndarray, np.ndarray] | None,
    out_path: PathLike,
    *,
    cells_to_show: Sequence[tuple[int, int]] | None = None,
    layer: int | None = None,
    cell: int | None = None,
    highlights: Sequence[tuple[str, int, int, float]] = (),
    quantity: str = "tanh(c)",
    title: str = "Inside a character model",
    about: str = "",
    max_chars: int = DEFAULT_PAGE_CHARS,
) -> Path:
    """Write one self-contained HTML page that colours `text` by a chosen cell.

    Each character gets the colour of the cell's value after reading it (blue -1,
    white 0, red +1); select elements pick the layer and the cell, hovering a
    character shows the cell's value and the model's top guesses for the next
    character. The page fetches nothing: CSS, JavaScript and data (JSON, the
    activations as base64 int8) are inline. Written atomically.

    Args:
        text: the characters, T of them (only the first `max_chars` are shown).
        acts: per layer an array (T, H), e.g. :attr:`CellActivations.layers`.
        predictions: ``(top_chars, top_probs)``, each (T, k), or None for no guesses.
        out_path: the HTML file to write.
        cells_to_show: ``(layer, cell)`` pairs to put in the page; None: every cell of
            every layer (about T x cells bytes x 4/3: 3.4 MB for 5,000 characters of a
            2 x 256 model).
        layer, cell: the cell shown first; default the first of `highlights`, else the
            first cell shown.
        highlights: ``(label, layer, cell, correlation)`` of cells worth a look (from
            :func:`rank_cells`), offered in their own picker and stored in any case.
        quantity: what the values are, for the labels (``CellActivations.quantity``).
        title, about: the page's heading and a line of description under it.
        max_chars: characters of `text` shown.
    """
    _check_positive("max_chars", max_chars)
    T = len(text)
    if T == 0:
        raise ValueError("Argument `text` is empty; there is nothing to show")
    if not acts:
        raise ValueError("Argument `acts` holds no layers")
    for l, a in enumerate(acts):
        if a.ndim != 2 or a.shape[0] != T:
            raise ValueError(
                f"Argument `acts`: layer {l} has shape {a.shape}, expected ({T}, H) for the "
                f"{T} characters of `text`"
            )
    out_path = Path(out_path)
    if not out_path.parent.is_dir():
        raise FileNotFoundError(f"Argument `out_path`: no such directory: {out_path.parent}")
    sizes = [a.shape[1] for a in acts]

    def check_cell(where: str, l: int, h: int) -> None:
        if not 0 <= l < len(sizes):
            raise ValueError(
                f"Argument `{where}`: layer must be in 0..{len(sizes) - 1} (the model has "
                f"{len(sizes)} layers), got {l}"
            )
        if not 0 <= h < sizes[l]:
            raise ValueError(
                f"Argument `{where}`: cell must be in 0..{sizes[l] - 1} (layer {l} has "
                f"{sizes[l]} cells), got {h}"
            )

    if layer is not None:
        check_cell("layer", layer, 0)
    if cell is not None:
        check_cell("cell", layer if layer is not None else 0, cell)
    highlights = [(str(n), int(l), int(h), float(r)) for n, l, h, r in highlights]
    for _, l, h, _ in highlights:
        check_cell("highlights", l, h)

    if cells_to_show is None:
        shown = {l: set(range(H)) for l, H in enumerate(sizes)}
    else:
        shown = {}
        for l, h in cells_to_show:
            check_cell("cells_to_show", l, h)
            shown.setdefault(l, set()).add(h)
    if layer is None and cell is None and highlights:
        first = highlights[0][1:3]
    elif layer is None and cell is None:
        l0 = min(shown) if shown else 0
        first = (l0, min(shown.get(l0, {0})))
    else:
        first = (layer or 0, cell or 0)
    for l, h in [first, *(hl[1:3] for hl in highlights)]:
        shown.setdefault(l, set()).add(h)

    n = min(T, max_chars)
    text = text[:n]
    layers = []
    for l in sorted(shown):
        cells = sorted(shown[l])
        q = quantize(acts[l][:n, cells].T)  # (cells, n): each cell's values contiguous
        layers.append(
            {"layer": l, "cells": cells, "q": base64.b64encode(q.tobytes()).decode("ascii")}
        )
    payload: dict[str, object] = {
        "text": text,
        "quantity": quantity,
        "scale": QUANT,
        "negative": NEGATIVE_RGB,
        "positive": POSITIVE_RGB,
        "layers": layers,
        "initial": {"layer": first[0], "cell": first[1]},
        "highlights": [
            {"label": n_, "layer": l, "cell": h, "r": round(r, 3)} for n_, l, h, r in highlights
        ],
    }
    if predictions is not None:
        top_chars, top_probs = predictions
        if len(top_chars) != T or len(top_probs) != T:
            raise ValueError(
                f"Argument `predictions` has {len(top_chars)} rows, expected {T} (one per "
                "character of `text`)"
            )
        payload["pred_chars"] = ["".join(row) for row in np.asarray(top_chars)[:n]]
        payload["pred_probs"] = np.round(np.asarray(top_probs, np.float64)[:n], 3).tolist()

    if n < T:
        about = f"{about} Showing the first {n:,} of {T:,} characters.".strip()
    # split first: the text and the data may contain anything, "%%" included
    head, rest = _PAGE.split("%%SPANS%%")
    middle, tail = rest.split("%%DATA%%")
    fills = {
        "%%TITLE%%": html.escape(title),
        "%%ABOUT%%": html.escape(about),
        "%%QUANTITY%%": html.escape(quantity),
        "%%NEG%%": "rgb({}, {}, {})".format(*NEGATIVE_RGB),
        "%%POS%%": "rgb({}, {}, {})".format(*POSITIVE_RGB),
        "%%HIDE_FOUND%%": "" if highlights else " hidden",
        "%%JS%%": _SCRIPT,
    }
    for key, value in fills.items():
        head, tail = head.replace(key, value), tail.replace(key, value)
    spans = "".join(_char_span(ch) for ch in text)
    document = head + spans + middle + _json_for_script(payload) + tail
    atomic_write_bytes(out_path, document.encode("utf-8"))
    return out_path


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>%%TITLE%%</title>
<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.2em 2em;
         color: #222; }
  h1 { font-size: 1.3em; margin: 0 0 .2em; }
  .about { color: #555; margin: 0 0 .8em; font-size: .92em; }
  #controls { display: flex; flex-wrap: wrap; gap: .6em 1.4em; align-items: center;
              position: sticky; top: 0; background: #fff; padding: .5em 0;
              border-bottom: 1px solid #ddd; z-index: 5; }
  #controls select { font-size: .95em; }
  #legend { display: inline-flex; align-items: center; gap: .4em; font-size: .9em; }
  #legend-bar { display: inline-block; width: 180px; height: 14px; border: 1px solid #999;
                background: linear-gradient(to right, %%NEG%%, #fff, %%POS%%); }
  #info { color: #444; font-size: .9em; }
  #text { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
          font-size: 14px; line-height: 1.5; white-space: pre-wrap; overflow-wrap: anywhere;
          tab-size: 4; margin-top: .8em; }
  #text .nl { opacity: .55; }
  #text span:hover { outline: 1px solid #000; }
  #tip { position: fixed; display: none; background: #fff; border: 1px solid #888;
         border-radius: 4px; box-shadow: 0 2px 8px rgba(0,0,0,.2); padding: .4em .6em;
         font-size: 13px; pointer-events: none; z-index: 10; min-width: 11em; }
  #tip table { border-collapse: collapse; margin-top: .3em; }
  #tip td { padding: 0 .35em; font-family: ui-monospace, monospace; }
  #tip td.bar div { height: 8px; background: #888; }
  #tip tr.actual td { font-weight: bold; }
  #tip tr.actual td.bar div { background: #2a7; }
</style>
</head>
<body>
<h1>%%TITLE%%</h1>
<p class="about">%%ABOUT%% Each character is coloured by the chosen cell's %%QUANTITY%%
after reading it. Hover a character for the value and the model's guesses for the next
character (the actual one in bold).</p>
<div id="controls">
  <label>layer <select id="layer"></select></label>
  <label>cell <select id="cell"></select></label>
  <label%%HIDE_FOUND%%>found cells <select id="found"></select></label>
  <span id="legend">%%QUANTITY%% <span>&minus;1</span><span id="legend-bar"></span>
    <span>+1</span></span>
  <span id="info"></span>
</div>
<div id="text">%%SPANS%%</div>
<div id="tip"></div>
<script type="application/json" id="cell-data">%%DATA%%</script>
<script>
%%JS%%
</script>
</body>
</html>
"""

_SCRIPT = r"""(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("cell-data").textContent);
  const text = Array.from(data.text);  // code points, like the spans
  const T = text.length;
  const spans = Array.from(document.getElementById("text").children);
  const layerSel = document.getElementById("layer");
  const cellSel = document.getElementById("cell");
  const foundSel = document.getElementById("found");
  const info = document.getElementById("info");
  const tip = document.getElementById("tip");
  const byLayer = new Map(data.layers.map(function (d) { return [d.layer, d]; }));
  const decoded = new Map();
  let current = null;

  function values(layer) {  // Int8Array (cells x T), each cell's T values contiguous
    if (!decoded.has(layer)) {
      const bin = atob(byLayer.get(layer).q);
      const a = new Int8Array(bin.length);
      for (let i = 0; i < bin.length; i++) a[i] = (bin.charCodeAt(i) << 24) >> 24;
      decoded.set(layer, a);
    }
    return decoded.get(layer);
  }
  function colour(v) {  // blue at -1, white at 0, red at +1
    const t = Math.min(1, Math.abs(v));
    const end = v < 0 ? data.negative : data.positive;
    return "rgb(" + end.map(function (e) { return Math.round(255 + (e - 255) * t); })
      .join(", ") + ")";
  }
  function value(i) {
    return values(current.layer)[current.row * T + i] / data.scale;
  }
  function show(layer, cell) {
    const d = byLayer.get(layer);
    const row = d.cells.indexOf(cell);
    current = {layer: layer, cell: cell, row: row};
    for (let i = 0; i < T; i++) {
      const v = value(i);
      spans[i].style.backgroundColor = colour(v);
      spans[i].style.color = Math.abs(v) > 0.6 ? "#fff" : "";
    }
    layerSel.value = String(layer);
    fillCells(layer);
    cellSel.value = String(cell);
    const found = data.highlights.findIndex(function (h) {
      return h.layer === layer && h.cell === cell;
    });
    foundSel.value = found >= 0 ? String(found) : "";
    info.textContent = "layer " + layer + ", cell " + cell + ": " + data.quantity;
  }
  function option(select, value, label) {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = label;
    select.appendChild(o);
  }
  function fillCells(layer) {
    if (cellSel.dataset.layer === String(layer)) return;
    cellSel.textContent = "";
    byLayer.get(layer).cells.forEach(function (c) { option(cellSel, String(c), String(c)); });
    cellSel.dataset.layer = String(layer);
  }
  data.layers.forEach(function (d) {
    option(layerSel, String(d.layer), d.layer + " (" + d.cells.length + " cells)");
  });
  option(foundSel, "", "\u2014");
  data.highlights.forEach(function (h, i) {
    const r = (h.r >= 0 ? "+" : "") + h.r.toFixed(2);
    option(foundSel, String(i), h.label + ": layer " + h.layer + " cell " + h.cell +
      " (r = " + r + ")");
  });
  layerSel.addEventListener("change", function () {
    const layer = Number(layerSel.value);
    show(layer, byLayer.get(layer).cells[0]);
  });
  cellSel.addEventListener("change", function () {
    show(current.layer, Number(cellSel.value));
  });
  foundSel.addEventListener("change", function () {
    if (foundSel.value === "") return;
    const h = data.highlights[Number(foundSel.value)];
    show(h.layer, h.cell);
  });
  document.addEventListener("keydown", function (ev) {  // j / k: the next / previous cell
    if (ev.target.tagName === "SELECT" || (ev.key !== "j" && ev.key !== "k")) return;
    const cells = byLayer.get(current.layer).cells;
    const row = Math.min(cells.length - 1, Math.max(0, current.row + (ev.key === "j" ? 1 : -1)));
    show(current.layer, cells[row]);
  });

  function visible(ch) {
    return {"\n": "\u21b5", " ": "\u2423", "\t": "\u21e5"}[ch] || ch;
  }
  function cellText(tr, s, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = s;
    tr.appendChild(td);
    return td;
  }
  const index = new Map(spans.map(function (s, i) { return [s, i]; }));
  document.getElementById("text").addEventListener("mousemove", function (ev) {
    const i = index.get(ev.target);
    if (i === undefined) { tip.style.display = "none"; return; }
    const v = value(i);
    tip.textContent = "";
    const head = document.createElement("div");
    head.textContent = "after \u201c" + visible(text[i]) + "\u201d (character " + i +
      "): " + data.quantity + " = " + (v >= 0 ? "+" : "") + v.toFixed(2);
    tip.appendChild(head);
    if (data.pred_chars) {
      const table = document.createElement("table");
      const next = i + 1 < T ? text[i + 1] : null;
      Array.from(data.pred_chars[i]).forEach(function (ch, k) {
        const p = data.pred_probs[i][k];
        const tr = document.createElement("tr");
        if (ch === next) tr.className = "actual";
        cellText(tr, visible(ch));
        cellText(tr, (100 * p).toFixed(1) + "%");
        const bar = document.createElement("div");
        bar.style.width = Math.round(80 * p) + "px";
        cellText(tr, "", "bar").appendChild(bar);
        table.appendChild(tr);
      });
      tip.appendChild(table);
    }
    tip.style.display = "block";
    const x = Math.min(ev.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
    const y = ev.clientY + 18 + tip.offsetHeight > window.innerHeight
      ? ev.clientY - tip.offsetHeight - 10 : ev.clientY + 18;
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  });
  document.getElementById("text").addEventListener("mouseleave", function () {
    tip.style.display = "none";
  });

  show(data.initial.layer, data.initial.cell);
  document.body.dataset.ready = "1";  // for tests: the script ran to the end
})();"""


# -- the command line ------------------------------------------------------------------------


def default_text(model: torch.nn.Module, max_chars: int) -> tuple[str, str]:
    """The text ``rnnkit inspect`` reads without ``--text``, and where it came from.

    The start of the model's own validation text (the last ``val_fraction`` of its
    training text, never trained on) when that text is at hand -- the run's text file,
    or its corpus when bundled or cached; otherwise the last `max_chars` characters of
    the bundled Shakespeare (which are the validation part of ``--corpus
    shakespeare`` runs).
    """
    from .data.corpora import CORPORA, cache_dir, encode_to_memmap, fetch, split_by_position

    meta = getattr(model, "meta", None) or {}
    source = meta.get("data") or {}
    val_fraction = (meta.get("train") or {}).get("val_fraction", 0.1)
    path = None
    if source.get("text") and Path(source["text"]).is_file():
        path = Path(source["text"])
    elif source.get("corpus") in CORPORA:
        corpus = CORPORA[source["corpus"]]
        if corpus.source is None or corpus.is_cached():  # no download
            path = fetch(corpus.name)
    if path is not None:
        ids, vocab = encode_to_memmap(path, cache_dir() / "encoded")
        _, val = split_by_position(ids, val_fraction)
        if vocab == model.vocab and len(val) > 0:
            text = vocab.decode(np.asarray(val[:max_chars]))
            return text, (
                f"the first {len(text):,} characters of the model's validation text "
                f"(the last {val_fraction:g} of {path.name}, never trained on)"
            )
    from .data.corpora import load_shakespeare

    return load_shakespeare()[-max_chars:], (
        f"the last {max_chars:,} characters of the bundled Shakespeare"
    )


def _load_model(checkpoint: str):
    from .tasks.charlm import load

    try:
        return load(checkpoint)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"Argument `checkpoint`: {err}") from None
    except ValueError as err:
        raise ValueError(f"Argument `checkpoint`: {err}") from None


def _read_text(path: str) -> str:
    from .data.corpora import load_text

    if not Path(path).is_file():
        raise FileNotFoundError(f"Argument `text`: no such file: {path}")
    try:
        return load_text(path)
    except ValueError as err:
        raise ValueError(f"Argument `text`: {err}") from None


def _cmd_inspect(args: argparse.Namespace) -> int:
    model = _load_model(args.checkpoint)
    _check_positive("max_chars", args.max_chars)
    _check_positive("page_chars", args.page_chars)
    _check_positive("top", args.top)
    if args.text is not None:
        text, source = _read_text(args.text)[: args.max_chars], args.text
    else:
        text, source = default_text(model, args.max_chars)
    sizes = [layer.hidden_size for layer in model.rnn.layers]
    if args.layer is not None and not 0 <= args.layer < len(sizes):
        raise ValueError(
            f"Argument `layer` must be in 0..{len(sizes) - 1} (the model has {len(sizes)} "
            f"layers), got {args.layer}"
        )
    if args.cell is not None:
        l = args.layer or 0
        if not 0 <= args.cell < sizes[l]:
            raise ValueError(
                f"Argument `cell` must be in 0..{sizes[l] - 1} (layer {l} has {sizes[l]} "
                f"cells), got {args.cell}"
            )
    try:
        acts = activations(model, text, kind=args.kind, max_chars=args.max_chars)
    except ValueError as err:
        if str(err).startswith("Argument `text`"):
            what = "--text" if args.text is not None else f"the default text ({source})"
            raise ValueError(f"{err} (in {what})") from None
        raise
    cfg = model.config
    print(
        f"read {len(acts.text):,} characters of {source} with a {cfg.num_layers}x"
        f"{cfg.hidden_size} {cfg.cell.upper()}: {acts.quantity} of {sum(sizes)} cells"
    )
    highlights, cells_to_show = [], None
    if args.find:
        found = rank_cells(acts.layers, text_features(acts.text), top=args.top)
        print(found.table())
        ranked = sorted(
            ((name, m) for name, ms in found.best.items() for m in ms),
            key=lambda nm: -abs(nm[1].correlation),
        )
        highlights = [(name, m.layer, m.cell, m.correlation) for name, m in ranked]
        if args.only_found:
            cells_to_show = [(m.layer, m.cell) for _, m in ranked]
    layer, cell = args.layer, args.cell
    if layer is not None and cell is None:
        cell = 0
    if cell is not None and layer is None:
        layer = 0
    path = render_html(
        acts.text,
        acts.layers,
        acts.predictions,
        args.out,
        cells_to_show=cells_to_show,
        layer=layer,
        cell=cell,
        highlights=highlights,
        quantity=acts.quantity,
        title=f"Inside a {cfg.num_layers}x{cfg.hidden_size} {cfg.cell.upper()}: {args.checkpoint}",
        about=f"Text: {source}.",
        max_chars=args.page_chars,
    )
    size = path.stat().st_size
    print(f"wrote {path} ({size / 1e6:.1f} MB); open it in a browser")
    return 0


def add_inspect_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``rnnkit inspect`` to `subparsers` (the ``add_subparsers()`` of the CLI)."""
    p = subparsers.add_parser(
        "inspect",
        help="colour a text by a character model's cells; find cells that track quotes, "
        "line length, brackets",
        description="Run a character model over a text and write an HTML page (self-contained, "
        "open it in any browser) that colours each character by one cell's activation -- "
        "tanh(c) of an LSTM, h otherwise -- blue -1, white 0, red +1; hover for the model's "
        "guesses of the next character. --find ranks the cells by correlation with "
        "features of the text and shows the best first. Layers and cells count from 0.",
    )
    p.add_argument("checkpoint", help="a run directory (its best checkpoint) or a checkpoint")
    p.add_argument(
        "--text",
        help="a UTF-8 text file, read from its start (default: the start of the model's "
        "validation text when its training text is at hand, else the last --max-chars "
        "characters of the bundled Shakespeare)",
    )
    p.add_argument("--out", default="view.html", help="the HTML page to write (default view.html)")
    p.add_argument("--layer", type=int, help="the layer shown first (default 0, or the best found)")
    p.add_argument("--cell", type=int, help="the cell shown first (default 0, or the best found)")
    p.add_argument(
        "--kind",
        choices=KINDS,
        default="tanh_c",
        help="tanh_c: tanh(c) of LSTM cells, h of others (default); h: the hidden state",
    )
    p.add_argument(
        "--max-chars",
        type=int,
        default=DEFAULT_PAGE_CHARS,
        help=f"characters read and correlated (default {DEFAULT_PAGE_CHARS:,})",
    )
    p.add_argument(
        "--page-chars",
        type=int,
        default=DEFAULT_PAGE_CHARS,
        help=f"of those, characters shown on the page (default {DEFAULT_PAGE_CHARS:,})",
    )
    p.add_argument(
        "--find",
        action="store_true",
        help="rank cells by |correlation| with in_quotes, line_position, bracket_depth, "
        "in_comment, in_if_block; print the table and pre-select the best on the page",
    )
    p.add_argument("--top", type=int, default=3, help="cells per feature for --find (default 3)")
    p.add_argument(
        "--only-found",
        action="store_true",
        help="with --find: store only the found cells in the page (a much smaller file)",
    )
    p.set_defaults(func=_cmd_inspect)
    return p
