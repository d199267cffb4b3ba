"""Faithfulness and region statistics of maps (Grad-CAM paper, Sec. 5.3 and the bias study).

Sec. 5.3 measures how faithful an explanation is to the model by the rank correlation between
it and an occlusion map (Grad-CAM, Guided Backprop and friends against occlusion on PASCAL VOC
val). :func:`rank_correlation` is that statistic for one pair of maps. Numpy only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from camlens.evaluate.localization import as_map, as_mask, box_to_mask, to_numpy


def rankdata(values: Any) -> np.ndarray:
    """1-based ranks of the flattened ``values``, ties sharing their average rank."""
    a = np.asarray(to_numpy(values), dtype=np.float64).reshape(-1)
    n = a.size
    order = np.argsort(a, kind="stable")
    s = a[order]
    starts_mask = np.ones(n, dtype=bool)
    starts_mask[1:] = s[1:] != s[:-1]
    starts = np.flatnonzero(starts_mask)
    ends = np.append(starts[1:], n)  # exclusive
    average = (starts + ends - 1) / 2.0 + 1.0  # mean of the 1-based ranks start+1 .. end
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = average[np.cumsum(starts_mask) - 1]
    return ranks


def rank_correlation(map_a: Any, map_b: Any) -> float:
    """Spearman rank correlation between two maps of the same shape (Sec. 5.3).

    rho = Pearson correlation of the average ranks (ties share the mean of their ranks), i.e.
    ``cov(R_a, R_b) / (std(R_a) std(R_b))``. Returns ``nan`` when either map is constant (its
    ranks have no variance, so the correlation is undefined). Maps of different resolution
    raise ``ValueError``: bring them to one size first, e.g. with :func:`resize_map`.
    """
    a = to_numpy(map_a)
    b = to_numpy(map_b)
    if a.shape != b.shape:
        raise ValueError(
            f"maps differ in shape {a.shape} vs {b.shape}; resize one to the other first "
            "(camlens.evaluate.resize_map)"
        )
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size < 2:
        raise ValueError("rank correlation needs at least two values")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("maps contain NaN or infinite values")
    ra = rankdata(a)
    rb = rankdata(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = math.sqrt(float(ra @ ra) * float(rb @ rb))
    if denom == 0.0:
        return float("nan")
    return float(np.clip((ra @ rb) / denom, -1.0, 1.0))


def resize_map(heatmap: Any, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D map to ``shape`` (H, W), pixel centres aligned at half pixels.

    Same sampling as ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``
    without antialiasing: output pixel ``i`` reads input coordinate ``(i + 0.5) * in/out - 0.5``,
    clamped to the image.
    """
    hm = as_map(heatmap)
    out_h, out_w = int(shape[0]), int(shape[1])
    if out_h < 1 or out_w < 1:
        raise ValueError(f"shape must be positive, got {shape}")

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0.0, n_in - 1)
        i0 = np.floor(src).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    y0, y1, fy = axis(hm.shape[0], out_h)
    x0, x1, fx = axis(hm.shape[1], out_w)
    top = hm[y0][:, x0] * (1 - fx) + hm[y0][:, x1] * fx
    bottom = hm[y1][:, x0] * (1 - fx) + hm[y1][:, x1] * fx
    return top * (1 - fy)[:, None] + bottom * fy[:, None]


def inside_outside_ratio(heatmap: Any, region: Any) -> float:
    """Mean map value inside a region divided by the mean outside it.

    A quantitative reading of the paper's dataset-bias study (where the biased model looks at
    faces and hair rather than at the person's work): ratio > 1 means the map concentrates on
    the region. ``region`` is an inclusive box ``(x0, y0, x1, y1)`` (clipped to the map) or a
    boolean (H, W) mask. An empty inside or outside raises ``ValueError``; a zero outside mean
    gives ``inf`` (or ``nan`` when the inside mean is zero too).
    """
    hm = as_map(heatmap)
    r = to_numpy(region)
    if r.ndim == 1 and r.size == 4:
        mask = box_to_mask(tuple(r.tolist()), hm.shape)
    elif r.ndim == 2:
        mask = as_mask(r, "region")
        if mask.shape != hm.shape:
            raise ValueError(f"region mask shape {mask.shape} differs from heatmap shape {hm.shape}")
    else:
        raise ValueError("region must be a box (x0, y0, x1, y1) or an (H, W) mask")
    n_in = int(mask.sum())
    if n_in == 0:
        raise ValueError("the region is empty (no pixel of the map inside it)")
    if n_in == mask.size:
        raise ValueError("the region covers the whole map: nothing is outside it")
    inside = float(hm[mask].mean())
    outside = float(hm[~mask].mean())
    if outside == 0.0:
        return float("nan") if inside == 0.0 else math.copysign(math.inf, inside)
    return inside / outside
