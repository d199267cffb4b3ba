"""read -> batch -> explain -> write: the work behind ``camlens explain``, without argparse or
a terminal. A problem with one image (unreadable, refused by the model, non-finite scores or
maps, an unwritable folder) is reported through :class:`Reporter` and the run goes on; a
problem with the request (a layer or target that does not fit the model) raises."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image

import camlens
from camlens import io as cio
from camlens import output, viz
from camlens.errors import ExplainError, InputError, LayerError, OptionError, TargetError
from camlens.explanation import Explanation
from camlens.models import ModelRecord
from camlens.targets import logits_of

__all__ = ["Item", "Plan", "Reporter", "Tally", "batches_by_shape", "read", "run",
           "unique_stems"]


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


@dataclass
class Tally:
    done: int = 0
    failed: int = 0
    seconds: float = 0.0
    """time spent in camlens.explain for the images explained"""


class Reporter(Protocol):
    """Where the run's news goes (the CLI prints it)."""

    def failed(self, message: str) -> None:
        """One image failed (called inside the ``except`` block when an exception caused it)."""

    def warn(self, message: str) -> None:
        """A caveat about one image that was still explained."""

    def explained(self, item: Item, folder: Path,
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


def read(path: Path, stem: str, preprocess: Callable[[Image.Image], torch.Tensor], *,
         max_pixels: int, max_output_side: int, warn: Callable[[str], None]) -> Item:
    """Load one image (:class:`camlens.io.ImageError` if it cannot be used) and prepare its
    input; the decoder's notes go to ``warn``."""
    img, notes = cio.load_image_reporting(path, max_pixels=max_pixels)
    for note in notes:
        warn(f"{cio.display_path(path)}: {note}")
    return Item(path, stem, viz.shrink_to(img, max_output_side), img.size, preprocess(img))


def batches_by_shape(items: Iterable[Item], batch_size: int) -> Iterator[list[Item]]:
    """Batches of up to ``batch_size`` items whose inputs have the same shape, in arrival
    order of completion. At most 4 x ``batch_size`` items wait: photos of many sizes flush
    their oldest group early."""
    pending: dict[tuple[int, ...], list[Item]] = {}
    for item in items:
        shape = tuple(item.tensor.shape)
        group = pending.setdefault(shape, [])
        group.append(item)
        if len(group) >= batch_size:
            yield pending.pop(shape)
        elif sum(map(len, pending.values())) >= 4 * batch_size:
            yield pending.pop(next(iter(pending)))
    yield from pending.values()


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class _Run:
    def __init__(self, plan: Plan, reporter: Reporter) -> None:
        self.plan = plan
        self.reporter = reporter
        self.tally = Tally()

    def fail(self, message: str) -> None:
        self.tally.failed += 1
        self.reporter.failed(message)

    def read_all(self, paths: Sequence[Path], max_pixels: int) -> Iterator[Item]:
        loaded = self.plan.loaded
        for path, stem in zip(paths, unique_stems(paths)):
            try:
                yield read(path, stem, loaded.preprocess, max_pixels=max_pixels,
                           max_output_side=self.plan.max_output_side, warn=self.reporter.warn)
            except cio.ImageError as exc:
                self.fail(str(exc))

    def batch(self, items: list[Item]) -> None:
        """Explain one batch with every requested method in one :func:`camlens.explain` call
        (one forward pass, one backward per distinct layer/input and rectifier rule), then
        write each image whose scores and maps are finite."""
        plan = self.plan
        x = torch.stack([it.tensor for it in items]).to(plan.loaded.device)
        target = (None if plan.targets is None else
                  torch.tensor([plan.targets] * len(items), dtype=torch.long, device=x.device))
        start = time.perf_counter()
        try:
            results = camlens.explain(
                plan.loaded.model, x, method=list(plan.methods), layer=plan.layer,
                target=target, top_k=None if target is not None else plan.top_k,
                reshape=plan.reshape, **plan.options)
        except InputError as exc:
            cause = exc.__cause__
            if cause is None or isinstance(cause, ExplainError):
                self.fail_all(items, str(exc))
                return
            h, w = x.shape[-2:]  # the user's model refused this input
            self.fail_all(items, f"the model failed on its {h}x{w} input ({_first_line(cause)}); "
                                 "a model that takes one input size only needs images of that "
                                 "shape (e.g. square ones)")
            return
        except ExplainError as exc:
            if isinstance(exc, (LayerError, TargetError, OptionError)) and not self.tally.done:
                raise  # --layer, --reshape, --target or --option do not fit: a usage error
            self.fail_all(items, str(exc))
            return
        seconds = (time.perf_counter() - start) / len(items)
        output = next(iter(results.values())).output
        logits = logits_of(output).detach().float().cpu()
        probs = torch.softmax(logits, dim=1)
        top = probs.topk(min(plan.top_k, probs.shape[1]), dim=1)
        finite = torch.isfinite(logits).all(dim=1).tolist()
        for i, item in enumerate(items):
            if not finite[i]:
                self.fail(f"{cio.display_path(item.path)}: the model's scores for this image are "
                          "not finite (NaN or Inf), so there is nothing to explain; check the "
                          "model's weights and the image")
                continue
            self.tally.seconds += seconds
            self.write(item, i, results, seconds, top.indices[i].tolist(),
                       top.values[i].tolist(), tuple(x.shape[-2:]))

    def fail_all(self, items: list[Item], message: str) -> None:
        for it in items:
            self.fail(f"{cio.display_path(it.path)}: {message}")

    def write(self, item: Item, i: int, results: dict[str, Explanation],
              seconds: float, top_idx: list[int], top_p: list[float],
              input_hw: tuple[int, ...]) -> None:
        plan = self.plan
        folder = plan.out / item.stem
        try:
            output.save(results, item.image, folder, labels=plan.loaded.labels, sample=i,
                        what=plan.what, colormap=plan.colormap, alpha=plan.alpha,
                        record=self.record(item, seconds, top_idx, top_p, input_hw))
        except ExplainError as exc:
            self.fail(f"{cio.display_path(item.path)}: {exc}")
        except OSError as exc:
            self.fail(f"{cio.display_path(item.path)}: cannot write the outputs: "
                      f"{exc.strerror or exc} ({cio.display_path(exc.filename or plan.out)})")
        else:
            self.tally.done += 1
            self.reporter.explained(item, folder, list(zip(top_idx, top_p)))

    def record(self, item: Item, seconds: float, top_idx: list[int],
               top_p: list[float], input_hw: tuple[int, ...]) -> dict[str, Any]:
        """explanation.json's fields beyond the maps: the photo, the model, the predictions."""
        plan = self.plan
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
            "reshape": plan.reshape,
            "input_size": plan.loaded.input_size,
            "model_input_size": {"height": int(input_hw[0]), "width": int(input_hw[1])},
            "original_size": {"height": item.original_size[1], "width": item.original_size[0]},
            "output_size_note": "size of the PNGs and maps: the original size, shrunk to a "
                                f"longer side of {plan.max_output_side} pixels when larger",
            "predictions": [{"rank": r + 1, "index": c, "name": labels[c], "probability": p}
                            for r, (c, p) in enumerate(zip(top_idx, top_p))],
            "timings": {"explain": round(seconds, 4)},
            "timings_note": "seconds per image: the batch's one camlens.explain call for every "
                            "method (one forward pass, shared) / batch size",
        }


def run(paths: Sequence[Path], plan: Plan, reporter: Reporter, *, batch_size: int = 8,
        max_pixels: int = cio.DEFAULT_MAX_PIXELS) -> Tally:
    """Explain every image in ``paths`` and write ``plan.out/<stem>/``; returns the tally."""
    job = _Run(plan, reporter)
    for items in batches_by_shape(job.read_all(paths, max_pixels), batch_size):
        job.batch(items)
    return job.tally
