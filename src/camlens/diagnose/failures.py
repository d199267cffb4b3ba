"""Failure modes (Sec. 6.1): the misclassified images, Guided Grad-CAM for the true and the
predicted class side by side, grouped by confusion pair, pairs ranked by frequency.

A *top-1 failure* has a true class in the top-k but not first; a *top-5 failure* (k = 5) has
none in the top-k. The shown true class is the present class the model ranks highest.

On world v2 (exact ground truth) every failure is also measured: where the peak of the
predicted class's Grad-CAM lands (:func:`camlens.diagnose.regions.point_category`): on an
object or decoy that really resembles the predicted class (its confusable group), or on other
objects, clutter, the cue band or background; beside it, the share of the image those
resembling pixels cover (where a map with a random peak would land).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from camlens.diagnose.data import Item, class_maps, model_inputs, predict
from camlens.diagnose.html import Page, cam_panel, guided_panel
from camlens.diagnose.regions import (
    CATEGORIES,
    RELATED,
    RESEMBLING,
    decoy_masks,
    point_category,
)
from camlens.models.registry import ModelRecord
from camlens.plural import counted
from camlens.synthetic.v2 import CLASS_SPECS

__all__ = ["Prediction", "Failure", "ConfusionGroup", "find_failures", "group_failures",
           "predict_items", "diagnose_failures"]


@dataclass(frozen=True)
class Prediction:
    """One image's true classes and the model's top-k classes (best first) with their
    softmax probabilities."""

    id: str
    labels: tuple[int, ...]
    top: tuple[int, ...]
    probs: tuple[float, ...] = ()


@dataclass(frozen=True)
class Failure:
    id: str
    true: int
    predicted: int
    kind: str  # "top-1" or "top-5"
    p_true: float | None = None
    p_predicted: float | None = None
    measures: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ConfusionGroup:
    true: int
    predicted: int
    failures: tuple[Failure, ...]

    @property
    def count(self) -> int:
        return len(self.failures)


def find_failures(predictions: Sequence[Prediction], k: int = 5) -> list[Failure]:
    """The predictions whose first class is not a true class, in the given order."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    out = []
    for p in predictions:
        if not p.labels or not p.top:
            raise ValueError(f"prediction {p.id!r} needs true labels and a top list")
        if p.top[0] in p.labels:
            continue
        ranked = [c for c in p.top[:k] if c in p.labels]
        true = ranked[0] if ranked else p.labels[0]
        prob = dict(zip(p.top, p.probs))
        out.append(Failure(p.id, true, p.top[0], "top-1" if ranked else "top-5",
                           prob.get(true), prob.get(p.top[0])))
    return out


def group_failures(failures: Sequence[Failure]) -> list[ConfusionGroup]:
    """Failures grouped by (true, predicted), most frequent pair first (ties: by class
    indices); within a group in the given order."""
    groups: dict[tuple[int, int], list[Failure]] = {}
    for f in failures:
        groups.setdefault((f.true, f.predicted), []).append(f)
    ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return [ConfusionGroup(t, p, tuple(fs)) for (t, p), fs in ranked]


def predict_items(rec: ModelRecord, items: Sequence[Item], k: int = 5,
                  batch_size: int = 16) -> list[Prediction]:
    """The model's top-``k`` classes and probabilities on every item."""
    out = []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        logits = predict(rec.model, model_inputs(rec, chunk))
        k_ = min(k, logits.shape[1])
        probs, top = torch.softmax(logits.double(), 1).topk(k_, dim=1)
        for it, t, p in zip(chunk, top.tolist(), probs.tolist()):
            out.append(Prediction(it.id, it.labels, tuple(t), tuple(p)))
    return out


def _name(rec: ModelRecord, c: int) -> str:
    return rec.labels[c] if c < len(rec.labels) else str(c)


def _peak(cam: np.ndarray) -> tuple[int, int]:
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return int(y), int(x)


def _measure(item: Item, cams: np.ndarray, f: Failure) -> dict[str, Any]:
    """Where the true and predicted maps peak (world v2), and the chance of a random peak
    landing on something resembling the predicted class."""
    scene = item.scene
    if scene is None:
        return {}
    out: dict[str, Any] = {}
    for key, cls, cam in (("true", f.true, cams[0]), ("predicted", f.predicted, cams[1])):
        if cam.max() <= 0:
            out[f"{key}_peak"] = "no evidence"
            continue
        out[f"{key}_peak"] = point_category(scene, *_peak(cam), cls)
    group = CLASS_SPECS[f.predicted].group
    look = np.zeros(scene.size, dtype=bool)
    for o in scene.objects:
        if CLASS_SPECS[o.label].group == group:
            look |= o.mask
    for label, m in decoy_masks(scene):
        if CLASS_SPECS[label].group == group:
            look |= m
    out["resembling_area"] = float(look.mean())
    out["same_group"] = CLASS_SPECS[f.true].group == group
    return out


def _summary(failures: Sequence[Failure], n: int, rec: ModelRecord) -> dict[str, Any]:
    groups = group_failures(failures)
    s: dict[str, Any] = {
        "images": n, "model": rec.name, "layer": rec.default_layer,
        "top1_failures": sum(f.kind == "top-1" for f in failures),
        "top5_failures": sum(f.kind == "top-5" for f in failures),
        "top1_error": len(failures) / n if n else None,
        "pairs": [{"true": _name(rec, g.true), "predicted": _name(rec, g.predicted),
                   "count": g.count} for g in groups],
    }
    measured = [f for f in failures if "predicted_peak" in f.measures]
    if measured:
        peaks = Counter(f.measures["predicted_peak"] for f in measured)
        s["predicted_peak"] = {c: peaks.get(c, 0) for c in (*CATEGORIES, "no evidence")}
        s["predicted_peak_resembling"] = sum(peaks[c] for c in RESEMBLING) / len(measured)
        s["predicted_peak_related"] = sum(peaks[c] for c in RELATED) / len(measured)
        s["resembling_area_mean"] = float(np.mean([f.measures["resembling_area"]
                                                   for f in measured]))
        same = [f for f in measured if f.measures["same_group"]]
        s["errors_within_group"] = len(same) / len(measured)
        for key, fs in (("within_group", same),
                        ("across_groups", [f for f in measured if not f.measures["same_group"]])):
            if fs:
                s[f"predicted_peak_resembling_{key}"] = sum(
                    f.measures["predicted_peak"] in RESEMBLING for f in fs) / len(fs)
        true_peaks = Counter(f.measures["true_peak"] for f in measured)
        s["true_peak_on_true_object"] = true_peaks.get("class c", 0) / len(measured)
    return s


def diagnose_failures(
    rec: ModelRecord, items: Sequence[Item], out: str | Path, *, k: int = 5,
    batch_size: int = 16, examples: int = 4, max_pairs: int = 20,
) -> dict[str, Any]:
    """Find ``rec``'s failures on ``items``, explain the true and the predicted class of each
    (Grad-CAM; Guided Grad-CAM for the ``examples`` shown per pair, ``max_pairs`` pairs), write
    ``out``/report.html, failures.json (the summary and every failure) and failures.csv, and
    return the summary."""
    if examples < 0 or max_pairs < 0 or batch_size < 1:
        raise ValueError("examples and max_pairs must be >= 0, batch_size >= 1")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    by_id = {it.id: it for it in items}
    failures = find_failures(predict_items(rec, items, k, batch_size), k)
    measured: list[Failure] = []
    for i in range(0, len(failures), batch_size):
        chunk = failures[i:i + batch_size]
        its = [by_id[f.id] for f in chunk]
        if len({it.size for it in its}) > 1:
            for f, it in zip(chunk, its):
                m = class_maps(rec, model_inputs(rec, [it]),
                               torch.tensor([[f.true, f.predicted]]), it.size)
                measured.append(Failure(**{**asdict(f), "measures": _measure(it, m.gradcam[0],
                                                                             f)}))
            continue
        m = class_maps(rec, model_inputs(rec, its),
                       torch.tensor([[f.true, f.predicted] for f in chunk]), its[0].size)
        for j, (f, it) in enumerate(zip(chunk, its)):
            measured.append(Failure(**{**asdict(f), "measures": _measure(it, m.gradcam[j], f)}))
    summary = _summary(measured, len(items), rec)
    rows = [{"id": f.id, "true": _name(rec, f.true), "predicted": _name(rec, f.predicted),
             "kind": f.kind, "p_true": f.p_true, "p_predicted": f.p_predicted, **f.measures}
            for f in measured]
    with open(folder / "failures.json", "w", encoding="utf-8") as fh:
        json.dump({"summary": summary, "failures": rows}, fh, indent=1)
    with open(folder / "failures.csv", "w", newline="", encoding="utf-8") as fh:
        keys = list(dict.fromkeys(k_ for r in rows for k_ in r)) or ["id"]
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    _html(rec, by_id, group_failures(measured), summary, folder, examples, max_pairs)
    return summary


def _fmt(p: float | None) -> str:
    return "not in top-k" if p is None else f"{p:.3f}"


def _html(rec: ModelRecord, by_id: dict[str, Item], groups: list[ConfusionGroup],
          summary: dict[str, Any], folder: Path, examples: int, max_pairs: int) -> None:
    page = Page(f"Failure modes of {rec.name}")
    page.text(f"{counted(summary['images'], 'image')}; "
              f"{counted(summary['top1_failures'], 'top-1 failure')} (a true class in the top-k, "
              f"not first) and {counted(summary['top5_failures'], 'top-5 failure')} "
              f"(none in the top-k). Layer {rec.default_layer}. Pairs ranked by frequency; "
              "each row: the image, Guided Grad-CAM and Grad-CAM for the true class, then for "
              "the predicted class.")
    if "predicted_peak" in summary:
        page.heading("Where the predicted class's Grad-CAM peaks (exact ground truth)")
        page.table(["peak lands on", "failures"],
                   [["the predicted class" if c == "class c" else c, v]
                    for c, v in summary["predicted_peak"].items()])
        page.text(f"On something resembling the predicted class (the class itself, an object or "
                  f"decoy of its confusable group): {summary['predicted_peak_resembling']:.1%} "
                  f"of failures; those pixels cover {summary['resembling_area_mean']:.1%} of an "
                  "image on average (a random peak's chance).")
    page.heading("Confusion pairs")
    page.table(["rank", "true", "predicted", "count"],
               [[i + 1, p["true"], p["predicted"], p["count"]]
                for i, p in enumerate(summary["pairs"])])
    for rank, g in enumerate(groups[:max_pairs]):
        if examples == 0:
            break
        page.heading(f"{rank + 1}. {_name(rec, g.true)} predicted as {_name(rec, g.predicted)} "
                     f"({g.count})", 3)
        shown = g.failures[:examples]
        its = [by_id[f.id] for f in shown]
        for f, it in zip(shown, its):
            m = class_maps(rec, model_inputs(rec, [it]), torch.tensor([[f.true, f.predicted]]),
                           it.size, guided=True)
            assert m.guided is not None
            true, pred = _name(rec, f.true), _name(rec, f.predicted)
            panels = [("image", _pil(it.image)),
                      (f"Guided Grad-CAM: {true}", guided_panel(m.guided[0, 0])),
                      (f"Grad-CAM: {true}", cam_panel(it.image, m.gradcam[0, 0])),
                      (f"Guided Grad-CAM: {pred}", guided_panel(m.guided[0, 1])),
                      (f"Grad-CAM: {pred}", cam_panel(it.image, m.gradcam[0, 1]))]
            where = f.measures.get("predicted_peak")
            page.panels(panels, f"{f.id}: true {_name(rec, f.true)} (p {_fmt(f.p_true)}), "
                             f"predicted {_name(rec, f.predicted)} (p {_fmt(f.p_predicted)}), "
                             f"{f.kind} failure" + (f"; predicted map peaks on: {where}"
                                                    if where else ""))
    page.write(folder / "report.html")


def _pil(image: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(image)
