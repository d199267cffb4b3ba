"""The segmentation net: a small FCN head on the shipped world v2 ``vgg`` net's frozen features.

SEC fine-tunes DeepLab, a VGG-16 initialised from ImageNet classification; ours is the same idea
at our scale and budget: the VGG-like classifier's convolutions are kept frozen (so their
features are computed once per image and training touches only the head, minutes on 2 cores),
and a head is trained with SEC's losses:

    f3 = conv4 block output (128 x 14 x 14, stride 8)  -> 3x3 conv, ReLU, 3x3 conv, ReLU
                                                        -> bilinear x2 to 28 x 28
    f2 = conv3 block output ( 64 x 28 x 28, stride 4)  -> 1x1 conv, ReLU
    concat -> 3x3 conv, ReLU -> 1x1 conv -> L logits (28 x 28, stride 4: SEC's 41 x 41 output
    is stride 8 on 321 px inputs; world v2 images are 112 px, so we keep one more level).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from camlens.synthetic.v2.nets import INPUT_MEAN, INPUT_STD

__all__ = ["GRID", "SegHead", "vgg_features"]

#: The head's output grid on world v2's 112 px images.
GRID = 28
#: Slices of the world v2 ``VGGNet.features``: up to relu3_2 (28x28), then up to relu4_3 (14x14).
_F2_END, _F3_END = 12, 19


@torch.no_grad()
def vgg_features(vgg: nn.Module, images: torch.Tensor, batch: int = 64
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen features (f2 (B, 64, 28, 28), f3 (B, 128, 14, 14)) of the world v2 ``vgg`` net
    (``camlens.synthetic.v2.load_pretrained("vgg")``) on images (B, 3, 112, 112) in [0, 1]."""
    features = getattr(vgg, "features", None)
    if not isinstance(features, nn.Sequential) or len(features) < _F3_END:
        raise ValueError("vgg_features needs world v2's VGGNet (load_pretrained('vgg'))")
    f2s, f3s = [], []
    for start in range(0, images.shape[0], batch):
        x = (images[start:start + batch] - INPUT_MEAN) / INPUT_STD
        f2 = features[:_F2_END](x)
        f3 = features[_F2_END:_F3_END](f2.clone())  # in-place ReLUs must not touch f2
        f2s.append(f2)
        f3s.append(f3)
    return torch.cat(f2s), torch.cat(f3s)


class SegHead(nn.Module):
    """FCN head: (f2, f3) -> logits (B, num_labels, 28, 28); see the module docstring."""

    def __init__(self, num_labels: int, width: int = 64, c2: int = 64, c3: int = 128) -> None:
        super().__init__()
        self.deep = nn.Sequential(nn.Conv2d(c3, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.skip = nn.Sequential(nn.Conv2d(c2, width, 1), nn.ReLU())
        self.fuse = nn.Sequential(nn.Conv2d(2 * width, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, num_labels, 1))

    def forward(self, f2: torch.Tensor, f3: torch.Tensor) -> torch.Tensor:
        deep = F.interpolate(self.deep(f3), size=f2.shape[-2:], mode="bilinear",
                             align_corners=False)
        return self.fuse(torch.cat([self.skip(f2), deep], dim=1))
