"""Faithfulness and region statistics of maps (Grad-CAM paper, Sec. 5.3 and the bias study).

Sec. 5.3 measures how faithful an explanation is to the model by the rank correlation between
it and an occlusion map (Grad-CAM, Guided Backprop and friends against occlusion on PASCAL VOC
val). :func:`rank_correlation` is that statistic for one pair of maps (scipy, the ``eval``
extra); :func:`resize_map` is torch's bilinear interpolation.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from camlens.evaluate.extras import require
from camlens.evaluate.localization import as_map, as_mask, box_to_mask, to_numpy
from camlens.maps import upsample


def rankdata(values: Any) -> np.ndarray:
    """1-based ranks of the flattened ``values``, ties sharing their average rank
    (``scipy.stats.rankdata``)."""
    stats = require("scipy.stats", "ranks (camlens.evaluate)")
    a = np.asarray(to_numpy(values), dtype=np.float64).reshape(-1)
    return np.asarray(stats.rankdata(a), dtype=np.float64)


def rank_correlation(map_a: Any, map_b: Any) -> float:
    """Spearman rank correlation between two maps of the same shape (Sec. 5.3).

    rho = Pearson correlation of the average ranks (ties share the mean of their ranks), i.e.
    ``cov(R_a, R_b) / (std(R_a) std(R_b))`` (``scipy.stats.spearmanr``). Returns ``nan`` when
    either map is constant (its ranks have no variance, so the correlation is undefined). Maps
    of different resolution raise ``ValueError``: bring them to one size first, e.g. with
    :func:`resize_map`.
    """
    a = to_numpy(map_a)
    b = to_numpy(map_b)
    if a.shape != b.shape:
        raise ValueError(
            f"maps differ in shape {a.shape} vs {b.shape}; resize one to the other first "
            "(camlens.evaluate.resize_map)"
        )
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.size < 2:
        raise ValueError("rank correlation needs at least two values")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("maps contain NaN or infinite values")
    if a.min() == a.max() or b.min() == b.max():
        return float("nan")
    stats = require("scipy.stats", "rank correlation (camlens.evaluate)")
    return float(stats.spearmanr(a, b).statistic)


def resize_map(heatmap: Any, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D map to ``shape`` (H, W), float64: ``torch.nn.functional.
    interpolate(mode="bilinear", align_corners=False)`` without antialiasing, so output pixel
    ``i`` reads input coordinate ``(i + 0.5) * in/out - 0.5``, clamped to the image.
    """
    hm = as_map(heatmap)
    if int(shape[0]) < 1 or int(shape[1]) < 1:
        raise ValueError(f"shape must be positive, got {shape}")
    return upsample(torch.from_numpy(np.ascontiguousarray(hm))[None, None], shape)[0, 0].numpy()


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
            raise ValueError(
                f"region mask shape {mask.shape} differs from heatmap shape {hm.shape}"
            )
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
