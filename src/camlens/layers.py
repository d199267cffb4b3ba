"""Resolve user-given layers (dotted names or modules) to ``(name, module)`` pairs."""

from __future__ import annotations

import difflib
from typing import Sequence, Union

from torch import nn

from camlens.errors import LayerError

LayerSpec = Union[str, nn.Module]
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
