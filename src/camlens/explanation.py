"""The result record every method returns and every consumer (viz, CLI, evaluation) reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class Explanation:
    """What was explained and the evidence, all detached from autograd.

    Shapes (B samples, K targets per sample, input H x W, layer h x w, C channels):

    - ``maps``: (B, K, H, W) heatmaps in [0, 1] (each map min-max scaled), or (B, K, 3, H, W)
      for pixel-space methods (Guided Backprop, Deconvnet and their Grad-CAM products), scaled
      per map as 0.5 + 0.5 * raw / max|raw|, so 0.5 means "no contribution".
    - ``raw``: (B, K, h, w) the map before upsampling and scaling (for Grad-CAM: Eq. 2 as is),
      or (B, K, 3, H, W) raw input gradients for pixel-space methods.
    - ``weights``: (B, K, C) neuron importances alpha_k^c (Eq. 1), or None where a method has none.
    - ``scores``: (B, K) the explained scores y^c.
    - ``targets``: (B, K) class indices that were explained, or None for callable targets.
    - ``output``: the model's output on the input (detached) when it is a tensor, or its
      ``.logits`` / ``["logits"]`` tensor; else None.
    """

    method: str
    maps: torch.Tensor
    raw: torch.Tensor
    scores: torch.Tensor
    weights: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    output: torch.Tensor | None = None
    layers: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def pixel_space(self) -> bool:
        """True when ``maps`` are (B, K, 3, H, W) input-space maps rather than heatmaps."""
        return self.maps.dim() == 5

    def _repr_png_(self) -> bytes:
        from camlens import viz

        return viz.explanation_png(self)
