"""World v2: seeded scenes of part-built objects with exact per-pixel ground truth.

>>> from camlens.synthetic.v2 import make_scene, make_dataset
>>> scene = make_scene(np.random.default_rng(0))          # one labelled object, 112x112
>>> scene.objects[0].name, scene.objects[0].box           # class, inclusive (x0, y0, x1, y1)
>>> scene.concepts["part"]                                # (H, W) part index (0: none)
>>> scene.graph().caption()                               # "a large brown striped tabby"

Kinds of scene (``kind``):

- ``"single"``: one labelled object (ILSVRC-style), its box a share of the image drawn from
  :data:`SCALE_TARGETS` ``["ilsvrc"]``, maybe cut by the frame or by a foreground occluder;
- ``"multi"``: 2-4 objects of distinct classes (PASCAL/COCO-style, ``["pascal"]`` scales),
  later ones in front; no object loses more than ``max_occlusion`` of itself;
- ``"two"``: exactly two objects of two classes (Sec. 5.1's two-category images);
- ``"pair"``: two objects from a co-occurring pair of groups (Fig. 1's cat and dog).

Every pixel belongs to at most one object. Ground truth per scene: ``objects`` (class, visible
mask, box = the mask's extent, parts with their shape, colour and texture) and ``concepts``,
(H, W) uint8 maps: ``object`` (object index + 1), ``part`` (:data:`PARTS` index + 1),
``shape`` (:data:`SHAPES` + 1), ``colour`` (:data:`COLOURS` + 1, every pixel), ``texture``
(:data:`TEXTURES` + 1, every pixel); 0 means none. A pixel's colour concept is the named
colour its tone was drawn from, before lighting and noise. ``background["decoys"]`` lists the
decoys (background pieces that resemble a class not in the scene) as ``{"class", "box"}``, the
box bounding the decoy as painted (objects, occluders and the cue band painted later may cover
some of it; its pixels are those of the box with no object and a shape concept).

Bias (Sec. 6.3): with ``cue_rate=r`` a band of one of :data:`CUE_COLOURS` runs along the
bottom of the background (under the objects); it is the first object's class cue (its place in
its confusable group) with probability r, else one of the other cues at random.
``cue_rate=CUE_CHANCE`` (1/3) makes the cue independent of the class (the test condition).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from camlens.synthetic.v2.catalogue import (
    CLASS_SPECS,
    CLASSES,
    COOCCURRING,
    GROUPS,
    MAIN_PART,
    NUM_CLASSES,
    PALETTE,
    PARTS,
    SHAPES,
)  # fmt: skip
from camlens.synthetic.v2.primitives import inside
from camlens.synthetic.v2.render import (
    COLOUR_INDEX,
    TEXTURE_INDEX,
    TEXTURES,
    ObjectDraw,
    Window,
    background,
    blur,
    decoy,
    fragments,
    occluder,
    place,
    rasterise,
    sample_object,
)  # fmt: skip

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from camlens.synthetic.v2.graph import SceneGraph

__all__ = [
    "ObjectGT", "Scene", "make_scene", "make_dataset", "to_tensors", "SCALE_TARGETS",
    "CUE_COLOURS", "CUE_CHANCE", "class_cue", "KINDS", "TEXTURES", "HELDOUT_SEED",
]

KINDS = ("single", "multi", "two", "pair")

#: Seed of the held-out scenes nets are measured on; training never draws from it.
HELDOUT_SEED = 20251

#: Object scale = box area / image area. ``mean`` is the published per-class average
#: (image-net.org, ILSVRC 2012 analysis, "Average Object Scale": ILSVRC 0.358, PASCAL 0.241);
#: the Beta shape (a, b), truncated to [lo, hi], is ours (only the mean is published).
SCALE_TARGETS: dict[str, dict[str, Any]] = {
    "ilsvrc": {"mean": 0.358, "beta": (0.95, 1.7), "range": (0.02, 1.0)},
    "pascal": {"mean": 0.241, "beta": (1.0, 2.3), "range": (0.02, 0.7)},
}

CUE_COLOURS: tuple[str, ...] = ("magenta", "cyan", "lime")
CUE_CHANCE = 1.0 / len(CUE_COLOURS)
_BAND = 0.1  # share of the image height the cue band takes, at the bottom


def class_cue(label: int) -> int:
    """The cue (index into :data:`CUE_COLOURS`) that ``cue_rate`` ties to class ``label``: its
    place within its confusable group, so the cue tells apart exactly what is hard to tell."""
    return GROUPS[CLASS_SPECS[label].group].index(label)


@dataclass
class ObjectGT:
    """One object's exact ground truth.

    ``mask``: visible pixels, bool (H, W); ``box``: inclusive (x0, y0, x1, y1) = the mask's
    extent; ``parts``: part name -> {"shape", "colour", "colour2", "texture", "pixels"} (only
    visible parts); ``pose``: centre, pixels per local unit, angle, mirror.
    """

    label: int
    box: tuple[int, int, int, int]
    mask: np.ndarray
    parts: dict[str, dict[str, Any]]
    pose: dict[str, Any]

    @property
    def name(self) -> str:
        return CLASSES[self.label]

    @property
    def group(self) -> str:
        return CLASS_SPECS[self.label].group

    @property
    def supercategory(self) -> str:
        return CLASS_SPECS[self.label].supercategory

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def main(self) -> dict[str, Any]:
        """The main part's record (body, wall, crown...; another visible part if hidden)."""
        key = MAIN_PART[self.group]
        if key in self.parts:
            return self.parts[key]
        return max(self.parts.values(), key=lambda p: p["pixels"])


@dataclass
class Scene:
    """An image (H, W, 3) uint8, its objects and concept maps (see the module docstring)."""

    image: np.ndarray
    objects: list[ObjectGT]
    concepts: dict[str, np.ndarray] = field(default_factory=dict)
    background: dict[str, Any] = field(default_factory=dict)
    kind: str = "single"

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])

    @property
    def labels(self) -> list[int]:
        """Sorted distinct class indices present."""
        return sorted({o.label for o in self.objects})

    @property
    def label(self) -> int:
        """The class of a single-object scene."""
        if len(self.objects) != 1:
            raise ValueError(f"a {self.kind!r} scene with {len(self.objects)} objects has no "
                             "single label; use .labels")
        return self.objects[0].label

    def multi_hot(self) -> np.ndarray:
        y = np.zeros(NUM_CLASSES, dtype=np.float32)
        y[self.labels] = 1.0
        return y

    def part_mask(self, index: int, part: str) -> np.ndarray:
        """Visible pixels of object ``index``'s part ``part``, bool (H, W)."""
        if part not in PARTS:
            raise ValueError(f"unknown part {part!r}; parts are {PARTS}")
        c = self.concepts
        return (c["object"] == index + 1) & (c["part"] == PARTS.index(part) + 1)

    def graph(self) -> SceneGraph:
        from camlens.synthetic.v2.graph import SceneGraph

        return SceneGraph.from_scene(self)


def sample_fraction(rng: np.random.Generator, target: str) -> float:
    t = SCALE_TARGETS[target]
    lo, hi = t["range"]
    while True:
        f = float(rng.beta(*t["beta"]))
        if lo <= f <= hi:
            return f


def _choose_labels(rng: np.random.Generator, kind: str, n_objects: tuple[int, int]) -> list[int]:
    if kind == "single":
        return [int(rng.integers(NUM_CLASSES))]
    if kind == "multi":
        n = int(rng.integers(n_objects[0], n_objects[1] + 1))
        return [int(c) for c in rng.choice(NUM_CLASSES, size=n, replace=False)]
    if kind == "two":
        return [int(c) for c in rng.choice(NUM_CLASSES, size=2, replace=False)]
    if kind == "pair":
        ga, gb = COOCCURRING[int(rng.integers(len(COOCCURRING)))]
        pair = [int(rng.choice(GROUPS[ga])), int(rng.choice(GROUPS[gb]))]
        return pair if rng.random() < 0.5 else pair[::-1]
    raise ValueError(f"unknown scene kind {kind!r}; choose from {KINDS}")


def _layout(rng: np.random.Generator, labels: Sequence[int], size: int, target: str,
            max_occlusion: float, required: bool,
            odd_view: float) -> tuple[list[ObjectDraw], list[Window]]:
    draws: list[ObjectDraw] = []
    wins: list[Window] = []
    full: list[np.ndarray] = []
    for label in labels:
        obj = sample_object(rng, int(label), odd_view=odd_view)
        frac = sample_fraction(rng, target)
        for attempt in range(200 if required else 40):
            place(rng, obj, frac * 0.93**attempt, size)
            win = rasterise(obj, size)
            if win is None:
                continue
            m = win.full_mask(size)
            visible = [f & ~m for f in _visible(full)]
            if all(v.sum() >= (1.0 - max_occlusion) * f.sum() for v, f in zip(visible, full)):
                draws.append(obj)
                wins.append(win)
                full.append(m)
                break
        else:
            if required:
                raise RuntimeError(f"could not place class {CLASSES[label]} in 200 tries")
    return draws, wins


def _visible(full: list[np.ndarray]) -> list[np.ndarray]:
    """Visible masks of objects drawn in order (later in front)."""
    out = []
    for i, m in enumerate(full):
        v = m.copy()
        for later in full[i + 1 :]:
            v &= ~later
        out.append(v)
    return out


def make_scene(
    rng: np.random.Generator,
    size: int = 112,
    kind: str = "single",
    *,
    labels: Sequence[int] | None = None,
    n_objects: tuple[int, int] = (2, 4),
    scale: str | None = None,
    max_occlusion: float = 0.4,
    occluder_rate: float = 0.5,
    occluder_max: float = 0.6,
    clutter: tuple[int, int] = (2, 6),
    decoys: tuple[int, int] = (0, 2),
    odd_view: float = 0.1,
    blur_rate: float = 0.25,
    cue_rate: float | None = None,
    flat_background: tuple[int, int, int] | None = None,
    lighting: bool = True,
) -> Scene:
    """Sample one scene from ``rng`` (a pure function of its state and the options).

    Args:
        size: image height and width (112: the VGG-like net's last conv is 14x14 there).
        kind: see :data:`KINDS`. ``labels`` fixes the classes (in paint order) instead.
        scale: ``"ilsvrc"`` or ``"pascal"`` (:data:`SCALE_TARGETS`); default ilsvrc for single
            scenes, pascal otherwise.
        max_occlusion: the largest share of an object that other objects cover.
        occluder_rate: chance that an object gets a foreground occluder (a branch, post, bush).
        occluder_max: the largest share of an object that objects and its occluder cover.
        clutter: range of the number of background fragments.
        decoys: range of the number of background pieces that resemble other classes (one or
            two parts of an object of a class not in the scene; not objects: no labels).
        odd_view: chance that an object is seen turned by up to 57 degrees, not 20.
        blur_rate: chance that the image is out of focus (Gaussian blur, sigma 0.5-1.3 px).
        cue_rate: None (no cue band) or the rate at which the cue matches the class.
        flat_background: an RGB triple: no texture, clutter, decoys, occluders, shading,
            lighting, blur or noise, so every part shows its one or two tones exactly (tests).
        lighting: random gain, tint and noise (off: the tones as drawn).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown scene kind {kind!r}; choose from {KINDS}")
    if cue_rate is not None and not 0.0 <= cue_rate <= 1.0:
        raise ValueError(f"cue_rate must be in [0, 1] or None, got {cue_rate!r}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    if labels is not None:
        chosen = [int(c) for c in labels]
    else:
        chosen = _choose_labels(rng, kind, n_objects)
    if any(not 0 <= c < NUM_CLASSES for c in chosen) or not chosen:
        raise ValueError(f"labels must be 1+ class indices in [0, {NUM_CLASSES}), got {chosen}")
    target = scale or ("ilsvrc" if len(chosen) == 1 else "pascal")
    if target not in SCALE_TARGETS:
        raise ValueError(f"scale must be one of {sorted(SCALE_TARGETS)}, got {scale!r}")
    draws, wins = _layout(rng, chosen, size, target, max_occlusion, required=kind != "multi",
                          odd_view=odd_view)
    owner = np.zeros((size, size), dtype=np.int16)
    for i, w in enumerate(wins):
        owner[w.y0 : w.y1, w.x0 : w.x1][w.pid >= 0] = i + 1
    full_area = [int((w.pid >= 0).sum()) for w in wins]
    occ: list[tuple[Any, str, str]] = []
    if flat_background is None:
        for i in range(len(wins)):
            if rng.random() >= occluder_rate:
                continue
            ys, xs = np.nonzero(owner == i + 1)
            box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
            for _ in range(8):
                cand = occluder(rng, box)
                hit = _prim_mask(cand[0], size)
                kept = [int(((owner == j + 1) & ~hit).sum()) for j in range(len(wins))]
                if all(k >= (1.0 - occluder_max) * a for k, a in zip(kept, full_area)):
                    occ.append(cand)
                    owner[hit] = 0
                    break
    cue_rng = np.random.default_rng(int(rng.integers(2**63)))
    c = _Canvas(size)
    decoy_list: list[dict[str, Any]] = []
    if flat_background is None:
        img, colour, texture, bg = background(rng, size)
        c.img[:], c.colour[:], c.texture[:] = img, colour, texture
        lo, hi = clutter
        for prim, shape, name in fragments(rng, size, int(rng.integers(lo, hi + 1))):
            c.paint_flat(_prim_mask(prim, size), name, shape)
        for _ in range(int(rng.integers(decoys[0], decoys[1] + 1))):
            piece = decoy(rng, size, chosen)
            if piece is not None:
                c.paint_object(-1, *piece, shading=True)
                w = piece[1]
                ys, xs = np.nonzero(w.pid >= 0)
                decoy_list.append({"class": CLASSES[piece[0].label],
                                   "box": [int(xs.min()) + w.x0, int(ys.min()) + w.y0,
                                           int(xs.max()) + w.x0, int(ys.max()) + w.y0]})
    else:
        name = "grey"
        c.img[:] = np.asarray(flat_background, dtype=np.float64) / 255.0
        c.colour[:] = COLOUR_INDEX[name]
        c.texture[:] = TEXTURE_INDEX["plain"]
        bg = {"texture": "plain", "colours": [], "flat": list(flat_background)}
    bg["cue"] = None
    bg["decoys"] = decoy_list
    if cue_rate is not None and draws:
        cue = class_cue(draws[0].label)
        if cue_rng.random() >= cue_rate:
            others = [k for k in range(len(CUE_COLOURS)) if k != cue]
            cue = others[int(cue_rng.integers(len(others)))]
        band = np.zeros((size, size), dtype=bool)
        band[size - max(int(round(_BAND * size)), 1) :] = True
        c.paint_flat(band, CUE_COLOURS[cue], None)
        bg["cue"] = CUE_COLOURS[cue]
    for i, (obj, w) in enumerate(zip(draws, wins)):
        c.paint_object(i, obj, w, shading=flat_background is None)
    for prim, shape, name in occ:
        c.paint_flat(_prim_mask(prim, size), name, shape)
    if flat_background is None and lighting:
        if rng.random() < blur_rate:
            c.img = blur(c.img, float(rng.uniform(0.5, 1.3)))
        gain = rng.uniform(0.75, 1.2) * (1.0 + rng.normal(0.0, 0.035, size=3))
        c.img = c.img * gain + rng.normal(0.0, rng.uniform(0.01, 0.04), size=c.img.shape)
    image = np.round(np.clip(c.img, 0.0, 1.0) * 255.0).astype(np.uint8)
    objects = _ground_truth(draws, c)
    return Scene(image, objects, c.maps(), bg, kind)


def _prim_mask(prim: Any, size: int) -> np.ndarray:
    """Pixels (H, W) whose centres lie in ``prim`` (pixel coordinates)."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    return inside(prim, x, y)


class _Canvas:
    """The image being painted and its concept maps."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.img = np.zeros((size, size, 3))
        z = lambda: np.zeros((size, size), dtype=np.uint8)  # noqa: E731
        self.object = np.zeros((size, size), dtype=np.int16)
        self.part, self.shape, self.colour, self.texture = z(), z(), z(), z()

    def paint_flat(self, m: np.ndarray, colour: str, shape: str | None) -> None:
        rgb = np.asarray(PALETTE[colour])
        self.img[m] = rgb
        self.object[m] = 0
        self.part[m] = 0
        self.shape[m] = SHAPES.index(shape) + 1 if shape else 0
        self.colour[m] = COLOUR_INDEX[colour]
        self.texture[m] = TEXTURE_INDEX["plain"]

    def paint_object(self, i: int, obj: ObjectDraw, w: Window, shading: bool) -> None:
        """Paint object ``i`` (``i = -1``: a decoy: its pixels get no object and no part)."""
        sl = (slice(w.y0, w.y1), slice(w.x0, w.x1))
        shade = 1.0 - (obj.shade if shading else 0.0) * np.clip(w.v, -1.0, 1.0)
        for k, p in enumerate(obj.parts):
            m = w.pid == k
            if not m.any():
                continue
            sec = w.second & m
            first = m & ~sec
            img = self.img[sl]
            img[first] = p.rgb * shade[first][:, None]
            self.colour[sl][first] = COLOUR_INDEX[p.colour]
            if sec.any():
                img[sec] = p.rgb2 * shade[sec][:, None]
                self.colour[sl][sec] = COLOUR_INDEX[p.colour2 or p.colour]
            self.object[sl][m] = i + 1
            self.part[sl][m] = PARTS.index(p.name) + 1 if i >= 0 else 0
            self.shape[sl][m] = SHAPES.index(p.shape) + 1
            self.texture[sl][m] = TEXTURE_INDEX[p.texture]

    def maps(self) -> dict[str, np.ndarray]:
        return {"object": self.object.astype(np.uint8), "part": self.part, "shape": self.shape,
                "colour": self.colour, "texture": self.texture}


def _ground_truth(draws: list[ObjectDraw], c: _Canvas) -> list[ObjectGT]:
    out = []
    for i, obj in enumerate(draws):
        mask = c.object == i + 1
        if not mask.any():
            continue
        ys, xs = np.nonzero(mask)
        parts = {}
        for p in obj.parts:
            n = int((mask & (c.part == PARTS.index(p.name) + 1)).sum())
            if n:
                parts[p.name] = {"shape": p.shape, "colour": p.colour, "colour2": p.colour2,
                                 "texture": p.texture, "pixels": n}
        pose = {"cx": obj.cx, "cy": obj.cy, "scale": obj.scale, "angle": obj.angle,
                "flip": obj.flip}
        out.append(ObjectGT(obj.label, (int(xs.min()), int(ys.min()), int(xs.max()),
                                        int(ys.max())), mask, parts, pose))
    return out


def make_dataset(n: int, seed: int, start: int = 0, **kwargs: Any) -> list[Scene]:
    """Scenes ``start .. start+n-1``; scene ``i`` is drawn from ``default_rng((seed, i))``, so
    it depends on neither ``n`` nor ``start``. ``kwargs`` go to :func:`make_scene`."""
    return [make_scene(np.random.default_rng((int(seed), i)), **kwargs)
            for i in range(start, start + n)]


def to_tensors(scenes: Sequence[Scene]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, H, W) float32 in [0, 1] and class indices (N,) int64 of single scenes."""
    import torch

    images = np.stack([s.image for s in scenes]).astype(np.float32) / 255.0
    labels = np.array([s.label for s in scenes], dtype=np.int64)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)

