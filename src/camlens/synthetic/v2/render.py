"""Sampling and exact rasterisation of world v2's objects, background and clutter.

An object is sampled (:func:`sample_object`) as parts in its local frame plus a pose (mirror,
rotation), then placed (:func:`place`: a scale and a centre that give its box a chosen share of
the image) and rasterised in its own window (:func:`rasterise`): every pixel centre gets the
index of the top-most part covering it, or -1. Nothing is anti-aliased, so ownership is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from camlens.synthetic.v2.catalogue import CLASS_SPECS, FAMILIES, PALETTE, PartGeom
from camlens.synthetic.v2.primitives import Prim, capsule, ellipse, extent, inside, poly, rect
from camlens.synthetic.v2.textures import sample_params, second_tone

__all__ = [
    "PartDraw", "ObjectDraw", "Window", "sample_object", "place", "rasterise", "TEXTURES",
    "background", "fragments", "occluder", "decoy", "blur",
]

#: Texture concepts (index = position + 1): the part textures, then the background's own.
TEXTURES: tuple[str, ...] = (
    "plain", "striped", "banded", "spotted", "checkered", "patched", "bricks", "waves",
)
_BG_KINDS = ("plain", "striped", "checkered", "patched", "bricks", "waves")
_BG_COLOURS = ("green", "olive", "tan", "grey", "sky", "brown", "cream", "blue", "dark green",
               "white", "teal", "black")  # fmt: skip
_CLUTTER_COLOURS = tuple(c for c in PALETTE if c not in ("magenta", "cyan", "lime"))
COLOUR_INDEX = {c: i + 1 for i, c in enumerate(PALETTE)}
TEXTURE_INDEX = {t: i + 1 for i, t in enumerate(TEXTURES)}


@dataclass
class PartDraw:
    """A part ready to draw: geometry, colour names, texture and the two tones (RGB)."""

    name: str
    shape: str
    prims: list[Prim]
    colour: str
    texture: str = "plain"
    colour2: str | None = None
    tex_params: tuple[float, ...] = ()
    rgb: np.ndarray = field(default_factory=lambda: np.zeros(3))
    rgb2: np.ndarray = field(default_factory=lambda: np.zeros(3))


@dataclass
class ObjectDraw:
    """A sampled object: class, parts, pose and (once placed) pixel scale and centre."""

    label: int
    parts: list[PartDraw]
    angle: float
    flip: bool
    shade: float  # brightness slope along local v (light from above)
    local_box: tuple[float, float, float, float]  # extent after mirror + rotation, local units
    scale: float = 0.0
    cx: float = 0.0
    cy: float = 0.0


@dataclass
class Window:
    """An object's rasterisation: rows y0:y1, columns x0:x1 of the image; ``pid`` (h, w) the
    index of the top-most part at each pixel (-1: none); ``second`` its second tone; ``v`` the
    local v coordinate (for shading)."""

    y0: int
    y1: int
    x0: int
    x1: int
    pid: np.ndarray
    second: np.ndarray
    v: np.ndarray

    def full_mask(self, size: int) -> np.ndarray:
        m = np.zeros((size, size), dtype=bool)
        m[self.y0 : self.y1, self.x0 : self.x1] = self.pid >= 0
        return m


def _tone(rng: np.random.Generator, name: str, gain: float) -> np.ndarray:
    rgb = np.asarray(PALETTE[name]) * gain + rng.normal(0.0, 0.025, size=3)
    return np.clip(rgb, 0.02, 0.98)


def sample_object(rng: np.random.Generator, label: int, max_angle: float = 0.35,
                  odd_view: float = 0.0, odd_angle: float = 1.0) -> ObjectDraw:
    """Sample an object of class ``label``: geometry, colours, textures, pose (turned by up to
    ``max_angle`` radians; with probability ``odd_view``, an unusual view, up to ``odd_angle``)."""
    spec = CLASS_SPECS[label]
    builder, ranges, _ = FAMILIES[spec.group]
    g = {k: float(rng.uniform(*spec.geometry.get(k, r))) for k, r in ranges.items()}
    geoms: list[PartGeom] = builder(g, rng)
    chosen: dict[str, str] = {}
    for part, c in spec.colours.items():
        if isinstance(c, tuple):
            chosen[part] = str(c[int(rng.integers(len(c)))])
        elif c.startswith("="):
            chosen[part] = chosen[c[1:]]
        else:
            chosen[part] = c
    gain = float(rng.uniform(0.85, 1.12))
    parts = []
    for name, shape, prims in geoms:
        p = PartDraw(name, shape, prims, chosen[name])
        p.rgb = _tone(rng, p.colour, gain)
        if name in spec.textures:
            kind, c2, period, coverage = spec.textures[name]
            p.texture, p.colour2 = kind, c2
            p.tex_params = sample_params(rng, kind, period, coverage)
            p.rgb2 = _tone(rng, c2, gain)
        parts.append(p)
    angle = float(rng.uniform(-max_angle, max_angle))
    if odd_view > 0.0 and rng.random() < odd_view:
        angle = float(rng.uniform(-odd_angle, odd_angle))
    flip = bool(rng.random() < 0.5)
    boxes = np.array([extent(q, angle, flip) for p in parts for q in p.prims])
    local_box = (float(boxes[:, 0].min()), float(boxes[:, 1].min()),
                 float(boxes[:, 2].max()), float(boxes[:, 3].max()))
    return ObjectDraw(label, parts, angle, flip, float(rng.uniform(0.0, 0.2)), local_box)


def place(rng: np.random.Generator, obj: ObjectDraw, fraction: float, size: int,
          keep: float = 0.5) -> None:
    """Set ``obj``'s scale and centre so that its box, clipped to the image, covers about
    ``fraction`` of the image (never less than ``keep`` of the box inside the frame)."""
    xmin, ymin, xmax, ymax = obj.local_box
    a, b = xmax - xmin, ymax - ymin
    S = float(size)
    s = S * np.sqrt(fraction / (a * b))
    if max(a, b) * s > S:  # the longer side is cut by the frame: solve for the clipped area
        s = fraction * S / min(a, b)
        if min(a, b) * s > S:
            s = S / min(a, b)
    s = min(s, S * np.sqrt(fraction / (keep * a * b)))
    w, h = a * s, b * s
    bx = rng.uniform(0.0, S - w) if w <= S else rng.uniform(S - w, 0.0)
    by = rng.uniform(0.0, S - h) if h <= S else rng.uniform(S - h, 0.0)
    obj.scale, obj.cx, obj.cy = float(s), float(bx - s * xmin), float(by - s * ymin)


def rasterise(obj: ObjectDraw, size: int) -> Window | None:
    """The object's parts at pixel resolution (None when no pixel centre is covered)."""
    s = obj.scale
    xmin, ymin, xmax, ymax = obj.local_box
    x0 = max(int(np.floor(obj.cx + s * xmin)) - 1, 0)
    x1 = min(int(np.ceil(obj.cx + s * xmax)) + 1, size)
    y0 = max(int(np.floor(obj.cy + s * ymin)) - 1, 0)
    y1 = min(int(np.ceil(obj.cy + s * ymax)) + 1, size)
    if x1 <= x0 or y1 <= y0:
        return None
    dx = ((np.arange(x0, x1) + 0.5 - obj.cx) / s)[None, :]
    dy = ((np.arange(y0, y1) + 0.5 - obj.cy) / s)[:, None]
    c, sn = np.cos(obj.angle), np.sin(obj.angle)
    u = c * dx + sn * dy
    v = -sn * dx + c * dy
    if obj.flip:
        u = -u
    pid = np.full(u.shape, -1, dtype=np.int8)
    second = np.zeros(u.shape, dtype=bool)
    for k, part in enumerate(obj.parts):
        m = np.zeros(u.shape, dtype=bool)
        for q in part.prims:
            m |= inside(q, u, v)
        pid[m] = k
        if part.texture != "plain":
            second[m] = second_tone(part.texture, part.tex_params, u, v)[m]
        else:
            second[m] = False
    if not (pid >= 0).any():
        return None
    return Window(y0, y1, x0, x1, pid, second, np.broadcast_to(v, u.shape))


# --------------------------------------------------------------------------- background


def background(
    rng: np.random.Generator, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """A textured two-tone background: RGB (H, W, 3), colour and texture concept maps
    (uint8 indices) and its description ``{"texture", "colours"}``."""
    kind = _BG_KINDS[int(rng.integers(len(_BG_KINDS)))]
    names = rng.choice(len(_BG_COLOURS), size=2, replace=False)
    c1, c2 = _BG_COLOURS[int(names[0])], _BG_COLOURS[int(names[1])]
    t1 = np.asarray(PALETTE[c1]) * rng.uniform(0.6, 1.0)
    t2 = np.asarray(PALETTE[c2]) * rng.uniform(0.6, 1.0)
    y, x = np.mgrid[0:size, 0:size] + 0.5
    if kind == "plain":
        second = np.zeros((size, size), dtype=bool)
    elif kind == "striped":
        a, p = rng.uniform(0, np.pi), rng.uniform(4, 14)
        second = ((x * np.cos(a) + y * np.sin(a)) / p + rng.uniform()) % 1.0 < rng.uniform(0.2, 0.5)
    elif kind == "checkered":
        p = rng.uniform(6, 16)
        second = (np.floor(x / p + rng.uniform()) + np.floor(y / p + rng.uniform())) % 2 == 1
    elif kind == "patched":
        second = second_tone("patched", sample_params(rng, "patched", (40, 90), (0.3, 0.6)), x, y)
    elif kind == "bricks":
        h = rng.uniform(6, 12)
        row = np.floor(y / h)
        second = ((y % h) < 1.2) | (((x + (row % 2) * h) % (2 * h)) < 1.2)
    else:  # waves
        k, amp, p = rng.uniform(0.05, 0.15), rng.uniform(2, 6), rng.uniform(8, 16)
        second = ((y + amp * np.sin(k * x + rng.uniform(0, 6.3))) / p) % 1.0 < 0.5
    img = np.where(second[..., None], t2, t1)
    grad = rng.uniform(-0.12, 0.12, size=2)
    img = img * (1.0 + grad[0] * (x / size - 0.5) + grad[1] * (y / size - 0.5))[..., None]
    colour = np.where(second, COLOUR_INDEX[c2], COLOUR_INDEX[c1]).astype(np.uint8)
    colours = [c1] if kind == "plain" else [c1, c2]
    if kind == "plain":
        colour[:] = COLOUR_INDEX[c1]
    texture = np.full((size, size), TEXTURE_INDEX[kind], dtype=np.uint8)
    return img, colour, texture, {"texture": kind, "colours": colours}


def fragments(rng: np.random.Generator, size: int, n: int) -> list[tuple[Prim, str, str]]:
    """``n`` clutter fragments in pixel coordinates: (primitive, shape concept, colour name)."""
    out = []
    sc = size / 112.0
    for _ in range(n):
        x, y = rng.uniform(0, size, size=2)
        colour = _CLUTTER_COLOURS[int(rng.integers(len(_CLUTTER_COLOURS)))]
        k = int(rng.integers(4))
        r = rng.uniform(2.0, 6.0) * sc
        if k == 0:
            out.append((ellipse(x, y, r, r), "disk", colour))
        elif k == 1:
            a, length = rng.uniform(0, np.pi), rng.uniform(5, 16) * sc
            out.append((capsule(x, y, x + length * np.cos(a), y + length * np.sin(a),
                                rng.uniform(0.7, 1.8) * sc), "stick", colour))
        elif k == 2:
            t = rng.uniform(0, 2 * np.pi) + np.array([0, 2.1, 4.2])
            out.append((poly(*np.stack([x + r * np.cos(t), y + r * np.sin(t)], 1).ravel()),
                        "triangle", colour))
        else:
            out.append((rect(x, y, r, r * rng.uniform(0.4, 1.0), rng.uniform(0, np.pi)),
                        "rectangle", colour))
    return out


def occluder(rng: np.random.Generator, box: tuple[int, int, int, int]) -> tuple[Prim, str, str]:
    """A foreground occluder (a branch, a post or a bush) across the box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0 + 1, y1 - y0 + 1
    x, y = rng.uniform(x0, x1 + 1), rng.uniform(y0, y1 + 1)
    k = int(rng.integers(3))
    if k == 0:
        a = rng.uniform(0, np.pi)
        L = max(w, h)
        colour = ("brown", "olive", "grey")[int(rng.integers(3))]
        return (capsule(x - L * np.cos(a), y - L * np.sin(a), x + L * np.cos(a),
                        y + L * np.sin(a), rng.uniform(0.04, 0.1) * min(w, h) + 0.6),
                "stick", colour)
    if k == 1:
        colour = ("grey", "brown", "white")[int(rng.integers(3))]
        return rect(x, y, rng.uniform(0.06, 0.22) * w + 0.6, 2 * h), "rectangle", colour
    colour = ("green", "dark green", "olive")[int(rng.integers(3))]
    r = rng.uniform(0.15, 0.45) * min(w, h) + 1.0
    return ellipse(x, y, r * rng.uniform(1.0, 1.6), r), "ellipse", colour


def decoy(rng: np.random.Generator, size: int, labels: list[int],
          fraction: tuple[float, float] = (0.02, 0.15)) -> tuple[ObjectDraw, Window] | None:
    """A clutter piece that resembles another class: one or two parts of an object of a class
    not in ``labels`` (a cat's head, two wheels, a crown), its whole box ``fraction`` of the
    image; the window's ``pid`` keeps only those parts (None when nothing lands in the frame)."""
    others = [c for c in range(len(CLASS_SPECS)) if c not in labels]
    obj = sample_object(rng, others[int(rng.integers(len(others)))], odd_view=0.3)
    keep = rng.choice(len(obj.parts), size=min(int(rng.integers(1, 3)), len(obj.parts)),
                      replace=False)
    place(rng, obj, float(rng.uniform(*fraction)), size)
    win = rasterise(obj, size)
    if win is None:
        return None
    win.pid[~np.isin(win.pid, keep)] = -1
    return (obj, win) if (win.pid >= 0).any() else None


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of an (H, W, 3) image (defocus), separable, edges replicated."""
    r = max(int(np.ceil(3 * sigma)), 1)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    out = img
    for axis in (0, 1):
        pad = [(0, 0)] * 3
        pad[axis] = (r, r)
        p = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        out = sum(w * np.take(p, np.arange(i, i + n), axis=axis) for i, w in enumerate(k))
    return out
