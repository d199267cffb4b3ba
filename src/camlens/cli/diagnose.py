"""``camlens diagnose failures|adversarial|bias``: the paper's Sec. 6 as reports a person reads
(report.html with the pictures embedded, plus JSON and CSV); see :mod:`camlens.diagnose`.

    camlens diagnose failures --data synthetic:seed=1,n=200 --model synthetic:vgg --out fail
    camlens diagnose adversarial --data synthetic:seed=1,n=50 --model synthetic:vgg --out adv
    camlens diagnose bias --data synthetic:seed=1,n=100,cue_rate=0.33 --model synthetic:vgg \\
        --out bias [--regions regions.json --cue NAME]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from camlens.cli.options import debug_options, non_negative_int, positive_int
from camlens.loading import CliError

_WHAT = {
    "failures": "misclassified images grouped by confusion pair, Guided Grad-CAM for the true "
                "and the predicted class (Sec. 6.1)",
    "adversarial": "a targeted attack to a class absent from each image, then Grad-CAM of the "
                   "classes present before and after (Sec. 6.2)",
    "bias": "the share of Grad-CAM evidence on each annotated region (a suspected cue, the "
            "object...), per class, regions ranked (Sec. 6.3)",
}


def _pixels(text: str) -> float:
    """A size in pixel levels: ``8`` or ``8/255`` both mean 8/255 of the [0, 1] range."""
    num, _, den = text.partition("/")
    try:
        value = float(num) / (float(den) if den else 255.0)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected pixel levels such as 16 or 16/255, got "
                                         f"{text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected pixel levels in (0, 255], got {text!r}")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True,
                   help="synthetic:seed=S,n=N[,kind=K][,start=I][,objects=A-B][,cue_rate=R] "
                        "(world v2, exact ground truth; docs/world.md), synthetic:FOLDER, "
                        "coco:FILE[:IMAGES], voc:ROOT, ilsvrc:DIR")
    p.add_argument("--model", default="synthetic:vgg",
                   help="synthetic:vgg|vgg_gap|alexnet|resnet, a bundled name, torchvision:NAME, "
                        "file.py:FACTORY (default synthetic:vgg)")
    p.add_argument("--weights", default=None, metavar="FILE", help="state dict for --model")
    p.add_argument("--layer", default=None, help="Grad-CAM layer (default: the model's)")
    p.add_argument("--out", type=Path, required=True, help="folder for report.html, JSON, CSV")
    p.add_argument("--limit", type=positive_int, default=None, help="first N images only")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--examples", type=non_negative_int, default=4,
                   help="pictures per group in the report (default 4)")
    p.add_argument("--device", default="cpu")


def add(sub: Any) -> None:
    d = sub.add_parser("diagnose", help="failure modes, adversarial noise, dataset bias (Sec. 6)",
                       description="Diagnose a classifier with Grad-CAM: " + "; ".join(
                           f"{k}: {v}" for k, v in _WHAT.items()) + ".")
    which = d.add_subparsers(dest="diagnosis", metavar="DIAGNOSIS", required=True,
                             parser_class=type(d))
    f = which.add_parser("failures", parents=[debug_options()], help=_WHAT["failures"],
                         description=_WHAT["failures"])
    _common(f)
    f.add_argument("--top-k", type=positive_int, default=5, help="top-k failures (default 5)")
    f.add_argument("--pairs", type=non_negative_int, default=20,
                   help="confusion pairs shown with pictures (default 20)")
    a = which.add_parser("adversarial", parents=[debug_options()], help=_WHAT["adversarial"],
                         description=_WHAT["adversarial"])
    _common(a)
    a.add_argument("--eps", type=_pixels, default=16 / 255,
                   help="L-inf budget in pixel levels (default 16, i.e. 16/255)")
    a.add_argument("--step", type=_pixels, default=4 / 255, help="step in pixel levels (4)")
    a.add_argument("--steps", type=positive_int, default=30, help="most steps (30)")
    a.add_argument("--goal", type=float, default=0.9999,
                   help="stop once p(target) exceeds this (the paper: 0.9999)")
    a.add_argument("--tolerance", type=float, default=8.0,
                   help="pointing tolerance in pixels (default 8: the paper's 15 at 224 px, "
                        "for 112 px images)")
    a.add_argument("--seed", type=int, default=0, help="seed of the target classes")
    b = which.add_parser("bias", parents=[debug_options()], help=_WHAT["bias"],
                         description=_WHAT["bias"])
    _common(b)
    b.add_argument("--regions", type=Path, default=None, metavar="FILE.json",
                   help='named boxes: {"*" or image id: {"name": [x0, y0, x1, y1] or a list}}; '
                        "default on world v2: its exact regions (object, cue band, decoys...)")
    b.add_argument("--cue", default=None,
                   help="the suspected cue's region name (default on world v2: cue band)")
    d.set_defaults(func=run)
    for p in (f, a, b):
        p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    if args.diagnosis == "adversarial":
        if not 0 < args.goal < 1:
            raise CliError(f"--goal must be a probability in (0, 1), got {args.goal}")
        if args.tolerance < 0:
            raise CliError(f"--tolerance must be >= 0 pixels, got {args.tolerance}")
    if args.out.exists() and not args.out.is_dir():
        raise CliError(f"--out {args.out} is a file; give a folder")


def run(args: argparse.Namespace) -> int:
    """Load the model and data (their errors are the user's: one line, exit 2), run the
    diagnosis, print where the report is and the headline numbers."""
    from camlens.diagnose import adversarial_study, bias_study, diagnose_failures
    from camlens.diagnose.bias import read_regions
    from camlens.diagnose.data import load_items, load_record
    from camlens.evaluate.model import label_index

    _check(args)
    try:
        rec = load_record(args.model, args.weights, args.layer, args.device)
        items = load_items(args.data, label_index(rec.labels, None), args.limit)
        regions = read_regions(args.regions) if getattr(args, "regions", None) else None
    except (ValueError, LookupError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, LookupError) and exc.args else str(exc)
        raise CliError(str(message)) from exc
    if regions is not None and args.cue and not any(args.cue in r for r in regions.values()):
        raise CliError(f"--cue {args.cue!r} is not a region of {args.regions}; its regions are "
                       f"{sorted({n for r in regions.values() for n in r})}")
    if args.diagnosis == "failures":
        summary = diagnose_failures(rec, items, args.out, k=args.top_k,
                                    batch_size=args.batch_size, examples=args.examples,
                                    max_pairs=args.pairs)
        head = {k: summary.get(k) for k in ("images", "top1_failures", "top5_failures",
                                            "predicted_peak_resembling")}
    elif args.diagnosis == "adversarial":
        summary = adversarial_study(rec, items, args.out, eps=args.eps, step=args.step,
                                    steps=args.steps, goal=args.goal, tolerance=args.tolerance,
                                    batch_size=args.batch_size, seed=args.seed,
                                    examples=args.examples)
        head = {"images": summary["images"], "success_rate": summary["success_rate"],
                **summary["successful"]}
    else:
        summary = bias_study(rec, items, args.out, regions=regions, cue=args.cue,
                             batch_size=args.batch_size, examples=args.examples)
        head = {"images": summary["images"], "accuracy": summary["accuracy"],
                "ranking": [r["region"] for r in summary["ranking"]]}
    print(f"wrote {args.out / 'report.html'}")
    print(json.dumps(head))
    return 0
