"""Clips of frames with labels, for the video task: built-in ``moving-digits``, and a
reader for a user's own clips (frame folders or video files).

``moving-digits`` is **composed**, and says so: each clip is 20 frames of 64x64 in which
one real MNIST digit (from :mod:`rnnkit.data.digits`; training clips use the training
digits, validation and test clips the held-out ones) starts anywhere, moves in a straight
line at 2 to 5 pixels a frame and bounces off the edges. Its labels need the order of the frames:

* per clip, the direction in which the digit moves after its first step (a bounce in
  that step included): up-left, up-right, down-left or down-right. The frames' average
  cannot tell a clip from the same clip played backwards, which goes against the way
  the clip ends (the same way as the clip
  only when the digit bounced an odd number of times on both axes);
* per frame, whether the digit moved left or right since the frame before (the first
  frame, and a frame where it did not move sideways, have no label: -1). One frame alone
  cannot tell.

The clips are made from a seed (train 0, val 1, test 2) in memory on first use, in
about a second; nothing is cached on disk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import digits

Log = Callable[[str], None]

DIRECTIONS = ("up-left", "up-right", "down-left", "down-right")
SIDEWAYS = ("left", "right")
MOVING_DIGITS = {"frames": 20, "size": 64, "train": 5000, "val": 500, "test": 500}
MAX_SPEED = 5.0  # pixels per frame (speeds are drawn from [2, 5])


@dataclass
class ClipSet:
    """Clips of one split: ``frames`` uint8 (N, T, H, W, C), zero after each clip's
    ``lengths``; ``clip_labels`` (N,) and ``frame_labels`` (N, T) int64 ids into
    ``clip_names`` / ``frame_names`` (-1: no label), either may be None."""

    frames: np.ndarray
    lengths: np.ndarray
    names: list[str]
    clip_labels: np.ndarray | None = None
    frame_labels: np.ndarray | None = None
    clip_names: list[str] = field(default_factory=list)
    frame_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.frames)
        if self.frames.ndim != 5 or self.frames.dtype != np.uint8:
            raise ValueError(
                f"Argument `frames` must be uint8 (N, T, H, W, C), got {self.frames.dtype} "
                f"{self.frames.shape}"
            )
        if len(self.lengths) != n or len(self.names) != n:
            raise ValueError(f"{n} clips but {len(self.lengths)} lengths, {len(self.names)} names")
        if self.clip_labels is not None and len(self.clip_labels) != n:
            raise ValueError(f"{n} clips but {len(self.clip_labels)} clip labels")
        if self.frame_labels is not None and self.frame_labels.shape != self.frames.shape[:2]:
            raise ValueError(
                f"frame labels of shape {self.frame_labels.shape} for frames {self.frames.shape}"
            )

    def __len__(self) -> int:
        return len(self.frames)

    def subset(self, idx: Sequence[int]) -> ClipSet:
        idx = np.asarray(idx, dtype=np.int64)
        return ClipSet(
            self.frames[idx], self.lengths[idx], [self.names[i] for i in idx],
            None if self.clip_labels is None else self.clip_labels[idx],
            None if self.frame_labels is None else self.frame_labels[idx],
            self.clip_names, self.frame_names,
        )  # fmt: skip


def moving_digit_clips(
    images: np.ndarray, n: int, seed: int, *, frames: int = 20, size: int = 64, name: str = "clip"
) -> ClipSet:
    """`n` clips of one digit of `images` (uint8 (M, h, w)) moving and bouncing in a
    size x size frame (see the module docstring), drawn from `seed`."""
    rng = np.random.default_rng(seed)
    h, w = images.shape[1:]
    if size <= max(h, w):
        raise ValueError(f"Argument `size` must exceed the digits' {h}x{w}, got {size}")
    clips = np.zeros((n, frames, size, size, 1), dtype=np.uint8)
    clip_labels = np.zeros(n, dtype=np.int64)
    frame_labels = np.full((n, frames), -1, dtype=np.int64)
    lim_x, lim_y = size - w, size - h
    for k in range(n):
        digit = images[rng.integers(len(images))]
        # anywhere, in any direction: a clip played backwards is as likely as the clip
        x, y = rng.uniform(0, lim_x), rng.uniform(0, lim_y)
        speed, angle = rng.uniform(2.0, MAX_SPEED), rng.uniform(np.radians(20), np.radians(70))
        sx, sy = rng.choice([-1, 1]), rng.choice([-1, 1])  # -1: left / up
        vx, vy = sx * speed * np.cos(angle), sy * speed * np.sin(angle)
        previous = None
        for t in range(frames):
            if t > 0:
                x, vx = _bounce(x + vx, vx, lim_x)
                y, vy = _bounce(y + vy, vy, lim_y)
            if t == 1:  # where it goes after its first step (a bounce in it included)
                clip_labels[k] = 2 * (vy > 0) + (vx > 0)
            col, row = int(round(x)), int(round(y))
            if previous is not None and col != previous:
                frame_labels[k, t] = int(col > previous)
            previous = col
            clips[k, t, row : row + h, col : col + w, 0] = digit
    lengths = np.full(n, frames, dtype=np.int64)
    names = [f"{name}[{k}]" for k in range(n)]
    return ClipSet(clips, lengths, names, clip_labels, frame_labels, list(DIRECTIONS),
                   list(SIDEWAYS))  # fmt: skip


def _bounce(p: float, v: float, limit: float) -> tuple[float, float]:
    """A position moved past [0, limit] reflected back in, and its velocity turned."""
    if p < 0:
        return -p, -v
    if p > limit:
        return 2 * limit - p, -v
    return p, v


def moving_digits(log: Log = lambda msg: None) -> dict[str, ClipSet]:
    """The ``moving-digits`` splits: train clips from the training digits, val and test
    clips from the held-out digits (:func:`rnnkit.data.digits.load_mnist`)."""
    split = digits.load_mnist(digits.fetch_mnist(log=log))
    m = MOVING_DIGITS
    kw = {"frames": m["frames"], "size": m["size"]}
    return {
        "train": moving_digit_clips(split["train"][0], m["train"], 0, name="train", **kw),
        "val": moving_digit_clips(split["test"][0], m["val"], 1, name="val", **kw),
        "test": moving_digit_clips(split["test"][0], m["test"], 2, name="test", **kw),
    }


# -- a user's own clips -------------------------------------------------------------------

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def read_clip(path: str | Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """One clip as uint8 (T, H, W, C) at `size` (H, W): a folder of frame images (read in
    the order of their names) or a video file (decoded with PyAV). One-line errors name
    the clip: undecodable, empty, or frames of different sizes."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    mode = "L" if channels == 1 else "RGB"
    pictures = []
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        if not files:
            raise ValueError(
                f"{path}: a clip folder without frame images ({', '.join(FRAME_SUFFIXES)})"
            )
        for f in files:
            try:
                with Image.open(f) as im:
                    pictures.append(im.convert(mode))
            except (OSError, UnidentifiedImageError):
                raise ValueError(f"{f}: not a readable image") from None
    elif path.is_file():
        try:
            import av

            fmt = "gray" if channels == 1 else "rgb24"
            with av.open(str(path)) as container:
                pictures = [
                    Image.fromarray(frame.to_ndarray(format=fmt))
                    for frame in container.decode(video=0)
                ]
        except ImportError:
            raise ValueError(f"{path}: reading video files needs PyAV (pip install av)") from None
        except Exception as err:  # PyAV raises its own error classes for broken files
            raise ValueError(f"{path}: not a decodable video ({type(err).__name__})") from None
        if not pictures:
            raise ValueError(f"{path}: a video without frames")
    else:
        raise ValueError(f"{path}: no such clip (a frame folder or a video file)")
    sizes = {p.size for p in pictures}
    if len(sizes) > 1:
        raise ValueError(f"{path}: frames of different sizes {sorted(sizes)}")
    H, W = size
    frames = [np.asarray(p.resize((W, H), Image.BILINEAR)) for p in pictures]
    out = np.stack(frames)
    return out[..., None] if out.ndim == 3 else out


def read_labelled_clips(
    videos: str | Path, labels: str | Path, size: tuple[int, int], channels: int
) -> ClipSet:
    """A user's clips: the CSV file `labels` names each clip (a frame folder or a video
    file inside the folder `videos`) with its label, ``clip,label`` lines; or labels per
    frame, ``clip,frame,label`` lines (frame numbers from 0; frames not listed have none).
    A header line ``clip,label`` or ``clip,frame,label`` may come first. Every clip is
    read at `size` and padded with zero frames to the longest. One-line errors name the
    file and line."""
    import csv

    videos, labels = Path(videos), Path(labels)
    if not videos.is_dir():
        raise ValueError(f"Argument `videos`: {videos} is not a folder")
    try:
        text = labels.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"Argument `labels`: cannot read {labels} ({err})") from None
    rows = [(n, r) for n, r in enumerate(csv.reader(text.splitlines()), 1) if r and any(r)]
    if rows and rows[0][1][0].strip().lower() == "clip":
        rows = rows[1:]
    if not rows:
        raise ValueError(f"Argument `labels`: {labels} names no clips")
    width = len(rows[0][1])
    per_frame = width == 3
    clip_label: dict[str, str] = {}
    frame_label: dict[str, dict[int, str]] = {}
    for n, r in rows:
        r = [c.strip() for c in r]
        if len(r) != width or width not in (2, 3) or not all(r):
            raise ValueError(
                f"{labels}:{n}: expected {'clip,frame,label' if per_frame else 'clip,label'}, "
                f"got {','.join(r)!r}"
            )
        if not (videos / r[0]).exists():
            raise ValueError(f"{labels}:{n}: no clip {r[0]!r} in {videos}")
        if per_frame:
            if not r[1].isdigit():
                raise ValueError(f"{labels}:{n}: the frame number {r[1]!r} is not an integer >= 0")
            frame_label.setdefault(r[0], {})[int(r[1])] = r[2]
        else:
            clip_label[r[0]] = r[1]
    names = sorted(frame_label if per_frame else clip_label)
    clips = [read_clip(videos / name, size, channels) for name in names]
    T = max(len(c) for c in clips)
    frames = np.zeros((len(clips), T, *clips[0].shape[1:]), dtype=np.uint8)
    for k, c in enumerate(clips):
        frames[k, : len(c)] = c
    lengths = np.array([len(c) for c in clips], dtype=np.int64)
    if per_frame:
        vocab = sorted({v for d in frame_label.values() for v in d.values()})
        ids = np.full((len(names), T), -1, dtype=np.int64)
        for k, name in enumerate(names):
            for t, v in frame_label[name].items():
                if t >= lengths[k]:
                    raise ValueError(
                        f"{labels}: clip {name!r} has {lengths[k]} frames, no frame {t}"
                    )
                ids[k, t] = vocab.index(v)
        return ClipSet(frames, lengths, names, None, ids, [], vocab)
    vocab = sorted(set(clip_label.values()))
    ids = np.array([vocab.index(clip_label[n]) for n in names], dtype=np.int64)
    return ClipSet(frames, lengths, names, ids, None, vocab, [])
