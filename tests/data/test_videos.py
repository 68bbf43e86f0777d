"""moving-digits: the clips are fixed by their seed, and their labels say what the frames
show: where the digit sets off to, and which way it moved since the frame before."""

from __future__ import annotations

import numpy as np
import pytest

from rnnkit.data.videos import DIRECTIONS, SIDEWAYS, ClipSet, moving_digit_clips


def centre(frame: np.ndarray) -> tuple[float, float]:
    """(x, y) of the bright pixels' centre of mass."""
    ys, xs = np.nonzero(frame[..., 0])
    return xs.mean(), ys.mean()


def test_clips_are_fixed_by_their_seed_and_their_labels_say_what_the_frames_show():
    digits = np.full((3, 6, 6), 200, dtype=np.uint8)  # solid squares: their centre is exact
    clips = moving_digit_clips(digits, 600, seed=4, frames=10, size=24)
    again = moving_digit_clips(digits, 600, seed=4, frames=10, size=24)
    assert np.array_equal(clips.frames, again.frames)
    assert not np.array_equal(clips.frames, moving_digit_clips(digits, 200, 5, frames=10,
                                                               size=24).frames)  # fmt: skip
    assert clips.frames.shape == (600, 10, 24, 24, 1) and clips.lengths.tolist() == [10] * 600
    assert clips.clip_names == list(DIRECTIONS) and clips.frame_names == list(SIDEWAYS)
    checked = 0
    for k in range(len(clips)):
        xy = np.array([centre(f) for f in clips.frames[k]])  # (T, 2)
        dx = np.diff(xy[:, 0])
        labels = clips.frame_labels[k]
        assert labels[0] == -1  # the first frame: nothing before it
        assert np.array_equal(labels[1:] == 1, dx > 0)  # right where it moved right
        assert np.array_equal(labels[1:] == -1, dx == 0)  # no label where it did not move
        first = xy[1] - xy[0]
        going = 2 * (first[1] > 0) + (first[0] > 0)  # right when dx > 0, down when dy > 0
        # far enough from the edges (top-left in [5, 13] of [0, 18], speed <= 5) that the
        # first step cannot have bounced
        away = all(7.5 <= c <= 15.5 for c in xy[0])
        if away and abs(first[0]) >= 1 and abs(first[1]) >= 1:
            checked += 1
            assert clips.clip_labels[k] == going, k
    assert checked > 60
    assert np.bincount(clips.clip_labels, minlength=4).min() > 100  # every direction


def test_a_clip_set_refuses_mismatched_parts():
    frames = np.zeros((2, 3, 4, 4, 1), dtype=np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        ClipSet(frames.astype(np.float32), np.array([3, 3]), ["a", "b"])
    with pytest.raises(ValueError, match="2 clips but 1 lengths"):
        ClipSet(frames, np.array([3]), ["a", "b"])
    with pytest.raises(ValueError, match="frame labels of shape"):
        ClipSet(frames, np.array([3, 3]), ["a", "b"], frame_labels=np.zeros((2, 4), np.int64))
