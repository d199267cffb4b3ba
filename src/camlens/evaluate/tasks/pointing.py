"""The pointing game over a dataset (Sec. 4.3), standard and top-k + rejection: per-trial
rows, their summary, and :func:`evaluate_pointing`."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np

from camlens.evaluate.explainer import Explainer, MapCache, as_cache
from camlens.evaluate.faithfulness import resize_map
from camlens.evaluate.model import Preprocess, label_index, resolve_model
from camlens.evaluate.pointing import (
    PointingTrial,
    Ties,
    choose_rejection_threshold,
    pointing_game,
    pointing_hit,
)
from camlens.evaluate.store import RowStore
from camlens.evaluate.tasks.common import (
    Batch,
    Bound,
    Engine,
    RunInfo,
    SamplesLike,
    as_samples,
    check_classes,
    execute,
    method_config,
    sample_ids,
)
from camlens.models.registry import ModelRecord

Split = Literal["held_out", "test"]


@dataclass(frozen=True)
class PointingRow:
    """One trial: an image's class (a top-k class or a ground-truth one), its rank among the
    top k (None: not in them), whether it is present and hit, and the map's maximum."""

    split: str
    class_index: int
    rank: int | None
    in_topk: bool
    is_gt: bool
    present: bool
    hit: bool
    evidence: float


def held_out_positions(n: int, fraction: float) -> set[int]:
    """Positions spread evenly: position p is held out when floor((p+1) f) > floor(p f)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(
            f"held_out must be a fraction in (0, 1) or a list of samples, got {fraction}")
    return {p for p in range(n) if math.floor((p + 1) * fraction) > math.floor(p * fraction)}


def compute(batch: Batch, splits: Sequence[Split], explainer: Explainer,
            to_index: Callable[[Any], int], top_k: int, tolerance: float,
            ties: Ties) -> list[list[PointingRow]]:
    """Each image's trials: its top-k classes and its ground-truth classes, each map (resized
    bilinearly to the annotation) pointing within ``tolerance`` px of the class's mask."""
    logits, known = explainer.predict(batch.x, batch.ids, top_k)
    check_classes(batch.samples, to_index, logits.shape[1])
    k = min(int(top_k), logits.shape[1])
    top = logits.topk(k, dim=1).indices.tolist()
    masks: list[dict[int, np.ndarray]] = []
    for s in batch.samples:
        per: dict[int, np.ndarray] = {}
        for lab in s.labels:
            c = to_index(lab)
            m = s.gt_mask(lab)
            per[c] = per[c] | m if c in per else m
        masks.append(per)
    classes = [top[b] + [c for c in masks[b] if c not in top[b]] for b in range(len(batch.ids))]
    maps = explainer.maps(batch.x, batch.ids, classes, known)
    out = []
    for b, s in enumerate(batch.samples):
        rows = []
        for c in classes[b]:
            m = maps[b][c].astype(np.float64)
            evidence = float(m.max())
            if m.shape != (s.height, s.width):
                m = resize_map(m, (s.height, s.width))
            gt = masks[b].get(c)
            present = gt is not None and bool(gt.any())
            hit = present and pointing_hit(m, gt, tolerance, ties)
            rows.append(PointingRow(split=splits[b], class_index=c,
                                    rank=top[b].index(c) + 1 if c in top[b] else None,
                                    in_topk=c in top[b], is_gt=c in masks[b], present=present,
                                    hit=hit, evidence=evidence))
        out.append(rows)
    return out


@dataclass(frozen=True)
class PointingTask:
    """The pointing game's settings (picklable, for Ray's actors): the method and its layer and
    options, each image's split by image id, the protocol's settings."""

    method: str
    layer: Any
    options: Mapping[str, Any]
    splits: Mapping[str, Split]
    top_k: int = 5
    tolerance: float = 15
    ties: Ties = "any"
    held_out: Any = 0.25
    """how the held-out images were chosen (for the run's configuration)"""
    label_map: Any = None

    def bind(self, res: ModelRecord, cache: MapCache | None = None) -> Bound[PointingRow]:
        """:func:`compute` on ``res``, the run's configuration and the method's label."""
        explainer = Explainer(res, self.method, self.layer, dict(self.options), cache)
        to_index = label_index(res.labels, self.label_map)
        config = method_config(res, task="pointing", **explainer.record(), top_k=self.top_k,
                               tolerance=self.tolerance, held_out=self.held_out, ties=self.ties)
        return Bound(lambda batch: compute(batch, [self.splits[k] for k in batch.ids],
                                           explainer, to_index, self.top_k, self.tolerance,
                                           self.ties),
                     config, explainer.label())


@dataclass
class PointingSummary(RunInfo):
    """Pointing accuracies on the evaluation images (fractions in [0, 1]).

    ``accuracy``: the standard game (Zhang et al.): one trial per ground-truth class, hits /
    trials. ``accuracy_rejection``: the paper's top-k + rejection: every top-k class is a trial,
    a class whose map maximum (``evidence``) is below ``threshold`` is predicted absent;
    (hits + correct rejections) / trials, with ``threshold`` chosen on the held-out images.
    ``accuracy_topk``: the same trials without rejection. ``accuracy_reject_all``: the same
    trials with every class rejected (threshold ``+inf``), i.e. the share of top-k classes that
    are absent: the baseline a rejection threshold must beat to show the maps help.
    """

    method: str
    n_images: int
    n_held_out: int
    accuracy: float
    accuracy_rejection: float
    accuracy_topk: float
    accuracy_reject_all: float
    threshold: float
    trials: int
    trials_topk: int
    tolerance: float
    k: int

    def markdown(self) -> str:
        from camlens.evaluate.report import pointing_markdown

        return pointing_markdown([self])


def summarize(images: Sequence[Sequence[PointingRow]], top_k: int, tolerance: float,
              **extra: Any) -> PointingSummary:
    """The accuracies over every image's trials; the rejection threshold is chosen on the
    held-out images' top-k trials. ``extra``: the summary's record fields."""
    held: list[PointingTrial] = []
    test_gt: list[PointingTrial] = []
    test_topk: list[PointingTrial] = []
    n_held = n_test = 0
    for rows in images:
        is_held = rows[0].split == "held_out"
        n_held += is_held
        n_test += not is_held
        for r in rows:
            t = PointingTrial(present=r.present, hit=r.hit, evidence=r.evidence)
            if is_held:
                if r.in_topk:
                    held.append(t)
            else:
                if r.is_gt:
                    test_gt.append(t)
                if r.in_topk:
                    test_topk.append(t)
    if not held:
        raise ValueError("no held-out trials to choose the rejection threshold on")
    if not test_topk:
        raise ValueError("no test images for the pointing game")
    thr = choose_rejection_threshold(held)
    standard = pointing_game(test_gt) if any(t.present for t in test_gt) else None
    return PointingSummary(
        n_images=n_test, n_held_out=n_held,
        accuracy=standard.accuracy if standard else float("nan"),
        accuracy_rejection=pointing_game(test_topk, thr).accuracy,
        accuracy_topk=pointing_game(test_topk, -math.inf).accuracy,
        accuracy_reject_all=pointing_game(test_topk, math.inf).accuracy,
        threshold=thr, trials=len(test_gt), trials_topk=len(test_topk), tolerance=tolerance,
        k=top_k, **extra)


def evaluate_pointing(
    model: Any,
    samples: SamplesLike,
    *,
    method: str = "gradcam",
    layer: Any = None,
    options: Mapping[str, Any] | None = None,
    top_k: int = 5,
    tolerance: float = 15,
    held_out: float | SamplesLike = 0.25,
    batch_size: int = 32,
    csv_path: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: bool = True,
    label_map: Any = None,
    cache: MapCache | None = None,
    preprocess: Preprocess | None = None,
    label: str | None = None,
    ties: Ties = "any",
    engine: Engine | None = None,
) -> PointingSummary:
    """Pointing game (Sec. 4.3), standard and top-k + rejection.

    Maps are computed for every top-k class and every ground-truth class of each image, at
    input resolution, then resized (bilinear) to the annotation's resolution; a trial is a hit
    when the map's maximum is within ``tolerance`` px of the class's ground-truth mask (its
    boxes when it has no mask). ``evidence`` is the maximum of the map before any scaling
    (:func:`~camlens.evaluate.explainer.localization_maps`). The rejection threshold is chosen
    on ``held_out``: a fraction of ``samples`` (spread evenly) or separate samples; the
    accuracies are on the rest. ``cache``: see :class:`MapCache`.
    """
    start = time.perf_counter()
    res = resolve_model(model, preprocess)
    Explainer(res, method, layer, dict(options or {}))  # a wrong method or layer raises now
    items = as_samples(samples)
    split: list[Split]
    if isinstance(held_out, (int, float)) and not isinstance(held_out, bool):
        hold = held_out_positions(len(items), float(held_out))
        split = ["held_out" if p in hold else "test" for p in range(len(items))]
        held_desc: Any = float(held_out)
    else:
        extra = as_samples(cast(SamplesLike, held_out))
        items = extra + items
        held: list[Split] = ["held_out"] * len(extra)
        test: list[Split] = ["test"] * (len(items) - len(extra))
        split = held + test
        held_desc = f"{len(extra)} samples"
    ids = sample_ids(items)
    task = PointingTask(method, layer, dict(options or {}), dict(zip(ids, split)), top_k,
                        tolerance, ties, held_desc, label_map)
    bound = task.bind(res, as_cache(cache))
    store = RowStore(csv_path, PointingRow, bound.config, resume)
    out = execute(items, ids, range(len(items)), store, res, batch_size, bound.compute,
                  f"pointing {method}", progress,
                  None if engine is None else dataclasses.replace(engine, task=task))
    return summarize(list(out.rows.values()), top_k, tolerance,
                     method=label or bound.label, **out.run_info(start, csv_path))
