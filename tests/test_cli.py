"""The rnnkit command line: hello and gradients."""

import re

import pytest

from rnnkit.cli import main
from rnnkit.tasks.hello import HelloConfig, encode, sample, train_hello


def test_hello_learns_and_samples_hello(capsys):
    assert main(["hello"]) == 0
    out = capsys.readouterr().out
    assert "sample from 'h': 'hello'" in out
    before, after = out.split("after training:")
    assert "WRONG" in before  # untrained scores pick wrong characters ...
    assert "WRONG" not in after  # ... trained ones the right one at every step
    assert after.count(" ok") == 4


def test_hello_loss_falls_for_several_seeds():
    for seed in range(3):
        model, losses = train_hello(HelloConfig(seed=seed), verbose=False)
        assert losses[-1] < 0.05 < 1.0 < losses[0]
        assert sample(model, "h", 5) == "hello"


def test_hello_rejects_words_outside_the_vocabulary():
    with pytest.raises(ValueError, match=r"word.*\['x'\]"):
        encode("hex")


def test_hello_bad_hidden_size_is_a_clear_error(capsys):
    assert main(["hello", "--hidden-size", "0"]) == 2
    err = capsys.readouterr().err
    assert "hidden_size" in err and "0" in err


def test_gradients_command_reports_vanishing_and_exploding(tmp_path, capsys):
    out_png = tmp_path / "g.png"
    assert main(["gradients", "--steps", "40", "--hidden-size", "32", "--out", str(out_png)]) == 0
    out = capsys.readouterr().out
    rows = {line.split("  ")[0].strip(): line for line in out.splitlines() if "orthogonal" in line}
    assert re.search(r"0\.(49|50)\d\s+vanishing", rows["RNN, W_hh = 0.5 x orthogonal"])
    assert "exploding" in rows["RNN, W_hh = 1.5 x orthogonal"]
    assert out_png.stat().st_size > 10_000


# -- classify, tag, predict, eval ---------------------------------------------------------

SEQ_FAST = ["--no-progress", "--hidden-size", "16", "--embedding-size", "16", "--lr", "1e-2"]
SEQ_FAST += ["--batch-size", "16"]


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory):
    from seqtoys import sentiment_tsv

    d = tmp_path_factory.mktemp("classify")
    train = sentiment_tsv(d / "train.tsv", 240, seed=1)
    test = sentiment_tsv(d / "test.tsv", 60, seed=2)
    args = ["train", "classify", "--train", str(train), "--test", str(test)]
    assert main([*args, "--out", str(d / "run"), "--epochs", "25", *SEQ_FAST]) == 0
    return d


def test_train_classify_writes_a_run_and_eval_prints_metrics(classify_run, capsys, tmp_path):
    run = classify_run / "run"
    for name in ("best", "latest", "metrics.csv", "results.json", "confusion.png"):
        assert (run / name).exists(), name
    plot = tmp_path / "cm.png"
    assert main(["eval", str(run), "--plot", str(plot)]) == 0  # the run's own test file
    out = capsys.readouterr().out
    assert "test.tsv: 60 examples" in out
    assert "accuracy 100.00%" in out
    assert plot.stat().st_size > 1000


def test_predict_reads_arguments_a_file_and_stdin(classify_run, capsys, tmp_path, monkeypatch):
    import io

    run = str(classify_run / "run")
    assert main(["predict", run, "a superb film", "the acting was dull", "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["pos", "neg"]
    label, p, other, q, text = lines[0].split("\t")
    assert (other, text) == ("neg", "a superb film")
    assert float(p) > 0.5 > float(q) and abs(float(p) + float(q) - 1) < 1e-3

    f = tmp_path / "in.txt"
    f.write_text("lovely story\n\nweak plot\n", encoding="utf-8")
    assert main(["predict", run, "--file", str(f)]) == 0
    assert [x.split("\t")[0] for x in capsys.readouterr().out.splitlines()] == ["pos", "neg"]

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"a boring film\n")))
    assert main(["predict", run]) == 0
    assert capsys.readouterr().out.startswith("neg\t")


def test_predict_and_eval_refuse_bad_input_by_name(classify_run, capsys, tmp_path):
    run = str(classify_run / "run")
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    assert main(["predict", run, "--file", str(empty)]) == 2
    assert f"{empty} is empty" in capsys.readouterr().err
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 superb\n".encode("latin-1"))
    assert main(["predict", run, "--file", str(latin)]) == 2
    assert "UTF-8" in capsys.readouterr().err
    unseen = tmp_path / "unseen.tsv"
    unseen.write_text("pos\ta superb film\nmixed\ta fine and dull film\n", encoding="utf-8")
    assert main(["eval", run, "--test", str(unseen)]) == 2
    err = capsys.readouterr().err
    assert f"{unseen}:2: label 'mixed' was never seen in training" in err
    no_label = tmp_path / "nolabel.tsv"
    no_label.write_text("pos\ta superb film\njust some words\n", encoding="utf-8")
    assert main(["eval", run, "--test", str(no_label)]) == 2
    assert f"{no_label}:2: expected 'label<TAB>text'" in capsys.readouterr().err
    assert main(["eval", run, "--text", str(no_label)]) == 2
    assert "--text and --corpus are for character models" in capsys.readouterr().err


def test_train_tag_with_crf_then_predict_and_eval(tmp_path, capsys):
    from seqtoys import entity_conll

    train = entity_conll(tmp_path / "train.conll", 200, seed=1)
    test = entity_conll(tmp_path / "test.conll", 40, seed=2)
    run = str(tmp_path / "run")
    args = ["train", "tag", "--train", str(train), "--test", str(test), "--out", run]
    assert main([*args, "--crf", "--chars", "--epochs", "10", *SEQ_FAST]) == 0
    capsys.readouterr()
    assert main(["predict", run, "we met Ann Lee in Lima"]) == 0
    assert capsys.readouterr().out.strip() == "we/O met/O Ann/B-PER Lee/I-PER in/O Lima/B-LOC"
    assert main(["eval", run, "--plot", str(tmp_path / "cm.png")]) == 0
    out = capsys.readouterr().out
    assert "entities P 100.00 R 100.00 F1 100.00" in out
    assert "PER" in out and "LOC" in out  # seqeval's per-type report
    bad = tmp_path / "bad.conll"
    bad.write_text("we\tO\nmet\n", encoding="utf-8")
    assert main(["eval", run, "--test", str(bad)]) == 2
    assert f"{bad}:2: expected 'token<TAB>tag'" in capsys.readouterr().err


def test_numeric_npz_through_the_command_line(tmp_path, capsys):
    import numpy as np

    from seqtoys import numeric_npz

    train = numeric_npz(tmp_path / "train.npz", 400, seed=1)
    run = str(tmp_path / "run")
    args = ["train", "classify", "--train", str(train), "--out", run, "--unidirectional"]
    assert main([*args, "--epochs", "15", *SEQ_FAST]) == 0
    x = np.zeros((2, 3, 2), dtype=np.float32)
    x[0, :, 0], x[1, :, 0] = 1.5, -1.5
    np.savez(tmp_path / "new.npz", x=x)
    capsys.readouterr()
    assert main(["predict", run, "--file", str(tmp_path / "new.npz")]) == 0
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()] == ["up", "down"]
    assert main(["predict", run, "some words"]) == 2
    assert "numeric sequences: give them as --file X.npz" in capsys.readouterr().err


def test_resume_needs_out_and_a_charlm_is_not_a_classifier(tmp_path, capsys):
    assert main(["train", "classify", "--data", "movie-reviews", "--resume"]) == 2
    assert "--resume needs the run directory in --out" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "nothing"), "hello"]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def seq_configs(argv: list[str]):
    """The configurations `rnnkit train classify|tag` builds from `argv`."""
    from rnnkit.cli import build_parser, config_from_args
    from rnnkit.tasks import classify, tag
    from rnnkit.tasks.sequences import RunConfig

    args = build_parser().parse_args(argv)
    module = classify if args.task == "classify" else tag
    model_kw, run_kw = module.PRESETS.get(args.data, ({}, {}))
    return config_from_args(module.CONFIG, args, model_kw), config_from_args(
        RunConfig, args, run_kw
    )


def test_a_built_in_sets_preset_fills_what_the_command_line_leaves_unset():
    from rnnkit.tasks.classify import PRESETS

    config, run = seq_configs(
        ["train", "classify", "--data", "mnist-rows", "--hidden-size", "32", "--no-progress"]
    )
    model_kw, run_kw = PRESETS["mnist-rows"]
    assert config.hidden_size == 32  # the command line wins
    assert config.cell == model_kw["cell"] and config.num_layers == model_kw["num_layers"]
    assert run.epochs == run_kw["epochs"] and run.lr == run_kw["lr"]
    assert not run.progress
    config, run = seq_configs(["train", "tag", "--train", "x.conll", "--unidirectional"])
    assert config.bidirectional is False and config.crf is False  # no preset: defaults
    config, _ = seq_configs(["train", "tag", "--train", "x.conll", "--no-bidirectional", "--crf"])
    assert config.bidirectional is False and config.crf is True


@pytest.mark.parametrize("task", ["charlm", "classify", "tag"])
def test_every_config_field_is_a_flag_named_after_it_with_its_help(task, capsys):
    """One naming rule for every task: field `hidden_size` is `--hidden-size`, its
    comment is the help, its default is shown."""
    import dataclasses

    from rnnkit.tasks import charlm, classify, tag
    from rnnkit.tasks.sequences import RunConfig

    configs = {
        "charlm": (charlm.CharLMConfig, charlm.TrainConfig),
        "classify": (classify.ClassifyConfig, RunConfig),
        "tag": (tag.TagConfig, RunConfig),
    }[task]
    with pytest.raises(SystemExit):
        main(["train", task, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for cls in configs:
        for f in dataclasses.fields(cls):
            assert f"--{f.name.replace('_', '-')}" in text, f.name
    assert "--hidden-size HIDDEN_SIZE units per" in text  # the field's comment
    assert "(default: 0.0)" in text


def test_older_flag_spellings_still_work():
    from rnnkit.cli import build_parser, config_from_args
    from rnnkit.tasks.charlm import CharLMConfig, TrainConfig

    argv = ["train", "charlm", "--layers", "2", "--clip", "0.5", "--warmup", "7", "--no-progress"]
    args = build_parser().parse_args(argv)
    model, run = config_from_args(CharLMConfig, args), config_from_args(TrainConfig, args)
    assert model.num_layers == 2 and run.clip_norm == 0.5 and run.warmup_steps == 7
    assert run.progress is False and run.lr == TrainConfig.lr  # unset: the default
    args = build_parser().parse_args(["train", "charlm", "--betas", "0.8", "0.99"])
    assert config_from_args(TrainConfig, args).betas == (0.8, 0.99)


def test_predict_refuses_a_character_model_and_eval_asks_it_for_text(tmp_path, capsys):
    from rnnkit.tasks import charlm
    from rnnkit.tasks.charlm import CharLMConfig, TrainConfig

    text = tmp_path / "tiny.txt"
    text.write_text("to be or not to be, that is the question. " * 40, encoding="utf-8")
    config = CharLMConfig(num_layers=1, hidden_size=8, embedding_size=4)
    run_config = TrainConfig(batch_size=2, seq_len=8, steps=3, warmup_steps=1, progress=False)
    charlm.train(tmp_path / "lm", config, run_config, text=text, log=lambda msg: None)
    assert main(["predict", str(tmp_path / "lm"), "hello"]) == 2
    assert "`predict` takes a classifier or a tagger" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "lm")]) == 2
    assert "--text FILE or --corpus NAME" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "lm"), "--test", str(text)]) == 2
    assert "a character model is evaluated on --text" in capsys.readouterr().err


def test_resume_refuses_options_it_would_ignore(classify_run, capsys):
    assert main(["train", "classify", "--out", str(classify_run), "--resume", "--lr", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "would ignore --lr" in err and err.count("\n") == 1
    argv = ["train", "charlm", "--out", str(classify_run), "--resume", "--hidden-size", "8"]
    assert main([*argv, "--text", "x.txt"]) == 2
    assert "would ignore --text, --hidden-size" in capsys.readouterr().err


def test_unwritable_outputs_and_missing_devices_get_one_line(tmp_path, capsys):
    import torch

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be. " * 200, encoding="utf-8")
    argv = ["train", "charlm", "--text", str(text), "--out", str(blocker / "run")]
    assert main([*argv, "--hidden-size", "8", "--steps", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnkit train: error:") and err.count("\n") == 1
    assert blocker.read_text() == "not a folder"
    if not torch.cuda.is_available():
        assert main(["sample", str(tmp_path), "--device", "cuda"]) == 2
        assert "`device` is 'cuda', but CUDA is not available" in capsys.readouterr().err


def test_a_data_set_that_cannot_be_fetched_is_one_error_line(tmp_path, capsys, monkeypatch):
    from rnnkit.data import DataSet
    from rnnkit.data.fetch import FetchError

    def offline(self, log=None):
        raise FetchError("could not download vaderSentiment==3.3.2 from PyPI: offline")

    monkeypatch.setattr(DataSet, "splits", offline)
    code = main(["train", "classify", "--data", "movie-reviews", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("rnnkit train: error: could not download vaderSentiment")
