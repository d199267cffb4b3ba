"""The measurements of Sec. 8 (captioning and VQA), as pure functions over maps and masks.

- **Word pointing** (Sec. 8.1.1): for each visual word of a ground-truth caption, the word's map
  points at its maximum; a hit when that point lies in the mask of an object of a category the
  word names (the paper: 30.0% on 1000 COCO images). :func:`word_pointing_hit`.
- **Region inside/outside ratio** (Sec. 8.1, DenseCap): mean map value inside a region's box
  over the mean outside; a uniform map scores 1.0 (paper: Grad-CAM 3.27 +- 0.18, Guided
  Backprop 2.32 +- 0.08, Guided Grad-CAM 6.38 +- 0.99). That is
  :func:`camlens.evaluate.inside_outside_ratio` with the box as the region.
- **Answer-map rank correlation** (Sec. 8.2): with the occlusion map of the same answer (paper:
  Grad-CAM 0.60 +- 0.038, Guided Backprop 0.42 +- 0.038) via
  :func:`camlens.evaluate.rank_correlation`, and with "human attention", here the exact masks of
  the objects the question is about (paper: 0.136): :func:`mask_rank_correlation`.
- **Mean +- standard error** over items (:func:`mean_sem`, with a 95% interval): the paper
  gives its numbers as "x +- y" without saying what y is.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from camlens.evaluate.faithfulness import rank_correlation
from camlens.evaluate.localization import as_map, as_mask
from camlens.evaluate.pointing import Ties, pointing_hit


def _union(objects: Sequence[tuple[str, Any]], classes: Collection[str],
           shape: tuple[int, ...]) -> np.ndarray:
    """The union (H, W) of the masks of the objects whose class is in ``classes``."""
    out = np.zeros(shape, dtype=bool)
    for name, mask in objects:
        if name in classes:
            m = as_mask(mask, f"the mask of {name!r}")
            if m.shape != out.shape:
                raise ValueError(f"the mask of {name!r} has shape {m.shape}, the map {out.shape}")
            out |= m
    return out


def word_pointing_hit(heatmap: Any, classes: Collection[str],
                      objects: Sequence[tuple[str, Any]], *, tolerance: float = 0.0,
                      ties: Ties = "any") -> bool | None:
    """Whether the word's map (H, W) points into an object it names (Sec. 8.1.1).

    ``classes``: the categories the word names (e.g. ``camlens.synthetic.v2.words``);
    ``objects``: (class name, (H, W) mask) of the image's objects. The point is the map's
    maximum (``ties`` as in :func:`camlens.evaluate.pointing_hit`); ``tolerance`` 0 (the paper
    counts the point inside the segmentation), or a distance in pixels. None when no object of
    those classes is in the image: the paper scores only words whose category it has masks for.
    A constant map points nowhere: a miss.
    """
    hm = as_map(heatmap)
    gt = _union(objects, classes, hm.shape)
    if not gt.any():
        return None
    return pointing_hit(hm, gt, tolerance=tolerance, ties=ties)


def mask_rank_correlation(heatmap: Any, classes: Collection[str],
                          objects: Sequence[tuple[str, Any]]) -> float:
    """Spearman rank correlation (H, W) x (H, W) between an answer's map and the 0/1 union of
    the masks of the objects the question is about (our stand-in for the human attention maps
    of Das et al.; ties share their mean rank). ``nan`` when the map is constant; a
    ``ValueError`` when no such object is in the image or it covers the whole image."""
    hm = as_map(heatmap)
    gt = _union(objects, classes, hm.shape)
    if not gt.any() or gt.all():
        part = "none" if not gt.any() else "all"
        raise ValueError(f"the objects of {sorted(classes)} cover {part} of the image: a rank "
                         "correlation with their mask is undefined")
    return rank_correlation(hm, gt.astype(np.float64))


@dataclass(frozen=True)
class MeanSEM:
    """``mean`` +- ``sem`` over ``n`` values (``skipped``: undefined values left out, e.g. NaN
    correlations of constant maps, or words with no object to point at)."""

    mean: float
    sem: float
    n: int
    skipped: int = 0

    @property
    def ci95(self) -> tuple[float, float]:
        """The normal-approximation 95% interval, mean -+ 1.96 sem."""
        return self.mean - 1.96 * self.sem, self.mean + 1.96 * self.sem

    def __str__(self) -> str:
        return f"{self.mean:.3f} +- {self.sem:.3f} (n={self.n})"


def mean_sem(values: Iterable[float | bool | None]) -> MeanSEM:
    """Mean and standard error of the mean, s / sqrt(n) with the sample standard deviation
    s (ddof 1), of the defined values; None and NaN are counted in ``skipped``. Booleans count
    as 1/0, so a list of hits gives the accuracy and its standard error. Fewer than two values
    give ``sem = nan``; none give ``mean = nan`` too."""
    kept: list[float] = []
    skipped = 0
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            skipped += 1
        else:
            kept.append(float(v))
    n = len(kept)
    if n == 0:
        return MeanSEM(math.nan, math.nan, 0, skipped)
    a = np.asarray(kept, dtype=np.float64)
    sem = float(a.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return MeanSEM(float(a.mean()), sem, n, skipped)
