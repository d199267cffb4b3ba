"""The model an evaluation runs: what the caller gave, resolved to the registry's record.

:func:`resolve_model` is the single place evaluation turns a model argument (a spec string, a
:class:`camlens.models.ModelRecord` or a bare module) into the
:class:`~camlens.models.ModelRecord` it runs; spec strings go through the model registry.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from camlens.models.registry import ModelRecord
from camlens.targets import logits_of

Preprocess = Callable[[Image.Image], torch.Tensor]
"""PIL image -> (3, H, W) model input; must not crop (boxes and masks are mapped back)."""

UNIT_MEAN, UNIT_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
""":func:`to_unit_tensor` as a normalisation: ``(pixel / 255 - 0) / 1``."""


def to_unit_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image -> float32 (3, H, W) RGB in [0, 1]: the synthetic nets' input, no resizing."""
    array = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _known_layer(model: nn.Module) -> str | None:
    """The default layer of a camlens synthetic net given as a module, else None."""
    from camlens.synthetic import DEFAULT_LAYERS, NETS

    return next((DEFAULT_LAYERS[n] for n, cls in NETS.items() if type(model) is cls), None)


def _of_module(model: nn.Module, preprocess: Preprocess | None, default_layer: str | None,
               labels: Any, name: str) -> ModelRecord:
    """A record of a module handed over as it is (its mode left as given): what is not known
    is None; no preprocess: :func:`to_unit_tensor`."""
    names = [str(n) for n in labels] if labels is not None else []
    unit = preprocess is None
    return ModelRecord(model, name, names, preprocess or to_unit_tensor, default_layer,
                       input_size=None, mean=UNIT_MEAN if unit else None,
                       std=UNIT_STD if unit else None,
                       num_classes=len(names) if names else None, device=device_of(model),
                       labels_source="given" if names else "none")


def resolve_model(
    model: Any, preprocess: Preprocess | None = None, default_layer: str | None = None,
    device: str | torch.device = "cpu", weights: str | None = None,
) -> ModelRecord:
    """Normalise a model argument to a :class:`~camlens.models.ModelRecord`.

    ``model``: a ``ModelRecord`` (kept); an ``nn.Module`` (preprocess :func:`to_unit_tensor`;
    the default layer is known for camlens's synthetic nets; class indices as labels); an
    object with ``model`` (and optionally ``preprocess``, ``default_layer``, ``labels``,
    ``name``); or a spec string, loaded through the model registry
    (:func:`camlens.models.load_model`, with ``weights`` and ``device``): ``synthetic:vgg``,
    ``torchvision:resnet50``, ``path/to/file.py:FACTORY``... ``preprocess`` and
    ``default_layer`` override the record's (a caller's ``preprocess`` makes its input size,
    mean and std unknown: None). A model in training mode is left so (``camlens.explain``
    warns about it).
    """
    if isinstance(model, ModelRecord):
        res = model
    elif isinstance(model, str):
        from camlens.models import load_model

        loaded = load_model(model, weights=weights, device=device)
        name = loaded.name + (f" + {weights}" if weights else "")
        res = dataclasses.replace(loaded, name=name)
        if model.startswith("synthetic:"):
            # camlens's synthetic nets take the world's pixels as they are (RGB / 255)
            res = dataclasses.replace(res, preprocess=to_unit_tensor, input_size=None)
    elif isinstance(model, nn.Module):
        res = _of_module(model, None, _known_layer(model), None, type(model).__name__)
    elif isinstance(getattr(model, "model", None), nn.Module):
        res = _of_module(model.model, getattr(model, "preprocess", None),
                         getattr(model, "default_layer", None), getattr(model, "labels", None),
                         str(getattr(model, "name", type(model.model).__name__)))
    else:
        raise TypeError(
            "model must be an nn.Module, a camlens.models.ModelRecord, or a spec string such as "
            f"'synthetic:vgg'; got {type(model).__name__}"
        )
    if preprocess is not None:
        res = dataclasses.replace(res, preprocess=preprocess, input_size=None, mean=None,
                                  std=None)
    if default_layer is not None:
        res = dataclasses.replace(res, default_layer=default_layer)
    return res


def device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits (B, N) float32 on the CPU, without autograd."""
    with torch.no_grad():
        return logits_of(model(x)).detach().float().cpu()


_N_CLASSES: weakref.WeakKeyDictionary[nn.Module, int] = weakref.WeakKeyDictionary()


def n_classes(model: nn.Module, x: torch.Tensor) -> int:
    """Number of classes of ``model`` (one forward of one image, remembered per model)."""
    n = _N_CLASSES.get(model)
    if n is None:
        n = int(predict(model, x[:1]).shape[1])
        _N_CLASSES[model] = n
    return n


def label_index(labels: list[str] | None, label_map: Any) -> Callable[[Any], int]:
    """Ground-truth label -> class index: ``label_map`` (dict or callable), else ints as they
    are, else the position of the name in the model's labels."""
    if callable(label_map):
        return lambda lab: int(label_map(lab))
    if isinstance(label_map, Mapping):
        return lambda lab: int(label_map[lab])
    if label_map is not None:
        raise TypeError("label_map must be a dict or a callable")
    positions = {name: i for i, name in enumerate(labels)} if labels else {}

    def index(lab: Any) -> int:
        if isinstance(lab, (int, np.integer)):
            return int(lab)
        if lab in positions:
            return positions[lab]
        raise ValueError(
            f"ground-truth label {lab!r} is not a class index nor one of the model's labels; "
            "pass label_map={name: index} (e.g. camlens.evaluate.wnid_to_index(synsets))"
        )

    return index
