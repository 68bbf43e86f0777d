"""wesnoth-actions: sprite names become labelled sequences by the stated rules, frames in
the order of their numbers, and the split keeps every unit on one side."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from test_images import deb, member, needs_dpkg

from rnnkit import data as datasets
from rnnkit.data import fetch, wesnoth
from rnnkit.data.fetch import ChecksumError


def test_names_give_the_unit_the_action_and_the_frame():
    assert wesnoth.parse_frame_name("drakes/burner-fire-s-3.png") == ("drakes", "burner-fire-s", 3)
    assert wesnoth.parse_frame_name("drakes/burner-fire12.png") == ("drakes", "burner-fire", 12)
    assert wesnoth.parse_frame_name("orcs/firetrooper_flame2.png") == (
        "orcs", "firetrooper_flame", 2)  # fmt: skip
    assert wesnoth.parse_frame_name("drakes/burner.png") is None
    assert wesnoth.parse_frame_name("drakes/burner-fly-2-upstroke.png") is None
    assert wesnoth.sequence_action("burner+female-fire-s") == ("burner", "ranged")
    assert wesnoth.sequence_action("troll-hero-attack-ne") == ("troll", "attack")
    assert wesnoth.sequence_action("spearman-idle2") == ("spearman", "idle")
    assert wesnoth.sequence_action("white-cleric-mace") == ("white", "attack")
    assert wesnoth.sequence_action("bone-shooter-bob") == ("bone", "idle")
    assert wesnoth.sequence_action("wose-die-fall") == ("wose", "die")
    assert wesnoth.sequence_action("sky-takeoff") == ("sky", "move")
    assert wesnoth.sequence_action("fire-impact") == ("fire", None)  # not an action: dropped
    assert wesnoth.sequence_action("burner") == ("burner", None)


def test_the_split_keeps_each_unit_on_one_side_and_holds_out_the_stated_share():
    rng = np.random.default_rng(0)
    units = [f"race/u{int(k)}" for k in rng.integers(0, 60, 400)]
    split = wesnoth.unit_split(units)
    seen = [set(units[i] for i in split[k]) for k in ("train", "val", "test")]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert sorted(split["train"] + split["val"] + split["test"]) == list(range(400))
    biggest = max(units.count(u) for u in set(units))
    for k in ("val", "test"):  # at least 15%, overshooting by less than one unit
        assert 0.15 * 400 <= len(split[k]) < 0.15 * 400 + biggest
    assert split == wesnoth.unit_split(units)  # fixed


def png(colour: tuple[int, int, int], size: int = 72) -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", (size, size), (*colour, 255)).save(buf, format="PNG")
    return buf.getvalue()


def sprite_deb(path):
    where = "./" + wesnoth.UNITS_DIR
    files = {
        # frame n is drawn in grey level 20 n, so the order can be read back
        **{f"drakes/burner-fire-s-{n}.png": png((20 * n,) * 3) for n in range(1, 12)},
        **{f"drakes/burner+female-melee{n}.png": png((20 * n,) * 3) for n in range(1, 4)},
        **{f"orcs/grunt-die-{n}.png": png((20 * n,) * 3, size=144) for n in range(1, 4)},
        **{f"orcs/grunt-idle-{n}.png": png((0, 0, 255)) for n in range(1, 3)},  # too short
        **{f"orcs/grunt-impact-{n}.png": png((0, 0, 255)) for n in range(1, 5)},  # no action
        "orcs/grunt.png": png((0, 0, 255)),
        **{f"undead/ghost-s-attack-{n}.png": png((20 * n,) * 3) for n in range(1, 4)},
    }
    return deb(path, [member(where + name, data) for name, data in files.items()])


@needs_dpkg
def test_sequences_are_read_from_the_deb_in_frame_order_checked_and_cached(tmp_path, monkeypatch):
    arrays = wesnoth.prepare_wesnoth(sprite_deb(tmp_path / "w.deb"))
    assert arrays["names"].tolist() == [
        "drakes/burner+female-melee", "drakes/burner-fire-s", "orcs/grunt-die",
        "undead/ghost-s-attack"]  # fmt: skip
    assert arrays["units"].tolist() == [
        "drakes/burner", "drakes/burner", "orcs/grunt", "undead/ghost"]  # fmt: skip
    actions = list(wesnoth.ACTIONS)
    assert [actions[i] for i in arrays["labels"]] == ["attack", "ranged", "die", "attack"]
    assert arrays["lengths"].tolist() == [3, 11, 3, 3]
    assert arrays["frames"].shape == (20, 72, 72, 3)  # the 144 px sprite scaled to fit
    greys = arrays["frames"][:, 36, 36, 0].tolist()
    assert greys == [20, 40, 60] + [20 * n for n in range(1, 12)] + [20, 40, 60] * 2  # 10 after 9

    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "cache"))
    crafted = sprite_deb(tmp_path / "w2.deb")
    monkeypatch.setattr(fetch, "download_package", lambda package, workdir: crafted)
    with pytest.raises(ChecksumError, match="wesnoth-1.16-data"):
        wesnoth.fetch_wesnoth()
    assert not wesnoth.wesnoth_path().exists()  # nothing half-made cached
    monkeypatch.setattr(wesnoth, "WESNOTH_COUNT", 4)
    monkeypatch.setattr(wesnoth, "WESNOTH_SHA256", wesnoth.text_sha256(arrays))
    monkeypatch.setattr(wesnoth, "SPLIT_FRACTION", 0.2)  # one unit each
    splits = datasets.get("wesnoth-actions", "video").splits()
    assert sorted(len(s) for s in splits.values()) == [1, 1, 2]
    test = splits["test"]
    assert test.clip_names == actions and test.frame_names == actions
    for s in splits.values():  # the clip's label at each of its frames, none after
        for k in range(len(s)):
            n = s.lengths[k]
            assert (s.frame_labels[k, :n] == s.clip_labels[k]).all()
            assert (s.frame_labels[k, n:] == -1).all() and not s.frames[k, n:].any()
