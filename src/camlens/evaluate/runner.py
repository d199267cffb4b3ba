"""Dataset-scale evaluation: weakly-supervised localisation (Sec. 4.1, Table 1), the pointing
game with the paper's top-5 + rejection variant (Sec. 4.3) and faithfulness as rank correlation
with occlusion (Sec. 5.3), over whole datasets, with per-image CSV rows and resume.

>>> from camlens.evaluate.runner import evaluate_localization
>>> summary = evaluate_localization("synthetic:gapnet", "synthetic:seed=12345,n=100",
...                                 method="gradcam", csv_path="loc.csv")
>>> print(summary.markdown())                    # the layout of the paper's Table 1

Models: anything whose output is (B, classes) scores: an ``nn.Module``, a
:class:`camlens.models.ModelBundle` or :class:`camlens.loading.LoadedModel` (their ``model``,
``preprocess`` and ``default_layer`` are used), or a spec string (``synthetic:gapnet``,
``synthetic:vggstyle``; anything else goes to :func:`camlens.models.load_model`).

Images: a :class:`~camlens.evaluate.datasets.Sample` with an ``image_path`` is read with
:func:`camlens.io.load_image` (PIL) and passed through the model's ``preprocess``; an
:class:`ArraySample` carries its pixels in memory (the synthetic world). A bare ``nn.Module``
gets :func:`to_unit_tensor` (RGB in [0, 1], the synthetic nets' input). When ``preprocess``
resizes, boxes and pointing maps are brought back to the annotation's resolution (the image's
original size); ``preprocess`` must not crop.

Maps compared with ground truth (the "localisation map" of a method):

- layer methods (Grad-CAM and its ablations, CAM): the raw map (``Explanation.raw``, e.g. Eq. 2
  with its ReLU) bilinearly upsampled to the input, not min-max shifted, so the 15% threshold
  is 15% of the map's own maximum as in Sec. 4.1;
- pixel-space methods (Guided Backprop, Guided Grad-CAM, Deconvnet, and ``"gradient"``): the
  maximum over the colour channels of the absolute value of the raw input-space map. This is
  the saliency map of Simonyan et al., the "Backprop" row of the paper's Table 1, and we apply
  the same collapse to the guided variants;
- occlusion: the mean score drop itself.

``method="gradient"`` is Simonyan et al.'s vanilla input gradient (the paper's "Backprop"),
computed here with plain autograd: it is not one of :data:`camlens.METHODS`.

CSV files: one row per image (per (image, class) trial for the pointing game), appended and
flushed as each image finishes. Every row carries a ``config`` column (task, method, layer,
options, thresholds); with ``resume=True`` a rerun reads the rows back, checks the
configuration, skips the images already done and recomputes the summary from all rows, so an
interrupted and resumed run gives the same summary as an uninterrupted one. A row cut short by
a crash is dropped and its image redone.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, TextIO, Union

import numpy as np
import torch
from PIL import Image
from torch import nn

import camlens
from camlens.evaluate.datasets import (
    AnnotatedObject,
    Sample,
    dataset_formats,
    load_dataset,
    register_format,
)
from camlens.evaluate.faithfulness import rank_correlation, resize_map
from camlens.evaluate.localization import (
    Box,
    ImageLocalization,
    RELATIVE_TO,
    bbox_from_map,
    localization_error,
    localization_table,
)
from camlens.evaluate.pointing import (
    PointingTrial,
    choose_rejection_threshold,
    pointing_game,
    pointing_hit,
)
from camlens.methods import METHODS
from camlens.targets import logits_of

__all__ = [
    "ArraySample",
    "FaithfulnessSummary",
    "LocalizationSummary",
    "MapCache",
    "PointingSummary",
    "Progress",
    "ResolvedModel",
    "add_evaluate_arguments",
    "evaluate",
    "evaluate_faithfulness",
    "evaluate_localization",
    "evaluate_pointing",
    "faithfulness_markdown",
    "localization_markdown",
    "localization_maps",
    "load_synthetic_samples",
    "pointing_markdown",
    "resolve_model",
    "run_cli",
    "scale_box",
    "scenes_to_samples",
    "to_unit_tensor",
]

GRADIENT = "gradient"
"""The runner's name for Simonyan et al.'s vanilla input gradient (the paper's "Backprop")."""

TASKS = ("localization", "pointing", "faithfulness")

SamplesLike = Union[str, Sequence[Sample], Sequence[Any]]


# --------------------------------------------------------------------------------------------
# samples held in memory, and the "synthetic" dataset format


@dataclass(frozen=True)
class ArraySample(Sample):
    """A :class:`Sample` whose image is held in memory: ``pixels`` is (H, W, 3) uint8 RGB."""

    pixels: Optional[np.ndarray] = field(default=None, compare=False, repr=False)


def scenes_to_samples(scenes: Sequence[Any], prefix: str = "") -> list[ArraySample]:
    """Synthetic :class:`camlens.synthetic.Scene` objects as :class:`ArraySample` records.

    Labels are the class indices, boxes and masks the scene's exact ground truth, image ids
    ``f"{prefix}{i:05d}"``.
    """
    out = []
    for i, scene in enumerate(scenes):
        h, w = scene.size
        objects = tuple(
            AnnotatedObject(label=int(o.label), box=tuple(int(c) for c in o.box), mask=o.mask)
            for o in scene.objects
        )
        out.append(ArraySample(image_path=None, width=w, height=h, objects=objects,
                               image_id=f"{prefix}{i:05d}", pixels=scene.image))
    return out


def load_synthetic_samples(rest: str) -> list[Sample]:
    """Loader of ``load_dataset("synthetic:...")``.

    - ``synthetic:FOLDER``: a folder written by :func:`camlens.synthetic.save_dataset`
      (``annotations.json`` + ``images/``): samples read from the PNGs, with exact masks;
    - ``synthetic:seed=S,n=N`` (optionally ``,size=64``): scenes generated on the fly with
      ``make_dataset(N, seed=S)``, held in memory, ids ``S/00000``...
    """
    from camlens.synthetic import make_dataset
    from camlens.synthetic.world import ANNOTATIONS, rle_decode

    text = rest.strip()
    root = Path(text)
    if root.is_dir():
        with open(root / ANNOTATIONS, encoding="utf-8") as fh:
            data = json.load(fh)
        samples: list[Sample] = []
        for rec in data["images"]:
            h, w = int(rec["height"]), int(rec["width"])
            objects = tuple(
                AnnotatedObject(label=int(o["label"]), box=tuple(int(c) for c in o["box"]),
                                mask=rle_decode(o["mask"]))
                for o in rec["objects"]
            )
            samples.append(Sample(image_path=root / rec["file"], width=w, height=h,
                                  objects=objects, image_id=rec["file"]))
        return samples
    if "=" not in text:
        raise ValueError(
            f"synthetic:{rest}: expected a folder written by camlens.synthetic.save_dataset or "
            "seed=S,n=N[,size=PIXELS]"
        )
    params: dict[str, int] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ("seed", "n", "size"):
            raise ValueError(f"synthetic:{rest}: unknown parameter {part!r} (seed, n, size)")
        try:
            params[key] = int(value)
        except ValueError:
            raise ValueError(f"synthetic:{rest}: {key} must be an integer, got {value!r}") from None
    if "seed" not in params or "n" not in params:
        raise ValueError(f"synthetic:{rest}: give both seed= and n=")
    kwargs = {"size": params["size"]} if "size" in params else {}
    scenes = make_dataset(params["n"], params["seed"], **kwargs)
    return list(scenes_to_samples(scenes, prefix=f"{params['seed']}/"))


if "synthetic" not in dataset_formats():
    register_format("synthetic", load_synthetic_samples)


# --------------------------------------------------------------------------------------------
# models


def to_unit_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image -> float32 (3, H, W) RGB in [0, 1]: the synthetic nets' input, no resizing."""
    array = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


@dataclass(frozen=True)
class ResolvedModel:
    """A model with what the runner needs: eval-mode module, preprocessing, default layer."""

    model: nn.Module
    preprocess: Callable[[Image.Image], torch.Tensor]
    default_layer: Optional[str]
    labels: Optional[list[str]]
    name: str


def _synthetic_model(name: str) -> ResolvedModel:
    from camlens.synthetic import DEFAULT_LAYERS, load_pretrained

    return ResolvedModel(load_pretrained(name), to_unit_tensor, DEFAULT_LAYERS[name], None,
                         f"synthetic:{name}")


def resolve_model(
    model: Any, preprocess: Optional[Callable[[Image.Image], torch.Tensor]] = None,
    default_layer: Optional[str] = None, device: Union[str, torch.device] = "cpu",
) -> ResolvedModel:
    """Normalise what the caller gave as a model (see the module docstring); ``device`` is
    where a model given by its spec string is loaded."""
    if isinstance(model, ResolvedModel):
        res = model
    elif isinstance(model, str):
        if model.startswith("synthetic:"):
            res = _synthetic_model(model.split(":", 1)[1])
            res = ResolvedModel(res.model.to(device), res.preprocess, res.default_layer,
                                res.labels, res.name)
        else:
            from camlens.models import load_model

            loaded = load_model(model, device=device)
            res = ResolvedModel(loaded.model, loaded.preprocess, loaded.default_layer,
                                list(loaded.labels), loaded.name)
    elif isinstance(model, nn.Module):
        layer = None
        try:
            from camlens.synthetic import DEFAULT_LAYERS, NETS

            for name, cls in NETS.items():
                if type(model) is cls:
                    layer = DEFAULT_LAYERS[name]
        except ImportError:  # pragma: no cover - the synthetic package ships with camlens
            pass
        res = ResolvedModel(model, to_unit_tensor, layer, None, type(model).__name__)
    elif isinstance(getattr(model, "model", None), nn.Module):
        labels = getattr(model, "labels", None)
        res = ResolvedModel(model.model, getattr(model, "preprocess", None) or to_unit_tensor,
                            getattr(model, "default_layer", None),
                            list(labels) if labels is not None else None,
                            str(getattr(model, "name", type(model.model).__name__)))
    else:
        raise TypeError(
            "model must be an nn.Module, a ModelBundle / LoadedModel, or a spec string such as "
            f"'synthetic:gapnet'; got {type(model).__name__}"
        )
    if preprocess is not None or default_layer is not None:
        res = ResolvedModel(res.model, preprocess or res.preprocess,
                            default_layer or res.default_layer, res.labels, res.name)
    return res  # a model in training mode is left so: camlens.explain warns about it


def _samples(data: SamplesLike) -> list[Sample]:
    if isinstance(data, str):
        return load_dataset(data)
    items = list(data)
    if items and not isinstance(items[0], Sample) and hasattr(items[0], "objects") \
            and hasattr(items[0], "image"):
        return list(scenes_to_samples(items))  # synthetic Scenes
    for s in items:
        if not isinstance(s, Sample):
            raise TypeError("samples must be Sample records or synthetic Scenes, got "
                            f"{type(s).__name__}")
    return items


def _sample_ids(samples: Sequence[Sample]) -> list[str]:
    ids = []
    for i, s in enumerate(samples):
        if s.image_id is not None:
            ids.append(str(s.image_id))
        elif s.image_path is not None:
            ids.append(str(s.image_path))
        else:
            ids.append(f"#{i}")
    seen: set[str] = set()
    for k in ids:
        if k in seen:
            raise ValueError(f"image id {k!r} occurs twice: the CSV rows are keyed by image id")
        seen.add(k)
    return ids


def _check_classes(items: Sequence[Sample], idx: Sequence[int], to_index: Callable[[Any], int],
                   n_classes: int) -> None:
    for i in idx:
        for o in items[i].objects:
            c = to_index(o.label)
            if not 0 <= c < n_classes:
                raise ValueError(
                    f"image {items[i].image_id!r}: ground-truth label {o.label!r} is class {c}, "
                    f"but the model has {n_classes} classes; wrong model, or pass label_map="
                )


def _label_index(labels: Optional[list[str]], label_map: Any) -> Callable[[Any], int]:
    """gt label -> class index: ``label_map`` (dict or callable), else ints as they are, else
    the position of the name in the model's labels."""
    if callable(label_map):
        return lambda lab: int(label_map(lab))
    if isinstance(label_map, Mapping):
        return lambda lab: int(label_map[lab])
    if label_map is not None:
        raise TypeError("label_map must be a dict or a callable")
    positions = {name: i for i, name in enumerate(labels)} if labels else {}

    def index(lab: Any) -> int:
        if isinstance(lab, (int, np.integer)):
            return int(lab)
        if lab in positions:
            return positions[lab]
        raise ValueError(
            f"ground-truth label {lab!r} is not a class index nor one of the model's labels; "
            "pass label_map={name: index} (e.g. camlens.evaluate.wnid_to_index(synsets))"
        )

    return index


def _load_input(sample: Sample, preprocess: Callable[[Image.Image], torch.Tensor]) -> torch.Tensor:
    pixels = getattr(sample, "pixels", None)
    if pixels is not None:
        img = Image.fromarray(np.ascontiguousarray(pixels).astype(np.uint8), mode="RGB")
    elif sample.image_path is not None:
        from camlens.io import load_image

        img = load_image(sample.image_path)
    else:
        raise ValueError(f"sample {sample.image_id!r} has neither pixels nor an image path")
    x = preprocess(img)
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError("preprocess must return a (3, H, W) tensor")
    return x


# --------------------------------------------------------------------------------------------
# maps


def _explain_targets(
    model: nn.Module, x: torch.Tensor, method: str, layer: Any, options: Mapping[str, Any],
    targets: Optional[torch.Tensor], top_k: Optional[int] = None,
) -> tuple[torch.Tensor, Any]:
    """(localisation maps (B, K, H, W) float32 at input resolution, explanation or None), for
    the class indices ``targets`` (B, K), or the ``top_k`` best classes."""
    if method == GRADIENT:
        if options:
            raise ValueError(f"method {GRADIENT!r} takes no options, got {sorted(options)}")
        if targets is None:
            targets = _logits(model, x).topk(int(top_k or 1), dim=1).indices
        return _gradient_maps(model, x, targets), None
    spec = METHODS.get(method)
    if spec is None:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS) + [GRADIENT]}")
    ex = camlens.explain(model, x, method=method, layer=layer if spec.needs_layer else None,
                         target=targets, top_k=top_k if targets is None else None,
                         **dict(options))
    return localization_maps(ex, tuple(x.shape[-2:])), ex


def localization_maps(ex: Any, size: tuple[int, int]) -> torch.Tensor:
    """The maps the evaluations threshold and point with, (B, K, H, W) float32 (see the
    module docstring): upsampled raw layer maps, channel max of |raw| for pixel-space maps,
    the raw score drops for occlusion."""
    raw = ex.raw.detach().float()
    if raw.dim() == 5:  # pixel space (B, K, 3, H, W)
        return raw.abs().amax(dim=2)
    if tuple(raw.shape[-2:]) != tuple(size):
        raw = torch.nn.functional.interpolate(raw, size=tuple(size), mode="bilinear",
                                              align_corners=False)
    return raw


def _gradient_maps(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Simonyan et al.: max over channels of |dy^c/dx|, one backward per target column."""
    leaf = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = logits_of(model(leaf))
        scores = logits.gather(1, targets.to(logits.device))
        k = scores.shape[1]
        out = []
        for j in range(k):
            (g,) = torch.autograd.grad(scores[:, j].sum(), leaf, retain_graph=j < k - 1)
            out.append(g.detach().abs().amax(dim=1))
    return torch.stack(out, dim=1).float()


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
    nx0 = min(max(int(math.floor(x0 * sx + 1e-9)), 0), ww - 1)
    ny0 = min(max(int(math.floor(y0 * sy + 1e-9)), 0), hh - 1)
    nx1 = min(max(int(math.ceil((x1 + 1) * sx - 1e-9)) - 1, nx0), ww - 1)
    ny1 = min(max(int(math.ceil((y1 + 1) * sy - 1e-9)) - 1, ny0), hh - 1)
    return (nx0, ny0, nx1, ny1)


MapCache = dict
"""``{(method, config, image_id, class): map}``: maps already computed for one model. Pass the
same dict as ``cache=`` to several evaluations of the same model to compute each map once
(e.g. occlusion for localisation and again as the faithfulness reference)."""


#: Methods whose extra classes cost little next to the forward pass (a partial backward to a
#: layer, or nothing): they explain all top-k classes in the same call that predicts them.
CHEAP_PER_CLASS = frozenset({"gradcam", "cam", "occlusion"})


def _cache_key(method: str, layer: Any, options: Mapping[str, Any]) -> str:
    return _config(method=method, layer=_layer_name(layer), options=options)


def _predict(
    model: nn.Module, x: torch.Tensor, image_ids: Sequence[str], method: str, layer: Any,
    options: Mapping[str, Any], k: int, cache: Optional[MapCache] = None,
) -> tuple[torch.Tensor, list[dict[int, np.ndarray]]]:
    """(logits (B, N) on the CPU, per image ``{class: map}`` already known). Cheap methods
    explain the top-k classes in the forward pass that predicts them; the others only predict
    (their maps are computed for the classes that are needed, by :func:`_class_maps`)."""
    if method not in CHEAP_PER_CLASS:
        return _logits(model, x), [{} for _ in image_ids]
    n = _logits_shape(model, x)
    maps, ex = _explain_targets(model, x, method, layer, options, None, min(int(k), n))
    logits = logits_of(ex.output).detach().float().cpu()
    maps = maps.detach().cpu().numpy().astype(np.float32, copy=False)
    key = _cache_key(method, layer, options)
    out = []
    for b, t in enumerate(ex.targets.tolist()):
        per = {c: np.ascontiguousarray(maps[b, j]) for j, c in enumerate(t)}
        if cache is not None:
            for c, m in per.items():
                cache[(key, image_ids[b], c)] = m
        out.append(per)
    return logits, out


_N_CLASSES: "weakref.WeakKeyDictionary[nn.Module, int]" = weakref.WeakKeyDictionary()


def _logits_shape(model: nn.Module, x: torch.Tensor) -> int:
    """Number of classes of ``model`` (one forward of one image, remembered per model)."""
    n = _N_CLASSES.get(model)
    if n is None:
        n = int(_logits(model, x[:1]).shape[1])
        _N_CLASSES[model] = n
    return n


def _class_maps(
    model: nn.Module, x: torch.Tensor, image_ids: Sequence[str], classes: Sequence[Sequence[int]],
    method: str, layer: Any, options: Mapping[str, Any], cache: Optional[MapCache] = None,
    known: Optional[Sequence[Mapping[int, np.ndarray]]] = None,
) -> list[dict[int, np.ndarray]]:
    """For image b of the batch, ``{class: localisation map (H, W) float32}`` for each class in
    ``classes[b]``. Images needing the same number of maps are explained together, so no map
    is computed for padding; maps in ``known[b]`` or in ``cache`` are not recomputed."""
    key = _cache_key(method, layer, options)
    out: list[dict[int, np.ndarray]] = []
    missing: list[list[int]] = []
    for b, cls in enumerate(classes):
        have: dict[int, np.ndarray] = {c: m for c, m in (known[b] if known else {}).items()
                                       if c in cls}
        need: list[int] = []
        for c in dict.fromkeys(int(c) for c in cls):
            if c in have:
                continue
            hit = cache.get((key, image_ids[b], c)) if cache is not None else None
            if hit is not None:
                have[c] = hit
            else:
                need.append(c)
        out.append(have)
        missing.append(need)
    for k in sorted({len(m) for m in missing if m}):
        rows = [b for b, m in enumerate(missing) if len(m) == k]
        targets = torch.tensor([missing[b] for b in rows], dtype=torch.long)
        maps, _ = _explain_targets(model, x[rows], method, layer, options, targets)
        maps = maps.detach().cpu().numpy().astype(np.float32, copy=False)
        for j, b in enumerate(rows):
            for i, c in enumerate(missing[b]):
                m = np.ascontiguousarray(maps[j, i])
                out[b][c] = m
                if cache is not None:
                    cache[(key, image_ids[b], c)] = m
    return out


# --------------------------------------------------------------------------------------------
# progress and CSV


class Progress:
    """A one-line progress bar on stderr (redrawn in place on a terminal, otherwise a line at
    most every 10 seconds); ``enabled=False`` draws nothing."""

    def __init__(self, total: int, label: str = "", enabled: bool = True,
                 stream: Optional[TextIO] = None) -> None:
        self.total = max(int(total), 0)
        self.label = label
        self.enabled = enabled and self.total > 0
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = time.perf_counter()
        try:
            self.tty = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            self.tty = False
        self._last = -math.inf

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        every = 0.2 if self.tty else 10.0
        if self.enabled and self.done > 0 and (self.done >= self.total
                                               or now - self._last >= every):
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        width = 28
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * round(width * frac) + "-" * (width - round(width * frac))
        elapsed = now - self.start
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        text = f"{self.label} [{bar}] {self.done}/{self.total} {elapsed:.0f}s eta {eta:.0f}s"
        self.stream.write(("\r\x1b[K" + text) if self.tty else (text + "\n"))
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


class _CsvLog:
    """Rows grouped by image id, appended and flushed per image; read back on resume."""

    def __init__(self, path: Optional[Union[str, os.PathLike]], fields: Sequence[str],
                 config: str, resume: bool) -> None:
        self.fields = list(fields)
        self.config = config
        self.path = Path(path) if path is not None else None
        self.done: dict[str, list[dict[str, str]]] = {}
        self._fh: Optional[TextIO] = None
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume and self.path.is_file() and self.path.stat().st_size > 0:
            self._read_back()
        else:
            with open(self.path, "w", newline="", encoding="utf-8") as fh:
                csv.writer(fh).writerow(self.fields)
        self._fh = open(self.path, "a", newline="", encoding="utf-8")

    def _read_back(self) -> None:
        assert self.path is not None
        text = self.path.read_text(encoding="utf-8")
        clean = text.endswith("\n")
        if not clean:  # a crash cut the last row short: drop it
            text = text[: text.rfind("\n") + 1]
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames != self.fields:
            raise ValueError(
                f"{self.path}: its columns {reader.fieldnames} are not this evaluation's "
                f"{self.fields}; use another CSV file or resume=False to start over"
            )
        groups: dict[str, list[dict[str, str]]] = {}
        for row in reader:
            if row.get("config") != self.config:
                raise ValueError(
                    f"{self.path}: row for image {row.get('image_id')!r} was made with "
                    f"{row.get('config')}, not {self.config}; use another CSV file or "
                    "resume=False to start over"
                )
            groups.setdefault(row["image_id"], []).append(row)
        complete = {k: v for k, v in groups.items() if len(v) == int(v[0]["n_rows"])}
        self.done = complete
        if not clean or len(complete) != len(groups):  # rewrite without the broken image(s)
            tmp = self.path.with_name(self.path.name + ".tmp")
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, self.fields)
                writer.writeheader()
                for rows in complete.values():
                    writer.writerows(rows)
            os.replace(tmp, self.path)

    def add(self, image_id: str, rows: list[dict[str, Any]]) -> list[dict[str, str]]:
        """Record one image's rows (written in one go, then flushed); returns them as strings."""
        out = []
        for r in rows:
            r = dict(r, image_id=image_id, n_rows=len(rows), config=self.config)
            out.append({k: _cell(r.get(k, "")) for k in self.fields})
        if self._fh is not None:
            buf = io.StringIO()
            csv.DictWriter(buf, self.fields, lineterminator="\n").writerows(out)
            self._fh.write(buf.getvalue())
            self._fh.flush()
        self.done[image_id] = out
        return out

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _config(**items: Any) -> str:
    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {str(k): plain(x) for k, x in sorted(v.items())}
        if isinstance(v, (str, int, float, bool)) or v is None:
            return v
        return str(v)

    return json.dumps(plain(items), sort_keys=True, separators=(",", ":"))


def _layer_name(layer: Any) -> Any:
    if layer is None or isinstance(layer, str):
        return layer
    if isinstance(layer, (list, tuple)):
        return [_layer_name(x) for x in layer]
    return type(layer).__name__


def _batches(
    pending: Sequence[int], samples: Sequence[Sample], preprocess: Callable, batch_size: int,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Consecutive pending samples, loaded and stacked while their input shapes agree."""
    idx: list[int] = []
    xs: list[torch.Tensor] = []
    for i in pending:
        x = _load_input(samples[i], preprocess)
        if xs and (x.shape != xs[0].shape or len(xs) >= batch_size):
            yield idx, torch.stack(xs)
            idx, xs = [], []
        idx.append(i)
        xs.append(x)
    if xs:
        yield idx, torch.stack(xs)


def _resolve_layer(method: str, layer: Any, res: ResolvedModel) -> Any:
    """The layer a method runs at: none for methods without one, else ``layer`` or the model's
    default."""
    if method == GRADIENT or not METHODS[method].needs_layer:
        return None
    return layer if layer is not None else res.default_layer


def _run_pending(items: Sequence[Sample], ids: Sequence[str], usable: Iterable[int],
                 log: _CsvLog, res: ResolvedModel, batch_size: int,
                 step: Callable[[list[int], torch.Tensor, list[str]], None],
                 bar: Progress) -> int:
    """Run ``step(positions, x, ids)`` on the ``usable`` images that ``log`` does not hold yet,
    batch by batch on the model's device, then close ``bar`` and ``log`` (also on error, so
    the rows written so far stay for a resume). Returns how many images were already done."""
    usable = list(usable)
    resumed = sum(1 for i in ids if i in log.done)
    pending = [i for i in usable if ids[i] not in log.done]
    bar.advance(len(usable) - len(pending))
    dev = _device(res.model)
    try:
        for idx, x in _batches(pending, items, res.preprocess, batch_size):
            step(idx, x.to(dev), [ids[i] for i in idx])
            bar.advance(len(idx))
    finally:
        bar.close()
        log.close()
    return resumed


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return logits_of(model(x)).detach().float().cpu()


def _method_label(method: str, options: Mapping[str, Any], layer: Any) -> str:
    parts = [f"{k}={v}" for k, v in sorted(options.items())]
    if layer is not None and (method == GRADIENT or not METHODS[method].needs_layer):
        layer = None
    if layer is not None:
        parts.append(f"layer={_layer_name(layer)}")
    return method + (f" ({', '.join(parts)})" if parts else "")


def _check_method(method: str, options: Mapping[str, Any]) -> None:
    if method != GRADIENT and method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS) + [GRADIENT]}")


# --------------------------------------------------------------------------------------------
# localisation (Sec. 4.1, Table 1)


@dataclass
class LocalizationSummary:
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
    resumed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    csv_path: Optional[str] = None
    records: list[ImageLocalization] = field(default_factory=list, repr=False)

    def markdown(self) -> str:
        """This row under the header of the paper's Table 1 (errors in %)."""
        return localization_markdown([self])

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "records"}


def localization_markdown(rows: Sequence[LocalizationSummary],
                          labels: Optional[Sequence[str]] = None) -> str:
    """Markdown table in the layout of Table 1: method | top-1 loc error | top-k loc error |
    top-1 cls error | top-k cls error (in %)."""
    k = rows[0].k if rows else 5
    lines = [f"| Method | Top-1 loc error | Top-{k} loc error | Top-1 cls error | "
             f"Top-{k} cls error |", "|---|---:|---:|---:|---:|"]
    for i, r in enumerate(rows):
        name = labels[i] if labels else r.method
        lines.append(f"| {name} | {100 * r.top1_loc_error:.2f} | {100 * r.topk_loc_error:.2f} | "
                     f"{100 * r.top1_cls_error:.2f} | {100 * r.topk_cls_error:.2f} |")
    return "\n".join(lines)


_LOC_FIELDS = ["image_id", "width", "height", "input_h", "input_w", "gt", "pred_classes",
               "pred_scores", "pred_boxes", "top1_cls_ok", "topk_cls_ok", "top1_loc_ok",
               "topk_loc_ok", "n_rows", "config"]


def _loc_record(row: Mapping[str, str]) -> ImageLocalization:
    gt = [(int(c), tuple(b)) for c, b in json.loads(row["gt"])]
    boxes = [None if b is None else tuple(b) for b in json.loads(row["pred_boxes"])]
    return ImageLocalization(json.loads(row["pred_classes"]), boxes, gt)


def evaluate_localization(
    model: Any,
    samples: SamplesLike,
    *,
    method: str = "gradcam",
    layer: Any = None,
    options: Optional[Mapping[str, Any]] = None,
    top_k: int = 5,
    threshold: float = 0.15,
    iou_threshold: float = 0.5,
    relative_to: str = "max",
    batch_size: int = 32,
    csv_path: Optional[Union[str, os.PathLike]] = None,
    resume: bool = True,
    progress: bool = True,
    label_map: Any = None,
    all_boxes: bool = False,
    cache: Optional[MapCache] = None,
    preprocess: Optional[Callable[[Image.Image], torch.Tensor]] = None,
    label: Optional[str] = None,
) -> LocalizationSummary:
    """Weakly-supervised localisation error over ``samples`` (Sec. 4.1, Table 1).

    For each image: the model's ``top_k`` classes; for each, the method's map (see the module
    docstring) -> :func:`bbox_from_map` at ``threshold`` of its maximum (or of its range,
    ``relative_to="range"``: the map min-max scaled first) -> the largest segment's box
    -> the box on the original image. An image is localised at top-k when one of its first k
    classes is a ground-truth class with a box of IoU >= ``iou_threshold`` against a box of
    that class (:func:`localization_error`).

    A predicted class that is not in the image's ground truth can never make it correct, so
    its map is not computed (box recorded as null) unless ``all_boxes=True``; the errors are
    the same either way. ``cache``: see :data:`MapCache`.
    """
    t0 = time.perf_counter()
    res = resolve_model(model, preprocess)
    options = dict(options or {})
    _check_method(method, options)
    bbox_from_map(np.ones((1, 1)), threshold, relative_to=relative_to)  # bad values raise now
    layer = _resolve_layer(method, layer, res)
    items = _samples(samples)
    ids = _sample_ids(items)
    to_index = _label_index(res.labels, label_map)
    config = _config(task="localization", method=method, layer=_layer_name(layer), options=options,
                     top_k=top_k, threshold=threshold, relative_to=relative_to,
                     iou=iou_threshold, all_boxes=all_boxes)
    log = _CsvLog(csv_path, _LOC_FIELDS, config, resume)
    usable = [i for i, s in enumerate(items) if s.objects]

    def step(idx: list[int], x: torch.Tensor, batch_ids: list[str]) -> None:
        logits, known = _predict(res.model, x, batch_ids, method, layer, options, top_k, cache)
        _check_classes(items, idx, to_index, logits.shape[1])
        k = min(int(top_k), logits.shape[1])
        scores, top = logits.topk(k, dim=1)
        gts = [[(to_index(o.label), tuple(o.box)) for o in items[i].objects] for i in idx]
        wanted = [[int(c) for c in top[b] if all_boxes or int(c) in {g for g, _ in gts[b]}]
                  for b in range(len(idx))]
        maps = _class_maps(res.model, x, batch_ids, wanted, method, layer, options, cache, known)
        hw = tuple(x.shape[-2:])
        for b, i in enumerate(idx):
            s = items[i]
            boxes: list[Optional[Box]] = []
            for c in top[b].tolist():
                box = (bbox_from_map(maps[b][c], threshold, relative_to=relative_to)
                       if c in wanted[b] else None)
                boxes.append(None if box is None else scale_box(box, hw, (s.height, s.width)))
            rec = ImageLocalization(top[b].tolist(), boxes, gts[b])
            one = localization_error([rec], 1, iou_threshold)
            kk = localization_error([rec], k, iou_threshold)
            log.add(ids[i], [{
                "width": s.width, "height": s.height, "input_h": hw[0], "input_w": hw[1],
                "gt": [[c, list(bx)] for c, bx in gts[b]], "pred_classes": top[b].tolist(),
                "pred_scores": [round(float(v), 6) for v in scores[b]],
                "pred_boxes": [None if bx is None else list(bx) for bx in boxes],
                "top1_cls_ok": one.cls_correct[0], "topk_cls_ok": kk.cls_correct[0],
                "top1_loc_ok": one.loc_correct[0], "topk_loc_ok": kk.loc_correct[0],
            }])

    resumed = _run_pending(items, ids, usable, log, res, batch_size, step,
                           Progress(len(usable), f"localization {method}", progress))
    records = [_loc_record(log.done[ids[i]][0]) for i in usable if ids[i] in log.done]
    if not records:
        raise ValueError("no image with ground truth to evaluate")
    table = localization_table(records, (1, top_k), iou_threshold)
    return LocalizationSummary(
        method=label or _method_label(method, options, layer), n=len(records), k=top_k,
        top1_loc_error=table[1].loc_error, topk_loc_error=table[top_k].loc_error,
        top1_cls_error=table[1].cls_error, topk_cls_error=table[top_k].cls_error,
        threshold=threshold, iou_threshold=iou_threshold, relative_to=relative_to,
        resumed=resumed,
        skipped=len(items) - len(usable), seconds=time.perf_counter() - t0,
        csv_path=None if csv_path is None else str(csv_path), records=records,
    )


# --------------------------------------------------------------------------------------------
# pointing game (Sec. 4.3)


@dataclass
class PointingSummary:
    """Pointing accuracies on the evaluation images (fractions in [0, 1]).

    ``accuracy``: the standard game (Zhang et al.): one trial per ground-truth class, hits /
    trials. ``accuracy_rejection``: the paper's top-k + rejection: every top-k class is a trial,
    a class whose map maximum (``evidence``) is below ``threshold`` is predicted absent;
    (hits + correct rejections) / trials, with ``threshold`` chosen on the held-out images.
    ``accuracy_topk``: the same trials without rejection.
    """

    method: str
    n_images: int
    n_held_out: int
    accuracy: float
    accuracy_rejection: float
    accuracy_topk: float
    threshold: float
    trials: int
    trials_topk: int
    tolerance: float
    k: int
    resumed: int = 0
    seconds: float = 0.0
    csv_path: Optional[str] = None

    def markdown(self) -> str:
        return pointing_markdown([self])

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def pointing_markdown(rows: Sequence[PointingSummary],
                      labels: Optional[Sequence[str]] = None) -> str:
    k = rows[0].k if rows else 5
    lines = [f"| Method | Pointing accuracy (gt classes) | Top-{k} without rejection | "
             f"Top-{k} + rejection | Rejection threshold |",
             "|---|---:|---:|---:|---:|"]
    for i, r in enumerate(rows):
        name = labels[i] if labels else r.method
        lines.append(f"| {name} | {100 * r.accuracy:.2f} | {100 * r.accuracy_topk:.2f} | "
                     f"{100 * r.accuracy_rejection:.2f} | {r.threshold:.4g} |")
    return "\n".join(lines)


_POINT_FIELDS = ["image_id", "split", "class_index", "rank", "in_topk", "is_gt", "present", "hit",
                 "evidence", "n_rows", "config"]


def _held_out_positions(n: int, fraction: float) -> set[int]:
    """Positions spread evenly: position p is held out when floor((p+1) f) > floor(p f)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(
            f"held_out must be a fraction in (0, 1) or a list of samples, got {fraction}")
    return {p for p in range(n) if math.floor((p + 1) * fraction) > math.floor(p * fraction)}


def evaluate_pointing(
    model: Any,
    samples: SamplesLike,
    *,
    method: str = "gradcam",
    layer: Any = None,
    options: Optional[Mapping[str, Any]] = None,
    top_k: int = 5,
    tolerance: float = 15,
    held_out: Union[float, SamplesLike] = 0.25,
    batch_size: int = 32,
    csv_path: Optional[Union[str, os.PathLike]] = None,
    resume: bool = True,
    progress: bool = True,
    label_map: Any = None,
    cache: Optional[MapCache] = None,
    preprocess: Optional[Callable[[Image.Image], torch.Tensor]] = None,
    label: Optional[str] = None,
    ties: str = "any",
) -> PointingSummary:
    """Pointing game (Sec. 4.3), standard and top-k + rejection.

    Maps are computed for every top-k class and every ground-truth class of each image, at
    input resolution, then resized (bilinear) to the annotation's resolution; a trial is a hit
    when the map's maximum is within ``tolerance`` px of the class's ground-truth mask (its
    boxes when it has no mask). ``evidence`` is the maximum of the map before any scaling
    (:func:`localization_maps`). The rejection threshold is chosen on ``held_out``: a fraction
    of ``samples`` (spread evenly) or separate samples; the accuracies are on the rest.
    ``cache``: see :data:`MapCache`.
    """
    t0 = time.perf_counter()
    res = resolve_model(model, preprocess)
    options = dict(options or {})
    _check_method(method, options)
    layer = _resolve_layer(method, layer, res)
    items = _samples(samples)
    if isinstance(held_out, (int, float)) and not isinstance(held_out, bool):
        hold = _held_out_positions(len(items), float(held_out))
        split = ["held_out" if p in hold else "test" for p in range(len(items))]
        held_desc: Any = float(held_out)
    else:
        extra = _samples(held_out)
        items = extra + items
        split = ["held_out"] * len(extra) + ["test"] * (len(items) - len(extra))
        held_desc = f"{len(extra)} samples"
    ids = _sample_ids(items)
    to_index = _label_index(res.labels, label_map)
    config = _config(task="pointing", method=method, layer=_layer_name(layer), options=options,
                     top_k=top_k, tolerance=tolerance, held_out=held_desc, ties=ties)
    log = _CsvLog(csv_path, _POINT_FIELDS, config, resume)

    def step(idx: list[int], x: torch.Tensor, batch_ids: list[str]) -> None:
        logits, known = _predict(res.model, x, batch_ids, method, layer, options, top_k, cache)
        _check_classes(items, idx, to_index, logits.shape[1])
        k = min(int(top_k), logits.shape[1])
        top = logits.topk(k, dim=1).indices.tolist()
        masks: list[dict[int, np.ndarray]] = []
        for i in idx:
            s = items[i]
            per: dict[int, np.ndarray] = {}
            for lab in s.labels:
                c = to_index(lab)
                m = s.gt_mask(lab)
                per[c] = per[c] | m if c in per else m
            masks.append(per)
        classes = [top[b] + [c for c in masks[b] if c not in top[b]] for b in range(len(idx))]
        maps = _class_maps(res.model, x, batch_ids, classes, method, layer, options, cache,
                           known)
        for b, i in enumerate(idx):
            s = items[i]
            rows = []
            for c in classes[b]:
                m = maps[b][c].astype(np.float64)
                evidence = float(m.max())
                if m.shape != (s.height, s.width):
                    m = resize_map(m, (s.height, s.width))
                gt = masks[b].get(c)
                present = gt is not None and bool(gt.any())
                hit = present and pointing_hit(m, gt, tolerance, ties)  # type: ignore[arg-type]
                rows.append({"split": split[i], "class_index": c,
                             "rank": top[b].index(c) + 1 if c in top[b] else "",
                             "in_topk": c in top[b], "is_gt": c in masks[b], "present": present,
                             "hit": hit, "evidence": evidence})
            log.add(ids[i], rows)

    resumed = _run_pending(items, ids, range(len(items)), log, res, batch_size, step,
                           Progress(len(items), f"pointing {method}", progress))
    done = {k: log.done[k] for k in ids if k in log.done}
    return _pointing_summary(done, label or _method_label(method, options, layer), top_k,
                             tolerance, resumed, time.perf_counter() - t0, csv_path)


def _pointing_summary(done: Mapping[str, list[dict[str, str]]], name: str, top_k: int,
                      tolerance: float, resumed: int, seconds: float,
                      csv_path: Any) -> PointingSummary:
    held: list[PointingTrial] = []
    test_gt: list[PointingTrial] = []
    test_topk: list[PointingTrial] = []
    n_held = n_test = 0
    for rows in done.values():
        is_held = rows[0]["split"] == "held_out"
        n_held += is_held
        n_test += not is_held
        for r in rows:
            t = PointingTrial(present=r["present"] == "1", hit=r["hit"] == "1",
                              evidence=float(r["evidence"]))
            if is_held:
                if r["in_topk"] == "1":
                    held.append(t)
            else:
                if r["is_gt"] == "1":
                    test_gt.append(t)
                if r["in_topk"] == "1":
                    test_topk.append(t)
    if not held:
        raise ValueError("no held-out trials to choose the rejection threshold on")
    if not test_topk:
        raise ValueError("no test images for the pointing game")
    thr = choose_rejection_threshold(held)
    standard = pointing_game(test_gt) if any(t.present for t in test_gt) else None
    return PointingSummary(
        method=name, n_images=n_test, n_held_out=n_held,
        accuracy=standard.accuracy if standard else float("nan"),
        accuracy_rejection=pointing_game(test_topk, thr).accuracy,
        accuracy_topk=pointing_game(test_topk, -math.inf).accuracy,
        threshold=thr, trials=len(test_gt), trials_topk=len(test_topk), tolerance=tolerance,
        k=top_k, resumed=resumed, seconds=seconds,
        csv_path=None if csv_path is None else str(csv_path),
    )


# --------------------------------------------------------------------------------------------
# faithfulness (Sec. 5.3)


MethodSpec = Union[str, tuple]


@dataclass
class FaithfulnessSummary:
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
    resumed: int = 0
    seconds: float = 0.0
    csv_path: Optional[str] = None

    def markdown(self) -> str:
        return faithfulness_markdown(self)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def faithfulness_markdown(summary: FaithfulnessSummary,
                          labels: Optional[Mapping[str, str]] = None) -> str:
    lines = ["| Method | Rank correlation with occlusion | Images | Undefined (constant map) |",
             "|---|---:|---:|---:|"]
    for m in summary.methods:
        name = (labels or {}).get(m, m)
        lines.append(f"| {name} | {summary.mean_rho[m]:.3f} | {summary.n} | {summary.n_nan[m]} |")
    return "\n".join(lines)


def _method_specs(methods: Sequence[MethodSpec]) -> list[tuple[str, str, dict[str, Any], Any]]:
    """(column name, method, options, layer) per spec: a method name, or (name, method,
    options[, layer])."""
    out = []
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


def evaluate_faithfulness(
    model: Any,
    samples: SamplesLike,
    *,
    method: Union[MethodSpec, Sequence[MethodSpec]] = "gradcam",
    layer: Any = None,
    options: Optional[Mapping[str, Any]] = None,
    window: int = 16,
    stride: int = 8,
    fill: float = 0.0,
    occlusion_batch: int = 64,
    target: str = "top1",
    batch_size: int = 16,
    csv_path: Optional[Union[str, os.PathLike]] = None,
    resume: bool = True,
    progress: bool = True,
    label_map: Any = None,
    cache: Optional[MapCache] = None,
    preprocess: Optional[Callable[[Image.Image], torch.Tensor]] = None,
) -> FaithfulnessSummary:
    """Mean Spearman rank correlation between each method's map and the occlusion map of the
    same image and class (Sec. 5.3), both at the model's input resolution.

    ``method``: one method name, or a list of names / ``(name, method, options[, layer])``
    tuples (the occlusion map is then computed once per image for all of them); ``options``
    and ``layer`` apply to a single named method. ``target``: ``"top1"`` (the model's top
    class, the decision being explained) or ``"gt"`` (the image's first ground-truth class).
    ``window``/``stride``/``fill`` configure the occlusion reference. ``cache``: see
    :data:`MapCache` (an occlusion localisation run with the same window, stride and fill and
    ``all_boxes=True`` leaves the reference maps there).
    """
    t0 = time.perf_counter()
    res = resolve_model(model, preprocess)
    if isinstance(method, str):
        specs = [(method, method, dict(options or {}), layer)]
    else:
        specs = _method_specs(method)
    for _, m, o, _ in specs:
        _check_method(m, o)
    resolved = [(name, m, o, _resolve_layer(m, lay, res)) for name, m, o, lay in specs]
    if target not in ("top1", "gt"):
        raise ValueError(f"target must be 'top1' or 'gt', got {target!r}")
    items = _samples(samples)
    if target == "gt":
        items = [s for s in items if s.objects]
    ids = _sample_ids(items)
    to_index = _label_index(res.labels, label_map)
    names = [r[0] for r in resolved]
    fields = ["image_id", "class_index"] + [f"rho:{n}" for n in names] + ["n_rows", "config"]
    config = _config(task="faithfulness",
                     methods=[[n, m, o, _layer_name(lay)] for n, m, o, lay in resolved],
                     window=window, stride=stride, fill=fill, target=target)
    log = _CsvLog(csv_path, fields, config, resume)
    occ_opts = {"window": window, "stride": stride, "fill": fill}
    if occlusion_batch != 64:
        occ_opts["batch_size"] = occlusion_batch

    def step(idx: list[int], x: torch.Tensor, batch_ids: list[str]) -> None:
        if target == "top1":
            cls = _logits(res.model, x).argmax(dim=1).tolist()
        else:
            cls = [to_index(items[i].objects[0].label) for i in idx]
        one = [[c] for c in cls]
        occ = _class_maps(res.model, x, batch_ids, one, "occlusion", None, occ_opts, cache)
        rhos = {}
        for name, m, o, lay in resolved:
            maps = _class_maps(res.model, x, batch_ids, one, m, lay, o, cache)
            rhos[name] = [rank_correlation(maps[b][cls[b]], occ[b][cls[b]])
                          for b in range(len(idx))]
        for b, i in enumerate(idx):
            row: dict[str, Any] = {"class_index": cls[b]}
            row.update({f"rho:{n}": rhos[n][b] for n in names})
            log.add(ids[i], [row])

    resumed = _run_pending(items, ids, range(len(items)), log, res, batch_size, step,
                           Progress(len(items), "faithfulness", progress))
    rows = [log.done[k][0] for k in ids if k in log.done]
    mean, nan = {}, {}
    for n in names:
        vals = np.array([float(r[f"rho:{n}"]) for r in rows], dtype=np.float64)
        ok = vals[~np.isnan(vals)]
        mean[n] = float(ok.mean()) if ok.size else float("nan")
        nan[n] = int(np.isnan(vals).sum())
    return FaithfulnessSummary(
        methods=names, mean_rho=mean, n=len(rows), n_nan=nan, window=window, stride=stride,
        fill=fill, target=target, resumed=resumed, seconds=time.perf_counter() - t0,
        csv_path=None if csv_path is None else str(csv_path),
    )


# --------------------------------------------------------------------------------------------
# one entry point for the command line


def evaluate(
    task: str,
    data: SamplesLike,
    *,
    model: Any = "efficientnet_lite0",
    method: str = "gradcam",
    layer: Optional[str] = None,
    options: Optional[Mapping[str, Any]] = None,
    csv_path: Optional[Union[str, os.PathLike]] = None,
    resume: bool = True,
    progress: bool = True,
    batch_size: int = 16,
    top_k: int = 5,
    threshold: float = 0.15,
    relative_to: str = "max",
    tolerance: float = 15,
    held_out: Union[float, SamplesLike] = 0.25,
    window: int = 16,
    stride: int = 8,
    fill: float = 0.0,
    limit: Optional[int] = None,
    label_map: Any = None,
    device: Union[str, torch.device] = "cpu",
) -> Union[LocalizationSummary, PointingSummary, FaithfulnessSummary]:
    """Run one evaluation ``task`` (``localization``, ``pointing`` or ``faithfulness``) on
    ``data`` (a ``FORMAT:PATH`` spec for :func:`load_dataset`, or samples); the summary's
    ``markdown()`` is the table to print. ``limit`` keeps the first N samples; ``label_map``
    maps ground-truth labels to class indices (e.g. ``wnid_to_index(synsets)`` for ILSVRC);
    ``device`` is used when ``model`` is a spec string."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    model = resolve_model(model, device=device)
    items = _samples(data)
    if limit is not None:
        items = items[: int(limit)]
    common = dict(csv_path=csv_path, resume=resume, progress=progress, label_map=label_map)
    if task == "localization":
        return evaluate_localization(model, items, method=method, layer=layer, options=options,
                                     top_k=top_k, threshold=threshold,
                                     relative_to=relative_to, batch_size=batch_size, **common)
    if task == "pointing":
        return evaluate_pointing(model, items, method=method, layer=layer, options=options,
                                 top_k=top_k, tolerance=tolerance, held_out=held_out,
                                 batch_size=batch_size, **common)
    return evaluate_faithfulness(model, items, method=method, layer=layer, options=options,
                                 window=window, stride=stride, fill=fill,
                                 batch_size=batch_size, **common)


def _parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are parsed as JSON when they can be (``relu=false``,
    ``window=8``), else kept as text (``pooling=gmp``)."""
    out: dict[str, Any] = {}
    for p in pairs or ():
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise ValueError(f"--option expects KEY=VALUE, got {p!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``evaluate`` options, for ``camlens evaluate`` and ``python -m camlens.evaluate``."""
    parser.add_argument("task", choices=TASKS)
    parser.add_argument("--data", required=True,
                        help="FORMAT:PATH, FORMAT one of " + ", ".join(dataset_formats()))
    parser.add_argument("--model", default="efficientnet_lite0",
                        help="bundled name, synthetic:gapnet|vggstyle, torchvision:NAME, "
                             "file.py:ATTR")
    parser.add_argument("--method", default="gradcam",
                        help="one of " + ", ".join(sorted(METHODS) + [GRADIENT]))
    parser.add_argument("--layer", default=None,
                        help="layer for layer methods (default: the model's)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="method option, e.g. relu=false, pooling=gmp, backward=guided")
    parser.add_argument("--csv", default=None, help="per-image CSV rows (appended, resumable)")
    parser.add_argument("--resume", dest="resume", action="store_true", default=True,
                        help="skip images already in --csv (default)")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="start --csv over")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=0.15,
                        help="localisation: binarise at this fraction of the map's maximum")
    parser.add_argument("--relative-to", choices=RELATIVE_TO, default="max",
                        help="localisation: the threshold is a fraction of the map's maximum "
                             "(the paper's), or of its range (min-max scaled first)")
    parser.add_argument("--tolerance", type=float, default=15, help="pointing: pixels")
    parser.add_argument("--held-out", type=float, default=0.25,
                        help="pointing: fraction of images used to choose the rejection threshold")
    parser.add_argument("--window", type=int, default=16, help="faithfulness: occlusion window")
    parser.add_argument("--stride", type=int, default=8, help="faithfulness: occlusion stride")
    parser.add_argument("--fill", type=float, default=0.0, help="faithfulness: occlusion fill")
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    parser.add_argument("--synsets", default=None, metavar="FILE",
                        help="wnid list in class-index order (ILSVRC labels -> class indices)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=True)
    return parser


def run_cli(args: argparse.Namespace, stdout: Optional[TextIO] = None) -> int:
    """Run :func:`evaluate` from parsed arguments (see :func:`add_evaluate_arguments`; missing
    attributes take their defaults), print the markdown table and return 0."""
    get = lambda name, default=None: getattr(args, name, default)  # noqa: E731
    label_map = None
    if get("synsets"):
        from camlens.evaluate.datasets import wnid_to_index

        label_map = wnid_to_index(get("synsets"))
    summary = evaluate(
        get("task"), get("data"), model=get("model", "efficientnet_lite0") or "efficientnet_lite0",
        method=get("method", "gradcam"), layer=get("layer"),
        options=_parse_options(get("option", []) or []), csv_path=get("csv"),
        resume=get("resume", True), progress=get("progress", True),
        batch_size=get("batch_size", 16), top_k=get("top_k", 5),
        threshold=get("threshold", 0.15), relative_to=get("relative_to", "max"),
        tolerance=get("tolerance", 15),
        held_out=get("held_out", 0.25), window=get("window", 16), stride=get("stride", 8),
        fill=get("fill", 0.0), limit=get("limit"), label_map=label_map,
        device=get("device", "cpu") or "cpu",
    )
    out = stdout or sys.stdout
    print(summary.markdown(), file=out)
    return 0
