"""The synthetic long-range problems are laid out as the papers define them, fixed by
their seed, and their baselines are what the stated answers score."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnnkit.data import longrange


def test_the_adding_problem_marks_one_number_in_each_half_and_sums_them():
    x, y = longrange.adding_problem(500, 21, seed=3)
    assert x.shape == (500, 21, 2) and y.shape == (500,) and x.dtype == np.float32
    marks = x[:, :, 1]
    assert (marks.sum(1) == 2).all() and set(np.unique(marks)) == {0.0, 1.0}
    halves = np.array([np.flatnonzero(m) for m in marks])  # T // 2 = 10: [0, 10), [10, 21)
    assert (halves[:, 0] < 10).all() and (halves[:, 1] >= 10).all()
    np.testing.assert_allclose(y, (x[:, :, 0] * marks).sum(1), rtol=1e-6)
    assert ((x[:, :, 0] >= 0) & (x[:, :, 0] < 1)).all()
    again = longrange.adding_problem(500, 21, seed=3)
    assert np.array_equal(again[0], x) and not np.array_equal(
        longrange.adding_problem(500, 21, seed=4)[0], x)  # fmt: skip
    # the baseline: always 1 scores Var(U + U') = 1/6
    _, many = longrange.adding_problem(200_000, 10, seed=0)
    assert abs(((many - 1.0) ** 2).mean() - longrange.adding_baseline()) < 0.002


def test_the_copy_problem_repeats_ten_symbols_after_the_gap_and_its_baseline_is_exact():
    T = 7
    x, y = longrange.copy_problem(300, T, seed=[0, 5])
    L = T + 20
    assert x.shape == y.shape == (300, L)
    data = x[:, :10]
    assert ((data >= 1) & (data <= 8)).all()
    assert (x[:, 10 : 10 + T - 1] == longrange.BLANK).all()
    assert (x[:, 10 + T - 1] == longrange.DELIMITER).all()
    assert (x[:, 10 + T :] == longrange.BLANK).all()
    assert (y[:, :-10] == longrange.BLANK).all() and np.array_equal(y[:, -10:], data)
    # the baseline answer: certain blanks, then 1/8 on each data symbol
    p = np.zeros((L, longrange.COPY_VOCAB))
    p[:-10, longrange.BLANK] = 1.0
    p[-10:, 1:9] = 1 / 8
    ce = -np.log(p[np.arange(L)[None, :], y]).mean()
    assert math.isclose(ce, longrange.copy_baseline(T), rel_tol=1e-12)
    assert math.isclose(longrange.copy_baseline(100), 10 * math.log(8) / 120)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_a_bad_length_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="Argument `T` must be an integer"):
        longrange.copy_problem(4, bad, seed=0)
    with pytest.raises(ValueError, match="Argument `T`"):
        longrange.adding_problem(4, 1, seed=0)  # two halves need two steps
