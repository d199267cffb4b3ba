"""``camlens layers``: the model's layers with their output shapes, to choose --layer."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from camlens.cli.options import debug_options, model_options
from camlens.layers import layer_table
from camlens.models import load_model


def add(sub: Any) -> None:
    p = sub.add_parser("layers", help="list the model's layers with output shapes",
                       parents=[model_options(), debug_options()],
                       description="List the model's layers (dotted names), their module type "
                                   "and output shape for a dummy image; * marks the default "
                                   "layer.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    loaded = load_model(args.model, weights=args.weights, labels=args.labels,
                        input_size=args.input_size, mean=args.mean, std=args.std,
                        device=args.device)
    s = loaded.side()
    rows = layer_table(loaded.model, torch.zeros(1, 3, s, s, device=loaded.device))
    head = f"{loaded.name}: {len(rows)} layers, output shapes for a (1, 3, {s}, {s}) input; "
    print(head + ("* marks the default layer" if loaded.default_layer else
                  "no default layer: pass --layer NAME to explain"))
    if not rows:
        return 0
    wn = max(len(r[0]) for r in rows)
    wt = max(len(r[1]) for r in rows)
    for name, kind, shape, calls in rows:
        mark = "*" if name == loaded.default_layer else " "
        extra = f"  (runs {calls}x)" if calls > 1 else ""
        print(f"{mark} {name:<{wn}}  {kind:<{wt}}  {shape}{extra}")
    return 0
