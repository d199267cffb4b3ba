"""The pointing game (Zhang et al., "Top-down neural attention by excitation backprop") and the
Grad-CAM paper's top-5 variant with rejection (Sec. 4.3).

A map "points" at its maximum. It scores a hit when a ground-truth pixel of the class lies
within Euclidean distance ``tolerance`` (15 px in both papers) of that point.

Rules chosen here (all tested):

- Tied maxima: with ``ties="any"`` (default) every pixel holding the maximum value points, and
  the map hits if any of them is within tolerance (plateaus from nearest-neighbour upsampling
  are one coarse cell, so no corner of it is privileged); ``ties="first"`` uses only the first
  maximum in raster order (``np.argmax``).
- A constant map (all-zero included) has no maximum to point with and always misses.
- An empty ground-truth mask (the class is absent) is never a hit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from camlens.evaluate.localization import as_map, as_mask

Ties = Literal["any", "first"]


def _within(gt: np.ndarray, ys: np.ndarray, xs: np.ndarray, tolerance: float) -> np.ndarray:
    """For each point, whether a True pixel of ``gt`` lies within Euclidean ``tolerance``.

    Scans the disk row by row: in row offset ``dy`` the allowed columns are
    ``|dx| <= floor(sqrt(t^2 - dy^2))``, counted with a row-wise prefix sum of ``gt``.
    """
    h, w = gt.shape
    prefix = np.zeros((h, w + 1), dtype=np.int64)
    np.cumsum(gt, axis=1, out=prefix[:, 1:])
    hit = np.zeros(ys.shape, dtype=bool)
    integral = float(tolerance).is_integer()
    reach = math.floor(tolerance)
    for dy in range(-reach, reach + 1):
        if integral:
            half = math.isqrt(int(tolerance) ** 2 - dy * dy)
        else:
            half = math.floor(math.sqrt(tolerance * tolerance - dy * dy))
        rows = ys + dy
        ok = (rows >= 0) & (rows < h) & ~hit
        if not ok.any():
            continue
        r = rows[ok]
        lo = np.clip(xs[ok] - half, 0, w)
        hi = np.clip(xs[ok] + half + 1, 0, w)
        hit[ok] = prefix[r, hi] - prefix[r, lo] > 0
    return hit


def max_locations(heatmap: Any, ties: Ties = "any") -> tuple[np.ndarray, np.ndarray]:
    """``(ys, xs)`` of the pixels the map points with; empty for a constant map.

    ``ties="any"``: every pixel equal to the maximum; ``"first"``: the first one in raster order.
    """
    if ties not in ("any", "first"):
        raise ValueError(f"ties must be 'any' or 'first', got {ties!r}")
    hm = as_map(heatmap)
    empty = np.zeros(0, dtype=np.int64)
    if hm.size == 0 or hm.max() == hm.min():
        return empty, empty
    if ties == "first":
        y, x = np.unravel_index(int(np.argmax(hm)), hm.shape)
        return np.array([y], dtype=np.int64), np.array([x], dtype=np.int64)
    ys, xs = np.nonzero(hm == hm.max())
    return ys.astype(np.int64), xs.astype(np.int64)


def pointing_hit(heatmap: Any, gt_mask: Any, tolerance: float = 15, ties: Ties = "any") -> bool:
    """Whether the map's maximum lies within ``tolerance`` px of a ground-truth pixel (Sec. 4.3).

    Equivalent to dilating ``gt_mask`` by a closed disk of radius ``tolerance`` (distance
    ``sqrt(dx^2 + dy^2) <= tolerance`` between pixel indices) and testing the maximum. See the
    module docstring for tied maxima, constant maps and empty masks.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    hm = as_map(heatmap)
    gt = as_mask(gt_mask, "gt_mask")
    if gt.shape != hm.shape:
        raise ValueError(f"gt_mask shape {gt.shape} differs from heatmap shape {hm.shape}")
    if not gt.any():
        return False
    ys, xs = max_locations(hm, ties)
    if ys.size == 0:
        return False
    return bool(_within(gt, ys, xs, float(tolerance)).any())


@dataclass(frozen=True)
class PointingTrial:
    """One (image, class) pair of the pointing game.

    ``present``: the class is in the image; ``hit``: the map's maximum hit the class's ground
    truth (necessarily False when absent); ``evidence``: the un-normalised strength of the map
    (e.g. the raw Grad-CAM maximum, ``Explanation.raw.max()``) compared with the rejection
    threshold. A min-max normalised map always peaks at 1, so pass the raw value.
    """

    present: bool
    hit: bool
    evidence: float = math.nan

    def __post_init__(self) -> None:
        if self.hit and not self.present:
            raise ValueError("a trial for an absent class cannot be a hit")

    @classmethod
    def from_map(
        cls,
        heatmap: Any,
        gt_mask: Any = None,
        evidence: float | None = None,
        tolerance: float = 15,
        ties: Ties = "any",
    ) -> PointingTrial:
        """Score one map. ``gt_mask`` None or empty means the class is absent; ``evidence``
        defaults to the map's maximum."""
        hm = as_map(heatmap)
        present = gt_mask is not None and bool(as_mask(gt_mask, "gt_mask").any())
        hit = present and pointing_hit(hm, gt_mask, tolerance, ties)
        if evidence is None:
            evidence = float(hm.max()) if hm.size else math.nan
        return cls(present=present, hit=hit, evidence=float(evidence))


@dataclass(frozen=True)
class PointingResult:
    """Pointing accuracy = (hits + correct_rejections) / n."""

    accuracy: float
    hits: int
    correct_rejections: int
    misses: int
    n: int
    threshold: float | None


def pointing_game(
    trials: Iterable[PointingTrial], threshold: float | None = None
) -> PointingResult:
    """Pointing-game accuracy, optionally with the paper's rejection (Sec. 4.3).

    ``threshold=None``: the standard game of Zhang et al.: only trials of present classes
    count, accuracy = hits / present. With a threshold, every trial counts (the paper uses the
    top-5 predicted classes of each image): a class is rejected (predicted absent) when its
    ``evidence < threshold``; a hit is a present, accepted class whose map hits; a correct
    rejection an absent, rejected class; everything else is a miss.
    """
    items = list(trials)
    if threshold is None:
        items = [t for t in items if t.present]
        if not items:
            raise ValueError("no trial has its class present: nothing to point at")
        hits = sum(t.hit for t in items)
        return PointingResult(hits / len(items), hits, 0, len(items) - hits, len(items), None)
    if not items:
        raise ValueError("no trials to evaluate")
    if any(math.isnan(t.evidence) for t in items):
        raise ValueError("rejection needs an evidence value for every trial (got NaN)")
    hits = sum(t.present and t.hit and t.evidence >= threshold for t in items)
    rejections = sum((not t.present) and t.evidence < threshold for t in items)
    n = len(items)
    misses = n - hits - rejections
    return PointingResult((hits + rejections) / n, hits, rejections, misses, n, float(threshold))


def choose_rejection_threshold(held_out: Iterable[PointingTrial]) -> float:
    """The rejection threshold that maximises :func:`pointing_game` accuracy on held-out trials.

    Candidates: ``-inf`` (reject nothing), the midpoints between consecutive sorted unique
    evidence values, and ``+inf`` (reject everything); these realise every distinct split.
    Among equally accurate thresholds the lowest (fewest rejections) is returned.
    """
    items = list(held_out)
    if not items:
        raise ValueError("no held-out trials")
    ev = np.array([t.evidence for t in items], dtype=np.float64)
    if np.isnan(ev).any():
        raise ValueError("every held-out trial needs an evidence value (got NaN)")
    present = np.array([t.present for t in items], dtype=bool)
    good_hit = np.array([t.present and t.hit for t in items], dtype=bool)
    values = np.unique(ev)
    # Split j rejects exactly the trials with evidence < cut_j, i.e. evidence <= values[j-1].
    cuts = np.concatenate([[-np.inf], (values[:-1] + values[1:]) / 2.0, [np.inf]])
    group = np.searchsorted(values, ev)  # index of each trial's value in `values`
    g = values.size
    hits_per = np.bincount(group, weights=good_hit.astype(float), minlength=g)
    absent_per = np.bincount(group, weights=(~present).astype(float), minlength=g)
    # With split j: hits from groups >= j stay, absent trials in groups < j are rejected.
    hits_kept = np.concatenate([np.cumsum(hits_per[::-1])[::-1], [0.0]])
    rejected = np.concatenate([[0.0], np.cumsum(absent_per)])
    correct = hits_kept + rejected
    return float(cuts[int(np.argmax(correct))])
