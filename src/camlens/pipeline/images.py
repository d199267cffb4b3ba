"""read -> batch -> explain -> write: the work behind ``camlens explain``, without argparse or
a terminal, on the shared executor (:func:`camlens.pipeline.run`): decoding and writing
overlap the explanations. A problem with one image (unreadable, refused by the model,
non-finite scores or maps, an unwritable folder) is reported through :class:`Reporter` and the
run goes on; a problem with the request (a layer or target that does not fit the model)
raises."""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from PIL import Image

import camlens
from camlens import io as cio
from camlens import output, viz
from camlens.errors import ExplainError, InputError, LayerError, OptionError, TargetError
from camlens.explanation import Explanation
from camlens.models import ModelRecord
from camlens.pipeline import executor
from camlens.pipeline.decoding import Decoders
from camlens.pipeline.executor import Failure

if TYPE_CHECKING:  # pragma: no cover
    from camlens.dissect.text import TextPlan, TextualExplanation

__all__ = ["Item", "Plan", "Reporter", "Skipped", "Source", "Tally", "done_before",
           "explain_one", "run", "run_sources", "sources_of", "unique_stems"]


@dataclass(frozen=True)
class Source:
    """One input image and the name of its output folder."""

    path: Path
    stem: str


@dataclass(frozen=True)
class Item:
    """One image waiting for its batch: ``image`` is already shrunk to the output size,
    ``tensor`` is the model's (3, H, W) input."""

    path: Path
    stem: str
    image: Image.Image
    original_size: tuple[int, int]
    tensor: torch.Tensor


@dataclass(frozen=True)
class Plan:
    """What to explain and how to write it."""

    loaded: ModelRecord
    methods: tuple[str, ...]
    layer: str | None
    reshape: str | None
    targets: list[int] | None
    top_k: int
    out: Path
    max_output_side: int
    options: dict[str, Any] = field(default_factory=dict)
    what: Collection[str] = output.WHAT
    colormap: str = "jet"
    alpha: float = 0.5
    layers: tuple[str, ...] = ()
    """block-by-block: one map per layer and method, keyed "<method>@<layer>" (``layer`` unused)"""
    predictions: int | None = None
    """how many top predictions the record lists (default ``top_k``, the classes explained
    when ``targets`` is None)"""
    text: TextPlan | None = None
    """Sec. 7's textual explanation from Grad-CAM's alphas (needs ``gradcam`` in methods)"""


@dataclass
class Tally:
    done: int = 0
    failed: int = 0
    seconds: float = 0.0
    """time spent in camlens.explain for the images explained"""


class Reporter(Protocol):
    """Where the run's news goes (the CLI prints it). Called from the run's threads (loaders,
    the caller's, the writer), one call at a time."""

    def failed(self, message: str) -> None:
        """One image failed (called inside the ``except`` block when an exception caused it)."""

    def warn(self, message: str) -> None:
        """A caveat about one image that was still explained."""

    def explained(self, item: Source, folder: Path,
                  predictions: list[tuple[int, float]]) -> None:
        """One image's outputs are written; ``predictions``: its top-k (class, probability)."""


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


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class Skipped(Exception):
    """One image fails with this message (unreadable, refused by the model, non-finite scores
    or maps, an unwritable folder) and a run goes on."""



@dataclass(frozen=True)
class _Explained:
    """One image's share of its batch's :func:`camlens.explain` call."""

    item: Item
    results: dict[str, Explanation]
    index: int
    seconds: float
    top: list[tuple[int, float]]
    input_hw: tuple[int, int]
    refused: str | None = None


class _Run:
    """The three stages for :func:`camlens.pipeline.run`: load (a loader thread), compute (the
    caller's thread, one batch of same-shape inputs), write (the writer thread)."""

    def __init__(self, plan: Plan, reporter: Reporter, decoders: Decoders) -> None:
        self.plan = plan
        self.reporter = reporter
        self.decoders = decoders
        self.tally = Tally()
        self.computed = 0

    def load(self, source: Source) -> Item:
        """Read one image (an unusable file skips it) and prepare its input; the decoder's
        notes are reported as warnings."""
        try:
            img, notes = self.decoders.load(source.path)
        except cio.ImageError as exc:
            raise Skipped(str(exc)) from exc
        for note in notes:
            self.decoders.say(self.reporter.warn, f"{cio.display_path(source.path)}: {note}")
        return Item(source.path, source.stem, viz.shrink_to(img, self.plan.max_output_side),
                    img.size, self.plan.loaded.preprocess(img))

    def compute(self, sources: list[Source], items: list[Item]) -> list[_Explained]:
        """Explain one batch with every requested method in one :func:`camlens.explain` call
        (one forward pass, one backward per distinct layer/input and rectifier rule). A batch
        that fails is tried again image by image (the executor does it), so only the images
        at fault are skipped; a layer, target or option that does not fit the model on the
        first batch raises (a usage error)."""
        plan = self.plan
        x = torch.stack([it.tensor for it in items]).to(plan.loaded.device)
        target = (None if plan.targets is None else
                  torch.tensor([plan.targets] * len(items), dtype=torch.long, device=x.device))
        start = time.perf_counter()
        try:
            results = self.explain(x, target)
        except InputError as exc:
            cause = exc.__cause__
            if cause is None or isinstance(cause, ExplainError):
                raise Skipped(str(exc)) from exc
            h, w = x.shape[-2:]  # the user's model refused this input
            raise Skipped(f"the model failed on its {h}x{w} input ({_first_line(cause)}); a "
                        "model that takes one input size only needs images of that shape "
                        "(e.g. square ones)") from exc
        except ExplainError as exc:
            if isinstance(exc, (LayerError, TargetError, OptionError)) and not self.computed:
                raise  # --layer, --reshape, --target or --option do not fit: a usage error
            raise Skipped(str(exc)) from exc
        if plan.text is not None and plan.text.dissection is not None and not self.computed:
            weights = results["gradcam"].weights
            units = len(plan.text.dissection)
            if weights is not None and weights.shape[-1] != units:
                raise LayerError(f"the dissection names {units} units, but layer {plan.layer!r} "
                                 f"has {weights.shape[-1]} channels; give the dissection of "
                                 "that layer (`camlens dissect --layer ...`)")
        self.computed += 1
        seconds = (time.perf_counter() - start) / len(items)
        scores = next(iter(results.values())).output
        if scores is None:
            raise ExplainError("the model's output is not a tensor of class scores (B, "
                               "classes), which `camlens explain` needs to rank the classes")
        logits = scores.detach().float().cpu()
        probs = torch.softmax(logits, dim=1)
        top = probs.topk(min(plan.predictions or plan.top_k, probs.shape[1]), dim=1)
        finite = torch.isfinite(logits).all(dim=1).tolist()
        hw = (int(x.shape[-2]), int(x.shape[-1]))
        return [_Explained(item, results, i, seconds,
                           list(zip(top.indices[i].tolist(), top.values[i].tolist())), hw,
                           None if finite[i] else
                           "the model's scores for this image are not finite (NaN or Inf), so "
                           "there is nothing to explain; check the model's weights and the "
                           "image")
                for i, item in enumerate(items)]

    def explain(self, x: torch.Tensor, target: torch.Tensor | None) -> dict[str, Explanation]:
        """Every requested map of a batch: ``{method: Explanation}`` from one
        :func:`camlens.explain` call, or with ``plan.layers`` ``{"<method>@<layer>": ...}``
        from one :func:`camlens.explain_layers` call per method (one forward and one
        backward each)."""
        plan = self.plan
        top_k = None if target is not None else plan.top_k
        if not plan.layers:
            return camlens.explain(plan.loaded.model, x, method=list(plan.methods),
                                   layer=plan.layer, target=target, top_k=top_k,
                                   reshape=plan.reshape, **plan.options)
        out: dict[str, Explanation] = {}
        for m in plan.methods:
            takes = camlens.METHODS[m].free_options
            per = camlens.explain_layers(
                plan.loaded.model, x, list(plan.layers), method=m, target=target, top_k=top_k,
                reshape=plan.reshape, **{k: v for k, v in plan.options.items() if k in takes})
            out.update({f"{m}@{name}": ex for name, ex in per.items()})
        return out

    def write(self, source: Source, done: _Explained) -> None:
        """Write one image's folder (:func:`camlens.output.save`) and report it."""
        if done.refused is not None:
            raise Skipped(done.refused)
        plan = self.plan
        item = done.item
        folder = plan.out / item.stem
        texts = self.texts(done)
        record = self.record(done)
        if texts:
            record["textual_explanations"] = [t.to_dict() for t in texts]
            if plan.text is not None and plan.text.dissection is not None:
                d = plan.text.dissection
                record["dissection"] = {"model": d.model, "layer": d.layer, "data": d.data,
                                        "min_iou": d.min_iou, "quantile": d.quantile}
        try:
            output.save(done.results, item.image, folder, labels=plan.loaded.labels,
                        sample=done.index, what=plan.what, colormap=plan.colormap,
                        alpha=plan.alpha, record=record,
                        texts={t.index: t.lines() for t in texts} or None)
        except ExplainError as exc:
            raise Skipped(str(exc)) from exc
        except OSError as exc:
            raise Skipped(f"cannot write the outputs: {exc.strerror or exc} "
                        f"({cio.display_path(exc.filename or plan.out)})") from exc
        with self.decoders.lock:
            self.tally.done += 1
            self.tally.seconds += done.seconds
            self.reporter.explained(Source(item.path, item.stem), folder, done.top)

    def failed(self, failure: Failure[Source]) -> None:
        """Report a skipped image: a file that cannot be read names itself; otherwise the
        path comes first."""
        message = str(failure.error)
        if failure.stage != "load":
            message = f"{cio.display_path(failure.item.path)}: {message}"
        with self.decoders.lock:
            self.tally.failed += 1
            self.reporter.failed(message)

    def texts(self, done: _Explained) -> list[TextualExplanation]:
        """Sec. 7's sentence for each explained class (none without ``plan.text``)."""
        text = self.plan.text
        gradcam = done.results.get("gradcam")
        if text is None or gradcam is None or gradcam.weights is None \
                or gradcam.targets is None:
            return []
        labels = self.plan.loaded.labels
        top1 = done.top[0][0] if done.top else None
        return [text.explain(gradcam.weights[done.index, k], int(c), labels[int(c)],
                             predicted=int(c) == top1)
                for k, c in enumerate(gradcam.targets[done.index].tolist())]

    def record(self, done: _Explained) -> dict[str, Any]:
        """explanation.json's fields beyond the maps: the photo, the model, the predictions."""
        plan = self.plan
        item = done.item
        labels = plan.loaded.labels
        shown = cio.display_path(item.path)
        exact = {} if shown == os.fspath(item.path) else {
            "image_bytes_hex": os.fsencode(item.path).hex(),
            "image_note": "the file name is not valid UTF-8: \"image\" shows its odd bytes as "
                          "\\xNN, image_bytes_hex is the exact name",
        }
        return {
            "image": shown,
            **exact,
            "model": plan.loaded.name,
            "device": str(plan.loaded.device),
            "layer": plan.layer,
            **({"layers": list(plan.layers)} if plan.layers else {}),
            "reshape": plan.reshape,
            "input_size": plan.loaded.input_size,
            "model_input_size": {"height": done.input_hw[0], "width": done.input_hw[1]},
            "original_size": {"height": item.original_size[1], "width": item.original_size[0]},
            "output_size_note": "size of the PNGs and maps: the original size, shrunk to a "
                                f"longer side of {plan.max_output_side} pixels when larger",
            "predictions": [{"rank": r + 1, "index": c, "name": labels[c], "probability": p}
                            for r, (c, p) in enumerate(done.top)],
            "timings": {"explain": round(done.seconds, 4)},
            "timings_note": "seconds per image: the batch's one camlens.explain call for every "
                            "method (one forward pass, shared) / batch size",
        }


WRITERS = min(4, os.cpu_count() or 1)
"""Writer threads of a run: writing an image's folder (resizing, colouring, PNG and deflate
encoding, which release the GIL) costs more than explaining it, so one writer would leave
the other cores idle while the model waits for it."""


def sources_of(paths: Sequence[Path]) -> list[Source]:
    """Each path with its output folder's name (:func:`unique_stems`)."""
    return [Source(p, s) for p, s in zip(paths, unique_stems(paths))]


def done_before(source: Source, out: Path) -> bool:
    """Whether ``out/<stem>/`` holds a finished output (explanation.json, written last)."""
    return (out / source.stem / output.JSON).is_file()


def run(paths: Sequence[Path], plan: Plan, reporter: Reporter, *, batch_size: int = 8,
        max_pixels: int = cio.DEFAULT_MAX_PIXELS, loaders: int = 2,
        writers: int = WRITERS) -> Tally:
    """Explain every image in ``paths`` and write ``plan.out/<stem>/``; returns the tally.
    On :func:`camlens.pipeline.run`: ``loaders`` threads decode and preprocess ahead, the
    caller's thread explains batches of up to ``batch_size`` same-shape inputs, ``writers``
    threads write (so images may be reported out of order). The reporter is called from those
    threads, one call at a time."""
    return run_sources(sources_of(paths), plan, reporter, batch_size=batch_size,
                       max_pixels=max_pixels, loaders=loaders, writers=writers)


def run_sources(sources: Sequence[Source], plan: Plan, reporter: Reporter, *,
                batch_size: int = 8, max_pixels: int = cio.DEFAULT_MAX_PIXELS, loaders: int = 2,
                writers: int = WRITERS) -> Tally:
    """:func:`run` over images whose folder names are already chosen (e.g. one batch of a
    larger run, or the images a resumed run has left)."""
    with Decoders(max_pixels) as decoders:
        job = _Run(plan, reporter, decoders)
        executor.run(sources, job.load, job.compute, job.write,
                     key=lambda item: tuple(item.tensor.shape), batch_size=batch_size,
                     loaders=loaders, writers=writers, failures=(Skipped,),
                     on_failure=job.failed)
    return job.tally


def explain_one(source: Source, plan: Plan, decoders: Decoders,
                reporter: Reporter) -> tuple[Item, list[tuple[int, float]]]:
    """One image through :func:`run`'s three stages on the caller's thread, with a
    :class:`~camlens.pipeline.decoding.Decoders` shared by the caller's threads (a server's
    workers): ``plan.out/source.stem/`` is written as :func:`run` writes it (``reporter`` hears
    the decoder's warnings and the image explained). Returns the image's :class:`Item` (the
    photo at the output size) and its top-k (class, probability). An unusable image raises
    :class:`Skipped` with the message :func:`run` would report (without the path); a layer,
    target or option that does not fit the model raises its
    :class:`~camlens.errors.ExplainError`."""
    job = _Run(plan, reporter, decoders)
    item = job.load(source)
    (done,) = job.compute([source], [item])
    job.write(source, done)
    return item, done.top
