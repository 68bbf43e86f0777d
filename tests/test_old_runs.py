"""Run directories written by rnnkit 0.1.0 before the house was reshaped (the fixture
was made with that version: tests/fixtures/runs-0.1.0) still load, answer exactly as
that version answered (expected.json), and resume where they stopped."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

import rnnkit
from rnnkit.backends import native_bf16
from rnnkit.tasks import charlm

OLD = Path(__file__).resolve().parent / "fixtures" / "runs-0.1.0"
EXPECTED = json.loads((OLD / "expected.json").read_text())


def test_a_character_model_samples_and_scores_as_before():
    model = rnnkit.load_any(OLD / "charlm")
    assert isinstance(model, rnnkit.CharLM)
    assert model.sample("To be", 40, temperature=0) == EXPECTED["charlm_greedy"]
    assert model.sample("To be", 40, temperature=0.8, seed=3) == EXPECTED["charlm_seeded"]
    nats = model.score((OLD / "tiny.txt").read_text(encoding="utf-8"))["nats_per_char"]
    assert math.isclose(nats, EXPECTED["charlm_nats"], rel_tol=1e-6)


def test_a_classifier_and_a_tagger_predict_as_before():
    clf = rnnkit.load_any(OLD / "classify")
    got = clf.predict(["the film was great", "awful plot and acting"], top=2)
    for row, want in zip(got, EXPECTED["classify"]):
        assert [label for label, _ in row] == [label for label, _ in want]
        assert all(math.isclose(p, q, rel_tol=1e-5) for (_, p), (_, q) in zip(row, want))
    tagger = rnnkit.load_any(OLD / "tag")
    assert tagger.predict(["we saw Ann Lee in Rome", "then met Bob Fox in Oslo"]) == EXPECTED["tag"]


def test_a_character_run_resumes_with_the_losses_the_old_version_had(tmp_path):
    run = tmp_path / "charlm"
    shutil.copytree(OLD / "charlm", run)
    shutil.copy(OLD / "tiny.txt", tmp_path / "tiny.txt")
    meta_path = run / "latest" / "meta.json"  # the run's text moved with it
    doc = json.loads(meta_path.read_text())
    doc["meta"]["data"]["text"] = str(tmp_path / "tiny.txt")
    meta_path.write_text(json.dumps(doc))
    _, trainer = charlm.train(run, resume=True, steps=9, progress=False, log=lambda m: None)
    assert trainer.step == 9
    losses = [r["loss"] for r in trainer.history if "loss" in r]
    assert doc["meta"]["precision"] == "bf16"  # what "auto" chose where the run was made
    if native_bf16(torch.device("cpu")):  # the same bfloat16 kernels: the same numbers
        assert losses == pytest.approx(EXPECTED["charlm_resumed_losses"], abs=0, rel=0)
    else:  # a CPU without bfloat16 runs the recurrence in float32: close, not equal
        assert losses == pytest.approx(EXPECTED["charlm_resumed_losses"], rel=1e-2)
        assert losses != EXPECTED["charlm_resumed_losses"]


def test_a_finished_classifier_run_resumes_to_its_end_and_reports(tmp_path):
    run = tmp_path / "classify"
    shutil.copytree(OLD / "classify", run)
    shutil.copy(OLD / "reviews.tsv", tmp_path / "reviews.tsv")
    meta_path = run / "latest" / "meta.json"
    doc = json.loads(meta_path.read_text())
    doc["meta"]["data"]["train"] = str(tmp_path / "reviews.tsv")
    meta_path.write_text(json.dumps(doc))
    model, results = rnnkit.classify.train(run, resume=True, progress=False, log=lambda m: None)
    old = json.loads((OLD / "classify" / "results.json").read_text())
    assert results["val"] == pytest.approx(old["val"])  # the same best weights, same scores
    assert model.predict(["the film was great"], top=2)[0][0][0] == EXPECTED["classify"][0][0][0]
