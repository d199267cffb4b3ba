"""``camlens dissect``: name a layer's units with concepts (network dissection, Sec. 7).

    camlens dissect --model synthetic:vgg --data synthetic:seed=20252,n=1000 --out dissection/
    camlens dissect --model net.py:build --layer layer4 --data broden:~/broden1_224 --out d/
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from camlens.cli import say
from camlens.cli.options import debug_options, model_options, positive_int, unit_float
from camlens.errors import DataError
from camlens.loading import CliError
from camlens.plural import counted


def add(sub: Any) -> None:
    p = sub.add_parser(
        "dissect", parents=[model_options(), debug_options()],
        help="name a layer's units with concepts (network dissection) and write an HTML report",
        description="Network dissection (Bau et al. 2017) as Grad-CAM's Sec. 7 uses it: each "
                    "unit's top-quantile threshold, its upsampled masks' IoU with every concept "
                    "of a concept-annotated dataset, and its name (the best concept when its "
                    "IoU is above --min-iou). Writes OUT/index.html, dissection.json (for "
                    "`camlens explain --text --dissection`), units.csv and units/*.png.")
    p.add_argument("--layer", metavar="NAME",
                   help="layer to dissect (default: the model's Grad-CAM layer)")
    p.add_argument("--data", required=True, metavar="synthetic:seed=S,n=N|broden:DIR",
                   help="synthetic:seed=S,n=N[,kind=K][,...]: world v2 scenes (docs/world.md; "
                        "kind default single; the shipped dissections use seed=20252,n=500) "
                        "with part, shape, colour and texture maps; broden:DIR (or a DIR "
                        "holding index.csv): a dataset in Broden's format")
    p.add_argument("--categories", metavar="A,B",
                   help="only these concept categories (default: all the data has)")
    p.add_argument("--split", default=None, help="Broden: only rows of this split (e.g. val)")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="Broden: only the first N rows")
    p.add_argument("--quantile", type=unit_float, default=0.005,
                   help="top quantile for the unit thresholds (default 0.005)")
    p.add_argument("--min-iou", type=unit_float, default=0.05,
                   help="IoU a unit's best concept must exceed to name it (default 0.05)")
    p.add_argument("--batch-size", type=positive_int, default=16, metavar="N")
    p.add_argument("--out", required=True, metavar="DIR", help="report folder")
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    p.set_defaults(func=run)


def concept_data(spec: str, preprocess: Any, categories: list[str] | None,
                 split: str | None, limit: int | None) -> Any:
    """``--data`` -> a :class:`~camlens.dissect.ConceptData` (CliError when it is wrong)."""
    from camlens.dissect import WORLD_CATEGORIES, BrodenConcepts, WorldV2Concepts
    from camlens.synthetic.v2.spec import FORM, is_synthetic, parse_synthetic

    text = spec.strip()
    try:
        if is_synthetic(text):
            return WorldV2Concepts(parse_synthetic(text), preprocess=preprocess,
                                   categories=categories or WORLD_CATEGORIES)
        folder = text[len("broden:"):] if text.lower().startswith("broden:") else text
        if not Path(folder).expanduser().is_dir():
            raise CliError(f"unknown data spec {spec!r}: expected broden:DIR with DIR a folder "
                           "in Broden's format (index.csv, label.csv, c_*.csv, images/); "
                           f"synthetic data is written {FORM} (docs/world.md)")
        data = BrodenConcepts(folder, preprocess=preprocess, categories=categories, split=split)
        if limit is not None:
            data.rows = data.rows[:limit]
        return data
    except DataError as exc:
        raise CliError(f"--data {spec}: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    from camlens.dissect import dissect
    from camlens.dissect.html import write_report
    from camlens.layers import resolve_layers
    from camlens.models import load_model

    if not 0.0 < args.quantile < 1.0:
        raise CliError(f"--quantile must be strictly between 0 and 1, got {args.quantile}")
    loaded = load_model(args.model, weights=args.weights, labels=args.labels,
                        input_size=args.input_size, mean=args.mean, std=args.std,
                        device=args.device, max_input_side=args.max_input_side)
    layer = args.layer or loaded.default_layer
    if layer is None:
        raise CliError(f"--layer is required for {loaded.name} (it has no default layer); "
                       f"`camlens layers --model {loaded.name}` lists them")
    resolve_layers(loaded.model, layer)  # LayerError (exit 2) with the nearest names
    cats = [c.strip() for c in args.categories.split(",") if c.strip()] if args.categories \
        else None
    data = concept_data(args.data, loaded.preprocess, cats, args.split, args.limit)
    out = Path(args.out).expanduser()
    start = time.perf_counter()
    try:
        d = dissect(loaded.model, data, layer, quantile=args.quantile, min_iou=args.min_iou,
                    batch_size=args.batch_size, model_name=loaded.name)
        files = write_report(d, loaded.model, data, out)
    except DataError as exc:
        raise CliError(f"--data {args.data}: {exc}") from exc
    except OSError as exc:
        raise CliError(f"--out {out}: cannot write the report ({exc.strerror or exc})") from exc
    if not args.quiet:
        named = d.named()
        say(f"dissected {counted(len(d), 'unit')} of {loaded.name} {layer} on "
            f"{counted(d.images, 'image')} in "
            f"{time.perf_counter() - start:.1f}s: {len(named)} named (IoU > {d.min_iou:g})")
        for u in sorted(named, key=lambda u: -u.iou)[:10]:
            say(f"  unit {u.unit:>4}  {u.label:<28} IoU {u.iou:.3f}")
        say(f"report: {files[-1]}")
    return 0
