"""The ``camlens`` command line: ``explain`` photos, list a model's ``layers``, list ``methods``.

    camlens explain sample:chelsea photos/ --out explanations
    camlens layers --model path/to/net.py:build
    camlens methods

Exit codes: 0 all done; 1 some images failed (the others finished); 2 a usage error, or no
image could be explained; 3 an internal error (rerun with --debug for the traceback).
A problem with one image (unreadable, refused by the model, non-finite scores) is one line on
stderr and the run goes on; a problem with the arguments stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import functools
import json
import os
import re
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence, TextIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import camlens
from camlens import io as cio
from camlens import viz
from camlens.allocator import keep_freed_memory
from camlens.errors import ExplainError, LayerError, TargetError
from camlens.evidence import RESHAPES
from camlens.layers import resolve_layers
from camlens.loading import CliError
from camlens.models import ModelRecord, load_model
from camlens.methods import METHODS

__all__ = ["main", "build_parser", "CliError"]

PROG = "camlens"
COUNTERFACTUAL = "counterfactual-gradcam"
"""CLI name of counterfactual Grad-CAM (Sec. 3.3): method gradcam with counterfactual=True."""

DEFAULT_METHODS: tuple[str, ...] = ("gradcam", "guided-backprop", "guided-gradcam", COUNTERFACTUAL)
DEFAULT_TOP_K = 3
MIN_MAX_OUTPUT_SIDE = 768
"""Default longer side, in pixels, of the saved maps and overlays of a larger photo (or twice
--input-size when that is more): the maps come from a model input of about --input-size pixels,
so more pixels would only interpolate them. A 12 MP photo with 4 methods x 3 classes wrote
1.2 GB at full size; at 768, under 20 MB."""

# Method name -> Figure 1 column key of viz.DEFAULT_COLUMNS.
_FIGURE1_KEYS = {
    "guided-backprop": "guided_backprop",
    "gradcam": "gradcam",
    "guided-gradcam": "guided_gradcam",
    COUNTERFACTUAL: "counterfactual",
}


def _method_names() -> list[str]:
    return sorted(METHODS) + [COUNTERFACTUAL]


def _base_method(name: str) -> tuple[str, dict[str, Any]]:
    """(registered method, its options) behind a CLI method name."""
    if name == COUNTERFACTUAL:
        return "gradcam", {"counterfactual": True}
    return name, {}


# --------------------------------------------------------------------------- messages


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error(message: str) -> None:
    print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr, flush=True)


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total: int, enabled: bool, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        self.done = 0
        self.enabled = enabled and total > 1 and _isatty(self.stream)
        self.start = time.perf_counter()
        self._drawn = False

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False

    def _draw(self) -> None:
        if not self.enabled:
            return
        width = 24
        filled = round(width * self.done / max(1, self.total))
        elapsed = time.perf_counter() - self.start
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(f"\r[{bar}] {self.done}/{self.total} images  {elapsed:.0f}s")
        self.stream.flush()
        self._drawn = True

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._draw()

    def say(self, text: str, stream: TextIO | None = None) -> None:
        """Print ``text`` (to stdout by default) without garbling the bar."""
        self._clear()
        out = stream or sys.stdout
        print(text, file=out, flush=True)
        self._draw()

    def close(self) -> None:
        self._clear()


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


# --------------------------------------------------------------------------- argument parsing


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors in camlens' format (exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def _model_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model")
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
    g.add_argument("--input-size", type=_positive_int, default=224, metavar="N",
                   help="resize the shorter side to N pixels, aspect kept, no crop (default 224)")
    g.add_argument("--max-input-side", type=_positive_int, default=None, metavar="N",
                   help="cap the longer side of the model's input at N pixels (default 4 x "
                        "--input-size): an image longer than 4:1 is shrunk to fit, its shorter "
                        "side then below --input-size")
    g.add_argument("--mean", type=float, nargs=3, metavar=("R", "G", "B"),
                   help="normalisation mean (default: ImageNet's)")
    g.add_argument("--std", type=float, nargs=3, metavar=("R", "G", "B"),
                   help="normalisation std (default: ImageNet's)")
    g.add_argument("--device", default="cpu", help="torch device (default cpu)")


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Grad-CAM and its family (Selvaraju et al.): visual explanations of what an "
                    "image classifier looks at.",
        epilog="exit codes: 0 done; 1 some images failed; 2 usage error or no image explained; "
               "3 internal error",
    )
    parser.add_argument("--version", action="version", version=f"camlens {camlens.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    ex = sub.add_parser(
        "explain", help="explain photos: heatmaps, pixel-space maps, Figure 1, maps.npz",
        description="Explain the model's decisions on images. For each image writes "
                    "OUT/<stem>/: <method>_<class>.png, summary.png (Figure 1), maps.npz "
                    "(compressed; <method>/<class> -> float16 maps in [0, 1] at the photo's "
                    "resolution, up to --max-output-side) and explanation.json. Folders are "
                    "searched recursively, skipping hidden ones and OUT.",
    )
    ex.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER",
                    help="image files, folders (searched recursively) or sample:NAME "
                         f"({', '.join(sorted(cio.SAMPLE_IMAGES))})")
    _model_options(ex)
    g = ex.add_argument_group("what to explain")
    g.add_argument("--layer", metavar="NAME",
                   help="dotted layer name for Grad-CAM (default: the model's default layer; "
                        "`camlens layers` lists them)")
    g.add_argument("--reshape", choices=sorted(RESHAPES), default=None,
                   help="tokens: the layer outputs a vision transformer's (B, N, C) tokens; "
                        "drop the class token(s), put the patches back on their square grid. "
                        "channels-last: the layer outputs (B, h, w, C) maps (Swin)")
    g.add_argument("--target", action="append", metavar="CLASS",
                   help="class index or label name (case-insensitive); repeatable")
    g.add_argument("--top-k", type=_positive_int, default=None, metavar="K",
                   help=f"explain the top K classes when no --target is given (default "
                        f"{DEFAULT_TOP_K}); with --target, K predictions are reported")
    g.add_argument("--method", action="append", choices=_method_names(), metavar="METHOD",
                   help="repeatable; one of: " + ", ".join(_method_names()) + " (default: "
                        + ", ".join(DEFAULT_METHODS) + ")")
    g = ex.add_argument_group("output")
    g.add_argument("--out", default="explanations", metavar="DIR",
                   help="output folder (default ./explanations); inputs inside it are skipped")
    g.add_argument("--max-output-side", type=_positive_int, default=None, metavar="N",
                   help="write the overlay PNGs and maps.npz at the photo's resolution, shrunk "
                        f"to a longer side of N pixels when larger (default "
                        f"{MIN_MAX_OUTPUT_SIDE}, or 2 x --input-size when that is more)")
    g.add_argument("--colormap", default="jet", choices=viz.COLORMAPS,
                   help="heatmap colormap (default jet)")
    g.add_argument("--alpha", type=_unit_float, default=0.5,
                   help="heatmap opacity over the photo, 0..1 (default 0.5)")
    g.add_argument("--batch-size", type=_positive_int, default=8, metavar="N",
                   help="images per batch; only images of the same resized shape share one "
                        "(default 8)")
    g.add_argument("--max-pixels", type=_positive_int, default=cio.DEFAULT_MAX_PIXELS,
                   metavar="N",
                   help=f"refuse images above N pixels, a decompression-bomb guard "
                        f"(default {cio.DEFAULT_MAX_PIXELS})")
    g.add_argument("--quiet", "-q", action="store_true",
                   help="print nothing but errors")
    _common_options(ex)
    ex.set_defaults(func=cmd_explain)

    ly = sub.add_parser("layers", help="list the model's layers with output shapes",
                        description="List the model's layers (dotted names), their module type "
                                    "and output shape for a dummy image; * marks the default "
                                    "layer.")
    _model_options(ly)
    _common_options(ly)
    ly.set_defaults(func=cmd_layers)

    ev = sub.add_parser("evaluate", help="the paper's evaluations over a dataset",
                        description="Weakly-supervised localisation (Table 1), the pointing game "
                                    "(with top-5 + rejection) or faithfulness (rank correlation "
                                    "with occlusion) over a dataset; per-image CSV rows, "
                                    "resumable, and a summary table.")
    from camlens.evaluate.runner import add_evaluate_arguments

    add_evaluate_arguments(ev)
    ev.add_argument("--debug", action="store_true", help="show tracebacks")
    ev.set_defaults(func=cmd_evaluate)

    me = sub.add_parser("methods", help="list the explanation methods",
                        description="List the explanation methods and their options.")
    _common_options(me)
    me.set_defaults(func=cmd_methods)
    return parser


# --------------------------------------------------------------------------- explain: set-up


def resolve_target(text: str, labels: Sequence[str]) -> int:
    """A class index or a label name (case-insensitive) -> class index, or a CliError."""
    s = text.strip()
    n = len(labels)
    if re.fullmatch(r"[+-]?\d+", s):
        idx = int(s)
        if not 0 <= idx < n:
            raise CliError(
                f"--target {s}: class index out of range: the model has {n} classes, "
                f"so indices run from 0 to {n - 1}"
            )
        return idx
    key = s.casefold()
    hits = [i for i, name in enumerate(labels) if name.casefold() == key]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise CliError(
            f"--target {s!r} names {len(hits)} classes ({', '.join(map(str, hits))}); "
            "pass the class index instead"
        )
    folded: dict[str, str] = {}
    for name in labels:
        folded.setdefault(name.casefold(), name)
    near = difflib.get_close_matches(key, list(folded), n=5, cutoff=0.6)
    hint = ("nearest names: " + ", ".join(repr(folded[m]) for m in near)) if near else (
        "give a class index (0 to {}) or one of the model's label names".format(n - 1))
    raise CliError(f"--target {s!r}: no class has that name; {hint}")


def _dedupe(items: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


def unique_stems(paths: Sequence[Path]) -> list[str]:
    """One output folder name per input: its stem made safe (:func:`camlens.io.safe_stem`:
    valid UTF-8, never ``.`` or ``..``, no separators), with -2, -3... when stems repeat
    (compared case-insensitively)."""
    used: set[str] = set()
    out: list[str] = []
    for path in paths:
        stem = cio.safe_stem(path)
        name, n = stem, 1
        while name.casefold() in used:
            n += 1
            name = f"{stem}-{n}"
        used.add(name.casefold())
        out.append(name)
    return out


def _outside(specs: Sequence[str], out: Path) -> list[str]:
    """The input specs that do not lie inside ``out``; each one that does is skipped with a
    warning. camlens never reads its own outputs: a second ``camlens explain .`` would
    otherwise explain the first one's pictures, and an input such as ``OUT/x/summary.png``
    would be overwritten by its own summary."""
    kept = []
    for spec in specs:
        if (not spec.lower().startswith(cio.SAMPLE_PREFIX)
                and cio.is_inside(os.path.expanduser(spec), out)):
            _warn(f"{cio.display_path(spec)}: skipped: it is inside the output folder "
                  f"--out {cio.display_path(out)}, and camlens never reads its own outputs")
        else:
            kept.append(spec)
    if not kept:
        raise CliError(f"every input is inside the output folder --out {cio.display_path(out)};"
                       " give inputs outside it, or another --out")
    return kept


def _layer_hint(loaded: ModelRecord) -> str:
    """The core's advice on which layer to pick (from the LayerError it raises)."""
    try:
        camlens.explain(loaded.model, torch.zeros(1, 3, 8, 8, device=loaded.device),
                        method="gradcam", layer=None)
    except LayerError as exc:
        return str(exc).split(": ", 1)[-1]
    except (ExplainError, RuntimeError):  # pragma: no cover - any other complaint: no hint
        pass
    return "pass the dotted name of a layer whose output is (B, C, h, w)"


@dataclass
class Settings:
    loaded: ModelRecord
    methods: list[str]
    layer: str | None
    targets: list[int] | None
    top_k: int
    out: Path
    colormap: str
    alpha: float
    max_output_side: int
    quiet: bool
    debug: bool = False
    reshape: str | None = None


@dataclass
class Item:
    """One image waiting for its batch: ``image`` is already shrunk to the output size."""

    path: Path
    stem: str
    image: Image.Image
    original_size: tuple[int, int]
    tensor: torch.Tensor


@dataclass
class Tally:
    done: int = 0
    failed: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def _warn(message: str, progress: Progress | None = None) -> None:
    line = f"{PROG}: warning: {_one_line(message)}"
    if progress is None:
        print(line, file=sys.stderr, flush=True)
    else:
        progress.say(line, sys.stderr)


def _fail(message: str, cfg: Settings, progress: Progress, tally: Tally) -> None:
    """One image failed: say why in one line and go on with the others."""
    if cfg.debug and sys.exc_info()[0] is not None:
        progress.close()
        traceback.print_exc()
    tally.failed += 1
    progress.say(f"{PROG}: error: {_one_line(message)}", sys.stderr)
    progress.advance()


# --------------------------------------------------------------------------- explain: the work


def _resized(m: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """One (h, w) heatmap or (3, h, w) pixel-space map at the model input's resolution ->
    ``size`` = (H, W), bilinear (antialiased when shrinking), clipped to [0, 1]; float32
    (H, W) or (H, W, 3)."""
    pixel = m.dim() == 3
    x = (m if pixel else m[None])[None]
    if tuple(x.shape[-2:]) != size:
        shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
    arr = x[0].clamp(0.0, 1.0).numpy()
    return np.ascontiguousarray(np.moveaxis(arr, 0, -1)) if pixel else arr[0]


def _columns(methods: Sequence[str]) -> list[tuple[str, str]]:
    present = {_FIGURE1_KEYS.get(m, m) for m in methods}
    cols = [c for c in viz.DEFAULT_COLUMNS if c[0] == "image" or c[0] in present]
    for m in methods:
        if m not in _FIGURE1_KEYS:
            cols.append((m, METHODS[m].summary.split(":")[0]))
    return cols


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _scores(items: list[Item], cfg: Settings, progress: Progress, tally: Tally
            ) -> tuple[list[Item], torch.Tensor, torch.Tensor] | None:
    """(items, inputs (B, 3, H, W), scores (B, N)) for the images of one batch whose scores are
    finite; an input the model refuses, or non-finite scores, fail those images (None: all
    failed)."""
    x = torch.stack([it.tensor for it in items]).to(cfg.loaded.device)
    try:
        with torch.no_grad():
            out = cfg.loaded.model(x)
        logits = getattr(out, "logits", out).detach().float().cpu()
    except Exception as exc:  # noqa: BLE001 - the user's model refused this input: per image
        h, w = x.shape[-2:]
        for it in items:
            _fail(f"{cio.display_path(it.path)}: the model failed on its {h}x{w} input "
                  f"({_first_line(exc)}); a model that takes one input size only needs images "
                  "of that shape (e.g. square ones)", cfg, progress, tally)
        return None
    finite = torch.isfinite(logits).all(dim=1).tolist()
    for it, ok in zip(items, finite):
        if not ok:
            _fail(f"{cio.display_path(it.path)}: the model's scores for this image are not "
                  "finite (NaN or Inf), so there is nothing to explain; check the model's "
                  "weights and the image", cfg, progress, tally)
    if not any(finite):
        return None
    keep = [i for i, ok in enumerate(finite) if ok]
    return [items[i] for i in keep], x[keep], logits[keep]


def _explain_batch(items: list[Item], cfg: Settings, progress: Progress, tally: Tally) -> None:
    scored = _scores(items, cfg, progress, tally)
    if scored is None:
        return
    items, x, logits = scored
    batch = len(items)
    probs = torch.softmax(logits, dim=1)
    top = probs.topk(min(cfg.top_k, probs.shape[1]), dim=1)
    if cfg.targets is not None:
        target = torch.tensor([cfg.targets] * batch, dtype=torch.long)
    else:
        target = top.indices.clone()

    results: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    try:
        for name in cfg.methods:
            base, options = _base_method(name)
            start = time.perf_counter()
            with_layer = METHODS[base].needs_layer
            ex = camlens.explain(
                cfg.loaded.model, x, method=base, layer=cfg.layer if with_layer else None,
                target=target.to(cfg.loaded.device),
                reshape=cfg.reshape if with_layer else None, **options,
            )
            seconds[name] = (time.perf_counter() - start) / batch
            results[name] = ex.maps.detach().float().cpu()
    except ExplainError as exc:
        if isinstance(exc, (LayerError, TargetError)) and not tally.done:
            raise  # --layer, --reshape or --target do not fit the model: a usage error
        for it in items:
            _fail(f"{cio.display_path(it.path)}: {exc}", cfg, progress, tally)
        return
    for name, s in seconds.items():
        tally.seconds[name] = tally.seconds.get(name, 0.0) + s * batch

    for i, item in enumerate(items):
        bad = [n for n in cfg.methods if not torch.isfinite(results[n][i]).all()]
        if bad:
            _fail(f"{cio.display_path(item.path)}: the {', '.join(bad)} map(s) came out "
                  "non-finite (NaN or Inf); nothing was written", cfg, progress, tally)
            continue
        try:
            _write_outputs(item, cfg, {n: r[i] for n, r in results.items()}, seconds,
                           probs[i], top.indices[i], top.values[i], target[i].tolist(),
                           tuple(x.shape[-2:]), progress)
        except OSError as exc:
            _fail(f"{cio.display_path(item.path)}: cannot write the outputs: "
                  f"{exc.strerror or exc} ({cio.display_path(exc.filename or cfg.out)})",
                  cfg, progress, tally)
        else:
            tally.done += 1
            progress.advance()


def _write_outputs(item: Item, cfg: Settings, maps: dict[str, torch.Tensor],
                   seconds: dict[str, float], probs: torch.Tensor, top_idx: torch.Tensor,
                   top_p: torch.Tensor, targets: list[int], input_hw: tuple[int, ...],
                   progress: Progress) -> None:
    """Write OUT/<stem>/ for one image; on any error, remove what this call wrote."""
    folder = cfg.out / item.stem
    created = not os.path.lexists(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        empty = _write_maps(item, cfg, maps, targets, probs, folder, written)
        _write_record(item, cfg, seconds, probs, top_idx, top_p, targets, input_hw, empty,
                      folder)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    if not cfg.quiet:
        labels = cfg.loaded.labels
        lines = [f"{cio.display_path(item.path.name)} -> {cio.display_path(folder)}/"]
        names = [labels[c] for c in top_idx.tolist()]
        width = max(len(n) for n in names)
        for r, (c, p) in enumerate(zip(top_idx.tolist(), top_p.tolist())):
            lines.append(f"  {r + 1}. {labels[c]:<{width}}  {p:.3f}  (class {c})")
        progress.say("\n".join(lines))


def _write_maps(item: Item, cfg: Settings, maps: dict[str, torch.Tensor], targets: list[int],
                probs: torch.Tensor, folder: Path, written: list[Path]) -> list[str]:
    """maps.npz (float16, compressed), one PNG per method and target, summary.png; one map
    at a time at the output size. Returns the keys of the constant ("empty") maps."""
    img = item.image
    size = (img.height, img.width)
    columns = _columns(cfg.methods)
    layout = viz.figure1_layout(img.size, len(targets), columns)
    thumb = (layout.panel_w, layout.panel_h)
    empty: list[str] = []
    panels: dict[int, dict[str, Image.Image]] = {k: {} for k in range(len(targets))}
    with cio.npz_writer(folder / "maps.npz") as add:
        for name in cfg.methods:
            key = _FIGURE1_KEYS.get(name, name)
            for k, cls in enumerate(targets):
                m = _resized(maps[name][k], size)
                saved = m.astype(np.float16)
                add(f"{name}/{cls}", saved)
                pic = viz.pixel_space_image(m) if m.ndim == 3 else viz.overlay(
                    img, m, alpha=cfg.alpha, colormap=cfg.colormap)
                if saved.max() == saved.min():  # e.g. counterfactual Grad-CAM: nothing against
                    empty.append(f"{name}/{cls}")
                    pic = viz.caption(pic, "no evidence: the map is zero")
                written.append(viz.save_png(pic, folder / f"{name}_{cls}.png"))
                panels[k][key] = pic.resize(thumb, Image.Resampling.BILINEAR)
    written.append(folder / "maps.npz")
    labels = cfg.loaded.labels
    rows = [
        viz.Row(f"{labels[cls]} (class {cls}, p={float(probs[cls]):.3f})", panels[k])
        for k, cls in enumerate(targets)
    ]
    summary = viz.figure1(img.resize(thumb, Image.Resampling.BILINEAR), rows, columns=columns)
    written.append(viz.save_png(summary, folder / "summary.png"))
    return empty


def _write_record(item: Item, cfg: Settings, seconds: dict[str, float], probs: torch.Tensor,
                  top_idx: torch.Tensor, top_p: torch.Tensor, targets: list[int],
                  input_hw: tuple[int, ...], empty: list[str], folder: Path) -> None:
    """explanation.json: strict JSON (no NaN or Infinity), valid UTF-8 whatever the file name."""
    labels = cfg.loaded.labels
    shown = cio.display_path(item.path)
    exact = {} if shown == os.fspath(item.path) else {
        "image_bytes_hex": os.fsencode(item.path).hex(),
        "image_note": "the file name is not valid UTF-8: \"image\" shows its odd bytes as \\xNN, "
                      "image_bytes_hex is the exact name",
    }
    record = {
        "camlens_version": camlens.__version__,
        "image": shown,
        **exact,
        "model": cfg.loaded.name,
        "device": str(cfg.loaded.device),
        "layer": cfg.layer,
        "reshape": cfg.reshape,
        "input_size": cfg.loaded.input_size,
        "model_input_size": {"height": int(input_hw[0]), "width": int(input_hw[1])},
        "original_size": {"height": item.original_size[1], "width": item.original_size[0]},
        "output_size": {"height": item.image.height, "width": item.image.width},
        "output_size_note": "size of the PNGs and maps: the original size, shrunk to a longer "
                            f"side of {cfg.max_output_side} pixels when larger",
        "maps_dtype": "float16",
        "predictions": [
            {"rank": r + 1, "index": c, "name": labels[c], "probability": p}
            for r, (c, p) in enumerate(zip(top_idx.tolist(), top_p.tolist()))
        ],
        "targets": [{"index": c, "name": labels[c], "probability": float(probs[c])}
                    for c in targets],
        "methods": list(cfg.methods),
        "maps": sorted(f"{m}/{c}" for m in cfg.methods for c in targets),
        "empty_maps": sorted(empty),
        "empty_maps_note": "maps that are constant (no evidence for the method's question)",
        "timings": {m: round(s, 4) for m, s in seconds.items()},
        "timings_note": "seconds per image: each method's time on its batch / batch size",
    }
    text = json.dumps(record, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    cio.atomic_write_bytes(folder / "explanation.json", text.encode("utf-8"))


def _load(path: Path, stem: str, cfg: Settings, max_pixels: int, progress: Progress,
          tally: Tally) -> Item | None:
    """Read one image (None if it cannot be used: that image failed) and prepare its input."""
    try:
        img, notes = cio.load_image_reporting(path, max_pixels=max_pixels)
    except cio.ImageError as exc:
        _fail(str(exc), cfg, progress, tally)
        return None
    for note in notes:
        _warn(f"{cio.display_path(path)}: {note}", progress)
    return Item(path, stem, viz.shrink_to(img, cfg.max_output_side), img.size,
                cfg.loaded.preprocess(img))


def cmd_explain(args: argparse.Namespace) -> int:
    try:
        viz.colormap(args.colormap)
    except ImportError as exc:
        raise CliError(str(exc)) from exc
    out = Path(args.out).expanduser()
    paths = cio.resolve_inputs(_outside(args.inputs, out), exclude=out)
    loaded = load_model(args.model, weights=args.weights, labels=args.labels,
                        input_size=args.input_size, mean=args.mean, std=args.std,
                        device=args.device, max_input_side=args.max_input_side)
    methods = _dedupe(args.method or DEFAULT_METHODS)
    needs_layer = any(METHODS[_base_method(m)[0]].needs_layer for m in methods)
    layer = args.layer or loaded.default_layer
    if args.layer is not None:
        resolve_layers(loaded.model, args.layer)  # LayerError with the nearest names
    if needs_layer and layer is None:
        raise CliError(
            f"--layer is required for {loaded.name} (it has no default layer) with "
            f"{', '.join(m for m in methods if METHODS[_base_method(m)[0]].needs_layer)}: "
            f"{_layer_hint(loaded)}; `camlens layers --model {loaded.name}` lists them"
        )
    top_k = args.top_k or DEFAULT_TOP_K
    if args.top_k is not None and args.top_k > loaded.num_classes:
        raise CliError(f"--top-k {args.top_k}: the model has only {loaded.num_classes} classes")
    top_k = min(top_k, loaded.num_classes)
    targets = (_dedupe(resolve_target(t, loaded.labels) for t in args.target)
               if args.target else None)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"--out {cio.display_path(out)}: cannot create the folder "
                       f"({exc.strerror or exc})") from exc

    cfg = Settings(loaded, methods, layer if needs_layer else None, targets, top_k, out,
                   args.colormap, args.alpha,
                   args.max_output_side or max(MIN_MAX_OUTPUT_SIDE, 2 * args.input_size),
                   args.quiet, args.debug,
                   args.reshape if needs_layer else None)
    tally = Tally()
    progress = Progress(len(paths), enabled=not args.quiet)
    pending: dict[tuple[int, ...], list[Item]] = {}
    start = time.perf_counter()
    try:
        for path, stem in zip(paths, unique_stems(paths)):
            item = _load(path, stem, cfg, args.max_pixels, progress, tally)
            if item is None:
                continue
            shape = tuple(item.tensor.shape)
            group = pending.setdefault(shape, [])
            group.append(item)
            if len(group) >= args.batch_size:
                _explain_batch(pending.pop(shape), cfg, progress, tally)
            elif sum(map(len, pending.values())) >= 4 * args.batch_size:
                # photos of many sizes: bound what waits by running the oldest group now
                _explain_batch(pending.pop(next(iter(pending))), cfg, progress, tally)
        for shape in list(pending):
            _explain_batch(pending.pop(shape), cfg, progress, tally)
    finally:
        progress.close()
    if not args.quiet and tally.done:
        total = time.perf_counter() - start
        per = ", ".join(f"{m} {s / tally.done:.2f}s" for m, s in tally.seconds.items())
        print(f"explained {tally.done} image(s) in {total:.1f}s (per image: {per})"
              + (f"; {tally.failed} failed" if tally.failed else ""), flush=True)
    if tally.failed:
        return 1 if tally.done else 2
    return 0


# --------------------------------------------------------------------------- layers, methods


def _shape_of(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape))
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_shape_of(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_shape_of(v)}" for k, v in value.items()) + "}"
    return type(value).__name__


def layer_table(loaded: ModelRecord) -> list[tuple[str, str, str, int]]:
    """(name, module type, output shape, calls) for every named submodule, recorded with forward
    hooks on one dummy (1, 3, S, S) forward pass; the hooks are removed afterwards."""
    model = loaded.model
    seen: dict[str, list[str]] = {}
    handles = []

    def record(name: str, _module: Any, _inputs: Any, output: Any) -> None:
        seen.setdefault(name, []).append(_shape_of(output))

    named = [(n, m) for n, m in model.named_modules() if n]
    try:
        for name, module in named:
            handles.append(module.register_forward_hook(functools.partial(record, name)))
        s = loaded.input_size
        with torch.no_grad():
            model(torch.zeros(1, 3, s, s, device=loaded.device))
    finally:
        for h in handles:
            h.remove()
    rows = []
    for name, module in named:
        shapes = seen.get(name, [])
        rows.append((name, type(module).__name__, shapes[0] if shapes else "-", len(shapes)))
    return rows


def cmd_layers(args: argparse.Namespace) -> int:
    loaded = load_model(args.model, weights=args.weights, labels=args.labels,
                        input_size=args.input_size, mean=args.mean, std=args.std,
                        device=args.device)
    rows = layer_table(loaded)
    s = loaded.input_size
    print(f"{loaded.name}: {len(rows)} layers, output shapes for a (1, 3, {s}, {s}) input; "
          f"* marks the default layer" if loaded.default_layer else
          f"{loaded.name}: {len(rows)} layers, output shapes for a (1, 3, {s}, {s}) input; "
          "no default layer: pass --layer NAME to explain")
    if not rows:
        return 0
    wn = max(len(r[0]) for r in rows)
    wt = max(len(r[1]) for r in rows)
    for name, kind, shape, calls in rows:
        mark = "*" if name == loaded.default_layer else " "
        extra = f"  (runs {calls}x)" if calls > 1 else ""
        print(f"{mark} {name:<{wn}}  {kind:<{wt}}  {shape}{extra}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    rows = []
    for name in sorted(METHODS):
        m = METHODS[name]
        traits = ["needs --layer" if m.needs_layer else "no layer",
                  "pixel-space map" if m.pixel_space else "heatmap"]
        opts = f"; options: {', '.join(m.options)}" if m.options else ""
        rows.append((name, m.summary, ", ".join(traits) + opts))
    rows.append((COUNTERFACTUAL, "Counterfactual Grad-CAM (Sec. 3.3): regions that lower the "
                 "class score", "needs --layer, heatmap; gradcam with counterfactual=True"))
    width = max(len(r[0]) for r in rows)
    for name, summary, detail in rows:
        default = "  [default]" if name in DEFAULT_METHODS else ""
        print(f"{name:<{width}}  {summary}{default}")
        print(f"{'':<{width}}    {detail}")
    return 0


# --------------------------------------------------------------------------- evaluate


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``camlens evaluate``: the library's dataset errors (a bad spec, a missing folder, an
    unreadable annotation, an unknown net) are the user's input, so they become one-line
    errors with exit code 2."""
    from camlens.evaluate.runner import run_cli

    try:
        return run_cli(args)
    except (ValueError, LookupError, OSError) as exc:
        if isinstance(exc, ExplainError):
            raise
        message = exc.args[0] if isinstance(exc, LookupError) and exc.args else str(exc)
        raise CliError(str(message)) from exc


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """Run the ``camlens`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit
    code."""
    parser = build_parser()
    keep_freed_memory()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    debug = bool(getattr(args, "debug", False))
    try:
        with warnings.catch_warnings():
            if not debug:  # one line each, like the errors
                warnings.showwarning = _show_warning
            return int(args.func(args))
    except (CliError, ExplainError, cio.ImageError) as exc:
        if debug:
            traceback.print_exc()
        _error(str(exc))
        return getattr(exc, "code", 2)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `camlens layers | head`
        return 0
    except Exception as exc:  # noqa: BLE001 - unexpected: one line, or the traceback with --debug
        if debug:
            traceback.print_exc()
        else:
            _error(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug)")
        return 3


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    print(f"{PROG}: warning: {_one_line(str(message))}", file=file or sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
