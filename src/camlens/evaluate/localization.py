"""Weakly-supervised localisation (Grad-CAM paper, Sec. 4.1) and its pixel-geometry helpers.

Conventions used throughout :mod:`camlens.evaluate`:

- A map or mask is a 2-D array indexed ``[y, x]`` (row, column); ``np.ndarray`` and
  ``torch.Tensor`` are both accepted.
- A box is ``(x0, y0, x1, y1)`` in **inclusive, 0-based pixel indices**: it covers columns
  ``x0..x1`` and rows ``y0..y1``, so its width is ``x1 - x0 + 1`` (the ILSVRC / PASCAL VOC
  devkit convention, ``xmin, ymin, xmax, ymax``, shifted to 0-based indices).
- Connected components use 8-connectivity unless told otherwise (4 is the alternative).

Numpy, and scipy (the ``eval`` extra) for connected components.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from camlens.evaluate.extras import require

Box = tuple[int, int, int, int]
"""``(x0, y0, x1, y1)``: inclusive, 0-based pixel indices (see the module docstring)."""

Label = Hashable
"""A class label: an integer index or a name such as an ImageNet wnid."""


RELATIVE_TO = ("max", "range")
"""What :func:`bbox_from_map`'s threshold is a fraction of: the map's maximum (the paper's
15% of max) or its range (the map min-max scaled first)."""


def to_numpy(x: Any) -> np.ndarray:
    """``x`` as a numpy array; torch tensors are detached and moved to the CPU first."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if hasattr(x, "numpy"):
            return np.asarray(x.numpy())
    return np.asarray(x)


def as_map(heatmap: Any, name: str = "heatmap") -> np.ndarray:
    """A 2-D, finite float64 copy of ``heatmap``; raises ``ValueError`` otherwise."""
    a = to_numpy(heatmap)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (H, W), got shape {a.shape}")
    a = a.astype(np.float64, copy=False)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def as_mask(mask: Any, name: str = "mask") -> np.ndarray:
    """A 2-D boolean view of ``mask`` (non-zero means foreground)."""
    m = to_numpy(mask)
    if m.ndim != 2:
        raise ValueError(f"{name} must be 2-D (H, W), got shape {m.shape}")
    return m.astype(bool, copy=False)


def _check_connectivity(connectivity: int) -> None:
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")


def connected_components(mask: Any, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """Label the connected foreground segments of a 2-D mask (``scipy.ndimage.label``).

    ``connectivity=8`` joins pixels that share an edge or a corner, ``4`` only an edge.
    Returns ``(labels, n)``: ``labels`` is an int32 (H, W) array with 0 for background and
    1..n for the segments, numbered in raster order of each segment's first pixel.
    """
    _check_connectivity(connectivity)
    m = as_mask(mask)
    ndimage = require("scipy.ndimage", "connected components (camlens.evaluate)")
    structure = np.ones((3, 3), dtype=bool) if connectivity == 8 else \
        ndimage.generate_binary_structure(2, 1)
    labels = np.zeros(m.shape, dtype=np.int32)
    n = ndimage.label(m, structure=structure, output=labels)
    return labels, int(n)


def largest_component(mask: Any, connectivity: int = 8, priority: Any = None) -> np.ndarray:
    """Boolean mask of the largest connected segment of ``mask`` (all False if it is empty).

    Ties between equally large segments go to the one with the highest ``priority`` value
    (an (H, W) array, e.g. the heatmap, so the segment holding the map's maximum wins), then to
    the segment whose first pixel comes first in raster order.
    """
    labels, n = connected_components(mask, connectivity)
    if n == 0:
        return np.zeros(labels.shape, dtype=bool)
    flat = labels.reshape(-1)
    sizes = np.bincount(flat, minlength=n + 1)[1:]
    candidates = np.flatnonzero(sizes == sizes.max())
    if candidates.size > 1 and priority is not None:
        pr = as_map(priority, "priority")
        if pr.shape != labels.shape:
            raise ValueError(f"priority shape {pr.shape} differs from mask shape {labels.shape}")
        fg = flat > 0
        peaks = np.full(n, -np.inf)
        np.maximum.at(peaks, flat[fg] - 1, pr.reshape(-1)[fg])
        best = peaks[candidates]
        candidates = candidates[best == best.max()]
    return labels == int(candidates[0]) + 1


def mask_to_box(mask: Any) -> Box | None:
    """Tight inclusive box ``(x0, y0, x1, y1)`` around the True pixels; None if there are none."""
    m = as_mask(mask)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(m.any(axis=0))
    return (int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1]))


def _check_box(box: Sequence[float], name: str = "box") -> tuple[float, float, float, float]:
    if len(box) != 4:
        raise ValueError(f"{name} must be (x0, y0, x1, y1), got {box!r}")
    x0, y0, x1, y1 = (float(c) for c in box)
    if x1 < x0 or y1 < y0:
        raise ValueError(f"{name} {tuple(box)!r} has x1 < x0 or y1 < y0 (boxes are inclusive)")
    return x0, y0, x1, y1


def box_to_mask(box: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) boolean mask of the pixels an inclusive box covers, clipped to the image."""
    x0, y0, x1, y1 = (round(c) for c in _check_box(box))
    h, w = int(shape[0]), int(shape[1])
    m = np.zeros((h, w), dtype=bool)
    m[max(y0, 0) : max(min(y1 + 1, h), 0), max(x0, 0) : max(min(x1 + 1, w), 0)] = True
    return m


def check_threshold(threshold: float, relative_to: str = "max") -> None:
    """Refuse a threshold outside [0, 1] or an unknown ``relative_to``."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(
            f"threshold must be in [0, 1] (a fraction of the maximum), got {threshold}"
        )
    if relative_to not in RELATIVE_TO:
        raise ValueError(f"relative_to must be one of {', '.join(map(repr, RELATIVE_TO))}, "
                         f"got {relative_to!r}")


def bbox_from_map(heatmap: Any, threshold: float = 0.15, connectivity: int = 8,
                  relative_to: str = "max") -> Box | None:
    """Box around the largest segment of a thresholded heatmap (Sec. 4.1).

    The paper binarises the map at 15% of its maximum and draws a box around the single
    largest segment. Here, with ``relative_to="max"``: ``mask = heatmap >= threshold *
    max(heatmap)``, and a map with no positive value localises nothing (None). With
    ``relative_to="range"`` the map is min-max scaled first: ``mask = heatmap >= min +
    threshold * (max - min)``, so negative values count (this is what differs once Eq. 2's
    ReLU is removed); a constant map localises nothing. The largest connected segment
    (``connectivity`` 8 or 4) is kept, ties going to the segment holding the highest map value
    (so the one containing the maximum), then to the first in raster order. Returns the
    inclusive ``(x0, y0, x1, y1)`` box, or None.
    """
    check_threshold(threshold, relative_to)
    hm = as_map(heatmap)
    if hm.size == 0:
        return None
    peak = hm.max()
    if relative_to == "max":
        if peak <= 0:
            return None
        cut = threshold * peak
    else:
        low = hm.min()
        if peak <= low:
            return None
        cut = low + threshold * (peak - low)
    segment = largest_component(hm >= cut, connectivity, priority=hm)
    return mask_to_box(segment)


def iou(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """Intersection over union of two inclusive boxes (widths are ``x1 - x0 + 1``).

    The ILSVRC / VOC devkit overlap: |A ∩ B| / |A ∪ B| counted in pixels. Identical boxes give
    1.0, disjoint boxes 0.0.
    """
    ax0, ay0, ax1, ay1 = _check_box(box_a, "box_a")
    bx0, by0, bx1, by1 = _check_box(box_b, "box_b")
    iw = min(ax1, bx1) - max(ax0, bx0) + 1
    ih = min(ay1, by1) - max(ay0, by0) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area_a = (ax1 - ax0 + 1) * (ay1 - ay0 + 1)
    area_b = (bx1 - bx0 + 1) * (by1 - by0 + 1)
    return float(inter / (area_a + area_b - inter))


@dataclass(frozen=True)
class ImageLocalization:
    """One image for :func:`localization_error`.

    ``pred_classes`` are the model's ranked predictions (best first) and ``pred_boxes`` the
    box localised for each (None when the map gave no box). ``gt`` lists every ground-truth
    ``(class, box)`` of the image (ILSVRC images may hold several boxes of their class).
    """

    pred_classes: Sequence[Label]
    pred_boxes: Sequence[Box | None]
    gt: Sequence[tuple[Label, Box]]

    def __post_init__(self) -> None:
        classes, boxes, gt = tuple(self.pred_classes), tuple(self.pred_boxes), tuple(self.gt)
        if len(classes) != len(boxes):
            raise ValueError(f"{len(classes)} predicted classes but {len(boxes)} predicted boxes")
        if not classes:
            raise ValueError("an image needs at least one predicted class")
        if not gt:
            raise ValueError("an image needs at least one ground-truth (class, box)")
        for b in boxes:
            if b is not None:
                _check_box(b, "predicted box")
        for item in gt:
            if len(item) != 2:
                raise ValueError(f"ground truth entries are (class, box) pairs, got {item!r}")
            _check_box(item[1], "ground-truth box")
        object.__setattr__(self, "pred_classes", classes)
        object.__setattr__(self, "pred_boxes", boxes)
        object.__setattr__(self, "gt", tuple((c, tuple(b)) for c, b in gt))


@dataclass(frozen=True)
class LocalizationResult:
    """Top-k localisation and classification error, as fractions in [0, 1] (Table 1 in %)."""

    k: int
    loc_error: float
    cls_error: float
    n: int
    iou_threshold: float = 0.5
    loc_correct: tuple[bool, ...] = field(default=(), repr=False)
    cls_correct: tuple[bool, ...] = field(default=(), repr=False)


def localization_error(
    records: Iterable[ImageLocalization], k: int = 1, iou_threshold: float = 0.5
) -> LocalizationResult:
    """ILSVRC top-k localisation error (Sec. 4.1, Table 1).

    An image is correctly classified if a ground-truth class is among its first ``k``
    predictions, and correctly localised if some prediction among the first ``k`` has a
    ground-truth class AND a box with IoU >= ``iou_threshold`` against a ground-truth box of
    that class. Errors are the fractions of images that are not. Images with fewer than ``k``
    predictions use what they have.
    """
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    loc_ok: list[bool] = []
    cls_ok: list[bool] = []
    for rec in records:
        gt_classes = {c for c, _ in rec.gt}
        cls_hit = False
        loc_hit = False
        for cls, box in zip(rec.pred_classes[:k], rec.pred_boxes[:k]):
            if cls not in gt_classes:
                continue
            cls_hit = True
            if box is not None and any(
                c == cls and iou(box, g) >= iou_threshold for c, g in rec.gt
            ):
                loc_hit = True
                break
        loc_ok.append(loc_hit)
        cls_ok.append(cls_hit)
    n = len(loc_ok)
    if n == 0:
        raise ValueError("no records to evaluate")
    return LocalizationResult(
        k=k,
        loc_error=1.0 - sum(loc_ok) / n,
        cls_error=1.0 - sum(cls_ok) / n,
        n=n,
        iou_threshold=float(iou_threshold),
        loc_correct=tuple(loc_ok),
        cls_correct=tuple(cls_ok),
    )


def localization_table(
    records: Iterable[ImageLocalization], ks: Sequence[int] = (1, 5), iou_threshold: float = 0.5
) -> dict[int, LocalizationResult]:
    """:func:`localization_error` for each ``k`` in ``ks`` (Table 1: top-1 and top-5 columns)."""
    recs = list(records)
    return {int(k): localization_error(recs, k, iou_threshold) for k in ks}
