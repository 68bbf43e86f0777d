"""The character language model end to end, on a tiny real corpus (a Shakespeare excerpt)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import rnnkit
from rnnkit._stepper import LMStepper
from rnnkit.checkpoint import load_checkpoint, save_checkpoint
from rnnkit.cli import main
from rnnkit.data.corpora import Vocab, load_shakespeare
from rnnkit.decoding import draw, filter_logits
from rnnkit.tasks import charlm
from rnnkit.tasks.charlm import CharLM, CharLMConfig, StreamBatches, TrainConfig
from rnnkit.tbptt import CarriedState
from traces import check_trace


@pytest.fixture(autouse=True)
def data_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def excerpt() -> str:
    return load_shakespeare()[200_000:230_000]


@pytest.fixture
def text_file(tmp_path, excerpt) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(excerpt, encoding="utf-8")
    return path


def small_train(**kw) -> TrainConfig:
    base = dict(
        batch_size=4,
        seq_len=16,
        steps=30,
        lr=1e-2,
        warmup_steps=2,
        eval_every=0,
        checkpoint_every=0,
        log_every=1,
        progress=False,
        eval_chars=2000,
    )
    return TrainConfig(**{**base, **kw})


SMALL = CharLMConfig(num_layers=2, hidden_size=24, embedding_size=8)


def quiet(_msg: str) -> None:
    pass


# -- data ---------------------------------------------------------------------------------


def test_stream_batches_are_contiguous_streams_and_resume():
    ids = np.arange(1000, dtype=np.uint16)
    b = StreamBatches(ids, batch_size=3, seq_len=10)
    L = b.stream_len
    assert L == 333 and b.windows == 33
    x0, y0 = b()
    x1, _ = b()
    assert torch.equal(y0, x0 + 1)  # targets are the next characters
    for s in range(3):  # stream s starts at s*L and the next window continues it
        assert x0[s, 0] == s * L and x1[s, 0] == s * L + 10
    state = b.state_dict()
    expected = [b() for _ in range(40)]
    assert b.epoch == 1  # 33 windows per pass: wrapped once
    c = StreamBatches(ids, batch_size=3, seq_len=10)
    c.load_state_dict(state)
    for xe, ye in expected:
        xa, ya = c()
        assert torch.equal(xa, xe) and torch.equal(ya, ye)


def test_stream_batches_reject_text_shorter_than_one_window():
    with pytest.raises(ValueError, match=r"batch_size=4.*seq_len=64"):
        StreamBatches(np.zeros(100, dtype=np.uint8), batch_size=4, seq_len=64)


# -- the model and its sampler ---------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("embedding_size", [8, 0])
def test_sampler_step_matches_the_forward_pass(cell, embedding_size, excerpt):
    torch.manual_seed(0)
    vocab = Vocab.from_text(excerpt)
    model = CharLM(
        CharLMConfig(cell=cell, num_layers=2, hidden_size=16, embedding_size=embedding_size), vocab
    ).eval()
    ids = model.encode("To be, or not to be: that is the question")
    with torch.no_grad():
        ref, ref_state = model(ids[None].expand(3, -1))  # (3, T, V)
    stepper = model.stepper()
    states = stepper.initial_state(3)
    with torch.inference_mode():
        for t in range(len(ids)):
            logits, states = stepper.step(ids[t].repeat(3), states)
            torch.testing.assert_close(logits, ref[:, t], atol=1e-5, rtol=1e-5)


def test_sampler_starts_from_a_learned_initial_state(excerpt):
    torch.manual_seed(0)
    model = CharLM(SMALL, Vocab.from_text(excerpt))
    model.rnn = rnnkit.LSTM(8, 24, 2, initial_state="learned")
    with torch.no_grad():
        for p in model.rnn.parameters():
            p.uniform_(-0.5, 0.5)
    model.eval()
    ids = model.encode("ROMEO")
    with torch.no_grad():
        ref, _ = model(ids[None])
    stepper = model.stepper()
    states = stepper.initial_state(1)
    with torch.inference_mode():
        for t in range(len(ids)):
            logits, states = stepper.step(ids[t : t + 1], states)
    torch.testing.assert_close(logits, ref[:, -1], atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, excerpt):
    """A tiny model trained for 150 steps on the excerpt (shared by the tests below)."""
    root = tmp_path_factory.mktemp("trained")
    text = root / "tiny.txt"
    text.write_text(excerpt, encoding="utf-8")
    mp = pytest.MonkeyPatch()
    mp.setenv("RNNKIT_DATA", str(root / "cache"))
    try:
        model, trainer = charlm.train(
            root / "run",
            SMALL,
            small_train(
                steps=300, batch_size=16, seq_len=32, log_every=10, eval_every=150, lr=2e-2
            ),
            text=text,
            log=quiet,
        )
    finally:
        mp.undo()
    return root / "run", model, trainer, text


def test_training_traces_gradients_and_gradients_run_measures_them_again(trained, capsys):
    run, *_ = trained
    points = check_trace(run, charlm, {"rnn.layers.0": 32, "rnn.layers.1": 32}, capsys)
    assert [p["step"] for p in points] == [150, 300]


def test_training_lowers_the_loss_below_the_unigram_entropy(trained, excerpt):
    run, model, trainer, _ = trained
    losses = [r["loss"] for r in trainer.history if "loss" in r]
    assert losses[-1] < losses[0] - 1.0  # from ~ln(V) = 4.1 nats down
    vocab = model.vocab
    val = vocab.encode(excerpt)[int(len(excerpt) * 0.9) :]
    h1 = charlm.unigram_entropy(val, len(vocab))
    assert trainer.last_eval["loss"] < h1 - 0.2  # context helps: beats character frequencies
    assert (run / "best" / "meta.json").is_file() and (run / "latest" / "meta.json").is_file()
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert any(r["eval_loss"] for r in rows) and any(r["loss"] for r in rows)
    png = (run / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_load_and_score_agree_with_the_trainer(trained, excerpt):
    run, model, trainer, _ = trained
    loaded = rnnkit.load(run / "best")
    assert loaded.vocab == model.vocab and not loaded.training
    val_text = excerpt[len(excerpt) - int(len(excerpt) * 0.1) :]
    best = load_checkpoint(run / "best").meta["val_loss"]
    score = loaded.score(val_text[:2000])
    assert score["nats_per_char"] == pytest.approx(best, abs=1e-4)
    assert score["bits_per_char"] == pytest.approx(best / math.log(2), abs=1e-4)


def test_score_file_reads_a_file_chunk_by_chunk(trained, tmp_path, monkeypatch):
    run, model, _, text_path = trained
    text = text_path.read_text(encoding="utf-8")
    monkeypatch.setattr(charlm, "iter_text_chunks", lambda p: _chunks(p, 1000))
    r = charlm.score_file(model, text_path)
    whole = model.score(text)
    assert r["nats_per_char"] == pytest.approx(whole["nats_per_char"], abs=1e-5)
    assert r["text_chars"] == len(text)
    h1 = charlm.unigram_entropy(model.vocab.encode(text), len(model.vocab))
    assert r["unigram_nats"] == pytest.approx(h1, abs=1e-9)
    assert not list((tmp_path / "cache").glob("score-*"))  # its temporary file is gone
    odd = tmp_path / "odd.txt"
    odd.write_text(text[:5000] + "\u00e6on", encoding="utf-8")
    with pytest.raises(ValueError, match=r"odd\.txt.*'\u00e6'"):
        charlm.score_file(model, odd)


def _chunks(path, chunk_bytes):
    from rnnkit.data.corpora import iter_text_chunks

    return iter_text_chunks(path, chunk_bytes)


def test_sampling_is_reproducible_and_greedy_at_temperature_zero(trained):
    _, model, _, _ = trained
    model.eval()
    a = model.sample("ROMEO:", 80, temperature=0.8, seed=7)
    b = model.sample("ROMEO:", 80, temperature=0.8, seed=7)
    c = model.sample("ROMEO:", 80, temperature=0.8, seed=8)
    assert a == b and a != c and len(a) == 80
    greedy = model.sample("ROMEO:", 40, temperature=0)
    # independently: argmax of the forward pass over the growing text
    text = "ROMEO:"
    with torch.no_grad():
        for _ in range(40):
            logits, _ = model(model.encode(text)[None])
            text += model.vocab.chars[int(logits[0, -1].argmax())]
    assert greedy == text[len("ROMEO:") :]
    assert model.sample("ROMEO:", 40, temperature=1.0, top_k=1, seed=3) == greedy
    assert model.sample("ROMEO:", 40, temperature=1.0, top_p=1e-6, seed=3) == greedy


def test_batched_streams_are_independent_samples(trained):
    _, model, _, _ = trained
    texts = model.sample("ROMEO:", 60, num=8, seed=1, temperature=1.0)
    assert len(texts) == 8 and all(len(t) == 60 for t in texts)
    assert len(set(texts)) > 1
    assert all(set(t) <= set(model.vocab.chars) for t in texts)


@pytest.mark.parametrize("num", [1, 3])
def test_numpy_and_torch_sampling_paths_compute_the_same_model(trained, num, monkeypatch):
    _, model, _, _ = trained
    model.eval()
    assert model.stepper().kind(num) == "numpy"  # the NumPy path is taken
    a = list(model.generate("ROMEO:", 120, temperature=0, num=num))
    monkeypatch.setattr(LMStepper, "numpy_max_streams", 0)
    assert model.stepper().kind(num) == "torch"
    b = list(model.generate("ROMEO:", 120, temperature=0, num=num))
    assert a == b
    # a seed fixes each path's text, and the NumPy path is used up to its stream limit
    monkeypatch.setattr(LMStepper, "numpy_max_streams", num)
    assert model.stepper().kind(num) == "numpy"
    again = list(model.generate("KING", 50, temperature=0.9, num=num, seed=5))
    assert again == list(model.generate("KING", 50, temperature=0.9, num=num, seed=5))
    assert again != list(model.generate("KING", 50, temperature=0.9, num=num, seed=6))


def test_bf16_products_for_many_streams_stay_close_to_float32(trained):
    _, model, _, _ = trained
    model.eval()
    s = model.stepper()
    # as on a CPU with native bfloat16 (emulated elsewhere: same numbers, slower)
    step16 = s.step_fn("bf16")
    ids = model.encode("KING HENRY. Now, lords, to France; the enterprise whereof")
    states32 = states16 = s.initial_state(16)
    agree = 0
    with torch.inference_mode():
        for t in range(len(ids)):
            x = ids[t].repeat(16)
            l32, states32 = s.step(x, states32)
            l16, states16 = step16(x, states16)
            assert (l16 - l32).abs().max() < 0.15
            agree += int(l16[0].argmax() == l32[0].argmax())
    assert agree >= len(ids) - 2
    texts = model.sample("KING", 30, num=16, seed=4)  # the bf16 path: 16 >= bf16_min_streams
    assert texts == model.sample("KING", 30, num=16, seed=4)
    assert all(len(t) == 30 and set(t) <= set(model.vocab.chars) for t in texts)


def test_inverse_cdf_draw_follows_the_softmax():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05, 1.0], dtype=np.float32))
    logits[4] = -np.inf  # filtered out
    n = 40_000
    drawn = draw(np.repeat(logits[None], n, 0), rng)
    freq = np.bincount(drawn, minlength=5) / n
    expected = np.array([0.5, 0.3, 0.15, 0.05, 0.0])
    sigma = np.sqrt(expected * (1 - expected) / n)
    assert np.all(np.abs(freq - expected) <= 4 * sigma + 1e-12), freq
    assert freq[4] == 0.0  # probability zero is never drawn


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    k2 = filter_logits(logits, 2, None)
    assert torch.isinf(k2[0, 2:]).all() and torch.isfinite(k2[0, :2]).all()
    p = filter_logits(logits, None, 0.7)  # 0.5 < 0.7 <= 0.8: keeps the first two
    assert torch.isfinite(p[0, :2]).all() and torch.isinf(p[0, 2:]).all()
    p = filter_logits(logits, None, 0.5)  # the first alone reaches 0.5
    assert torch.isfinite(p[0, :1]).all() and torch.isinf(p[0, 1:]).all()


def test_sampling_rejects_bad_arguments(trained):
    _, model, _, _ = trained
    with pytest.raises(ValueError, match=r"`temperature`.*-0.5"):
        model.sample("ROMEO:", 10, temperature=-0.5)
    with pytest.raises(ValueError, match=r"`prime`.*'€'"):
        model.sample("ROMEO € ", 10)
    with pytest.raises(ValueError, match=r"`top_p`"):
        model.sample("A", 10, top_p=1.5)


# -- precision -----------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_both_precisions_train_and_keep_float32_weights(tmp_path, text_file, precision):
    model, trainer = charlm.train(
        tmp_path / precision,
        SMALL,
        small_train(steps=60, lr=2e-2, precision=precision),
        text=text_file,
        log=quiet,
    )
    losses = [r["loss"] for r in trainer.history if "loss" in r]
    assert losses[-1] < losses[0] - 0.5
    assert all(p.dtype == torch.float32 for p in model.parameters())
    meta = load_checkpoint(tmp_path / precision / "latest").meta
    assert meta["precision"] == precision


def test_bf16_steps_the_same_model_as_fp32_to_bfloat16_accuracy(excerpt):
    torch.manual_seed(0)
    model = CharLM(SMALL, Vocab.from_text(excerpt))
    ids = model.encode(excerpt[:400]).view(4, 100)
    batches = StreamBatches(np.zeros(10_000, dtype=np.uint8), 4, 99)
    losses = {}
    for precision in ("fp32", "bf16"):
        step = charlm.make_step_fn(batches, CarriedState(), precision)
        loss, _ = step(model, (ids[:, :-1], ids[:, 1:]))
        loss.backward()
        losses[precision] = (loss.item(), model.head.weight.grad.clone())
        model.zero_grad()
    assert losses["bf16"][0] == pytest.approx(losses["fp32"][0], rel=2e-2)
    assert losses["bf16"][0] != losses["fp32"][0]  # bfloat16 was really used
    cos = F.cosine_similarity(losses["bf16"][1].flatten(), losses["fp32"][1].flatten(), dim=0)
    assert cos > 0.99


def test_auto_precision_is_float32_off_the_fused_kernel_and_bf16_is_refused_there(excerpt):
    vocab = Vocab.from_text(excerpt)
    cpu = torch.device("cpu")
    gru = CharLM(CharLMConfig(cell="gru", hidden_size=8, embedding_size=4), vocab)
    assert charlm.resolve_precision("auto", gru, cpu) == "fp32"
    with pytest.raises(ValueError, match=r"`precision`.*'bf16'.*GRU"):
        charlm.resolve_precision("bf16", gru, cpu)
    lstm = CharLM(CharLMConfig(hidden_size=8, embedding_size=4), vocab)
    expected = "bf16" if charlm.native_bf16(cpu) else "fp32"
    assert charlm.resolve_precision("auto", lstm, cpu) == expected
    assert charlm.resolve_precision("fp32", lstm, cpu) == "fp32"
    with pytest.raises(ValueError, match=r"`precision`.*'fp16'"):
        TrainConfig(precision="fp16")


# -- resuming exactly ---------------------------------------------------------------------------


class SimulatedCrashError(RuntimeError):
    pass


@pytest.mark.parametrize("synthetic", [False, True])
def test_an_interrupted_run_resumes_exactly(tmp_path, text_file, monkeypatch, synthetic):
    """With synthetic gradients too: their module, its optimizer and its pending
    targets travel in the checkpoint."""
    cfg = CharLMConfig(num_layers=2, hidden_size=16, embedding_size=8, dropout=0.2)

    def run_losses(out: Path) -> list[float]:
        rows = list(csv.DictReader((out / "metrics.csv").open()))
        return [float(r["loss"]) for r in rows if r["loss"]]

    tc = small_train(steps=24, checkpoint_every=8, eval_every=8, synthetic_gradients=synthetic)
    charlm.train(tmp_path / "whole", cfg, tc, text=text_file, log=quiet)
    whole = run_losses(tmp_path / "whole")
    assert len(whole) == 24

    from rnnkit import runs as runs_module  # it writes a run's latest/ checkpoint

    real_save = runs_module.save_checkpoint

    def crash_after_step_16(path, **kw):
        real_save(path, **kw)
        if Path(path).name == "latest" and kw["meta"]["step"] == 16:
            raise SimulatedCrashError("killed")

    monkeypatch.setattr(runs_module, "save_checkpoint", crash_after_step_16)
    with pytest.raises(SimulatedCrashError):
        charlm.train(
            tmp_path / "cut",
            cfg,
            small_train(steps=24, checkpoint_every=8, eval_every=8, synthetic_gradients=synthetic),
            text=text_file,
            log=quiet,
        )
    monkeypatch.setattr(runs_module, "save_checkpoint", real_save)
    assert load_checkpoint(tmp_path / "cut" / "latest").meta["step"] == 16
    model, trainer = charlm.train(tmp_path / "cut", resume=True, text=None, log=quiet)
    assert trainer.step == 24
    resumed = run_losses(tmp_path / "cut")
    assert resumed == whole  # every step's loss, bit for bit
    a = load_checkpoint(tmp_path / "whole" / "latest").model_state
    b = load_checkpoint(tmp_path / "cut" / "latest").model_state
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_new_run_never_overwrites_an_old_one(tmp_path, text_file):
    charlm.train(tmp_path / "run", SMALL, small_train(steps=3), text=text_file, log=quiet)
    before = (tmp_path / "run" / "latest" / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        charlm.train(tmp_path / "run", SMALL, small_train(steps=3), text=text_file, log=quiet)
    assert (tmp_path / "run" / "latest" / "model.safetensors").read_bytes() == before


def test_time_budget_fixes_the_steps_and_a_resume_keeps_them(tmp_path, text_file):
    tc = small_train(steps=100_000, minutes=0.05, log_every=5, warmup_steps=5)
    _, trainer = charlm.train(tmp_path / "run", SMALL, tc, text=text_file, log=quiet)
    steps = trainer.step
    assert 20 <= steps < 100_000
    assert trainer.config.max_steps == steps == trainer.budget_steps
    latest = load_checkpoint(tmp_path / "run" / "latest")
    assert latest.meta["train"]["minutes"] == pytest.approx(0.05)  # the run's own setting
    assert latest.train_state["budget_steps"] == steps  # what the budget decided
    # A resume finds the run at its end: the decided steps, not the 100,000 of `steps`.
    _, again = charlm.train(tmp_path / "run", resume=True, progress=False, log=quiet)
    assert again.step == steps and again.config.max_steps == steps
    # --steps extends a finished budget run past what the budget decided.
    _, longer = charlm.train(tmp_path / "run", resume=True, steps=steps + 3, log=quiet)
    assert longer.step == steps + 3


# -- the command line -----------------------------------------------------------------------------


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


TINY_ARGS = [
    "--layers",
    "1",
    "--hidden-size",
    "16",
    "--embedding-size",
    "8",
    "--batch-size",
    "4",
    "--seq-len",
    "16",
    "--warmup",
    "2",
    "--eval-chars",
    "1000",
    "--no-progress",
]


def test_cli_train_sample_eval(tmp_path, text_file, capsys):
    run = tmp_path / "run"
    code, out, _ = cli(
        capsys,
        "train",
        "charlm",
        "--text",
        text_file,
        "--out",
        run,
        "--steps",
        "40",
        "--sample",
        "50",
        *TINY_ARGS,
    )
    assert code == 0 and "run directory" in out and "a sample" in out
    code, out, _ = cli(capsys, "sample", run, "--prime", "KING", "--length", "30", "--seed", "3")
    assert code == 0 and out.startswith("KING") and len(out.rstrip("\n")) >= 34
    assert cli(capsys, "sample", run, "--prime", "KING", "--length", "30", "--seed", "3")[1] == out
    code, out, _ = cli(capsys, "sample", run, "--length", "20", "--num", "3", "--seed", "1")
    assert code == 0 and out.count("--- sample") == 3
    code, out, _ = cli(capsys, "eval", run, "--text", text_file)
    assert code == 0
    bpc = float(out.split("nats/char")[1].split()[0])
    expected = rnnkit.load(run).score(text_file.read_text())["bits_per_char"]
    assert bpc == pytest.approx(expected, abs=1e-3)
    # resuming to more steps continues the same run
    code, out, _ = cli(
        capsys,
        "train",
        "charlm",
        "--out",
        run,
        "--resume",
        "--steps",
        "50",
        "--sample",
        "0",
        "--no-progress",
    )
    assert code == 0
    assert load_checkpoint(run / "latest").meta["step"] == 50


def test_cli_bad_input_gets_one_clear_line(tmp_path, text_file, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café crème, naïve façade ".encode("latin-1") * 50)
    short = tmp_path / "short.txt"
    short.write_text("To be or not to be.\n" * 3)
    cases = [
        (["train", "charlm", "--text", empty], "is empty"),
        (["train", "charlm", "--text", binary], "binary"),
        (["train", "charlm", "--text", latin1], "not UTF-8"),
        (["train", "charlm", "--text", short, "--batch-size", "8"], "too short for one window"),
        (["train", "charlm", "--corpus", "klingon"], "unknown corpus 'klingon'"),
        (["train", "charlm", "--text", tmp_path / "nope.txt"], "no such file"),
        (["sample", tmp_path / "missing"], "no checkpoint"),
        (["eval", tmp_path / "missing", "--text", text_file], "no checkpoint"),
    ]
    for argv, message in cases:
        code, out, err = cli(
            capsys,
            *argv,
            *([] if argv[0] != "train" else ["--out", tmp_path / "r", "--no-progress"]),
        )
        assert code == 2, argv
        assert message in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "r").exists()  # nothing half-made was left behind


def test_cli_refuses_a_foreign_checkpoint_and_a_negative_temperature(trained, tmp_path, capsys):
    run, model, _, _ = trained
    foreign = tmp_path / "classifier"
    save_checkpoint(
        foreign, model_state=model.state_dict(), train_state=None, meta={"kind": "classify"}
    )
    code, _, err = cli(capsys, "sample", foreign)
    assert code == 2 and "'classify'" in err and "'charlm'" in err
    code, _, err = cli(capsys, "sample", run, "--temperature", "-1")
    assert code == 2 and "`temperature`" in err and "-1" in err
    code, _, err = cli(capsys, "sample", run, "--prime", "\u00bfQu\u00e9?")
    assert code == 2 and "`prime`" in err and "'¿'" in err


def test_steps_runs_exactly_that_many_even_below_the_warmup(tmp_path, text_file):
    tc = small_train(steps=7, warmup_steps=50)
    _, trainer = charlm.train(tmp_path / "run", SMALL, tc, text=text_file, log=quiet)
    assert trainer.step == 7 and trainer.config.warmup_steps == 7


def test_one_distinct_character_and_unbounded_samples_are_refused(tmp_path, text_file):
    flat = tmp_path / "flat.txt"
    flat.write_text("a" * 5000, encoding="utf-8")
    with pytest.raises(ValueError, match="one character only"):
        charlm.train(tmp_path / "r", SMALL, small_train(steps=2), text=flat, log=quiet)
    assert not (tmp_path / "r").exists()
    model = CharLM(SMALL, Vocab.from_text("ab \n"))
    with pytest.raises(ValueError, match="would be held in memory"):
        model.sample("a", 200_000_000, num=1000)
