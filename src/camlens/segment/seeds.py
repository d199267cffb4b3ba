"""SEC's localisation cues ("seeds") from any camlens map, and their quality against exact masks.

Labels: 0 is the background, ``c + 1`` the world's class ``c``; L = classes + 1.

- Foreground (SEC): for each class present in the image, the cells of its localisation map
  (upsampled bilinearly to the segmentation grid, negative values clipped to 0) that score more
  than ``fg_fraction`` (0.2) of the map's maximum. A map with maximum 0 gives no cue.
- Background (SEC): the ``bg_fraction`` (10%) of grid cells with the lowest saliency. SEC takes
  the saliency from the classifier's input gradient (Simonyan et al.); :func:`gradient_saliency`
  makes it with camlens' ``gradient`` method: max over colour channels and over the image's
  classes of |dy^c/dx|, averaged over each grid cell.
- Conflicts: a cell claimed by two or more cues (two classes, or a class and the background) is
  dropped from all of them (it gets no cue).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FG_FRACTION", "BG_FRACTION", "padded_targets", "class_maps", "gradient_saliency",
           "foreground_cues", "background_cues", "mask_cues", "make_cues", "SeedQuality",
           "seed_quality"]

FG_FRACTION = 0.2
BG_FRACTION = 0.1


def padded_targets(labels: Sequence[Sequence[int]]) -> torch.Tensor:
    """(B, K) class indices, K = the most classes in an image; short rows repeat their first."""
    if not labels or any(len(row) == 0 for row in labels):
        raise ValueError("every image needs at least one class label for its seeds")
    k = max(len(row) for row in labels)
    return torch.tensor([list(row) + [row[0]] * (k - len(row)) for row in labels])


def class_maps(model: nn.Module, images: torch.Tensor, labels: Sequence[Sequence[int]],
               method: str, layer: str | None, num_classes: int, batch: int = 32,
               **options: Any) -> torch.Tensor:
    """Localisation maps (B, classes, h, w) from ``camlens.explain(model, images, method=...)``
    for each image's classes (zeros for absent classes): the raw layer map for heatmap methods
    (Grad-CAM's Eq. 2, CAM), |raw| max over colour channels for pixel-space ones."""
    from camlens import explain

    out: torch.Tensor | None = None
    for start in range(0, images.shape[0], batch):
        rows = labels[start:start + batch]
        targets = padded_targets(rows)
        ex = explain(model, images[start:start + batch], method=method, layer=layer,
                     target=targets, **options)
        raw = ex.raw.abs().amax(2) if ex.pixel_space else ex.raw
        if out is None:
            out = torch.zeros(images.shape[0], num_classes, *raw.shape[-2:])
        for i, row in enumerate(rows):
            for k, c in enumerate(row):
                out[start + i, c] = raw[i, k].float()
    assert out is not None
    return out


def gradient_saliency(model: nn.Module, images: torch.Tensor, labels: Sequence[Sequence[int]],
                      batch: int = 32) -> torch.Tensor:
    """Saliency (B, H, W): max over the image's classes and colour channels of |dy^c/dx|."""
    from camlens import explain

    parts = []
    for start in range(0, images.shape[0], batch):
        ex = explain(model, images[start:start + batch], method="gradient",
                     target=padded_targets(labels[start:start + batch]))
        parts.append(ex.raw.abs().amax(dim=(1, 2)).float())
    return torch.cat(parts)


def foreground_cues(maps: torch.Tensor, present: torch.Tensor, grid: int,
                    fraction: float = FG_FRACTION) -> torch.Tensor:
    """(B, classes, grid, grid) bool: map > ``fraction`` x its maximum, for present classes.

    ``maps``: (B, classes, h, w) localisation maps; ``present``: (B, classes) bool."""
    up = F.interpolate(maps.float(), size=(grid, grid), mode="bilinear",
                       align_corners=False).clamp(min=0)
    peak = up.flatten(2).amax(-1)[:, :, None, None]
    return (up > fraction * peak) & (peak > 0) & present[:, :, None, None]


def background_cues(saliency: torch.Tensor, grid: int,
                    fraction: float = BG_FRACTION) -> torch.Tensor:
    """(B, grid, grid) bool: the ``fraction`` of cells with the lowest cell-averaged saliency
    (ties broken by position; exactly round(fraction x cells) cells)."""
    cells = F.adaptive_avg_pool2d(saliency[:, None].float(), (grid, grid)).flatten(1)
    n = int(round(fraction * grid * grid))
    order = cells.argsort(dim=1, stable=True)[:, :n]
    cue = torch.zeros_like(cells, dtype=torch.bool)
    cue.scatter_(1, order, True)
    return cue.reshape(-1, grid, grid)


def mask_cues(truth: torch.Tensor, grid: int, num_classes: int) -> torch.Tensor:
    """Reference foreground cues from the exact label maps ``truth`` (B, H, W) (0 background,
    c + 1 class c): (B, classes, grid, grid) bool, the cells lying wholly inside class c's mask.
    Not SEC's (it has no masks): an upper reference for what the head and losses can do."""
    scale = truth.shape[-1] // grid
    if scale * grid != truth.shape[-1]:
        raise ValueError(f"image size {truth.shape[-1]} is not a multiple of the grid {grid}")
    onehot = F.one_hot(truth.long(), num_classes + 1).permute(0, 3, 1, 2).float()
    inside = F.avg_pool2d(onehot, scale) == 1.0
    return inside[:, 1:]


def make_cues(fg: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    """Cues (B, classes + 1, grid, grid) bool, label 0 = background; cells claimed by two or
    more cues are dropped."""
    cues = torch.cat([bg[:, None], fg], dim=1)
    return cues & (cues.sum(1, keepdim=True) == 1)


@dataclass(frozen=True)
class SeedQuality:
    """Cue quality against the exact masks at image resolution (each grid cell stands for its
    pixels): precision = share of cued pixels whose true label is the cue's; recall = share of
    the true pixels of each label that carry its cue, for the foreground (``fg_*``) and the
    background (``bg_*``); ``coverage`` = share of all pixels with a cue."""

    fg_precision: float
    fg_recall: float
    bg_precision: float
    bg_recall: float
    coverage: float


def seed_quality(cues: torch.Tensor, truth: torch.Tensor) -> SeedQuality:
    """``cues`` (B, L, g, g) bool and ``truth`` (B, H, W) label maps (H a multiple of g)."""
    scale = truth.shape[-1] // cues.shape[-1]
    if scale * cues.shape[-1] != truth.shape[-1]:
        raise ValueError(f"image size {truth.shape[-1]} is not a multiple of the grid "
                         f"{cues.shape[-1]}")
    up = cues.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    hit = up.gather(1, truth[:, None].long())[:, 0]                          # cue of true label
    cued = up.any(1)
    fg_cued = up[:, 1:].any(1)
    fg_true = truth > 0

    def ratio(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(a.sum()) / max(float(b.sum()), 1.0)

    return SeedQuality(
        fg_precision=ratio(hit & fg_cued, fg_cued),
        fg_recall=ratio(hit & fg_true, fg_true),
        bg_precision=ratio(up[:, 0] & ~fg_true, up[:, 0]),
        bg_recall=ratio(up[:, 0] & ~fg_true, ~fg_true),
        coverage=ratio(cued, torch.ones_like(cued)),
    )
