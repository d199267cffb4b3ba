"""What the three protocols share: their samples and ids, a batch, and the run itself (the
pipeline executor over the images a :class:`~camlens.evaluate.store.RowStore` does not hold
yet)."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import numpy as np
import torch
from PIL import Image

from camlens.errors import DataError
from camlens.evaluate.datasets import Sample, load_dataset
from camlens.evaluate.model import Preprocess, device_of
from camlens.evaluate.store import RowStore
from camlens.io import ImageError
from camlens.models.registry import ModelRecord
from camlens.pipeline import progress_bar, run

if TYPE_CHECKING:
    from camlens.evaluate.explainer import MapCache
    from camlens.pipeline.distributed import RayOptions

Row = TypeVar("Row")
Row_co = TypeVar("Row_co", covariant=True)

SamplesLike = str | Sequence[Sample] | Sequence[Any]
"""A ``FORMAT:PATH`` spec for :func:`~camlens.evaluate.load_dataset`, samples, or synthetic
scenes."""

SKIPPED_ERRORS = (ImageError, DataError)
"""What skips one image (an unreadable file, a sample without pixels); anything else (a wrong
model, an unknown layer) applies to every image and stops the run."""


def as_samples(data: SamplesLike) -> list[Sample]:
    """``data`` as a list of :class:`Sample` records."""
    if isinstance(data, str):
        return load_dataset(data)
    items = list(data)
    if items and not isinstance(items[0], Sample) and hasattr(items[0], "objects") \
            and hasattr(items[0], "image"):
        from camlens.evaluate.synthetic_data import scenes_to_samples

        return list(scenes_to_samples(items))
    for s in items:
        if not isinstance(s, Sample):
            raise TypeError("samples must be Sample records or synthetic Scenes, got "
                            f"{type(s).__name__}")
    return items


def sample_ids(samples: Sequence[Sample]) -> list[str]:
    """One distinct id per sample: its ``image_id``, else its path, else ``#position``."""
    ids = [str(s.image_id) if s.image_id is not None else
           str(s.image_path) if s.image_path is not None else f"#{i}"
           for i, s in enumerate(samples)]
    seen: set[str] = set()
    for k in ids:
        if k in seen:
            raise ValueError(f"image id {k!r} occurs twice: the CSV rows are keyed by image id")
        seen.add(k)
    return ids


def check_classes(samples: Sequence[Sample], to_index: Callable[[Any], int],
                  n_classes: int) -> None:
    """Every ground-truth label is a class of the model (else: wrong model or label_map)."""
    for s in samples:
        for o in s.objects:
            c = to_index(o.label)
            if not 0 <= c < n_classes:
                raise ValueError(
                    f"image {s.image_id!r}: ground-truth label {o.label!r} is class {c}, "
                    f"but the model has {n_classes} classes; wrong model, or pass label_map="
                )


def load_input(sample: Sample, preprocess: Preprocess) -> torch.Tensor:
    """The model input (3, H, W) of one sample: its in-memory pixels or its image file."""
    pixels = getattr(sample, "pixels", None)
    if pixels is not None:
        img = Image.fromarray(np.ascontiguousarray(pixels).astype(np.uint8), mode="RGB")
    elif sample.image_path is not None:
        from camlens.io import load_image

        img = load_image(sample.image_path)
    else:
        raise DataError(f"sample {sample.image_id!r} has neither pixels nor an image path")
    x = preprocess(img)
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError("preprocess must return a (3, H, W) tensor")
    return x


@dataclass(frozen=True)
class Batch:
    """Images of one input shape: their samples, ids and stacked inputs (B, 3, H, W) on the
    model's device."""

    samples: list[Sample]
    ids: list[str]
    x: torch.Tensor


@dataclass(frozen=True)
class Bound(Generic[Row]):
    """A task on one model: ``compute`` (one batch -> each image's rows), the run's
    configuration (for the CSV store) and the method's label (for the summary)."""

    compute: Callable[[Batch], list[list[Row]]]
    config: dict[str, Any]
    label: str


class Task(Protocol[Row_co]):
    """A protocol's settings, picklable: bound to a model where the work runs (this process, or
    each Ray actor, which loads its own copy of the model)."""

    def bind(self, res: ModelRecord, cache: MapCache | None = None) -> Bound[Any]: ...


@dataclass(frozen=True)
class Engine:
    """Where :func:`execute` runs ``task``: ``options`` says which Ray cluster and how wide;
    ``model()`` loads the model on each actor (e.g. ``functools.partial(resolve_model, spec,
    device="cuda")``)."""

    options: RayOptions
    model: Callable[[], ModelRecord]
    task: Task[Any] | None = None


@dataclass(kw_only=True)
class RunInfo:
    """What every task's summary says of its run: images taken over from an earlier run's CSV
    (``resumed``), wall time, the CSV written, images skipped because they could not be read
    (``failed``)."""

    resumed: int = 0
    seconds: float = 0.0
    csv_path: str | None = None
    failed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Outcome(Generic[Row]):
    """The rows of every image done (resumed or new), in sample order, by image id."""

    rows: dict[str, list[Row]]
    resumed: int
    failed: int

    def run_info(self, start: float, csv_path: str | os.PathLike[str] | None) -> dict[str, Any]:
        """The :class:`RunInfo` fields of this run, which began at ``start`` (perf_counter)."""
        return {"resumed": self.resumed, "seconds": time.perf_counter() - start,
                "csv_path": None if csv_path is None else str(csv_path), "failed": self.failed}


def execute(samples: Sequence[Sample], ids: Sequence[str], positions: Sequence[int],
            store: RowStore[Row], res: ModelRecord, batch_size: int,
            compute: Callable[[Batch], list[list[Row]]], desc: str,
            progress: bool, engine: Engine | None = None) -> Outcome[Row]:
    """Run ``compute`` (one batch -> each image's rows) over the samples at ``positions`` that
    ``store`` does not hold yet, writing each image's rows as it finishes; the store is closed
    afterwards, also on error, so the rows written so far stay for a resume. Images that cannot
    be read are skipped with a warning (a resume tries them again). With an ``engine`` the
    batches run on Ray's actors (:mod:`camlens.evaluate.tasks.distributed`) and their rows come
    back here, to the same store."""
    pending = [i for i in positions if ids[i] not in store.done]
    resumed = sum(1 for k in ids if k in store.done)
    with store, progress_bar(len(positions), desc, enabled=progress,
                             initial=len(positions) - len(pending)) as bar:
        if engine is None:
            failures = [(ids[pending[i]], str(err)) for i, err in compute_items(
                [samples[i] for i in pending], [ids[i] for i in pending], res, batch_size,
                compute, lambda i, rows: store.add(ids[pending[i]], rows), bar)]
        else:
            from camlens.evaluate.tasks.distributed import execute_on_ray

            failures = execute_on_ray([samples[i] for i in pending], [ids[i] for i in pending],
                                      store, engine, batch_size, bar)
    rows = {ids[i]: store.done[ids[i]] for i in positions if ids[i] in store.done}
    if failures:
        first, error = failures[0]
        if not rows:
            raise DataError(f"no image could be evaluated; the first: {first}: {error}")
        names = ", ".join(k for k, _ in failures[:5])
        warnings.warn(f"{desc}: {len(failures)} image(s) skipped ({names}"
                      f"{', ...' if len(failures) > 5 else ''}); the first: "
                      f"{error}", stacklevel=3)
    return Outcome(rows, resumed, len(failures))


def compute_items(samples: Sequence[Sample], ids: Sequence[str], res: ModelRecord,
                  batch_size: int, compute: Callable[[Batch], list[list[Row]]],
                  keep: Callable[[int, list[Row]], None],
                  bar: Any = None) -> list[tuple[int, BaseException]]:
    """The local executor over ``samples`` (with their ``ids``): load on threads, batch by
    input shape, ``compute``, ``keep(position, rows)`` on one writer thread; returns the
    (position, error) of each image skipped (:data:`SKIPPED_ERRORS`)."""
    dev = device_of(res.model)

    def compute_batch(idx: list[int], xs: list[torch.Tensor]) -> list[list[Row]]:
        batch = Batch([samples[i] for i in idx], [ids[i] for i in idx], torch.stack(xs).to(dev))
        return compute(batch)

    report = run(range(len(samples)), lambda i: load_input(samples[i], res.preprocess),
                 compute_batch, keep, key=lambda x: tuple(x.shape), batch_size=batch_size,
                 failures=SKIPPED_ERRORS, progress=bar)
    return [(f.item, f.error) for f in report.failures]


def method_config(res: ModelRecord, **items: Any) -> dict[str, Any]:
    """A run's configuration: ``items`` and the model's name."""
    return {"model": res.name, **items}
