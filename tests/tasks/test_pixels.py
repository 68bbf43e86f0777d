"""Pixel by pixel: the model's probabilities sum to 1 over every image of a tiny toy, no
pixel sees itself or a later one, sampling draws from the distribution the teacher-forced
pass computes, a small model learns a toy whose entropy is known, resume is exact, and
the commands train, complete images and refuse bad input."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resumes import check_resumes_exactly
from rnnkit.cli import main
from rnnkit.data import digits
from rnnkit.tasks import pixels
from rnnkit.tasks.pixels import PixelConfig, PixelRNN, TrainConfig
from traces import check_trace


def quiet(msg: str) -> None:
    pass


def tiny(levels: int, shape=(2, 2), seed: int = 0, **kw) -> PixelRNN:
    torch.manual_seed(seed)
    base = dict(hidden_size=8, row_size=6, embedding_size=3, window=1, column_size=4,
                levels=levels)  # fmt: skip
    model = PixelRNN(PixelConfig(**{**base, **kw}), shape)
    with torch.no_grad():  # larger weights than the defaults: far from uniform outputs
        for p in model.parameters():
            p.mul_(3.0)
    return model.eval()


def every_image(levels: int, shape=(2, 2)) -> torch.Tensor:
    n = shape[0] * shape[1]
    return torch.tensor(list(itertools.product(range(levels), repeat=n))).view(-1, *shape)


@pytest.mark.parametrize("levels,cell", [(2, "lstm"), (3, "gru"), (2, "rnn")])
def test_the_probabilities_of_all_images_of_a_tiny_toy_sum_to_one(levels, cell):
    model = tiny(levels, cell=cell)
    images = every_image(levels)  # 16 or 81 images of 2x2
    with torch.no_grad():
        p = model.log_prob(images).exp()
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(p.max()) > 2.0 / len(images)  # not the uniform distribution


@pytest.mark.parametrize("levels", [2, 5])
def test_raster_order_never_lets_a_pixel_see_itself_or_a_later_one(levels):
    H, W = 4, 5
    model = tiny(levels, (H, W), num_layers=2)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, levels, (3, H, W), generator=g)
    base = model(x)
    for i, j in itertools.product(range(H), range(W)):
        y = x.clone()
        y[:, i, j] = (y[:, i, j] + 1) % levels
        moved = (model(y) - base).abs().amax(dim=(0, 3)) > 1e-6  # (H, W): which logits moved
        order = torch.arange(H * W).view(H, W)
        assert not moved[order <= i * W + j].any(), (i, j)  # itself and earlier: never
        later = order > i * W + j
        if i < H - 1 or j < W - 1:
            assert moved[later].any(), (i, j)  # some later pixel reads it


def test_greedy_completion_takes_the_likeliest_value_of_the_teacher_forced_pass():
    H, W = 5, 4
    model = tiny(4, (H, W))
    x = torch.randint(0, 4, (6, H, W), generator=torch.Generator().manual_seed(2))
    done = model.complete(x, 2, temperature=0)
    assert torch.equal(done[:, :2], x[:, :2])  # the kept rows are kept
    best = model(done).argmax(-1)  # what each pixel's own distribution likes best
    assert torch.equal(done[:, 2:], best[:, 2:])


def test_samples_follow_the_models_distribution():
    model = tiny(2)
    images = every_image(2)
    with torch.no_grad():
        p = model.log_prob(images).exp()
    drawn = model.sample(20_000, seed=3)  # every sample in one batch
    codes = (drawn.view(len(drawn), -1) * torch.tensor([8, 4, 2, 1])).sum(1)
    freq = torch.bincount(codes, minlength=16).double() / len(drawn)
    # within 5 standard errors of each image's probability
    se = (p.double() * (1 - p.double()) / len(drawn)).sqrt()
    assert ((freq - p.double()).abs() <= 5 * se + 1e-4).all(), (freq, p)
    again = model.sample(20_000, seed=3)
    assert torch.equal(drawn, again)


def copy_rows(n: int, seed: int, shape=(6, 6)) -> np.ndarray:
    """Images whose first row is random bits and every other row copies it: exactly W
    bits of information, W log 2 nats per image."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, 2, (n, 1, shape[1]))
    return np.repeat(first, shape[0], axis=1).astype(np.uint8)


def write_npz(path: Path, train: np.ndarray, test: np.ndarray, **extra) -> Path:
    np.savez(path, train=train, test=test, **extra)
    return path


def small(**kw) -> TrainConfig:
    base = dict(epochs=8, batch_size=32, lr=1e-2, warmup_steps=10, progress=False, device="cpu")
    return TrainConfig(**{**base, **kw})


def test_a_small_model_learns_a_toy_down_to_its_entropy(tmp_path, capsys):
    path = write_npz(tmp_path / "toy.npz", copy_rows(1500, 0), copy_rows(300, 1))
    cfg = PixelConfig(hidden_size=32, row_size=32, embedding_size=4, window=1, column_size=8)
    model, results = pixels.train(tmp_path / "run", cfg, small(), images=path, log=quiet)
    entropy = 6 * math.log(2)  # 4.16 nats: the first row's 6 fair bits
    assert results["test"]["nats_per_image"] < entropy + 0.3, results["test"]
    assert results["test"]["nats_per_image"] > entropy - 0.3  # it cannot know the bits
    done = model.complete(torch.from_numpy(copy_rows(20, 2)).long(), 1, temperature=0)
    assert (done == done[:, :1]).all()  # every completed row copies the kept one
    assert (tmp_path / "run" / "completions.png").stat().st_size > 1000
    # both recurrences traced: the row RNN's 6 steps down, the pixel RNN's 6 along a row
    check_trace(tmp_path / "run", pixels, {"rows.layers.0": 6, "pixels.layers.0": 6}, capsys)


def test_an_interrupted_run_resumes_exactly(tmp_path, monkeypatch):
    path = write_npz(tmp_path / "toy.npz", copy_rows(200, 0), copy_rows(40, 1))
    cfg = PixelConfig(hidden_size=8, row_size=8, embedding_size=3, column_size=4, dropout=0.2)
    tc = dict(epochs=3, evals_per_epoch=2, batch_size=16)

    check_resumes_exactly(
        tmp_path,
        monkeypatch,
        lambda out: pixels.train(out, cfg, small(**tc), images=path, log=quiet),
        lambda out: pixels.train(out, resume=True, log=quiet),
    )


def test_the_commands_train_complete_images_and_refuse_bad_input(tmp_path, capsys):
    path = write_npz(tmp_path / "toy.npz", copy_rows(120, 0), copy_rows(20, 1))
    out = tmp_path / "run"
    args = ["train", "pixels", "--images", str(path), "--out", str(out), "--hidden-size", "8",
            "--row-size", "8", "--epochs", "1", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert "test: " in capsys.readouterr().out
    grid = tmp_path / "grid.png"
    assert main(["complete-image", str(out), "--test", "3", "--samples", "2", "--keep-rows",
                 "2", "--out", str(grid)]) == 0  # fmt: skip
    assert "3 images x 2 completions below row 2" in capsys.readouterr().out
    with Image.open(grid) as im:
        assert im.size[0] > im.size[1] > 100  # 3 rows of 4 pictures
    picture = tmp_path / "one.png"
    Image.fromarray(copy_rows(1, 5)[0] * 255).save(picture)
    assert main(["complete-image", str(out), "--image", str(picture), "--out", str(grid)]) == 0
    assert "1 images x 4 completions below row 3" in capsys.readouterr().out
    assert main(["eval", str(out)]) == 0
    assert "nats per image" in capsys.readouterr().out

    wrong = tmp_path / "wrong.png"
    Image.fromarray(np.zeros((5, 6), dtype=np.uint8)).save(wrong)
    not_image = tmp_path / "notes.png"
    not_image.write_text("not a picture")
    bad_npz = write_npz(tmp_path / "bad.npz", copy_rows(10, 0) * 3, copy_rows(5, 1), levels=2)
    cases = [
        (["complete-image", str(out), "--image", str(wrong)],
         "is 5x6 pixels; this model reads 6x6"),
        (["complete-image", str(out), "--image", str(not_image)], "is not a readable image"),
        (["complete-image", str(out), "--keep-rows", "9"],
         "`keep_rows` must be an integer in [0, 6]"),
        (["train", "pixels", "--images", str(bad_npz), "--out", str(tmp_path / "b")],
         "do not fit 2 levels"),
        (["train", "pixels", "--images", str(not_image), "--out", str(tmp_path / "c")],
         "is not a readable .npz file"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
        assert len(err.strip().splitlines()) == 1, err


def test_a_run_of_another_kind_is_refused_by_complete_image(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("hello world, hello there\n" * 50)
    lm = tmp_path / "lm"
    assert main(["train", "charlm", "--text", str(text), "--out", str(lm), "--steps", "2",
                 "--hidden-size", "8", "--batch-size", "2", "--seq-len", "8", "--sample", "0",
                 "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["complete-image", str(lm), "--test", "1"]) == 2
    err = capsys.readouterr().err
    assert "pixel-by-pixel model" in err and len(err.strip().splitlines()) == 1


def test_binarised_digits_are_drawn_once_from_their_grey_levels():
    rng = np.random.default_rng(7)
    grey = rng.integers(0, 256, (200, 28, 28)).astype(np.uint8)
    a, b = digits.binarized(grey), digits.binarized(grey)
    assert np.array_equal(a, b) and set(np.unique(a)) <= {0, 1}
    assert abs(a.mean() - grey.mean() / 255.0) < 0.01  # 1 with probability grey / 255
    assert not a[grey == 0].any() and a[grey == 255].all()
