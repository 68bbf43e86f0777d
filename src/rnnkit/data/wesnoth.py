"""``wesnoth-actions``: real, artist-drawn animation sequences labelled with their action.

The unit sprites of The Battle for Wesnoth (Debian ``wesnoth-1.16-data``, GPL-2+) include
the frames of each unit's animations, one PNG per frame, named
``<unit>-<action>[-<direction>]-<N>.png`` (or ``<unit>-<action><N>.png``) under
``data/core/images/units/<race>/``, e.g. ``drakes/burner-fire-s-3.png``. A sequence is
the frames of one name in the order of N; the action is the last word of the name
before the direction (``idle2`` counts as ``idle``). Sequences of at least
:data:`MIN_FRAMES` frames are kept, and their actions merged into six classes
(:data:`ACTIONS`)::

    attack   attack, melee and the melee weapons' names (sword, blade, spear, axe, ...)
    ranged   ranged, fire, inhale (a drake drawing breath), throw, flame, crossbow, javelin
    magic    magic, lightning, halo, heal, healing, teleport, wind
    die      die, death, dying, fall
    idle     idle, bob (a unit breathing in place), stand, standing, taunt
    move     run, fly, flying, takeoff, soar, launch, hover

A name whose last word is none of these (``impact``, ``dust``, a weapon of the unit's
name...) is dropped: 631 sequences of 3 to 23 frames (median 6) of 195 units remain
(attack 257, idle 109, die 100, ranged 76, move 68, magic 21). Each frame is
the sprite composited on white, 72x72 RGB (larger sprites scaled to fit).

The split is **by unit** so that test units are never seen in training: a unit is its
race folder and the first word of its name, ``+female`` and directions removed (so
``drakes/burner+female-fire-s`` and ``drakes/burner-melee`` are the same unit); the
units are shuffled with seed 0, and the first ones whose sequences reach 15% of all
make the test split, the next 15% the validation split: 436 / 98 / 97 sequences.
Small and uneven (the test split holds 2 ranged and 2 magic sequences), so a test
accuracy here moves by about 1 point per sequence.

Labels: per clip, the action; per frame, the same action at every frame (the "many to
many" form: name the action from the frames seen so far).

Fetched on first use with ``apt-get download`` (146 MB, sha256-checked), read in memory
(``dpkg-deb``) and cached as ``$RNNKIT_DATA/wesnoth-actions.npz``; its names and labels
are checked against a pinned sha256.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .fetch import ChecksumError, Package, cache_dir, cache_from_package, deb_members
from .images import decode_image
from .videos import ClipSet

Log = Callable[[str], None]

WESNOTH_PACKAGE = Package(
    "debian",
    "wesnoth-1.16-data",
    "1:1.16.9-1",
    "1012b964bd412a6770685e3324ae3b61e176caff7846192d1ee63d55cd621e26",
)
UNITS_DIR = "usr/share/games/wesnoth/1.16/data/core/images/units/"
FRAME_SIZE = (72, 72)
MIN_FRAMES = 3
ACTIONS = {
    "attack": ("attack", "melee", "sword", "blade", "spear", "axe", "hammer", "mace",
               "pierce", "slash", "bite", "kick", "claws", "2claws", "pincer", "stinger",
               "sting", "fist", "tail", "horn", "charge"),
    "ranged": ("ranged", "fire", "inhale", "throw", "flame", "crossbow", "javelin"),
    "magic": ("magic", "lightning", "halo", "heal", "healing", "teleport", "wind"),
    "die": ("die", "death", "dying", "fall"),
    "idle": ("idle", "bob", "stand", "standing", "taunt"),
    "move": ("run", "fly", "flying", "takeoff", "soar", "launch", "hover"),
}  # fmt: skip
ACTION_OF = {word: action for action, words in ACTIONS.items() for word in words}
DIRECTIONS = frozenset({"n", "s", "e", "w", "ne", "nw", "se", "sw"})
SPLIT_FRACTION = 0.15  # of the sequences, for each of the test and validation splits
WESNOTH_COUNT = 631
WESNOTH_SHA256 = "6ca31e542853954d0a0d38c1a41f5878c3c0daea63e69c8e8780a0ba5585ae24"

_FRAME = re.compile(r"^(?P<stem>.*?\D)[-_]?(?P<n>\d+)\.png$")


def parse_frame_name(path: str) -> tuple[str, str, int] | None:
    """``race/name-3.png`` (a path under the units folder) -> (race, name stem, 3); None
    for a file that is not a numbered PNG."""
    race, _, file = path.rpartition("/")
    m = _FRAME.match(file)
    if m is None:
        return None
    return race, m["stem"].rstrip("-_"), int(m["n"])


def sequence_action(stem: str) -> tuple[str, str | None]:
    """A sequence's name stem -> (its unit's first word, its action class or None): the
    action is the last word after directions are dropped, trailing digits cut."""
    words = [w for w in re.split(r"[-_]", stem) if w and w not in DIRECTIONS]
    unit = words[0].split("+")[0] if words else stem
    if len(words) < 2:
        return unit, None
    return unit, ACTION_OF.get(words[-1].rstrip("0123456789") or words[-1])


def _member(name: str) -> bool:
    return name.startswith(UNITS_DIR) and name.endswith(".png")


def prepare_wesnoth(deb: Path, *, size: tuple[int, int] = FRAME_SIZE) -> dict[str, np.ndarray]:
    """The labelled sequences of the Wesnoth .deb, read in memory: ``frames`` uint8
    (all frames, H, W, 3) one sequence after another, ``lengths``, ``labels`` (ids into
    :data:`ACTIONS`), ``names`` (``race/stem``) and ``units`` (``race/unit``), sorted by
    name."""
    frames_of: dict[tuple[str, str], dict[int, bytes]] = defaultdict(dict)
    for name, data in deb_members(deb, _member):
        parsed = parse_frame_name(name[len(UNITS_DIR) :])
        if parsed is not None:
            race, stem, n = parsed
            frames_of[(race, stem)][n] = data
    actions = list(ACTIONS)
    chosen = []
    for (race, stem), frames in sorted(frames_of.items()):
        unit, action = sequence_action(stem)
        if action is not None and len(frames) >= MIN_FRAMES:
            chosen.append((race, stem, unit, action, frames))
    pictures, lengths, labels, names, units = [], [], [], [], []
    for race, stem, unit, action, frames in chosen:
        for n in sorted(frames):
            where = f"{deb}:{UNITS_DIR}{race}/{stem}-{n}"
            pictures.append(decode_image(frames[n], where, size, 3, argument="deb"))
        lengths.append(len(frames))
        labels.append(actions.index(action))
        names.append(f"{race}/{stem}")
        units.append(f"{race}/{unit}")
    return {
        "frames": np.stack(pictures),
        "lengths": np.array(lengths, dtype=np.int64),
        "labels": np.array(labels, dtype=np.int64),
        "names": np.array(names, dtype=str),
        "units": np.array(units, dtype=str),
    }


def text_sha256(arrays: dict[str, np.ndarray]) -> str:
    """sha256 of the names, units, lengths and labels (what is pinned: the frames'
    pixels depend on the image library's scaling of the few large sprites)."""
    text = json.dumps(
        [arrays[k].tolist() for k in ("names", "units", "lengths", "labels")],
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def wesnoth_path() -> Path:
    return cache_dir() / "wesnoth-actions.npz"


def fetch_wesnoth(*, log: Log = lambda msg: None) -> Path:
    """Path of the cached ``wesnoth-actions.npz``, made from the Debian package on first
    use."""

    def prepare(deb: Path) -> bytes:
        log("wesnoth-actions: reading the unit sprites ...")
        arrays = prepare_wesnoth(deb)
        if len(arrays["labels"]) != WESNOTH_COUNT or text_sha256(arrays) != WESNOTH_SHA256:
            raise ChecksumError(
                f"the sequences prepared from {WESNOTH_PACKAGE} differ from the ones this "
                f"rnnkit was written against ({len(arrays['labels'])} sequences, "
                f"{WESNOTH_COUNT} expected); please report it"
            )
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    return cache_from_package(wesnoth_path(), WESNOTH_PACKAGE, prepare,
                              name="wesnoth-actions", log=log)  # fmt: skip


def load_wesnoth(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in ("frames", "lengths", "labels", "names", "units")}
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{path} is damaged ({e}); delete it to fetch again") from None
    if text_sha256(arrays) != WESNOTH_SHA256:
        raise ChecksumError(f"{path} is damaged (sha256 mismatch); delete it to fetch again")
    return arrays


def unit_split(
    units: list[str], fraction: float | None = None, seed: int = 0
) -> dict[str, list[int]]:
    """{"train", "val", "test"}: indices of the sequences, split by unit (see the module
    docstring): whole units go to the test split until it holds `fraction` of the
    sequences (default :data:`SPLIT_FRACTION`), then to the validation split likewise,
    the rest to training."""
    fraction = SPLIT_FRACTION if fraction is None else fraction
    groups: dict[str, list[int]] = defaultdict(list)
    for i, u in enumerate(units):
        groups[u].append(i)
    order = sorted(groups)
    perm = np.random.default_rng(seed).permutation(len(order))
    want = fraction * len(units)
    split: dict[str, list[int]] = {"test": [], "val": [], "train": []}
    for k in perm:
        members = groups[order[k]]
        if len(split["test"]) < want:
            split["test"] += members
        elif len(split["val"]) < want:
            split["val"] += members
        else:
            split["train"] += members
    return {k: sorted(v) for k, v in split.items()}


def clip_set(arrays: dict[str, np.ndarray], idx: list[int], split: str) -> ClipSet:
    """The sequences `idx` as a :class:`ClipSet`, zero-padded to the longest, with clip
    labels and the same label at every frame."""
    starts = np.concatenate([[0], np.cumsum(arrays["lengths"])])
    lengths = arrays["lengths"][idx]
    T = int(lengths.max())
    frames = np.zeros((len(idx), T, *arrays["frames"].shape[1:]), dtype=np.uint8)
    frame_labels = np.full((len(idx), T), -1, dtype=np.int64)
    for k, i in enumerate(idx):
        frames[k, : lengths[k]] = arrays["frames"][starts[i] : starts[i + 1]]
        frame_labels[k, : lengths[k]] = arrays["labels"][i]
    names = [f"{split}:{arrays['names'][i]}" for i in idx]
    return ClipSet(frames, lengths.astype(np.int64), names, arrays["labels"][idx].copy(),
                   frame_labels, list(ACTIONS), list(ACTIONS))  # fmt: skip


def wesnoth_actions(log: Log = lambda msg: None) -> dict[str, ClipSet]:
    """The ``wesnoth-actions`` splits (by unit)."""
    arrays = load_wesnoth(fetch_wesnoth(log=log))
    split = unit_split([str(u) for u in arrays["units"]])
    return {k: clip_set(arrays, idx, k) for k, idx in split.items()}
