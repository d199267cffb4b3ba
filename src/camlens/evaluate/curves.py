"""Deletion and insertion curves (Petsiuk et al., "RISE", BMVC 2018) and their area.

Pixels are visited in decreasing heatmap order (equal values in raster order, a stable sort).
Deletion starts from the image and replaces the most important pixels by a baseline; the
score should fall fast (low area is good). Insertion starts from the baseline (by default a
blurred copy of the image, as in RISE) and restores the most important pixels first; the score
should rise fast (high area is good). Every channel of a pixel changes together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from camlens.evaluate.localization import as_map, to_numpy

ScoreFn = Callable[[torch.Tensor], Any]
"""Maps a batch (N, C, H, W) to N scores (a tensor or array of shape (N,) or (N, 1))."""

Baseline = float | torch.Tensor | np.ndarray | str


def auc(xs: Any, ys: Any) -> float:
    """Area under ``ys(xs)`` by the trapezoidal rule: sum of (x[i+1]-x[i]) * (y[i]+y[i+1]) / 2."""
    x = np.asarray(to_numpy(xs), dtype=np.float64).reshape(-1)
    y = np.asarray(to_numpy(ys), dtype=np.float64).reshape(-1)
    if x.size != y.size:
        raise ValueError(f"xs and ys differ in length ({x.size} vs {y.size})")
    if x.size < 2:
        raise ValueError("auc needs at least two points")
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def gaussian_blur(image: torch.Tensor, kernel_size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """Separable Gaussian blur of a (C, H, W) image with edge-replicating padding.

    The defaults (11 px kernel, sigma 5) are the blur RISE starts its insertion curve from.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    img = torch.as_tensor(image)
    if img.dim() != 3:
        raise ValueError(f"image must be (C, H, W), got shape {tuple(img.shape)}")
    if not img.is_floating_point():
        img = img.float()
    c = img.shape[0]
    r = kernel_size // 2
    t = torch.arange(-r, r + 1, dtype=img.dtype, device=img.device)
    k = torch.exp(-(t**2) / (2.0 * sigma * sigma))
    k = k / k.sum()
    x = img.unsqueeze(0)
    x = F.pad(x, (r, r, 0, 0), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.pad(x, (0, 0, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x.squeeze(0)


def _prepare(
    image: Any, heatmap: Any, steps: int, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    img = torch.as_tensor(image)
    if img.dim() != 3:
        raise ValueError(f"image must be (C, H, W), got shape {tuple(img.shape)}")
    if not img.is_floating_point():
        img = img.float()
    hm = as_map(heatmap)
    if hm.shape != tuple(img.shape[1:]):
        raise ValueError(
            f"heatmap shape {hm.shape} differs from the image's (H, W) {tuple(img.shape[1:])}"
        )
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    order = np.argsort(-hm.reshape(-1), kind="stable")  # descending; ties in raster order
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    return img, torch.from_numpy(rank).to(img.device).view(hm.shape)


def _baseline(img: torch.Tensor, baseline: Baseline) -> torch.Tensor:
    if isinstance(baseline, str):
        if baseline != "blur":
            raise ValueError(f"baseline must be a number, a tensor or 'blur', got {baseline!r}")
        return gaussian_blur(img)
    base = torch.as_tensor(baseline, dtype=img.dtype, device=img.device)
    try:
        return torch.broadcast_to(base, img.shape)
    except RuntimeError as err:
        raise ValueError(
            f"baseline of shape {tuple(base.shape)} does not broadcast to {tuple(img.shape)}"
        ) from err


def _curve(
    score_fn: ScoreFn,
    source: torch.Tensor,
    target: torch.Tensor,
    rank: torch.Tensor,
    steps: int,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    n_pix = rank.numel()
    counts = (np.arange(steps + 1, dtype=np.int64) * n_pix) // steps
    scores: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, counts.size, batch_size):
            chunk = torch.from_numpy(counts[start : start + batch_size]).to(rank.device)
            changed = rank.unsqueeze(0) < chunk.view(-1, 1, 1)  # (B, H, W)
            batch = torch.where(changed.unsqueeze(1), target.unsqueeze(0), source.unsqueeze(0))
            out = np.asarray(to_numpy(score_fn(batch)), dtype=np.float64).reshape(-1)
            if out.size != chunk.numel():
                raise ValueError(
                    f"score_fn returned {out.size} scores for a batch of {chunk.numel()}"
                )
            scores.append(out)
    return counts / n_pix, np.concatenate(scores)


def deletion_curve(
    score_fn: ScoreFn,
    image: Any,
    heatmap: Any,
    steps: int = 100,
    baseline: Baseline = 0.0,
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Score as the most salient pixels are replaced by ``baseline`` (RISE deletion).

    Step ``i`` of ``steps`` removes the first ``floor(i * H * W / steps)`` pixels in decreasing
    heatmap order. Returns ``(fractions, scores)``, both of length ``steps + 1``, fractions being
    the exact removed fraction (0 to 1). ``baseline``: a number, a tensor broadcastable to
    (C, H, W), or ``"blur"``. ``score_fn`` runs under ``torch.no_grad`` on batches of at most
    ``batch_size`` images.
    """
    img, rank = _prepare(image, heatmap, steps, batch_size)
    return _curve(score_fn, img, _baseline(img, baseline), rank, int(steps), int(batch_size))


def insertion_curve(
    score_fn: ScoreFn,
    image: Any,
    heatmap: Any,
    steps: int = 100,
    baseline: Baseline = "blur",
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Score as the most salient pixels are restored onto ``baseline`` (RISE insertion).

    The mirror of :func:`deletion_curve`: step ``i`` shows the first ``floor(i * H * W / steps)``
    pixels of ``image`` in decreasing heatmap order over the baseline (default: the image
    blurred with :func:`gaussian_blur`, as in RISE).
    """
    img, rank = _prepare(image, heatmap, steps, batch_size)
    return _curve(score_fn, _baseline(img, baseline), img, rank, int(steps), int(batch_size))

