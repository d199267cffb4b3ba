"""``camlens vqa``: answer a question about an image with the VQA net and explain the answers
(Sec. 8.2, Fig. 12)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from camlens.cli import say
from camlens.cli.options import (
    MIN_MAX_OUTPUT_SIDE,
    debug_options,
    output_options,
    positive_int,
)
from camlens.loading import CliError

#: ``NAME:...`` that is not a file: meant as a data spec (a drive letter is not one).
SPEC_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9_.+-]+:")


def add(sub: Any) -> None:
    p = sub.add_parser(
        "vqa", help="answer a question about an image and explain the answers (Fig. 12)",
        parents=[output_options(), debug_options()],
        description="Answer QUESTION about IMAGE with the bundled world v2 VQA net (or --model "
                    "DIR from `python -m camlens.vqa.train`) and explain the top answers (or "
                    "each --answer) with Guided Backprop, Grad-CAM and Guided Grad-CAM; --versus "
                    "A B explains y^A - y^B. Writes OUT/<stem>/ as `camlens explain` does: "
                    "<method>_<answer index>.png, maps.npz, explanation.json (question, top "
                    "answers with probabilities) and a Fig. 12-style summary.png; contrasts in "
                    "OUT/<stem>/versus/.")
    p.add_argument("image", metavar="IMAGE",
                   help="an image file (resized to 112x112), or world v2 scenes "
                        "synthetic:seed=S,n=N[,start=I][,...] (docs/world.md; kind default "
                        "multi with objects=1-4, the VQA data; e.g. synthetic:seed=20251,n=1,"
                        "start=16 is held-out scene 16), each explained in its own folder")
    p.add_argument("--question", "-q", required=True, help='e.g. "What colour is the tabby?"')
    p.add_argument("--answer", "-a", action="append", default=[], metavar="A",
                   help="an answer to explain (repeatable; default: the --top most probable)")
    p.add_argument("--versus", nargs=2, action="append", default=[], metavar=("A", "B"),
                   help="explain answer A against answer B (y^A - y^B; repeatable)")
    p.add_argument("--top", type=positive_int, default=3, metavar="K",
                   help="explain the K most probable answers when no --answer (default 3)")
    p.add_argument("--model", default=None, metavar="DIR",
                   help="a folder with vqa.pt and vocab.json (default: the bundled net)")
    p.set_defaults(func=run)


def _images(spec: str) -> list[tuple[Any, str]]:
    """The photos and their output stems: one for a file, n for a ``synthetic:`` spec
    (``synthetic_<seed>_<index>``)."""
    from camlens.io import load_image
    from camlens.synthetic.v2.spec import parse_synthetic

    if Path(spec).expanduser().exists() or not SPEC_LIKE.match(spec.strip()):
        return [(load_image(spec), Path(spec).stem)]
    from PIL import Image

    from camlens.vqa.data import SCENE_KIND, SCENE_OBJECTS

    scenes = parse_synthetic(spec).with_defaults(kind=SCENE_KIND, objects=SCENE_OBJECTS)
    return [(Image.fromarray(scene.image), f"synthetic_{scenes.seed}_{scenes.start + i:05d}")
            for i, scene in enumerate(scenes.scenes())]


def run(args: argparse.Namespace) -> int:
    from camlens.vqa.model import load_bundled

    photos = _images(args.image)
    try:
        model, vocab = load_bundled(args.model)
    except (FileNotFoundError, KeyError, RuntimeError, ValueError) as exc:
        raise CliError(f"--model {args.model}: cannot load a VQA net ({exc})") from exc
    for photo, stem in photos:
        _explain(args, model, vocab, photo, stem)
    return 0


def _explain(args: argparse.Namespace, model: Any, vocab: Any, photo: Any, stem: str) -> None:
    """Explain one photo's answers into OUT/<stem>/ and print its top answers."""
    from camlens import output
    from camlens.viz import shrink_to
    from camlens.vqa.explain import explain_answers, to_input
    from camlens.vqa.figure import fig12
    from camlens.vqa.model import UnknownWordError

    try:
        result = explain_answers(model, vocab, to_input(photo), args.question, args.answer,
                                 top=args.top, versus=[tuple(v) for v in args.versus])
    except UnknownWordError as exc:
        raise CliError(str(exc)) from exc
    shown = shrink_to(photo, args.max_output_side or MIN_MAX_OUTPUT_SIDE)
    folder = Path(args.out).expanduser() / stem
    what = (output.WHAT if not args.save
            else tuple(dict.fromkeys(k for kinds in args.save for k in kinds)))
    top = result.top(vocab)
    record = {"question": args.question, "model": args.model or "bundled",
              "top_answers": [{"answer": a, "probability": p} for a, p in top],
              "versus": [list(p) for p in result.contrasts]}
    kw = {"colormap": args.colormap, "alpha": args.alpha}
    output.save(result.maps, shown, folder, labels=list(vocab.answers), what=what,
                record=record, **kw)
    if result.contrast_maps:
        output.save(result.contrast_maps, shown, folder / "versus",
                    what=[w for w in what if w != "summary"],
                    record={"question": args.question,
                            "contrasts": {str(k): f"{a} vs {b}"
                                          for k, (a, b) in enumerate(result.contrasts)}}, **kw)
    if "summary" in what:
        fig12(result, shown, **kw).save(folder / output.SUMMARY)
    say(f"Q: {args.question}")
    for a, p in top:
        say(f"  {a:<12} {p:.3f}")
    say(json.dumps({"out": str(folder)}))
