"""Sec. 8.1's captioning measurements over world v2 scenes: word pointing and the DenseCap
inside/outside ratio of region captions, with per-image CSV rows (resumable) and summaries.

- **Word pointing** (:func:`evaluate_word_pointing`): each scene's ground-truth caption (its
  scene graph's) is scored under teacher forcing; every visual word (a word naming world v2
  classes, :mod:`camlens.synthetic.v2.words`) is a target, log p of the word at its step, all
  of an image's words from one call. A hit when the word's map (at input resolution, as in
  :func:`camlens.evaluate.explainer.localization_maps`) has its maximum inside the mask of an
  object of a class the word names (:func:`camlens.evaluate.word_pointing_hit`).
- **Region ratio** (:func:`evaluate_region_ratio`): each object's region caption is its
  phrase in the scene graph ("a large brown striped tabby"); the target is log p of the phrase's
  words as a caption (teacher forcing, ``<end>`` not scored: the captioner is trained on whole
  captions, and its ``<end>`` after one phrase of a two-object scene is a statement about the
  other object). The ratio is the map's mean inside the object's box over its mean outside
  (:func:`camlens.evaluate.inside_outside_ratio`; a uniform map gives 1.0).

Summaries give mean +- standard error (:func:`camlens.evaluate.mean_sem`) over words / regions,
as the paper's "x +- y". Data: a list of world v2 scenes, or ``synthetic:seed=S,n=N[,kind=K]``
with ``kind`` a world v2 kind or ``mixed`` (single, two, pair and multi in turn, the
captioner's held-out set with ``seed=20251``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

import camlens
from camlens.evaluate.explainer import localization_maps
from camlens.evaluate.faithfulness import inside_outside_ratio
from camlens.evaluate.language import MeanSEM, mean_sem, word_pointing_hit
from camlens.evaluate.store import RowStore
from camlens.evaluate.synthetic_data import scenes_to_samples
from camlens.evaluate.tasks.common import Batch, RunInfo, execute, method_config
from camlens.models.registry import ModelRecord
from camlens.synthetic.v2.spec import parse_synthetic
from camlens.tasks.caption import CaptionTarget

__all__ = ["CAPTION_TASKS", "WordPointingRow", "RegionRatioRow", "WordPointingSummary",
           "RegionRatioSummary", "caption_scenes", "evaluate_word_pointing",
           "evaluate_region_ratio", "PAPER"]

CAPTION_TASKS = ("word-pointing", "region-ratio")

#: The paper's numbers (Sec. 8.1): word pointing on 1000 COCO images (Grad-CAM), and the
#: DenseCap inside/outside ratios.
PAPER: dict[str, dict[str, tuple[float, float | None]]] = {
    "word-pointing": {"gradcam": (0.30, None)},
    "region-ratio": {"gradcam": (3.27, 0.18), "guided-backprop": (2.32, 0.08),
                     "guided-gradcam": (6.38, 0.99), "uniform": (1.0, None)}}


def caption_scenes(data: Any, limit: int | None = None) -> list[Any]:
    """World v2 scenes from a list of scenes or a spec
    ``synthetic:seed=S,n=N[,kind=K][,...]`` (:func:`camlens.synthetic.parse_synthetic`; kind
    default ``mixed``, the captioner's data), the first ``limit`` of them."""
    if not isinstance(data, str):
        scenes = list(data)[:limit]
        if not all(hasattr(s, "graph") and hasattr(s, "objects") for s in scenes):
            raise ValueError("the captioning protocols need world v2 scenes (their scene "
                             "graphs give the captions): synthetic:seed=S,n=N[,kind=K]")
        return scenes
    return parse_synthetic(data).with_defaults(kind="mixed").limited(limit).scenes()


@dataclass(frozen=True)
class WordPointingRow:
    """One visual word of a ground-truth caption: its position in the ids (``<start>`` = 0),
    the classes it names, whether its map points into one of them (None: none in the image),
    the map's maximum (0: no evidence, a miss) and the word's log p."""

    position: int
    word: str
    classes: list[str]
    hit: bool | None
    evidence: float
    log_probability: float


@dataclass(frozen=True)
class RegionRatioRow:
    """One object's region caption: its index in the scene, class, phrase, the ratio (nan
    when the box covers the image) and the phrase's log p."""

    object: int
    cls: str
    phrase: str
    ratio: float
    log_probability: float


def _unit(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img.convert("RGB").resize((112, 112), Image.Resampling.BILINEAR))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0


def _record(model: Any, vocab: Any) -> tuple[ModelRecord, Any, str]:
    from camlens.captioning import LAYER, load_captioner, load_vocabulary

    net: torch.nn.Module
    if model is None or model == "synthetic:captioner":
        net, name = load_captioner(), "synthetic:captioner"
    elif isinstance(model, torch.nn.Module):
        net, name = model, type(model).__name__
    else:
        raise ValueError(f"model must be 'synthetic:captioner' or a captioner module, got "
                         f"{model!r}")
    voc = vocab or load_vocabulary()
    dev = next(net.parameters()).device
    res = ModelRecord(net, name, [], _unit, LAYER, 112, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), None,
                      dev, "none", "captioning")
    return res, voc, LAYER


def _padded(rows: Sequence[Sequence[int]], fill: int) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), fill, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r)
    return out


def _explain(res: ModelRecord, x: torch.Tensor, tokens: torch.Tensor, target: CaptionTarget,
             method: str, layer: Any, options: Mapping[str, Any]) -> tuple[torch.Tensor,
                                                                            torch.Tensor]:
    ex = camlens.explain(res.model, (x, tokens.to(x.device)), method=method, layer=layer,
                         target=target, **dict(options))
    size = (int(x.shape[-2]), int(x.shape[-1]))
    return localization_maps(ex, size).cpu(), ex.scores.detach().cpu()


@dataclass
class WordPointingSummary(RunInfo):
    """Word pointing accuracy (hits / scored words) +- its standard error."""

    method: str
    n_images: int
    words: int
    scored: int
    accuracy: float
    sem: float

    def markdown(self) -> str:
        paper = PAPER["word-pointing"].get(self.method)
        return ("| Method | images | visual words | scored | accuracy (mean ± s.e.) | paper |\n"
                "|---|---|---|---|---|---|\n"
                f"| {self.method} | {self.n_images} | {self.words} | {self.scored} | "
                f"{100 * self.accuracy:.1f}% ± {100 * self.sem:.1f} | "
                f"{f'{100 * paper[0]:.1f}% (COCO)' if paper else '-'} |")


@dataclass
class RegionRatioSummary(RunInfo):
    """Inside/outside ratio over region captions: mean +- standard error and median of the
    finite ratios; ``infinite``: maps with nothing outside the box (zero outside mean),
    ``skipped``: undefined (the box covers the image, or the map is all zero)."""

    method: str
    n_images: int
    regions: int
    mean: float
    sem: float
    median: float
    infinite: int
    skipped: int

    def markdown(self) -> str:
        paper = PAPER["region-ratio"].get(self.method)
        ref = f"{paper[0]:.2f} ± {paper[1]:.2f}" if paper and paper[1] else "-"
        return ("| Method | images | regions | ratio (mean ± s.e.) | median | infinite | "
                "skipped | paper (DenseCap) |\n|---|---|---|---|---|---|---|---|\n"
                f"| {self.method} | {self.n_images} | {self.regions} | {self.mean:.2f} ± "
                f"{self.sem:.2f} | {self.median:.2f} | {self.infinite} | {self.skipped} | "
                f"{ref} |")


def _setup(model: Any, vocab: Any, data: Any, limit: int | None, method: str, layer: Any,
           options: Mapping[str, Any] | None, task: str, csv_path: Any, resume: bool,
           row: type) -> tuple[ModelRecord, Any, Any, list[Any], list[Any], list[str],
                               dict[str, Any], RowStore[Any]]:
    res, voc, default_layer = _record(model, vocab)
    scenes = caption_scenes(data, limit)
    start = parse_synthetic(data).start if isinstance(data, str) else 0
    samples: list[Any] = list(scenes_to_samples(scenes, start=start))
    ids = [str(s.image_id) for s in samples]
    opts = dict(options or {})
    from camlens.methods import METHODS

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(sorted(METHODS))}")
    lay = (layer or default_layer) if METHODS[method].needs_layer else None
    config = method_config(res, task=task, method=method, layer=lay, options=opts,
                           data=data if isinstance(data, str) else f"{len(scenes)} scenes",
                           limit=limit, vocabulary=len(voc))
    return res, voc, lay, scenes, samples, ids, opts, RowStore(csv_path, row, config, resume)


def evaluate_word_pointing(model: Any = "synthetic:captioner", data: Any =
                           "synthetic:seed=20251,n=200,kind=mixed", *, method: str = "gradcam",
                           layer: Any = None, options: Mapping[str, Any] | None = None,
                           vocab: Any = None, batch_size: int = 16, limit: int | None = None,
                           csv_path: str | os.PathLike[str] | None = None, resume: bool = True,
                           progress: bool = True) -> WordPointingSummary:
    """Word pointing (Sec. 8.1.1) of ``method`` over ``data`` (module doc; ``limit``: the
    first N scenes); per-word CSV rows."""
    from camlens.captioning.explain import world_visual

    start = time.perf_counter()
    res, voc, lay, scenes, samples, ids, opts, store = _setup(
        model, vocab, data, limit, method, layer, options, "word-pointing", csv_path, resume,
        WordPointingRow)
    by_id = dict(zip(ids, scenes))

    def compute(batch: Batch) -> list[list[WordPointingRow]]:
        graphs = [by_id[k] for k in batch.ids]
        toks = [voc.encode(s.graph().caption()) for s in graphs]
        visual = [[(i + 1, c) for i, c in world_visual([voc.words[t] for t in ids_[1:-1]])]
                  for ids_ in toks]
        tokens = _padded(toks, voc.pad)
        words = _padded([[p for p, _ in v] or [-1] for v in visual], -1)
        maps, scores = _explain(res, batch.x, tokens, CaptionTarget(
            tokens, words=words, whole=False, ignore=voc.pad), method, lay, opts)
        out = []
        for b, s in enumerate(graphs):
            objects = [(o.name, o.mask) for o in s.objects]
            rows = []
            for k, (p, classes) in enumerate(visual[b]):
                m = maps[b, k].numpy().astype(np.float64)
                hit = word_pointing_hit(m, set(classes), objects)  # a flat map: a miss
                rows.append(WordPointingRow(p, voc.words[toks[b][p]], list(classes), hit,
                                            float(m.max()), float(scores[b, k])))
            out.append(rows)
        return out

    out = execute(samples, ids, range(len(samples)), store, res, batch_size, compute,
                  f"word pointing {method}", progress)
    rows = [r for rs in out.rows.values() for r in rs]
    ms = mean_sem(r.hit for r in rows)
    return WordPointingSummary(method=method, n_images=len(out.rows), words=len(rows),
                               scored=ms.n, accuracy=ms.mean, sem=ms.sem,
                               **out.run_info(start, csv_path))


def evaluate_region_ratio(model: Any = "synthetic:captioner", data: Any =
                          "synthetic:seed=20251,n=200,kind=mixed", *, method: str = "gradcam",
                          layer: Any = None, options: Mapping[str, Any] | None = None,
                          vocab: Any = None, batch_size: int = 8, limit: int | None = None,
                          csv_path: str | os.PathLike[str] | None = None, resume: bool = True,
                          progress: bool = True) -> RegionRatioSummary:
    """The DenseCap inside/outside ratio (Sec. 8.1) of ``method`` over ``data``'s objects
    (``limit``: the first N scenes); per-region CSV rows."""
    start = time.perf_counter()
    res, voc, lay, scenes, samples, ids, opts, store = _setup(
        model, vocab, data, limit, method, layer, options, "region-ratio", csv_path, resume,
        RegionRatioRow)
    by_id = dict(zip(ids, scenes))

    def compute(batch: Batch) -> list[list[RegionRatioRow]]:
        items = []  # (image in batch, object index, phrase, ids without <end>)
        for b, k in enumerate(batch.ids):
            g = by_id[k].graph()
            for j, o in enumerate(g.objects):
                phrase = g.phrase(o)
                items.append((b, j, phrase, voc.encode(phrase)[:-1]))
        tokens = _padded([it[3] for it in items], voc.pad)
        x = batch.x[[it[0] for it in items]]
        maps, scores = _explain(res, x, tokens, CaptionTarget(tokens, ignore=voc.pad), method,
                                lay, opts)
        out: list[list[RegionRatioRow]] = [[] for _ in batch.ids]
        for n, (b, j, phrase, _) in enumerate(items):
            obj = by_id[batch.ids[b]].objects[j]
            try:
                ratio = inside_outside_ratio(maps[n, 0].numpy().astype(np.float64), obj.box)
            except ValueError:
                ratio = math.nan
            out[b].append(RegionRatioRow(j, obj.name, phrase, ratio, float(scores[n, 0])))
        return out

    out = execute(samples, ids, range(len(samples)), store, res, batch_size, compute,
                  f"region ratio {method}", progress)
    ratios = [r.ratio for rs in out.rows.values() for r in rs]
    finite = [v for v in ratios if math.isfinite(v)]
    ms: MeanSEM = mean_sem(finite)
    return RegionRatioSummary(method=method, n_images=len(out.rows), regions=len(ratios),
                              mean=ms.mean, sem=ms.sem,
                              median=float(np.median(finite)) if finite else math.nan,
                              infinite=sum(math.isinf(v) for v in ratios),
                              skipped=sum(math.isnan(v) for v in ratios),
                              **out.run_info(start, csv_path))
