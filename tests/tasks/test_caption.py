"""Image captioning: the image conditions the decoder in each of its three forms, the
teacher-forced pass equals decoding step by step, beam 1 is greedy, padding changes
nothing, a small model learns a toy set of pictures exactly, resume is exact, and the
commands train, caption and evaluate (with the HTML page in a real browser); training
traces gradients through time, and a trained run measures them on its own validation
captions (images, or a frozen encoder's cached maps); minimum Bayes risk decoding picks
the n-best caption of the highest expected CIDEr-D, and the retrieving decoder's mixture
of writing and copying is a distribution that training never feeds an image's own
caption."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import random
import shutil
import subprocess
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from torch.nn import functional as F

from resumes import check_resumes_exactly
from rnnkit import decoding
from rnnkit.checkpoint import load_checkpoint
from rnnkit.cli import main
from rnnkit.data.images import CaptionSplit
from rnnkit.diagnostics import gradients_through_time, read_trace
from rnnkit.tasks import caption
from rnnkit.tasks.caption import (
    END_ID,
    PROBE_SIZE,
    START_ID,
    CaptionConfig,
    Captioner,
    CiderReward,
    TrainConfig,
    build_vocab,
    caption_scores,
    caption_words,
    collate,
    encode_captions,
    nearest_neighbour_captions,
    teacher_batch,
)


@pytest.fixture(autouse=True)
def data_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "cache"))


def quiet(msg: str) -> None:
    pass


COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
WORDS = ["a", "red", "green", "blue", "square", "on", "the", "left", "right", "small"]


def toy_image(colour: str, side: str, rng: random.Random, size: int = 16) -> np.ndarray:
    """A white picture with one coloured square on its left or right half."""
    image = np.full((size, size, 3), 255, dtype=np.uint8)
    s = rng.randint(4, 6)
    x = rng.randint(0, size // 2 - s) + (size // 2 if side == "right" else 0)
    y = rng.randint(0, size - s)
    image[y : y + s, x : x + s] = COLOURS[colour]
    return image


def toy_split(n: int, seed: int) -> CaptionSplit:
    rng = random.Random(seed)
    images, caps = [], []
    for _ in range(n):
        colour, side = rng.choice(list(COLOURS)), rng.choice(["left", "right"])
        images.append(toy_image(colour, side, rng))
        caps.append([f"A {colour} square on the {side}."])
    return CaptionSplit(np.stack(images), caps, [f"toy/{i}.png" for i in range(n)])


def tiny_model(seed: int = 0, **kw) -> Captioner:
    base = dict(encoder="cnn", image_size=0, cnn_width=4, hidden_size=12, embedding_size=8,
                image_vector_size=6, attention_size=5, dropout=0.0)  # fmt: skip
    torch.manual_seed(seed)
    config = caption.resolve_config(CaptionConfig(**{**base, **kw}), None)
    model = Captioner(config, build_vocab([WORDS], 1), (16, 16, 3))
    # the batch norms' statistics of real pictures (untrained, they hold 0 and 1, and an
    # untrained network's tiny activations would make every picture look alike)
    for m in model.encoder.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a plain average over the batches seen
    with torch.no_grad():
        model.train().feature_map(torch.from_numpy(toy_split(64, seed=99).images))
    return model.eval()


def batch_for(model: Captioner, split: CaptionSplit) -> dict:
    pixels = torch.from_numpy(split.images)
    examples = encode_captions(split, pixels, False, model.vocab, model.config, "toy")
    return collate(examples, list(range(len(examples))))


VARIANTS = [
    dict(inject="every-step"),
    dict(inject="first"),
    dict(inject="init"),
    dict(inject="every-step", attention=True),
    dict(inject="first", attention=True, cell="gru"),
    dict(inject="init", cell="rnn", num_layers=2),
]


def ids(v: dict) -> str:
    return "-".join(f"{k}={x}" for k, x in v.items())


@pytest.mark.parametrize("variant", VARIANTS, ids=ids)
def test_teacher_forcing_equals_decoding_step_by_step(variant):
    model = tiny_model(**variant)
    split = toy_split(3, seed=1)
    batch = batch_for(model, split)
    logits, weights = model(batch)  # (B, T, V)
    fmap = model.feature_map(batch["images"])
    ids_, state = model.start(fmap)
    assert (ids_ == START_ID).all()
    for t in range(batch["previous"].shape[1]):
        step_logits, state = model.step(batch["previous"][:, t], state)
        torch.testing.assert_close(step_logits, logits[:, t], rtol=1e-5, atol=1e-6)
    # the loss is the mean of the real positions' cross-entropies, padding masked out
    real = batch["target"] != 0
    by_hand = -F.log_softmax(logits, -1).gather(2, batch["target"][..., None])[..., 0][real]
    assert float(model.loss(batch).detach()) == pytest.approx(
        float(by_hand.detach().mean()), rel=1e-5
    )
    if variant.get("attention"):
        assert weights.shape == (3, logits.shape[1], fmap.shape[2] * fmap.shape[3])
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:2]))


def _image_weights(model: Captioner) -> list[torch.Tensor]:
    """The weights through which v enters the decoder, in each form."""
    c = model.config
    if c.inject == "every-step":  # W_ih: the first layer's input weights that read v
        E, D = c.embedding_size, c.image_vector_size
        return [model.decoder.layers[0].cell.weight_ih[:, E : E + D]]
    if c.inject == "first":
        return [model.image_input.weight, model.image_input.bias]
    return [p for m in (model.init_h, model.init_c) if m is not None for p in m.parameters()]


@pytest.mark.parametrize("inject", ["every-step", "first", "init"])
def test_the_image_conditions_the_decoder_and_zeroing_its_weights_removes_it(inject):
    model = tiny_model(inject=inject)
    a, b = toy_split(2, seed=2), toy_split(2, seed=3)
    batch_a, batch_b = batch_for(model, a), batch_for(model, a)
    batch_b["images"] = torch.from_numpy(b.images)  # the same captions, other pictures
    with torch.no_grad():
        assert not torch.allclose(model(batch_a)[0], model(batch_b)[0], atol=1e-4)
        for w in _image_weights(model):
            w.zero_()
        torch.testing.assert_close(model(batch_a)[0], model(batch_b)[0])


def test_a_beam_of_width_one_is_greedy_and_padding_never_changes_a_caption():
    model = tiny_model(inject="every-step", attention=True)
    split = toy_split(6, seed=4)
    fmaps = model.features(split.images)
    greedy = model.caption_ids(fmaps, max_length=8)
    assert model.caption_ids(fmaps, beam=1, max_length=8) == greedy
    beam = model.caption_ids(fmaps, beam=1, max_length=8, batch_size=2)
    assert beam == greedy
    alone = [model.caption_ids(fmaps[i : i + 1], beam=3, max_length=8)[0] for i in range(6)]
    assert model.caption_ids(fmaps, beam=3, max_length=8) == alone
    # a caption padded inside a batch of longer ones has the logits it has alone
    batch = batch_for(model, split)
    logits, _ = model(batch)
    for i in range(6):
        one = {k: v[i : i + 1] for k, v in batch.items()}
        n = int((one["target"] != 0).sum())
        one = {k: (v[:, :n] if k in ("previous", "target") else v) for k, v in one.items()}
        torch.testing.assert_close(model(one)[0][0], logits[i, :n], rtol=1e-5, atol=1e-6)


def test_an_ensemble_writes_with_the_mean_of_its_models_probabilities():
    a, b = tiny_model(seed=0, attention=True), tiny_model(seed=1, inject="init", cell="gru")
    split = toy_split(6, seed=5)
    alone = caption.Ensemble([a])
    fmaps_a = a.features(split.images)
    assert alone.caption_ids(alone.features(split.images), max_length=8) == a.caption_ids(
        fmaps_a, max_length=8
    )
    both = caption.Ensemble([a, b])
    fmaps = both.features(split.images)  # each model's own CNN reads the images
    assert len(fmaps) == 2 and fmaps[0].shape[1] == fmaps[1].shape[1]
    said = both.caption_ids(fmaps, max_length=8)
    with torch.no_grad():  # by hand, one image at a time: the argmax of the mean
        for i in range(len(split)):
            (ids, sa), (_, sb) = a.start(fmaps[0][i : i + 1]), b.start(fmaps[1][i : i + 1])
            words = []
            for _ in range(9):
                la, sa = a.step(ids, sa)
                lb, sb = b.step(ids, sb)
                ids = ((la.softmax(-1) + lb.softmax(-1)) / 2).argmax(-1)
                if int(ids) == END_ID:
                    break
                words.append(int(ids))
            assert said[i] == words
    assert both.caption_ids(fmaps, beam=1, max_length=8) == said
    batched = both.caption_ids(fmaps, beam=3, max_length=8)
    assert batched == [both.caption_ids([f[i : i + 1] for f in fmaps], beam=3, max_length=8)[0]
                       for i in range(len(split))]  # fmt: skip
    assert both.caption(split.images, beam=3) == [
        " ".join(a.vocab.tokens[k] for k in row) for row in both.caption_ids(fmaps, beam=3)
    ]
    # models of other words or other pictures are refused, naming the one
    other = Captioner(a.config, build_vocab([[*WORDS, "purple"]], 1), (16, 16, 3))
    with pytest.raises(ValueError, match="runs/b has a vocabulary of 15 words"):
        caption.Ensemble([a, other], names=["runs/a", "runs/b"])
    bigger = Captioner(a.config, a.vocab, (32, 32, 3))
    with pytest.raises(ValueError, match=r"model 1 reads images of \(32, 32, 3\)"):
        caption.Ensemble([a, bigger])
    with pytest.raises(ValueError, match="`fmaps`"):
        both.caption_ids(fmaps[:1])


def test_log_prob_of_given_captions_is_the_teacher_forced_likelihood():
    a, b = tiny_model(seed=0, attention=True), tiny_model(seed=1, inject="init", cell="gru")
    split = toy_split(5, seed=3)
    said = [caps[0] for caps in split.captions]
    batch = batch_for(a, split)  # the same captions, teacher-forced

    def by_hand(model):  # (N, T, V) log-probabilities of the targets, padding out
        with torch.no_grad():
            logits, _ = model(batch)
        lp = F.log_softmax(logits, -1).gather(2, batch["target"][..., None])[..., 0]
        return lp * (batch["target"] != 0), lp

    got = a.log_prob(a.features(split.images), said)
    assert got.shape == (5,) and got.dtype == torch.float64
    torch.testing.assert_close(got.float(), by_hand(a)[0].sum(1), rtol=1e-5, atol=1e-5)
    # two as one: at every word the mean of their probabilities
    both = caption.Ensemble([a, b])
    fmaps = both.features(split.images)
    mixed = torch.logsumexp(torch.stack([by_hand(a)[1], by_hand(b)[1]]), 0) - math.log(2)
    expected = (mixed * (batch["target"] != 0)).sum(1)
    torch.testing.assert_close(both.log_prob(fmaps, said).float(), expected, rtol=1e-5, atol=1e-5)
    # words outside the vocabulary are all <unk>; punctuation and case do not count
    unk = a.log_prob(fmaps[0][:2], ["a purple square", "A red square."])
    other = a.log_prob(fmaps[0][:2], ["a mauve square", "a red square"])
    torch.testing.assert_close(unk, other)
    with pytest.raises(ValueError, match=r"`captions`: one per image, got 2"):
        a.log_prob(fmaps[0], said[:2])


def test_caption_scores_are_pycocoevalcaps_on_words_without_punctuation():
    hyps = ["A red kangaroo.", "a small blue car"]
    refs = [["A red kangaroo!", "a kangaroo"], ["A big blue car.", "the blue car"]]
    m = caption_scores(hyps, refs)
    gts = {0: ["a red kangaroo", "a kangaroo"], 1: ["a big blue car", "the blue car"]}
    res = {0: ["a red kangaroo"], 1: ["a small blue car"]}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert m["bleu1"] == pytest.approx(100 * bleu[0]) and m["bleu4"] == pytest.approx(100 * bleu[3])
    assert m["cider"] == pytest.approx(100 * Cider().compute_score(gts, res)[0])
    assert m["exact"] == 50.0
    assert caption_words("Flag: Côte d’Ivoire!") == ["flag", "côte", "d’ivoire"]
    with pytest.raises(ValueError, match="`references`"):
        caption_scores(hyps, refs[:1])


def test_the_cider_reward_is_pycocoevalcaps_cider_d_with_the_corpus_frequencies():
    refs = [["A red kangaroo!", "a kangaroo in the sun"], ["A big blue car.", "the blue car"],
            ["a small red car"], ["two wild boars", "a pig and a boar", "boars"]]  # fmt: skip
    hyps = ["a red kangaroo", "a small blue car", "", "a pig a pig a pig a pig a pig"]
    reward = CiderReward(refs)
    gts = {i: [" ".join(caption_words(r)) for r in rs] for i, rs in enumerate(refs)}
    # pycocoevalcap counts n-gram frequencies over the references it is handed: here the
    # same corpus, so the per-image scores must agree
    hyps_for_coco = [h or "zzz" for h in hyps]  # it refuses an empty caption
    _, per_image = Cider().compute_score(gts, {i: [h] for i, h in enumerate(hyps_for_coco)})
    got = reward(hyps_for_coco, range(4))
    np.testing.assert_allclose(got, per_image, rtol=1e-12, atol=1e-12)
    assert got[0] > got[3] > 0 and reward([""], [2])[0] == 0.0
    # the frequencies are the corpus's, not the batch's: an image scored alone scores alike
    assert reward(["a red kangaroo"], [0])[0] == pytest.approx(got[0])
    # a hypothesis is read as the references are: case and punctuation do not count
    assert reward(["A red, kangaroo!"], [0])[0] == pytest.approx(got[0])
    assert reward.agreement("The blue car.", "a BLUE car") == pytest.approx(
        reward.agreement("the blue car", "a blue car")
    )
    with pytest.raises(ValueError, match="`references`"):
        CiderReward([["a car"], []])


def test_saved_frequencies_give_the_same_cider_d_and_agreement():
    refs = [["A red kangaroo!", "a kangaroo in the sun"], ["A big blue car.", "the blue car"],
            ["a small red car"], ["two wild boars", "a pig and a boar", "boars"]]  # fmt: skip
    reward = CiderReward(refs)
    saved = reward.frequencies()
    assert saved["images"] == 4 and saved["df"]["a"] == 4 and saved["df"]["car"] == 2
    # one image's n-gram weighs as an unseen one: not kept
    assert "kangaroo in" not in saved["df"] and "blue car" not in saved["df"]
    back = CiderReward.from_frequencies(json.loads(json.dumps(saved)))
    texts = ["a red kangaroo", "a small blue car", "the blue car", "a kangaroo in the sun",
             "boars", "a pig and a boar"]  # fmt: skip
    for a in texts:
        for b in texts:
            assert back.agreement(a, b) == pytest.approx(reward.agreement(a, b), abs=1e-12)
    assert reward.agreement("a red car", "a red car") > reward.agreement("a red car", "a car")
    with pytest.raises(ValueError, match="`saved`: not the n-gram frequencies"):
        CiderReward.from_frequencies({"images": 4})


def test_minimum_bayes_risk_decoding_picks_the_n_best_caption_the_others_agree_with():
    model = tiny_model(seed=2, attention=True)
    split = toy_split(8, seed=6)
    fmaps = model.features(split.images)
    with pytest.raises(ValueError, match=r"`mbr` \(3\): the model keeps no n-gram"):
        model.caption_ids(fmaps, mbr=3)
    model.cider = CiderReward(toy_split(40, seed=7).captions)
    # mbr 1 is plain beam search
    assert model.caption_ids(fmaps, beam=3, mbr=1) == model.caption_ids(fmaps, beam=3)
    said = model.caption_ids(fmaps, beam=2, mbr=4, max_length=8)
    # by hand: the 4-best of a beam of 4, the expected CIDEr-D of each against all
    step, vocab = model.step, model.vocab
    with torch.no_grad():
        first, state = model.start(fmaps)
        found = decoding.beam_search(step, first, state, 9, k=4, beam_size=4, end=END_ID)
    for row, hyps in zip(said, found):
        texts = [" ".join(vocab.tokens[k] for k in h.tokens) for h in hyps]
        p = torch.tensor([h.log_prob for h in hyps]).softmax(0).tolist()
        gain = [sum(pj * model.cider.agreement(a, b) for b, pj in zip(texts, p)) for a in texts]
        assert row in [h.tokens for h in hyps]
        best = max(gain)
        assert gain[[h.tokens for h in hyps].index(row)] == pytest.approx(best, abs=1e-9)
    # one image at a time or in a batch, and as the sentence caption() returns
    assert said == [model.caption_ids(fmaps[i : i + 1], beam=2, mbr=4, max_length=8)[0]
                    for i in range(len(split))]  # fmt: skip
    with pytest.raises(ValueError, match="`mbr` must be"):
        model.caption_ids(fmaps, mbr=0)
    with pytest.raises(ValueError, match="no temperature"):
        model.caption_ids(fmaps, mbr=3, temperature=1.0)


def test_teacher_batch_feeds_generated_captions_as_collate_feeds_human_ones():
    model = tiny_model()
    split = CaptionSplit(np.zeros((2, 16, 16, 3), np.uint8), [["a red square"], ["a square"]],
                         ["x", "y"])  # fmt: skip
    b = batch_for(model, split)
    words = [model.vocab.encode(caption_words(c[0])) for c in split.captions]
    previous, target = teacher_batch(words, max_length=40)
    assert torch.equal(previous, b["previous"]) and torch.equal(target, b["target"])
    previous, target = teacher_batch([[5, 6, 7]], max_length=2)  # cut: no <end> to learn
    assert target.tolist() == [[5, 6, 7, 0]] and previous.tolist()[0][:3] == [START_ID, 5, 6]


def test_the_nearest_neighbour_baseline_takes_the_closest_training_images_caption():
    train = CaptionSplit(np.zeros((3, 2, 2, 3), np.uint8), [["one"], ["two", "two too", "two"],
                         ["three"]], ["a", "b", "c"])  # fmt: skip
    vectors = torch.eye(3)  # (N, F)
    query = torch.tensor([[0.1, 0.9, 0.0], [0.0, 0.2, 1.0]])
    assert nearest_neighbour_captions(vectors, train, query) == ["two", "three"]


def test_the_nearest_neighbour_baseline_takes_the_caption_most_like_its_images_others():
    # "zebra on grass" comes first but shares least with the others; the consensus is
    # the caption with the highest CIDEr-D against the other three
    dog = ["zebra on grass", "a dog on the grass", "a dog on grass", "the dog runs on the grass"]
    train = CaptionSplit(np.zeros((3, 2, 2, 3), np.uint8), [dog, ["a cat"], ["a red car"]],
                         ["a", "b", "c"])  # fmt: skip
    reward = CiderReward(train.captions)
    assert reward.consensus(0) == 1 and reward.consensus(1) == 0  # 0: a single caption
    query = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.0, 0.1], [0.1, 0.0, 1.0]])
    got = nearest_neighbour_captions(torch.eye(3), train, query)
    assert got == ["a dog on the grass", "a dog on the grass", "a red car"]
    # k nearest images: the consensus of all their captions (the third query's two
    # nearest are the car and the dog; "a red car" shares nothing with the dog's four)
    got = nearest_neighbour_captions(torch.eye(3), train, query, k=2)
    assert got == ["a dog on the grass", "a dog on the grass", "a dog on the grass"]
    assert reward.most_agreed(["a cat", "a red car", "a red car."]) == 1
    with pytest.raises(ValueError, match=r"`k`.*0"):
        nearest_neighbour_captions(torch.eye(3), train, query, k=0)


# -- training through the files a user has: the COCO captions schema ----------------------


def write_coco(folder: Path, split: CaptionSplit) -> Path:
    """The images as PNG files and a captions JSON file in the COCO schema."""
    (folder / "images").mkdir(parents=True)
    images, annotations = [], []
    for i, (image, caps) in enumerate(zip(split.images, split.captions)):
        name = f"{i:05d}.png"
        Image.fromarray(image).save(folder / "images" / name)
        images.append({"id": 1000 + i, "file_name": name, "width": 16, "height": 16})
        annotations += [{"id": len(annotations), "image_id": 1000 + i, "caption": c} for c in caps]
    path = folder / "captions.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def small(**kw) -> TrainConfig:
    base = dict(epochs=20, batch_size=32, lr=1e-2, warmup_steps=10, beam=1, progress=False,
                device="cpu")  # fmt: skip
    return TrainConfig(**{**base, **kw})


def test_a_small_model_learns_to_caption_toy_pictures_exactly(tmp_path):
    path = write_coco(tmp_path / "coco", toy_split(600, seed=5))
    cfg = CaptionConfig(encoder="cnn", image_size=16, cnn_width=8, hidden_size=32,
                        embedding_size=16, image_vector_size=32, dropout=0.0)  # fmt: skip
    model, results = caption.train(
        tmp_path / "run", cfg, small(epochs=30, lr=3e-3), images=tmp_path / "coco" / "images",
        captions=path,
        log=quiet,
    )  # fmt: skip
    assert results["test"]["greedy"]["exact"] == 100.0, results["test"]
    assert results["test"]["greedy"]["cider"] > results["test"]["nearest_neighbour"]["cider"] - 1
    page = (tmp_path / "run" / "captions.html").read_text()
    assert "a red square on the" in page or "a blue square on the" in page
    rng = random.Random(9)
    said = model.caption(
        np.stack([toy_image("green", "left", rng), toy_image("red", "right", rng)])
    )
    assert said == ["a green square on the left", "a red square on the right"]


@pytest.mark.parametrize("select", ["cider", "loss"])
def test_best_keeps_the_evaluation_with_the_best_validation_cider_or_loss(tmp_path, select):
    path = write_coco(tmp_path / "coco", toy_split(160, seed=8))
    cfg = CaptionConfig(encoder="cnn", image_size=16, cnn_width=4, hidden_size=16,
                        embedding_size=8, image_vector_size=8, dropout=0.0)  # fmt: skip
    out = tmp_path / "run"
    caption.train(out, cfg, small(epochs=6, evals_per_epoch=2, select=select),
                  images=tmp_path / "coco" / "images", captions=path, log=quiet)  # fmt: skip
    evals = [r for r in csv.DictReader((out / "metrics.csv").open()) if r.get("eval_loss")]
    assert len(evals) >= 6
    key = f"eval_{select}"
    best = (max if select == "cider" else min)(evals, key=lambda r: float(r[key]))
    meta = load_checkpoint(out / "best").meta
    assert meta["val"][select] == pytest.approx(float(best[key]))
    if select == "cider":  # the validation images' greedy captions, scored as in the report
        model = caption.load(out / "best")
        splits, _ = caption.load_splits(data=None, images=tmp_path / "coco" / "images",
                                        captions=path, train_config=small(), size=(16, 16),
                                        log=quiet)  # fmt: skip
        val = splits["val"]
        said = model.caption(val.images)
        assert caption_scores(said, val.captions)["cider"] == pytest.approx(meta["val"]["cider"])
    else:
        assert "eval_cider" not in evals[0]


def test_mirrors_add_each_training_image_flipped_with_its_captions():
    split = toy_split(4, seed=1)
    both = caption.with_mirrors(split)
    assert len(both) == 8 and np.array_equal(both.images[:4], split.images)
    assert np.array_equal(both.images[4:], split.images[:, :, ::-1])
    assert both.captions == split.captions * 2
    assert both.names[4] == f"{split.names[0]} (mirrored)"


def test_shifted_training_images_move_in_front_of_their_background():
    split = toy_split(6, seed=2)
    split.images[:] = 255
    for n, colour in enumerate([*COLOURS.values()] * 2):  # a square 3 pixels from each edge
        split.images[n, 5:11, 4:12] = colour
    model = tiny_model()
    batch = batch_for(model, split)
    fed = []
    recorder = SimpleNamespace(loss=lambda b, e: fed.append(b["images"]) or torch.tensor(0.0))
    torch.manual_seed(3)
    caption.make_step_fn(shift=3)(recorder, batch)
    torch.manual_seed(3)
    dy, dx = torch.randint(-3, 4, (6,)), torch.randint(-3, 4, (6,))
    (images,) = fed
    assert images.shape == batch["images"].shape and images.dtype == torch.uint8
    for n in range(6):  # the coloured square moved by (dy, dx); white all around it
        a, c = int(dy[n]), int(dx[n])
        moved = np.roll(split.images[n], (a, c), axis=(0, 1))
        assert np.array_equal(images[n].numpy(), moved), (a, c)
    assert (dy != 0).any() or (dx != 0).any()
    with pytest.raises(ValueError, match="`shift`"):
        TrainConfig(shift=-1)


def test_label_smoothing_trains_towards_the_true_word_mixed_with_the_uniform():
    model = tiny_model(dropout=0.0)
    batch = batch_for(model, toy_split(5, seed=4))
    logits, _ = model(batch)
    logp = logits.log_softmax(-1)  # (B, T, V)
    real = batch["target"] != 0  # (B, T): words and <end>, not padding
    true = -logp.gather(-1, batch["target"][..., None])[..., 0]  # -log p(true word)
    uniform = -logp.mean(-1)  # the cross-entropy against the uniform distribution
    e = 0.2
    want = ((1 - e) * true + e * uniform)[real].mean()
    loss, _ = caption.make_step_fn(label_smoothing=e)(model, batch)
    torch.testing.assert_close(loss, want)
    plain, _ = caption.make_step_fn()(model, batch)
    torch.testing.assert_close(plain, true[real].mean())
    with pytest.raises(ValueError, match="`label_smoothing`"):
        TrainConfig(label_smoothing=1.0)


def test_an_interrupted_run_resumes_exactly(tmp_path, monkeypatch):
    path = write_coco(tmp_path / "coco", toy_split(120, seed=6))
    cfg = CaptionConfig(encoder="cnn", image_size=16, cnn_width=4, hidden_size=16,
                        embedding_size=8, image_vector_size=8, dropout=0.2,
                        attention=True)  # fmt: skip
    tc = dict(epochs=3, evals_per_epoch=2, shift=1, ema=0.9)  # resumed: shifts and average
    kw = dict(images=tmp_path / "coco" / "images", captions=path, log=quiet)

    check_resumes_exactly(
        tmp_path,
        monkeypatch,
        lambda out: caption.train(out, cfg, small(**tc), **kw),
        lambda out: caption.train(out, resume=True, log=quiet),
    )
    # the gradients traced before the crash travel in the checkpoint: the trace is whole
    whole, cut = (read_trace(tmp_path / k / "gradients.json") for k in ("whole", "cut"))
    assert [p["step"] for p in cut] == [p["step"] for p in whole] and len(whole) >= 4
    for a, b in zip(whole, cut):
        for g, h in zip(a["layers"], b["layers"]):
            np.testing.assert_allclose(h.norms, g.norms, rtol=1e-6)


def test_self_critical_training_from_a_run_raises_its_validation_cider(tmp_path, monkeypatch):
    """A model trained a little by cross-entropy, then by its own samples' CIDEr-D: the
    greedy captions of the validation images score higher than the run it started from,
    and the run resumes exactly."""
    path = write_coco(tmp_path / "coco", toy_split(200, seed=11))
    cfg = CaptionConfig(encoder="cnn", image_size=16, cnn_width=4, hidden_size=16,
                        embedding_size=8, image_vector_size=8, dropout=0.0)  # fmt: skip
    kw = dict(images=tmp_path / "coco" / "images", captions=path, log=quiet)
    _, before = caption.train(tmp_path / "xent", cfg, small(epochs=4, lr=3e-3), **kw)
    scst = small(epochs=6, lr=1e-3, objective="cider", samples=4,
                 init_from=str(tmp_path / "xent"))  # fmt: skip
    model, after = caption.train(tmp_path / "scst", None, scst, **kw)
    assert model.config == caption.load(tmp_path / "xent" / "best").config
    start, end = before["val"]["greedy"]["cider"], after["val"]["greedy"]["cider"]
    assert end > start + 20, (start, end)
    rows = csv.DictReader((tmp_path / "scst" / "metrics.csv").open())
    rewards = [float(r["reward"]) for r in rows if r.get("reward")]
    assert len(rewards) >= 2 and rewards[-1] > rewards[0]
    check_resumes_exactly(
        tmp_path,
        monkeypatch,
        lambda out: caption.train(out, None, replace(scst, epochs=3, evals_per_epoch=2), **kw),
        lambda out: caption.train(out, resume=True, log=quiet),
    )
    with pytest.raises(ValueError, match="`samples`"):
        small(objective="cider", samples=1)
    with pytest.raises(ValueError, match="`objective`"):
        small(objective="bleu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small run trained by the command line, shared by the tests that read it."""
    root = tmp_path_factory.mktemp("caption")
    path = write_coco(root / "coco", toy_split(80, seed=7))
    images = root / "coco" / "images"
    out = root / "run"
    args = ["train", "caption", "--images", str(images), "--captions", str(path), "--out",
            str(out), "--encoder", "cnn", "--image-size", "16", "--cnn-width", "4",
            "--hidden-size", "16", "--embedding-size", "8", "--epochs", "2",
            "--no-progress"]  # fmt: skip
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setenv("RNNKIT_DATA", str(root / "cache"))
        code = main(args)
    return SimpleNamespace(out=out, images=images, captions=path, code=code,
                           printed=printed.getvalue())  # fmt: skip


def test_the_commands_train_caption_evaluate_and_refuse_bad_input(trained, tmp_path, capsys):
    path, images, out = trained.captions, trained.images, trained.out
    assert trained.code == 0
    assert "test, beam 3: BLEU-1" in trained.printed
    first = images / "00000.png"
    assert main(["caption", str(out), str(first), str(images / "00001.png"), "--beam", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{first}\t")
    assert set(lines[0].split("\t")[1].split()) <= set(WORDS)
    assert main(["caption", str(out), str(first), "--num", "3", "--temperature", "1",
                 "--seed", "1"]) == 0  # fmt: skip
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert main(["eval", str(out), "--page", str(tmp_path / "page.html")]) == 0
    printed = capsys.readouterr().out
    assert "CIDEr" in printed and "nearest neighbour" in printed
    assert (tmp_path / "page.html").stat().st_size > 1000
    # bad input: one line each, naming the thing
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    assert main(["caption", str(out), str(notes)]) == 2
    err = capsys.readouterr().err
    assert "notes.png" in err and err.count("\n") == 1
    missing = tmp_path / "none.json"
    code = main(["train", "caption", "--images", str(images), "--captions", str(missing),
                 "--out", str(tmp_path / "r2")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "none.json" in err and err.count("\n") == 1
    bad = json.loads(path.read_text())
    bad["annotations"][0]["image_id"] = 999_999
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    code = main(["train", "caption", "--images", str(images), "--captions",
                 str(tmp_path / "bad.json"), "--out", str(tmp_path / "r3")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "999999" in err and err.count("\n") == 1


def test_the_commands_caption_and_evaluate_with_an_ensemble(trained, tmp_path, capsys):
    out, images = trained.out, trained.images
    first = str(images / "00000.png")
    assert main(["caption", str(out), first, "--beam", "3"]) == 0
    alone = capsys.readouterr().out
    # a run beside itself: the mean of two equal distributions is that distribution
    assert main(["caption", str(out), first, "--beam", "3", "--ensemble", str(out)]) == 0
    assert capsys.readouterr().out == alone
    assert main(["eval", str(out), "--ensemble", str(out), str(out),
                 "--page", str(tmp_path / "page.html")]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "greedy, an ensemble of 3: BLEU-1" in printed and "nearest neighbour" in printed
    assert "an ensemble of 3" in (tmp_path / "page.html").read_text()
    lm = tiny_charlm(tmp_path, capsys)  # a member of another kind: one line naming it
    assert main(["caption", str(out), first, "--ensemble", str(lm)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "charlm" in err
    assert main(["eval", str(lm), "--ensemble", str(out)]) == 2
    assert "--ensemble is for image captioners" in capsys.readouterr().err


def test_a_run_keeps_its_training_frequencies_for_minimum_bayes_risk_decoding(
    trained, tmp_path, capsys
):
    out, images = trained.out, trained.images
    model = caption.load(out)
    splits, _ = caption.load_splits(data=None, images=images, captions=trained.captions,
                                    train_config=small(), size=(16, 16), log=quiet)  # fmt: skip
    assert model.cider.frequencies() == CiderReward(splits["train"].captions).frequencies()
    first = images / "00000.png"
    assert main(["caption", str(out), str(first), "--beam", "2", "--mbr", "3"]) == 0
    said = capsys.readouterr().out.strip().split("\t")[1]
    image = caption.read_images(model, [first])
    assert said == model.caption(image, beam=2, mbr=3)[0]
    assert main(["eval", str(out), "--mbr", "3", "--page", str(tmp_path / "page.html")]) == 0
    assert "minimum Bayes risk of the 3 likeliest (beam 3): BLEU-1" in capsys.readouterr().out
    assert main(["caption", str(out), str(first), "--num", "2", "--temperature", "1",
                 "--mbr", "3"]) == 2  # fmt: skip
    assert "not --beam or --mbr" in capsys.readouterr().err
    lm = tiny_charlm(tmp_path, capsys)
    assert main(["eval", str(lm), "--mbr", "3"]) == 2
    assert "--mbr is for image captioners" in capsys.readouterr().err


def validation_batch(model: Captioner, images: Path, captions: Path) -> dict:
    """The first PROBE_SIZE validation captions of a run on a COCO file, as training
    batches them."""
    splits, _ = caption.load_splits(data=None, images=images, captions=captions,
                                    train_config=small(), size=(16, 16), log=quiet)  # fmt: skip
    val = splits["val"]
    examples = encode_captions(val, torch.from_numpy(val.images), False, model.vocab,
                               model.config, "val")  # fmt: skip
    return collate(examples, list(range(min(PROBE_SIZE, len(examples)))))


def evaluations(out: Path) -> list[int]:
    return [int(r["step"]) for r in csv.DictReader((out / "metrics.csv").open())
            if r.get("eval_loss")]  # fmt: skip


def test_training_traces_gradients_through_time_at_every_evaluation(trained):
    """gradients.json: a point per evaluation; the decoder has a norm per step of the
    probe batch (its padded caption length, <end> included)."""
    points = read_trace(trained.out / "gradients.json")
    steps = evaluations(trained.out)
    assert len(steps) == 2 and [p["step"] for p in points] == steps  # one per epoch
    batch = validation_batch(caption.load(trained.out), trained.images, trained.captions)
    assert 1 < len(batch["images"]) <= PROBE_SIZE and "features" not in batch
    T = batch["previous"].shape[1]
    for p in points:
        assert [(g.name, len(g.norms)) for g in p["layers"]] == [("decoder.layers.0", T)]


def test_a_trained_run_measures_gradients_on_its_own_validation_captions(trained):
    """The loaded run's probe rebuilds the batch training traced: at the best step its
    norms are the traced ones; every one finite and positive."""
    model = caption.load(trained.out)
    (layer,) = gradients_through_time(model, caption.gradient_probe(model, log=quiet))
    assert layer.norms and all(math.isfinite(n) and n > 0 for n in layer.norms), layer
    step = load_checkpoint(trained.out / "best").meta["step"]
    (traced,) = [p for p in read_trace(trained.out / "gradients.json") if p["step"] == step]
    np.testing.assert_allclose(layer.norms, traced["layers"][0].norms, rtol=1e-4)


def test_a_frozen_encoders_run_probes_its_cached_feature_maps(tmp_path, monkeypatch):
    """With the pretrained encoder frozen, training batches carry its cached maps, and so
    do the probe of training and the loaded run's (the same norms at the best step)."""
    from rnnkit.data import weights
    from rnnkit.vision import EfficientNetLite0

    torch.manual_seed(7)
    pretrained = EfficientNetLite0()
    monkeypatch.setattr(weights, "load_efficientnet_lite0", lambda log=print: pretrained)
    path = write_coco(tmp_path / "coco", toy_split(40, seed=3))
    cfg = CaptionConfig(encoder="efficientnet-lite0", image_size=32, hidden_size=8,
                        embedding_size=8, image_vector_size=8, inject="first",
                        dropout=0.0)  # fmt: skip
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="`shift` .2.: the frozen encoder's maps"):
        caption.train(tmp_path / "shifted", cfg, small(shift=2),
                      images=tmp_path / "coco" / "images", captions=path, log=quiet)  # fmt: skip
    caption.train(out, cfg, small(epochs=2, select="loss"), images=tmp_path / "coco" / "images",
                  captions=path, log=quiet)  # fmt: skip
    model = caption.load(out)
    assert model.frozen
    seen = []
    real_batch_probe = caption.runs.batch_probe
    monkeypatch.setattr(caption.runs, "batch_probe",
                        lambda step_fn, batch, device: seen.append(batch)
                        or real_batch_probe(step_fn, batch, device))  # fmt: skip
    (layer,) = gradients_through_time(model, caption.gradient_probe(model, log=quiet))
    (batch,) = seen
    assert "features" in batch and "images" not in batch
    assert batch["features"].dtype == torch.float32 and batch["features"].dim() == 4
    T = batch["previous"].shape[1]
    assert len(layer.norms) == T + 1  # inject first: the image's step before <start>
    assert all(math.isfinite(n) and n > 0 for n in layer.norms), layer
    points = read_trace(out / "gradients.json")
    assert [p["step"] for p in points] == evaluations(out)
    step = load_checkpoint(out / "best").meta["step"]
    (traced,) = [p for p in points if p["step"] == step]
    np.testing.assert_allclose(layer.norms, traced["layers"][0].norms, rtol=1e-4)


def test_a_frozen_encoders_run_goes_on_with_its_encoder_trained_by_init_from_finetune(
    tmp_path, monkeypatch
):
    """The two-stage recipe: a run with the pretrained encoder frozen, then --init-from it
    with --finetune: the new run keeps the source's settings but trains the encoder too
    (its weights move away from the source's, its batch-norm statistics do not), training
    batches carry pixels, not cached maps; without --finetune the encoder stays frozen."""
    from rnnkit.data import weights
    from rnnkit.vision import EfficientNetLite0

    torch.manual_seed(7)
    pretrained = EfficientNetLite0()
    monkeypatch.setattr(weights, "load_efficientnet_lite0", lambda log=print: pretrained)
    path = write_coco(tmp_path / "coco", toy_split(40, seed=3))
    kw = dict(images=tmp_path / "coco" / "images", captions=path, log=quiet)
    cfg = CaptionConfig(encoder="efficientnet-lite0", image_size=32, hidden_size=8,
                        embedding_size=8, image_vector_size=8, dropout=0.0)  # fmt: skip
    caption.train(tmp_path / "frozen", cfg, small(epochs=1, select="loss"), **kw)
    source = caption.load(tmp_path / "frozen")
    assert source.frozen
    seen = []
    real_collate = caption.collate
    monkeypatch.setattr(caption, "collate", lambda ex, idx: seen.append(ex.is_features)
                        or real_collate(ex, idx))  # fmt: skip
    stage2 = small(epochs=1, select="loss", lr=1e-3, init_from=str(tmp_path / "frozen"))
    # the model flags are the source's: the 99 units asked for here are ignored, finetune
    # is taken
    model, _ = caption.train(tmp_path / "tuned", replace(cfg, finetune=True, hidden_size=99),
                             stage2, **kw)  # fmt: skip
    assert model.config == replace(source.config, finetune=True) and not model.frozen
    assert seen and not any(seen)  # pixels, read by the encoder in training
    moved = [not torch.equal(a, b) for a, b in
             zip(model.encoder.parameters(), source.encoder.parameters())]  # fmt: skip
    assert sum(moved) > len(moved) // 2
    # ... but not its batch-norm statistics, ImageNet's (here the random network's)
    stats = [(k, v) for k, v in model.encoder.state_dict().items() if "running" in k]
    assert stats and all(torch.equal(v, source.encoder.state_dict()[k]) for k, v in stats)
    assert not model.train().encoder.training
    plain, _ = caption.train(tmp_path / "again", None, stage2, **kw)
    assert plain.frozen and plain.config == source.config


def retrieving_model(seed: int = 0, **kw) -> Captioner:
    """A captioner that copies from retrieved captions, over a frozen (random) pretrained
    encoder, its bank holding ten toy pictures."""
    torch.manual_seed(seed)
    base = dict(encoder="efficientnet-lite0", image_size=32, hidden_size=12, embedding_size=8,
                image_vector_size=6, attention_size=5, dropout=0.0, retrieve=3)  # fmt: skip
    config = caption.resolve_config(CaptionConfig(**{**base, **kw}), None)
    model = Captioner(config, build_vocab([WORDS], 1), (16, 16, 3)).eval()
    bank = toy_split(10, seed=8)
    words = caption.bank_captions(bank, model.vocab, CiderReward(bank.captions))
    model.set_bank(model.pool(model.features(bank.images)), words)
    return model


@pytest.mark.parametrize("variant", [{}, dict(attention=True, inject="first")], ids=ids)
def test_retrieval_mixes_writing_and_copying_the_nearest_training_captions(variant):
    model = retrieving_model(**variant)
    split = toy_split(5, seed=9)
    fmaps = model.features(split.images)
    # the neighbours: the highest cosine of the pooled features, by hand
    query = F.normalize(model.pool(fmaps), dim=1)
    rows, similarity = model.neighbours(fmaps)
    by_hand = (query @ model.bank_vectors.T).topk(3, dim=1)
    assert torch.equal(rows, by_hand.indices)
    torch.testing.assert_close(similarity, by_hand.values)
    batch = batch_for(model, split)
    batch["features"] = fmaps
    with torch.no_grad():
        scores, _ = model(batch)  # (B, T, V) log-probabilities
        torch.testing.assert_close(scores.exp().sum(-1), torch.ones(scores.shape[:2]))
        # step by step as decoding runs it: the same distribution at every word
        ids, state = model.start(fmaps)
        for t in range(batch["previous"].shape[1]):
            step_scores, state = model.step(batch["previous"][:, t], state)
            torch.testing.assert_close(step_scores, scores[:, t], rtol=1e-5, atol=1e-5)
        # a closed gate copies only: the mass lies on the retrieved captions' words
        model.copy_gate.bias.fill_(-60.0)
        copied, _ = model(batch)
        retrieved = model.bank_words[rows].flatten(1)  # (B, k*L)
        for b in range(len(split)):
            allowed = torch.zeros(len(model.vocab), dtype=torch.bool)
            allowed[retrieved[b][retrieved[b] != 0]] = True
            mass = copied[b].exp()[:, allowed].sum(-1)
            torch.testing.assert_close(mass, torch.ones_like(mass), rtol=1e-5, atol=1e-5)
        # an open gate writes only: the plain softmax of the readout
        model.copy_gate.bias.fill_(60.0)
        written, _ = model(batch)
        assert not torch.allclose(written, copied)
        v, memory = model.context(fmaps)
        state = model.initial_state(v)
        if model.config.inject == "first":
            state = model._image_step(v, state, memory)
        x = model._inputs(batch["previous"][:, :1], v)[:, 0]
        out, _, z, _, _ = model._step(x, state, memory)
        torch.testing.assert_close(written[:, 0], model._readout(out, z).log_softmax(-1),
                                   rtol=1e-5, atol=1e-5)  # fmt: skip
        # the retrieved words condition the decoder: other captions in the bank, other scores
        model.copy_gate.bias.fill_(0.0)
        before, _ = model(batch)
        model.bank_words[:, 1] = model.vocab.encode(["green"])[0]
        after, _ = model(batch)
        assert not torch.allclose(before, after)
    # a training image never retrieves itself when told so; otherwise it comes first
    bank_maps = model.features(toy_split(10, seed=8).images)
    own = torch.arange(10)
    assert torch.equal(model.neighbours(bank_maps)[0][:, 0], own)
    assert not (model.neighbours(bank_maps, exclude=own)[0] == own[:, None]).any()
    # beam 1 is greedy; a batch writes what each image alone would
    assert model.caption_ids(fmaps, beam=1, max_length=6) == model.caption_ids(fmaps, max_length=6)
    alone = [model.caption_ids(fmaps[i : i + 1], beam=3, max_length=6)[0] for i in range(5)]
    assert model.caption_ids(fmaps, beam=3, max_length=6) == alone


def test_retrieval_trains_without_an_images_own_caption_and_saves_its_bank(tmp_path, monkeypatch):
    from rnnkit.data import weights
    from rnnkit.vision import EfficientNetLite0

    torch.manual_seed(7)
    pretrained = EfficientNetLite0()
    monkeypatch.setattr(weights, "load_efficientnet_lite0", lambda log=print: pretrained)
    path = write_coco(tmp_path / "coco", toy_split(40, seed=3))
    images = tmp_path / "coco" / "images"
    cfg = CaptionConfig(encoder="efficientnet-lite0", image_size=32, hidden_size=8,
                        embedding_size=8, image_vector_size=8, dropout=0.0, retrieve=2)  # fmt: skip
    seen = []
    real_collate = caption.collate
    monkeypatch.setattr(caption, "collate", lambda ex, idx: seen.append(real_collate(ex, idx))
                        or seen[-1])  # fmt: skip
    out = tmp_path / "run"
    model, _ = caption.train(out, cfg, small(epochs=1), images=images, captions=path, log=quiet)
    training = [b for b in seen if "neighbours" in b]
    assert training and all(not (b["neighbours"] == b["image"][:, None]).any() for b in training)
    assert all(b["neighbours"].shape[1] == 2 for b in training)
    splits, _ = caption.load_splits(data=None, images=images, captions=path,
                                    train_config=small(), size=(32, 32), log=quiet)  # fmt: skip
    train = splits["train"]
    loaded = caption.load(out)
    assert loaded.bank_vectors.shape[0] == len(train) == loaded.bank_words.shape[0]
    expected = caption.bank_captions(train, loaded.vocab, CiderReward(train.captions))
    assert torch.equal(loaded.bank_words, expected)
    test = splits["test"]
    assert loaded.caption(test.images) == model.caption(test.images)
    for bad in (dict(encoder="cnn"), dict(finetune=True), dict(blind=True)):
        with pytest.raises(ValueError, match=r"`retrieve` \(2\) needs a frozen pretrained"):
            CaptionConfig(**{**asdict(cfg), **bad})
    with pytest.raises(ValueError, match=r"`retrieve` \(2\): not with --mirror"):
        caption.train(tmp_path / "m", cfg, small(mirror=True), images=images, captions=path,
                      log=quiet)  # fmt: skip


def tiny_charlm(tmp_path: Path, capsys) -> Path:
    """A character model's run of two steps: a run of another kind."""
    text = tmp_path / "t.txt"
    text.write_text("hello world, hello there\n" * 50)
    lm = tmp_path / "lm"
    assert main(["train", "charlm", "--text", str(text), "--out", str(lm), "--steps", "2",
                 "--hidden-size", "8", "--batch-size", "2", "--seq-len", "8", "--sample", "0",
                 "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    return lm


def test_a_run_of_another_kind_is_refused_by_caption(tmp_path, capsys):
    lm = tiny_charlm(tmp_path, capsys)
    picture = tmp_path / "p.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(picture)
    assert main(["caption", str(lm), str(picture)]) == 2
    assert "image captioner" in capsys.readouterr().err


CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` binary on PATH")
def test_the_page_shows_the_captions_and_the_attention_in_headless_chromium(tmp_path):
    model = tiny_model(inject="every-step", attention=True)
    split = toy_split(3, seed=8)
    fmaps = model.features(split.images)
    said = model.caption(split.images, beam=2)
    path = caption.page(model, split, fmaps, said, tmp_path / "page.html", baseline=said)
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", path.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert html.count('class="item"') == 3
    assert all(c[0] in html for c in split.captions)
    n_words = sum(len(s.split()) + 1 for s in said)  # each word and <end>: one picture
    assert html.count("<figure>") == n_words
    png = tmp_path / "shot.png"
    shot = subprocess.run(
        [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}",
         "--window-size=900,700", path.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shot.returncode == 0 and png.stat().st_size > 5000


def test_end_id_stops_a_caption():
    model = tiny_model()
    with torch.no_grad():  # a head that always prefers <end>: every caption is empty
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.bias[END_ID] = 10.0
    split = toy_split(2, seed=1)
    assert model.caption(split.images) == ["", ""]
    assert model.caption(split.images, beam=3) == ["", ""]
