"""``camlens evaluate`` and ``python -m camlens.evaluate``: the options (one place) and the
call into :func:`camlens.evaluate.evaluate`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from camlens.cli.options import add_engine_arguments, ray_options
from camlens.evaluate.datasets import dataset_formats
from camlens.evaluate.localization import RELATIVE_TO
from camlens.evaluate.tasks import TASKS, evaluate
from camlens.methods import METHODS


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are parsed as JSON when they can be (``relu=false``,
    ``window=8``), else kept as text (``pooling=gmp``)."""
    out: dict[str, Any] = {}
    for p in pairs or ():
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise ValueError(f"--option expects KEY=VALUE, got {p!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``evaluate`` options, for ``camlens evaluate`` and ``python -m camlens.evaluate``."""
    parser.add_argument("task", choices=TASKS)
    parser.add_argument("--data", required=True,
                        help="FORMAT:PATH, FORMAT one of " + ", ".join(dataset_formats())
                             + "; world v2 scenes: synthetic:seed=S,n=N[,kind=K][,start=I]"
                               "[,objects=A-B][,cue_rate=R] (docs/world.md; the only data of "
                               "word-pointing, region-ratio and vqa)")
    parser.add_argument("--model", default=None,
                        help="bundled name (default efficientnet_lite0), "
                             "synthetic:vgg|vgg_gap|alexnet|resnet, torchvision:NAME, "
                             "file.py:ATTR; word-pointing and region-ratio: synthetic:captioner "
                             "(the default); vqa: the bundled VQA net (default) or a folder "
                             "from python -m camlens.vqa.train")
    parser.add_argument("--weights", default=None, metavar="FILE",
                        help="state dict for --model (torch.load weights_only=True, strict)")
    parser.add_argument("--method", default="gradcam", choices=sorted(METHODS),
                        metavar="METHOD", help="one of " + ", ".join(sorted(METHODS)))
    parser.add_argument("--layer", default=None,
                        help="layer for layer methods (default: the model's)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="method option, e.g. relu=false, pooling=gmp, backward=guided")
    parser.add_argument("--csv", default=None, help="per-image CSV rows (appended, resumable)")
    parser.add_argument("--resume", dest="resume", action="store_true", default=True,
                        help="skip images already in --csv (default)")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="start --csv over")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=0.15,
                        help="localisation: binarise at this fraction of the map's maximum")
    parser.add_argument("--relative-to", choices=RELATIVE_TO, default="max",
                        help="localisation: the threshold is a fraction of the map's maximum "
                             "(the paper's), or of its range (min-max scaled first)")
    parser.add_argument("--tolerance", type=float, default=15, help="pointing: pixels")
    parser.add_argument("--held-out", type=float, default=0.25,
                        help="pointing: fraction of images used to choose the rejection threshold")
    parser.add_argument("--window", type=int, default=16,
                        help="faithfulness, vqa: occlusion window")
    parser.add_argument("--stride", type=int, default=None,
                        help="faithfulness, vqa: occlusion stride (default 8; vqa 16)")
    parser.add_argument("--fill", type=float, default=0.0, help="faithfulness, vqa: occlusion fill")
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    parser.add_argument("--synsets", default=None, metavar="FILE",
                        help="wnid list in class-index order (ILSVRC labels -> class indices)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=True)
    return add_engine_arguments(parser)


def run_cli(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    """Run :func:`evaluate` from parsed arguments (see :func:`add_evaluate_arguments`; missing
    attributes take their defaults), print the markdown table and return 0."""
    def get(name: str, default: Any = None) -> Any:
        value = getattr(args, name, default)
        return default if value is None else value

    label_map = None
    if get("synsets"):
        from camlens.evaluate.datasets import wnid_to_index

        label_map = wnid_to_index(get("synsets"))
    summary = evaluate(
        get("task"), get("data"), model=get("model"),
        weights=get("weights"), method=get("method", "gradcam"), layer=get("layer"),
        options=parse_options(get("option", [])), csv_path=get("csv"),
        resume=get("resume", True), progress=get("progress", True),
        batch_size=get("batch_size", 16), top_k=get("top_k", 5),
        threshold=get("threshold", 0.15), relative_to=get("relative_to", "max"),
        tolerance=get("tolerance", 15), held_out=get("held_out", 0.25),
        window=get("window", 16), stride=get("stride"), fill=get("fill", 0.0),
        limit=get("limit"), label_map=label_map, device=get("device", "cpu"),
        engine=ray_options(args) or "local",
    )
    print(summary.markdown(), file=stdout or sys.stdout)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m camlens.evaluate TASK --data FORMAT:PATH ...``"""
    parser = argparse.ArgumentParser(
        prog="python -m camlens.evaluate",
        description="The paper's evaluations over a dataset (the options of camlens evaluate).")
    add_evaluate_arguments(parser)
    return run_cli(parser.parse_args(argv))
