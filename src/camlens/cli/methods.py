"""``camlens methods``: the registered methods and presets, and the ``--option KEY=VALUE``
each takes, with its type and default."""

from __future__ import annotations

import argparse
from typing import Any

from camlens.cli.options import debug_options, value_type
from camlens.methods import FIGURE1, METHODS


def add(sub: Any) -> None:
    p = sub.add_parser("methods", help="list the explanation methods",
                       parents=[debug_options()],
                       description="List the explanation methods and their options.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    width = max(map(len, METHODS))
    for name in sorted(METHODS):
        m = METHODS[name]
        default = "  [default]" if name in FIGURE1 else ""
        traits = ["needs --layer" if m.needs_layer else "no layer",
                  "pixel-space map" if m.pixel_space else "heatmap"]
        if m.fixed:
            traits.append(f"{m.base} with " + ", ".join(
                f"{k}={_shown(v)}" for k, v in m.fixed.items()))
        print(f"{name:<{width}}  {m.summary}{default}")
        print(f"{'':<{width}}    {', '.join(traits)}")
        for key, option in m.free_options.items():
            print(f"{'':<{width}}    --option {key}: {value_type(option)} "
                  f"(default {_shown(option.default)})")
    return 0


def _shown(value: Any) -> str:
    """A value as ``--option`` spells it: true/false, 16,8, none."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)
