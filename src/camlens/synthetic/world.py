"""A seeded synthetic world of cluttered scenes with exact ground truth.

Every scene holds one or more objects drawn from :data:`CLASSES`. A class is a unique
combination of shape, colour and texture (see :data:`CLASS_STYLES`). Objects are rasterised
without anti-aliasing, so each pixel's colour comes from exactly one source (background or one
object) and the ground truth is exact:

- ``SceneObject.mask``: boolean (H, W), the object's *visible* pixels (objects drawn later
  occlude earlier ones, and the occluded pixels are removed from the earlier masks);
- ``SceneObject.box``: the inclusive box ``(x0, y0, x1, y1)`` of those visible pixels
  (x = column, y = row), i.e. exactly the mask's extent;
- ``SceneObject.label``: the class index into :data:`CLASSES`.

The background is low-contrast clutter (grey level, tint, linear gradient, broad blotches,
pixel noise) plus small distractor *fragments* (strokes and blobs, often in object colours)
that are not full objects and belong to no mask.

Sampling order is layout first (classes, sizes, positions, rotations, texture parameters),
then background, so the same generator state gives the same masks whatever the background
or fill options: tests use this to check the masks against a flat-background rendering.

Pure numpy; Pillow only for reading and writing PNGs (:func:`save_dataset`,
:func:`load_synthetic`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from camlens.evaluate.datasets import rle_decode, rle_encode  # COCO RLE, one implementation

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "CLASSES",
    "CLASS_STYLES",
    "NUM_CLASSES",
    "SceneObject",
    "Scene",
    "make_scene",
    "make_dataset",
    "to_tensors",
    "save_dataset",
    "load_synthetic",
    "rle_encode",
    "rle_decode",
]


@dataclass(frozen=True)
class _Style:
    shape: str
    rgb: tuple[float, float, float]
    texture: str  # "solid" | "stripes" | "checker" | "dots"
    dark: tuple[float, float] = (0.45, 0.6)  # range of the second tone's brightness factor


#: class name -> (shape, base colour, texture); every class differs in all three.
CLASS_STYLES: dict[str, _Style] = {
    "disk": _Style("disk", (0.86, 0.16, 0.14), "solid"),
    "square": _Style("square", (0.16, 0.32, 0.92), "stripes"),
    "triangle": _Style("triangle", (0.14, 0.74, 0.22), "checker"),
    "ring": _Style("ring", (0.95, 0.84, 0.12), "solid"),
    "cross": _Style("cross", (0.84, 0.22, 0.80), "dots"),
    "star": _Style("star", (0.10, 0.80, 0.86), "solid"),
    "ellipse": _Style("ellipse", (0.96, 0.55, 0.10), "stripes"),
    "diamond": _Style("diamond", (0.92, 0.92, 0.90), "checker", (0.12, 0.22)),
}

#: Class names; a label is an index into this tuple.
CLASSES: tuple[str, ...] = tuple(CLASS_STYLES)
NUM_CLASSES = len(CLASSES)

# Radius range (pixels) of an object at size 64; scaled linearly with the image size.
_RADIUS_64 = (7.0, 12.0)
# Every shape lies within _EXTENT * radius of its centre (the star and triangle reach 1.1 R).
_EXTENT = 1.12
# Object tones are kept inside this range so that no object pixel can take a near-black,
# near-white or flat-test background colour.
_TONE_RANGE = (0.05, 0.95)


@dataclass
class SceneObject:
    """One object's exact ground truth.

    ``box`` is inclusive ``(x0, y0, x1, y1)`` in pixels (x: column, y: row) and equals the
    extent of ``mask`` (the visible pixels, boolean (H, W)).
    """

    label: int
    box: tuple[int, int, int, int]
    mask: np.ndarray

    @property
    def name(self) -> str:
        return CLASSES[self.label]

    @property
    def area(self) -> int:
        return int(self.mask.sum())


@dataclass
class Scene:
    """An image (H, W, 3) uint8 and the ground truth of every object in it."""

    image: np.ndarray
    objects: list[SceneObject] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    @property
    def labels(self) -> list[int]:
        """Sorted distinct class indices present in the scene."""
        return sorted({o.label for o in self.objects})

    def multi_hot(self) -> np.ndarray:
        y = np.zeros(NUM_CLASSES, dtype=np.float32)
        y[self.labels] = 1.0
        return y


# --------------------------------------------------------------------------- shapes


def _polygon(u: np.ndarray, v: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test of the points (u, v) against ``verts`` (K, 2)."""
    inside = np.zeros(u.shape, dtype=bool)
    x1, y1 = verts[:, 0], verts[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    for a, b, c, d in zip(x1, y1, x2, y2):
        if b == d:
            continue  # a horizontal edge never crosses a horizontal ray
        crosses = (b > v) != (d > v)
        x_at = a + (v - b) * (c - a) / (d - b)
        inside ^= crosses & (u < x_at)
    return inside


def _regular(n: int, radius: float, phase: float = np.pi / 2) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of ``shape`` of radius ``r`` in local (rotated, centred) coordinates."""
    if shape == "disk":
        return u * u + v * v <= r * r
    if shape == "square":
        s = 0.8 * r
        return (np.abs(u) <= s) & (np.abs(v) <= s)
    if shape == "triangle":
        return _polygon(u, v, _regular(3, 1.1 * r))
    if shape == "ring":
        d2 = u * u + v * v
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if shape == "cross":
        w, h = 0.3 * r, 0.95 * r
        return ((np.abs(u) <= w) & (np.abs(v) <= h)) | ((np.abs(v) <= w) & (np.abs(u) <= h))
    if shape == "star":
        outer, inner = _regular(5, 1.1 * r), _regular(5, 0.45 * r, np.pi / 2 + np.pi / 5)
        verts = np.empty((10, 2))
        verts[0::2], verts[1::2] = outer, inner
        return _polygon(u, v, verts)
    if shape == "ellipse":
        return (u / r) ** 2 + (v / (0.55 * r)) ** 2 <= 1.0
    if shape == "diamond":
        verts = np.array([[1.1 * r, 0.0], [0.0, 0.75 * r], [-1.1 * r, 0.0], [0.0, -0.75 * r]])
        return _polygon(u, v, verts)
    raise ValueError(f"unknown shape {shape!r}")


def _texture(texture: str, u: np.ndarray, v: np.ndarray, params: dict) -> np.ndarray:
    """Boolean 'second tone' pattern for ``texture`` in local coordinates."""
    if texture == "solid":
        return np.zeros(u.shape, dtype=bool)
    if texture == "stripes":
        return np.floor((u + params["phase_u"]) / params["period"]).astype(np.int64) % 2 == 1
    if texture == "checker":
        p = params["period"]
        iu = np.floor((u + params["phase_u"]) / p).astype(np.int64)
        iv = np.floor((v + params["phase_v"]) / p).astype(np.int64)
        return (iu + iv) % 2 == 1
    if texture == "dots":
        p = params["period"]
        du = (u + params["phase_u"]) % p - p / 2
        dv = (v + params["phase_v"]) % p - p / 2
        return du * du + dv * dv <= (0.3 * p) ** 2
    raise ValueError(f"unknown texture {texture!r}")


@dataclass
class _Placed:
    label: int
    cx: float
    cy: float
    radius: float
    angle: float
    tone_a: np.ndarray
    tone_b: np.ndarray
    tex: dict
    full: np.ndarray  # full (unoccluded) mask


def _local(size: int, cx: float, cy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates rotated by -angle about (cx, cy), each (size, size)."""
    t = np.arange(size) + 0.5
    dx, dy = t[None, :] - cx, t[:, None] - cy
    c, s = np.cos(angle), np.sin(angle)
    return c * dx + s * dy, -s * dx + c * dy


def _tones(rng: np.random.Generator, style: _Style) -> tuple[np.ndarray, np.ndarray]:
    base = np.asarray(style.rgb) * rng.uniform(0.85, 1.1) + rng.uniform(-0.06, 0.06, size=3)
    tone_a = np.clip(base, *_TONE_RANGE)
    tone_b = np.clip(tone_a * rng.uniform(*style.dark), *_TONE_RANGE)
    return tone_a, tone_b


def _layout(
    rng: np.random.Generator,
    size: int,
    n_objects: int | tuple[int, int],
    distinct: bool,
    max_occlusion: float,
    radius: tuple[float, float] | None,
    tries: int = 60,
) -> list[_Placed]:
    lo, hi = (n_objects, n_objects) if isinstance(n_objects, (int, np.integer)) else n_objects
    if not 1 <= lo <= hi:
        raise ValueError(f"n_objects must satisfy 1 <= lo <= hi, got {n_objects!r}")
    if distinct and hi > NUM_CLASSES:
        raise ValueError(f"at most {NUM_CLASSES} distinct objects per scene")
    n = int(rng.integers(lo, hi + 1))
    labels = rng.choice(NUM_CLASSES, size=n, replace=not distinct)
    r_lo, r_hi = radius if radius is not None else tuple(x * size / 64 for x in _RADIUS_64)
    placed: list[_Placed] = []
    visible: list[np.ndarray] = []
    for label in labels:
        style = CLASS_STYLES[CLASSES[int(label)]]
        for _ in range(tries):
            r = float(rng.uniform(r_lo, r_hi))
            margin = _EXTENT * r
            if size < 2 * margin + 1:
                raise ValueError(f"image size {size} too small for radius {r:.1f}")
            cx, cy = (float(x) for x in rng.uniform(margin, size - margin, size=2))
            angle = float(rng.uniform(0, 2 * np.pi))
            u, v = _local(size, cx, cy, angle)
            full = _shape_mask(style.shape, u, v, r)
            # The new object is drawn on top: every earlier object must keep enough of itself.
            ok = all(
                (vis & ~full).sum() >= (1.0 - max_occlusion) * p.full.sum()
                for vis, p in zip(visible, placed)
            )
            if ok:
                break
        else:
            continue  # could not place this one without too much occlusion: drop it
        tone_a, tone_b = _tones(rng, style)
        tex = {
            "period": float(rng.uniform(3.0, 4.5) * size / 64),
            "phase_u": float(rng.uniform(0, 10)),
            "phase_v": float(rng.uniform(0, 10)),
        }
        visible = [vis & ~full for vis in visible] + [full]
        placed.append(_Placed(int(label), cx, cy, r, angle, tone_a, tone_b, tex, full))
    return placed


# --------------------------------------------------------------------------- background


def _background(rng: np.random.Generator, size: int, n_distractors: tuple[int, int]) -> np.ndarray:
    t = (np.arange(size) + 0.5) / size  # pixel centres in [0, 1]
    grey = rng.uniform(0.28, 0.58)
    img = np.full((size, size, 3), grey) + rng.normal(0.0, 0.03, size=3)
    theta = rng.uniform(0, 2 * np.pi)
    amp = rng.uniform(0.0, 0.2)  # a linear gradient, zero-mean
    ramp = np.sin(theta) * (t[:, None] - 0.5) + np.cos(theta) * (t[None, :] - 0.5)
    img += (amp * ramp)[..., None]
    for _ in range(int(rng.integers(1, 4))):  # broad low-contrast blotches
        bx, by = rng.uniform(0, 1, size=2)
        s = rng.uniform(0.1, 0.3)
        tint = rng.uniform(-0.08, 0.08, size=3)
        gy, gx = np.exp(-((t - by) ** 2) / (2 * s * s)), np.exp(-((t - bx) ** 2) / (2 * s * s))
        img += np.outer(gy, gx)[..., None] * tint
    img += rng.normal(0.0, rng.uniform(0.01, 0.035), size=img.shape)
    # Distractor fragments: strokes and blobs too small to be objects, often in class colours.
    lo, hi = n_distractors
    scale = size / 64
    reach = int(np.ceil(10 * scale))  # every fragment lies within this many pixels of (x0, y0)
    for _ in range(int(rng.integers(lo, hi + 1))):
        if rng.random() < 0.5:
            rgb = np.asarray(CLASS_STYLES[CLASSES[int(rng.integers(NUM_CLASSES))]].rgb)
            colour = np.clip(rgb * rng.uniform(0.5, 1.05) + rng.uniform(-0.06, 0.06, 3), 0, 1)
        else:
            colour = rng.uniform(0.05, 0.95, size=3)
        x0, y0 = rng.uniform(0, size, size=2)
        r0, r1 = max(int(y0) - reach, 0), min(int(y0) + reach + 1, size)
        c0, c1 = max(int(x0) - reach, 0), min(int(x0) + reach + 1, size)
        py = np.arange(r0, r1)[:, None] + 0.5
        px = np.arange(c0, c1)[None, :] + 0.5
        if rng.random() < 0.5:  # stroke: a thin segment
            a = rng.uniform(0, 2 * np.pi)
            length = rng.uniform(3, 9) * scale
            dx, dy = np.cos(a), np.sin(a)
            along = np.clip((px - x0) * dx + (py - y0) * dy, 0, length)
            d2 = (px - x0 - along * dx) ** 2 + (py - y0 - along * dy) ** 2
            frag = d2 <= (rng.uniform(0.5, 0.9) * scale) ** 2
        else:  # blob: a small disk or square
            r = rng.uniform(1.0, 2.6) * scale
            if rng.random() < 0.5:
                frag = (px - x0) ** 2 + (py - y0) ** 2 <= r * r
            else:
                frag = (np.abs(px - x0) <= r) & (np.abs(py - y0) <= r)
        img[r0:r1, c0:c1][frag] = colour
    return img


# --------------------------------------------------------------------------- scenes


def _index_colour(i: int) -> np.ndarray:
    """A flat colour unique to object ``i`` (for exactness tests)."""
    return np.array([(16 + 9 * i) % 256, 200, 90], dtype=np.float64) / 255.0


def make_scene(
    rng: np.random.Generator,
    size: int = 64,
    n_objects: int | tuple[int, int] = (1, 3),
    *,
    distinct: bool = True,
    max_occlusion: float = 0.35,
    radius: tuple[float, float] | None = None,
    n_distractors: int | tuple[int, int] = (2, 6),
    background: str | Sequence[int] = "clutter",
    object_fill: str = "texture",
) -> Scene:
    """Sample one scene from ``rng``.

    Args:
        rng: the generator; the scene is a pure function of its state and the options.
        size: image height and width in pixels.
        n_objects: an exact count or an inclusive range ``(lo, hi)`` to draw from uniformly.
            Fewer objects may result (never fewer than one) when an object cannot be placed.
        distinct: draw classes without replacement (at most one object per class).
        max_occlusion: the largest fraction of an object's own area that later objects may
            cover.
        radius: object radius range in pixels; default (7, 12) * size / 64.
        n_distractors: count or range of distractor fragments in the clutter background.
        background: ``"clutter"`` (default) or a flat RGB uint8 triple (then no distractors
            and no noise), used to check masks exactly.
        object_fill: ``"texture"`` (the class colour and texture) or ``"index"`` (object
            ``i`` painted a flat colour unique to ``i``; for checking occlusion bookkeeping).
    """
    placed = _layout(rng, size, n_objects, distinct, max_occlusion, radius)
    if isinstance(background, str):
        if background != "clutter":
            raise ValueError(f"background must be 'clutter' or an RGB triple, got {background!r}")
        lo, hi = (n_distractors, n_distractors) if isinstance(n_distractors, int) else n_distractors
        img = _background(rng, size, (lo, hi))
    else:
        img = np.empty((size, size, 3))
        img[:] = np.asarray(background, dtype=np.float64) / 255.0
    if object_fill not in ("texture", "index"):
        raise ValueError(f"object_fill must be 'texture' or 'index', got {object_fill!r}")
    img = np.clip(img, 0.0, 1.0)
    masks: list[np.ndarray] = []
    for i, p in enumerate(placed):
        style = CLASS_STYLES[CLASSES[p.label]]
        if object_fill == "index":
            img[p.full] = _index_colour(i)
        else:
            u, v = _local(size, p.cx, p.cy, p.angle)
            second = _texture(style.texture, u, v, p.tex)
            img[p.full & ~second] = p.tone_a
            img[p.full & second] = p.tone_b
        masks = [m & ~p.full for m in masks] + [p.full.copy()]
    image = np.round(img * 255.0).astype(np.uint8)
    objects = [SceneObject(p.label, _mask_box(m), m) for p, m in zip(placed, masks)]
    return Scene(image=image, objects=objects)


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("empty mask has no box")
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def make_dataset(n: int, seed: int, **kwargs) -> list[Scene]:
    """``n`` scenes, scene ``i`` drawn from ``np.random.default_rng((seed, i))``.

    Deterministic per seed; scene ``i`` does not depend on ``n``, so the first ``m`` scenes of
    a larger set with the same seed are the set of ``m``. ``kwargs`` go to :func:`make_scene`.
    """
    return [make_scene(np.random.default_rng((int(seed), i)), **kwargs) for i in range(n)]


def to_tensors(scenes: Sequence[Scene]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, H, W) float32 in [0, 1] and multi-hot labels (N, NUM_CLASSES) float32."""
    import torch

    images = np.stack([s.image for s in scenes]).astype(np.float32) / 255.0
    labels = np.stack([s.multi_hot() for s in scenes])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)


# --------------------------------------------------------------------------- files


ANNOTATIONS = "annotations.json"


def save_dataset(scenes: Sequence[Scene], folder: str | os.PathLike) -> Path:
    """Write ``images/NNNNN.png`` and ``annotations.json`` under ``folder``; returns the JSON path.

    The JSON holds ``classes`` and, per image, its file, height, width and objects, each with
    ``label``, ``class``, ``box`` (inclusive x0, y0, x1, y1) and ``mask`` (COCO-style
    uncompressed RLE, see :func:`rle_encode`). PNGs are lossless, so the round trip is exact.
    """
    from PIL import Image

    root = Path(folder)
    (root / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i, scene in enumerate(scenes):
        name = f"images/{i:05d}.png"
        Image.fromarray(np.ascontiguousarray(scene.image), mode="RGB").save(root / name)
        h, w = scene.size
        records.append(
            {
                "file": name,
                "height": h,
                "width": w,
                "objects": [
                    {
                        "label": int(o.label),
                        "class": CLASSES[o.label],
                        "box": [int(c) for c in o.box],
                        "mask": rle_encode(o.mask),
                    }
                    for o in scene.objects
                ],
            }
        )
    path = root / ANNOTATIONS
    with open(path, "w") as f:
        manifest = {"classes": list(CLASSES), "box_format": "x0y0x1y1_inclusive", "images": records}
        json.dump(manifest, f)
    return path


def load_synthetic(folder: str | os.PathLike) -> list[Scene]:
    """Read back a folder written by :func:`save_dataset`."""
    from PIL import Image

    root = Path(folder)
    with open(root / ANNOTATIONS) as f:
        data = json.load(f)
    if tuple(data["classes"]) != CLASSES:
        raise ValueError(f"{root}: classes {data['classes']} differ from {list(CLASSES)}")
    scenes = []
    for rec in data["images"]:
        with Image.open(root / rec["file"]) as im:
            image = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
        objects = []
        for o in rec["objects"]:
            x0, y0, x1, y1 = (int(c) for c in o["box"])
            objects.append(SceneObject(int(o["label"]), (x0, y0, x1, y1), rle_decode(o["mask"])))
        scenes.append(Scene(image=image, objects=objects))
    return scenes
