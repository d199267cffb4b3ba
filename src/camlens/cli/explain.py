"""``camlens explain``: explain photos with the requested methods and write the outputs."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from camlens import io as cio
from camlens import output, viz
from camlens.cli import PROG, one_line, say, warn
from camlens.cli.options import (
    MIN_MAX_OUTPUT_SIDE,
    debug_options,
    engine_options,
    input_options,
    method_options,
    model_options,
    non_negative_float,
    output_options,
    positive_int,
    progress_options,
    ray_options,
)
from camlens.errors import DataError, LayerError, TargetError
from camlens.evidence import RESHAPES
from camlens.layers import layer_hint, residual_blocks, resolve_layers
from camlens.loading import CliError
from camlens.methods import FIGURE1, METHODS
from camlens.models import load_model
from camlens.pipeline.images import Plan, Source, done_before, run_sources, sources_of
from camlens.pipeline.progress import is_terminal, progress_bar
from camlens.plural import counted
from camlens.targets import class_index

if TYPE_CHECKING:  # pragma: no cover
    from camlens.dissect import TextPlan
    from camlens.models.registry import ModelRecord
    from camlens.pipeline.pool import ActorPool

DEFAULT_TOP_K = 3


def add(sub: Any) -> None:
    ex = sub.add_parser(
        "explain", help="explain photos: heatmaps, pixel-space maps, Figure 1, maps.npz",
        parents=[model_options(), output_options(), input_options(), progress_options(),
                 engine_options(), debug_options()],
        description="Explain the model's decisions on images. For each image writes "
                    "OUT/<stem>/: <method>_<class>.png, summary.png (Figure 1), maps.npz "
                    "(compressed; <method>/<class> -> float16 maps in [0, 1] at the photo's "
                    "resolution, up to --max-output-side) and explanation.json; --save "
                    "chooses among them (camlens.output.load reads a folder back). Folders "
                    "are searched recursively, skipping hidden ones and OUT.",
    )
    ex.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER",
                    help="image files, folders (searched recursively) or sample:NAME "
                         f"({', '.join(sorted(cio.SAMPLE_IMAGES))})")
    g = ex.add_argument_group("what to explain")
    g.add_argument("--layer", metavar="NAME",
                   help="dotted layer name for Grad-CAM (default: the model's default layer; "
                        "`camlens layers` lists them)")
    g.add_argument("--layers", metavar="all-blocks|NAME,NAME",
                   help="one map per layer, all from one forward and one backward per method: "
                        "all-blocks (every residual block, e.g. layer1.0 ... layer4.2 of a "
                        "ResNet: the paper's Fig. 19/20) or a comma list of layer names; maps "
                        "are named <method>@<layer>_<class>.png (default method: gradcam)")
    g.add_argument("--reshape", choices=sorted(RESHAPES), default=None,
                   help="tokens: the layer outputs a vision transformer's (B, N, C) tokens; "
                        "drop the class token(s), put the patches back on their square grid. "
                        "channels-last: the layer outputs (B, h, w, C) maps (Swin)")
    g.add_argument("--target", action="append", metavar="CLASS",
                   help="class index or label name (case-insensitive); repeatable")
    g.add_argument("--top-k", type=positive_int, default=None, metavar="K",
                   help=f"explain the top K classes when no --target is given (default "
                        f"{DEFAULT_TOP_K}); with --target, K predictions are reported")
    g.add_argument("--method", action="append", choices=sorted(METHODS), metavar="METHOD",
                   help="repeatable; one of: " + ", ".join(sorted(METHODS)) + " (default: "
                        + ", ".join(FIGURE1) + ")")
    g.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option, e.g. pooling=gmp, relu=false, window=16,8; "
                        "repeatable; each goes to the requested methods that take it "
                        "(`camlens methods` lists them with types and defaults)")
    t = ex.add_argument_group("textual explanation (Sec. 7)")
    t.add_argument("--text", action="store_true",
                   help="add a sentence per class to summary.png and explanation.json: the 5 "
                        "units of the Grad-CAM layer with the largest and the 5 with the most "
                        "negative neuron importance alpha (Eq. 1), with their concept names "
                        "from a network dissection (shipped for synthetic:NAME's Grad-CAM "
                        "layer; others: `camlens dissect`, then --dissection)")
    t.add_argument("--dissection", metavar="FILE",
                   help="dissection.json written by `camlens dissect` for the Grad-CAM layer "
                        "(implies --text)")
    ex.add_argument("--ray-log", metavar="FILE",
                    help="with --engine ray: write FILE, one JSON line per image as it comes "
                         "back (image, folder, done, the Ray node id and process id that "
                         "explained it, and whether that was an actor or this process)")
    ex.add_argument("--ray-keep", type=non_negative_float, default=0.0, metavar="SECONDS",
                    help="with --engine ray on a running cluster: keep the actors (each holding "
                         "the model) alive until idle for SECONDS, so the next command with "
                         "the same model and actor resources starts at once (default 0: they "
                         "end with this command)")
    ex.add_argument("--resume", action="store_true",
                    help="skip the images whose folder in --out is already finished (holds "
                         "explanation.json, written last), e.g. after an interrupted run")
    ex.set_defaults(func=run)


def _dedupe(items: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


def _outside(specs: Sequence[str], out: Path) -> list[str]:
    """The input specs that do not lie inside ``out``; each one that does is skipped with a
    warning. camlens never reads its own outputs: a second ``camlens explain .`` would
    otherwise explain the first one's pictures, and an input such as ``OUT/x/summary.png``
    would be overwritten by its own summary."""
    kept = []
    for spec in specs:
        if (not spec.lower().startswith(cio.SAMPLE_PREFIX)
                and cio.is_inside(os.path.expanduser(spec), out)):
            warn(f"{cio.display_path(spec)}: skipped: it is inside the output folder "
                 f"--out {cio.display_path(out)}, and camlens never reads its own outputs")
        else:
            kept.append(spec)
    if not kept:
        raise CliError(f"every input is inside the output folder --out {cio.display_path(out)};"
                       " give inputs outside it, or another --out")
    return kept


class Console:
    """The run's news on the terminal: a tqdm bar on stderr (only when stderr is a terminal
    and there is more than one image), one line per error or warning, the top-k per image."""

    def __init__(self, total: int, quiet: bool, debug: bool, labels: Sequence[str]) -> None:
        self.quiet = quiet
        self.debug = debug
        self.labels = labels
        enabled = not quiet and total > 1 and is_terminal(sys.stderr)
        self.bar = progress_bar(total, enabled=enabled, unit="image", leave=False)

    def failed(self, message: str) -> None:
        if self.debug and sys.exc_info()[0] is not None:
            self.bar.clear()
            traceback.print_exc()
        say(f"{PROG}: error: {one_line(message)}", sys.stderr)
        self.bar.update()

    def warn(self, message: str) -> None:
        warn(message)

    def explained(self, item: Source, folder: Path,
                  predictions: list[tuple[int, float]]) -> None:
        if not self.quiet:
            lines = [f"{cio.display_path(item.path.name)} -> {cio.display_path(folder)}/"]
            width = max(len(self.labels[c]) for c, _ in predictions)
            for r, (c, p) in enumerate(predictions):
                lines.append(f"  {r + 1}. {self.labels[c]:<{width}}  {p:.3f}  (class {c})")
            say("\n".join(lines))
        self.bar.update()

    def close(self) -> None:
        self.bar.close()


def _targets(texts: Sequence[str], labels: Sequence[str]) -> list[int]:
    try:
        return _dedupe(class_index(t, labels) for t in texts)
    except TargetError as exc:
        raise CliError(f"--target {exc}") from exc


def _layers(args: argparse.Namespace, model: Any, methods: Sequence[str]) -> tuple[str, ...]:
    """``--layers``: all-blocks (:func:`camlens.residual_blocks`) or a comma list of names,
    checked against the model; () without it."""
    if not args.layers:
        return ()
    if args.layer is not None:
        raise CliError("give --layer (one map) or --layers (one map per layer), not both")
    no_layer = [m for m in methods if not METHODS[m].needs_layer]
    if no_layer:
        raise CliError(f"--layers draws one map per layer, and {', '.join(no_layer)} work(s) on "
                       "the input, not a layer; choose layer methods with --method (e.g. gradcam)")
    spec = args.layers.strip()
    if spec == "all-blocks":
        return tuple(residual_blocks(model))
    names = _dedupe(n.strip() for n in spec.split(",") if n.strip())
    if not names:
        raise CliError(f"--layers {args.layers!r}: expected all-blocks or a comma list of names")
    resolve_layers(model, names)  # LayerError with the nearest names
    return tuple(names)


def _what(save: list[list[str]] | None) -> tuple[str, ...]:
    """--save values (each a list from :func:`camlens.cli.options.save_kinds`) -> what
    output.save writes."""
    return output.WHAT if not save else tuple(_dedupe(k for kinds in save for k in kinds))


def _text(args: argparse.Namespace, spec: str, layer: str | None, methods: Sequence[str],
          layers: Sequence[str]) -> TextPlan | None:
    """--text / --dissection -> what the pipeline needs (:func:`camlens.dissect.text_plan`);
    a CliError when it cannot work."""
    from camlens.dissect import text_plan

    if not (args.text or args.dissection):
        return None
    if "gradcam" not in methods or layers:
        raise CliError("--text reads Grad-CAM's neuron importances at one layer: include "
                       "gradcam in --method (the default methods do) and use --layer, not "
                       "--layers")
    try:
        plan = text_plan(spec, layer, args.dissection)
    except LayerError as exc:
        raise CliError(f"{exc}, or pass the --layer it names") from exc
    except DataError as exc:
        raise CliError(str(exc)) from exc
    if plan.missing:
        warn(f"--text: {plan.missing}; the sentences list unit numbers without names")
    return plan


def run(args: argparse.Namespace) -> int:
    try:
        viz.colormap(args.colormap)
    except ImportError as exc:
        raise CliError(str(exc)) from exc
    out = Path(args.out).expanduser()
    paths = cio.resolve_inputs(_outside(args.inputs, out), exclude=out)
    if args.ray_log and args.engine != "ray":
        raise CliError("--ray-log applies to --engine ray only; add --engine ray")
    model = functools.partial(load_model, args.model, weights=args.weights, labels=args.labels,
                              input_size=args.input_size, mean=args.mean, std=args.std,
                              device=args.device, max_input_side=args.max_input_side)
    if args.engine != "ray":
        ray_options(args)  # refuses the --ray-* options without --engine ray
        return _run(args, out, paths, model, None)
    from camlens.pipeline.distributed import session
    from camlens.pipeline.pool import ActorPool

    with session():  # the Ray this command starts ends with it
        ray = ray_options(args, data=False)  # a missing Ray or an unreachable cluster: here
        # the actors start now (a process each, importing torch, loading the model on
        # --device), while this process checks the request and lists the images
        with _log(args.ray_log) as log, ActorPool(model, ray) as pool:
            code = _run(args, out, paths, model, pool, log)
        if ray.keep and not args.quiet:
            say(f"{counted(ray.actors, 'Ray actor')} kept until idle for {ray.keep:g} s "
                "(--ray-keep), for the next command with this model")
        return code


@contextlib.contextmanager
def _log(path: str | None) -> Iterator[TextIO | None]:
    """--ray-log FILE opened for writing (None without it); a one-line error if it cannot
    be."""
    if path is None:
        yield None
        return
    try:
        fh = open(os.path.expanduser(path), "w", encoding="utf-8")  # noqa: SIM115 - yielded
    except OSError as exc:
        raise CliError(f"--ray-log {cio.display_path(path)}: cannot write the file "
                       f"({exc.strerror or exc})") from exc
    with fh:
        yield fh


def _run(args: argparse.Namespace, out: Path, paths: list[Path],
         model: Callable[..., ModelRecord], pool: ActorPool[ModelRecord] | None,
         log: TextIO | None = None) -> int:
    # with Ray the actors load the model on --device; here it checks the request and, on the
    # CPU, explains batches itself while actors are still starting
    loaded = model() if pool is None else model(device="cpu")
    methods = tuple(_dedupe(args.method or (("gradcam",) if args.layers else FIGURE1)))
    options = method_options(args.option, methods)
    with_layer = [m for m in methods if METHODS[m].needs_layer]
    layers = _layers(args, loaded.model, methods)
    layer = args.layer or loaded.default_layer
    if args.layer is not None:
        resolve_layers(loaded.model, args.layer)  # LayerError with the nearest names
    if with_layer and layer is None and not layers:
        raise CliError(
            f"--layer is required for {loaded.name} (it has no default layer) with "
            f"{', '.join(with_layer)}: {layer_hint(loaded.model)}; "
            f"`camlens layers --model {loaded.name}` lists them"
        )
    text = _text(args, loaded.name, layer, methods, layers)
    n_classes = loaded.classes()
    if args.top_k is not None and args.top_k > n_classes:
        raise CliError(f"--top-k {args.top_k}: the model has only {n_classes} classes")
    top_k = min(args.top_k or DEFAULT_TOP_K, n_classes)
    targets = _targets(args.target, loaded.labels) if args.target else None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"--out {cio.display_path(out)}: cannot create the folder "
                       f"({exc.strerror or exc})") from exc

    plan = Plan(loaded, methods, layer if with_layer else None,
                args.reshape if with_layer else None, targets, top_k, out,
                args.max_output_side or max(MIN_MAX_OUTPUT_SIDE, 2 * loaded.side()),
                options=options, what=_what(args.save), colormap=args.colormap,
                alpha=args.alpha, layers=layers, text=text)
    sources = sources_of(paths)
    if args.resume:
        left = [s for s in sources if not done_before(s, out)]
        if not args.quiet and len(left) < len(sources):
            say(f"resuming: {len(sources) - len(left)} image(s) already done in "
                f"{cio.display_path(out)}, {len(left)} left")
        sources = left
    console = Console(len(sources), args.quiet, args.debug, loaded.labels)
    start = time.perf_counter()
    try:
        if pool is None:
            tally = run_sources(sources, plan, console, batch_size=args.batch_size,
                                max_pixels=args.max_pixels)
        else:
            from camlens.pipeline.explain_distributed import ExplainSetup, explain_on_ray

            setup = ExplainSetup.of(plan, model, args.batch_size, args.max_pixels)
            tally = explain_on_ray(sources, setup, console, pool,
                                   loaded if args.device == "cpu" else None, log)
    finally:
        console.close()
    if not args.quiet and tally.done:
        total = time.perf_counter() - start
        say(f"explained {tally.done} image(s) in {total:.1f}s ({tally.seconds / tally.done:.2f}s "
            "per image in camlens.explain)"
            + (f"; {tally.failed} failed" if tally.failed else ""))
    if tally.failed:
        return 1 if tally.done else 2
    return 0
