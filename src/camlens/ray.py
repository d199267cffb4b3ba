"""camlens for Ray users: explain and evaluate Ray datasets on a pool of actors that each load the
model once (needs the ``ray`` extra: ``pip install 'camlens[ray]'``).

>>> import ray, camlens.ray as cr
>>> cr.connect()                                      # RAY_ADDRESS, else a new local cluster
>>> done = cr.explain_dataset(cr.images_dataset(paths), "efficientnet_lite0", out="shared/out")
>>> done.filter(lambda r: not r["done"]).count()      # images that failed
>>> rows = cr.evaluate_dataset(cr.samples_dataset(samples), "localization", "synthetic:vgg")
>>> summary = cr.summarize(rows, "localization")       # the local engine's summary
>>> with cr.ExplainPool("efficientnet_lite0", actors=2) as pool:   # actors kept between calls
...     rows = pool.explain(paths, out="shared/out")

The CLI runs the same: ``camlens explain --engine ray`` and ``camlens evaluate --engine ray``,
and ``camlens.evaluate.evaluate(..., engine="ray")``. Both return datasets are lazy; the work
runs when they are consumed. :mod:`camlens.pipeline.explain_distributed` and
:mod:`camlens.evaluate.tasks.distributed` describe their columns.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from camlens import io as cio
from camlens import output
from camlens.evaluate.localization import RELATIVE_TO
from camlens.evaluate.model import resolve_model
from camlens.evaluate.tasks.common import Task
from camlens.evaluate.tasks.distributed import evaluate_rows, samples_dataset
from camlens.evaluate.tasks.faithfulness import (
    FaithfulnessSummary,
    FaithfulnessTask,
    method_specs,
)
from camlens.evaluate.tasks.faithfulness import summarize as faithfulness_summary
from camlens.evaluate.tasks.localization import (
    LocalizationSettings,
    LocalizationSummary,
    LocalizationTask,
)
from camlens.evaluate.tasks.localization import summarize as localization_summary
from camlens.evaluate.tasks.pointing import (
    PointingSummary,
    PointingTask,
    Split,
    held_out_positions,
)
from camlens.evaluate.tasks.pointing import summarize as pointing_summary
from camlens.methods import FIGURE1
from camlens.models import load_model
from camlens.models.registry import ModelRecord
from camlens.pipeline.distributed import RayError, RayOptions, connect
from camlens.pipeline.explain_distributed import ExplainSetup, explain_on_pool, explain_rows
from camlens.pipeline.explain_distributed import images_dataset as _images_dataset
from camlens.pipeline.images import Plan, sources_of
from camlens.pipeline.pool import ActorPool, end_kept

__all__ = ["ExplainPool", "RayError", "RayOptions", "connect", "end_kept", "evaluate_dataset",
           "explain_dataset", "images_dataset", "samples_dataset", "summarize"]


def images_dataset(paths: Sequence[str | os.PathLike[str]]) -> Any:
    """A Ray dataset of image files (columns ``path``: the name's bytes, ``stem``: its output
    folder's name, unique, as ``camlens explain`` chooses it)."""
    return _images_dataset(sources_of([Path(p) for p in paths]))


def _plan(loaded: ModelRecord, out: str | os.PathLike[str], methods: Sequence[str],
          layer: str | None, targets: Sequence[int] | None, top_k: int,
          options: Mapping[str, Any] | None, what: Collection[str],
          max_output_side: int) -> Plan:
    return Plan(loaded, tuple(methods), layer or loaded.default_layer, None,
                None if targets is None else [int(t) for t in targets],
                min(top_k, loaded.classes()), Path(out), max_output_side,
                options=dict(options or {}), what=tuple(what))


def explain_dataset(
    ds: Any,
    model: str = "efficientnet_lite0",
    *,
    out: str | os.PathLike[str],
    methods: Sequence[str] = FIGURE1,
    layer: str | None = None,
    targets: Sequence[int] | None = None,
    top_k: int = 3,
    options: Mapping[str, Any] | None = None,
    what: Collection[str] = output.WHAT,
    batch_size: int = 8,
    device: str = "cpu",
    weights: str | None = None,
    max_output_side: int = 768,
    max_pixels: int = cio.DEFAULT_MAX_PIXELS,
    actors: int = 1,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float = 0.0,
) -> Any:
    """Explain the images of ``ds`` (:func:`images_dataset`) as ``camlens explain`` does: each
    actor loads ``model`` (a spec, with ``weights``, on ``device``) once and writes
    ``out/<stem>/`` (maps.npz, PNGs, summary.png, explanation.json; ``what`` chooses) for each
    image; ``out`` must be a folder every node sees. Returns the lazy ``ray.data.Dataset`` of
    one row per image (``path``, ``stem``, ``done``, ``predictions``, ``seconds``,
    ``messages``, ``node``, ``pid``); :func:`camlens.output.load` reads a folder back.
    ``targets``: class indices to explain (default: the top-k). To explain several sets of
    images with one model, :class:`ExplainPool` keeps its actors between calls."""
    connect()
    loader = functools.partial(load_model, model, weights=weights, device=device)
    loaded = loader(device="cpu")  # checks the spec here; the actors load their own
    plan = _plan(loaded, out, methods, layer, targets, top_k, options, what, max_output_side)
    setup = ExplainSetup.of(plan, loader, batch_size, max_pixels)
    return explain_rows(ds, setup, RayOptions(None, actors, cpus_per_actor, gpus_per_actor))


class ExplainPool:
    """A warm pool of actors that each hold ``model`` (a spec, with ``weights``, on
    ``device``), for explaining several sets of images with one model: the actors start, and
    load the model, when the pool is made (while this process loads its own copy to check the
    spec), and are kept until :meth:`close` or the end of the ``with`` block, so a second call
    pays no start-up. ``share``: on the CPU, this process explains batches too while actors
    are still starting (the same batch function on the same model; the outputs are the
    same). ``keep`` > 0 (seconds): :meth:`close` leaves the actors running until idle for
    that long, and a later pool with the same model and resources, in any process connected
    to the cluster, uses them (:mod:`camlens.pipeline.pool`); ``end_kept()`` ends them now.

    >>> with cr.ExplainPool("efficientnet_lite0", actors=2) as pool:
    ...     rows = pool.explain(paths, out="shared/out", methods=["gradcam"])
    ...     more = pool.explain(other_paths, out="shared/out2")
    """

    def __init__(self, model: str = "efficientnet_lite0", *, weights: str | None = None,
                 device: str = "cpu", actors: int = 1, cpus_per_actor: float = 1.0,
                 gpus_per_actor: float = 0.0, share: bool = True, keep: float = 0.0) -> None:
        connect()
        self.loader = functools.partial(load_model, model, weights=weights, device=device)
        self.pool: ActorPool[ModelRecord] = ActorPool(
            self.loader, RayOptions(None, actors, cpus_per_actor, gpus_per_actor, keep))
        try:
            self.loaded = self.loader(device="cpu")  # the spec checked while the actors start
        except BaseException:
            self.pool.close()
            raise
        self.share = share and device == "cpu"
        self._calls = threading.Lock()  # one call at a time on the pool (threads queue here)

    def __enter__(self) -> ExplainPool:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """End the actors (their CPUs and GPUs return to the cluster); with ``keep``, leave
        them to end after ``keep`` idle seconds."""
        self.pool.close()

    def wait(self) -> list[tuple[str, int]]:
        """Block until every actor has started and loaded the model (e.g. before timing a
        call); returns each actor's (node id, process id)."""
        return list(self.pool.wait().values())

    def explain(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        out: str | os.PathLike[str],
        methods: Sequence[str] = FIGURE1,
        layer: str | None = None,
        targets: Sequence[int] | None = None,
        top_k: int = 3,
        options: Mapping[str, Any] | None = None,
        what: Collection[str] = output.WHAT,
        batch_size: int = 8,
        max_output_side: int = 768,
        max_pixels: int = cio.DEFAULT_MAX_PIXELS,
    ) -> list[dict[str, Any]]:
        """Explain the image files ``paths`` as :func:`explain_dataset` does (the same
        settings and folders ``out/<stem>/``) on the pool's actors: the rows of
        :func:`explain_dataset`, one per image, in the order of ``paths``. Calls from several
        threads take turns."""
        plan = _plan(self.loaded, out, methods, layer, targets, top_k, options, what,
                     max_output_side)
        setup = ExplainSetup.of(plan, self.loader, batch_size, max_pixels)
        with self._calls:
            return list(explain_on_pool(self.pool, sources_of([Path(p) for p in paths]),
                                        setup, self.loaded if self.share else None))


def evaluate_dataset(
    ds: Any,
    task: str,
    model: Any = "efficientnet_lite0",
    *,
    method: str | Sequence[Any] = "gradcam",
    layer: Any = None,
    options: Mapping[str, Any] | None = None,
    top_k: int = 5,
    threshold: float = 0.15,
    iou_threshold: float = 0.5,
    relative_to: str = "max",
    all_boxes: bool = False,
    tolerance: float = 15,
    splits: Mapping[str, Split] | None = None,
    window: int = 16,
    stride: int = 8,
    fill: float = 0.0,
    target: str = "top1",
    label_map: Any = None,
    device: str = "cpu",
    weights: str | None = None,
    batch_size: int = 16,
    actors: int = 1,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float = 0.0,
) -> Any:
    """Each image's rows of one protocol (``localization``, ``pointing``, ``faithfulness``;
    the settings of :func:`camlens.evaluate.evaluate`) over the Ray dataset ``ds`` of samples
    (:func:`samples_dataset`): the lazy ``ray.data.Dataset`` of one row per image
    (``image_id``, ``rows``: the row dataclasses, the CSV rows of a local run; ``error``;
    ``node``; ``pid``). Pointing: ``splits`` maps each image id to ``"held_out"`` (chooses the
    rejection threshold) or ``"test"``; by default a quarter of the images, spread evenly in
    the order of ``ds``, as the local engine does. :func:`summarize` makes the summary."""
    connect()
    bound = _task(task, method, layer, options, top_k, threshold, iou_threshold, relative_to,
                  all_boxes, tolerance, splits, window, stride, fill, target, label_map, ds)
    loader = functools.partial(resolve_model, model, device=device, weights=weights)
    return evaluate_rows(ds, bound, loader,
                         RayOptions(None, actors, cpus_per_actor, gpus_per_actor), batch_size)


def _task(task: str, method: Any, layer: Any, options: Mapping[str, Any] | None, top_k: int,
          threshold: float, iou_threshold: float, relative_to: str, all_boxes: bool,
          tolerance: float, splits: Mapping[str, Split] | None, window: int, stride: int,
          fill: float, target: str, label_map: Any, ds: Any) -> Task[Any]:
    opts = dict(options or {})
    if task == "localization":
        if relative_to not in RELATIVE_TO:
            raise ValueError(f"relative_to must be one of {RELATIVE_TO}, got {relative_to!r}")
        settings = LocalizationSettings(top_k, threshold, iou_threshold, relative_to, all_boxes)
        return LocalizationTask(method, layer, opts, settings, label_map)
    if task == "pointing":
        chosen: dict[str, Split]
        if splits is None:
            ids = [str(r["image_id"]) for r in ds.select_columns(["image_id"]).take_all()]
            hold = held_out_positions(len(ids), 0.25)
            chosen = {k: "held_out" if p in hold else "test" for p, k in enumerate(ids)}
        else:
            chosen = dict(splits)
        return PointingTask(method, layer, opts, chosen, top_k, tolerance,
                            held_out="splits", label_map=label_map)
    if task == "faithfulness":
        specs = ([(method, method, opts, layer)] if isinstance(method, str)
                 else method_specs(method))
        return FaithfulnessTask(specs, {"window": window, "stride": stride, "fill": fill},
                                target, label_map)
    raise ValueError(f"task must be localization, pointing or faithfulness, got {task!r}")


def summarize(rows: Any, task: str, *, top_k: int = 5, threshold: float = 0.15,
              iou_threshold: float = 0.5, relative_to: str = "max", tolerance: float = 15,
              window: int = 16, stride: int = 8, fill: float = 0.0, target: str = "top1",
              method: str = "gradcam",
              ) -> LocalizationSummary | PointingSummary | FaithfulnessSummary:
    """The summary of :func:`evaluate_dataset`'s output ``rows`` (consumed here, in image id
    order), with the settings they were made with; images that were skipped are counted in
    ``failed``."""
    images: dict[str, list[Any]] = {}
    failed = 0
    for row in rows.iter_rows():
        if row["rows"] is None:
            failed += 1
        else:
            images[str(row["image_id"])] = list(row["rows"])
    per = [images[k] for k in sorted(images)]
    if task == "localization":
        settings = LocalizationSettings(top_k, threshold, iou_threshold, relative_to)
        return localization_summary([r for rs in per for r in rs], settings, method=method,
                                    failed=failed)
    if task == "pointing":
        return pointing_summary(per, top_k, tolerance, method=method, failed=failed)
    if task == "faithfulness":
        names = list(dict.fromkeys(r.method for rs in per for r in rs))
        return faithfulness_summary(per, names, window=window, stride=stride, fill=fill,
                                    target=target, failed=failed)
    raise ValueError(f"task must be localization, pointing or faithfulness, got {task!r}")
