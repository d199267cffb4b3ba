"""Maps for the evaluations: one method, at one layer, with its options, on one model, with a
cache shared between evaluations.

The map compared with ground truth (the "localisation map" of a method):

- layer methods (Grad-CAM and its ablations, CAM): the raw map (``Explanation.raw``, e.g. Eq. 2
  with its ReLU) bilinearly upsampled to the input, not min-max shifted, so the 15% threshold
  is 15% of the map's own maximum as in Sec. 4.1;
- pixel-space methods (``gradient``, Guided Backprop, Guided Grad-CAM, Deconvnet): the maximum
  over the colour channels of the absolute value of the raw input-space map. For
  ``gradient`` this is the saliency map of Simonyan et al., the "Backprop" row of the paper's
  Table 1; the guided variants get the same collapse;
- occlusion: the mean score drop itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import camlens
from camlens.evaluate.model import n_classes, predict
from camlens.maps import upsample
from camlens.methods import METHODS
from camlens.models.registry import ModelRecord
from camlens.targets import logits_of

ClassMaps = dict[int, np.ndarray]
"""``{class index: localisation map (H, W) float32}`` for one image."""


def localization_maps(ex: Any, size: tuple[int, int]) -> torch.Tensor:
    """The maps the evaluations threshold and point with, (B, K, H, W) float32 (see the
    module docstring)."""
    raw = ex.raw.detach().float()
    if raw.dim() == 5:  # pixel space (B, K, 3, H, W)
        return raw.abs().amax(dim=2)
    return upsample(raw, size)


def check_method(method: str, options: Mapping[str, Any] | None = None) -> None:
    """Refuse an unknown method or option before any forward pass."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    unknown = sorted(set(options or ()) - set(METHODS[method].options))
    if unknown:
        raise ValueError(f"method {method!r} takes no option(s) {unknown}; its options are "
                         f"{list(METHODS[method].options) or 'none'}")


def layer_name(layer: Any) -> Any:
    """A layer as the record shows it: its name, a list of names, or the module's type."""
    if layer is None or isinstance(layer, str):
        return layer
    if isinstance(layer, (list, tuple)):
        return [layer_name(x) for x in layer]
    return type(layer).__name__


def full_options(method: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with the method's defaults filled in, so ``{}`` and ``{"relu": True}`` name
    the same maps."""
    return METHODS[method].settings(options)


def plain(value: Any) -> Any:
    """``value`` as JSON-able data: tuples as lists, dict keys sorted, other objects by str."""
    if isinstance(value, (list, tuple)):
        return [plain(x) for x in value]
    if isinstance(value, Mapping):
        return {str(k): plain(x) for k, x in sorted(value.items())}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


@dataclass(frozen=True)
class MapSpec:
    """What makes two maps of one image and class the same: the method, its layer and its
    options (defaults filled in), as canonical JSON."""

    method: str
    layer: str
    options: str

    @classmethod
    def of(cls, method: str, layer: Any, options: Mapping[str, Any]) -> MapSpec:
        return cls(method, json.dumps(plain(layer_name(layer))),
                   json.dumps(plain(full_options(method, options)), sort_keys=True))


class MapCache:
    """Localisation maps already computed for ONE model, keyed by (:class:`MapSpec`, image id,
    class): pass the same cache to several evaluations of that model to compute each map once
    (e.g. occlusion for localisation and again as the faithfulness reference). Option variants
    (``relu=False``, another window) never share maps. ``store``: a dict to keep them in."""

    def __init__(self, store: dict[Any, np.ndarray] | None = None) -> None:
        self._maps: dict[Any, np.ndarray] = {} if store is None else store

    def get(self, spec: MapSpec, image_id: str, cls: int) -> np.ndarray | None:
        return self._maps.get((spec, image_id, int(cls)))

    def put(self, spec: MapSpec, image_id: str, cls: int, heatmap: np.ndarray) -> None:
        self._maps[(spec, image_id, int(cls))] = heatmap

    def __len__(self) -> int:
        return len(self._maps)


def as_cache(cache: MapCache | dict | None) -> MapCache | None:
    """A :class:`MapCache`; a plain dict (the older ``cache={}``) becomes its storage."""
    if cache is None or isinstance(cache, MapCache):
        return cache
    if isinstance(cache, dict):
        return MapCache(cache)
    raise TypeError(f"cache must be a camlens.evaluate.MapCache, got {type(cache).__name__}")


class Explainer:
    """Localisation maps of one method (layer, options) on one model, through a cache.

    Layer-resolution and perturbation maps cost little per extra class next to the forward pass
    (a partial backward to a layer, or nothing), so those methods explain the top-k classes in
    the call that predicts them; a pixel-space map costs a full backward per class, so those
    explain only the classes that are needed.
    """

    def __init__(self, res: ModelRecord, method: str, layer: Any,
                 options: Mapping[str, Any], cache: MapCache | None = None) -> None:
        check_method(method, options)
        spec = METHODS[method]
        self.res, self.method, self.options = res, method, dict(options)
        self.layer = (layer if layer is not None else res.default_layer) if spec.needs_layer \
            else None
        self.cheap_per_class = not spec.pixel_space
        self.spec = MapSpec.of(method, self.layer, self.options)
        self.cache = cache

    def record(self) -> dict[str, Any]:
        """What determines this explainer's maps, for a run's configuration."""
        return {"method": self.method, "layer": plain(layer_name(self.layer)),
                "options": plain(full_options(self.method, self.options))}

    def explain(self, x: torch.Tensor, targets: torch.Tensor | None,
                top_k: int | None = None) -> tuple[torch.Tensor, Any]:
        """(maps (B, K, H, W) at input resolution, explanation) for the class indices
        ``targets`` (B, K), or the ``top_k`` best classes."""
        ex = camlens.explain(self.res.model, x, method=self.method, layer=self.layer,
                             target=targets, top_k=top_k if targets is None else None,
                             **self.options)
        return localization_maps(ex, (int(x.shape[-2]), int(x.shape[-1]))), ex

    def predict(self, x: torch.Tensor, ids: Sequence[str],
                k: int) -> tuple[torch.Tensor, list[ClassMaps]]:
        """(logits (B, N) on the CPU, per image the maps already made): methods cheap per
        class explain the top-k classes in the forward pass that predicts them."""
        if not self.cheap_per_class:
            return predict(self.res.model, x), [{} for _ in ids]
        n = n_classes(self.res.model, x)
        maps, ex = self.explain(x, None, min(int(k), n))
        logits = logits_of(ex.output).detach().float().cpu()
        arr = maps.detach().cpu().numpy().astype(np.float32, copy=False)
        out = []
        for b, classes in enumerate(ex.targets.tolist()):
            per = {c: np.ascontiguousarray(arr[b, j]) for j, c in enumerate(classes)}
            if self.cache is not None:
                for c, m in per.items():
                    self.cache.put(self.spec, ids[b], c, m)
            out.append(per)
        return logits, out

    def maps(self, x: torch.Tensor, ids: Sequence[str], classes: Sequence[Sequence[int]],
             known: Sequence[ClassMaps] | None = None) -> list[ClassMaps]:
        """For image b, ``{class: map}`` for each class in ``classes[b]``. Images needing the
        same number of maps are explained together (no map is made for padding); maps in
        ``known[b]`` or in the cache are not made again."""
        out: list[ClassMaps] = []
        missing: list[list[int]] = []
        for b, cls in enumerate(classes):
            have = {c: m for c, m in (known[b] if known else {}).items() if c in cls}
            need: list[int] = []
            for c in dict.fromkeys(int(c) for c in cls):
                hit = None if c in have or self.cache is None else \
                    self.cache.get(self.spec, ids[b], c)
                if hit is not None:
                    have[c] = hit
                elif c not in have:
                    need.append(c)
            out.append(have)
            missing.append(need)
        for k in sorted({len(m) for m in missing if m}):
            rows = [b for b, m in enumerate(missing) if len(m) == k]
            targets = torch.tensor([missing[b] for b in rows], dtype=torch.long)
            maps, _ = self.explain(x[rows], targets)
            arr = maps.detach().cpu().numpy().astype(np.float32, copy=False)
            for j, b in enumerate(rows):
                for i, c in enumerate(missing[b]):
                    m = np.ascontiguousarray(arr[j, i])
                    out[b][c] = m
                    if self.cache is not None:
                        self.cache.put(self.spec, ids[b], c, m)
        return out

    def label(self) -> str:
        """``method (key=value, ..., layer=NAME)``: the options as given, and the layer when
        the method has one."""
        parts = [f"{k}={v}" for k, v in sorted(self.options.items())]
        if self.layer is not None:
            parts.append(f"layer={layer_name(self.layer)}")
        return self.method + (f" ({', '.join(parts)})" if parts else "")
