"""The ``camlens`` command line: ``explain`` photos, list a model's ``layers``, list ``methods``.

    camlens explain sample:chelsea photos/ --out explanations
    camlens layers --model path/to/net.py:build
    camlens methods

Exit codes: 0 all done; 1 some images failed (the others finished); 2 a usage error, or no
image could be explained; 3 an internal error (rerun with --debug for the traceback).
"""

from __future__ import annotations

import argparse
import difflib
import functools
import json
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
from camlens.errors import ExplainError, LayerError
from camlens.evidence import RESHAPES
from camlens.layers import resolve_layers
from camlens.loading import CliError, LoadedModel, load_model
from camlens.methods import METHODS

__all__ = ["main", "build_parser", "CliError"]

PROG = "camlens"
COUNTERFACTUAL = "counterfactual-gradcam"
"""CLI name of counterfactual Grad-CAM (Sec. 3.3): method gradcam with counterfactual=True."""

DEFAULT_METHODS: tuple[str, ...] = ("gradcam", "guided-backprop", "guided-gradcam", COUNTERFACTUAL)
DEFAULT_TOP_K = 3

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
             "factory returning one)",
    )
    g.add_argument("--weights", metavar="FILE",
                   help="state dict for the model (torch.load weights_only=True, loaded strictly)")
    g.add_argument("--labels", metavar="FILE",
                   help="class names, one per line in class-index order")
    g.add_argument("--input-size", type=_positive_int, default=224, metavar="N",
                   help="resize the shorter side to N pixels, aspect kept, no crop (default 224)")
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
                    "(<method>/<class> -> float32 maps in [0, 1] at the original resolution) and "
                    "explanation.json.",
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
                   help="output folder (default ./explanations)")
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
    """One output folder name per input: its stem, with -2, -3... when stems repeat."""
    used: set[str] = set()
    out: list[str] = []
    for path in paths:
        stem = path.stem or "image"
        name, n = stem, 1
        while name.casefold() in used:
            n += 1
            name = f"{stem}-{n}"
        used.add(name.casefold())
        out.append(name)
    return out


def _layer_hint(loaded: LoadedModel) -> str:
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
    loaded: LoadedModel
    methods: list[str]
    layer: str | None
    targets: list[int] | None
    top_k: int
    out: Path
    colormap: str
    alpha: float
    max_pixels: int
    quiet: bool
    debug: bool = False
    reshape: str | None = None


@dataclass
class Item:
    path: Path
    stem: str
    image: Image.Image
    tensor: torch.Tensor


@dataclass
class Tally:
    done: int = 0
    failed: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- explain: the work


def _to_original(maps: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(K, H, W) or (K, 3, H, W) maps at the model input's resolution -> the original (H0, W0),
    bilinear (antialiased when shrinking), clipped to [0, 1]; (K, H0, W0) or (K, H0, W0, 3)."""
    pixel = maps.dim() == 4
    x = maps if pixel else maps[:, None]
    if tuple(x.shape[-2:]) != size:
        shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
    x = x.clamp_(0.0, 1.0)
    arr = x.numpy().astype(np.float32, copy=False)
    return np.ascontiguousarray(np.moveaxis(arr, 1, -1)) if pixel else arr[:, 0]


def _columns(methods: Sequence[str]) -> list[tuple[str, str]]:
    present = {_FIGURE1_KEYS.get(m, m) for m in methods}
    cols = [c for c in viz.DEFAULT_COLUMNS if c[0] == "image" or c[0] in present]
    for m in methods:
        if m not in _FIGURE1_KEYS:
            cols.append((m, METHODS[m].summary.split(":")[0]))
    return cols


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with cio.atomic_path(path) as tmp:
        with open(tmp, "xb") as fh:
            np.savez(fh, **arrays)


def _explain_batch(items: list[Item], cfg: Settings, progress: Progress, tally: Tally) -> None:
    loaded = cfg.loaded
    model = loaded.model
    x = torch.stack([it.tensor for it in items]).to(loaded.device)
    batch = len(items)
    with torch.no_grad():
        out = model(x)
    logits = getattr(out, "logits", out).detach().float()
    probs = torch.softmax(logits, dim=1).cpu()
    top = probs.topk(min(cfg.top_k, probs.shape[1]), dim=1)
    if cfg.targets is not None:
        target = torch.tensor([cfg.targets] * batch, dtype=torch.long)
    else:
        target = top.indices.clone()

    results: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    for name in cfg.methods:
        base, options = _base_method(name)
        start = time.perf_counter()
        with_layer = METHODS[base].needs_layer
        ex = camlens.explain(
            model, x, method=base, layer=cfg.layer if with_layer else None,
            target=target.to(loaded.device), reshape=cfg.reshape if with_layer else None,
            **options,
        )
        seconds[name] = (time.perf_counter() - start) / batch
        tally.seconds[name] = tally.seconds.get(name, 0.0) + seconds[name] * batch
        results[name] = ex.maps.detach().float().cpu()

    for i, item in enumerate(items):
        try:
            _write_outputs(item, i, cfg, results, seconds, probs[i], top, target[i].tolist(),
                           tuple(x.shape[-2:]), progress)
        except OSError as exc:
            if cfg.debug:
                traceback.print_exc()
            tally.failed += 1
            progress.say(f"{PROG}: error: {item.path}: cannot write the outputs: "
                         f"{_one_line(str(exc))}", sys.stderr)
        else:
            tally.done += 1
        progress.advance()


def _write_outputs(item: Item, i: int, cfg: Settings, results: dict[str, torch.Tensor],
                   seconds: dict[str, float], probs: torch.Tensor, top: Any,
                   targets: list[int], input_hw: tuple[int, ...], progress: Progress) -> None:
    labels = cfg.loaded.labels
    img = item.image
    size = (img.height, img.width)
    folder = cfg.out / item.stem
    folder.mkdir(parents=True, exist_ok=True)

    arrays: dict[str, np.ndarray] = {}
    empty: list[str] = []
    panels: dict[int, dict[str, Image.Image]] = {k: {} for k in range(len(targets))}
    for name in cfg.methods:
        maps = _to_original(results[name][i], size)
        key = _FIGURE1_KEYS.get(name, name)
        for k, cls in enumerate(targets):
            m = maps[k]
            arrays[f"{name}/{cls}"] = m
            pic = viz.pixel_space_image(m) if m.ndim == 3 else viz.overlay(
                img, m, alpha=cfg.alpha, colormap=cfg.colormap)
            if m.max() == m.min():  # e.g. counterfactual Grad-CAM where nothing speaks against
                empty.append(f"{name}/{cls}")
                pic = viz.caption(pic, "no evidence: the map is zero")
            viz.save_png(pic, folder / f"{name}_{cls}.png")
            panels[k][key] = pic
        del maps
    _write_npz(folder / "maps.npz", arrays)
    del arrays

    rows = [
        viz.Row(f"{labels[cls]} (class {cls}, p={float(probs[cls]):.3f})", panels[k])
        for k, cls in enumerate(targets)
    ]
    viz.save_png(viz.figure1(img, rows, columns=_columns(cfg.methods)), folder / "summary.png")

    predictions = [
        {"rank": r + 1, "index": int(c), "name": labels[int(c)], "probability": float(p)}
        for r, (c, p) in enumerate(zip(top.indices[i].tolist(), top.values[i].tolist()))
    ]
    record = {
        "camlens_version": camlens.__version__,
        "image": str(item.path),
        "model": cfg.loaded.name,
        "device": str(cfg.loaded.device),
        "layer": cfg.layer,
        "reshape": cfg.reshape,
        "input_size": cfg.loaded.input_size,
        "model_input_size": {"height": int(input_hw[0]), "width": int(input_hw[1])},
        "original_size": {"height": size[0], "width": size[1]},
        "predictions": predictions,
        "targets": [{"index": c, "name": labels[c], "probability": float(probs[c])}
                    for c in targets],
        "methods": list(cfg.methods),
        "maps": sorted(f"{m}/{c}" for m in cfg.methods for c in targets),
        "empty_maps": sorted(empty),
        "empty_maps_note": "maps that are constant (no evidence for the method's question)",
        "timings": {m: round(s, 4) for m, s in seconds.items()},
        "timings_note": "seconds per image: each method's time on its batch / batch size",
    }
    data = (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    cio.atomic_write_bytes(folder / "explanation.json", data)

    if not cfg.quiet:
        lines = [f"{item.path.name} -> {folder}/"]
        width = max(len(p["name"]) for p in predictions)
        for p in predictions:
            lines.append(f"  {p['rank']}. {p['name']:<{width}}  {p['probability']:.3f}  "
                         f"(class {p['index']})")
        progress.say("\n".join(lines))


def cmd_explain(args: argparse.Namespace) -> int:
    try:
        viz.colormap(args.colormap)
    except ImportError as exc:
        raise CliError(str(exc)) from exc
    paths = cio.resolve_inputs(args.inputs)
    loaded = load_model(args.model, weights=args.weights, labels=args.labels,
                        input_size=args.input_size, mean=args.mean, std=args.std,
                        device=args.device)
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
    out = Path(args.out).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from exc

    cfg = Settings(loaded, methods, layer if needs_layer else None, targets, top_k, out,
                   args.colormap, args.alpha, args.max_pixels, args.quiet, args.debug,
                   args.reshape if needs_layer else None)
    tally = Tally()
    progress = Progress(len(paths), enabled=not args.quiet)
    pending: dict[tuple[int, ...], list[Item]] = {}
    start = time.perf_counter()
    try:
        for path, stem in zip(paths, unique_stems(paths)):
            try:
                img = cio.load_image(path, max_pixels=args.max_pixels)
            except cio.ImageError as exc:
                if args.debug:
                    progress.close()
                    traceback.print_exc()
                tally.failed += 1
                progress.say(f"{PROG}: error: {_one_line(str(exc))}", sys.stderr)
                progress.advance()
                continue
            tensor = loaded.preprocess(img)
            group = pending.setdefault(tuple(tensor.shape), [])
            group.append(Item(path, stem, img, tensor))
            if len(group) >= args.batch_size:
                _explain_batch(pending.pop(tuple(tensor.shape)), cfg, progress, tally)
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


def layer_table(loaded: LoadedModel) -> list[tuple[str, str, str, int]]:
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
