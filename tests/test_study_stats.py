"""The study statistics against hand-computed values and identities."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from camlens.study import stats

Z95 = 1.959963984540054  # Φ⁻¹(0.975)


def wilson_by_hand(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(360, 810), (496, 810), (1, 2), (7, 9), (9, 9), (0, 1)])
def test_wilson_is_the_score_interval(k: int, n: int) -> None:
    got = stats.wilson(k, n)
    low, high = wilson_by_hand(k, n)
    assert got.estimate == k / n
    assert got.low == pytest.approx(max(0.0, low), abs=1e-12)
    assert got.high == pytest.approx(min(1.0, high), abs=1e-12)


def test_wilson_known_values() -> None:
    # 0 of 10: [0, z²/(n + z²)] = [0, 0.27753]
    got = stats.wilson(0, 10)
    assert got.low == pytest.approx(0.0, abs=1e-12)
    assert got.high == pytest.approx(Z95**2 / (10 + Z95**2), abs=1e-12)
    assert got.high == pytest.approx(0.27753, abs=5e-6)
    # the paper's Guided Backprop accuracy, 360 of 810, by hand: z²/n = 0.0047426, centre
    # 0.446815 / 1.0047426 = 0.444706, half 1.95071 * sqrt(0.00030629) = 0.034140
    gb = stats.wilson(360, 810)
    assert (gb.low, gb.high) == pytest.approx((0.410566, 0.478846), abs=5e-5)
    # 99% interval is wider than the 95% one and both contain the estimate
    assert stats.wilson(360, 810, 0.99).low < gb.low < 360 / 810 < gb.high


@pytest.mark.parametrize("k,n,conf", [(-1, 5, 0.95), (6, 5, 0.95), (0, 0, 0.95),
                                      (1, 5, 1.0), (1, 5, 0.0)])
def test_wilson_refuses_bad_input(k: int, n: int, conf: float) -> None:
    with pytest.raises(ValueError):
        stats.wilson(k, n, conf)


#: The worked example of Fleiss' kappa on Wikipedia ("Fleiss' kappa", Worked example): 10
#: subjects, 14 raters each, 5 categories.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
]


def test_fleiss_kappa_worked_example() -> None:
    # by hand: P_i = (Σ n_ij² - 14) / (14 * 13); Σ_i (Σ_j n_ij² - 14) = 688, so P̄ = 688/1820;
    # column sums 20, 28, 39, 21, 32 of 140: P̄e = (400 + 784 + 1521 + 441 + 1024) / 140²
    p_bar = Fraction(688, 1820)
    p_e = Fraction(20**2 + 28**2 + 39**2 + 21**2 + 32**2, 140**2)
    kappa = (p_bar - p_e) / (1 - p_e)
    assert float(p_bar) == pytest.approx(0.378, abs=5e-4)
    assert float(p_e) == pytest.approx(0.213, abs=5e-4)
    assert stats.fleiss_kappa(FLEISS_TABLE) == pytest.approx(float(kappa), abs=1e-12)
    assert stats.fleiss_kappa(FLEISS_TABLE) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_with_unequal_raters() -> None:
    # P_i = 1, 0, 1 (P̄ = 2/3); p = 3/7, 4/7 (P̄e = 25/49): κ = (2/3 - 25/49) / (24/49) = 23/72
    assert stats.fleiss_kappa([[2, 0], [1, 1], [0, 3]]) == pytest.approx(23 / 72, abs=1e-12)
    # a subject with one rating carries no agreement information: dropped
    assert stats.fleiss_kappa([[2, 0], [1, 1], [0, 3], [1, 0]]) == pytest.approx(23 / 72)


def test_fleiss_kappa_edges() -> None:
    assert stats.fleiss_kappa([[3, 0], [0, 3]]) == pytest.approx(1.0)  # perfect agreement
    assert stats.fleiss_kappa([[3, 0], [3, 0]]) is None  # one category only: 0/0
    assert stats.fleiss_kappa([[1, 0], [0, 1]]) is None  # no subject with two ratings
    # as many agreements as chance predicts: κ = 0 (two raters, each pattern once)
    assert stats.fleiss_kappa([[2, 0], [0, 2], [1, 1], [1, 1]]) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        stats.fleiss_kappa([1, 2, 3])
    with pytest.raises(ValueError):
        stats.fleiss_kappa([[1, -1], [2, 0]])


def test_two_proportion_z_by_hand_and_chi_square_identity() -> None:
    k1, n1, k2, n2 = 496, 810, 360, 810
    pooled = (k1 + k2) / (n1 + n2)
    z_hand = (k1 / n1 - k2 / n2) / math.sqrt(pooled * (1 - pooled) * (2 / 810))
    z, p = stats.two_proportion_z(k1, n1, k2, n2)
    assert z == pytest.approx(z_hand, rel=1e-12)
    assert p == pytest.approx(math.erfc(abs(z_hand) / math.sqrt(2)), rel=1e-9)
    # Pearson's chi-square of the 2x2 table (no continuity correction) is z²
    chi2, dof, p_chi = stats.chi_square([[k1, n1 - k1], [k2, n2 - k2]])
    assert dof == 1 and chi2 == pytest.approx(z * z, rel=1e-9) and p_chi == pytest.approx(p)
    assert stats.two_proportion_z(3, 3, 5, 5) == (0.0, 1.0)  # no variance
    assert stats.chi_square([[3, 0], [5, 0]]) is None
    with pytest.raises(ValueError):
        stats.two_proportion_z(0, 0, 1, 2)


def test_mean_interval_by_hand() -> None:
    got = stats.mean_interval([1, 2, 3, 4])
    s = math.sqrt(sum((x - 2.5) ** 2 for x in (1, 2, 3, 4)) / 3)
    half = 3.182446305284263 * s / 2  # t(0.975, 3) from a table
    assert (got.estimate, got.low, got.high) == pytest.approx((2.5, 2.5 - half, 2.5 + half))
    assert stats.mean_interval([1, 1, 1]).low == 1.0  # no spread, no width
    with pytest.raises(ValueError):
        stats.mean_interval([1.0])


def test_t_tests_and_holm() -> None:
    t, p = stats.one_sample_t([1, 2, 3, 4])  # t = 2.5 / (s / 2)
    assert t == pytest.approx(2.5 / (math.sqrt(5 / 3) / 2))
    assert stats.one_sample_t([1, 1]) is None
    x, y = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 9.0, 11.0]
    t, _ = stats.welch_t(x, y)
    vx, vy = np.var(x, ddof=1) / 4, np.var(y, ddof=1) / 5
    assert t == pytest.approx((np.mean(x) - np.mean(y)) / math.sqrt(vx + vy))
    assert stats.welch_t([1, 1], [2, 2]) is None
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
