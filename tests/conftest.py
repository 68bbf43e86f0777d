"""Shared by the tests in every folder: tests/ on the import path, for the toy data
sets in seqtoys.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
