"""Synthetic long-range problems, generated from a seed in any length T.

The problems on which plain recurrent networks are seen to forget (and the fixes seen to
help), as the papers define them:

* **adding** (Hochreiter and Schmidhuber 1997; the form of Le et al. 2015 and Arjovsky et
  al. 2016): T steps of two inputs, a number drawn uniformly from [0, 1] and a marker;
  exactly two markers are 1, one in the first half of the sequence and one in the
  second. The target, read after the last step, is the sum of the two marked numbers.
  Always answering 1 scores a mean squared error of Var(U + U') = 1/6 = 0.167: the
  baseline to beat.
* **copy** (Hochreiter and Schmidhuber 1997; the form of Arjovsky et al. 2016): 10
  symbols drawn from 8, then T - 1 blanks, a delimiter, and 10 more blanks: T + 20
  steps in all; the target is blank at every step but the last 10, which must repeat
  the 10 symbols. The answer "blank, then any of the 8 symbols" scores a cross-entropy
  per step of 10 ln 8 / (T + 20): the baseline.

Symbols of the copy problem: 0 is the blank, 1..8 the data, 9 the delimiter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

COPY_SYMBOLS = 8  # data symbols 1..8
COPY_LENGTH = 10  # symbols to remember
BLANK, DELIMITER = 0, COPY_SYMBOLS + 1
COPY_VOCAB = COPY_SYMBOLS + 2  # blank, 8 symbols, delimiter


def _check_T(T: object, least: int = 1) -> int:
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or least > T:
        raise ValueError(f"Argument `T` must be an integer >= {least}, got {T!r}")
    return int(T)


def _check_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"Argument `n` must be a positive integer, got {n!r}")
    return int(n)


def adding_problem(n: int, T: int, seed: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """`n` sequences of the adding problem: inputs float32 (n, T, 2) (number, marker)
    and targets float32 (n,), the sum of the two marked numbers. T >= 2. `seed`: what
    ``numpy.random.default_rng`` takes (an int or a sequence of ints)."""
    n, T = _check_n(n), _check_T(T, 2)
    rng = np.random.default_rng(seed)
    x = np.zeros((n, T, 2), dtype=np.float32)
    x[:, :, 0] = rng.uniform(0.0, 1.0, (n, T))
    half = T // 2
    first = rng.integers(0, half, n)  # in the first half
    second = rng.integers(half, T, n)  # in the second
    rows = np.arange(n)
    x[rows, first, 1] = 1.0
    x[rows, second, 1] = 1.0
    y = x[rows, first, 0] + x[rows, second, 0]
    return x, y.astype(np.float32)


def copy_problem(n: int, T: int, seed: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """`n` sequences of the copy problem with a gap of `T`: inputs int64 (n, T + 20) and
    targets int64 (n, T + 20) of the symbols described in the module docstring."""
    n, T = _check_n(n), _check_T(T)
    rng = np.random.default_rng(seed)
    L = T + 2 * COPY_LENGTH
    data = rng.integers(1, COPY_SYMBOLS + 1, (n, COPY_LENGTH))
    x = np.full((n, L), BLANK, dtype=np.int64)
    y = np.full((n, L), BLANK, dtype=np.int64)
    x[:, :COPY_LENGTH] = data
    x[:, COPY_LENGTH + T - 1] = DELIMITER
    y[:, -COPY_LENGTH:] = data
    return x, y


def adding_baseline() -> float:
    """The mean squared error of always answering 1: Var(U + U') = 2/12."""
    return 1.0 / 6.0


def copy_baseline(T: int) -> float:
    """The cross-entropy per step (nats) of blanks, then a uniform guess over the 8
    symbols for the last 10 steps: 10 ln 8 / (T + 20)."""
    T = _check_T(T)
    return COPY_LENGTH * math.log(COPY_SYMBOLS) / (T + 2 * COPY_LENGTH)
