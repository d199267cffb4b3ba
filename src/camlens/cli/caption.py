"""``camlens caption``: caption images (or score a given caption) and explain the whole caption
and each visual word with Guided Backprop, Grad-CAM and Guided Grad-CAM (Sec. 8.1).

    camlens caption photo.png --out captions
    camlens caption photo.png --caption "a large red tabby next to a small blue mug" --out c
    camlens caption photo.png --model my.py:build --weights w.pt --vocab vocab.json --layer L

Default model: the bundled world v2 captioner (:mod:`camlens.captioning`), offline.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from camlens import io as cio
from camlens.cli import say
from camlens.cli.options import (
    debug_options,
    output_options,
    positive_int,
    progress_options,
)
from camlens.loading import CliError
from camlens.methods import METHODS

BUNDLED = "synthetic:captioner"
DEFAULT_METHODS = ("guided-backprop", "gradcam", "guided-gradcam")


def _methods(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown method {bad[0] if bad else text!r}; choose "
                                         f"from {', '.join(sorted(METHODS))}")
    return names


def add(sub: Any) -> None:
    p = sub.add_parser(
        "caption", parents=[output_options(), progress_options(), debug_options()],
        help="caption images and explain the caption and its words (Sec. 8.1)",
        description="Generate a caption (beam search) or score --caption, and explain "
                    "log p(caption) and each visual word's log p with Guided Backprop, Grad-CAM "
                    "and Guided Grad-CAM. For each image writes OUT/<stem>/: "
                    "<method>_caption.png, <method>_<position>-<word>.png, summary.png, "
                    "maps.npz and explanation.json (the caption, its log-probability, per-word "
                    "scores), the layout of `camlens explain`.")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER",
                   help="image files, folders (searched recursively) or sample:NAME")
    p.add_argument("--caption", default=None,
                   help="explain this caption instead of generating one (same for every image)")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=BUNDLED, metavar="SPEC",
                   help=f"{BUNDLED} (default: the bundled world v2 captioner, 112x112 input "
                        "in [0, 1]; other images are resized to it), or path/to/file.py:ATTR / "
                        "package.module:ATTR: an nn.Module (or a zero-argument factory) taking "
                        "(image, tokens) and returning logits (B, T, V), step t scoring token "
                        "t+1; it generates captions if it has begin(image) and step(token, "
                        "state) methods (see camlens.captioning.decode), else give --caption")
    g.add_argument("--weights", metavar="FILE", help="state dict for --model (strict)")
    g.add_argument("--vocab", metavar="FILE",
                   help="vocabulary: JSON {\"words\": [...]} or one word a line, <pad>, "
                        "<start>, <end> first (required with a user model)")
    g.add_argument("--layer", metavar="NAME",
                   help="Grad-CAM layer (default: features.18 for the bundled captioner)")
    g.add_argument("--input-size", type=positive_int, default=None, metavar="N",
                   help="user models: shorter side in pixels (default 224)")
    g.add_argument("--mean", type=float, nargs=3, metavar=("R", "G", "B"),
                   help="user models: normalisation mean (default ImageNet's)")
    g.add_argument("--std", type=float, nargs=3, metavar=("R", "G", "B"),
                   help="user models: normalisation std (default ImageNet's)")
    w = p.add_argument_group("what to explain")
    w.add_argument("--method", "--methods", action="append", type=_methods, metavar="M[,M]",
                   help="methods, repeatable or a comma list (default: "
                        + ", ".join(DEFAULT_METHODS) + ")")
    w.add_argument("--words", choices=("visual", "all"), default="visual",
                   help="visual: the words that name objects (default); all: every word and "
                        "<end>")
    w.add_argument("--beam", type=positive_int, default=3,
                   help="beam width for generating captions (1: greedy; default 3)")
    p.set_defaults(func=run)


def _load(args: argparse.Namespace) -> tuple[torch.nn.Module, Any, str, Any]:
    """(model in eval mode, vocabulary, layer, preprocess) of the arguments."""
    from camlens.captioning import load_captioner, load_vocabulary
    from camlens.captioning.model import LAYER
    from camlens.loading import apply_weights
    from camlens.models.bundled import IMAGENET_MEAN, IMAGENET_STD, preprocess_capped
    from camlens.models.registry import resolve_source

    if args.model == BUNDLED:
        given = [f"--{k.replace('_', '-')}" for k in ("weights", "input_size", "mean", "std")
                 if getattr(args, k) is not None]
        if given:
            raise CliError(f"{', '.join(given)} apply to a user model; the bundled captioner "
                           "has its own weights and 112x112 input")
        bundled = load_captioner()
        vocab = load_vocabulary(args.vocab) if args.vocab else load_vocabulary()
        if len(vocab) != bundled.head.out_features:
            raise CliError(f"--vocab {args.vocab}: {len(vocab)} entries, the captioner scores "
                           f"{bundled.head.out_features}")

        def square(img: Image.Image) -> torch.Tensor:
            img = img.convert("RGB").resize((112, 112), Image.Resampling.BILINEAR)
            return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255.0
        return bundled, vocab, args.layer or LAYER, square
    if args.vocab is None:
        raise CliError(f"--model {args.model} needs --vocab FILE (its words, <pad>, <start>, "
                       "<end> first)")
    vocab = load_vocabulary(args.vocab)
    source = resolve_source(args.model)
    model = source.model
    if args.weights is not None:
        apply_weights(model, args.weights, args.model)
    layer = args.layer or source.default_layer
    if layer is None:
        raise CliError(f"--model {args.model} has no default layer: give --layer NAME "
                       "(`camlens layers --model ...` lists them)")
    size = args.input_size or source.input_size or 224
    mean = tuple(args.mean or source.mean or IMAGENET_MEAN)
    std = tuple(args.std or source.std or IMAGENET_STD)

    def prep(img: Image.Image) -> torch.Tensor:
        return preprocess_capped(img, input_size=size, max_side=4 * size, mean=mean, std=std)
    return model.eval(), vocab, layer, prep


def run(args: argparse.Namespace) -> int:
    from camlens.captioning.explain import content_visual, explain_caption, world_visual
    from camlens.captioning.output import save_caption
    from camlens.captioning.vocab import UnknownWordError
    from camlens.cli.explain import _outside, _what
    from camlens.layers import resolve_layers

    methods = list(dict.fromkeys(m for ms in (args.method or [list(DEFAULT_METHODS)]) for m in ms))
    model, vocab, layer, prep = _load(args)
    if args.caption is not None:
        try:
            vocab.encode(args.caption)
        except UnknownWordError as exc:
            raise CliError(f"--caption: {exc}") from exc
        except ValueError as exc:
            raise CliError(f"--caption: {exc}; give a caption of one or more words") from exc
    elif not (hasattr(model, "begin") and hasattr(model, "step")):
        raise CliError(f"--model {args.model} cannot generate captions (no begin/step "
                       "methods): give --caption")
    if any(METHODS[m].needs_layer for m in methods):
        resolve_layers(model, layer)  # LayerError with the nearest names
    out = Path(args.out).expanduser()
    paths = cio.resolve_inputs(_outside(args.inputs, out), exclude=out)
    visual = world_visual if args.model == BUNDLED else content_visual
    failed = 0
    start = time.perf_counter()
    for path in paths:
        try:
            img = cio.load_image(path)
        except cio.ImageError as exc:
            say(f"camlens: error: {' '.join(str(exc).split())}", sys.stderr)
            failed += 1
            continue
        x = prep(img)[None]
        res = explain_caption(model, x, vocab, caption=args.caption, methods=methods,
                              layer=layer, words=args.words, visual=visual, beam=args.beam)
        side = args.max_output_side or 768
        shown = img.copy()
        shown.thumbnail((side, side), Image.Resampling.LANCZOS)
        folder = out / cio.safe_stem(path)
        save_caption(res, shown.convert("RGB"), folder, what=_what(args.save),
                     colormap=args.colormap, alpha=args.alpha,
                     record={"image": str(path), "model": args.model})
        if not args.quiet:
            say(f"{cio.display_path(path.name)} -> {cio.display_path(folder)}/\n"
                f"  {res.text!r} ({res.source}, log p = {res.log_probability:.3f})\n"
                + "\n".join(f"  {w.position:>2} {w.word:<12} log p = {w.log_probability:8.3f}"
                            + ("  (visual)" if w.visual else "") for w in res.words))
    if not args.quiet and len(paths) > failed:
        say(f"captioned {len(paths) - failed} image(s) in {time.perf_counter() - start:.1f}s")
    if failed:
        return 1 if failed < len(paths) else 2
    return 0
