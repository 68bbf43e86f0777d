"""The HTML page of :func:`render_html`: a text coloured by one cell at a time.

The page is ``page.html`` with ``page.js`` inlined, both shipped in this package and
filled in here; the written file fetches nothing. The placeholders of ``page.html``:

* ``%%TITLE%%``, ``%%ABOUT%%``, ``%%QUANTITY%%``: the heading, the line under it and
  what the values are (``tanh(c)`` or ``h``), HTML-escaped;
* ``%%NEG%%``, ``%%POS%%``: the colours of -1 and +1, for the legend;
* ``%%HIDE_FOUND%%``: `` hidden`` on the found-cells picker when there are none;
* ``%%SPANS%%``: one ``<span>`` per character of the text;
* ``%%DATA%%``: the JSON the script reads (the text, each shown cell's activations as
  base64 int8 (cells, T), the predictions, the highlights);
* ``%%JS%%``: the script, ``page.js``.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from ..checkpoint import atomic_write_bytes
from ._checks import check_positive

PathLike = str | os.PathLike

DEFAULT_PAGE_CHARS = 5_000  # 2 layers x 256 cells x 5,000 chars: a 3.4 MB page
NEGATIVE_RGB = (33, 102, 172)  # the colour of -1 (blue); white is 0
POSITIVE_RGB = (202, 35, 45)  # the colour of +1 (red)
QUANT = 127  # activations travel to the page as int8: round(a * 127), steps of 0.008


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


def _template(name: str) -> str:
    """The text of a template file shipped next to this module."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


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
        acts: per layer an array (T, H), e.g. the ``layers`` of
            :class:`~rnnkit.inspect_cells.CellActivations`.
        predictions: ``(top_chars, top_probs)``, each (T, k), or None for no guesses.
        out_path: the HTML file to write.
        cells_to_show: ``(layer, cell)`` pairs to put in the page; None: every cell of
            every layer (about T x cells bytes x 4/3: 3.4 MB for 5,000 characters of a
            2 x 256 model).
        layer, cell: the cell shown first; default the first of `highlights`, else the
            first cell shown.
        highlights: ``(label, layer, cell, correlation)`` of cells worth a look (from
            :func:`~rnnkit.inspect_cells.rank_cells`), offered in their own picker and
            stored in any case.
        quantity: what the values are, for the labels (``CellActivations.quantity``).
        title, about: the page's heading and a line of description under it.
        max_chars: characters of `text` shown.
    """
    check_positive("max_chars", max_chars)
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
    head, rest = _template("page.html").split("%%SPANS%%")
    middle, tail = rest.split("%%DATA%%")
    fills = {
        "%%TITLE%%": html.escape(title),
        "%%ABOUT%%": html.escape(about),
        "%%QUANTITY%%": html.escape(quantity),
        "%%NEG%%": "rgb({}, {}, {})".format(*NEGATIVE_RGB),
        "%%POS%%": "rgb({}, {}, {})".format(*POSITIVE_RGB),
        "%%HIDE_FOUND%%": "" if highlights else " hidden",
        "%%JS%%": _template("page.js").rstrip("\n"),  # page.html has the line break
    }
    for key, value in fills.items():
        head, tail = head.replace(key, value), tail.replace(key, value)
    spans = "".join(_char_span(ch) for ch in text)
    document = head + spans + middle + _json_for_script(payload) + tail
    atomic_write_bytes(out_path, document.encode("utf-8"))
    return out_path
