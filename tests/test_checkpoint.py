"""Checkpoints: layout, round trip, atomicity under failure, weights_only loading, RNG."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from rnnkit.checkpoint import (
    META_FILE,
    TRAIN_STATE_FILE,
    WEIGHTS_FILE,
    atomic_path,
    atomic_write_bytes,
    check_weights_only,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


class Custom:
    """A class that torch.load(weights_only=True) must refuse to unpickle."""

    def __init__(self) -> None:
        self.x = 1


def tied_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5))
    model[1].weight = model[0].weight  # tied weights: shared storage
    return model


def save_example(path, step: int = 1) -> None:
    model = tied_model()
    with torch.no_grad():
        model[0].weight.add_(step)
    save_checkpoint(
        path,
        model_state=model.state_dict(),
        train_state={"step": step, "rng": rng_state()},
        meta={"kind": "charlm", "config": {"hidden_size": 3}, "vocab": ["a", "b"]},
    )


def test_round_trip_layout_tied_and_strided_tensors(tmp_path):
    model = tied_model()
    state = dict(model.state_dict())
    state["strided"] = torch.arange(6.0).reshape(2, 3).t()  # non-contiguous
    opt = torch.optim.Adam(model.parameters())
    model(torch.tensor([1, 2])).sum().backward()
    opt.step()
    train_state = {"optimizer": opt.state_dict(), "step": 7, "rng": rng_state(), "h": None}

    save_checkpoint(
        tmp_path / "ckpt", model_state=state, train_state=train_state, meta={"kind": "x"}
    )

    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
    assert sorted(os.listdir(tmp_path / "ckpt")) == sorted(
        [WEIGHTS_FILE, TRAIN_STATE_FILE, META_FILE]
    )
    doc = json.loads((tmp_path / "ckpt" / META_FILE).read_text())
    assert doc["format"] == "rnnkit-checkpoint" and doc["meta"] == {"kind": "x"}

    ckpt = load_checkpoint(tmp_path / "ckpt", expected_kind="x")
    assert ckpt.meta == {"kind": "x"}
    assert set(ckpt.model_state) == set(state)
    for name, tensor in state.items():
        assert torch.equal(ckpt.model_state[name], tensor)
    assert ckpt.train_state["step"] == 7 and ckpt.train_state["h"] is None
    fresh = tied_model()
    fresh.load_state_dict({k: v for k, v in ckpt.model_state.items() if k != "strided"})
    opt2 = torch.optim.Adam(fresh.parameters())
    opt2.load_state_dict(ckpt.train_state["optimizer"])
    assert torch.equal(
        opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"]
    )


def test_weights_only_checkpoint_without_train_state(tmp_path):
    save_checkpoint(tmp_path / "c", model_state={"w": torch.ones(2)}, train_state=None, meta={})
    ckpt = load_checkpoint(tmp_path / "c")
    assert ckpt.train_state is None and torch.equal(ckpt.model_state["w"], torch.ones(2))


def test_overwrite_replaces_previous_checkpoint(tmp_path):
    save_example(tmp_path / "ckpt", step=1)
    save_example(tmp_path / "ckpt", step=2)
    assert load_checkpoint(tmp_path / "ckpt").train_state["step"] == 2
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_refuses_to_overwrite_something_else(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="notes"):
        save_checkpoint(tmp_path / "notes", model_state={}, train_state=None, meta={})
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def test_atomic_write_bytes_failure_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "history.csv"
    atomic_write_bytes(target, b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["history.csv"]


def test_atomic_path_failure_in_the_writer(tmp_path):
    target = tmp_path / "weights.pt"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError, match="serializer died"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("serializer died")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["weights.pt"]
    with atomic_path(target) as tmp:
        torch.save({"a": 1}, tmp)
    assert torch.load(target) == {"a": 1}


def count_replace_calls(tmp_path, monkeypatch) -> int:
    save_example(tmp_path / "probe", step=0)  # count the calls of an overwrite
    calls = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda s, d: (calls.append(1), real_replace(s, d)))
    save_example(tmp_path / "probe", step=0)
    monkeypatch.setattr(os, "replace", real_replace)
    return len(calls)


def test_save_checkpoint_failure_at_every_rename_keeps_previous(tmp_path, monkeypatch):
    n_calls = count_replace_calls(tmp_path / "probe_dir", monkeypatch)
    assert n_calls >= 5  # three files + two renames of the swap
    real_replace = os.replace
    for fail_at in range(n_calls):
        run_dir = tmp_path / f"run{fail_at}"
        save_example(run_dir / "ckpt", step=1)
        calls = []

        def flaky_replace(src, dst, fail_at=fail_at, calls=calls):
            calls.append(1)
            if len(calls) == fail_at + 1:
                raise OSError("killed")
            return real_replace(src, dst)

        monkeypatch.setattr(os, "replace", flaky_replace)
        with pytest.raises(OSError, match="killed"):
            save_example(run_dir / "ckpt", step=2)
        monkeypatch.setattr(os, "replace", real_replace)

        assert os.listdir(run_dir) == ["ckpt"], f"leftovers when failing at rename {fail_at}"
        ckpt = load_checkpoint(run_dir / "ckpt", expected_kind="charlm")
        assert ckpt.train_state["step"] == 1
        assert torch.equal(ckpt.model_state["0.weight"], tied_model()[0].weight + 1)


def test_unserializable_train_state_fails_before_writing(tmp_path):
    save_example(tmp_path / "ckpt", step=1)
    with pytest.raises(TypeError, match=r"train_state\['extra'\]\['data'\].*Custom"):
        save_checkpoint(
            tmp_path / "ckpt",
            model_state={},
            train_state={"extra": {"data": Custom()}},
            meta={},
        )
    with pytest.raises(ValueError, match="meta.*JSON"):
        save_checkpoint(tmp_path / "ckpt", model_state={}, train_state=None, meta={"a": Custom()})
    assert os.listdir(tmp_path) == ["ckpt"]
    assert load_checkpoint(tmp_path / "ckpt").train_state["step"] == 1


def test_check_weights_only_rejects_numpy_scalars():
    check_weights_only({"a": [1, 2.0, "s", None, torch.zeros(1), (True, b"x")]})
    with pytest.raises(TypeError, match=r"state\['lr'\].*numpy"):
        check_weights_only({"lr": np.float64(0.1)}, "state")


def test_train_state_is_loaded_with_weights_only(tmp_path):
    import hashlib
    import json

    save_example(tmp_path / "ckpt")
    # Tamper: a pickled custom class in train_state.pt must not be unpickled, even when
    # the tamperer also rewrites the recorded sha256.
    evil = tmp_path / "ckpt" / TRAIN_STATE_FILE
    torch.save({"step": 1, "evil": Custom()}, evil)
    with pytest.raises(ValueError, match=f"damaged: {TRAIN_STATE_FILE} is not the file"):
        load_checkpoint(tmp_path / "ckpt")
    meta = tmp_path / "ckpt" / "meta.json"
    doc = json.loads(meta.read_text())
    doc["sha256"][TRAIN_STATE_FILE] = hashlib.sha256(evil.read_bytes()).hexdigest()
    meta.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="never need to unpickle code") as err:
        load_checkpoint(tmp_path / "ckpt")
    assert "weights_only=False" not in str(err.value)  # torch's advice is not passed on
    assert "\n" not in str(err.value)


def test_a_truncated_checkpoint_is_named_and_a_resume_falls_back_to_the_previous(tmp_path):
    from rnnkit import runs
    from rnnkit.checkpoint import WEIGHTS_FILE, previous_path

    for step in (1, 2):
        save_checkpoint(
            tmp_path / "run" / "latest",
            model_state={"w": torch.full((64,), float(step))},
            train_state={"step": step},
            meta={"kind": "toy", "step": step},
            keep_previous=True,
        )
    assert load_checkpoint(previous_path(tmp_path / "run" / "latest")).meta["step"] == 1
    weights = tmp_path / "run" / "latest" / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:100])  # a disk that lost the end of it
    with pytest.raises(ValueError, match=f"damaged: {WEIGHTS_FILE}"):
        load_checkpoint(tmp_path / "run" / "latest")
    said = []
    _, ckpt = runs.start_run(tmp_path / "run", True, "toy", log=said.append)
    assert ckpt.meta["step"] == 1 and "falling back" in said[0]


def test_load_errors_name_the_path_and_kind(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no checkpoint at {tmp_path / 'nope'}"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty is not an rnnkit checkpoint"):
        load_checkpoint(tmp_path / "empty")
    save_checkpoint(tmp_path / "clf", model_state={}, train_state=None, meta={"kind": "classify"})
    with pytest.raises(ValueError) as err:
        load_checkpoint(tmp_path / "clf", expected_kind="charlm")
    assert str(err.value) == (
        f"checkpoint at {tmp_path / 'clf'} is a 'classify' model, expected 'charlm'"
    )
    os.remove(tmp_path / "clf" / WEIGHTS_FILE)
    with pytest.raises(ValueError, match=f"{WEIGHTS_FILE}"):
        load_checkpoint(tmp_path / "clf")


def draws() -> tuple:
    return (random.random(), np.random.rand(), torch.rand(2).tolist(), np.random.randn())


def test_rng_state_round_trip_through_weights_only_file(tmp_path):
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    np.random.randn()  # leaves a cached gaussian in NumPy's legacy state
    state = rng_state()
    expected = draws()
    draws()
    check_weights_only(state)
    torch.save(state, tmp_path / "rng.pt")
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert draws() == expected


def test_a_checkpoint_of_a_newer_format_is_refused_by_name(tmp_path):
    import json

    from rnnkit.checkpoint import META_FILE, load_checkpoint, save_checkpoint

    save_checkpoint(tmp_path / "c", model_state={"w": torch.zeros(2)}, train_state=None, meta={})
    doc = json.loads((tmp_path / "c" / META_FILE).read_text())
    doc["format_version"] = 99
    (tmp_path / "c" / META_FILE).write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="format version 99, newer than this rnnkit"):
        load_checkpoint(tmp_path / "c")
