"""Weakly-supervised localisation over a dataset (Sec. 4.1, Table 1): per-image rows, their
summary, and :func:`evaluate_localization`."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from camlens.evaluate.explainer import Explainer, MapCache, as_cache
from camlens.evaluate.localization import (
    Box,
    ImageLocalization,
    bbox_from_map,
    check_threshold,
    localization_error,
    localization_table,
)
from camlens.evaluate.model import Preprocess, label_index, resolve_model
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


def scale_box(box: Box, input_size: tuple[int, int], original_size: tuple[int, int]) -> Box:
    """An inclusive box on the model input (h, w) mapped to the original image (H, W).

    Pixel ``i`` of the input covers ``[i, i + 1)``, i.e. ``[i * s, (i + 1) * s)`` of the
    original with ``s = W / w``; the result is the inclusive box of the pixels that overlaps.
    """
    (h, w), (hh, ww) = input_size, original_size
    if (h, w) == (hh, ww):
        return tuple(int(c) for c in box)  # type: ignore[return-value]
    sx, sy = ww / w, hh / h
    x0, y0, x1, y1 = box
    nx0 = min(max(math.floor(x0 * sx + 1e-9), 0), ww - 1)
    ny0 = min(max(math.floor(y0 * sy + 1e-9), 0), hh - 1)
    nx1 = min(max(math.ceil((x1 + 1) * sx - 1e-9) - 1, nx0), ww - 1)
    ny1 = min(max(math.ceil((y1 + 1) * sy - 1e-9) - 1, ny0), hh - 1)
    return (nx0, ny0, nx1, ny1)


def _box(coords: Sequence[Any]) -> Box:
    x0, y0, x1, y1 = (int(v) for v in coords)
    return (x0, y0, x1, y1)


@dataclass(frozen=True)
class LocalizationRow:
    """One image: sizes, ground truth ``[[class, box], ...]``, the top-k classes, their scores
    and boxes on the original image (None: not localised, or not needed), and correctness."""

    width: int
    height: int
    input_h: int
    input_w: int
    gt: list[Any]
    pred_classes: list[int]
    pred_scores: list[float]
    pred_boxes: list[Any]
    top1_cls_ok: bool
    topk_cls_ok: bool
    top1_loc_ok: bool
    topk_loc_ok: bool

    def record(self) -> ImageLocalization:
        return ImageLocalization([int(c) for c in self.pred_classes],
                                 [None if b is None else _box(b) for b in self.pred_boxes],
                                 [(int(c), _box(b)) for c, b in self.gt])


@dataclass(frozen=True)
class LocalizationSettings:
    top_k: int = 5
    threshold: float = 0.15
    iou_threshold: float = 0.5
    relative_to: str = "max"
    all_boxes: bool = False


@dataclass(frozen=True)
class LocalizationTask:
    """Localisation's settings (picklable, for Ray's actors): the method and its layer and
    options, the protocol's settings, the ground-truth label map."""

    method: str
    layer: Any
    options: Mapping[str, Any]
    settings: LocalizationSettings
    label_map: Any = None

    def bind(self, res: ModelRecord, cache: MapCache | None = None) -> Bound[LocalizationRow]:
        """:func:`compute` on ``res``, the run's configuration and the method's label."""
        explainer = Explainer(res, self.method, self.layer, dict(self.options), cache)
        check_threshold(self.settings.threshold, self.settings.relative_to)
        to_index = label_index(res.labels, self.label_map)
        s = self.settings
        config = method_config(res, task="localization", **explainer.record(), top_k=s.top_k,
                               threshold=s.threshold, relative_to=s.relative_to,
                               iou=s.iou_threshold, all_boxes=s.all_boxes)
        return Bound(lambda batch: compute(batch, explainer, to_index, s), config,
                     explainer.label())


def compute(batch: Batch, explainer: Explainer, to_index: Callable[[Any], int],
            settings: LocalizationSettings) -> list[list[LocalizationRow]]:
    """Each image's row: the model's top-k classes; for each ground-truth one (every one with
    ``all_boxes``) the map -> :func:`bbox_from_map` -> the box on the original image."""
    logits, known = explainer.predict(batch.x, batch.ids, settings.top_k)
    check_classes(batch.samples, to_index, logits.shape[1])
    k = min(int(settings.top_k), logits.shape[1])
    scores, top = logits.topk(k, dim=1)
    gts = [[(to_index(o.label), _box(o.box)) for o in s.objects] for s in batch.samples]
    wanted = [[int(c) for c in top[b] if settings.all_boxes or int(c) in {g for g, _ in gts[b]}]
              for b in range(len(batch.ids))]
    maps = explainer.maps(batch.x, batch.ids, wanted, known)
    hw = (int(batch.x.shape[-2]), int(batch.x.shape[-1]))
    out = []
    for b, s in enumerate(batch.samples):
        boxes: list[Box | None] = []
        for c in top[b].tolist():
            box = (bbox_from_map(maps[b][c], settings.threshold,
                                 relative_to=settings.relative_to)
                   if c in wanted[b] else None)
            boxes.append(None if box is None else scale_box(box, hw, (s.height, s.width)))
        rec = ImageLocalization(top[b].tolist(), boxes, gts[b])
        one = localization_error([rec], 1, settings.iou_threshold)
        kk = localization_error([rec], k, settings.iou_threshold)
        out.append([LocalizationRow(
            width=s.width, height=s.height, input_h=hw[0], input_w=hw[1],
            gt=[[c, list(bx)] for c, bx in gts[b]], pred_classes=top[b].tolist(),
            pred_scores=[round(float(v), 6) for v in scores[b]],
            pred_boxes=[None if bx is None else list(bx) for bx in boxes],
            top1_cls_ok=one.cls_correct[0], topk_cls_ok=kk.cls_correct[0],
            top1_loc_ok=one.loc_correct[0], topk_loc_ok=kk.loc_correct[0],
        )])
    return out


@dataclass
class LocalizationSummary(RunInfo):
    """Top-1 / top-k localisation and classification errors (fractions in [0, 1])."""

    method: str
    n: int
    k: int
    top1_loc_error: float
    topk_loc_error: float
    top1_cls_error: float
    topk_cls_error: float
    threshold: float
    iou_threshold: float
    relative_to: str = "max"
    skipped: int = 0
    records: list[ImageLocalization] = field(default_factory=list, repr=False)

    def markdown(self) -> str:
        """This row under the header of the paper's Table 1 (errors in %)."""
        from camlens.evaluate.report import localization_markdown

        return localization_markdown([self])

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().to_dict().items() if k != "records"}


def summarize(rows: Sequence[LocalizationRow], settings: LocalizationSettings,
              **extra: Any) -> LocalizationSummary:
    """The errors over every image's row (:func:`localization_table`); ``extra``: the
    summary's record fields (method, resumed, ...)."""
    records = [r.record() for r in rows]
    if not records:
        raise ValueError("no image with ground truth to evaluate")
    k = settings.top_k
    table = localization_table(records, (1, k), settings.iou_threshold)
    return LocalizationSummary(
        n=len(records), k=k, top1_loc_error=table[1].loc_error,
        topk_loc_error=table[k].loc_error, top1_cls_error=table[1].cls_error,
        topk_cls_error=table[k].cls_error, threshold=settings.threshold,
        iou_threshold=settings.iou_threshold, relative_to=settings.relative_to,
        records=records, **extra)


def evaluate_localization(
    model: Any,
    samples: SamplesLike,
    *,
    method: str = "gradcam",
    layer: Any = None,
    options: Mapping[str, Any] | None = None,
    top_k: int = 5,
    threshold: float = 0.15,
    iou_threshold: float = 0.5,
    relative_to: str = "max",
    batch_size: int = 32,
    csv_path: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: bool = True,
    label_map: Any = None,
    all_boxes: bool = False,
    cache: MapCache | None = None,
    preprocess: Preprocess | None = None,
    label: str | None = None,
    engine: Engine | None = None,
) -> LocalizationSummary:
    """Weakly-supervised localisation error over ``samples`` (Sec. 4.1, Table 1).

    For each image: the model's ``top_k`` classes; for each, the method's map (see
    :mod:`camlens.evaluate.explainer`) -> :func:`bbox_from_map` at ``threshold`` of its maximum
    (or of its range, ``relative_to="range"``: the map min-max scaled first) -> the largest
    segment's box -> the box on the original image. An image is localised at top-k when one of
    its first k classes is a ground-truth class with a box of IoU >= ``iou_threshold`` against
    a box of that class (:func:`localization_error`).

    A predicted class that is not in the image's ground truth can never make it correct, so
    its map is not computed (box recorded as null) unless ``all_boxes=True``; the errors are
    the same either way. ``cache``: see :class:`MapCache`. ``csv_path``: one row per image,
    resumable (:mod:`camlens.evaluate.store`). ``engine``: run the batches on Ray
    (:class:`~camlens.evaluate.tasks.common.Engine`; its ``task`` is replaced by this one).
    """
    start = time.perf_counter()
    res = resolve_model(model, preprocess)
    settings = LocalizationSettings(top_k, threshold, iou_threshold, relative_to, all_boxes)
    task = LocalizationTask(method, layer, dict(options or {}), settings, label_map)
    bound = task.bind(res, as_cache(cache))  # bad values raise before any forward pass
    items = as_samples(samples)
    ids = sample_ids(items)
    store = RowStore(csv_path, LocalizationRow, bound.config, resume)
    usable = [i for i, s in enumerate(items) if s.objects]
    out = execute(items, ids, usable, store, res, batch_size, bound.compute,
                  f"localization {method}", progress,
                  None if engine is None else dataclasses.replace(engine, task=task))
    rows = [r for per in out.rows.values() for r in per]
    return summarize(rows, settings, method=label or bound.label,
                     skipped=len(items) - len(usable), **out.run_info(start, csv_path))
