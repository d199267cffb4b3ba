"""A shared zoo of small, seeded toy architectures for the numbers-based tests.

Every model is built from a fixed seed, put in eval mode and (by default) converted to float64,
so that reference implementations can be compared with camlens to tight tolerances. Each class
names a good Grad-CAM layer in its ``LAYER`` attribute (a dotted name for ``camlens.explain``),
and ``INPUT`` gives the image shape (C, H, W) it expects. Batch-norm layers get random running
statistics and affine parameters, so that they are not identities in eval mode.

Use :func:`build` (or the ``make_*`` helpers) rather than the bare constructors: it seeds, sets
eval mode and the dtype. :func:`sample` draws a seeded random input batch for a model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

DTYPE = torch.float64
NUM_CLASSES = 5


def _randomize_bn(module: nn.Module, gamma: tuple[float, float] = (0.5, 1.5)) -> None:
    """Give every BatchNorm2d random eval-mode statistics and affine parameters (caller seeds)."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(*gamma)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)


class VGGNet(nn.Module):
    """VGG-style: (conv-ReLU-conv-ReLU-maxpool) x 2, flatten, Linear-ReLU-Dropout-Linear.

    ReLUs are ``nn.ReLU(inplace=True)`` modules, as in torchvision's VGG. 16x16 input; the
    Grad-CAM layer ``features.8`` is the last rectified conv map (16 channels, 8x8), after which
    come a max-pool and the fully-connected head (with one more ReLU).
    """

    LAYER = "features.8"
    LAYERS = ("features.3", "features.8")  # two layers (16x16 and 8x8) for fusion tests
    INPUT = (3, 16, 16)

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),      # 0, 1
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True),      # 2, 3
            nn.MaxPool2d(2),                                           # 4
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True),     # 5, 6
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(inplace=True),    # 7, 8
            nn.MaxPool2d(2),                                           # 9
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * 4 * 4, 32), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(32, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class BasicBlock(nn.Module):
    """torchvision-style basic block: ONE ``self.relu`` (in place) used twice per block."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNetNet(nn.Module):
    """ResNet-style: stem, two stages of basic blocks (reused in-place ReLU), GAP + fc.

    16x16 input; ``layer2`` (16 channels, 8x8) is the last block's rectified output.
    ``layer2.0.bn2`` is followed by an in-place ``+=`` and an in-place ReLU (for capture tests).
    """

    LAYER = "layer2"
    LAYERS = ("layer1", "layer2")
    INPUT = (3, 16, 16)

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class FunctionalNet(nn.Module):
    """Rectifiers only as functions: ``F.relu``, ``torch.relu``, ``x.relu_()``, ``x.relu()``.

    No ReLU modules at all. 16x16 input; ``conv3`` (12 channels, 8x8) is followed by an in-place
    ``relu_`` on its output.
    """

    LAYER = "conv3"
    LAYERS = ("conv2", "conv3")
    INPUT = (3, 16, 16)

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 12, 3, padding=1)
        self.fc1 = nn.Linear(12 * 4 * 4, 24)
        self.fc2 = nn.Linear(24, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = self.conv3(x).relu_()
        x = F.max_pool2d(x, 2).flatten(1)
        return self.fc2(self.fc1(x).relu())


class MobileNet(nn.Module):
    """MobileNet/EfficientNet-style: ``nn.ReLU6`` modules and ``F.relu6``, depthwise convs.

    Stem conv-BN-ReLU6, an inverted-residual block (1x1 expand + F.relu6, 3x3 depthwise stride 2
    + in-place ReLU6 module, 1x1 linear projection), a second one with a residual connection, a
    1x1 head conv-BN-ReLU6, GAP + Dropout + Linear. BN scales are large enough that some
    pre-activations exceed 6, so the upper bound of ReLU6 matters. 16x16 input; ``head``
    (16 channels, 8x8).
    """

    LAYER = "head"
    LAYERS = ("stem", "head")
    INPUT = (3, 16, 16)

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU6())
        self.expand1 = nn.Conv2d(8, 16, 1, bias=False)
        self.bn_e1 = nn.BatchNorm2d(16)
        self.dw1 = nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16, bias=False)
        self.bn_d1 = nn.BatchNorm2d(16)
        self.act_d1 = nn.ReLU6(inplace=True)
        self.project1 = nn.Conv2d(16, 12, 1, bias=False)
        self.bn_p1 = nn.BatchNorm2d(12)
        self.expand2 = nn.Conv2d(12, 24, 1, bias=False)
        self.bn_e2 = nn.BatchNorm2d(24)
        self.dw2 = nn.Conv2d(24, 24, 3, padding=1, groups=24, bias=False)
        self.bn_d2 = nn.BatchNorm2d(24)
        self.project2 = nn.Conv2d(24, 12, 1, bias=False)
        self.bn_p2 = nn.BatchNorm2d(12)
        self.head = nn.Sequential(nn.Conv2d(12, 16, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU6(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu6(self.bn_e1(self.expand1(x)))
        x = self.act_d1(self.bn_d1(self.dw1(x)))
        x = self.bn_p1(self.project1(x))
        y = F.relu6(self.bn_e2(self.expand2(x)))
        y = F.relu6(self.bn_d2(self.dw2(y)))
        x = x + self.bn_p2(self.project2(y))
        x = self.head(x)
        return self.classifier(self.dropout(torch.flatten(self.pool(x), 1)))


class GapNet(nn.Module):
    """conv-ReLU-conv-ReLU (``features``, 16 channels, 8x8), global average pooling, one linear.

    The architecture of the CAM identity (Sec. 3.1): y^c = sum_k w_k^c (1/Z) sum_ij A^k_ij + b_c.
    """

    LAYER = "features"
    LAYERS = ("features.1", "features")
    INPUT = (3, 16, 16)

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class TwoInputNet(nn.Module):
    """Image + "question" vector (VQA-like): the question gates the image channels and is also
    concatenated to the pooled image features, so the answer depends on both inputs.

    ``forward(image (B, 3, 16, 16), question (B, 6))``; ``body`` (8 channels, 8x8).
    """

    LAYER = "body"
    LAYERS = ("body.1", "body")
    INPUT = (3, 16, 16)
    QUESTION = 6

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.embed = nn.Linear(self.QUESTION, 8)
        self.answer = nn.Linear(8 + self.QUESTION, num_classes)

    def forward(self, image: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        gate = torch.tanh(self.embed(question))
        feats = self.body(image) * gate[:, :, None, None]
        pooled = feats.mean(dim=(2, 3))
        return self.answer(torch.cat([pooled, question], dim=1))


class TinyViT(nn.Module):
    """A vision transformer in miniature: 4x4 patches of a 16x16 image (a 4x4 grid), a class
    token, ``DEPTH`` pre-norm blocks (single-head attention written out, GELU MLP), the head
    on the class token. Grad-CAM needs ``reshape="tokens"`` at ``LAYER``: its output is
    (B, 17, 8) tokens. Not in :data:`ZOO`, whose models all have (B, C, h, w) layers.
    """

    LAYER = "blocks.1.norm1"  # the last block's input: its patch tokens still reach the head
    INPUT = (3, 16, 16)
    DIM = 8
    DEPTH = 2

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        d = self.DIM
        self.patch = nn.Conv2d(3, d, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.5)
        self.pos = nn.Parameter(torch.randn(1, 17, d) * 0.5)
        self.blocks = nn.ModuleList(_ViTBlock(d) for _ in range(self.DEPTH))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)  # (B, 16, d), row-major patches
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1) + self.pos
        for block in self.blocks:
            t = block(t)
        return self.head(self.norm(t)[:, 0])


class _ViTBlock(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.norm1(t)).chunk(3, dim=-1)
        attn = (q @ k.transpose(1, 2) / q.shape[-1] ** 0.5).softmax(dim=-1)
        t = t + self.proj(attn @ v)
        return t + self.mlp(self.norm2(t))


def make_vit(seed: int = 0, dtype: torch.dtype = DTYPE) -> TinyViT:
    torch.manual_seed(seed)
    return TinyViT().to(dtype).eval()


ZOO: dict[str, Callable[[], nn.Module]] = {
    "vgg": VGGNet,
    "resnet": ResNetNet,
    "functional": FunctionalNet,
    "mobilenet": MobileNet,
    "gap": GapNet,
    "two_input": TwoInputNet,
}


def build(name: str, seed: int = 0, dtype: torch.dtype = DTYPE) -> nn.Module:
    """The zoo model ``name``, initialised from ``seed``, in eval mode, in ``dtype``."""
    torch.manual_seed(seed)
    model = ZOO[name]()
    _randomize_bn(model, gamma=(1.5, 4.0) if name == "mobilenet" else (0.5, 1.5))
    return model.to(dtype).eval()


def sample(model: nn.Module, batch: int = 2, seed: int = 1,
           dtype: torch.dtype = DTYPE) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """A seeded random input batch for ``model``: the image, or (image, question)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, *model.INPUT, generator=g, dtype=dtype)
    if isinstance(model, TwoInputNet):
        return image, torch.randn(batch, model.QUESTION, generator=g, dtype=dtype)
    return image


def make_vgg(seed: int = 0) -> VGGNet:
    return build("vgg", seed)  # type: ignore[return-value]


def make_resnet(seed: int = 0) -> ResNetNet:
    return build("resnet", seed)  # type: ignore[return-value]


def make_functional(seed: int = 0) -> FunctionalNet:
    return build("functional", seed)  # type: ignore[return-value]


def make_mobilenet(seed: int = 0) -> MobileNet:
    return build("mobilenet", seed)  # type: ignore[return-value]


def make_gap(seed: int = 0) -> GapNet:
    return build("gap", seed)  # type: ignore[return-value]


def make_two_input(seed: int = 0) -> TwoInputNet:
    return build("two_input", seed)  # type: ignore[return-value]


TINY_NET_SOURCE = """
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.ReLU(),
        )
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))
"""
"""A tiny classifier as the text of a Python file, for ``--model file.py:FACTORY`` tests: each
test file appends its own factory (and variants) to it."""


class TinyGAPNet(nn.Module):
    """An untrained, seeded-by-the-caller GAP net for world v2's 112x112 scenes and 33 classes
    (float32): (conv-ReLU-conv-ReLU) x 3 with max-pooling between, global average pooling,
    one Linear ``fc``. Layer ``features.13`` is the rectified last conv map (28x28), the one the
    pooling reads, so CAM and Grad-CAM coincide there."""

    LAYER = "features.13"

    def __init__(self, num_classes: int = 33, widths: tuple[int, int, int] = (4, 8, 8)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c_in, w, 3, padding=1), nn.ReLU(inplace=True),
                       nn.Conv2d(w, w, 3, padding=1), nn.ReLU(inplace=True)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            c_in = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features((x - 0.4) / 0.25)), 1))
