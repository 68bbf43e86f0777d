"""Checkpoints that a crash cannot corrupt, and that load without unpickling code.

On-disk layout: a checkpoint is one directory::

    run/ckpt/
        model.safetensors   the weights (``model.state_dict()``), safetensors format
        train_state.pt      optional: optimizer/scheduler state, step counters, RNG states,
                            task extras (data cursor, carried hidden state); torch.save
                            format, loaded with ``torch.load(weights_only=True)``
        meta.json           {"format": "rnnkit-checkpoint", "format_version": 1,
                             "files": [...], "meta": {task meta: kind, config, vocab, ...}}

Why a directory that is swapped in whole: the three files only make sense together
(weights of step 500 with the optimizer state of step 400 would resume silently
wrong), and no file system can replace three files in one atomic step. So
:func:`save_checkpoint` serializes everything in memory first, writes the files into
a fresh hidden sibling directory (each file flushed and fsynced, ``meta.json`` last),
and only then swaps that directory in with two renames: the old checkpoint aside,
the new one into place, the old one deleted. An exception at any point removes the
staging directory and leaves the previous checkpoint untouched (a failed second
rename is rolled back). Only a hard kill between the two renames -- a window of two
system calls -- can leave the checkpoint under its backup name ``.NAME.old``;
:func:`load_checkpoint` then says so. Saving assumes one writer per path.

Why two weight formats: safetensors is a plain header plus raw bytes, so loading the
weights can never run code and the file is readable from any language; everything
else is nested Python containers, which ``torch.save`` stores well and
``torch.load(weights_only=True)`` loads without executing arbitrary pickles. To keep
that promise, :func:`save_checkpoint` refuses a ``train_state`` holding anything but
tensors, dicts, lists, tuples, ints, floats, bools, strings, bytes and None, naming
the offending entry -- at save time, not months later at resume time.

The smaller helpers are useful on their own: :func:`atomic_write_bytes` and
:func:`atomic_path` for any file (a history CSV, a plot), and :func:`rng_state` /
:func:`set_rng_state` for exact resumption.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import random
import re
import shutil
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import Tensor

FORMAT = "rnnkit-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
TRAIN_STATE_FILE = "train_state.pt"
META_FILE = "meta.json"

PathLike = str | os.PathLike


# -- atomic files ---------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    """Make a rename inside `directory` durable. Best effort: not every OS can open a dir."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it atomically becomes `path`.

    Write whatever you like to the yielded path (``torch.save(obj, tmp)``,
    ``fig.savefig(tmp)``). When the block exits normally the file is fsynced and
    ``os.replace``-d onto `path`, so readers see either the old file or the complete
    new one, never a half-written one. When the block raises, the temporary file is
    removed and `path` is untouched. The temporary name keeps `path`'s suffix so tools
    that guess the format from it still work.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    # Create it ourselves (not mkstemp) so the final file gets the umask's usual mode.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically: temp file in the same dir, fsync, os.replace."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()


# -- RNG state ------------------------------------------------------------------------


def save_figure(fig: Any, path: PathLike) -> Path:
    """Write a matplotlib figure as PNG atomically (a reader never sees half a file),
    then close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def rng_state() -> dict[str, Any]:
    """Capture every global RNG a training step may draw from, as weights_only-safe data.

    Returns a dict with python ``random``, NumPy's global generator, torch's CPU
    generator and, when CUDA is available, one generator per CUDA device. Python's and
    NumPy's tuples become int64 tensors so that ``torch.load(weights_only=True)``
    accepts the result.
    """
    version, py_state, gauss_next = random.getstate()
    bit_generator, key, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {
            "version": version,
            "state": torch.tensor(py_state, dtype=torch.int64),  # 625 words < 2**32
            "gauss_next": gauss_next,
        },
        "numpy": {
            "bit_generator": bit_generator,
            "key": torch.from_numpy(key.astype(np.int64)),  # (624,) uint32 words
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the generators captured by :func:`rng_state`.

    CUDA states are restored when CUDA is available, for as many devices as both the
    checkpoint and this machine have; a CPU-only machine ignores them.
    """
    py = state["python"]
    random.setstate((py["version"], tuple(int(w) for w in py["state"].tolist()), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["bit_generator"],
            npy["key"].cpu().numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if "torch_cuda" in state and torch.cuda.is_available():
        for device, cuda_state in enumerate(state["torch_cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), device)


# -- checkpoints ----------------------------------------------------------------------


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    path: Path
    model_state: dict[str, Tensor]  # for model.load_state_dict
    train_state: dict[str, Any] | None  # for Trainer.load_state_dict; None if not saved
    meta: dict[str, Any]  # the task's meta dict, as saved


_PLAIN_TYPES = (int, float, bool, str, bytes, type(None))
_TORCH_LEAVES = (Tensor, torch.Size, torch.dtype, torch.device)


def check_weights_only(obj: Any, where: str = "train_state") -> None:
    """Raise TypeError, naming the entry, if `obj` would not load with weights_only=True.

    Allowed: tensors, torch.Size/dtype/device, dict/OrderedDict/list/tuple containers
    and int, float, bool, str, bytes, None leaves. Exact types are checked on purpose:
    a NumPy float or a namedtuple is a subclass of an allowed type but pickles as
    something weights_only refuses.
    """
    if type(obj) in _PLAIN_TYPES or isinstance(obj, _TORCH_LEAVES):
        return
    if type(obj) in (dict, OrderedDict):
        for key, value in obj.items():
            if type(key) not in _PLAIN_TYPES:
                raise TypeError(f"{where} has a key of type {type(key).__name__}: {key!r}.")
            check_weights_only(value, f"{where}[{key!r}]")
        return
    if type(obj) in (list, tuple):
        for i, value in enumerate(obj):
            check_weights_only(value, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where} has type {type(obj).__module__}.{type(obj).__qualname__}, which "
        "torch.load(weights_only=True) refuses; store tensors, dicts, lists, tuples, "
        "ints, floats, bools, strings or None instead."
    )


def _standalone_tensors(model_state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Contiguous CPU copies: safetensors refuses tied (shared) and strided tensors."""
    out = {}
    for name, tensor in model_state.items():
        if not isinstance(tensor, Tensor):
            raise TypeError(
                f"Argument `model_state` must map names to tensors, got "
                f"{type(tensor).__name__} for {name!r}."
            )
        out[name] = tensor.detach().cpu().clone(memory_format=torch.contiguous_format)
    return out


def _read_meta_json(path: Path) -> dict[str, Any] | None:
    """The parsed meta.json of a checkpoint directory, or None if it is not one."""
    meta_path = path / META_FILE
    if not path.is_dir() or not meta_path.is_file():
        return None
    try:
        doc = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == FORMAT else None


def save_checkpoint(
    path: PathLike,
    *,
    model_state: Mapping[str, Tensor],
    train_state: Mapping[str, Any] | None,
    meta: Mapping[str, Any],
    keep_previous: bool = False,
) -> Path:
    """Write a checkpoint directory at `path` (layout in the module docstring).

    Args:
        path: the checkpoint directory. It may exist only as an earlier rnnkit
            checkpoint, which is replaced; anything else there is refused.
        model_state: ``model.state_dict()``; tied and non-contiguous tensors are fine.
        train_state: e.g. ``trainer.state_dict()``, or None for weights only. Must hold
            only weights_only-loadable values (see :func:`check_weights_only`).
        meta: JSON-serializable task description; by convention ``meta["kind"]`` names
            the model kind ("charlm", "classify", ...) that :func:`load_checkpoint`
            can check.
        keep_previous: keep the checkpoint this one replaces as ``.NAME.prev`` (the
            last two survive, so a damaged newest one has a good one beside it).

    Returns:
        The checkpoint path.
    """
    path = Path(path)
    if path.exists() and _read_meta_json(path) is None:
        raise FileExistsError(f"{path} exists and is not an rnnkit checkpoint; not overwriting it.")
    if not isinstance(meta, Mapping):
        raise TypeError(f"Argument `meta` must be a dict, got {type(meta).__name__}.")

    # Serialize everything before touching the disk: a bad value fails with nothing written.
    files = {
        WEIGHTS_FILE: safetensors.torch.save(_standalone_tensors(model_state), {"format": "pt"})
    }
    if train_state is not None:
        check_weights_only(train_state)
        buffer = io.BytesIO()
        torch.save(train_state, buffer)
        files[TRAIN_STATE_FILE] = buffer.getvalue()
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "files": sorted(files),
        # checked on load: a truncated or altered file is found out, by name
        "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
        "meta": meta,
    }
    try:
        meta_bytes = json.dumps(doc, indent=2, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise ValueError(f"Argument `meta` must be JSON-serializable: {err}") from err
    files[META_FILE] = meta_bytes  # dicts keep order: meta.json is written last

    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(path)
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    staging.mkdir(0o777)
    try:
        for name, data in files.items():
            atomic_write_bytes(staging / name, data)
        _fsync_dir(staging)
        _swap_in(staging, path, keep_previous)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _backup_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def recover(path: PathLike) -> bool:
    """Put back the checkpoint a save killed between its two renames left aside.

    A save swaps a checkpoint in with two renames (old -> ``.NAME.old``, new -> NAME);
    a hard kill between them leaves only the backup, which is the last good
    checkpoint: it is renamed back to `path`. Returns whether it did so.
    """
    path = Path(path)
    backup = _backup_path(path)
    if path.exists() or not backup.is_dir():
        return False
    os.replace(backup, path)
    _fsync_dir(path.parent)
    return True


def remove_stale_staging(path: PathLike) -> None:
    """Delete the staging folders (``.NAME.xxxxxxxx.tmp``) that saves of `path` killed
    before their swap left behind. Only the run's one writer may call this."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def previous_path(path: PathLike) -> Path:
    """Where ``save_checkpoint(..., keep_previous=True)`` keeps the one it replaced."""
    path = Path(path)
    return path.with_name(f".{path.name}.prev")


def _swap_in(staging: Path, path: Path, keep_previous: bool = False) -> None:
    """Move the complete `staging` directory to `path`, replacing an old checkpoint."""
    backup = _backup_path(path)
    if backup.exists():  # left by a hard kill during an earlier swap
        if not path.exists():
            os.replace(backup, path)  # it was the last good checkpoint: keep it as such
        else:
            shutil.rmtree(backup)
    if not path.exists():
        os.replace(staging, path)
    else:
        # POSIX cannot rename a directory onto a non-empty one, hence two renames.
        os.replace(path, backup)
        try:
            os.replace(staging, path)
        except BaseException:
            os.replace(backup, path)  # put the previous checkpoint back
            raise
        if keep_previous:
            shutil.rmtree(previous_path(path), ignore_errors=True)
            os.replace(backup, previous_path(path))
        else:
            shutil.rmtree(backup, ignore_errors=True)
    _fsync_dir(path.parent)


def resolve_checkpoint(path: PathLike) -> Path:
    """A run directory (its best checkpoint, else its latest), a checkpoint directory,
    or a file inside one -> the checkpoint directory."""
    p = Path(path)
    recover(p)
    if not p.exists():
        raise FileNotFoundError(f"no checkpoint at {p}")
    if p.is_file():
        return p.parent
    for sub in ("best", "latest"):
        recover(p / sub)
    for sub in ("best", "latest"):
        if (p / sub / META_FILE).is_file():
            return p / sub
    return p


def checkpoint_kind(path: PathLike) -> str | None:
    """``meta["kind"]`` of the checkpoint at `path` (see :func:`resolve_checkpoint`), or
    None when it records none or is not an rnnkit checkpoint."""
    doc = _read_meta_json(resolve_checkpoint(path)) or {}
    return doc.get("meta", {}).get("kind")


def config_from_dict(cls: type, d: Mapping[str, Any]) -> Any:
    """A configuration dataclass from its saved ``asdict``; unknown keys are ignored, so
    a checkpoint written by a version with more fields still loads."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


def load_checkpoint(
    path: PathLike,
    *,
    expected_kind: str | None = None,
    map_location: str | torch.device = "cpu",
) -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint directory.
        expected_kind: if given, ``meta["kind"]`` must equal it; catches e.g. loading a
            classifier into the char-LM command.
        map_location: device for the weights and train-state tensors.

    Raises:
        FileNotFoundError: nothing at `path` ("no checkpoint at ...").
        ValueError: `path` is not an rnnkit checkpoint, is incomplete, has the wrong
            kind, or its train state needs unpickling arbitrary code.
    """
    path = Path(path)
    recover(path)  # a save killed mid-swap: its backup is the last good checkpoint
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    doc = _read_meta_json(path)
    if doc is None:
        raise ValueError(
            f"{path} is not an rnnkit checkpoint (expected a directory with {WEIGHTS_FILE}, "
            f"{TRAIN_STATE_FILE} and a {META_FILE} whose format is {FORMAT!r})."
        )
    version = doc.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"checkpoint at {path} has format version {version!r}, newer than this rnnkit "
            f"reads ({FORMAT_VERSION}): upgrade rnnkit to load it"
        )
    meta = doc.get("meta", {})
    if not isinstance(meta, dict):
        raise ValueError(f"checkpoint at {path}: its {META_FILE} holds no meta dictionary")
    if expected_kind is not None and meta.get("kind") != expected_kind:
        found = f"a {meta['kind']!r} model" if "kind" in meta else "a model of no recorded kind"
        raise ValueError(f"checkpoint at {path} is {found}, expected {expected_kind!r}")
    missing = [name for name in doc.get("files", []) if not (path / name).is_file()]
    if missing:
        raise ValueError(f"checkpoint at {path} is incomplete: missing {', '.join(missing)}")
    for name, digest in (doc.get("sha256") or {}).items():  # checkpoints since 0.1.0
        if name != META_FILE and sha256_of(path / name) != digest:
            raise ValueError(
                f"checkpoint at {path} is damaged: {name} is not the file that was saved "
                "(its sha256 differs: truncated or altered)"
            )

    try:
        model_state = safetensors.torch.load_file(path / WEIGHTS_FILE, device=str(map_location))
    except Exception as err:  # safetensors raises its own error type for bad files
        raise ValueError(f"could not read weights {path / WEIGHTS_FILE}: {err}") from err

    train_state = None
    if TRAIN_STATE_FILE in doc.get("files", []):
        try:
            train_state = torch.load(
                path / TRAIN_STATE_FILE, map_location=map_location, weights_only=True
            )
        except Exception as err:  # UnpicklingError: weights_only refused a global
            found = re.search(r"Unsupported global: [^\n.]*", str(err))
            raise ValueError(
                f"refused {path / TRAIN_STATE_FILE}: it holds more than tensors and plain "
                "values (rnnkit checkpoints never need to unpickle code)"
                + (f"; {found.group(0)}" if found else "")
            ) from None
    return Checkpoint(path=path, model_state=model_state, train_state=train_state, meta=meta)
