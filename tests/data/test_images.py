"""Images with captions: image files, COCO caption files, the digit-scene grammar and
generator, and the tuxpaint and emoji packages read from small crafted ones.

Offline: crafted packages stand in for the downloads. The tests at the end read the
real sets only where they are already cached (``rnnkit data get NAME``), else skip.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rnnkit import data as datasets
from rnnkit.data import digits, fetch, images
from rnnkit.data.fetch import ChecksumError
from rnnkit.data.images import (
    CAPTION_SETS,
    CaptionSplit,
    MissingFileError,
    caption_splits,
    decode_image,
    describe_scene,
    load_image,
    make_scenes,
    parse_scene,
    read_coco,
)

WHITE = [255, 255, 255]


def png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def svg(width: str, height: str, body: str, view_box: str | None = None) -> str:
    box = f' viewBox="{view_box}"' if view_box else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{width}" height="{height}"{box}>{body}</svg>\n'
    )


# -- image files --------------------------------------------------------------------------


def test_a_png_with_alpha_is_composited_on_white_in_rgb_and_grey(tmp_path):
    rgba = np.zeros((10, 20, 4), dtype=np.uint8)  # (H, W, RGBA): transparent black
    rgba[:, :10] = [255, 0, 0, 255]  # the left half opaque red
    rgba[0, 15] = [0, 0, 255, 128]  # half-transparent blue
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    assert x.shape == (10, 20, 3) and x.dtype == np.uint8
    assert x[5, 3].tolist() == [255, 0, 0]
    assert x[5, 15].tolist() == WHITE  # transparent: white, not the black underneath
    assert x[0, 15].tolist() == pytest.approx([127, 127, 255], abs=1)
    grey = load_image(tmp_path / "a.png", channels=1)
    assert grey.shape == (10, 20, 1) and grey[5, 15, 0] == 255 and grey[5, 3, 0] == 76


def test_a_jpeg_is_fitted_keeping_its_aspect_and_padded_white(tmp_path):
    Image.new("RGB", (40, 20), (0, 128, 0)).save(tmp_path / "wide.jpg", quality=95)
    x = load_image(tmp_path / "wide.jpg", (32, 32))
    assert x.shape == (32, 32, 3)
    # 40 x 20 -> 32 x 16, centred: rows 8-23 green, 8 white rows above and below
    assert (x[:7] == 255).all() and (x[25:] == 255).all()
    assert np.abs(x[9:23].astype(int) - [0, 128, 0]).max() <= 6
    Image.new("RGB", (10, 30), (0, 0, 200)).save(tmp_path / "tall.png")
    y = load_image(tmp_path / "tall.png", (30, 40))
    assert (y[:, :14] == 255).all() and (y[:, 26:] == 255).all()  # 10 wide, centred
    assert (y[:, 16:24] == [0, 0, 200]).all()
    assert load_image(tmp_path / "tall.png", (60, 20)).shape == (60, 20, 3)  # scaled up


def test_gif_webp_and_bmp_are_read(tmp_path):
    for ext, fmt in (("gif", "GIF"), ("webp", "WEBP"), ("bmp", "BMP")):
        (tmp_path / f"x.{ext}").write_bytes(png_bytes(Image.new("RGB", (8, 6), (200, 0, 0)), fmt))
        x = load_image(tmp_path / f"x.{ext}")
        assert x.shape == (6, 8, 3) and abs(int(x[3, 4, 0]) - 200) <= 4, ext


def test_an_svg_is_rendered_at_the_size_asked_for_with_pt_units(tmp_path):
    body = '<rect x="0" y="0" width="50" height="50" fill="#ff0000"/>'
    (tmp_path / "px.svg").write_text(svg("100", "50", body))
    x = load_image(tmp_path / "px.svg")
    assert x.shape == (50, 100, 3)
    assert x[25, 20].tolist() == [255, 0, 0] and x[25, 80].tolist() == WHITE
    # sizes in pt (resvg-py would make them zero without a dpi) and a viewBox
    (tmp_path / "pt.svg").write_text(svg("75pt", "37.5pt", body, "0 0 100 50"))
    y = load_image(tmp_path / "pt.svg", (40, 40))
    assert y.shape == (40, 40, 3)
    assert (y[:9] == 255).all() and (y[31:] == 255).all()  # 40 x 20, centred
    assert y[20, 10].tolist() == [255, 0, 0] and y[20, 30].tolist() == WHITE


def test_cropping_makes_a_picture_with_wide_margins_fill_the_frame():
    body = '<rect x="80" y="90" width="40" height="20" fill="#00ff00"/>'
    data = svg("200", "200", body).encode()
    whole = decode_image(data, "m.svg", (32, 32))
    assert whole[16, 16].tolist() == [0, 255, 0] and whole[2, 2].tolist() == WHITE
    cropped = decode_image(data, "m.svg", (32, 64), crop=True)
    green = np.abs(cropped.astype(int) - [0, 255, 0]).max(axis=-1)
    assert (green[2:30, 3:61] <= 8).all()  # 40 x 20 fills 64 x 32, drawn large, not blown up
    rgba = np.zeros((50, 50, 4), dtype=np.uint8)
    rgba[20:30, 10:20] = [0, 0, 255, 255]
    png = png_bytes(Image.fromarray(rgba, "RGBA"))
    assert (decode_image(png, "m.png", (8, 8), crop=True) == [0, 0, 255]).all()


def test_an_svg_reads_linked_files_beside_it_but_a_package_member_reads_none(tmp_path):
    Image.new("RGB", (4, 4), (255, 0, 0)).save(tmp_path / "red.png")
    body = '<image x="0" y="0" width="20" height="20" xlink:href="red.png"/>'
    (tmp_path / "linked.svg").write_text(svg("20", "20", body))
    assert load_image(tmp_path / "linked.svg")[10, 10].tolist() == [255, 0, 0]
    absolute = svg("20", "20", body.replace("red.png", str(tmp_path / "red.png")))
    for text in (svg("20", "20", body), absolute):  # from memory: no file is read
        assert decode_image(text.encode(), "member.svg")[10, 10].tolist() == WHITE


def test_files_that_are_no_images_are_one_line_errors_naming_the_path(tmp_path):
    (tmp_path / "x.png").write_text("hello, I am a text file\n")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "cut.png").write_bytes(png_bytes(Image.new("RGB", (50, 50), (1, 2, 3)))[:60])
    (tmp_path / "bad.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10"')
    (tmp_path / "notes.txt").write_text("<html><body>no picture</body></html>\n")
    cases = {
        "x.png": r"Argument `image`: .*x\.png is not an image \(not a PNG, JPEG",
        "empty.png": r"Argument `image`: .*empty\.png is empty",
        "cut.png": r"Argument `image`: .*cut\.png is not a readable image",
        "bad.svg": r"Argument `image`: .*bad\.svg is not an image \(SVG: ",
        "notes.txt": r"Argument `image`: .*notes\.txt is not an image",
    }
    for name, pattern in cases.items():
        with pytest.raises(ValueError, match=pattern) as err:
            load_image(tmp_path / name, (8, 8))
        assert "\n" not in str(err.value), name
    with pytest.raises(FileNotFoundError, match=r"Argument `image`: no such file: .*gone\.png"):
        load_image(tmp_path / "gone.png")
    with pytest.raises(ValueError, match=r"is a folder"):
        load_image(tmp_path)
    with pytest.raises(ValueError, match=r"Argument `photo`: .*x\.png"):
        load_image(tmp_path / "x.png", argument="photo")
    (tmp_path / "ok.png").write_bytes(png_bytes(Image.new("RGB", (4, 4))))
    with pytest.raises(ValueError, match=r"Argument `size`.*\(0, 4\)"):
        load_image(tmp_path / "ok.png", (0, 4))
    with pytest.raises(ValueError, match=r"Argument `channels`.*2"):
        load_image(tmp_path / "ok.png", channels=2)


def test_a_caption_split_checks_its_parts_and_picks_subsets():
    x = np.arange(4 * 2 * 3 * 3, dtype=np.uint8).reshape(4, 2, 3, 3)
    split = CaptionSplit(x, [["a"], ["b", "bb"], ["c"], ["d"]], ["0", "1", "2", "3"])
    assert len(split) == 4
    sub = split.subset([3, 1])
    assert sub.names == ["3", "1"] and sub.captions == [["d"], ["b", "bb"]]
    assert (sub.images == x[[3, 1]]).all()
    assert len(split.subset([])) == 0
    with pytest.raises(ValueError, match="`captions`"):
        CaptionSplit(x, [["a"]] * 3, ["0", "1", "2"])
    with pytest.raises(ValueError, match=r"image 1 \(1\) has no caption"):
        CaptionSplit(x, [["a"], [], ["c"], ["d"]], ["0", "1", "2", "3"])
    with pytest.raises(ValueError, match="uint8"):
        CaptionSplit(x.astype(np.float32), [["a"]] * 4, list("0123"))


# -- COCO caption files -------------------------------------------------------------------

COLOURS = {"a.png": (255, 0, 0), "b.jpg": (0, 0, 255), "c.png": (0, 255, 0)}


def coco(tmp_path: Path, doc: object | None = None) -> tuple[Path, Path]:
    folder = tmp_path / "imgs"
    folder.mkdir(exist_ok=True)
    for name, colour in COLOURS.items():
        Image.new("RGB", (12, 8), colour).save(folder / name, quality=95)
    if doc is None:
        doc = {
            "info": {"description": "a tiny set"},
            "images": [
                {"id": 7, "file_name": "a.png", "width": 12, "height": 8},
                {"id": 3, "file_name": "b.jpg"},
                {"id": 5, "file_name": "c.png"},
            ],
            "annotations": [
                {"id": 1, "image_id": 5, "caption": "A green\nrectangle. "},
                {"id": 2, "image_id": 7, "caption": "A red box."},
                {"id": 3, "image_id": 3, "caption": "Blue."},
                {"id": 4, "image_id": 7, "caption": "Something red."},
                {"id": 5, "image_id": 5, "caption": "Green."},
            ],
        }
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return folder, path


def test_coco_captions_are_read_per_image_in_order(tmp_path):
    folder, path = coco(tmp_path)
    split = read_coco(folder, path, (16, 16))
    assert split.captions == [
        ["A red box.", "Something red."],
        ["Blue."],
        ["A green rectangle.", "Green."],
    ]
    assert split.names == [str(folder / n) for n in ("a.png", "b.jpg", "c.png")]
    assert split.images.shape == (3, 16, 16, 3)
    for img, colour in zip(split.images, COLOURS.values()):
        assert np.abs(img[8, 8].astype(int) - colour).max() <= 6
        assert img[1, 8].tolist() == WHITE  # 12 x 8 fitted into 16 x 16: padded


def _broken(doc: dict, edit: str) -> dict | str:
    doc = json.loads(json.dumps(doc))
    if edit == "not json":
        return '{"images": [}'
    if edit == "a list":
        return json.dumps([1, 2])
    if edit == "no annotations":
        del doc["annotations"]
    elif edit == "no file_name":
        del doc["images"][1]["file_name"]
    elif edit == "unknown image_id":
        doc["annotations"][2]["image_id"] = 99
    elif edit == "missing file":
        doc["images"][2]["file_name"] = "d.png"
    elif edit == "no caption":
        doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] != 3]
    elif edit == "repeated id":
        doc["images"][2]["id"] = 7
    elif edit == "outside":
        doc["images"][0]["file_name"] = "../a.png"
    elif edit == "caption not text":
        doc["annotations"][0]["caption"] = ["A", "list"]
    return doc


@pytest.mark.parametrize(
    "edit, message",
    [
        ("not json", r"captions\.json is not a JSON file \(Expecting value: line 1"),
        ("a list", r"captions\.json is not in the COCO captions schema.*a JSON list"),
        ("no annotations", r"captions\.json is not in the COCO captions schema.*'annotations'"),
        ("no file_name", r"captions\.json: images\[1\] needs an 'id' .* and a 'file_name'"),
        ("unknown image_id", r"captions\.json: annotations\[2\] has image_id 99, which no"),
        ("missing file", r"captions\.json: images\[2\] file_name 'd\.png': no such file in"),
        ("no caption", r"captions\.json: images\[1\] \(b\.jpg, id 3\) has no caption"),
        ("repeated id", r"captions\.json: images\[2\] repeats the id 7 of images\[0\]"),
        ("outside", r"captions\.json: images\[0\] file_name '\.\./a\.png' points outside"),
        ("caption not text", r"captions\.json: annotations\[0\] needs an 'image_id' and a"),
    ],
)
def test_a_malformed_coco_file_is_a_one_line_error_naming_it(tmp_path, edit, message):
    _, good = coco(tmp_path)
    folder, path = coco(tmp_path, _broken(json.loads(good.read_text()), edit))
    with pytest.raises(ValueError, match=message) as err:
        read_coco(folder, path, (8, 8))
    assert "\n" not in str(err.value)


def test_a_missing_caption_file_or_folder_is_named(tmp_path):
    folder, path = coco(tmp_path)
    with pytest.raises(MissingFileError, match=r"Argument `captions`: no such file: .*nope\.json"):
        read_coco(folder, tmp_path / "nope.json", (8, 8))
    with pytest.raises(ValueError, match=r"Argument `images`: no such folder: .*nofolder"):
        read_coco(tmp_path / "nofolder", path, (8, 8))
    assert issubclass(MissingFileError, FileNotFoundError)


def test_a_coco_image_that_is_no_image_is_named(tmp_path):
    folder, path = coco(tmp_path)
    (folder / "b.jpg").write_text("not a picture")
    with pytest.raises(ValueError, match=r"Argument `images`: .*b\.jpg is not an image"):
        read_coco(folder, path, (8, 8))


# -- digit scenes -------------------------------------------------------------------------


def test_the_scene_grammar_reads_back_what_it_writes():
    assert describe_scene([3, 7], ["large", "small"]) == "a large 3 to the left of a small 7"
    assert (
        describe_scene([3, 7, 1], ["large", "small", "large"])
        == "a large 3 to the left of a small 7 to the left of a large 1"
    )
    rng = np.random.default_rng(0)
    for _ in range(200):
        k = int(rng.integers(1, 6))
        ds = [int(d) for d in rng.integers(0, 10, k)]
        ss = [["small", "large"][int(b)] for b in rng.integers(0, 2, k)]
        assert parse_scene(describe_scene(ds, ss)) == list(zip(ds, ss))
    assert parse_scene("  a small 0   to the left of a large 9 ") == [(0, "small"), (9, "large")]
    for bad in [
        "",
        "a big 3 to the left of a small 7",
        "a large 10 to the left of a small 7",
        "a large 3 to the left of",
        "a large 3 to the right of a small 7",
        "A large 3 to the left of a small 7",
        "a large 3 to the left of a small 7.",
        "a large 3 and a small 7",
        None,
    ]:
        assert parse_scene(bad) is None, bad
    with pytest.raises(ValueError, match="`sizes`"):
        describe_scene([1, 2], ["small"])
    with pytest.raises(ValueError, match="`digits`.*12"):
        describe_scene([12], ["small"])
    with pytest.raises(ValueError, match="`sizes`.*'huge'"):
        describe_scene([1], ["huge"])


def constant_digits(values: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """28x28 digits of one grey level each: digit d at level 20 (d + 1), so a scene's
    pixels say which digit stands where, also after shrinking (a box filter)."""
    labels = np.array(values, dtype=np.int64)
    imgs = np.repeat((20 * (labels + 1)).astype(np.uint8)[:, None, None], 28, 1)
    return np.repeat(imgs, 28, 2), labels


def test_scene_digits_stand_where_their_caption_says():
    pool, labels = constant_digits([d for d in range(10) for _ in range(3)])
    scenes, captions, boxes = make_scenes(pool, labels, 60, seed=5)
    assert scenes.shape == (60, 56, 112, 1) and scenes.dtype == np.uint8
    counts, sizes_seen = set(), set()
    for scene, caption, box in zip(scenes[:, :, :, 0], captions, boxes):
        said = parse_scene(caption)
        assert said is not None and 2 <= len(said) <= 4 and len(box) == len(said)
        counts.add(len(said))
        covered = np.zeros_like(scene, dtype=bool)
        for j, ((digit, size), (left, top, right, bottom)) in enumerate(zip(said, box)):
            sizes_seen.add(size)
            side = images.DIGIT_SIZES[size]
            assert right - left == side and bottom - top == side
            assert left >= 0 and right <= 112 and top >= 0 and bottom <= 56
            if j:
                assert box[j - 1][2] <= left  # left to right, no horizontal overlap
            assert (scene[top:bottom, left:right] == 20 * (digit + 1)).all()
            covered[top:bottom, left:right] = True
        assert (scene[~covered] == 0).all()  # black outside the digits
    assert counts == {2, 3, 4} and sizes_seen == {"small", "large"}
    again = make_scenes(pool, labels, 60, seed=5)
    assert (again[0] == scenes).all() and again[1] == captions  # fixed by the seed
    assert make_scenes(pool, labels, 60, seed=6)[1] != captions


def fake_mnist(monkeypatch):
    """Train digits at level 60, the test digits at 100 (even places) and 200 (odd)."""
    train = (np.full((40, 28, 28), 60, np.uint8), np.arange(40) % 10)
    test = (np.zeros((20, 28, 28), np.uint8), np.arange(20) % 10)
    test[0][0::2], test[0][1::2] = 100, 200
    monkeypatch.setattr(digits, "fetch_mnist", lambda log=None: Path("mnist.npz"))
    monkeypatch.setattr(digits, "load_mnist", lambda path: {"train": train, "test": test})
    for split, n in (("train", 30), ("val", 8), ("test", 6)):
        monkeypatch.setitem(images.SCENE_COUNTS, split, n)
    return train, test


def test_digit_scenes_are_made_once_cached_and_split_by_digit(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "cache"))
    train, test = fake_mnist(monkeypatch)
    whole = images.generate_scenes(train, test)
    with pytest.raises(ChecksumError, match="digit-scenes"):
        caption_splits("digit-scenes")  # not the pinned scenes
    assert not (tmp_path / "cache" / "digit-scenes.npz").exists()
    monkeypatch.setattr(images, "SCENES_SHA256", images.text_sha256(whole))
    splits = datasets.get("digit-scenes", "caption").splits()
    assert {s: len(v) for s, v in splits.items()} == {"train": 30, "val": 8, "test": 6}
    assert splits["val"].names[0] == "digit-scenes/val[0]"
    for split, level in (("train", 60), ("val", 100), ("test", 200)):
        assert set(np.unique(splits[split].images)) == {0, level}, split
    assert all(parse_scene(c[0]) for s in splits.values() for c in s.captions)
    assert (tmp_path / "cache" / "digit-scenes.npz").is_file()

    def never(*args):
        raise AssertionError("generated again")

    monkeypatch.setattr(images, "generate_scenes", never)
    again = caption_splits("digit-scenes")
    assert again["test"].captions == splits["test"].captions


def test_the_fixed_split_is_a_tenth_each_disjoint_and_fixed():
    n = 701
    whole = CaptionSplit(
        np.zeros((n, 1, 1, 1), np.uint8), [[str(i)] for i in range(n)], [str(i) for i in range(n)]
    )
    splits = images.fixed_split(whole)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [561, 70, 70]
    names = [set(splits[s].names) for s in ("train", "val", "test")]
    assert set.union(*names) == set(whole.names) and sum(map(len, names)) == n
    assert splits["test"].names == sorted(splits["test"].names, key=int)  # in set order
    assert images.fixed_split(whole)["test"].names == splits["test"].names
    emoji = images.fixed_split(whole.subset(np.arange(n).repeat(3)[:1911]))
    assert [len(emoji[s]) for s in ("train", "val", "test")] == [1529, 191, 191]


def test_the_registry_lists_the_caption_sets():
    assert datasets.names("caption") == ["tuxpaint", "emoji", "digit-scenes"]
    assert "caption" in datasets.TASKS
    table = datasets.table()
    assert "debian: tuxpaint-stamps-default==2022.06.04-1" in table
    assert "npm: emoji-datasource-google==16.0.0" in table
    with pytest.raises(ValueError, match="unknown data set 'mnist' for caption"):
        datasets.get("mnist", "caption")
    with pytest.raises(ValueError, match="unknown caption set 'x'"):
        caption_splits("x")


# -- the packages, crafted ----------------------------------------------------------------


def member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def symlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


def tar_bytes(members: list, mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def deb(path: Path, members: list) -> Path:
    """A .deb (an ar archive) whose data.tar.gz holds `members`."""
    control = tar_bytes([member("./control", b"Package: x\nVersion: 1\nArchitecture: all\n")])

    def entry(name: str, data: bytes) -> bytes:
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        return header + data + b"\n" * (len(data) % 2)

    path.write_bytes(
        b"!<arch>\n"
        + entry("debian-binary", b"2.0\n")
        + entry("control.tar.gz", control)
        + entry("data.tar.gz", tar_bytes(members))
    )
    return path


def picture(colour: tuple[int, int, int], margin: int = 0) -> bytes:
    rgba = np.zeros((20 + 2 * margin, 20 + 2 * margin, 4), dtype=np.uint8)
    rgba[margin : margin + 20, margin : margin + 20] = [*colour, 255]
    return png_bytes(Image.fromarray(rgba, "RGBA"))


def tuxpaint_deb(path: Path) -> Path:
    stamps = "./usr/share/tuxpaint/stamps/"
    circle = svg("100pt", "100pt", '<circle cx="50" cy="50" r="10" fill="#00ff00"/>', "0 0 100 100")
    return deb(
        path,
        [
            member(stamps + "animals/kangaroo.png", picture((255, 0, 0), margin=15)),
            member(
                stamps + "animals/kangaroo.txt", "A red kangaroo.\nde.utf8=Ein Känguru.\n".encode()
            ),
            member(stamps + "animals/kangaroo_mirror.png", picture((0, 0, 0))),
            member(stamps + "animals/kangaroo_mirror.txt", b"A mirrored kangaroo.\n"),
            member(stamps + "food/apple.png", picture((0, 0, 255))),
            member(stamps + "food/apple.svg", circle.encode()),
            member(stamps + "food/apple.txt", b"An  apple.\nfr.utf8=Une pomme.\n"),
            member(stamps + "animals/nodescription.png", picture((0, 0, 0))),
            member(stamps + "seasonal/gift.txt", b"A gift.\n"),
            member(stamps + "symbols/alphabets/english/a.png", picture((0, 0, 0))),
            member(stamps + "symbols/alphabets/english/a.txt", b"The letter A.\n"),
            symlink(stamps + "animals/cat.png", "/etc/passwd"),
            member(stamps + "animals/cat.txt", b"A cat.\n"),
            member("../escape.png", picture((0, 0, 0))),
            member(stamps + "animals/sound.ogg", b"OggS"),
        ],
    )


needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")


@needs_dpkg
def test_the_tuxpaint_stamps_are_read_from_the_deb_by_their_rules(tmp_path):
    whole = images.prepare_tuxpaint(tuxpaint_deb(tmp_path / "t.deb"), size=(24, 24))
    assert whole.names == ["tuxpaint/animals/kangaroo.png", "tuxpaint/food/apple.svg"]
    assert whole.captions == [["A red kangaroo."], ["An apple."]]
    assert whole.images.shape == (2, 24, 24, 3)
    assert (whole.images[0] == [255, 0, 0]).all()  # cropped: its margin is gone
    assert whole.images[1][12, 12].tolist() == [0, 255, 0]  # the SVG, not the PNG twin
    assert whole.images[1][1, 1].tolist() == WHITE  # a circle: its corners are white


@needs_dpkg
def test_the_tuxpaint_set_is_checked_cached_and_split(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "cache"))
    crafted = tuxpaint_deb(tmp_path / "t.deb")
    monkeypatch.setattr(fetch, "download_package", lambda package, workdir: crafted)
    with pytest.raises(ChecksumError, match="tuxpaint"):
        images.fetch_tuxpaint()
    assert not (tmp_path / "cache" / "tuxpaint.npz").exists()  # nothing half-made cached
    whole = images.prepare_tuxpaint(crafted)
    monkeypatch.setattr(images, "TUXPAINT_COUNT", 2)
    monkeypatch.setattr(images, "TUXPAINT_SHA256", images.text_sha256(whole))
    path = images.fetch_tuxpaint()
    assert path == CAPTION_SETS["tuxpaint"].path and datasets.REGISTRY["tuxpaint"].is_cached()
    loaded = images.load_npz(path, images.TUXPAINT_SHA256)
    assert loaded.names == whole.names and (loaded.images == whole.images).all()
    assert loaded.images.shape == (2, 224, 224, 3)
    with np.load(path, allow_pickle=False) as f:  # no object arrays
        assert sorted(f.files) == ["captions", "images", "names"]
    with pytest.raises(ValueError, match="cannot hold out"):  # two stamps: too few to split
        caption_splits("tuxpaint")


EMOJI = [
    ("GRINNING FACE", ["grinning"], "1f600.png", True),
    (None, ["man_in_tuxedo"], "1f935.png", True),
    ("NO GOOGLE IMAGE", ["nope"], "1f601.png", False),
    *[(f"TEST {i}", [f"t{i}"], f"2{i:03x}.png", True) for i in range(18)],
]


def emoji_tgz(path: Path, *, skip: str | None = None) -> Path:
    table = []
    for name, short, image, google in EMOJI:
        entry = {"name": name, "short_names": short, "image": image, "has_img_google": google}
        if image == "1f600.png":
            entry["skin_variations"] = {
                "1F3FB": {
                    "unified": "1F600-1F3FB",
                    "image": "1f600-1f3fb.png",
                    "has_img_google": True,
                }
            }
        table.append(entry)
    folder = "package/img/google/64/"
    members = [member("../escape.png", picture((0, 0, 0))), symlink(folder + "1f601.png", "/")]
    members.append(member("package/emoji.json", json.dumps(table).encode()))
    for i, (_, _, image, _) in enumerate(reversed(EMOJI)):  # not in the table's order
        if image not in (skip, "1f601.png"):
            members.append(member(folder + image, picture((250, 200, i), margin=2)))
    members.append(member(folder + "1f600-1f3fb.png", picture((0, 0, 0))))
    path.write_bytes(tar_bytes(members))
    return path


def test_the_emoji_are_named_by_unicode_and_read_from_the_tarball(tmp_path):
    whole = images.prepare_emoji(emoji_tgz(tmp_path / "e.tgz"), size=(24, 24))
    assert len(whole) == 20  # no image for Google, no skin tones
    assert whole.captions[:3] == [["grinning face"], ["man in tuxedo"], ["test 0"]]
    assert whole.names[:2] == ["emoji/1f600.png", "emoji/1f935.png"]
    assert whole.images.shape == (20, 24, 24, 3)
    assert whole.images[0][1, 1].tolist() == WHITE  # transparent margin: white
    assert whole.images[0][12, 12].tolist()[:2] == [250, 200]
    assert whole.images[0][12, 12, 2] == len(EMOJI) - 1  # its own picture, not another's
    with pytest.raises(fetch.ArchiveError, match=r"no member 'package/img/google/64/2003\.png'"):
        images.prepare_emoji(emoji_tgz(tmp_path / "m.tgz", skip="2003.png"))


def test_the_emoji_set_is_checked_cached_and_split(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "cache"))
    crafted = emoji_tgz(tmp_path / "e.tgz")
    monkeypatch.setattr(fetch, "download_package", lambda package, workdir: crafted)
    with pytest.raises(ChecksumError, match="emoji"):
        caption_splits("emoji")
    assert not (tmp_path / "cache" / "emoji.npz").exists()
    whole = images.prepare_emoji(crafted)
    monkeypatch.setattr(images, "EMOJI_COUNT", 20)
    monkeypatch.setattr(images, "EMOJI_SHA256", images.text_sha256(whole))
    splits = datasets.get("emoji", "caption").splits()
    assert [len(splits[s]) for s in ("train", "val", "test")] == [16, 2, 2]
    assert splits["train"].images.shape[1:] == (64, 64, 3)
    # a damaged file is refused by its pinned captions
    monkeypatch.setattr(images, "EMOJI_SHA256", "0" * 64)
    with pytest.raises(ChecksumError, match="damaged"):
        caption_splits("emoji")


# -- the real sets, where cached ----------------------------------------------------------


def cached(name: str):
    return pytest.mark.skipif(
        not CAPTION_SETS[name].path.is_file(),
        reason=f"{name} is not cached (`rnnkit data get {name}` fetches it)",
    )


@cached("tuxpaint")
def test_the_real_tuxpaint_stamps():
    splits = caption_splits("tuxpaint")
    assert [len(splits[s]) for s in ("train", "val", "test")] == [561, 70, 70]
    assert splits["test"].images.shape == (70, 224, 224, 3)
    every = {n: c for s in splits.values() for n, c in zip(s.names, s.captions)}
    assert every["tuxpaint/animals/marsupials/kangaroo.png"] == ["A red kangaroo."]
    assert sum(n.endswith(".svg") for n in every) == 236
    assert not any("/symbols/" in n or "_mirror" in n for n in every)


@cached("emoji")
def test_the_real_emoji():
    splits = caption_splits("emoji")
    assert [len(splits[s]) for s in ("train", "val", "test")] == [1529, 191, 191]
    every = {n: c for s in splits.values() for n, c in zip(s.names, s.captions)}
    assert every["emoji/1f600.png"] == ["grinning face"]


@cached("digit-scenes")
def test_the_real_digit_scenes():
    splits = caption_splits("digit-scenes")
    assert [len(splits[s]) for s in ("train", "val", "test")] == [20_000, 1_000, 1_000]
    assert splits["val"].images.shape == (1_000, 56, 112, 1)
    assert all(2 <= len(parse_scene(c[0]) or []) <= 4 for c in splits["test"].captions)
