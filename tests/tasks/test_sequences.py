"""The shared machinery of classify and tag: inputs, batches, splits, metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnkit.data.readers import split_indices, tokenize
from rnnkit.metrics import classification_metrics
from rnnkit.tasks.sequences import (
    BucketBatches,
    CharEncoder,
    EncoderConfig,
    Examples,
    InputLayer,
    InputSpec,
    collate,
)


def test_tokenize_keeps_contractions_and_splits_punctuation():
    assert tokenize("It isn't bad... (really)!") == [
        "It",
        "isn't",
        "bad",
        "...",
        "(",
        "really",
        ")!",
    ]
    assert tokenize("   ") == []


def test_words_and_characters_are_encoded_with_unk_and_padding():
    spec = InputSpec.for_words([["the", "cat"], ["the", "dog"]], min_freq=2, chars=True)
    assert spec.words.tokens == ["<pad>", "<unk>", "the"]
    d = spec.encode_words(["the", "cow"])
    assert d["x"].tolist() == [2, 1]
    c = spec.char_index
    assert d["chars"].tolist() == [[c["t"], c["h"], c["e"]], [c["c"], c["o"], 1]]  # w unseen
    again = InputSpec.from_dict(spec.to_dict())
    assert again.encode_words(["the", "cow"])["chars"].tolist() == d["chars"].tolist()


def test_collate_pads_and_marks_lengths():
    ex = Examples(
        [{"x": np.array([3, 4, 5])}, {"x": np.array([6])}], [np.array([1, 0, 1]), np.array([0])]
    )
    b = collate(ex, [1, 0])
    assert b["x"].tolist() == [[6, 0, 0], [3, 4, 5]]
    assert b["lengths"].tolist() == [1, 3]
    assert b["y"].tolist() == [[0, -100, -100], [1, 0, 1]]


def test_char_encoder_ignores_padding_characters():
    torch.manual_seed(0)
    enc = CharEncoder(10, 4, 6)
    word = torch.tensor([[[3, 4, 5]]])
    padded = torch.tensor([[[3, 4, 5, 0, 0, 0]]])
    torch.testing.assert_close(enc(word), enc(padded))
    assert enc(torch.zeros(1, 1, 3, dtype=torch.long)).abs().sum() == 0  # a padded word


def test_numeric_inputs_are_standardised_over_valid_steps_only():
    layer = InputLayer(InputSpec("numeric", features=1), EncoderConfig())
    x = np.array([[[1.0], [3.0], [100.0]], [[5.0], [7.0], [9.0]]], dtype=np.float32)
    layer.set_standardization(x, np.array([2, 3]))  # the 100 is padding
    frames = np.array([1.0, 3.0, 5.0, 7.0, 9.0])
    assert float(layer.mean) == pytest.approx(frames.mean())
    assert float(layer.std) == pytest.approx(frames.std(), rel=1e-5)


def test_bucket_batches_cover_each_epoch_and_resume_from_their_cursor():
    lengths = [1 + (i * 7) % 13 for i in range(50)]
    ex = Examples([{"x": np.zeros(n, dtype=np.int64)} for n in lengths], list(range(50)))
    a = BucketBatches(ex, 8, seed=3)
    first_epoch = [a()["y"].tolist() for _ in range(len(a))]
    assert sorted(sum(first_epoch, [])) == list(range(50))
    rest_a = [a()["y"].tolist() for _ in range(5)]  # into the second epoch
    b = BucketBatches(ex, 8, seed=3)
    for _ in range(len(b)):
        b()
    state = b.state_dict()
    c = BucketBatches(ex, 8, seed=3)
    c.load_state_dict(state)
    assert [c()["y"].tolist() for _ in range(5)] == rest_a
    assert rest_a != first_epoch[:5]  # a new order each epoch


def test_split_indices_is_fixed_and_disjoint():
    rest, held = split_indices(100, 0.1, seed=0)
    assert len(held) == 10 and not set(rest) & set(held)
    assert split_indices(100, 0.1, seed=0) == (rest, held)
    with pytest.raises(ValueError, match="cannot hold out"):
        split_indices(1, 0.5, seed=0)


def test_classification_metrics_are_sklearns():
    m = classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3)
    assert m["accuracy"] == pytest.approx(60.0)
    # F1 per class: 0: P 1/2 R 1/2 -> 1/2; 1: P 2/3 R 1 -> 4/5; 2: 0
    assert m["macro_f1"] == pytest.approx(100 * (0.5 + 0.8 + 0.0) / 3)


def test_translate_shifts_each_image_by_its_own_offset_with_zero_fill():
    from rnnkit.tasks.sequences import translate

    torch.manual_seed(0)
    x = torch.rand(16, 28, 28)
    torch.manual_seed(1)
    out = translate(x, 2)
    torch.manual_seed(1)
    dy, dx = torch.randint(-2, 3, (16,)), torch.randint(-2, 3, (16,))
    for b in range(16):
        a, c = int(dy[b]), int(dx[b])
        expected = torch.zeros(28, 28)
        src = x[b, max(0, -a) : 28 - max(0, a), max(0, -c) : 28 - max(0, c)]
        expected[max(0, a) : max(0, a) + src.shape[0], max(0, c) : max(0, c) + src.shape[1]] = src
        torch.testing.assert_close(out[b], expected)
    assert len({(int(a), int(c)) for a, c in zip(dy, dx)}) > 1  # offsets differ per image


def test_translate_with_repeated_edges_moves_colour_images_and_keeps_the_background():
    from rnnkit.tasks.sequences import translate

    x = torch.full((8, 12, 10, 3), 255, dtype=torch.uint8)  # white pictures (B, H, W, C)
    x[:, 4:8, 3:6] = torch.tensor([200, 30, 10], dtype=torch.uint8)  # a red box each
    torch.manual_seed(2)
    out = translate(x, 3, edge="repeat")
    torch.manual_seed(2)
    dy, dx = torch.randint(-3, 4, (8,)), torch.randint(-3, 4, (8,))
    assert out.dtype == torch.uint8 and out.shape == x.shape
    for b in range(8):
        expected = torch.full((12, 10, 3), 255, dtype=torch.uint8)
        a, c = int(dy[b]), int(dx[b])
        expected[4 + a : 8 + a, 3 + c : 6 + c] = torch.tensor([200, 30, 10], dtype=torch.uint8)
        assert torch.equal(out[b], expected)  # the box moved, white came in from the edges
    with pytest.raises(ValueError, match="`edge`.*'wrap'"):
        translate(x, 1, edge="wrap")


def test_translate_refuses_what_is_not_an_image_read_by_rows():
    from rnnkit.tasks.sequences import RunConfig, augmented

    step = augmented(lambda model, batch: batch["x"], "translate")
    ragged = {"x": torch.zeros(2, 5, 3), "lengths": torch.tensor([5, 3])}
    with pytest.raises(ValueError, match="images read by rows"):
        step(None, ragged)
    with pytest.raises(ValueError, match="images read by rows"):
        step(None, {"x": torch.zeros(2, 5, dtype=torch.long), "lengths": torch.tensor([5, 5])})
    with pytest.raises(ValueError, match="`augment`"):
        RunConfig(augment="rotate")
