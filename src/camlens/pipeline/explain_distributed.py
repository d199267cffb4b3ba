"""``camlens explain`` on Ray: images -> each actor explains its batches with
:func:`camlens.pipeline.images.run_sources` (the local pipeline: decode, batch by shape, one
:func:`camlens.explain` per batch, write ``OUT/<stem>/``) -> one output row per image.

Two feeds, one batch function (:meth:`ExplainSetup.on`): a Ray dataset through Ray Data's
``map_batches`` (:func:`explain_rows`, lazy, for Ray users), or a warm
:class:`~camlens.pipeline.pool.ActorPool` (:func:`explain_on_pool`: the CLI, whose pool starts
before its own start-up work, and :class:`camlens.ray.ExplainPool`, kept between calls), where
the driver can run the same batch function on its own copy of the model while actors start.

The folders are written by the actors, so on a cluster ``OUT`` must be a folder every node
sees (a shared file system); each is read back by :func:`camlens.output.load`, as a local
run's. A retried batch writes its folders again, whole (every file is replaced atomically).

Rows in: ``path`` (the file name's bytes, ``os.fsencode``) and ``stem`` (its folder's name).
Rows out: ``path``, ``stem``, ``done`` (its folder is written), ``predictions`` (JSON
``[[class, probability], ...]``, the top-k), ``seconds`` (in :func:`camlens.explain`, per
image), ``messages`` (JSON ``[[kind, text], ...]``: the errors and warnings of the row's batch,
on its first row only), ``node``, ``pid``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from camlens import io as cio
from camlens.models.registry import ModelRecord
from camlens.pipeline.distributed import BatchFn, RayOptions, map_rows, require_ray
from camlens.pipeline.images import Plan, Reporter, Source, Tally, run_sources
from camlens.pipeline.pool import ActorPool

__all__ = ["ExplainSetup", "batches_of", "explain_on_pool", "explain_on_ray", "explain_rows",
           "images_dataset"]


class _Collect:
    """A :class:`~camlens.pipeline.images.Reporter` that keeps the news of one batch."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []
        self.predictions: dict[Path, list[tuple[int, float]]] = {}

    def failed(self, message: str) -> None:
        self.messages.append(("error", message))

    def warn(self, message: str) -> None:
        self.messages.append(("warning", message))

    def explained(self, item: Source, folder: Path,
                  predictions: list[tuple[int, float]]) -> None:
        self.predictions[item.path] = predictions


@dataclass(frozen=True)
class ExplainSetup:
    """What each actor builds once: the model (``model()``) in a :class:`Plan` made of
    ``plan`` (every field but ``loaded``), and the batch function."""

    model: Callable[[], ModelRecord]
    plan: dict[str, Any]
    batch_size: int = 8
    max_pixels: int = cio.DEFAULT_MAX_PIXELS

    @classmethod
    def of(cls, plan: Plan, model: Callable[[], ModelRecord], batch_size: int = 8,
           max_pixels: int = cio.DEFAULT_MAX_PIXELS) -> ExplainSetup:
        """The setup for ``plan``, whose model each actor loads with ``model()``."""
        fields = {f.name: getattr(plan, f.name) for f in dataclasses.fields(plan)
                  if f.name != "loaded"}
        return cls(model, fields, batch_size, max_pixels)

    def __call__(self) -> BatchFn:
        """The batch function on a model loaded here (``model()``), once per actor."""
        return self.on(self.model())

    def on(self, loaded: ModelRecord) -> BatchFn:
        """The batch function on ``loaded`` (an actor's model, or the driver's own)."""
        plan = Plan(loaded=loaded, **self.plan)

        def run(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            sources = [Source(Path(os.fsdecode(bytes(p))), str(s))
                       for p, s in zip(batch["path"], batch["stem"])]
            news = _Collect()
            tally = run_sources(sources, plan, news, batch_size=self.batch_size,
                                max_pixels=self.max_pixels)
            each = tally.seconds / tally.done if tally.done else 0.0
            top = [news.predictions.get(s.path) for s in sources]
            messages = [json.dumps(news.messages)] + ["[]"] * (len(sources) - 1)
            return {"path": np.array([os.fsencode(s.path) for s in sources], dtype=object),
                    "stem": np.array([s.stem for s in sources], dtype=object),
                    "done": np.array([t is not None for t in top]),
                    "predictions": np.array([json.dumps(t or []) for t in top], dtype=object),
                    "seconds": np.array([each if t is not None else 0.0 for t in top]),
                    "messages": np.array(messages, dtype=object)}

        return run


def images_dataset(sources: Sequence[Source]) -> Any:
    """A Ray dataset of images to explain (columns ``path``, ``stem``)."""
    ray = require_ray()
    return ray.data.from_items([{"path": os.fsencode(s.path), "stem": s.stem}
                                for s in sources])


def explain_rows(ds: Any, setup: ExplainSetup, options: RayOptions) -> Any:
    """The output rows (see the module docstring) of explaining the images of ``ds`` on
    ``options.actors`` actors (lazy: a ``ray.data.Dataset``)."""
    return map_rows(ds, setup, options, batch_size=setup.batch_size)


def batches_of(sources: Sequence[Source], size: int) -> list[dict[str, np.ndarray]]:
    """``sources`` in batches of up to ``size`` rows (the columns of :func:`images_dataset`)."""
    return [{"path": np.array([os.fsencode(s.path) for s in sources[i:i + size]], dtype=object),
             "stem": np.array([s.stem for s in sources[i:i + size]], dtype=object)}
            for i in range(0, len(sources), size)]


def _on_actor(setup: ExplainSetup, loaded: ModelRecord,
              batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One batch on a pool actor's model (``functools.partial(_on_actor, setup)`` travels)."""
    return setup.on(loaded)(batch)


def explain_on_pool(pool: ActorPool[ModelRecord], sources: Sequence[Source],
                    setup: ExplainSetup, local: ModelRecord | None = None,
                    ) -> Iterator[dict[str, Any]]:
    """The output rows (see the module docstring) of explaining ``sources`` on ``pool``
    (actors holding ``setup.model()``), in the order of ``sources``; with ``local`` (the
    driver's copy of the same model on the same device) the driver explains batches itself
    while actors are still starting."""
    here = setup.on(local) if local is not None else None
    work = functools.partial(_on_actor, setup)
    for out, node, pid in pool.map(work, batches_of(sources, setup.batch_size), here):
        for i in range(len(out["path"])):
            yield {**{k: v[i] for k, v in out.items()}, "node": node, "pid": pid}


def explain_on_ray(sources: Sequence[Source], setup: ExplainSetup, reporter: Reporter,
                   pool: ActorPool[ModelRecord], local: ModelRecord | None = None,
                   log: TextIO | None = None) -> Tally:
    """Explain ``sources`` on ``pool`` (:func:`explain_on_pool`) and tell ``reporter`` of each
    image as its row comes back, in order (errors and warnings first, then the image if it was
    explained); returns the tally. ``log``: one JSON line per image, written as its row comes
    back (``image``, ``folder``: its stem, ``done``, ``node``: the Ray node id, ``pid``: the
    process, ``by``: ``actor`` or ``driver``)."""
    tally = Tally()
    out = setup.plan["out"]
    driver = (require_ray(data=False).get_runtime_context().get_node_id(), os.getpid())
    for row in explain_on_pool(pool, sources, setup, local):
        if log is not None:
            made = (str(row["node"]), int(row["pid"]))
            log.write(json.dumps({
                "image": cio.display_path(os.fsdecode(bytes(row["path"]))),
                "folder": str(row["stem"]), "done": bool(row["done"]), "node": made[0],
                "pid": made[1], "by": "driver" if made == driver else "actor"}) + "\n")
            log.flush()
        for kind, text in json.loads(row["messages"]):
            (reporter.failed if kind == "error" else reporter.warn)(text)
        if not row["done"]:
            tally.failed += 1
            continue
        tally.done += 1
        tally.seconds += float(row["seconds"])
        top = [(int(c), float(p)) for c, p in json.loads(row["predictions"])]
        reporter.explained(Source(Path(os.fsdecode(bytes(row["path"]))), str(row["stem"])),
                           Path(out) / str(row["stem"]), top)
    return tally
