"""Resolve user-given layers (dotted names or modules) to ``(name, module)`` pairs."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Sequence
from typing import Any, TypeAlias

import torch
from torch import nn

from camlens.errors import LayerError

LayerSpec: TypeAlias = str | nn.Module
"""A layer: its dotted name as in ``model.named_modules()``, or the module itself."""


def nearest_names(name: str, names: Sequence[str], n: int = 5) -> list[str]:
    """The ``n`` names in ``names`` closest to ``name`` (difflib ratio, then shared prefix)."""
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.5)
    if len(close) < n:
        head = name.split(".")[0]
        close += [m for m in names if m.split(".")[0] == head and m not in close][: n - len(close)]
    return close or list(names[-n:])


def resolve_layers(
    model: nn.Module, layer: LayerSpec | Sequence[LayerSpec]
) -> list[tuple[str, nn.Module]]:
    """Return ``[(name, module), ...]`` for ``layer``, raising :class:`LayerError` on a miss."""
    specs: Sequence[LayerSpec] = [layer] if isinstance(layer, (str, nn.Module)) else layer
    if len(specs) == 0:
        raise LayerError("layer is an empty list: give at least one layer name or module")
    named = dict(model.named_modules())
    by_id = {id(m): n for n, m in named.items()}
    names = [n for n in named if n]
    out: list[tuple[str, nn.Module]] = []
    for spec in specs:
        if isinstance(spec, str):
            if spec not in named or spec == "":
                hint = ", ".join(repr(n) for n in nearest_names(spec, names))
                raise LayerError(
                    f"no layer named {spec!r} in {type(model).__name__}; nearest names: {hint} "
                    "(`camlens layers` lists them all)"
                )
            out.append((spec, named[spec]))
        elif isinstance(spec, nn.Module):
            if id(spec) not in by_id:
                raise LayerError(
                    f"the {type(spec).__name__} module given as layer is not part of "
                    f"{type(model).__name__}; pass one of its submodules or a dotted name"
                )
            out.append((by_id[id(spec)] or "<model>", spec))
        else:
            raise LayerError(
                f"layer must be a dotted name or an nn.Module, not {type(spec).__name__}"
            )
    return out


RESIDUAL_BLOCKS = ("BasicBlock", "Bottleneck")
"""Class names of residual blocks: torchvision's (and timm's) ResNet blocks, whose forward
returns F(x) + x (x passed through ``downsample`` where the shape changes)."""


def residual_blocks(model: nn.Module) -> list[str]:
    """The dotted names of ``model``'s residual blocks in definition order (torchvision:
    ``layer1.0`` ... ``layer4.2``), for block-by-block maps (Appendix G, Fig. 19/20).

    Rule: a module whose class is named ``BasicBlock`` or ``Bottleneck`` (torchvision, timm
    and most ResNet code), or that sets ``residual_block = True`` (mark your own blocks so);
    blocks nested inside a block are not listed. A :class:`LayerError` when there is none.
    """
    found: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(f + ".") for f in found):
            continue
        if (type(module).__name__ in RESIDUAL_BLOCKS
                or getattr(module, "residual_block", False) is True):
            found.append(name)
    if not found:
        raise LayerError(
            f"{type(model).__name__} has no residual blocks (modules of class "
            f"{' or '.join(RESIDUAL_BLOCKS)}, or with residual_block = True); list the layers "
            "to explain instead (`camlens layers` shows them)")
    return found


def layer_hint(model: nn.Module) -> str:
    """Advice on which layer to explain in ``model``: the last convolution and its parents
    (the paper's choice, the last convolutional block), read from the module tree; nothing
    runs."""
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        return "pass the dotted name of a layer whose output is (B, C, h, w)"
    last = convs[-1]
    parents = [".".join(last.split(".")[:i]) for i in range(1, last.count(".") + 1)]
    return "the usual choice is the last convolutional block, e.g. " + ", ".join(
        repr(p) for p in parents[::-1][:2] + [last]
    )


def _shape_of(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape))
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_shape_of(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_shape_of(v)}" for k, v in value.items()) + "}"
    return type(value).__name__


def layer_table(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str, str, int]]:
    """(name, module type, output shape, calls) for every named submodule of ``model``, recorded
    with forward hooks on one no-grad forward pass of ``example``; the hooks are removed
    afterwards, even when the forward raises. A module that never ran has shape ``-``."""
    seen: dict[str, list[str]] = {}
    handles = []

    def record(name: str, _module: Any, _inputs: Any, output: Any) -> None:
        seen.setdefault(name, []).append(_shape_of(output))

    named = [(n, m) for n, m in model.named_modules() if n]
    try:
        for name, module in named:
            handles.append(module.register_forward_hook(functools.partial(record, name)))
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    rows = []
    for name, module in named:
        shapes = seen.get(name, [])
        rows.append((name, type(module).__name__, shapes[0] if shapes else "-", len(shapes)))
    return rows
