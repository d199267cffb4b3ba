"""Turn a ``--model`` spec (plus ``--weights``, ``--labels``, ``--mean/--std``) into a model
ready to explain.

Specs:

* ``efficientnet_lite0`` (or nothing): a bundled model from :data:`camlens.models.MODELS`;
* ``torchvision:NAME``: ``torchvision.models.get_model(NAME, weights=None)`` with ``--weights``
  (torchvision is imported only here, and nothing is ever downloaded);
* ``path/to/file.py:ATTR`` and ``package.module:ATTR``: ``ATTR`` is an ``nn.Module`` instance,
  or a callable taking no arguments that returns one (a factory function or a module class).
  The file or module is imported, so its code runs with the user's rights: by design, like
  ``python file.py``; only name files you trust.

``--weights FILE`` is read with ``torch.load(weights_only=True)`` (no code runs) and loaded
strictly; a file that does not fit raises a one-line :class:`CliError` naming the missing and
unexpected keys, and a pickle that would need code (a whole pickled model) is refused saying so.

The model sees the image with its shorter side resized to ``input_size``, unless that would make
its longer side exceed ``max_input_side`` (default ``4 * input_size``): then the longer side is
``max_input_side`` (:func:`model_input_size`), so a 1 x 100 strip cannot become a 224 x 22400
input.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from camlens.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MODELS,
    imagenet_labels,
    preprocess_image,
)

__all__ = [
    "CliError",
    "LoadedModel",
    "load_labels",
    "load_model",
    "load_state_dict_file",
    "model_input_size",
    "num_classes",
]

_SPEC_HELP = (
    "give a bundled model ({bundled}), torchvision:NAME, path/to/file.py:FACTORY or "
    "package.module:ATTR"
)


class CliError(Exception):
    """A problem with what the user asked for; ``str()`` is the one-line message."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode on its device, with what the CLI needs to explain it.

    ``default_layer`` is None when the model comes without one (custom models);
    ``labels`` always has one name per class (class indices as names when unknown).
    """

    model: nn.Module
    name: str
    labels: list[str]
    preprocess: Callable[[Image.Image], torch.Tensor]
    default_layer: str | None
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_classes: int
    device: torch.device
    labels_source: str = "indices"


# --------------------------------------------------------------------------- weights and labels


def _short_list(keys: Sequence[str], n: int = 3) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict saved with ``torch.save`` (``weights_only=True``: no code runs).

    A checkpoint dict holding the state dict under ``state_dict`` or ``model_state_dict``
    is unwrapped.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise CliError(f"--weights {file}: no such file")
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle/zip errors of any kind mean "not a state dict"
        raise CliError(f"--weights {file}: {_why_not_loaded(exc)}") from exc
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, dict):
                obj = inner
                break
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise CliError(
            f"--weights {file}: expected a state dict (parameter name -> tensor), got "
            f"{type(obj).__name__}; save it with torch.save(model.state_dict(), FILE)"
        )
    return obj


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _why_not_loaded(exc: BaseException) -> str:
    """One clean line on why ``torch.load(weights_only=True)`` refused a file: the global a
    pickle needs (a class or function: loading it could run code), or the error's gist."""
    text = " ".join(_ANSI_ESCAPE.sub("", str(exc)).split()) or type(exc).__name__
    needs = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if needs:
        return (
            f"refused: it is a pickle that needs {needs.group(1)}, and unpickling that could "
            "run arbitrary code, so camlens reads only state dicts (torch.load with "
            "weights_only=True); if it holds a whole model (torch.save(model)), load it where "
            "you trust it and save model.state_dict() instead"
        )
    gist = text.split("WeightsUnpickler error:", 1)[-1].strip()
    if len(gist) > 200:
        gist = gist[:200].rsplit(" ", 1)[0] + " ..."
    return (f"cannot read it as a state dict saved with torch.save (weights_only=True, which "
            f"never runs code from the file): {gist}")


def apply_weights(model: nn.Module, path: str | os.PathLike[str], name: str) -> None:
    """Load ``path`` into ``model`` with ``strict=True``, or raise a one-line CliError."""
    state = load_state_dict_file(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_short_list(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_short_list(unexpected)}")
        hint = ""
        if unexpected and all(k.startswith("module.") for k in unexpected):
            hint = " (saved from DataParallel? strip the 'module.' prefix)"
        raise CliError(f"--weights {path} does not fit {name}: " + "; ".join(parts) + hint)
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise CliError(
            f"--weights {path} does not fit {name}: {len(wrong)} tensor(s) of the wrong shape "
            f"(file vs model): {_short_list(wrong)}"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CliError(f"--weights {path} does not fit {name}: {first}") from exc


def load_labels(path: str | os.PathLike[str]) -> list[str]:
    """One class name per line, in class-index order (trailing blank lines ignored)."""
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CliError(f"--labels {file}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"--labels {file}: cannot read it as UTF-8 text ({exc})") from None
    labels = [line.strip() for line in text.splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        raise CliError(f"--labels {file}: the file is empty; expected one class name per line")
    return labels


# --------------------------------------------------------------------------- specs


@contextlib.contextmanager
def _on_sys_path(folder: Path) -> Iterator[None]:
    """Let a model file import its sibling modules while it is loaded."""
    entry = str(folder)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(entry)


def _user_code_error(what: str, exc: BaseException) -> CliError:
    msg = str(exc).strip().splitlines()
    detail = f"{type(exc).__name__}: {msg[0]}" if msg else type(exc).__name__
    return CliError(f"{what} failed: {detail} (rerun with --debug for the traceback)")


def _get_attr(obj: Any, dotted: str, where: str) -> Any:
    for part in dotted.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            near = difflib.get_close_matches(part, names, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise CliError(f"{where} has no attribute {part!r}{hint}")
        obj = getattr(obj, part)
    return obj


def _instantiate(obj: Any, spec: str) -> nn.Module:
    """``obj`` itself if it is a module, else what calling it with no arguments returns."""
    if isinstance(obj, nn.Module):
        return obj
    if not callable(obj):
        raise CliError(
            f"--model {spec}: {type(obj).__name__} is neither an nn.Module nor a callable "
            "returning one"
        )
    try:
        model = obj()
    except TypeError as exc:
        if "argument" in str(exc):
            raise CliError(
                f"--model {spec}: the factory must take no arguments ({exc})"
            ) from exc
        raise _user_code_error(f"--model {spec}: calling the factory", exc) from exc
    except Exception as exc:  # noqa: BLE001 - the user's factory: report it in one line
        raise _user_code_error(f"--model {spec}: calling the factory", exc) from exc
    if not isinstance(model, nn.Module):
        raise CliError(
            f"--model {spec}: the factory returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def _from_file(spec: str, file_part: str, attr: str) -> nn.Module:
    path = Path(file_part).expanduser()
    if not path.is_file():
        raise CliError(f"--model {spec}: {path} is not a file")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    mod_name = f"camlens_user_model_{path.stem}_{digest}"
    loader_spec = importlib.util.spec_from_file_location(mod_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise CliError(f"--model {spec}: cannot import {path} as a Python file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[mod_name] = module
    with _on_sys_path(path.resolve().parent):
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - the user's file: report it in one line
            sys.modules.pop(mod_name, None)
            raise _user_code_error(f"--model {spec}: importing {path}", exc) from exc
        return _instantiate(_get_attr(module, attr, str(path)), spec)


def _from_module(spec: str, module_name: str, attr: str) -> nn.Module:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise CliError(
                f"--model {spec}: no module named {exc.name!r}; install it or add its folder "
                "to PYTHONPATH (or give path/to/file.py:FACTORY)"
            ) from exc
        raise _user_code_error(f"--model {spec}: importing {module_name}", exc) from exc
    except Exception as exc:  # noqa: BLE001 - the user's module: report it in one line
        raise _user_code_error(f"--model {spec}: importing {module_name}", exc) from exc
    return _instantiate(_get_attr(module, attr, module_name), spec)


def _from_torchvision(spec: str, name: str) -> nn.Module:
    try:
        import torchvision  # noqa: F401  (optional, imported only for torchvision: specs)
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
    return tv_models.get_model(name, weights=None)


_NOT_A_MAP = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout,
              nn.Identity)


def _torchvision_layer(model: nn.Module) -> str | None:
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


def _split_spec(spec: str) -> tuple[str, str]:
    head, sep, attr = spec.rpartition(":")
    if not sep or not head or not attr:
        raise CliError(f"unknown model {spec!r}; {_spec_help()}")
    return head, attr


def _spec_help() -> str:
    return _SPEC_HELP.format(bundled=", ".join(sorted(MODELS)))


# --------------------------------------------------------------------------- the model's input


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


# --------------------------------------------------------------------------- the entry point


def num_classes(model: nn.Module, input_size: int, device: torch.device, spec: str) -> int:
    """Run one dummy forward and return the number of classes of the (B, N) output."""
    x = torch.zeros(1, 3, input_size, input_size, device=device)
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:  # noqa: BLE001 - the user's model: report it in one line
        raise _user_code_error(
            f"--model {spec}: a forward pass on a (1, 3, {input_size}, {input_size}) image", exc
        ) from exc
    logits = getattr(out, "logits", out)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        got = (f"a tensor of shape {tuple(logits.shape)}" if isinstance(logits, torch.Tensor)
               else type(out).__name__)
        raise CliError(
            f"--model {spec}: the CLI explains classifiers returning (batch, classes) scores, "
            f"but the model returned {got}; use camlens.explain with a callable target instead"
        )
    return int(logits.shape[1])


def parse_device(text: str) -> torch.device:
    try:
        device = torch.device(text)
    except RuntimeError as exc:
        raise CliError(f"--device {text!r}: not a device name (cpu, cuda, cuda:1, mps)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CliError(f"--device {text}: CUDA is not available in this PyTorch; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise CliError(
            f"--device {text}: there are {torch.cuda.device_count()} CUDA device(s)"
        )
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise CliError(f"--device {text}: MPS is not available here; use --device cpu")
    return device


def load_model(
    spec: str | None = None,
    *,
    weights: str | None = None,
    labels: str | None = None,
    input_size: int = 224,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str | torch.device = "cpu",
    max_input_side: int | None = None,
) -> LoadedModel:
    """Load the model ``spec`` names (see the module docstring), in eval mode on ``device``.
    ``preprocess`` caps the input's longer side at ``max_input_side`` (None: 4 x
    ``input_size``)."""
    if input_size < 1:
        raise CliError(f"--input-size must be a positive number of pixels, got {input_size}")
    cap = 4 * input_size if max_input_side is None else max_input_side
    if cap < 1:
        raise CliError(f"--max-input-side must be a positive number of pixels, got {cap}")
    if std is not None and any(s <= 0 for s in std):
        raise CliError(f"--std values must be positive, got {list(std)}")
    dev = device if isinstance(device, torch.device) else parse_device(device)
    spec = (spec or "").strip() or next(iter(MODELS))
    default_layer: str | None = None
    bundle_labels: list[str] | None = None
    bundle_norm: tuple[Sequence[float], Sequence[float]] | None = None

    if spec in MODELS:
        bundle = MODELS[spec](input_size=input_size)
        model, name = bundle.model, bundle.name
        default_layer, bundle_labels = bundle.default_layer, bundle.labels
        bundle_norm = (bundle.mean, bundle.std)
    elif spec.startswith("torchvision:"):
        name = spec
        model = _from_torchvision(spec, spec.split(":", 1)[1])
        if weights is None:
            raise CliError(
                f"--model {spec} needs --weights FILE: camlens never downloads weights; save "
                "them once with torch.save(model.state_dict(), FILE)"
            )
        default_layer = _torchvision_layer(model)
    elif ":" in spec:
        head, attr = _split_spec(spec)
        name = spec
        if head.endswith(".py") or "/" in head or os.sep in head:
            model = _from_file(spec, head, attr)
        else:
            model = _from_module(spec, head, attr)
    else:
        near = difflib.get_close_matches(spec, list(MODELS), n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(near)}? " if near else ""
        raise CliError(f"unknown model {spec!r}; {hint}{_spec_help()}")

    if weights is not None:
        apply_weights(model, weights, name)
    model = model.eval().to(dev)
    if bundle_labels is not None and weights is None:
        n = len(bundle_labels)  # a bundled model as shipped: no need for a trial forward
    else:
        n = num_classes(model, input_size, dev, spec)

    source = "indices"
    if labels is not None:
        names = load_labels(labels)
        source = str(labels)
        if len(names) != n:
            raise CliError(
                f"--labels {labels} has {len(names)} names but the model has {n} classes"
            )
    elif bundle_labels is not None and len(bundle_labels) == n:
        names, source = list(bundle_labels), "bundled"
    elif spec.startswith("torchvision:") and n == 1000:
        names, source = imagenet_labels(), "imagenet"
    else:
        names = [str(i) for i in range(n)]

    m = tuple(float(v) for v in (mean or (bundle_norm[0] if bundle_norm else IMAGENET_MEAN)))
    s = tuple(float(v) for v in (std or (bundle_norm[1] if bundle_norm else IMAGENET_STD)))
    preprocess = functools.partial(preprocess_capped, input_size=input_size, max_side=cap,
                                   mean=m, std=s)
    return LoadedModel(
        model=model,
        name=name,
        labels=names,
        preprocess=preprocess,
        default_layer=default_layer,
        input_size=input_size,
        mean=m,  # type: ignore[arg-type]
        std=s,  # type: ignore[arg-type]
        num_classes=n,
        device=dev,
        labels_source=source,
    )
