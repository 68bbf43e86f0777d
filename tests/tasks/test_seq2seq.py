"""The encoder-decoder: the loss by hand, decoding, the tips and attention, padding,
learning to copy and reverse, exact resume, bad input, the commands, and the gradients
through time that training traces and a trained run measures on its own validation pairs."""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import math
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import sacrebleu
import torch
from torch.nn import functional as F

from resumes import check_resumes_exactly
from rnnkit import decoding
from rnnkit.checkpoint import load_checkpoint
from rnnkit.cli import main
from rnnkit.data.readers import read_pairs
from rnnkit.diagnostics import gradients_through_time, read_trace
from rnnkit.tasks import seq2seq
from rnnkit.tasks.seq2seq import (
    END_ID,
    PROBE_SIZE,
    START_ID,
    Seq2Seq,
    Seq2SeqConfig,
    TrainConfig,
    build_vocab,
    collate,
    encode_pairs,
    join_tokens,
)


@pytest.fixture(autouse=True)
def data_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "cache"))


def quiet(msg: str) -> None:
    pass


SYMBOLS = ["a", "b", "c", "d", "e", "f", "g", "h"]


def random_pairs(n: int, how: str, seed: int, lo: int = 2, hi: int = 6) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s = [rng.choice(SYMBOLS) for _ in range(rng.randint(lo, hi))]
        t = s[::-1] if how == "reverse" else s
        out.append((" ".join(s), " ".join(t)))
    return out


def write_pairs(path: Path, pairs) -> Path:
    path.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    return path


def tiny_model(seed: int = 0, **kw) -> Seq2Seq:
    base = dict(hidden_size=12, embedding_size=8, dropout=0.0)
    config = Seq2SeqConfig(**{**base, **kw})
    vocab = build_vocab([SYMBOLS], 1)
    torch.manual_seed(seed)
    return Seq2Seq(config, vocab, build_vocab([SYMBOLS[:5]], 1)).eval()


def batch_of(model: Seq2Seq, pairs) -> dict:
    enc = encode_pairs(pairs, model.config, model.source_vocab, model.target_vocab, "test")
    return collate(enc, list(range(len(pairs))))


VARIANTS = [
    dict(attention="none"),
    dict(attention="luong"),
    dict(attention="bahdanau"),
    dict(attention="none", bidirectional=False, separate_weights=False),
    dict(attention="luong", bidirectional=False, separate_weights=False, cell="gru"),
    dict(attention="bahdanau", context_every_step=True, cell="gru", num_layers=2),
    dict(attention="none", feed_previous=False, context_every_step=True),
    dict(attention="luong", reverse_source=True, cell="rnn", num_layers=2),
]


def ids(v: dict) -> str:
    return ",".join(f"{k}={x}" for k, x in v.items())


@pytest.mark.parametrize("variant", VARIANTS, ids=ids)
def test_the_teacher_forced_loss_is_the_mean_of_the_steps_losses_by_hand(variant):
    model = tiny_model(**variant)
    pairs = [("a b c", "a b"), ("d e f g h", "c d e a"), ("b", "e")]
    batch = batch_of(model, pairs)
    with torch.no_grad():
        loss = model.loss(batch)
        # by hand: each pair alone, one decoding step at a time, fed the right previous token
        total, count = 0.0, 0
        for k in range(len(pairs)):
            n = int(batch["lengths"][k])
            ids_, state = model.start(batch["source"][k : k + 1, :n], batch["lengths"][k : k + 1])
            target = [t for t in batch["target"][k].tolist() if t != 0]
            for y in target:
                logits, state = model.step(ids_, state)
                total += float(F.cross_entropy(logits, torch.tensor([y]), reduction="sum"))
                count += 1
                ids_ = torch.tensor([y])
    assert float(loss) == pytest.approx(total / count, rel=1e-5)
    assert batch["target"][0].tolist()[:3] == [*model.target_vocab.encode(["a", "b"]), END_ID]
    assert batch["previous"][0].tolist()[0] == START_ID


@pytest.mark.parametrize("variant", VARIANTS[:3], ids=ids)
def test_padding_never_changes_a_translation(variant):
    model = tiny_model(seed=3, **variant)
    sources = ["a", "b c d e f g h a b c", "c d", "h g f e", "a a a a a a"]
    alone = [model.translate([s], max_length=12)[0] for s in sources]
    assert model.translate(sources, max_length=12) == alone
    assert model.translate(sources, max_length=12, beam=3) == [
        model.translate([s], max_length=12, beam=3)[0] for s in sources
    ]
    # the scores themselves: a padded row's logits are its logits alone
    batch = batch_of(model, [(s, "a b") for s in sources])
    with torch.no_grad():
        together, _ = model(batch["source"], batch["lengths"], batch["previous"])
        for k, s in enumerate(sources):
            one = batch_of(model, [(s, "a b")])
            logits, _ = model(one["source"], one["lengths"], one["previous"])
            torch.testing.assert_close(together[k : k + 1], logits, atol=1e-5, rtol=1e-5)


def test_a_beam_of_width_one_is_greedy_and_a_full_beam_finds_the_best_sequence():
    model = tiny_model(seed=5, attention="luong")
    batch = batch_of(model, [("a b c", "a"), ("h g", "b"), ("d", "c")])
    first, state = model.start(batch["source"], batch["lengths"])
    with torch.no_grad():
        greedy = decoding.greedy(model.step, first, state, 8, end=END_ID)
        beams = decoding.beam_search(model.step, first, state, 8, k=1, end=END_ID)
    for n, hyps in enumerate(beams):
        length = int(greedy.lengths[n])
        tokens = greedy.tokens[n, :length].tolist()
        assert hyps[0].tokens + ([END_ID] if hyps[0].finished else []) == tokens
    # every sequence of up to 2 tokens (then <end>) over the 8 target ids, scored by the
    # teacher-forced model: the exhaustive beam's best is the brute-force best
    V = len(model.target_vocab)
    src, lengths = batch["source"][:1], batch["lengths"][:1]
    best = (-math.inf, None)
    with torch.no_grad():
        for T in (0, 1, 2):
            for seq in itertools.product([t for t in range(V) if t != END_ID], repeat=T):
                prev = torch.tensor([[START_ID, *seq]])
                logp = model(src, lengths, prev)[0].log_softmax(-1)[0]
                value = float(sum(logp[t, y] for t, y in enumerate([*seq, END_ID])))
                best = max(best, (value, list(seq)), key=lambda b: b[0])
        first, state = model.start(src, lengths)
        found = decoding.beam_search(
            model.step, first, state, 3, k=1, beam_size=V**2, end=END_ID, keep_unfinished=False
        )
    assert found[0][0].tokens == best[1]
    assert found[0][0].log_prob == pytest.approx(best[0], rel=1e-5)


def test_each_tip_changes_the_model_as_it_says():
    pairs = [("a b c", "a b"), ("d e", "c")]
    # tip 4: reading the source backwards is reading the reversed source forwards
    fwd, rev = tiny_model(seed=1), tiny_model(seed=1, reverse_source=True)
    rev.load_state_dict(fwd.state_dict())
    b1, b2 = batch_of(rev, pairs), batch_of(fwd, [("c b a", "a b"), ("e d", "c")])
    with torch.no_grad():
        torch.testing.assert_close(rev(*_args(b1))[0], fwd(*_args(b2))[0])
    # tip 3 off: what was written before does not change the next scores
    blind = tiny_model(seed=2, feed_previous=False, context_every_step=True)
    b = batch_of(blind, pairs)
    with torch.no_grad():
        a = blind(b["source"], b["lengths"], b["previous"])[0]
        other = torch.randint(4, len(blind.target_vocab), b["previous"].shape)
        torch.testing.assert_close(blind(b["source"], b["lengths"], other)[0], a)
        seeing = tiny_model(seed=2, context_every_step=True)
        assert not torch.allclose(seeing(b["source"], b["lengths"], other)[0],
                                  seeing(*_args(b))[0])  # fmt: skip
    # tip 2: the encoder's final state (M = 2 x 12) joins the 8-wide token vectors
    assert blind.decoder.input_size == 8 + 24
    assert tiny_model(attention="bahdanau").decoder.input_size == 8 + 24
    assert tiny_model(attention="luong").decoder.input_size == 8
    # tip 1 off: one stack reads and writes, fewer parameters
    shared = tiny_model(bidirectional=False, separate_weights=False)
    own = tiny_model(bidirectional=False)
    assert shared.decoder is shared.encoder
    n = sum(p.numel() for p in own.parameters()) - sum(p.numel() for p in shared.parameters())
    assert n == sum(p.numel() for p in own.decoder.parameters())
    with pytest.raises(ValueError, match=r"`separate_weights`.*bidirectional"):
        Seq2SeqConfig(separate_weights=False)


def _args(b: dict) -> tuple:
    return b["source"], b["lengths"], b["previous"]


def test_attention_weights_are_a_distribution_over_the_real_source_tokens():
    for kind in ("luong", "bahdanau"):
        model = tiny_model(seed=4, attention=kind)
        w = model.attention("a b c d", ["a", "b"])
        assert w.shape == (3, 4)
        np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="no attention"):
        tiny_model(attention="none").attention("a b", ["a"])


def small(**kw) -> TrainConfig:
    base = dict(epochs=12, batch_size=32, lr=1e-2, warmup_steps=10, progress=False, device="cpu")
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("how", ["copy", "reverse"])
def test_a_model_learns_to_copy_and_to_reverse_short_sequences_perfectly(tmp_path, how):
    files = {
        "train": write_pairs(tmp_path / "train.tsv", random_pairs(4000, how, seed=1)),
        "test": write_pairs(tmp_path / "test.tsv", random_pairs(200, how, seed=2)),
    }
    cfg = Seq2SeqConfig(hidden_size=64, embedding_size=32, dropout=0.0)
    model, results = seq2seq.train(tmp_path / how, cfg, small(epochs=10), files=files, log=quiet)
    assert results["test"]["greedy"]["exact"] == 100.0, results
    assert results["test"]["greedy"]["bleu"] == pytest.approx(100.0)
    assert (tmp_path / how / "attention.png").is_file()
    assert model.translate(["a b c d"]) == (["a b c d"] if how == "copy" else ["d c b a"])


def test_an_interrupted_run_resumes_exactly(tmp_path, monkeypatch):
    files = {"train": write_pairs(tmp_path / "t.tsv", random_pairs(300, "reverse", seed=3))}
    cfg = Seq2SeqConfig(hidden_size=16, embedding_size=8, dropout=0.2, attention="bahdanau")
    tc = dict(epochs=3, evals_per_epoch=2)

    check_resumes_exactly(
        tmp_path,
        monkeypatch,
        lambda out: seq2seq.train(out, cfg, small(**tc), files=files, log=quiet),
        lambda out: seq2seq.train(out, resume=True, log=quiet),
    )
    # the gradients traced before the crash travel in the checkpoint: the trace is whole
    whole, cut = (read_trace(tmp_path / k / "gradients.json") for k in ("whole", "cut"))
    assert [p["step"] for p in cut] == [p["step"] for p in whole] and len(whole) >= 4
    for a, b in zip(whole, cut):
        for g, h in zip(a["layers"], b["layers"]):
            np.testing.assert_allclose(h.norms, g.norms, rtol=1e-6)


def test_pair_files_refuse_bad_lines_by_file_and_line(tmp_path):
    cases = {
        "a b\tc\nno tab here\n": ":2: expected 'source<TAB>target' (no tab",
        "a\tb\tc\n": ":1: expected 'source<TAB>target' (3 tab-separated fields",
        "x\ty\n \tb\n": ":2: the source is empty",
        "x\t \n": ":1: the target is empty",
        "\n\n": "holds no pairs",
    }
    for k, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"bad{k}.tsv"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match=r".*".join(map(_re, message.split("(")))):
            read_pairs(path)


def _re(s: str) -> str:
    import re

    return re.escape(s)


def test_translation_refuses_empty_and_overlong_sources_and_counts_unseen_tokens():
    model = tiny_model(max_source_len=5)
    with pytest.raises(ValueError, match=r"Argument `sources\[1\]`: the source is empty"):
        model.translate(["a", "  "])
    with pytest.raises(ValueError, match=r"`sources\[0\]`: the source has 6 tokens, more than.*5"):
        model.translate(["a b c d e f"])
    heard = []
    model.translate(["a zz b zz", "yy"], log=heard.append)
    assert len(heard) == 1 and "3 source tokens never seen" in heard[0]
    assert "'zz' (2)" in heard[0] and "'yy' (1)" in heard[0]


def test_words_join_back_into_text():
    assert join_tokens(["Hello", ",", "world", "!"], "words") == "Hello, world!"
    assert join_tokens(["¿", "Qué", "?"], "words") == "¿Qué?"
    assert join_tokens(list("a b"), "chars") == "a b"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small run trained by the command line (no --val: a fixed share of the training
    pairs validates), shared by the tests that read it."""
    root = tmp_path_factory.mktemp("seq2seq")
    train = write_pairs(root / "train.tsv", random_pairs(400, "copy", seed=4))
    test = write_pairs(root / "test.tsv", random_pairs(40, "copy", seed=5))
    out = root / "run"
    args = ["train", "seq2seq", "--train", str(train), "--test", str(test), "--out", str(out)]
    args += ["--epochs", "2", "--hidden-size", "16", "--embedding-size", "8", "--no-progress"]
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setenv("RNNKIT_DATA", str(root / "cache"))
        code = main(args)
    return SimpleNamespace(out=out, train=train, test=test, code=code, printed=printed.getvalue())


def test_the_commands_train_translate_and_evaluate(trained, tmp_path, capsys):
    out, test = trained.out, trained.test
    assert trained.code == 0
    assert "test, greedy: exact" in trained.printed
    assert main(["translate", str(out), "a b c", "--beam", "3"]) == 0
    got = capsys.readouterr().out.splitlines()
    assert len(got) == 1 and set(got[0].split()) <= set(SYMBOLS) | {"<unk>"}
    sources = tmp_path / "sources.txt"
    sources.write_text("a b\n\nc d\n")
    assert main(["translate", str(out), "--file", str(sources)]) == 2
    assert f"{sources}:2: the source is empty" in capsys.readouterr().err
    plot = tmp_path / "attention.png"  # not the working directory's
    args = ["eval", str(out), "--test", str(test), "--attention", "1", "--plot", str(plot)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "BLEU" in printed and "attention" in printed and plot.stat().st_size > 0
    # a run of another kind
    (tmp_path / "toy.txt").write_text("a b c\n" * 400)
    lm = tmp_path / "lm"
    code = main(
        [
            "train",
            "wordlm",
            "--text",
            str(tmp_path / "toy.txt"),
            "--out",
            str(lm),
            "--steps",
            "2",
            "--hidden-size",
            "4",
            "--embedding-size",
            "4",
            "--batch-size",
            "4",
            "--seq-len",
            "8",
            "--no-progress",
        ]
    )
    assert code == 0
    capsys.readouterr()
    assert main(["translate", str(lm), "a b"]) == 2
    err = capsys.readouterr().err
    assert "wordlm" in err and "seq2seq" in err and err.count("\n") == 1


def probe_batch(trained, model: Seq2Seq) -> dict:
    """The first PROBE_SIZE validation pairs of the shared run, padded as in training."""
    texts, _ = seq2seq.load_pairs(data=None, files={"train": trained.train, "test": trained.test},
                                  val_fraction=TrainConfig().val_fraction)  # fmt: skip
    return batch_of(model, texts["val"][:PROBE_SIZE])


def test_training_traces_gradients_through_time_at_every_evaluation(trained):
    """gradients.json: a point per evaluation; each encoder direction has a norm per
    source step of the probe batch, the decoder one per target step."""
    points = read_trace(trained.out / "gradients.json")
    evals = [r for r in csv.DictReader((trained.out / "metrics.csv").open()) if r.get("eval_loss")]
    assert len(points) == len(evals) == 2  # an evaluation per epoch
    assert [p["step"] for p in points] == [int(r["step"]) for r in evals]
    batch = probe_batch(trained, seq2seq.load(trained.out))
    assert len(batch["source"]) == PROBE_SIZE
    S, T = batch["source"].shape[1], batch["previous"].shape[1]
    assert S != T  # copies: the target has <end> besides
    for p in points:
        steps = {g.name: len(g.norms) for g in p["layers"]}
        assert steps == {"encoder.layers.0.forward_layer": S,
                         "encoder.layers.0.backward_layer": S, "decoder.layers.0": T}  # fmt: skip


def test_a_trained_run_measures_gradients_on_its_own_validation_pairs(trained):
    """The loaded run's probe rebuilds the batch training traced: at the best step its
    norms are the traced ones; every one finite and positive."""
    model = seq2seq.load(trained.out)
    layers = gradients_through_time(model, seq2seq.gradient_probe(model, log=quiet))
    assert len(layers) == 3
    for g in layers:
        assert all(math.isfinite(n) and n > 0 for n in g.norms), g
    step = load_checkpoint(trained.out / "best").meta["step"]
    (traced,) = [p for p in read_trace(trained.out / "gradients.json") if p["step"] == step]
    for g, t in zip(layers, traced["layers"]):
        assert g.name == t.name
        np.testing.assert_allclose(g.norms, t.norms, rtol=1e-4)


def test_subword_sides_learn_pieces_round_trip_and_travel_in_the_checkpoint(tmp_path):
    from num2words import num2words

    rng = random.Random(0)
    numbers = rng.sample(range(10_000), 1200)
    pairs = [(num2words(n, lang="en"), num2words(n, lang="fr")) for n in numbers]
    side = seq2seq.Side.train([t for _, t in pairs], "subwords", False, 120)
    pieces = side.split("deux mille trois cent quarante-sept")
    assert "▁" in "".join(pieces) and len(pieces) < len("deux mille trois cent quarante-sept")
    assert side.join(pieces) == "deux mille trois cent quarante-sept"
    assert all(side.join(side.split(t)) == t for _, t in pairs[:200])

    files = {
        "train": write_pairs(tmp_path / "train.tsv", pairs[:1000]),
        "test": write_pairs(tmp_path / "test.tsv", pairs[1000:]),
    }
    cfg = Seq2SeqConfig(hidden_size=32, embedding_size=16, source_tokens="subwords",
                        target_tokens="subwords", subword_vocab_size=120)  # fmt: skip
    model, results = seq2seq.train(tmp_path / "sw", cfg, small(epochs=1), files=files, log=quiet)
    assert len(model.source_vocab) <= 120 + 4 and len(model.target_vocab) <= 120 + 4
    loaded = seq2seq.load(tmp_path / "sw")
    text = pairs[1000][0]
    assert loaded.sides["source"].split(text) == model.sides["source"].split(text)
    (out,) = loaded.translate([text])
    assert out == model.translate([text])[0] and "▁" not in out
    # scored as words: the references' words, not pieces, are what the error counts
    scored = seq2seq.score(loaded, pairs[1000:1010])
    hyp_words = [h for h in scored["hypotheses"]]
    assert all("▁" not in w for h in hyp_words for w in h)
    # BLEU and chrF read the detokenized translations against the references as written
    # ("quarante-sept", where joined word tokens would read "quarante - sept")
    sources, targets = zip(*pairs[1000:1010])
    said = loaded.translate(list(sources))
    assert scored["metrics"]["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(said, [list(targets)]).score
    )
    assert scored["metrics"]["chrf"] == pytest.approx(
        sacrebleu.corpus_chrf(said, [list(targets)]).score
    )
    with pytest.raises(ValueError, match="subword_vocab_size"):
        Seq2SeqConfig(subword_vocab_size=0)
