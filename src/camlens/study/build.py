"""Studies built from a dataset and models: the trials of Sec. 5.1 and 5.2 with their pictures.

- :func:`class_discrimination` (Sec. 5.1): images with exactly two annotated categories; for
  each image, each of its two categories and each method, the visualisation of that category;
  a trial shows the photo and one visualisation and asks "Which of the two object categories
  is depicted?" with the two categories as options in random order (balanced: per method, the
  visualised category comes first in half of the trials).
- :func:`trust` (Sec. 5.2): images where both models predict the ground truth; per image and
  method, both models' explanations of that class side by side as "model 1" and "model 2"
  (model A is model 1 in half of each method's trials, at random), answered on the 5-point
  scale -2 .. +2.

Every picture is a PNG stored in the study database under a random id, so neither a file
name nor a URL says which category, method or model it shows.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

import camlens
from camlens.evaluate.datasets import Sample
from camlens.evaluate.model import label_index, predict, resolve_model
from camlens.evaluate.tasks.common import SamplesLike, as_samples, load_input
from camlens.methods import METHODS
from camlens.models.registry import ModelRecord
from camlens.study.store import Study, Trial, new_id
from camlens.viz import overlay, pixel_space_image

__all__ = ["PAPER_CLASS_METHODS", "PAPER_TRUST_METHODS", "TRUST_SCALE", "StudyPlan",
           "class_discrimination", "trust"]

#: Sec. 5.1's four visualisations.
PAPER_CLASS_METHODS = ("deconvnet", "guided-backprop", "deconv-gradcam", "guided-gradcam")
#: Sec. 5.2's two visualisations.
PAPER_TRUST_METHODS = ("guided-backprop", "guided-gradcam")
#: Fig. 5(c)'s scale, as (value, label): negative favours model 1, positive model 2.
TRUST_SCALE = (
    ("-2", "Model 1 is clearly more trustworthy"),
    ("-1", "Model 1 is slightly more trustworthy"),
    ("0", "Both are equally trustworthy"),
    ("1", "Model 2 is slightly more trustworthy"),
    ("2", "Model 2 is clearly more trustworthy"),
)
CLASS_QUESTION = "Which of the two object categories is depicted in the explanation?"
TRUST_QUESTION = ("Both models predict the category below. Judging from their explanations, "
                  "which model do you trust more?")

#: Pictures smaller than this (longer side, pixels) are enlarged by a whole factor
#: (nearest neighbour, so no detail is invented) for the page.
MIN_DISPLAY_SIDE = 224


@dataclass(frozen=True)
class StudyPlan:
    """A study ready to be written (:meth:`camlens.study.StudyStore.create`): what it asks,
    its trials and their pictures (``{file id: PNG bytes}``)."""

    study: Study
    trials: tuple[Trial, ...]
    files: dict[str, bytes]


def _check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    names = tuple(methods)
    if not names:
        raise ValueError("give at least one method")
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"a method is given twice in {list(names)}")
    return names


def _png(img: Image.Image) -> bytes:
    side = max(img.size)
    if side < MIN_DISPLAY_SIDE:
        k = math.ceil(MIN_DISPLAY_SIDE / side)
        img = img.resize((img.width * k, img.height * k), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def _photo(sample: Sample, size: tuple[int, int]) -> Image.Image:
    """The sample's picture at the maps' (H, W), as RGB."""
    pixels = getattr(sample, "pixels", None)
    if pixels is not None:
        img = Image.fromarray(np.ascontiguousarray(pixels).astype(np.uint8), mode="RGB")
    else:
        from camlens.io import load_image

        assert sample.image_path is not None
        img = load_image(sample.image_path)
    h, w = size
    return img if img.size == (w, h) else img.resize((w, h), Image.Resampling.BILINEAR)


def _picture(ex: camlens.Explanation, b: int, k: int, photo: Image.Image) -> Image.Image:
    """One map as the participant sees it: a pixel-space map as an image (Fig. 1's style), a
    heatmap over the photo."""
    m = ex.maps[b, k]
    if m.dim() == 3:
        return pixel_space_image(m)
    return overlay(photo, m)


def _explain(rec: ModelRecord, samples: Sequence[Sample], targets: Sequence[Sequence[int]],
             methods: Sequence[str], layer: str | None, batch_size: int
             ) -> list[tuple[Image.Image, dict[str, list[Image.Image]]]]:
    """Per sample: its photo and, per method, one picture per target."""
    out: list[tuple[Image.Image, dict[str, list[Image.Image]]]] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        xs = [load_input(s, rec.preprocess) for s in chunk]
        shapes = {tuple(x.shape) for x in xs}
        groups = [[i for i, x in enumerate(xs) if tuple(x.shape) == shape] for shape in shapes]
        pictures: dict[int, tuple[Image.Image, dict[str, list[Image.Image]]]] = {}
        for idx in groups:
            x = torch.stack([xs[i] for i in idx]).to(rec.device)
            target = torch.tensor([list(targets[start + i]) for i in idx])
            exs = camlens.explain(rec.model, x, method=list(methods),
                                  layer=layer or rec.default_layer, target=target)
            size = (int(x.shape[-2]), int(x.shape[-1]))
            for b, i in enumerate(idx):
                photo = _photo(chunk[i], size)
                pictures[i] = (photo, {
                    m: [_picture(ex, b, k, photo) for k in range(target.shape[1])]
                    for m, ex in exs.items()})
        out += [pictures[i] for i in range(len(chunk))]
    return out


def _names(rec: ModelRecord, sample_labels: Sequence[Any], index: Any) -> list[str]:
    """Display names of ground-truth labels: the model's label names when it has them."""
    out = []
    for lab in sample_labels:
        c = index(lab)
        out.append(rec.labels[c] if rec.labels and 0 <= c < len(rec.labels) else str(lab))
    return out


def _balanced_flags(n: int, rng: np.random.Generator) -> list[bool]:
    """``n`` booleans, half of them True (one more False when n is odd), in random order."""
    flags = [True] * (n // 2) + [False] * (n - n // 2)
    rng.shuffle(flags)
    return flags


def class_discrimination(
    data: SamplesLike, model: Any, methods: Sequence[str] = PAPER_CLASS_METHODS, *,
    pairs: int = 90, ratings: int = 9, seed: int = 0, layer: str | None = None,
    weights: str | None = None, device: str = "cpu", batch_size: int = 8,
    title: str | None = None,
) -> StudyPlan:
    """Sec. 5.1's study: ``pairs / 2`` images with exactly two annotated categories (chosen
    at random with ``seed``), both categories of each, every method: ``pairs * len(methods)``
    trials. ``ratings``: how many ratings per trial the study aims for (``ratings * 2 *
    len(methods)`` participants, see :func:`camlens.study.store.latin_square_order`)."""
    names = _check_methods(methods)
    if pairs < 2 or pairs % 2:
        raise ValueError(f"--pairs must be a positive even number (each image gives both of "
                         f"its categories; the paper: 90 pairs = 45 images), got {pairs}")
    if ratings < 1:
        raise ValueError(f"ratings must be at least 1, got {ratings}")
    samples = as_samples(data)
    eligible = [s for s in samples if len(s.labels) == 2]
    if len(eligible) * 2 < pairs:
        raise ValueError(
            f"the dataset has {len(eligible)} image(s) with exactly two annotated categories "
            f"({2 * len(eligible)} image-category pairs); {pairs} pairs need {pairs // 2} "
            "(for world v2: synthetic:seed=S,n=N,kind=two with N >= pairs / 2)")
    rng = np.random.default_rng(seed)
    chosen = [eligible[int(i)] for i in sorted(rng.choice(len(eligible), pairs // 2,
                                                          replace=False))]
    rec = resolve_model(model, device=device, weights=weights)
    index = label_index(rec.labels or None, None)
    targets = [[index(lab) for lab in s.labels] for s in chosen]
    rendered = _explain(rec, chosen, targets, names, layer, batch_size)
    files: dict[str, bytes] = {}
    trials: list[Trial] = []
    m = len(names)
    first = {name: _balanced_flags(pairs, rng) for name in names}
    for item, (s, (photo, pics)) in enumerate(zip(chosen, rendered)):
        photo_id = new_id()
        files[photo_id] = _png(photo)
        categories = _names(rec, s.labels, index)
        for cat in range(2):
            for j, name in enumerate(names):
                pic_id = new_id()
                files[pic_id] = _png(pics[name][cat])
                shown_first = first[name].pop()
                order = [cat, 1 - cat] if shown_first else [1 - cat, cat]
                options = tuple((str(v), categories[c]) for v, c in enumerate(order))
                trials.append(Trial(
                    new_id(), item, j + m * cat, name, photo_id, (pic_id,), "", options,
                    str(order.index(cat)),
                    {"image": str(s.image_id), "category": categories[cat],
                     "other": categories[1 - cat], "class": targets[item][cat]}))
    study = Study("class-discrimination", title or "Which category does the explanation show?",
                  CLASS_QUESTION, names, ratings,
                  {"data": data if isinstance(data, str) else f"{len(samples)} samples",
                   "model": rec.name, "layer": layer or rec.default_layer, "pairs": pairs},
                  seed)
    return StudyPlan(study, tuple(trials), files)


def trust(
    data: SamplesLike, model_a: Any, model_b: Any,
    methods: Sequence[str] = PAPER_TRUST_METHODS, *, images: int = 50, ratings: int = 9,
    seed: int = 0, layer_a: str | None = None, layer_b: str | None = None,
    weights_a: str | None = None, weights_b: str | None = None, device: str = "cpu",
    batch_size: int = 8, title: str | None = None,
) -> StudyPlan:
    """Sec. 5.2's study: up to ``images`` images (in dataset order) with one annotated
    category that both models predict (top-1); per image and method, model A's and model B's
    explanation of that category side by side in a random (balanced) order. The results give
    model A's relative reliability over model B (the paper: A = VGG-16, B = AlexNet)."""
    names = _check_methods(methods)
    if images < 1:
        raise ValueError(f"images must be at least 1, got {images}")
    samples = [s for s in as_samples(data) if len(s.labels) == 1]
    rec_a = resolve_model(model_a, device=device, weights=weights_a)
    rec_b = resolve_model(model_b, device=device, weights=weights_b)
    index_a = label_index(rec_a.labels or None, None)
    index_b = label_index(rec_b.labels or None, None)
    chosen: list[Sample] = []
    for start in range(0, len(samples), batch_size):
        if len(chosen) >= images:
            break
        for s in samples[start:start + batch_size]:
            xa = load_input(s, rec_a.preprocess)[None].to(rec_a.device)
            xb = load_input(s, rec_b.preprocess)[None].to(rec_b.device)
            top_a = int(predict(rec_a.model, xa).argmax(1)[0])
            top_b = int(predict(rec_b.model, xb).argmax(1)[0])
            if top_a == index_a(s.labels[0]) and top_b == index_b(s.labels[0]):
                chosen.append(s)
    chosen = chosen[:images]
    if not chosen:
        raise ValueError(f"no image with one annotated category that both {rec_a.name} and "
                         f"{rec_b.name} predict correctly among {len(samples)}; give more data")
    pics_a = _explain(rec_a, chosen, [[index_a(s.labels[0])] for s in chosen], names, layer_a,
                      batch_size)
    pics_b = _explain(rec_b, chosen, [[index_b(s.labels[0])] for s in chosen], names, layer_b,
                      batch_size)
    rng = np.random.default_rng(seed)
    a_first = {name: _balanced_flags(len(chosen), rng) for name in names}
    files: dict[str, bytes] = {}
    trials: list[Trial] = []
    for item, s in enumerate(chosen):
        photo, by_method_a = pics_a[item]
        by_method_b = pics_b[item][1]
        photo_id = new_id()
        files[photo_id] = _png(photo)
        category = _names(rec_a, s.labels, index_a)[0]
        for j, name in enumerate(names):
            ids = new_id(), new_id()
            files[ids[0]] = _png(by_method_a[name][0])
            files[ids[1]] = _png(by_method_b[name][0])
            a_is_1 = a_first[name].pop()
            panels = ids if a_is_1 else (ids[1], ids[0])
            trials.append(Trial(
                new_id(), item, j, name, photo_id, panels, f"Predicted category: {category}",
                TRUST_SCALE, "1" if a_is_1 else "2",
                {"image": str(s.image_id), "category": category, "model_a": rec_a.name,
                 "model_b": rec_b.name}))
    study = Study("trust", title or "Which model do you trust more?", TRUST_QUESTION, names,
                  ratings,
                  {"data": data if isinstance(data, str) else f"{len(samples)} samples",
                   "model_a": rec_a.name, "model_b": rec_b.name,
                   "layer_a": layer_a or rec_a.default_layer,
                   "layer_b": layer_b or rec_b.default_layer, "images": len(chosen)},
                  seed)
    return StudyPlan(study, tuple(trials), files)
