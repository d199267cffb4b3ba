"""Pure tensor functions shared by the methods: pooling, weighted sums, scaling, upsampling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

Pooling = Literal["gap", "gmp"]


def pool_gradients(grads: torch.Tensor, pooling: Pooling = "gap") -> torch.Tensor:
    """Neuron importances from gradients (..., C, h, w) -> (..., C).

    ``gap`` is Eq. 1, alpha_k^c = 1/Z sum_i sum_j dy^c/dA^k_ij; ``gmp`` takes the maximum
    instead (the paper's pooling ablation, Table 3).
    """
    if pooling == "gap":
        return grads.mean(dim=(-2, -1))
    if pooling == "gmp":
        return grads.amax(dim=(-2, -1))
    raise ValueError(f"pooling must be 'gap' or 'gmp', got {pooling!r}")


def weighted_sum(weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """Eq. 2 before the ReLU: sum_k alpha_k^c A^k.

    weights (B, K, C) x activations (B, C, h, w) -> (B, K, h, w).
    """
    return torch.einsum("bkc,bchw->bkhw", weights, activations)


def minmax(maps: torch.Tensor, dims: int = 2) -> torch.Tensor:
    """Scale each map (the last ``dims`` dimensions) to [0, 1]; a constant map becomes zeros."""
    flat = maps.flatten(start_dim=maps.dim() - dims)
    lo = flat.amin(dim=-1, keepdim=True)
    span = flat.amax(dim=-1, keepdim=True) - lo
    scaled = torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, 1), 0)
    return scaled.view_as(maps)


def signed_scale(maps: torch.Tensor, dims: int = 3) -> torch.Tensor:
    """Scale signed maps (the last ``dims`` dimensions) to [0, 1] keeping zero at 0.5:
    0.5 + 0.5 * m / max|m|. A zero map becomes 0.5 everywhere (no contribution), never NaN."""
    flat = maps.flatten(start_dim=maps.dim() - dims)
    peak = flat.abs().amax(dim=-1, keepdim=True)
    scaled = 0.5 + 0.5 * flat / torch.where(peak > 0, peak, 1)
    return scaled.view_as(maps)


def upsample(maps: torch.Tensor, size: Sequence[int], antialias: bool = False) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of (B, K, h, w) maps to ``size`` = (H, W).

    ``antialias``: a side that shrinks averages over each output pixel's footprint (torch's
    antialiased bilinear; a side that grows is sampled the same either way). ``maps`` itself
    when it has that size already.
    """
    size = tuple(int(s) for s in size)
    if tuple(maps.shape[-2:]) == size:
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False,
                         antialias=antialias)


def fuse(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Fuse same-size [0, 1] maps of several layers: their mean (scale it with :func:`minmax`)."""
    return torch.stack(list(maps)).mean(dim=0)
