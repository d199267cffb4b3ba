"""The paper's evaluations as tasks over a dataset: weakly-supervised localisation (Sec. 4.1,
Table 1), the pointing game with the top-5 + rejection variant (Sec. 4.3), faithfulness as
rank correlation with occlusion (Sec. 5.3), and captioning's word pointing and region
inside/outside ratio (Sec. 8.1, :mod:`camlens.evaluate.tasks.captioning`).

Each task is a pure ``compute(batch, ...) -> each image's rows`` (typed dataclass rows) and a
``summarize(rows) -> Summary``; ``evaluate_<task>`` runs ``compute`` over the images through
the pipeline executor, keeps the rows in a resumable CSV store and summarises them.

>>> from camlens.evaluate import evaluate_localization
>>> summary = evaluate_localization("synthetic:vgg", "synthetic:seed=20251,n=100",
...                                 method="gradcam", csv_path="loc.csv")
>>> print(summary.markdown())                    # the layout of the paper's Table 1
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from camlens.evaluate.model import resolve_model
from camlens.evaluate.tasks.captioning import (
    CAPTION_TASKS,
    RegionRatioSummary,
    WordPointingSummary,
    evaluate_region_ratio,
    evaluate_word_pointing,
)
from camlens.evaluate.tasks.common import Engine, SamplesLike, as_samples
from camlens.evaluate.tasks.faithfulness import (
    FaithfulnessSummary,
    evaluate_faithfulness,
)
from camlens.evaluate.tasks.localization import (
    LocalizationSummary,
    evaluate_localization,
)
from camlens.evaluate.tasks.pointing import PointingSummary, evaluate_pointing

if TYPE_CHECKING:  # pragma: no cover
    from camlens.pipeline.distributed import RayOptions
    from camlens.vqa.measure import VQASummary

TASKS = ("localization", "pointing", "faithfulness", *CAPTION_TASKS, "vqa")

__all__ = ["TASKS", "FaithfulnessSummary", "LocalizationSummary", "PointingSummary", "evaluate",
           "evaluate_faithfulness", "evaluate_localization", "evaluate_pointing",
           "WordPointingSummary", "RegionRatioSummary", "evaluate_word_pointing",
           "evaluate_region_ratio"]


def evaluate(
    task: str,
    data: SamplesLike,
    *,
    model: Any = None,
    method: str = "gradcam",
    layer: str | None = None,
    options: Mapping[str, Any] | None = None,
    csv_path: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: bool = True,
    batch_size: int = 16,
    top_k: int = 5,
    threshold: float = 0.15,
    relative_to: str = "max",
    tolerance: float = 15,
    held_out: float | SamplesLike = 0.25,
    window: int = 16,
    stride: int | None = None,
    fill: float = 0.0,
    limit: int | None = None,
    label_map: Any = None,
    device: str | torch.device = "cpu",
    weights: str | None = None,
    engine: str | RayOptions = "local",
) -> (LocalizationSummary | PointingSummary | FaithfulnessSummary | WordPointingSummary
      | RegionRatioSummary | VQASummary):
    """Run one evaluation ``task`` (one of :data:`TASKS`) on ``data`` (a ``FORMAT:PATH`` spec
    for :func:`load_dataset`, or samples; world v2 scenes or ``synthetic:seed=S,n=N[,...]``
    (docs/world.md) for the captioning tasks); the summary's ``markdown()`` is the table to
    print. ``model``: None is ``efficientnet_lite0`` for the image tasks, the bundled
    ``synthetic:captioner`` for the captioning tasks. ``limit`` keeps the first N samples;
    ``label_map`` maps ground-truth labels to class indices (e.g. ``wnid_to_index(synsets)``
    for ILSVRC); ``device`` and ``weights`` are used when ``model`` is a spec string.
    ``engine``: ``"local"`` (this process), or ``"ray"`` /
    :class:`~camlens.pipeline.distributed.RayOptions` (a Ray cluster's actors, each loading
    ``model`` itself, with ``device``; the rows and summary are the local engine's; not for
    ``vqa``). ``vqa`` (:func:`camlens.vqa.measure.evaluate_spec`): ``data``
    ``synthetic:seed=S,n=N[,...]``, ``model`` the bundled VQA net (the default) or a folder
    from ``python -m camlens.vqa.train``; window, stride, fill, csv_path and resume apply."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task in CAPTION_TASKS or task == "vqa":
        if engine != "local":
            raise ValueError(f"the {task} task runs on the local engine only (engine='local')")
    if task in CAPTION_TASKS:
        run = evaluate_word_pointing if task == "word-pointing" else evaluate_region_ratio
        if weights is not None or label_map is not None:
            raise ValueError(f"{task}: weights and label_map do not apply (a captioner module "
                             "or the bundled synthetic:captioner)")
        return run("synthetic:captioner" if model is None else model, data, limit=limit,
                   method=method,
                   layer=layer, options=options, csv_path=csv_path, resume=resume,
                   progress=progress, batch_size=batch_size)
    if task == "vqa":  # Sec. 8.2: answer maps of the VQA net (camlens.vqa.measure)
        from camlens.vqa.measure import evaluate_spec

        if not isinstance(data, str):
            raise ValueError("the vqa task takes data='synthetic:seed=S,n=N[,...]' (world v2 "
                             "scenes; docs/world.md)")
        return evaluate_spec(data, None if model in (None, "efficientnet_lite0") else model,
                             window=window, stride=16 if stride is None else stride, fill=fill,
                             csv_path=csv_path,
                             resume=resume, progress=progress)
    model = model or "efficientnet_lite0"
    ray_engine = _engine(engine, functools.partial(resolve_model, model, device=device,
                                                    weights=weights))
    # with Ray the actors load the model on ``device``; here it names the run and checks it
    res = resolve_model(model, device=device if ray_engine is None else "cpu", weights=weights)
    items = as_samples(data)
    if limit is not None:
        items = items[: int(limit)]
    common: dict[str, Any] = {"method": method, "layer": layer, "options": options,
                                  "csv_path": csv_path, "resume": resume, "progress": progress,
                                  "label_map": label_map, "batch_size": batch_size,
                                  "engine": ray_engine}
    if task == "localization":
        return evaluate_localization(res, items, top_k=top_k, threshold=threshold,
                                     relative_to=relative_to, **common)
    if task == "pointing":
        return evaluate_pointing(res, items, top_k=top_k, tolerance=tolerance,
                                 held_out=held_out, **common)
    return evaluate_faithfulness(res, items, window=window, stride=8 if stride is None else stride,
                                 fill=fill, **common)


def _engine(engine: str | RayOptions, model: Any) -> Engine | None:
    """None for ``"local"``; an :class:`Engine` for ``"ray"`` or RayOptions (its task is set by
    the protocol)."""
    from camlens.pipeline.distributed import RayOptions

    if isinstance(engine, RayOptions):
        return Engine(engine, model)
    if engine == "local":
        return None
    if engine == "ray":
        return Engine(RayOptions(), model)
    raise ValueError(f"engine must be 'local', 'ray' or a RayOptions, got {engine!r}")
