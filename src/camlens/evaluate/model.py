"""The model an evaluation runs: what the caller gave, resolved to one record.

:func:`resolve_model` is the single place evaluation turns a model argument (a spec string, a
:class:`camlens.models.ModelRecord` or a bare module) into the :class:`ResolvedModel` it runs;
spec strings go through the model registry.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from camlens.targets import logits_of

Preprocess = Callable[[Image.Image], torch.Tensor]
"""PIL image -> (3, H, W) model input; must not crop (boxes and masks are mapped back)."""


def to_unit_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image -> float32 (3, H, W) RGB in [0, 1]: the synthetic nets' input, no resizing."""
    array = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


@dataclass(frozen=True)
class ResolvedModel:
    """A model with what evaluation needs: the module (its mode left as given),
    preprocessing, default layer, class names (None: indices) and a name for the record."""

    model: nn.Module
    preprocess: Preprocess
    default_layer: str | None
    labels: list[str] | None
    name: str


def _known_layer(model: nn.Module) -> str | None:
    """The default layer of a camlens synthetic net given as a module, else None."""
    from camlens.synthetic import DEFAULT_LAYERS, NETS

    return next((DEFAULT_LAYERS[n] for n, cls in NETS.items() if type(model) is cls), None)


def resolve_model(
    model: Any, preprocess: Preprocess | None = None, default_layer: str | None = None,
    device: str | torch.device = "cpu", weights: str | None = None,
) -> ResolvedModel:
    """Normalise a model argument.

    ``model``: a :class:`ResolvedModel` (kept); an ``nn.Module`` (preprocess
    :func:`to_unit_tensor`; the default layer is known for camlens's synthetic nets); an object
    with ``model`` (and optionally ``preprocess``, ``default_layer``, ``labels``, ``name``) such
    as :class:`camlens.models.ModelRecord`; or a spec string, loaded through the model registry
    (:func:`camlens.models.load_model`, with ``weights`` and ``device``): ``synthetic:vgg``,
    ``torchvision:resnet50``, ``path/to/file.py:FACTORY``... ``preprocess`` and
    ``default_layer`` override the record's.
    A model in training mode is left so (``camlens.explain`` warns about it).
    """
    if isinstance(model, ResolvedModel):
        res = model
    elif isinstance(model, str):
        from camlens.models import load_model

        loaded = load_model(model, weights=weights, device=device)
        name = loaded.name + (f" + {weights}" if weights else "")
        # camlens's synthetic nets take the world's pixels as they are (RGB / 255)
        prep = to_unit_tensor if model.startswith("synthetic:") else loaded.preprocess
        res = ResolvedModel(loaded.model, prep, loaded.default_layer, list(loaded.labels), name)
    elif isinstance(model, nn.Module):
        res = ResolvedModel(model, to_unit_tensor, _known_layer(model), None,
                            type(model).__name__)
    elif isinstance(getattr(model, "model", None), nn.Module):
        labels = getattr(model, "labels", None)
        res = ResolvedModel(model.model, getattr(model, "preprocess", None) or to_unit_tensor,
                            getattr(model, "default_layer", None),
                            list(labels) if labels is not None else None,
                            str(getattr(model, "name", type(model.model).__name__)))
    else:
        raise TypeError(
            "model must be an nn.Module, a camlens.models.ModelRecord, or a spec string such as "
            f"'synthetic:vgg'; got {type(model).__name__}"
        )
    if preprocess is not None or default_layer is not None:
        res = ResolvedModel(res.model, preprocess or res.preprocess,
                            default_layer or res.default_layer, res.labels, res.name)
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
