"""The argument check shared by the activation core and the page."""

from __future__ import annotations


def check_positive(name: str, value: object) -> None:
    """Raise ValueError naming `name` unless `value` is an int >= 1 (a bool is not)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"Argument `{name}` must be a positive integer, got {value!r}")
