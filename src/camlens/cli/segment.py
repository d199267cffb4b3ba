"""``camlens segment``: weakly-supervised segmentation with SEC seeded by a camlens map (Sec. 4.2).

    camlens segment --method gradcam --net vgg          # one arm: seeds, training, test mIoU
    camlens segment --compare --markdown seg.md         # CAM vs Grad-CAM seeds, the paper's table
    camlens segment --train synthetic:seed=4200,n=200 --test synthetic:seed=20251,n=100
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from camlens.cli.options import debug_options, positive_int
from camlens.loading import CliError
from camlens.segment.pipeline import TEST, TRAIN, check_disjoint
from camlens.segment.train import SCENE_KIND, scene_spec

#: Flags replaced by the data specs of --train and --test: how to write each one's value now.
_GONE: dict[str, Callable[[str], str]] = {
    "--n-train": lambda v: f"--train {replace(TRAIN, n=int(v)) if v.isdigit() else TRAIN}",
    "--n-test": lambda v: f"--test {replace(TEST, n=int(v)) if v.isdigit() else TEST}",
    "--kind": lambda v: f"--train {replace(TRAIN, kind=v)} --test {replace(TEST, kind=v)}",
}


def add(sub: Any) -> None:
    p = sub.add_parser(
        "segment", parents=[debug_options()],
        help="weakly-supervised segmentation (SEC) from Grad-CAM or CAM seeds on world v2",
        description="Train a small segmentation net with SEC's seeding, expansion and "
                    "constrain-to-boundary losses from seeds made by a camlens method on a "
                    "world v2 net, and report the seeds' precision/recall and the test mean IoU "
                    "against exact masks (Sec. 4.2). --compare runs CAM on vgg_gap, Grad-CAM on "
                    "vgg and Grad-CAM on vgg_gap on the same scenes.")
    p.add_argument("--method", default=None,
                   help="camlens method for the foreground seeds (default gradcam)")
    p.add_argument("--net", default=None,
                   help="world v2 net: vgg, vgg_gap, alexnet or resnet (default vgg)")
    p.add_argument("--layer", default=None, help="layer (default: the net's last conv)")
    p.add_argument("--compare", action="store_true",
                   help="run the paper's comparison (CAM vs Grad-CAM seeds) instead of one arm")
    p.add_argument("--reference", action="store_true",
                   help="with --compare: add seeds from the exact masks (an upper reference)")
    p.add_argument("--repeats", type=positive_int, default=1,
                   help="train each arm this many times (head seeds --seed, --seed+1, ...); the "
                        "table gives mean ± sd (default 1)")
    p.add_argument("--train", default=str(TRAIN), metavar="synthetic:seed=S,n=N[,...]",
                   help=f"training scenes (docs/world.md; kind default {SCENE_KIND}; default "
                        f"{TRAIN})")
    p.add_argument("--test", default=str(TEST), metavar="synthetic:seed=S,n=N[,...]",
                   help=f"test scenes, none of them a training scene (default {TEST}: held "
                        "out)")
    for old in _GONE:
        p.add_argument(old, default=None, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=positive_int, default=400, help="training steps (400)")
    p.add_argument("--seed", type=int, default=0, help="head init and minibatch order (0)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads for this run (default: torch's; 1 is fastest on a "
                        "busy machine: the CRF's small matrix products do not scale)")
    p.add_argument("--json", type=Path, default=None,
                   help="also write the result as JSON (per-label IoU null where a label never "
                        "occurs)")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table (markdown)")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    from camlens.methods import METHODS
    from camlens.synthetic.v2 import NETS

    for old, now in _GONE.items():
        value = getattr(args, old[2:].replace("-", "_"))
        if value is not None:
            raise CliError(f"{old} is gone: world v2 scenes are named by a data spec, here "
                           f"{now(value)} (docs/world.md)")
    args.train, args.test = scene_spec(args.train), scene_spec(args.test)
    try:
        check_disjoint(args.train, args.test)
    except ValueError as exc:
        raise CliError(str(exc)) from None

    if args.compare:
        given = [f"--{k}" for k in ("method", "net", "layer") if getattr(args, k) is not None]
        if given:
            raise CliError(f"--compare runs its own seeds (CAM on vgg_gap, Grad-CAM on vgg and "
                           f"vgg_gap); drop {', '.join(given)}, or drop --compare for one arm")
    elif args.reference:
        raise CliError("--reference adds a row to --compare's table; use it with --compare")
    args.method = args.method or "gradcam"
    args.net = args.net or "vgg"
    if args.net not in NETS:
        raise CliError(f"unknown world v2 net {args.net!r}; choose from {', '.join(sorted(NETS))}")
    if args.method not in METHODS:
        raise CliError(f"unknown method {args.method!r}; choose from "
                       f"{', '.join(sorted(METHODS))}")


def _no_nan(value: Any) -> Any:
    """``value`` with every NaN float as None (JSON null: a label absent from the test set has
    no IoU), so the file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_nan(v) for v in value]
    return value


def run(args: argparse.Namespace) -> int:
    from camlens.cli import say
    from camlens.segment.pipeline import ARMS, Arm, compare_seeds

    _check(args)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    arms = ARMS if args.compare else (Arm(args.net, args.method, args.layer),)
    result = compare_seeds(args.train, args.test, args.steps, arms=arms, seed=args.seed,
                           repeats=args.repeats, reference=args.reference,
                           progress=lambda text: say(text, None))
    table = result.markdown()
    say(table)
    if args.markdown is not None:
        args.markdown.write_text(table + "\n")
    if args.json is not None:
        record = _no_nan(asdict(result) | {"markdown": table})
        args.json.write_text(json.dumps(record, indent=1, default=str, allow_nan=False) + "\n")
    return 0
