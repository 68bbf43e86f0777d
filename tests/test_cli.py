"""The rnnkit command line: hello and gradients."""

import re

import pytest

from rnnkit.cli import main
from rnnkit.hello import HelloConfig, encode, sample, train_hello


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
