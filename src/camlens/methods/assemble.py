"""Turning per-method maps into the :class:`Explanation` record (shared by every method)."""

from __future__ import annotations

from typing import Any

import torch

from camlens import maps
from camlens.evidence import Evidence, require_finite
from camlens.explanation import Explanation
from camlens.methods.registry import Job
from camlens.targets import output_tensor


def heatmaps(job: Job, raws: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer maps [(B, K, h, w)] -> (maps (B, K, H, W) at input size in [0, 1], raw).

    One layer: raw is its map as is. Several: each is upsampled and min-max scaled, and raw is
    their mean (the fused map before its final scaling)."""
    size = job.image.shape[-2:] if job.image.dim() == 4 else raws[0].shape[-2:]
    if len(raws) == 1:
        return maps.minmax(maps.upsample(raws[0], size)).float(), raws[0].detach()
    fused = maps.fuse([maps.minmax(maps.upsample(r, size)) for r in raws])
    return maps.minmax(fused).float(), fused.detach()


def result(job: Job, ev: Evidence, method: str, maps_: torch.Tensor, raw: torch.Tensor,
           weights: torch.Tensor | None, **options: Any) -> Explanation:
    """The frozen record, every tensor detached and contiguous; a non-finite map is an error."""
    require_finite(raw.detach(), f"the {method} map's values")
    out = output_tensor(ev.output)
    return Explanation(
        method=method,
        maps=maps_.detach().contiguous(),  # whatever layout the model ran in
        raw=raw.detach().contiguous(),
        scores=ev.scores.detach(),
        weights=None if weights is None else weights.detach(),
        targets=ev.indices,
        output=out.detach() if isinstance(out, torch.Tensor) else None,
        layers=job.layer_names,
        options=options,
    )
