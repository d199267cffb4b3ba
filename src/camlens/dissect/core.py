"""Network dissection (Bau et al. 2017), as the Grad-CAM paper uses it for neuron names (Sec. 7).

For unit k of a layer with activations A^k (h x w per image):

- threshold T_k with P(a_k > T_k) = q over every spatial position of every image (q = 0.005),
  computed as numpy's linear-interpolation quantile ``np.quantile(a_k, 1 - q)``;
- mask M_k = (upsample_bilinear(A^k, mask size) > T_k) per image;
- IoU_{k,c} = sum_images |M_k ∩ L_c| / sum_images |M_k ∪ L_c|, over the images where c's
  category is annotated;
- the unit's name is argmax_c IoU_{k,c} when that IoU is above ``min_iou`` (0.05, the paper's
  choice "to suppress the noise in the neuron names"), else the unit stays unnamed.

Two passes over the data: the thresholds, then the IoUs. The threshold is exact and streamed:
only the top ``m = N - floor((N - 1)(1 - q))`` activations of each unit are kept (N = images x
h x w), so memory is 4 bytes x units x (q N + a batch), not the whole activation tensor.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import camlens
from camlens.capture import capture, forward
from camlens.dissect.data import Concept, ConceptData, Sample
from camlens.errors import DataError, LayerError
from camlens.layers import resolve_layers
from camlens.view import private_view

__all__ = ["TopQuantile", "UnitName", "Dissection", "dissect", "QUANTILE", "MIN_IOU"]

QUANTILE = 0.005
"""Bau et al.'s top quantile: P(a_k > T_k) = 0.005."""
MIN_IOU = 0.05
"""The Grad-CAM paper's IoU threshold for a unit to get a name (Sec. 7)."""


class TopQuantile:
    """Exact streamed upper quantile per unit: ``update`` with (K, n) values, then
    ``threshold()`` = ``np.quantile(all_values_k, 1 - q)`` (linear interpolation) for each k.

    Needs ``total`` (N values per unit) up front; keeps only the top m = N - floor((N-1)(1-q))
    values per unit (float32; the interpolation in float64)."""

    def __init__(self, units: int, total: int, q: float) -> None:
        if not 0.0 < q < 1.0:
            raise ValueError(f"quantile q must be in (0, 1), got {q}")
        if total < 2:
            raise ValueError(f"need at least 2 values per unit, got {total}")
        self.total, self.q = total, q
        self.pos = (total - 1) * (1.0 - q)
        self.m = total - math.floor(self.pos)
        self.top = torch.empty(units, 0)
        self.seen = 0

    def update(self, values: torch.Tensor) -> None:
        """Add (K, n) values."""
        self.seen += int(values.shape[1])
        if self.seen > self.total:
            raise ValueError(f"got {self.seen} values per unit, more than the {self.total} "
                             "announced")
        both = torch.cat([self.top, values.detach().float().cpu()], dim=1)
        self.top = both.topk(min(self.m, both.shape[1]), dim=1).values

    def threshold(self) -> np.ndarray:
        """(K,) float64 thresholds T_k."""
        if self.seen != self.total:
            raise ValueError(f"got {self.seen} values per unit, {self.total} announced")
        top = self.top.double().numpy()  # sorted descending
        i = math.floor(self.pos)
        frac = self.pos - i
        lo = top[:, self.total - 1 - i]  # ascending rank i
        if frac == 0.0:
            return lo
        hi = top[:, self.total - 2 - i]  # ascending rank i + 1
        return lo + (hi - lo) * frac


@dataclass(frozen=True)
class UnitName:
    """One unit's result: ``concept`` (None when unnamed: best IoU <= ``min_iou``), its
    ``category``, ``iou`` (the best IoU, named or not), ``best`` (the best concept, even when
    below the threshold), ``threshold`` T_k, ``top`` (up to 3 (concept, category, IoU))."""

    unit: int
    concept: str | None
    category: str | None
    iou: float
    best: str
    best_category: str
    threshold: float
    top: tuple[tuple[str, str, float], ...] = ()

    @property
    def label(self) -> str:
        """"striped (texture)" or "unnamed"."""
        return f"{self.concept} ({self.category})" if self.concept else "unnamed"


@dataclass(frozen=True)
class Dissection:
    """The names of one layer's units. ``iou`` is (K, C) with ``concepts`` (empty when read
    back from a file that did not keep it); ``top_images`` unit -> [(image index, max
    activation)] of its most activating images (empty when read back)."""

    model: str
    layer: str
    data: str
    quantile: float
    min_iou: float
    images: int
    units: tuple[UnitName, ...]
    concepts: tuple[Concept, ...] = ()
    iou: np.ndarray | None = None
    top_images: dict[int, list[tuple[int, float]]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.units)

    def named(self) -> list[UnitName]:
        return [u for u in self.units if u.concept is not None]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able record (without the full IoU matrix)."""
        return {
            "format": "camlens-dissection/1",
            "camlens_version": camlens.__version__,
            "model": self.model, "layer": self.layer, "data": self.data,
            "quantile": self.quantile, "min_iou": self.min_iou, "images": self.images,
            "named_units": len(self.named()), "units_total": len(self.units),
            "units": [{"unit": u.unit, "concept": u.concept, "category": u.category,
                       "iou": round(u.iou, 5), "best": u.best, "best_category": u.best_category,
                       "threshold": float(u.threshold),
                       "top": [[c, cat, round(v, 5)] for c, cat, v in u.top]}
                      for u in self.units],
        }

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n",
                     encoding="utf-8")
        return p

    @staticmethod
    def from_dict(doc: dict[str, Any]) -> Dissection:
        """The inverse of :meth:`to_dict` (ValueError, KeyError or TypeError when it is not
        one)."""
        if doc.get("format") != "camlens-dissection/1":
            raise ValueError("its \"format\" is not camlens-dissection/1")
        units = tuple(UnitName(int(u["unit"]), u["concept"], u["category"], float(u["iou"]),
                               u["best"], u["best_category"], float(u["threshold"]),
                               tuple((c, cat, float(v)) for c, cat, v in u["top"]))
                      for u in doc["units"])
        if [u.unit for u in units] != list(range(len(units))):
            raise ValueError("its units are not 0..K-1 in order")
        return Dissection(doc["model"], doc["layer"], doc["data"], float(doc["quantile"]),
                          float(doc["min_iou"]), int(doc["images"]), units)

    @staticmethod
    def load(path: str | Path) -> Dissection:
        """Read a file written by :meth:`save` (:class:`DataError` when it is not one)."""
        p = Path(path).expanduser()
        try:
            return Dissection.from_dict(json.loads(p.read_text(encoding="utf-8")))
        except OSError as exc:
            raise DataError(f"--dissection {p}: cannot read it ({exc.strerror or exc})") from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"--dissection {p}: not a dissection written by `camlens "
                            f"dissect` ({exc})") from exc


def _batches(data: ConceptData, batch_size: int) -> Iterator[tuple[list[int], list[Sample]]]:
    idx: list[int] = []
    batch: list[Sample] = []
    for i in range(len(data)):
        s = data[i]
        if batch and (len(batch) == batch_size or s.image.shape != batch[0].image.shape):
            yield idx, batch
            idx, batch = [], []
        idx.append(i)
        batch.append(s)
    if batch:
        yield idx, batch


def activations(model: nn.Module, layer: str, images: torch.Tensor) -> torch.Tensor:
    """The layer's output (B, K, h, w) for ``images``: no autograd, hooks only on a private
    view (:mod:`camlens.view`), so the model, shared with other threads, stays untouched."""
    view = private_view(model)
    with torch.no_grad(), capture(view.layers(resolve_layers(model, layer))) as cap:
        forward(view.root, [images], grad=False)
    act = cap.require_all()[0].detach()
    if act.dim() != 4:
        raise LayerError(f"layer {layer!r} outputs shape {tuple(act.shape)}; dissection needs "
                         "(B, channels, h, w) maps: choose a convolutional layer")
    return act


def dissect(model: nn.Module, data: ConceptData, layer: str, *, quantile: float = QUANTILE,
            min_iou: float = MIN_IOU, batch_size: int = 16, top_images: int = 4,
            model_name: str = "") -> Dissection:
    """Name every unit of ``layer`` with the concepts of ``data`` (module docstring). The model
    runs in the mode it is in (call ``model.eval()`` first) and is left untouched."""
    if not 0.0 < quantile < 1.0:
        raise DataError(f"quantile must be in (0, 1), got {quantile}")
    if not 0.0 <= min_iou <= 1.0:
        raise DataError(f"min_iou must be in [0, 1], got {min_iou}")
    n = len(data)
    if n < 1:
        raise DataError("the concept data holds no image")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    # pass 1: thresholds (and each unit's most activating images)
    tq: TopQuantile | None = None
    hw: tuple[int, int] | None = None
    best = torch.empty(0)
    best_idx = torch.empty(0, dtype=torch.long)
    for idx, batch in _batches(data, batch_size):
        act = activations(model, layer, torch.stack([s.image for s in batch]).to(device)).cpu()
        b, k, h, w = act.shape
        if tq is None:
            tq, hw = TopQuantile(k, n * h * w, quantile), (h, w)
            best, best_idx = torch.full((k, 0), -math.inf), torch.empty(k, 0, dtype=torch.long)
        elif hw is not None and (h, w) != hw:
            raise DataError(f"layer {layer!r} gave {h}x{w} maps for image {idx[0]} but "
                            f"{hw[0]}x{hw[1]} before; dissection needs images of one size")
        tq.update(act.permute(1, 0, 2, 3).reshape(k, -1))
        peak = act.amax(dim=(2, 3)).T  # (K, B)
        vals = torch.cat([best, peak], 1)
        ids = torch.cat([best_idx, torch.tensor(idx).expand(k, -1)], 1)
        keep = vals.topk(min(top_images, vals.shape[1]), dim=1).indices
        best, best_idx = vals.gather(1, keep), ids.gather(1, keep)
    assert tq is not None
    thresholds = tq.threshold()
    k = len(thresholds)
    # pass 2: IoU counts
    concepts = tuple(data.concepts)
    cat_of = sorted({c.category for c in concepts})
    cat_index = np.array([cat_of.index(c.category) for c in concepts], dtype=np.int64)
    inter = torch.zeros(k, len(concepts) + 1, dtype=torch.float64)
    label_px = torch.zeros(len(concepts) + 1, dtype=torch.float64)
    unit_px = torch.zeros(k, len(cat_of), dtype=torch.float64)  # |M_k| on annotated images
    t = torch.from_numpy(thresholds).float()[:, None, None]
    for _, batch in _batches(data, batch_size):
        act = activations(model, layer, torch.stack([s.image for s in batch]).to(device)).cpu()
        for a, s in zip(act, batch):
            size = next(iter(s.labels.values())).shape[-2:] if s.labels else None
            if size is None:
                continue
            up = F.interpolate(a[None].float(), size=tuple(size), mode="bilinear",
                               align_corners=False)[0]
            mask = (up > t).reshape(k, -1)  # (K, P); sparse: about q of the positions
            unit, pos = mask.nonzero(as_tuple=True)
            count = torch.bincount(unit, minlength=k).double()
            width = len(concepts) + 1
            for cat, layers in s.labels.items():
                unit_px[:, cat_of.index(cat)] += count
                for lab in layers:
                    ids = torch.from_numpy(np.ascontiguousarray(lab, dtype=np.int64).ravel())
                    inter += torch.bincount(unit * width + ids[pos],
                                            minlength=k * width).reshape(k, width)
                    label_px += torch.bincount(ids, minlength=width)
    inter_np, label_np = inter.numpy()[:, 1:], label_px.numpy()[1:]
    union = unit_px.numpy()[:, cat_index] + label_np[None] - inter_np
    iou = np.divide(inter_np, union, out=np.zeros_like(inter_np), where=union > 0)
    units = []
    for u in range(k):
        order = np.argsort(-iou[u], kind="stable")[:3]
        j = int(order[0])
        named = bool(iou[u, j] > min_iou)
        units.append(UnitName(u, concepts[j].name if named else None,
                              concepts[j].category if named else None, float(iou[u, j]),
                              concepts[j].name, concepts[j].category, float(thresholds[u]),
                              tuple((concepts[i].name, concepts[i].category, float(iou[u, i]))
                                    for i in order)))
    tops = {u: list(zip(best_idx[u].tolist(), best[u].tolist())) for u in range(k)}
    return Dissection(model_name or type(model).__name__, layer, data.name, quantile, min_iou,
                      n, tuple(units), concepts, iou, tops)


def unit_mask(act: torch.Tensor, threshold: float, size: tuple[int, int]) -> np.ndarray:
    """One unit's mask M_k: its (h, w) map upsampled (bilinear) to ``size`` = (H, W), > T_k."""
    up = F.interpolate(act[None, None].float(), size=size, mode="bilinear", align_corners=False)
    return (up[0, 0] > threshold).numpy()
