"""Option groups shared by the commands, as argparse parent parsers, and argument types."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from camlens import io as cio
from camlens import output, viz
from camlens.loading import CliError
from camlens.methods import METHODS, Option, OptionError

N = TypeVar("N", int, float)

MIN_MAX_OUTPUT_SIDE = 768
"""Default longer side, in pixels, of the saved maps and overlays of a larger photo (or twice
--input-size when that is more): the maps come from a model input of about --input-size pixels,
so more pixels would only interpolate them. A 12 MP photo with 4 methods x 3 classes wrote
1.2 GB at full size; at 768, under 20 MB."""


def bounded(convert: Callable[[str], N], ok: Callable[[N], bool],
            expected: str) -> Callable[[str], N]:
    """An argparse ``type``: ``convert(text)``, refused with "expected EXPECTED, got ..." when
    it does not parse or ``ok`` rejects it."""
    def parse(text: str) -> N:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value
    return parse


non_negative_int = bounded(int, lambda v: v >= 0, "an integer >= 0")
positive_int = bounded(int, lambda v: v >= 1, "a positive integer")
unit_float = bounded(float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")


SAVE_CHOICES = ("maps", "png", "summary", "json", "all")


def save_kinds(text: str) -> list[str]:
    """``--save`` value: a comma list of maps, png, summary, json, all -> the kinds, "all"
    expanded to :data:`camlens.output.WHAT`."""
    kinds = [k.strip().lower() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in SAVE_CHOICES]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(
            f"expected a comma list of {', '.join(SAVE_CHOICES)}, got {text!r}")
    return [w for k in kinds for w in (output.WHAT if k == "all" else (k,))]


def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def model_options() -> argparse.ArgumentParser:
    """--model, --weights, --labels, --input-size, --max-input-side, --mean, --std, --device."""
    p = _parent()
    g = p.add_argument_group("model")
    g.add_argument(
        "--model", default=None, metavar="SPEC",
        help="efficientnet_lite0 (default, bundled), torchvision:NAME (needs --weights), "
             "path/to/file.py:FACTORY or package.module:ATTR (an nn.Module or a zero-argument "
             "factory returning one; the file or module is imported, so its code runs: name "
             "only files you trust)",
    )
    g.add_argument("--weights", metavar="FILE",
                   help="state dict for the model (torch.load weights_only=True, loaded strictly)")
    g.add_argument("--labels", metavar="FILE",
                   help="class names, one per line in class-index order")
    g.add_argument("--input-size", type=positive_int, default=None, metavar="N",
                   help="resize the shorter side to N pixels, aspect kept, no crop (default: the "
                        "model's own size, 112 for synthetic:NAME, else 224)")
    g.add_argument("--max-input-side", type=positive_int, default=None, metavar="N",
                   help="cap the longer side of the model's input at N pixels (default 4 x "
                        "--input-size): an image longer than 4:1 is shrunk to fit, its shorter "
                        "side then below --input-size")
    g.add_argument("--mean", type=float, nargs=3, metavar=("R", "G", "B"),
                   help="normalisation mean (default: ImageNet's)")
    g.add_argument("--std", type=float, nargs=3, metavar=("R", "G", "B"),
                   help="normalisation std (default: ImageNet's)")
    g.add_argument("--device", default="cpu", help="torch device (default cpu)")
    return p


def output_options() -> argparse.ArgumentParser:
    """--out, --save, --max-output-side, --colormap, --alpha."""
    p = _parent()
    g = p.add_argument_group("output")
    g.add_argument("--out", default="explanations", metavar="DIR",
                   help="output folder (default ./explanations); inputs inside it are skipped")
    g.add_argument("--save", action="append", type=save_kinds, metavar="WHAT",
                   help="what to write in OUT/<stem>/: maps (maps.npz), png (one PNG per map), "
                        "summary (summary.png), json, all (default); repeatable or a comma "
                        "list, e.g. --save maps or --save png,summary. explanation.json is "
                        "always written: it records the predictions and what the folder holds")
    g.add_argument("--max-output-side", type=positive_int, default=None, metavar="N",
                   help="write the overlay PNGs and maps.npz at the photo's resolution, shrunk "
                        f"to a longer side of N pixels when larger (default "
                        f"{MIN_MAX_OUTPUT_SIDE}, or 2 x --input-size when that is more)")
    g.add_argument("--colormap", default="jet", choices=viz.COLORMAPS,
                   help="heatmap colormap (default jet)")
    g.add_argument("--alpha", type=unit_float, default=0.5,
                   help="heatmap opacity over the photo, 0..1 (default 0.5)")
    return p


def input_options() -> argparse.ArgumentParser:
    """--batch-size, --max-pixels."""
    p = _parent()
    g = p.add_argument_group("images")
    g.add_argument("--batch-size", type=positive_int, default=8, metavar="N",
                   help="images per batch; only images of the same resized shape share one "
                        "(default 8)")
    g.add_argument("--max-pixels", type=positive_int, default=cio.DEFAULT_MAX_PIXELS,
                   metavar="N",
                   help=f"refuse images above N pixels, a decompression-bomb guard "
                        f"(default {cio.DEFAULT_MAX_PIXELS})")
    return p


def progress_options() -> argparse.ArgumentParser:
    """--quiet."""
    p = _parent()
    p.add_argument("--quiet", "-q", action="store_true",
                   help="print nothing but errors (and no progress bar)")
    return p


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def add_engine_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--engine local|ray and the Ray engine's --ray-address, --ray-actors,
    --ray-cpus-per-actor, --ray-gpus-per-actor."""
    g = parser.add_argument_group("engine")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process (threads); ray: a Ray cluster's actors, each "
                        "loading the model once (needs the ray extra: pip install "
                        "'camlens[ray]')")
    g.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                   help="a running Ray cluster (default: RAY_ADDRESS, else a new local one)")
    g.add_argument("--ray-actors", type=positive_int, default=None, metavar="N",
                   help="actors in the pool (default: the cluster's CPUs / --ray-cpus-per-actor,"
                        " or its GPUs / --ray-gpus-per-actor)")
    g.add_argument("--ray-cpus-per-actor", type=non_negative_float, default=1.0, metavar="C",
                   help="CPUs each actor reserves (default 1)")
    g.add_argument("--ray-gpus-per-actor", type=non_negative_float, default=0.0, metavar="G",
                   help="GPUs each actor reserves (default 0; e.g. 1, or 0.5 for two per GPU); "
                        "give --device cuda with it")
    return parser


def engine_options() -> argparse.ArgumentParser:
    """:func:`add_engine_arguments` as a parent parser."""
    return add_engine_arguments(_parent())


def ray_options(args: argparse.Namespace, *, data: bool = True) -> Any:
    """The :class:`~camlens.pipeline.distributed.RayOptions` of ``--engine ray`` (connecting
    to the cluster to size the pool when --ray-actors is not given), None for the local
    engine; the --ray-* options without --engine ray are refused. ``data``: the command runs
    on Ray Data (checked here, before any work), else on Ray's core alone."""
    from camlens.pipeline.distributed import (
        RayOptions,
        check_fits,
        connect,
        default_actors,
        require_ray,
    )

    if getattr(args, "engine", "local") != "ray":
        given = [f"--ray-{n}" for n in ("address", "actors") if getattr(args, f"ray_{n}", None)]
        given += [f"--ray-{n}s-per-actor" for n, d in (("cpu", 1.0), ("gpu", 0.0))
                  if getattr(args, f"ray_{n}s_per_actor", d) != d]
        given += ["--ray-keep"] if getattr(args, "ray_keep", 0.0) else []
        if given:
            raise CliError(f"{', '.join(given)} apply to --engine ray only; add --engine ray")
        return None
    require_ray(data=data)
    keep = getattr(args, "ray_keep", 0.0)
    if keep and not (args.ray_address or os.environ.get("RAY_ADDRESS")
                     or sys.modules["ray"].is_initialized()):
        raise CliError(f"--ray-keep {keep:g}: this command would start its own Ray cluster, "
                       "which ends with it, and its actors with it; start one with `ray start "
                       "--head` and give its address (--ray-address or RAY_ADDRESS)")
    connect(args.ray_address, quiet=True)
    actors = args.ray_actors or default_actors(args.ray_cpus_per_actor, args.ray_gpus_per_actor)
    options = RayOptions(args.ray_address, actors, args.ray_cpus_per_actor,
                         args.ray_gpus_per_actor, keep)
    check_fits(options)
    return options


def debug_options() -> argparse.ArgumentParser:
    """--debug."""
    p = _parent()
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p


def value_type(option: Option) -> str:
    """What ``--option KEY=VALUE`` accepts for ``option``: "gap | gmp", "true/false"..."""
    return " | ".join(map(str, option.choices)) if option.choices else option.type_name


def method_options(texts: Sequence[str], methods: Sequence[str]) -> dict[str, Any]:
    """``--option KEY=VALUE`` texts -> ``{KEY: value}`` for the requested ``methods``, each
    value parsed by the option's own type (:meth:`camlens.methods.Option.parse`); a
    :class:`CliError` for a malformed text, a key none of them takes, or a bad value."""
    valid: dict[str, Option] = {}
    for name in methods:
        for key, option in METHODS[name].free_options.items():
            valid.setdefault(key, option)
    listing = (", ".join(f"{k} ({value_type(o)})" for k, o in sorted(valid.items()))
               or "none")
    out: dict[str, Any] = {}
    for text in texts:
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CliError(f"--option {text!r}: expected KEY=VALUE; the options of "
                           f"{', '.join(methods)} are: {listing}")
        if key not in valid:
            raise CliError(f"--option {key}: {', '.join(methods)} take(s) no option {key!r}; "
                           f"the options are: {listing} (`camlens methods` describes them)")
        try:
            out[key] = valid[key].parse(value.strip())
        except OptionError as exc:
            raise CliError(f"--option {text}: {exc}") from exc
    return out
