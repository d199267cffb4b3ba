"""The statistics of the human studies (pure functions; scipy for the distributions).

- :func:`wilson`: the Wilson score interval of a proportion ``k / n``,
  ``(p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)`` with ``p = k/n``,
  ``z = Φ⁻¹(1 - α/2)`` (scipy's ``binomtest(...).proportion_ci(method="wilson")``).
- :func:`mean_interval`: a mean with its Student-t interval ``x̄ ± t(1-α/2, n-1) s / sqrt(n)``.
- :func:`fleiss_kappa`: Fleiss' kappa, ``κ = (P̄ - P̄e) / (1 - P̄e)`` with
  ``P_i = (Σ_j n_ij² - n_i) / (n_i (n_i - 1))``, ``P̄`` their mean, ``p_j = Σ_i n_ij / Σ_i n_i``,
  ``P̄e = Σ_j p_j²``; subjects may have different numbers of raters (those with fewer than two
  are left out). Undefined (None) when every rating falls in one category (``P̄e = 1``).
- :func:`two_proportion_z`: the pooled two-proportion z-test,
  ``z = (p1 - p2) / sqrt(p (1-p) (1/n1 + 1/n2))``, ``p = (k1 + k2) / (n1 + n2)``, two-sided.
- :func:`chi_square`: Pearson's chi-square test of homogeneity of a methods x outcomes table
  (scipy's ``chi2_contingency``, no continuity correction).
- :func:`holm`: Holm's step-down adjustment of several p values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["Interval", "wilson", "mean_interval", "fleiss_kappa", "two_proportion_z",
           "chi_square", "welch_t", "one_sample_t", "holm"]


@dataclass(frozen=True)
class Interval:
    """An estimate with its two-sided confidence interval ``[low, high]``."""

    estimate: float
    low: float
    high: float
    confidence: float = 0.95

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def wilson(k: int, n: int, confidence: float = 0.95) -> Interval:
    """``k`` successes of ``n`` as a proportion with its Wilson score interval."""
    _check_confidence(confidence)
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence,
                                                        method="wilson")
    return Interval(k / n, float(ci.low), float(ci.high), confidence)


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """The mean of ``values`` with its t interval (needs at least two values)."""
    _check_confidence(confidence)
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        raise ValueError(f"a mean's interval needs at least 2 values, got {x.size}")
    mean = float(x.mean())
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1)
                 / math.sqrt(x.size))
    return Interval(mean, mean - half, mean + half, confidence)


def fleiss_kappa(counts: np.ndarray | Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa of an (subjects, categories) table of rating counts ``n_ij``.

    Subjects with fewer than two ratings carry no agreement information and are dropped;
    None when no subject is left or when ``P̄e = 1`` (every rating in one category: kappa is
    0/0, undefined)."""
    n = np.asarray(counts, dtype=np.float64)
    if n.ndim != 2:
        raise ValueError(f"counts must be a (subjects, categories) table, got shape {n.shape}")
    if (n < 0).any():
        raise ValueError("counts must not be negative")
    raters = n.sum(axis=1)
    n = n[raters >= 2]
    raters = raters[raters >= 2]
    if n.shape[0] == 0:
        return None
    p_i = ((n * n).sum(axis=1) - raters) / (raters * (raters - 1))
    p_j = n.sum(axis=0) / raters.sum()
    p_bar, p_e = float(p_i.mean()), float((p_j * p_j).sum())
    if p_e >= 1.0 - 1e-12:
        return None
    return (p_bar - p_e) / (1.0 - p_e)


def two_proportion_z(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """(z, two-sided p) of the pooled two-proportion z-test of ``k1/n1`` against ``k2/n2``;
    (0, 1) when the pooled proportion is 0 or 1 (no variance: no evidence of a difference)."""
    if n1 < 1 or n2 < 1:
        raise ValueError(f"both groups need ratings, got n1={n1}, n2={n2}")
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (k1 / n1 - k2 / n2) / se
    return z, float(2 * stats.norm.sf(abs(z)))


def chi_square(table: np.ndarray | Sequence[Sequence[int]]) -> tuple[float, int, float] | None:
    """(chi², degrees of freedom, p) of Pearson's test of homogeneity of the rows of
    ``table`` (methods x outcome counts); None when a row or column is all zero."""
    t = np.asarray(table, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] < 2 or t.shape[1] < 2:
        raise ValueError(f"need at least a 2x2 table, got shape {t.shape}")
    if (t.sum(axis=0) == 0).any() or (t.sum(axis=1) == 0).any():
        return None
    res = stats.chi2_contingency(t, correction=False)
    return float(res.statistic), int(res.dof), float(res.pvalue)


def welch_t(x: Sequence[float], y: Sequence[float]) -> tuple[float, float] | None:
    """(t, two-sided p) of Welch's t-test of mean(x) against mean(y); None when either has
    fewer than two values or neither varies."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.size < 2 or b.size < 2 or (a.std() == 0 and b.std() == 0):
        return None
    res = stats.ttest_ind(a, b, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def one_sample_t(x: Sequence[float], mu: float = 0.0) -> tuple[float, float] | None:
    """(t, two-sided p) of the one-sample t-test of mean(x) against ``mu``; None when x has
    fewer than two values or does not vary."""
    a = np.asarray(x, dtype=np.float64)
    if a.size < 2 or a.std() == 0:
        return None
    res = stats.ttest_1samp(a, mu)
    return float(res.statistic), float(res.pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p values (same order as given): the ``r``-th smallest
    becomes ``max_{s <= r} min(1, (m - s + 1) p_(s))``."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    m = p.size
    adjusted = np.empty(m)
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        adjusted[idx] = running
    return adjusted.tolist()
