"""Two small CNNs for the synthetic world, laid out like the paper's networks.

Both share the same convolutional trunk layout, an ``nn.Sequential`` named ``features``::

    index  module                          output (for a 64x64 input)
    0      Conv2d(3, w1, 3, padding=1)     w1 x 64 x 64
    1      ReLU(inplace=True)
    2      Conv2d(w1, w1, 3, padding=1)
    3      ReLU(inplace=True)
    4      MaxPool2d(2)                    w1 x 32 x 32
    5      Conv2d(w1, w2, 3, padding=1)
    6      ReLU(inplace=True)
    7      Conv2d(w2, w2, 3, padding=1)
    8      ReLU(inplace=True)
    9      MaxPool2d(2)                    w2 x 16 x 16
    10     Conv2d(w2, w3, 3, padding=1)
    11     ReLU(inplace=True)
    12     Conv2d(w3, w3, 3, padding=1)    <- last convolutional layer
    13     ReLU(inplace=True)              <- its rectified output, 16 x 16
    (14    MaxPool2d(2), VGGStyleNet only) w3 x 8 x 8

with widths (w1, w2, w3) = (16, 32, 64) by default.

- :class:`VGGStyleNet` (like VGG-16): ``features`` (ending in the max-pool ``features.14``),
  ``avgpool`` (adaptive to 4x4), then ``classifier`` = Linear-ReLU-Dropout-Linear on the
  flattened 4x4 maps. Fully-connected layers follow the convolutions, so CAM does not
  apply; Grad-CAM does.
- :class:`GAPNet` (the CAM architecture): ``features`` (ending in the ReLU ``features.13``),
  ``pool`` (global average pooling) and one Linear ``fc``. Here Grad-CAM at ``features.13``
  equals CAM divided by the number of map positions, 16 * 16 (Grad-CAM paper, Sec. 3.1).

Both take images in [0, 1] (N, 3, H, W) and standardise them internally (fixed constants), and
return one logit per class of :data:`camlens.synthetic.CLASSES` (multi-label: sigmoid).

The ReLUs are ``inplace=True`` as in torchvision's VGG: the tensor a forward hook sees at
``features.12`` (the conv output) is overwritten by ``features.13``. The Grad-CAM layer of the
paper is the *rectified* last conv maps (Caffe's in-place ``relu5_3`` on ``conv5_3``), so
:data:`DEFAULT_LAYERS` names ``features.13``; :data:`LAST_CONV` names ``features.12``.
"""

from __future__ import annotations

import torch
from torch import nn

from camlens.synthetic.world import NUM_CLASSES

__all__ = ["VGGStyleNet", "GAPNet", "NETS", "DEFAULT_LAYERS", "LAST_CONV"]


def _trunk(widths: tuple[int, int, int], final_pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    c_in = 3
    for i, w in enumerate(widths):
        layers += [
            nn.Conv2d(c_in, w, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(w, w, 3, padding=1),
            nn.ReLU(inplace=True),
        ]
        if i < len(widths) - 1 or final_pool:
            layers.append(nn.MaxPool2d(2))
        c_in = w
    return nn.Sequential(*layers)


# Inputs are images in [0, 1]; the nets standardise them with these fixed constants (roughly the
# synthetic images' mean and standard deviation) before the first convolution.
INPUT_MEAN, INPUT_STD = 0.45, 0.25


def _standardise(x: torch.Tensor) -> torch.Tensor:
    return (x - INPUT_MEAN) / INPUT_STD


def _init(module: nn.Module) -> None:
    """He initialisation of the convolutions (as torchvision's VGG); Linear layers keep
    PyTorch's default (torchvision's N(0, 0.01) left whole classes unlearnt here)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class VGGStyleNet(nn.Module):
    """conv3x3-ReLU-conv3x3-ReLU-maxpool x 3, then Linear-ReLU-Dropout-Linear.

    Last conv layer ``features.12``, its rectified output ``features.13`` (16x16 at 64x64).
    """

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        widths: tuple[int, int, int] = (16, 32, 64),
        hidden: int = 128,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.features = _trunk(widths, final_pool=True)
        self.avgpool = nn.AdaptiveAvgPool2d((4, 4))
        self.classifier = nn.Sequential(
            nn.Linear(widths[-1] * 4 * 4, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(_standardise(x)))
        return self.classifier(torch.flatten(x, 1))


class GAPNet(nn.Module):
    """conv blocks, global average pooling, one Linear ``fc`` (CAM applies).

    Last conv layer ``features.12``; ``features.13`` (its in-place ReLU, 16x16 at 64x64) is
    the tensor the global average pool reads, so CAM and Grad-CAM coincide there.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, widths: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        self.features = _trunk(widths, final_pool=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(_standardise(x))), 1))


#: name -> class, the names :func:`camlens.synthetic.load_pretrained` accepts.
NETS: dict[str, type[nn.Module]] = {"vggstyle": VGGStyleNet, "gapnet": GAPNet}

#: name -> the layer Grad-CAM reads by default: the rectified last conv maps.
DEFAULT_LAYERS: dict[str, str] = {"vggstyle": "features.13", "gapnet": "features.13"}

#: name -> the last nn.Conv2d (its output is overwritten in place by the next ReLU).
LAST_CONV: dict[str, str] = {"vggstyle": "features.12", "gapnet": "features.12"}
