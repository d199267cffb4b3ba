"""The evaluation protocols on Ray: a Ray dataset of samples -> a Ray dataset of each image's
rows (:func:`evaluate_rows`), and the driver's side of ``evaluate(..., engine=...)``
(:func:`execute_on_ray`): the rows come back and go to the same
:class:`~camlens.evaluate.store.RowStore` (CSV, resume) as a local run's.

Rows in: ``image_id`` (str) and ``sample`` (a :class:`~camlens.evaluate.datasets.Sample`).
Rows out: ``image_id``, ``rows`` (the image's row dataclasses; None when it was skipped),
``error`` ("" or why it was skipped), ``node`` and ``pid`` (where it ran).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from camlens.evaluate.datasets import Sample
from camlens.evaluate.store import RowStore
from camlens.evaluate.tasks.common import Engine, Task, compute_items
from camlens.models.registry import ModelRecord
from camlens.pipeline.distributed import (
    BatchFn,
    RayOptions,
    connect,
    map_rows,
    objects,
    require_ray,
    stream,
)

__all__ = ["EvaluateSetup", "evaluate_rows", "execute_on_ray", "samples_dataset"]


@dataclass(frozen=True)
class EvaluateSetup:
    """What each actor builds once: the model (``model()``), the task bound to it, and the batch
    function that runs the local executor over a batch's samples."""

    model: Callable[[], ModelRecord]
    task: Task[Any]
    batch_size: int

    def __call__(self) -> BatchFn:
        res = self.model()
        bound = self.task.bind(res)

        def run(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            ids = [str(k) for k in batch["image_id"]]
            samples: list[Sample] = list(batch["sample"])
            rows: list[Any] = [None] * len(ids)
            errors = [""] * len(ids)

            def keep(i: int, image_rows: list[Any]) -> None:
                rows[i] = image_rows

            for i, error in compute_items(samples, ids, res, self.batch_size, bound.compute,
                                          keep):
                errors[i] = str(error)
            return {"image_id": np.array(ids, dtype=object), "rows": objects(rows),
                    "error": np.array(errors, dtype=object)}

        return run


def samples_dataset(samples: Sequence[Sample], ids: Sequence[str] | None = None) -> Any:
    """A Ray dataset of ``samples`` (columns ``image_id``, ``sample``); ``ids`` default to
    :func:`~camlens.evaluate.tasks.common.sample_ids`."""
    from camlens.evaluate.tasks.common import sample_ids

    ray = require_ray()
    keys = list(ids) if ids is not None else sample_ids(samples)
    if len(keys) != len(samples):
        raise ValueError(f"{len(keys)} ids for {len(samples)} samples")
    return ray.data.from_items([{"image_id": k, "sample": s} for k, s in zip(keys, samples)])


def evaluate_rows(ds: Any, task: Task[Any], model: Callable[[], ModelRecord],
                  options: RayOptions, batch_size: int = 16) -> Any:
    """Each image's rows of ``task`` over the Ray dataset ``ds`` of samples (lazy: a
    ``ray.data.Dataset``, see the module docstring), on ``options.actors`` actors that each
    load the model once with ``model()``."""
    return map_rows(ds, EvaluateSetup(model, task, batch_size), options, batch_size=batch_size)


def execute_on_ray(samples: Sequence[Sample], ids: Sequence[str], store: RowStore[Any],
                   engine: Engine, batch_size: int, bar: Any = None) -> list[tuple[str, str]]:
    """Run ``engine.task`` over ``samples`` on Ray; each image's rows go to ``store`` as they
    come back, once (an image that came back twice would be counted, not written twice);
    returns the (image id, error) of each image skipped."""
    if not samples:
        return []
    assert engine.task is not None, "the protocol sets the engine's task"
    connect(engine.options.address, quiet=True)
    out = evaluate_rows(samples_dataset(samples, ids), engine.task, engine.model,
                        engine.options, batch_size)
    failures: list[tuple[str, str]] = []
    for row in stream(out):
        key = str(row["image_id"])
        if row["rows"] is None:
            failures.append((key, str(row["error"])))
        elif key not in store.done:
            store.add(key, list(row["rows"]))
        if bar is not None:
            bar.update(1)
    return failures
