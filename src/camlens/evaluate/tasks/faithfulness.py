"""Faithfulness over a dataset (Sec. 5.3): each method's map against the occlusion map of the
same image and class, by rank correlation; per-(image, method) rows, their summary, and
:func:`evaluate_faithfulness`."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from camlens.evaluate.explainer import Explainer, MapCache, as_cache
from camlens.evaluate.faithfulness import rank_correlation
from camlens.evaluate.model import Preprocess, label_index, predict, resolve_model
from camlens.evaluate.store import RowStore
from camlens.evaluate.tasks.common import (
    Batch,
    Bound,
    Engine,
    RunInfo,
    SamplesLike,
    as_samples,
    execute,
    method_config,
    sample_ids,
)
from camlens.models.registry import ModelRecord

MethodSpec = str | tuple
"""A method name, or ``(column name, method, options[, layer])``."""


@dataclass(frozen=True)
class FaithfulnessRow:
    """One image and one method: the class explained and the rank correlation of the method's
    map with the occlusion map (NaN: a constant map)."""

    class_index: int
    method: str
    rho: float


def method_specs(methods: Sequence[MethodSpec]) -> list[tuple[str, str, dict[str, Any], Any]]:
    """(column name, method, options, layer) per spec."""
    out: list[tuple[str, str, dict[str, Any], Any]] = []
    for spec in methods:
        if isinstance(spec, str):
            out.append((spec, spec, {}, None))
        else:
            name, method, opts, *rest = spec
            out.append((str(name), method, dict(opts or {}), rest[0] if rest else None))
    names = [s[0] for s in out]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be distinct, got {names}")
    return out


def compute(batch: Batch, reference: Explainer, methods: Mapping[str, Explainer],
            classes_of: Callable[[Batch], list[int]]) -> list[list[FaithfulnessRow]]:
    """Each image's rows: for the class ``classes_of`` picks, rho of every method's map with
    the ``reference`` (occlusion) map, both at input resolution."""
    cls = classes_of(batch)
    one = [[c] for c in cls]
    occ = reference.maps(batch.x, batch.ids, one)
    maps = {name: ex.maps(batch.x, batch.ids, one) for name, ex in methods.items()}
    return [[FaithfulnessRow(c, name, rank_correlation(maps[name][b][c], occ[b][c]))
             for name in methods] for b, c in enumerate(cls)]


@dataclass(frozen=True)
class FaithfulnessTask:
    """Faithfulness' settings (picklable, for Ray's actors): (column name, method, options,
    layer) per compared method, the occlusion reference's options, the class explained."""

    specs: Sequence[tuple[str, str, dict[str, Any], Any]]
    occlusion: Mapping[str, Any]
    target: str = "top1"
    label_map: Any = None

    def bind(self, res: ModelRecord, cache: MapCache | None = None) -> Bound[FaithfulnessRow]:
        """:func:`compute` on ``res`` and the run's configuration."""
        methods = {name: Explainer(res, m, lay, o, cache) for name, m, o, lay in self.specs}
        reference = Explainer(res, "occlusion", None, dict(self.occlusion), cache)
        to_index = label_index(res.labels, self.label_map)

        def classes_of(batch: Batch) -> list[int]:
            if self.target == "top1":
                return predict(res.model, batch.x).argmax(dim=1).tolist()
            return [to_index(s.objects[0].label) for s in batch.samples]

        config = method_config(res, task="faithfulness", target=self.target,
                               methods={n: ex.record() for n, ex in methods.items()},
                               reference=reference.record())
        return Bound(lambda batch: compute(batch, reference, methods, classes_of), config,
                     ", ".join(methods))


@dataclass
class FaithfulnessSummary(RunInfo):
    """Mean Spearman rank correlation of each method's map with the occlusion map of the same
    image and class (NaN correlations, from constant maps, are left out and counted)."""

    methods: list[str]
    mean_rho: dict[str, float]
    n: int
    n_nan: dict[str, int]
    window: int
    stride: int
    fill: float
    target: str
    se_rho: dict[str, float] = field(default_factory=dict)
    per_image: dict[str, list[float]] = field(default_factory=dict, repr=False)

    def markdown(self) -> str:
        from camlens.evaluate.report import faithfulness_markdown

        return faithfulness_markdown(self)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().to_dict().items() if k != "per_image"}


def summarize(images: Sequence[Sequence[FaithfulnessRow]], names: Sequence[str],
              **extra: Any) -> FaithfulnessSummary:
    """Per method, the mean rho over the images where it is defined, its standard error
    (sample sd / sqrt(n); NaN below two images), and how many images it is not defined on."""
    mean, se, nan, per = {}, {}, {}, {}
    for n in names:
        vals = np.array([r.rho for rows in images for r in rows if r.method == n],
                        dtype=np.float64)
        ok = vals[~np.isnan(vals)]
        mean[n] = float(ok.mean()) if ok.size else float("nan")
        se[n] = float(ok.std(ddof=1) / np.sqrt(ok.size)) if ok.size > 1 else float("nan")
        nan[n] = int(np.isnan(vals).sum())
        per[n] = vals.tolist()
    return FaithfulnessSummary(methods=list(names), mean_rho=mean, n=len(images), n_nan=nan,
                               se_rho=se, per_image=per, **extra)


def evaluate_faithfulness(
    model: Any,
    samples: SamplesLike,
    *,
    method: MethodSpec | Sequence[MethodSpec] = "gradcam",
    layer: Any = None,
    options: Mapping[str, Any] | None = None,
    window: int = 16,
    stride: int = 8,
    fill: float = 0.0,
    occlusion_batch: int = 64,
    target: str = "top1",
    batch_size: int = 16,
    csv_path: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: bool = True,
    label_map: Any = None,
    cache: MapCache | None = None,
    preprocess: Preprocess | None = None,
    engine: Engine | None = None,
) -> FaithfulnessSummary:
    """Mean Spearman rank correlation between each method's map and the occlusion map of the
    same image and class (Sec. 5.3), both at the model's input resolution.

    ``method``: one method name, or a list of names / ``(name, method, options[, layer])``
    tuples (the occlusion map is then computed once per image for all of them); ``options``
    and ``layer`` apply to a single named method. ``target``: ``"top1"`` (the model's top
    class, the decision being explained) or ``"gt"`` (the image's first ground-truth class).
    ``window``/``stride``/``fill`` configure the occlusion reference. ``cache``: see
    :class:`MapCache` (an occlusion localisation run with the same window, stride and fill and
    ``all_boxes=True`` leaves the reference maps there).
    """
    start = time.perf_counter()
    res = resolve_model(model, preprocess)
    specs = ([(method, method, dict(options or {}), layer)] if isinstance(method, str)
             else method_specs(method))
    if target not in ("top1", "gt"):
        raise ValueError(f"target must be 'top1' or 'gt', got {target!r}")
    occ_opts: dict[str, Any] = {"window": window, "stride": stride, "fill": fill}
    if occlusion_batch != 64:
        occ_opts["batch_size"] = occlusion_batch
    task = FaithfulnessTask(specs, occ_opts, target, label_map)
    bound = task.bind(res, as_cache(cache))
    items = as_samples(samples)
    if target == "gt":
        items = [s for s in items if s.objects]
    ids = sample_ids(items)
    store = RowStore(csv_path, FaithfulnessRow, bound.config, resume)
    out = execute(items, ids, range(len(items)), store, res, batch_size, bound.compute,
                  "faithfulness", progress,
                  None if engine is None else dataclasses.replace(engine, task=task))
    return summarize(list(out.rows.values()), [name for name, *_ in specs], window=window,
                     stride=stride, fill=fill, target=target, **out.run_info(start, csv_path))
