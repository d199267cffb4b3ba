"""The segmentation target: a class's logits summed over a pixel region."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from camlens.errors import TargetError


class SegmentationTarget:
    """Explain a segmenter's decision for classes over a region of pixels.

    For output logits z (B, C, H, W) (a tensor, or torchvision's ``{"out": z, ...}``), class
    ``classes[k]`` and mask M (H, W) or (B, H, W):

        y_bk = sum_{p} z[b, classes[k], p] * M[b, p]

    ``mask=None`` uses each sample's predicted region of the class, M[b, p] =
    [argmax_c z[b, c, p] == classes[k]] (fixed, not differentiated); an empty region is a
    :class:`TargetError`. K classes give K targets of one call.
    """

    def __init__(self, classes: int | Sequence[int], mask: Any = None) -> None:
        self.classes = [classes] if isinstance(classes, int) else list(classes)
        if not self.classes or not all(isinstance(c, int) and not isinstance(c, bool)
                                       for c in self.classes):
            raise TargetError(f"classes must be an int or a list of ints, got {classes!r}")
        self.mask = None if mask is None else torch.as_tensor(mask).detach()
        if self.mask is not None:
            if self.mask.dim() not in (2, 3):
                raise TargetError(f"mask must be (H, W) or (B, H, W), got shape "
                                  f"{tuple(self.mask.shape)}")
            if not torch.isfinite(self.mask.double()).all():
                raise TargetError("mask holds NaN or Inf values; give a 0/1 or weight mask")

    def __call__(self, output: Any) -> torch.Tensor:
        """(B, C, H, W) logits (or a dict with 'out') -> (B, K) scores."""
        logits = output.get("out") if isinstance(output, Mapping) else output
        if not isinstance(logits, torch.Tensor) or logits.dim() != 4:
            what = (f"shape {tuple(logits.shape)}" if isinstance(logits, torch.Tensor)
                    else type(output).__name__)
            raise TargetError(f"SegmentationTarget needs (B, C, H, W) logits or a dict with "
                              f"'out' holding them, got {what}")
        n = logits.shape[1]
        bad = [c for c in self.classes if not 0 <= c < n]
        if bad:
            raise TargetError(f"class {bad[0]} is out of range: the segmenter has {n} classes, "
                              f"so classes run from 0 to {n - 1}")
        picked = logits[:, self.classes]  # (B, K, H, W)
        if self.mask is None:
            label = logits.detach().argmax(dim=1, keepdim=True)
            cls = torch.tensor(self.classes, device=logits.device)[None, :, None, None]
            mask = (label == cls).to(logits.dtype)
            empty = (mask.sum(dim=(2, 3)) == 0).nonzero()
            if len(empty):
                b, k = (int(v) for v in empty[0])
                raise TargetError(f"class {self.classes[k]} is predicted at no pixel of image "
                                  f"{b}, so its region is empty; pass mask= to choose pixels")
        else:
            if tuple(self.mask.shape[-2:]) != tuple(logits.shape[-2:]) or (
                    self.mask.dim() == 3 and self.mask.shape[0] not in (1, logits.shape[0])):
                raise TargetError(f"mask of shape {tuple(self.mask.shape)} does not fit the "
                                  f"logits {tuple(logits.shape)}: give (H, W) or (B, H, W) = "
                                  f"({logits.shape[0]}, {logits.shape[2]}, {logits.shape[3]})")
            m = self.mask.to(logits.device, logits.dtype)
            mask = m[None, None] if m.dim() == 2 else m[:, None]
        return (picked * mask).sum(dim=(2, 3))
