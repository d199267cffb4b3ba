"""The paper's four kinds of net, sized for world v2's 112x112 images and 2 CPU cores.

Every net takes images in [0, 1], (N, 3, 112, 112), standardises them with fixed constants
and returns one logit per class of :data:`CLASSES` (single-label: softmax). Grad-CAM's
default layer (:data:`DEFAULT_LAYERS`) is the rectified output of the last convolution, as
``relu5_3`` after ``conv5_3`` in VGG-16; the ReLUs are in place as in torchvision.

- :class:`VGGNet` ``vgg`` (Table 1's VGG-16): conv blocks of 1, 2, 2 and 3 3x3 convolutions
  (16, 32, 64, 128 channels), max-pooling after the first three, so that the last block runs
  at 14x14 like conv5 of VGG-16 at 224; then pool5 (7x7) and three fully-connected layers
  (256, 256, classes) with dropout.
- :class:`VGGGAPNet` ``vgg_gap`` (CAM's VGG-16-GAP): the same convolutions, no pool5, one more
  3x3 convolution (256 channels, 14x14), global average pooling and one linear layer ``fc``.
- :class:`AlexNet` ``alexnet``: 5x5/2 and 5x5 convolutions with overlapping 3x3/2 pooling,
  three 3x3 convolutions at 14x14 (AlexNet's conv5 is 13x13), pool5 (7x7), three
  fully-connected layers.
- :class:`ResNet` ``resnet`` (Appendix G): a 3x3/2 stem and four stages of two basic residual
  blocks (16, 32, 64, 128 channels at 56, 28, 14, 7) with batch norm, global average pooling
  and ``fc``. Each block (``layer3.0``, ``layer4.1``...) is a module whose output is the
  block's rectified sum, for a block-by-block Grad-CAM.

:data:`CONV_LAYERS` lists each net's rectified conv outputs (blocks for the ResNet) from the
first to the last, for ablations over layers (Appendix B, G).

The plain nets (``vgg``, ``vgg_gap``, ``alexnet``; :data:`FOLDED`) are trained with a batch norm
after each convolution (``batch_norm=True``: the plain ones did not leave chance level in the
minutes we have) and shipped with the batch norms folded into the convolutions
(:func:`fold_batchnorm`), so the shipped nets hold only conv, ReLU, pooling, dropout and linear
layers, as VGG-16 and AlexNet do, and compute exactly what the trained nets compute in eval mode.
"""

from __future__ import annotations

import torch
from torch import nn

from camlens.synthetic.v2.catalogue import NUM_CLASSES

__all__ = ["VGGNet", "VGGGAPNet", "AlexNet", "ResNet", "NETS", "DEFAULT_LAYERS", "CONV_LAYERS",
           "INPUT_SIZE", "INPUT_MEAN", "INPUT_STD", "fold_batchnorm", "FOLDED"]

INPUT_SIZE = 112
#: Fixed standardisation (about the mean and standard deviation of world v2's pixels).
INPUT_MEAN, INPUT_STD = 0.40, 0.25


def _standardise(x: torch.Tensor) -> torch.Tensor:
    return (x - INPUT_MEAN) / INPUT_STD


def _init(module: nn.Module) -> None:
    """He (fan-in) initialisation of convolutions and hidden linear layers, so that the signal
    keeps its scale through the plain (no batch norm) nets; the output layer starts small.
    (Fan-out He and PyTorch's default linear init shrank the VGG-like net's logits to a std of
    0.04 at init, and it did not leave chance level in 120 steps.)"""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    for m in module.modules():
        if isinstance(m, nn.Conv2d) or (isinstance(m, nn.Linear) and m is not linears[-1]):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    nn.init.normal_(linears[-1].weight, std=0.01)
    nn.init.zeros_(linears[-1].bias)


def _vgg_features(final_pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    c = 3
    for i, (width, n) in enumerate(((16, 1), (32, 2), (64, 2), (128, 3))):
        for _ in range(n):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(inplace=True)]
            c = width
        if i < 3 or final_pool:
            layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def _with_bn(seq: nn.Sequential) -> nn.Sequential:
    """``seq`` with a BatchNorm2d after every Conv2d (for training; see :func:`fold_batchnorm`)."""
    layers: list[nn.Module] = []
    for m in seq:
        layers.append(m)
        if isinstance(m, nn.Conv2d):
            layers.append(nn.BatchNorm2d(m.out_channels))
    return nn.Sequential(*layers)


def _fc_head(in_features: int, num_classes: int, hidden: int = 256) -> nn.Sequential:
    """FC-ReLU-Dropout x 2 + FC, as VGG-16's and AlexNet's heads. Dropout is light (0.1, not
    0.5): every training image is new, so there is no overfitting to fight, and 0.5 on a
    256-wide head kept the VGG-like net at chance for its first 80 steps."""
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(0.1),
        nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(0.1),
        nn.Linear(hidden, num_classes),
    )


class VGGNet(nn.Module):
    """VGG-16-like: ``features`` (last conv ``features.17``, its ReLU ``features.18`` at
    14x14, pool5 ``features.19``), ``classifier`` = FC-ReLU-Dropout x 2 + FC."""

    def __init__(self, num_classes: int = NUM_CLASSES, batch_norm: bool = False) -> None:
        super().__init__()
        self.features = _vgg_features(final_pool=True)
        if batch_norm:
            self.features = _with_bn(self.features)
        self.classifier = _fc_head(128 * 7 * 7, num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(_standardise(x)), 1))


class VGGGAPNet(nn.Module):
    """VGG-16-GAP-like (CAM): ``features`` ends with an extra conv ``features.19`` (256
    channels) and its ReLU ``features.20`` at 14x14; ``pool`` (GAP) and ``fc``."""

    def __init__(self, num_classes: int = NUM_CLASSES, batch_norm: bool = False) -> None:
        super().__init__()
        self.features = _vgg_features(final_pool=False)
        self.features.append(nn.Conv2d(128, 256, 3, padding=1))
        self.features.append(nn.ReLU(inplace=True))
        if batch_norm:
            self.features = _with_bn(self.features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(256, num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(_standardise(x))), 1))


class AlexNet(nn.Module):
    """AlexNet-like: conv1 5x5/2 (56), pool (28), conv2 5x5, pool (14), conv3-5 3x3 at 14x14
    (conv5 ``features.10``, its ReLU ``features.11``), pool5 (7x7), ``classifier``."""

    def __init__(self, num_classes: int = NUM_CLASSES, batch_norm: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 5, stride=2, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
            nn.Conv2d(64, 96, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(96, 96, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(96, 64, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        if batch_norm:
            self.features = _with_bn(self.features)
        self.classifier = _fc_head(64 * 7 * 7, num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(_standardise(x)), 1))


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), the shortcut a 1x1/2 conv + bn
    where the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet-18-like: ``stem`` (3x3/2, 56x56), ``layer1``-``layer4`` (two basic blocks each;
    56, 28, 14, 7), ``pool`` (GAP) and ``fc``; Grad-CAM at ``layer4`` (7x7)."""

    def __init__(self, num_classes: int = NUM_CLASSES, widths: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        stages = [nn.Sequential(BasicBlock(c_in, c_out, 1 if i == 0 else 2),
                                BasicBlock(c_out, c_out, 1))
                  for i, (c_in, c_out) in enumerate(zip((widths[0],) + widths[:-1], widths))]
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        c = widths[-1]
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(_standardise(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """The plain net (no batch norm) that computes what ``model`` (built with
    ``batch_norm=True``) computes in eval mode: each BatchNorm2d is folded into the convolution
    before it, W' = W g / sqrt(v + eps), b' = (b - m) g / sqrt(v + eps) + beta. Returns a new
    module in eval mode; ``model`` is not changed."""
    plain = type(model)()
    plain_features = plain.features
    trained_features = model.features
    if not isinstance(plain_features, nn.Sequential) or not isinstance(trained_features,
                                                                        nn.Sequential):
        raise TypeError(f"{type(model).__name__} has no nn.Sequential 'features' to fold")
    convs = [m for m in plain_features if isinstance(m, nn.Conv2d)]
    trained = list(trained_features)
    k = 0
    for i, m in enumerate(trained):
        if not isinstance(m, nn.Conv2d):
            continue
        w = m.weight.clone()
        b = m.bias.clone() if m.bias is not None else torch.zeros(w.shape[0])
        bn = trained[i + 1] if i + 1 < len(trained) else None
        if isinstance(bn, nn.BatchNorm2d):
            assert bn.running_mean is not None and bn.running_var is not None
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            w = w * scale[:, None, None, None]
            b = (b - bn.running_mean) * scale + bn.bias
        target = convs[k]
        target.weight.copy_(w)
        if target.bias is not None:
            target.bias.copy_(b)
        k += 1
    if k != len(convs):
        raise ValueError(f"{type(model).__name__} has {k} convolutions, the plain net {len(convs)}")
    rest = {n: p for n, p in model.state_dict().items() if not n.startswith("features.")}
    plain.load_state_dict({**plain_features.state_dict(prefix="features."), **rest}, strict=True)
    return plain.eval()


#: Nets trained with batch norm after each convolution and shipped folded (plain).
FOLDED = ("vgg", "vgg_gap", "alexnet")


#: name -> class.
NETS: dict[str, type[nn.Module]] = {
    "vgg": VGGNet, "vgg_gap": VGGGAPNet, "alexnet": AlexNet, "resnet": ResNet,
}


def _rectified_convs(net: nn.Module) -> tuple[str, ...]:
    """Names of the ReLUs that directly follow a Conv2d in a ``features`` Sequential, or of the
    residual blocks, in forward order."""
    if isinstance(net, ResNet):
        return tuple(f"layer{i}.{j}" for i in range(1, 5) for j in range(2))
    feats = list(net.features)  # type: ignore[arg-type]
    return tuple(f"features.{i}" for i in range(1, len(feats))
                 if isinstance(feats[i], nn.ReLU) and isinstance(feats[i - 1], nn.Conv2d))


#: name -> rectified conv outputs (ResNet: residual blocks), first to last.
CONV_LAYERS: dict[str, tuple[str, ...]] = {n: _rectified_convs(c()) for n, c in NETS.items()}

#: name -> the layer Grad-CAM (and CAM, on the GAP nets) reads by default: the last rectified
#: conv maps (14x14 for vgg, vgg_gap and alexnet; the last stage, ``layer4``, 7x7, for resnet).
DEFAULT_LAYERS: dict[str, str] = {n: CONV_LAYERS[n][-1] for n in NETS} | {"resnet": "layer4"}
