"""Video classification: on clips where only the order of the frames tells the label, the
recurrent models (a stack, a ConvLSTM) learn it and the averaging baseline cannot, per
clip and per frame; user clips are read from frame folders and video files; resume is
exact; the commands train and predict, and refuse bad input with one line; training
traces gradients through time, a trained run measures them on its own validation clips,
and the averaging baseline, which has none, is refused."""

from __future__ import annotations

import contextlib
import csv
import io
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from resumes import check_resumes_exactly
from rnnkit.checkpoint import load_checkpoint
from rnnkit.cli import main
from rnnkit.data.videos import moving_digit_clips, read_clip, read_labelled_clips
from rnnkit.diagnostics import gradients_through_time, read_trace
from rnnkit.tasks import video
from rnnkit.tasks.video import PROBE_SIZE, TrainConfig, VideoClassifier, VideoConfig


def quiet(msg: str) -> None:
    pass


def blobs(n: int = 4, side: int = 5, seed: int = 0) -> np.ndarray:
    """Stand-ins for digits: bright squares with a random texture."""
    rng = np.random.default_rng(seed)
    return rng.integers(150, 256, (n, side, side)).astype(np.uint8)


def toy_clips(n: int, seed: int):
    return moving_digit_clips(blobs(), n, seed, frames=8, size=20)


def fit(config: VideoConfig, train, steps: int = 400, seed: int = 0) -> VideoClassifier:
    torch.manual_seed(seed)
    model = VideoClassifier(config, train.frames.shape[2:], 4 if config.labels == "clip" else 2)
    sets = video._Clips(train, config.labels == "frames")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        batch = video._collate(sets, rng.choice(len(train), 32, replace=False).tolist())
        opt.zero_grad()
        model.loss(batch).backward()
        opt.step()
    return model


def accuracy(model: VideoClassifier, clips) -> float:
    return video.evaluate(model, video._Clips(clips, model.config.labels == "frames"))["accuracy"]


SMALL = dict(hidden_size=48, cnn_width=8, cnn_blocks=2, frame_vector_size=48, dropout=0.0)


@pytest.mark.parametrize("labels", ["clip", "frames"])
def test_only_a_recurrence_over_the_frames_learns_what_their_order_tells(labels):
    train, test = toy_clips(1600, 0), toy_clips(200, 1)
    rnn = accuracy(fit(VideoConfig(labels=labels, temporal="rnn", **SMALL), train), test)
    mean = accuracy(fit(VideoConfig(labels=labels, temporal="mean", **SMALL), train), test)
    # where a clip goes after its first step: its frames' average cannot tell it from the
    # clip played backwards, which goes against the way the clip ends (the same direction
    # only when both ways bounced an odd number of times: about 0.25 + 0.75 / 2 = 62%);
    # a frame alone cannot tell which way it moved (50%)
    assert rnn > 90.0, rnn
    assert mean < 72.0, mean


def test_a_convlstm_over_the_feature_maps_learns_the_order_too():
    train, test = toy_clips(1600, 0), toy_clips(200, 1)
    conv = fit(VideoConfig(labels="frames", temporal="conv", **SMALL), train)
    assert accuracy(conv, test) > 90.0


def test_a_clips_label_comes_from_its_own_frames_only():
    """Padding: a clip scores the same alone and in a batch with longer clips."""
    torch.manual_seed(0)
    clips = toy_clips(3, 2)
    model = VideoClassifier(VideoConfig(**SMALL), clips.frames.shape[2:], 4).eval()
    frames = torch.from_numpy(clips.frames)
    lengths = torch.tensor([5, 8, 3])
    together = model(frames, lengths)
    for k in range(3):
        alone = model(frames[k : k + 1, : lengths[k]], lengths[k : k + 1])
        torch.testing.assert_close(alone[0], together[k], atol=1e-5, rtol=1e-5)
    moved = frames.clone()
    moved[0, 6:] = 255  # frames past the clip's length are never read
    torch.testing.assert_close(model(moved, lengths)[0], together[0])


def write_clips(folder: Path, clips, per_frame: bool = False) -> Path:
    """Each clip as a folder of PNG frames, and the labels CSV."""
    folder.mkdir(parents=True)
    rows = []
    for k in range(len(clips)):
        d = folder / f"clip{k:03d}"
        d.mkdir()
        for t in range(int(clips.lengths[k])):
            Image.fromarray(clips.frames[k, t, :, :, 0]).save(d / f"{t:02d}.png")
        if per_frame:
            rows += [(d.name, t, clips.frame_names[y])
                     for t, y in enumerate(clips.frame_labels[k]) if y >= 0]  # fmt: skip
        else:
            rows.append((d.name, clips.clip_names[clips.clip_labels[k]]))
    labels = folder.parent / f"{folder.name}.csv"
    with labels.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["clip", "frame", "label"] if per_frame else ["clip", "label"])
        w.writerows(rows)
    return labels


def test_user_clips_are_read_from_frame_folders_and_video_files(tmp_path):
    clips = toy_clips(4, 3)
    labels = write_clips(tmp_path / "clips", clips)
    whole = read_labelled_clips(tmp_path / "clips", labels, (20, 20), 1)
    assert np.array_equal(whole.frames, clips.frames)
    assert [whole.clip_names[y] for y in whole.clip_labels] == [
        clips.clip_names[y] for y in clips.clip_labels
    ]
    per_frame = write_clips(tmp_path / "frames", clips, per_frame=True)
    whole = read_labelled_clips(tmp_path / "frames", per_frame, (20, 20), 1)
    assert np.array_equal(whole.frame_labels, clips.frame_labels)

    av = pytest.importorskip("av")
    path = tmp_path / "clip.mkv"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=8)  # lossless: the frames come back exactly
        stream.width, stream.height, stream.pix_fmt = 20, 20, "gray"
        for t in range(6):
            frame = av.VideoFrame.from_ndarray(clips.frames[0, t, :, :, 0], format="gray")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    frames = read_clip(path, (20, 20), 1)
    assert frames.shape == (6, 20, 20, 1)
    assert np.array_equal(frames, clips.frames[0, :6])


def small(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=8, lr=3e-3, warmup_steps=5, progress=False, device="cpu")
    return TrainConfig(**{**base, **kw})


def test_an_interrupted_run_resumes_exactly(tmp_path, monkeypatch):
    labels = write_clips(tmp_path / "clips", toy_clips(60, 4))
    cfg = VideoConfig(**{**SMALL, "dropout": 0.2})
    tc = dict(epochs=3, evals_per_epoch=2)
    kw = dict(videos=tmp_path / "clips", labels=labels, log=quiet)

    check_resumes_exactly(
        tmp_path,
        monkeypatch,
        lambda out: video.train(out, cfg, small(**tc), **kw),
        lambda out: video.train(out, resume=True, log=quiet),
    )
    # the gradients traced before the crash travel in the checkpoint: the trace is whole
    whole, cut = (read_trace(tmp_path / k / "gradients.json") for k in ("whole", "cut"))
    assert [p["step"] for p in cut] == [p["step"] for p in whole] and len(whole) >= 4
    for a, b in zip(whole, cut):
        for g, h in zip(a["layers"], b["layers"]):
            np.testing.assert_allclose(h.norms, g.norms, rtol=1e-6)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small run trained by the command line (a label per frame), shared by the
    tests that read it."""
    root = tmp_path_factory.mktemp("video")
    labels = write_clips(root / "clips", toy_clips(40, 5), per_frame=True)
    out = root / "run"
    args = ["train", "video", "--videos", str(root / "clips"), "--labels-file",
            str(labels), "--labels", "frames", "--out", str(out), "--hidden-size", "8",
            "--cnn-width", "4", "--cnn-blocks", "2", "--epochs", "1", "--no-progress"]  # fmt: skip
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setenv("RNNKIT_DATA", str(root / "cache"))
        code = main(args)
    return SimpleNamespace(out=out, clips=root / "clips", labels=labels, code=code,
                           printed=printed.getvalue())  # fmt: skip


def test_the_commands_train_and_predict_and_refuse_bad_input(trained, tmp_path, capsys):
    out = trained.out
    assert trained.code == 0
    assert "test: accuracy" in trained.printed
    one = trained.clips / "clip000"
    assert main(["predict", str(out), str(one)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{one}\t")
    assert len(line.split("\t")[1].split()) == 8  # a label per frame
    assert set(line.split("\t")[1].split()) <= {"left", "right"}

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(mixed / "0.png")
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(mixed / "1.png")
    ghost = tmp_path / "ghost.csv"
    ghost.write_text("clip,label\nclip000,up-left\nnot-there,down-left\n")
    cases = [
        (["predict", str(out), str(broken)], "not a decodable video"),
        (["predict", str(out), str(mixed)], "frames of different sizes"),
        (["train", "video", "--videos", str(trained.clips), "--labels-file", str(ghost),
          "--out", str(tmp_path / "g")], "ghost.csv:3: no clip 'not-there'"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
        assert len(err.strip().splitlines()) == 1, err


def evaluations(out: Path) -> list[int]:
    return [int(r["step"]) for r in csv.DictReader((out / "metrics.csv").open())
            if r.get("eval_loss")]  # fmt: skip


def test_training_traces_gradients_through_time_at_every_evaluation(trained):
    """gradients.json: a point per evaluation; the stack has a norm per frame of the
    probe batch (the first validation clips, padded to the longest)."""
    points = read_trace(trained.out / "gradients.json")
    assert [p["step"] for p in points] == evaluations(trained.out) and points
    splits, _ = video.load_clips(data=None, videos=trained.clips, labels=trained.labels,
                                 train_config=small(), log=quiet)  # fmt: skip
    val = video._Clips(splits["val"], per_frame=True)
    batch = video._collate(val, list(range(min(PROBE_SIZE, len(val)))))
    T = batch["frames"].shape[1]  # the longest of them
    assert len(batch["frames"]) > 1
    for p in points:
        assert [(g.name, len(g.norms)) for g in p["layers"]] == [("temporal.layers.0", T)]


def test_a_trained_run_measures_gradients_on_its_own_validation_clips(trained):
    """The loaded run's probe rebuilds the batch training traced: at the best step its
    norms are the traced ones; every one finite and positive."""
    model = video.load(trained.out)
    (layer,) = gradients_through_time(model, video.gradient_probe(model, log=quiet))
    assert layer.norms and all(math.isfinite(n) and n > 0 for n in layer.norms), layer
    step = load_checkpoint(trained.out / "best").meta["step"]
    (traced,) = [p for p in read_trace(trained.out / "gradients.json") if p["step"] == step]
    np.testing.assert_allclose(layer.norms, traced["layers"][0].norms, rtol=1e-4)


def test_the_averaging_baseline_has_no_gradients_through_time(tmp_path, capsys):
    """temporal mean: training traces nothing, and measuring the run is refused, by the
    library and by ``rnnkit gradients RUN`` in one line."""
    labels = write_clips(tmp_path / "clips", toy_clips(20, 7))
    out = tmp_path / "mean"
    cfg = VideoConfig(temporal="mean", **{**SMALL, "cnn_width": 4, "frame_vector_size": 8})
    video.train(out, cfg, small(epochs=1), videos=tmp_path / "clips", labels=labels, log=quiet)
    assert (out / "best").exists() and not (out / "gradients.json").exists()
    model = video.load(out)
    with pytest.raises(ValueError, match="no recurrent layer"):
        gradients_through_time(model, video.gradient_probe(model, log=quiet))
    capsys.readouterr()
    assert main(["gradients", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("rnnkit gradients: error: ") and "no recurrent layer" in lines[0]
    assert not (out / "gradients.png").exists()


def test_a_frozen_pretrained_encoder_is_read_once_cached_and_never_trained(tmp_path, monkeypatch):
    """--encoder efficientnet-lite0: the weights come from the fetcher (here a seeded
    stand-in), stay as they were (batch-norm statistics too), the maps of every frame
    are computed once and cached, and labelling from frames equals labelling from them."""
    from rnnkit.data import weights
    from rnnkit.vision import EfficientNetLite0

    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "cache"))
    torch.manual_seed(7)
    pretrained = EfficientNetLite0()
    for m in pretrained.modules():  # stored statistics that training mode would move
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
    fetched = []
    monkeypatch.setattr(weights, "load_efficientnet_lite0",
                        lambda log=print: fetched.append(1) or pretrained)  # fmt: skip
    labels = write_clips(tmp_path / "clips", toy_clips(30, 6))
    cfg = VideoConfig(encoder="efficientnet-lite0", image_size=32, hidden_size=16,
                      frame_vector_size=16)  # fmt: skip
    logged = []
    kw = dict(videos=tmp_path / "clips", labels=labels, log=logged.append)
    model, _ = video.train(tmp_path / "run", cfg, small(epochs=1), **kw)
    assert fetched == [1] and model.map_size == (1, 1)
    assert sum("computing the feature maps" in m for m in logged) == 3  # train, val, test
    cached = sorted((tmp_path / "cache" / "features").glob("video-efficientnet-lite0-*.npy"))
    assert len(cached) == 3
    state = pretrained.state_dict()
    for k, v in model.cnn.state_dict().items():
        assert torch.equal(v.cpu(), state[k]), k

    logged.clear()
    video.train(tmp_path / "again", cfg, small(epochs=1), **kw)
    assert not any("computing the feature maps" in m for m in logged)  # read back

    clips = read_labelled_clips(tmp_path / "clips", labels, (64, 64), 3)
    sets = video._Clips(clips, False, video.encoder_maps(model, clips, quiet))
    batch = video._collate(sets, list(range(len(clips))))
    from_maps = model(batch["frames"], batch["lengths"])
    from_frames = model(torch.from_numpy(clips.frames), batch["lengths"])
    torch.testing.assert_close(from_frames, from_maps, atol=2e-2, rtol=2e-2)  # float16 cache
    assert torch.equal(from_frames.argmax(-1), from_maps.argmax(-1))
