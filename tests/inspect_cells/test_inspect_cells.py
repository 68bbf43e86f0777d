"""Looking inside a character model: activations, text features, cell ranking, the page."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit.checkpoint import save_checkpoint
from rnnkit.cli import main
from rnnkit.data.corpora import Vocab, load_shakespeare
from rnnkit.inspect_cells import (
    FEATURES,
    NEGATIVE_RGB,
    POSITIVE_RGB,
    QUANT,
    activations,
    correlations,
    diverging_rgb,
    find_cells,
    quantize,
    rank_cells,
    render_html,
    text_features,
)
from rnnkit.tasks import charlm
from rnnkit.tasks.charlm import CharLM, CharLMConfig, TrainConfig

TEXT = 'if (x) { y = "a<b>&c"; } /* note */\nHe said "no"\n(so [it] goes)\n'


def tiny_model(cell: str = "lstm", text: str = TEXT, seed: int = 0) -> CharLM:
    torch.manual_seed(seed)
    config = CharLMConfig(cell=cell, num_layers=2, hidden_size=16, embedding_size=8)
    return CharLM(config, Vocab.from_text(text)).eval()


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def hand_run_lstm(model: CharLM, text: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per layer tanh(c_t) and h_t (T, H) of the LSTM, stepped in float64 NumPy from the
    weights: i, f, g, o = gates(W_ih x + b_ih + W_hh h + b_hh); c = f c + i g; h = o tanh(c)."""
    ids = model.encode(text).numpy()
    x = model.embedding.weight.detach().double().numpy()[ids]  # (T, E)
    tanh_cs, hs = [], []
    for layer in model.rnn.layers:
        p = {k: v.detach().double().numpy() for k, v in layer.cell.named_parameters()}
        H = layer.cell.hidden_size
        h, c = np.zeros(H), np.zeros(H)
        layer_tanh_c, layer_h = [], []
        for x_t in x:
            z = p["weight_ih"] @ x_t + p["bias_ih"] + p["weight_hh"] @ h + p["bias_hh"]
            i, f = sigmoid(z[:H]), sigmoid(z[H : 2 * H])
            g, o = np.tanh(z[2 * H : 3 * H]), sigmoid(z[3 * H :])
            c = f * c + i * g
            h = o * np.tanh(c)
            layer_tanh_c.append(np.tanh(c))
            layer_h.append(h)
        tanh_cs.append(np.array(layer_tanh_c))
        hs.append(np.array(layer_h))
        x = hs[-1]  # the next layer reads this one's h
    return tanh_cs, hs


# -- activations ------------------------------------------------------------------------------


def test_activations_are_tanh_c_of_a_hand_stepped_lstm_across_chunks():
    model = tiny_model()
    text = TEXT * 3  # 3 x 65 characters, read in chunks of 7: the state must carry over
    expected_tanh_c, expected_h = hand_run_lstm(model, text)
    acts = activations(model, text, chunk_size=7)
    assert acts.quantity == "tanh(c)" and acts.text == text
    assert [a.shape for a in acts.layers] == [(len(text), 16)] * 2
    for got, want in zip(acts.layers, expected_tanh_c):
        np.testing.assert_allclose(got, want, atol=2e-6)
    acts_h = activations(model, text, kind="h", chunk_size=50)
    assert acts_h.quantity == "h"
    for got, want in zip(acts_h.layers, expected_h):
        np.testing.assert_allclose(got, want, atol=2e-6)


def test_predictions_are_the_top_k_of_the_forward_pass():
    model = tiny_model()
    acts = activations(model, TEXT, top_k=3, chunk_size=10)
    with torch.no_grad():
        logits, _ = model(model.encode(TEXT)[None])  # the fused path, one call
    probs = logits[0].softmax(-1).numpy()  # (T, V)
    assert acts.top_chars.shape == acts.top_probs.shape == (len(TEXT), 3)
    order = np.argsort(-probs, axis=1)[:, :3]
    np.testing.assert_allclose(acts.top_probs, np.take_along_axis(probs, order, 1), atol=1e-6)
    assert (acts.top_probs[:, :-1] >= acts.top_probs[:, 1:]).all()
    assert acts.top_chars[5].tolist() == [model.vocab.chars[j] for j in order[5]]


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_cells_without_memory_show_h_whatever_the_kind(cell):
    model = tiny_model(cell)
    acts = activations(model, TEXT, kind="tanh_c", chunk_size=9)
    assert acts.quantity == "h"
    with torch.no_grad():
        top_h, _ = model.rnn(model.embed(model.encode(TEXT))[None])  # the last layer's h
    np.testing.assert_allclose(acts.layers[-1], top_h[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(
        acts.layers[0], activations(model, TEXT, kind="h").layers[0], atol=1e-6
    )


def test_activations_reject_bad_arguments_and_cut_long_text():
    model = tiny_model()
    assert activations(model, TEXT, max_chars=10).layers[0].shape == (10, 16)
    with pytest.raises(ValueError, match=r"`text`.*'Z'"):
        activations(model, "Zebra")
    with pytest.raises(ValueError, match="`text` is empty"):
        activations(model, "")
    with pytest.raises(ValueError, match=r"`kind`.*'c'"):
        activations(model, TEXT, kind="c")
    with pytest.raises(ValueError, match=r"`max_chars`.*0"):
        activations(model, TEXT, max_chars=0)
    model.train()
    activations(model, TEXT)
    assert model.training  # the mode is restored


# -- features -------------------------------------------------------------------------------


def ones(n: int, *ranges: tuple[int, int]) -> list[float]:
    out = [0.0] * n
    for a, b in ranges:
        out[a:b] = [1.0] * (b - a)
    return out


def feature(text: str, name: str) -> list[float]:
    return text_features(text)[name].tolist()


def test_line_position_counts_characters_since_the_newline():
    assert feature("ab\ncd\n\nx", "line_position") == [1, 2, 0, 1, 2, 0, 0, 1]


def test_in_quotes_marks_double_quoted_spans_with_escapes_and_char_literals():
    text = 'say "hi" ok'
    assert feature(text, "in_quotes") == ones(len(text), (4, 7))  # opening " to before closing
    text = r'"a\"b" c'  # an escaped quote does not close the string
    assert feature(text, "in_quotes") == ones(len(text), (0, 5))
    text = 'c = \'"\'; "s"'  # a C character literal '"' opens no string
    assert feature(text, "in_quotes") == ones(len(text), (9, 11))
    text = "don't \"go\" o'er"  # apostrophes are ignored
    assert feature(text, "in_quotes") == ones(len(text), (6, 9))
    assert feature('/* "x */ y', "in_quotes") == [0.0] * 10  # quotes in a comment
    text = 'a "b\n \n"c'  # a blank line ends an unclosed quote
    assert feature(text, "in_quotes") == ones(len(text), (2, 6), (7, 9))
    text = 'LEPIDUS, "  "  "\n\nBRUTUS. Speak "now"'  # ditto marks leave a quote open
    after, now = text.index("BRUTUS"), text.index('"now')
    assert feature(text, "in_quotes")[after:] == ones(len(text), (now, now + 4))[after:]


def test_bracket_depth_counts_open_brackets_outside_strings():
    assert feature("f(a[b]{c})", "bracket_depth") == [0, 1, 1, 2, 2, 1, 2, 2, 1, 0]
    assert feature(")x(", "bracket_depth") == [0, 0, 1]  # never below zero
    assert feature('("(")', "bracket_depth") == [1, 1, 1, 1, 0]
    assert feature("a /* ( */ b", "bracket_depth") == [0.0] * 11


def test_in_comment_marks_block_and_line_comments():
    text = "a/*b*/c//d\ne"
    assert feature(text, "in_comment") == [0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0]
    text = "/*/ x */"  # the '*' that opens cannot close
    assert feature(text, "in_comment") == [0, 1, 1, 1, 1, 1, 1, 0]
    assert feature('"//" x', "in_comment") == [0.0] * 6  # not in a string
    assert feature("a / b", "in_comment") == [0.0] * 5


def test_in_if_block_marks_the_braces_of_if_statements():
    text = "if (a) { b; }\nc;"
    assert feature(text, "in_if_block") == ones(len(text), (7, 12))
    text = "if (f(a) && b)\n  {z} else {w}"  # nested parens, a newline before '{'
    start = text.index("{z")
    assert feature(text, "in_if_block") == ones(len(text), (start, start + 2))
    text = "if (a) { for (;;) { x } y } z"  # nested blocks stay inside
    assert feature(text, "in_if_block") == ones(len(text), (7, text.rindex("}")))
    text = "while (q) { if (r) {t} } elif (x) {y} if (a) b; {c} x.if {d} else if(k){m}"
    got = feature(text, "in_if_block")
    t, m = text.index("{t"), text.index("{m")
    assert got == ones(len(text), (t, t + 2), (m, m + 2))
    text = 'if (a) { s = "}"; /* } */ } x'  # braces in strings and comments do not count
    assert feature(text, "in_if_block") == ones(len(text), (7, text.rindex("}")))


def test_all_features_have_one_value_per_character():
    f = text_features(TEXT)
    assert list(f) == list(FEATURES)
    assert all(v.shape == (len(TEXT),) and v.dtype == np.float32 for v in f.values())


# -- ranking ----------------------------------------------------------------------------------


def test_rank_cells_orders_by_absolute_correlation_and_skips_constant_features():
    rng = np.random.default_rng(0)
    T = 400
    target = rng.normal(size=T)
    layers = [rng.normal(size=(T, 5)), rng.normal(size=(T, 4))]
    layers[1][:, 2] = 0.9 * target + 0.1 * rng.normal(size=T)  # best
    layers[0][:, 3] = -target + 0.5 * rng.normal(size=T)  # second, negative
    layers[0][:, 0] = 0.0  # a dead cell: r = 0, no NaN
    found = rank_cells(layers, {"target": target, "flat": np.ones(T)}, top=3)
    assert found.skipped == ["flat"] and list(found.best) == ["target"]
    best = found.best["target"]
    assert [(m.layer, m.cell) for m in best[:2]] == [(1, 2), (0, 3)]
    assert best[1].correlation < -0.8 < 0.95 < best[0].correlation
    for m in best:
        expected = np.corrcoef(layers[m.layer][:, m.cell], target)[0, 1]
        assert m.correlation == pytest.approx(expected, abs=1e-12)
    assert correlations(layers[0], target)[0] == 0.0
    table = found.table()
    assert "target" in table and "1:2 +0.9" in table and "skipped" in table and "flat" in table


def line_position_model(text: str, cell: int = 5) -> CharLM:
    """A tiny model whose layer-0 `cell` counts the characters since the last newline:
    input gate open, candidate g = tanh(0.1), forget gate shut by a newline only, so
    c = 0.1 (position + 1) and tanh(c) rises along each line."""
    model = tiny_model(text=text, seed=1)
    H = model.config.hidden_size
    rows = [gate * H + cell for gate in range(4)]  # i, f, g, o
    newline = model.vocab.index["\n"]
    lstm = model.rnn.layers[0].cell
    with torch.no_grad():
        model.embedding.weight[:, 0] = 0.0
        model.embedding.weight[newline, 0] = 1.0  # input dimension 0: "this is a newline"
        for w in (lstm.weight_ih, lstm.weight_hh):
            w[rows] = 0.0
        lstm.bias_hh[rows] = 0.0
        lstm.bias_ih[rows] = torch.tensor([10.0, 10.0, 0.1, 10.0])
        lstm.weight_ih[H + cell, 0] = -30.0  # a newline empties the memory
    return model


def test_find_cells_finds_a_planted_line_position_cell():
    rng = np.random.default_rng(1)
    letters = np.array(list("abcdefgh "))
    lines = ["".join(rng.choice(letters, size=rng.integers(1, 12))) for _ in range(120)]
    text = "\n".join(lines) + "\n"
    model = line_position_model(text, cell=5)
    found = find_cells(model, text, top=3)
    best = found.best["line_position"][0]
    assert (best.layer, best.cell) == (0, 5) and best.correlation > 0.95
    assert {"in_quotes", "in_comment", "in_if_block", "bracket_depth"} <= set(found.skipped)


# -- the page --------------------------------------------------------------------------------


class PageParser(HTMLParser):
    """The character spans of #text (their text and style) and the JSON data."""

    def __init__(self) -> None:
        super().__init__()
        self.spans: list[dict] = []
        self.data_json = ""
        self.body: dict = {}
        self._in_text = self._in_data = False
        self._span: dict | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        if tag == "div" and attrs.get("id") == "text":
            self._in_text = True
        elif tag == "span" and self._in_text:
            self._span = {"text": "", **attrs}
        elif tag == "script" and attrs.get("id") == "cell-data":
            self._in_data = True

    def handle_endtag(self, tag):
        if tag == "span" and self._span is not None:
            self.spans.append(self._span)
            self._span = None
        elif tag == "div":
            self._in_text = False
        elif tag == "script":
            self._in_data = False

    def handle_data(self, data):
        if self._span is not None:
            self._span["text"] += data
        elif self._in_data:
            self.data_json += data


def parse_page(html_text: str) -> tuple[PageParser, dict]:
    parser = PageParser()
    parser.feed(html_text)
    return parser, json.loads(parser.data_json)


def span_char(span_text: str) -> str:
    return "\n" if span_text == "\u21b5\n" else span_text


NASTY = "a<b> & \"c\" 'd' </script><!-- %%DATA%% \u00e9\u4e2d\U0001f600\n\tx\n"


def test_render_html_escapes_the_text_and_embeds_valid_json(tmp_path):
    T = len(NASTY)
    rng = np.random.default_rng(0)
    acts = [np.tanh(rng.normal(size=(T, 6))), np.tanh(rng.normal(size=(T, 3)))]
    top_chars = np.array([list("ab<&\n")] * T)
    top_probs = np.tile(np.array([0.5, 0.2, 0.1, 0.1, 0.05], np.float32), (T, 1))
    out = render_html(
        NASTY,
        acts,
        (top_chars, top_probs),
        tmp_path / "page.html",
        highlights=[("line_position", 1, 2, 0.8123)],
        title="<b>title</b>",
    )
    page = out.read_text(encoding="utf-8")
    escaped = "".join(f"<span>{c}</span>" for c in ["&lt;", "/", "s", "c", "r", "i", "p", "t"])
    assert escaped in page  # one span per character, escaped
    for c in ["&amp;", "&quot;", "&#x27;", "&gt;", "\u00e9", "\U0001f600", "\t"]:
        assert f"<span>{c}</span>" in page
    assert "</script><!--" not in page and "<b>title" not in page
    assert not re.search(r"https?://|src=|href=", page)  # nothing to fetch
    parser, data = parse_page(page)
    assert "".join(span_char(s["text"]) for s in parser.spans) == NASTY
    assert data["text"] == NASTY
    assert data["initial"] == {"layer": 1, "cell": 2}  # the first highlight
    assert data["highlights"] == [{"label": "line_position", "layer": 1, "cell": 2, "r": 0.812}]
    assert data["pred_chars"][0] == "ab<&\n" and data["pred_probs"][0] == [0.5, 0.2, 0.1, 0.1, 0.05]
    for entry in data["layers"]:  # all cells by default, int8 cell-major
        q = np.frombuffer(base64.b64decode(entry["q"]), np.int8).reshape(len(entry["cells"]), T)
        np.testing.assert_array_equal(q, quantize(acts[entry["layer"]]).T)
        np.testing.assert_allclose(q.T / QUANT, acts[entry["layer"]], atol=0.5 / QUANT + 1e-6)


def test_render_html_stores_only_the_chosen_cells_and_caps_the_text(tmp_path):
    T = 50
    acts = [np.zeros((T, 8)), np.zeros((T, 8))]
    text = "x" * T
    out = render_html(text, acts, None, tmp_path / "p.html", cells_to_show=[(1, 4), (1, 2)])
    _, data = parse_page(out.read_text(encoding="utf-8"))
    assert [(d["layer"], d["cells"]) for d in data["layers"]] == [(1, [2, 4])]
    assert data["initial"] == {"layer": 1, "cell": 2} and "pred_chars" not in data
    out = render_html(text, acts, None, tmp_path / "p.html", max_chars=20, layer=0, cell=7)
    parser, data = parse_page(out.read_text(encoding="utf-8"))
    assert len(parser.spans) == 20 and data["text"] == "x" * 20
    assert data["initial"] == {"layer": 0, "cell": 7}
    assert len(base64.b64decode(data["layers"][0]["q"])) == 8 * 20
    with pytest.raises(ValueError, match=r"`cell`.*0\.\.7.*got 8"):
        render_html(text, acts, None, tmp_path / "p.html", layer=0, cell=8)
    with pytest.raises(ValueError, match=r"`layer`.*got 2"):
        render_html(text, acts, None, tmp_path / "p.html", layer=2)
    with pytest.raises(
        ValueError, match=r"`acts`: layer 0 has shape \(50, 8\), expected \(49, H\)"
    ):
        render_html(text[:-1], acts, None, tmp_path / "p.html")
    with pytest.raises(FileNotFoundError, match="`out_path`"):
        render_html(text, acts, None, tmp_path / "no" / "p.html")


def test_the_colour_scale_is_blue_white_red():
    assert diverging_rgb(-1.0) == NEGATIVE_RGB and diverging_rgb(1.0) == POSITIVE_RGB
    assert diverging_rgb(0.0) == (255, 255, 255) and diverging_rgb(7.0) == POSITIVE_RGB
    r, g, b = diverging_rgb(0.5)
    assert r > g and r > b
    r, g, b = diverging_rgb(-0.5)
    assert b > g > r


# -- the page in a real browser ----------------------------------------------------------------

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no `chromium` binary on PATH (Debian: apt-get install -y chromium)",
)


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",  # tests may run as root
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


# Run after the page's own script: hover character 3, then pick cell 1 in the select.
INTERACT = """<script>
  const spans = Array.from(document.getElementById("text").children);
  document.body.dataset.initial = spans.map((s) => s.style.backgroundColor).join(";");
  spans[3].dispatchEvent(new MouseEvent("mousemove", {bubbles: true, clientX: 20, clientY: 20}));
  document.body.dataset.tip = document.getElementById("tip").textContent;
  const select = document.getElementById("cell");
  select.value = "1";
  select.dispatchEvent(new Event("change"));
</script>
"""


def span_colours(parser: PageParser) -> list[str]:
    found = [
        re.search(r"background-color: (rgb\([^)]*\))", s.get("style", "")) for s in parser.spans
    ]
    assert all(found), "every character is coloured by the script"
    return [m.group(1) for m in found]


@needs_chromium
def test_headless_chromium_shows_the_text_in_the_cells_colours(tmp_path):
    text = (NASTY + "red blue white\n") * 4
    T = len(text)
    values = np.where(np.arange(T) % 3 == 0, -1.0, np.where(np.arange(T) % 3 == 1, 1.0, 0.0))
    acts = [np.stack([values, -values], 1)]  # cell 0: -1, +1, 0, ...; cell 1 the opposite
    top_chars = np.array([list("xyz")] * T)
    top_probs = np.tile(np.array([0.625, 0.25, 0.125], np.float32), (T, 1))
    page = render_html(text, acts, (top_chars, top_probs), tmp_path / "page.html", cell=0)
    interactive = tmp_path / "interactive.html"
    interactive.write_text(
        page.read_text(encoding="utf-8").replace("</body>", INTERACT + "</body>"),
        encoding="utf-8",
    )

    dom = chromium(tmp_path, "--dump-dom", interactive.resolve().as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    parser, _ = parse_page(dom.stdout)
    assert parser.body.get("data-ready") == "1"  # the page's script ran to its end
    assert "".join(span_char(s["text"]) for s in parser.spans) == text
    rgb = "rgb({}, {}, {})"
    assert parser.body["data-initial"].split(";") == [rgb.format(*diverging_rgb(v)) for v in values]
    assert span_colours(parser) == [rgb.format(*diverging_rgb(-v)) for v in values]  # cell 1
    tip = parser.body["data-tip"]  # hovering character 3: its value and the guesses
    assert f"after \u201c{text[3]}\u201d (character 3): tanh(c) = -1.00" in tip
    assert "x62.5%y25.0%z12.5%" in tip

    png = tmp_path / "shot.png"
    shot = chromium(tmp_path, f"--screenshot={png}", "--window-size=900,700", page.as_uri())
    assert shot.returncode == 0 and png.is_file(), shot.stderr[-2000:]
    import matplotlib.image

    pixels = (matplotlib.image.imread(png)[..., :3] * 255).round().astype(int)  # (H, W, 3)

    def count(rgb) -> int:
        return int((np.abs(pixels - np.array(rgb)).max(-1) <= 3).sum())

    assert count(POSITIVE_RGB) > 500 and count(NEGATIVE_RGB) > 500  # red and blue areas


# -- the command line --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny model trained for 5 steps on a Shakespeare excerpt: (run dir, text file)."""
    root = tmp_path_factory.mktemp("inspect")
    text_file = root / "excerpt.txt"
    text_file.write_text(load_shakespeare()[300_000:306_000], encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RNNKIT_DATA", str(root / "cache"))
        charlm.train(
            root / "run",
            CharLMConfig(num_layers=2, hidden_size=16, embedding_size=8),
            TrainConfig(
                steps=5,
                batch_size=2,
                seq_len=8,
                eval_every=0,
                checkpoint_every=0,
                progress=False,
                warmup_steps=1,
            ),
            text=text_file,
            log=lambda msg: None,
        )
    return root / "run", text_file


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_the_page_from_the_models_validation_text(run, tmp_path, capsys, monkeypatch):
    run_dir, text_file = run
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "cache"))
    code, out, err = cli(capsys, "inspect", run_dir, "--out", tmp_path / "v.html")
    assert code == 0, err
    assert "validation text" in out and "wrote" in out
    _, data = parse_page((tmp_path / "v.html").read_text(encoding="utf-8"))
    full = text_file.read_text(encoding="utf-8")
    assert data["text"] == full[len(full) - int(len(full) * 0.1) :]  # the held-out tenth
    assert data["initial"] == {"layer": 0, "cell": 0} and data["highlights"] == []


def test_cli_find_prints_the_table_and_preselects_the_best_cell(run, tmp_path, capsys):
    run_dir, text_file = run
    page = tmp_path / "f.html"
    argv = ["inspect", run_dir, "--text", text_file, "--out", page, "--find", "--top", "2"]
    code, out, err = cli(capsys, *argv, "--max-chars", "3000", "--page-chars", "500")
    assert code == 0, err
    assert "line_position" in out and "layer:cell" in out and "3,000 chars" in out
    assert "skipped (constant over the text): " in out and "in_comment" in out
    _, data = parse_page(page.read_text(encoding="utf-8"))
    assert len(data["text"]) == 500
    best = data["highlights"][0]
    assert data["initial"] == {"layer": best["layer"], "cell": best["cell"]}
    assert abs(best["r"]) == max(abs(h["r"]) for h in data["highlights"])
    assert f"{best['layer']}:{best['cell']}" in out
    code, _, err = cli(capsys, *argv, "--only-found", "--kind", "h", "--layer", "1", "--cell", "3")
    assert code == 0, err
    _, small = parse_page(page.read_text(encoding="utf-8"))
    stored = {(d["layer"], c) for d in small["layers"] for c in d["cells"]}
    found = {(h["layer"], h["cell"]) for h in small["highlights"]}
    assert stored == found | {(1, 3)} and small["initial"] == {"layer": 1, "cell": 3}
    assert small["quantity"] == "h"


def test_cli_bad_input_gets_one_line_naming_the_argument(run, tmp_path, capsys):
    run_dir, text_file = run
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\u00e9 cr\u00e8me".encode("latin-1"))
    foreign_chars = tmp_path / "foreign.txt"
    foreign_chars.write_text("Stra\u00dfe ~~~", encoding="utf-8")
    foreign = tmp_path / "classifier"
    model = charlm.load(run_dir)
    save_checkpoint(
        foreign, model_state=model.state_dict(), train_state=None, meta={"kind": "classify"}
    )
    out = ["--out", tmp_path / "x.html"]
    cases = [
        ([tmp_path / "missing", *out], "`checkpoint`: no checkpoint at"),
        ([foreign, *out], "`checkpoint`: checkpoint at"),
        ([run_dir, "--text", tmp_path / "nope.txt", *out], "`text`: no such file"),
        ([run_dir, "--text", empty, *out], "`text`:"),
        ([run_dir, "--text", latin1, *out], "not UTF-8"),
        ([run_dir, "--text", foreign_chars, *out], "'ß'"),
        ([run_dir, "--text", text_file, "--layer", "2", *out], "`layer` must be in 0..1"),
        ([run_dir, "--text", text_file, "--cell", "16", *out], "`cell` must be in 0..15"),
        ([run_dir, "--text", text_file, "--max-chars", "0", *out], "`max_chars`"),
        ([run_dir, "--text", text_file, "--out", tmp_path / "no" / "x.html"], "`out_path`"),
    ]
    for argv, message in cases:
        code, _, err = cli(capsys, "inspect", *argv)
        assert code == 2, argv
        assert message in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "x.html").exists()
