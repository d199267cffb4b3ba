"""World v2's vocabulary: colours, parts, shapes, and 33 classes in 11 confusable groups.

Every class belongs to a *group* (its family: one part layout) and a *supercategory*. Within a
group the classes share their parts and differ in one or two of: a part (a steeple, a saucer,
a cabin's length), a texture (thin or broad stripes, spots, patches) or a colour shade (brown /
ginger / tan), with overlapping ranges, so that small, cropped, occluded or oddly lit objects
are genuinely ambiguous (tabby / tiger cat / Egyptian cat). Vehicles and crockery take a random
colour, so only their shape tells them apart.

A family builder maps sampled geometry ``g`` to parts ``(name, shape, primitives)`` in paint
order (later parts cover earlier ones), in a frame facing right, v downwards, spanning about
[-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from camlens.synthetic.v2.primitives import Prim, capsule, ellipse, poly, rect, ring

__all__ = [
    "PALETTE", "COLOURS", "PARTS", "SHAPES", "ClassSpec", "CLASS_SPECS", "CLASSES", "GROUPS",
    "NUM_CLASSES", "SUPERCATEGORIES", "FAMILIES", "PartGeom", "MAIN_PART", "COOCCURRING",
]

#: Named colours (RGB in [0, 1]); a pixel's colour concept is the name its tone came from.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.78, 0.13, 0.12), "orange": (0.93, 0.50, 0.12), "ginger": (0.78, 0.42, 0.17),
    "yellow": (0.93, 0.82, 0.20), "gold": (0.84, 0.64, 0.16), "green": (0.22, 0.60, 0.22),
    "dark green": (0.10, 0.34, 0.16), "blue": (0.18, 0.35, 0.80), "teal": (0.12, 0.54, 0.58),
    "purple": (0.50, 0.22, 0.62), "pink": (0.92, 0.56, 0.66), "brown": (0.46, 0.29, 0.15),
    "tan": (0.74, 0.60, 0.42), "grey": (0.55, 0.55, 0.56), "white": (0.92, 0.92, 0.90),
    "black": (0.12, 0.12, 0.13), "cream": (0.92, 0.86, 0.68), "sky": (0.60, 0.76, 0.90),
    "olive": (0.45, 0.47, 0.22), "magenta": (0.88, 0.10, 0.80), "cyan": (0.10, 0.88, 0.92),
    "lime": (0.62, 0.95, 0.10),
}  # fmt: skip
COLOURS: tuple[str, ...] = tuple(PALETTE)

#: Part names (concept index = position + 1; 0 = no part).
PARTS: tuple[str, ...] = (
    "body", "head", "ear", "tail", "leg", "snout", "wing", "beak", "fin", "eye", "wheel",
    "cabin", "window", "cargo", "wall", "roof", "door", "chimney", "steeple", "trunk", "crown",
    "stem", "leaf", "petal", "centre", "handle", "rim", "saucer", "spout", "lid", "neck", "cap",
    "label",
)  # fmt: skip

#: Shape concepts (index = position + 1; 0 = none).
SHAPES: tuple[str, ...] = (
    "ellipse", "disk", "triangle", "rectangle", "trapezoid", "stick", "ring", "square",
)

# Random paint of vehicles and crockery (never the bias cue colours).
_ANY = ("red", "orange", "yellow", "green", "blue", "teal", "purple", "pink", "white", "black",
        "grey", "cream")  # fmt: skip

PartGeom = tuple[str, str, list[Prim]]  # (part name, shape concept, primitives)


def _feline(g: dict[str, float], rng: np.random.Generator) -> list[PartGeom]:
    rx, ry, hr, leg = g["body_rx"], g["body_ry"], g["head_r"], g["leg"]
    hx, hy = rx + 0.05, -ry * 0.9
    ta = g["tail_angle"]
    legs = [capsule(x, ry * 0.5, x + rng.uniform(-0.08, 0.08), ry * 0.5 + leg, 0.065)
            for x in (-0.7 * rx, -0.4 * rx, 0.45 * rx, 0.75 * rx)]
    e = g["ear"]
    ears = [poly(hx + dx - e * 0.5, hy - hr * 0.6, hx + dx + e * 0.5, hy - hr * 0.6,
                 hx + dx, hy - hr * 0.6 - e * 1.3) for dx in (-0.45 * hr, 0.45 * hr)]
    return [
        ("tail", "stick", [capsule(-rx * 0.85, -0.05, -rx - 0.3 * np.cos(ta),
                                   -0.05 - 0.3 * np.sin(ta), 0.06)]),
        ("leg", "stick", legs),
        ("body", "ellipse", [ellipse(0, 0, rx, ry)]),
        ("ear", "triangle", ears),
        ("head", "disk", [ellipse(hx, hy, hr, hr * 0.95)]),
    ]


def _canine(g: dict[str, float], rng: np.random.Generator) -> list[PartGeom]:
    rx, ry, hr, leg = g["body_rx"], g["body_ry"], g["head_r"], g["leg"]
    hx, hy = rx + 0.02, -ry * 0.95
    legs = [capsule(x, ry * 0.5, x + rng.uniform(-0.06, 0.06), ry * 0.5 + leg, 0.075)
            for x in (-0.75 * rx, -0.45 * rx, 0.45 * rx, 0.75 * rx)]
    sn = g["snout"]
    return [
        ("tail", "stick", [capsule(-rx * 0.85, -ry * 0.4, -rx - 0.22, -ry - g["tail_up"], 0.05)]),
        ("leg", "stick", legs),
        ("body", "ellipse", [ellipse(0, 0, rx, ry)]),
        ("head", "disk", [ellipse(hx, hy, hr, hr)]),
        ("snout", "ellipse", [ellipse(hx + hr * 0.7 + sn * 0.4, hy + hr * 0.3, sn * 0.55 + 0.05,
                                      hr * 0.45)]),
        ("ear", "ellipse", [ellipse(hx - hr * 0.55, hy + hr * 0.05, hr * 0.28, hr * 0.6, 0.3)]),
    ]


def _bird(g: dict[str, float], rng: np.random.Generator) -> list[PartGeom]:
    rx, ry, hr = g["body_rx"], g["body_ry"], g["head_r"]
    hx, hy = rx * 0.85, -ry * 0.9
    tl = g["tail"]
    return [
        ("tail", "triangle", [poly(-rx * 0.7, -0.04, -rx - tl, -0.2, -rx - tl, 0.12)]),
        ("leg", "stick", [capsule(x, ry * 0.7, x + 0.03, ry + 0.28, 0.03) for x in (-0.1, 0.12)]),
        ("body", "ellipse", [ellipse(0, 0, rx, ry)]),
        ("wing", "ellipse", [ellipse(-rx * 0.1, -ry * 0.1, rx * g["wing"], ry * 0.55, -0.25)]),
        ("head", "disk", [ellipse(hx, hy, hr, hr)]),
        ("beak", "triangle", [poly(hx + hr * 0.8, hy - hr * 0.3, hx + hr * 0.8, hy + hr * 0.3,
                                   hx + hr + g["beak"], hy + hr * 0.05)]),
    ]


def _fish(g: dict[str, float], rng: np.random.Generator) -> list[PartGeom]:
    rx, ry = g["body_rx"], g["body_ry"]
    tl = g["tail"]
    return [
        ("tail", "triangle", [poly(-rx * 0.8, 0, -rx - tl, -ry * 0.9, -rx - tl, ry * 0.9)]),
        ("fin", "triangle", [poly(-rx * 0.3, -ry * 0.7, rx * 0.25, -ry * 0.8,
                                  -rx * 0.35, -ry - g["fin"])]),
        ("body", "ellipse", [ellipse(0, 0, rx, ry)]),
        ("eye", "disk", [ellipse(rx * 0.6, -ry * 0.2, 0.06, 0.06)]),
    ]


def _car(g: dict[str, float], rng: np.random.Generator) -> list[PartGeom]:
    L, H, cl, ch, cx = g["len"], g["height"], g["cabin_len"], g["cabin_h"], g["cabin_x"]
    slope = g["slope"]
    top, bot = -H, -H - ch
    return [
        ("body", "rectangle", [rect(0, -H / 2, L, H / 2)]),
        ("cabin", "trapezoid", [poly(cx - cl, top, cx + cl, top, cx + cl - slope, bot,
                                     cx - cl + slope * 0.6, bot)]),
        ("window", "rectangle", [rect(cx - cl * 0.45, top - ch * 0.5, cl * 0.35, ch * 0.3),
                                 rect(cx + cl * 0.4, top - ch * 0.5, cl * 0.3, ch * 0.3)]),
        ("wheel", "disk", [ellipse(x * L, 0.0, g["wheel"], g["wheel"]) for x in (-0.65, 0.65)]),
    ]


def _truck(g: dict[str, float], rng: np.random.Generator) -> list[PartGeom]:
    L, H, cl, ch = g["len"], g["cargo_h"], g["cab_len"], g["cab_h"]
    w = g["wheel"]
    cab_x = L - cl
    n = int(g["wheels"])
    xs = np.linspace(-L + 2 * w, cab_x - 0.05, n - 1).tolist() + [cab_x]
    return [
        ("cargo", "rectangle", [rect(-cl, -H / 2 - w * 0.5, L - cl, H / 2)]),
        ("cabin", "rectangle", [rect(cab_x, -ch / 2 - w * 0.5, cl, ch / 2)]),
        ("window", "rectangle", [rect(cab_x + cl * 0.3, -ch * 0.75 - w * 0.5, cl * 0.45,
                                      ch * 0.17)]),
        ("wheel", "disk", [ellipse(x, 0.0, w, w) for x in xs]),
    ]


def _house(g: dict[str, float], rng: np.random.Generator) -> list[PartGeom]:
    W, H, rh = g["width"], g["height"], g["roof"]
    parts: list[PartGeom] = []
    if g["chimney"] > 0.5:
        parts.append(("chimney", "rectangle", [rect(W * 0.45, -H - rh * 0.6, 0.07, rh * 0.45)]))
    if g["steeple"] > 0.5:
        sx = -W * 0.55
        parts.append(("steeple", "triangle", [rect(sx, -H - rh * 0.7, 0.13, rh * 0.7),
                                              poly(sx - 0.16, -H - rh * 1.4, sx + 0.16,
                                                   -H - rh * 1.4, sx, -H - rh * 2.4)]))
    dw = g["door"]
    return parts + [
        ("wall", "rectangle", [rect(0, -H / 2, W, H / 2)]),
        ("roof", "triangle", [poly(-W - 0.08, -H, W + 0.08, -H, 0.0, -H - rh)]),
        ("door", "rectangle", [rect(-W * 0.1, -dw * 0.9, dw * 0.5, dw * 0.9)]),
        ("window", "square", [rect(x * W, -H * 0.6, 0.1, 0.1) for x in (-0.6, 0.55)]),
    ]


def _tree(g: dict[str, float], rng: np.random.Generator) -> list[PartGeom]:
    th, tw = g["trunk_h"], g["trunk_w"]
    kind = int(g["crown_kind"])
    cw, chh = g["crown_w"], g["crown_h"]
    top = -th
    if kind == 0:  # round: three overlapping disks
        crown = [ellipse(dx * cw, top - chh * dy, cw * 0.6, cw * 0.6)
                 for dx, dy in ((-0.45, 0.45), (0.45, 0.45), (0.0, 0.95))]
        shape = "disk"
    elif kind == 1:  # conifer: stacked triangles
        crown = [poly(-cw * s, top - chh * y0, cw * s, top - chh * y0, 0.0, top - chh * (y0 + 0.75))
                 for s, y0 in ((1.0, 0.0), (0.8, 0.4), (0.6, 0.8))]
        shape = "triangle"
    else:  # columnar: a tall ellipse
        crown = [ellipse(0.0, top - chh * 0.9, cw * 0.55, chh)]
        shape = "ellipse"
    return [
        ("trunk", "rectangle", [rect(0, -th / 2, tw, th / 2 + 0.05)]),
        ("crown", shape, crown),
    ]


def _flower(g: dict[str, float], rng: np.random.Generator) -> list[PartGeom]:
    cy, cr, pl, n = -g["stem"], g["centre"], g["petal_len"], int(g["petals"])
    a0 = rng.uniform(0, 2 * np.pi)
    petals = []
    for i in range(n):
        a = a0 + 2 * np.pi * i / n
        d = cr + pl * 0.5
        petals.append(ellipse(d * np.cos(a), cy + d * np.sin(a), pl * 0.6, g["petal_w"], a))
    return [
        ("stem", "stick", [capsule(0, 0.0, 0.03, cy, 0.035)]),
        ("leaf", "ellipse", [ellipse(0.14, cy * 0.45, 0.16, 0.06, -0.5)]),
        ("petal", "ellipse", petals),
        ("centre", "disk", [ellipse(0, cy, cr, cr)]),
    ]


def _crockery(g: dict[str, float], rng: np.random.Generator) -> list[PartGeom]:
    W, H = g["width"], g["height"]
    parts: list[PartGeom] = []
    if g["pot"] > 0.5:  # teapot: round body, spout and lid
        parts += [
            ("handle", "ring", [ring(-W * 0.95, -H, H * 0.5, H * 0.32)]),
            ("spout", "stick", [capsule(W * 0.7, -H * 0.8, W * 1.3, -H * 1.6, 0.06)]),
            ("body", "ellipse", [ellipse(0, -H, W, H)]),
            ("lid", "ellipse", [ellipse(0, -2 * H, W * 0.45, 0.09)]),
        ]
        return parts
    if g["saucer"] > 0.5:
        parts.append(("saucer", "ellipse", [ellipse(0, 0.0, W * 1.6, 0.07)]))
    return parts + [
        ("handle", "ring", [ring(W, -H, H * 0.45, H * 0.28)]),
        ("body", "rectangle", [rect(0, -H, W, H)]),
        ("rim", "rectangle", [rect(0, -2 * H, W, 0.035)]),
    ]


def _bottle(g: dict[str, float], rng: np.random.Generator) -> list[PartGeom]:
    W, H, nl = g["width"], g["height"], g["neck"]
    return [
        ("body", "rectangle", [rect(0, -H, W, H)]),
        ("neck", "trapezoid", [poly(-W, -2 * H, W, -2 * H, W * 0.38, -2 * H - nl * 0.3,
                                    -W * 0.38, -2 * H - nl * 0.3),
                               rect(0, -2 * H - nl * 0.65, W * 0.38, nl * 0.36)]),
        ("cap", "rectangle", [rect(0, -2 * H - nl - 0.04, W * 0.42, 0.06)]),
        ("label", "rectangle", [rect(0, -H * g["label_y"], W, H * g["label_h"])]),
    ]


#: group -> (builder, default geometry ranges, supercategory)
FAMILIES: dict[str, tuple[Callable[..., list[PartGeom]], dict[str, tuple[float, float]], str]] = {
    "feline": (_feline, {"body_rx": (0.5, 0.62), "body_ry": (0.2, 0.26), "head_r": (0.2, 0.25),
                         "leg": (0.28, 0.38), "tail_angle": (-0.3, 1.2), "ear": (0.1, 0.14)},
               "animal"),
    "canine": (_canine, {"body_rx": (0.5, 0.62), "body_ry": (0.22, 0.28), "head_r": (0.19, 0.24),
                         "leg": (0.3, 0.42), "tail_up": (0.0, 0.25), "snout": (0.1, 0.2)},
               "animal"),
    "bird": (_bird, {"body_rx": (0.45, 0.55), "body_ry": (0.26, 0.32), "head_r": (0.17, 0.21),
                     "tail": (0.25, 0.38), "wing": (0.6, 0.8), "beak": (0.1, 0.16)}, "animal"),
    "fish": (_fish, {"body_rx": (0.6, 0.72), "body_ry": (0.28, 0.38), "tail": (0.25, 0.38),
                     "fin": (0.12, 0.22)}, "animal"),
    "car": (_car, {"len": (0.85, 1.0), "height": (0.22, 0.28), "cabin_len": (0.35, 0.55),
                   "cabin_h": (0.2, 0.26), "cabin_x": (-0.1, 0.1), "slope": (0.05, 0.15),
                   "wheel": (0.14, 0.18)}, "vehicle"),
    "truck": (_truck, {"len": (0.95, 1.05), "cargo_h": (0.45, 0.6), "cab_len": (0.2, 0.26),
                       "cab_h": (0.4, 0.5), "wheel": (0.13, 0.17), "wheels": (2, 2)}, "vehicle"),
    "house": (_house, {"width": (0.6, 0.75), "height": (0.5, 0.65), "roof": (0.3, 0.45),
                       "door": (0.16, 0.22), "chimney": (0, 0), "steeple": (0, 0)}, "building"),
    "tree": (_tree, {"trunk_h": (0.35, 0.5), "trunk_w": (0.06, 0.09), "crown_w": (0.45, 0.6),
                     "crown_h": (0.9, 1.1), "crown_kind": (0, 0)}, "plant"),
    "flower": (_flower, {"stem": (0.9, 1.1), "centre": (0.12, 0.18), "petal_len": (0.28, 0.36),
                         "petal_w": (0.07, 0.1), "petals": (10, 14)}, "plant"),
    "crockery": (_crockery, {"width": (0.35, 0.45), "height": (0.35, 0.45), "saucer": (0, 0),
                             "pot": (0, 0)}, "household item"),
    "bottle": (_bottle, {"width": (0.2, 0.26), "height": (0.4, 0.5), "neck": (0.3, 0.5),
                         "label_y": (0.9, 1.1), "label_h": (0.25, 0.4)}, "household item"),
}


@dataclass(frozen=True)
class ClassSpec:
    """One class: its group (family), part colours, part textures and geometry overrides.

    ``colours``: part -> a colour name, a tuple of names (one drawn per object, uniformly: a name
    listed twice is drawn twice as often) or ``"=part"``
    (the colour drawn for that earlier-listed part). ``textures``: part -> (texture, second
    colour, period range, coverage range). ``geometry``: parameter -> range, over the family's.
    """

    name: str
    group: str
    colours: Mapping[str, str | tuple[str, ...]]
    textures: Mapping[str, tuple[str, str, tuple[float, float], tuple[float, float]]] = field(
        default_factory=dict)
    geometry: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def supercategory(self) -> str:
        return FAMILIES[self.group][2]


def _c(name: str, group: str, colours: dict, textures: dict | None = None,
       geometry: dict | None = None) -> ClassSpec:
    return ClassSpec(name, group, colours, textures or {}, geometry or {})


_CAT = {"body": "", "head": "=body", "ear": "=body", "tail": "=body", "leg": "=body"}

CLASS_SPECS: tuple[ClassSpec, ...] = (
    # felines: shade of the coat and its pattern (thin stripes / broad stripes / spots)
    _c("tabby", "feline", {**_CAT, "body": ("brown", "brown", "tan")},
       {p: ("striped", "black", (0.09, 0.15), (0.3, 0.45)) for p in ("body", "tail", "head")}),
    _c("tiger cat", "feline", {**_CAT, "body": ("ginger", "ginger", "brown")},
       {p: ("striped", "brown", (0.13, 0.22), (0.35, 0.5)) for p in ("body", "tail", "head")}),
    _c("egyptian cat", "feline", {**_CAT, "body": ("tan", "tan", "ginger")},
       {p: ("spotted", "brown", (0.12, 0.2), (0, 0)) for p in ("body", "tail")},
       {"ear": (0.13, 0.18)}),
    # canines: coat shade, head size and snout length
    _c("boxer", "canine", {**_CAT, "body": ("ginger", "ginger", "tan"), "snout": "black",
                         "ear": "brown"}),
    _c("bull mastiff", "canine", {**_CAT, "body": ("tan", "tan", "ginger"), "snout": "black",
                                "ear": "brown"},
       {}, {"head_r": (0.23, 0.28), "snout": (0.06, 0.14)}),
    _c("beagle", "canine", {**_CAT, "body": ("white", "cream", "tan"), "snout": "white",
                          "ear": "brown"},
       {p: ("patched", "brown", (0.5, 0.8), (0.3, 0.6)) for p in ("body", "head")}),
    # birds: body shade and wing colour
    _c("goldfinch", "bird", {"body": ("yellow", "gold"), "head": "=body", "wing": "black",
                             "tail": "black",
                             "beak": "tan", "leg": "brown"}),
    _c("canary", "bird", {"body": ("yellow", "gold"), "head": "=body", "wing": ("gold", "olive"),
                          "tail": "=wing",
                          "beak": "tan", "leg": "brown"}),
    _c("oriole", "bird", {"body": ("orange", "gold"), "head": "black", "wing": "black",
                          "tail": "black",
                          "beak": "grey", "leg": "brown"}),
    # fish: pattern and its share of the body
    _c("goldfish", "fish", {"body": ("orange", "gold"), "tail": "=body", "fin": "=body",
                         "eye": "black"}),
    _c("clownfish", "fish", {"body": "orange", "tail": "=body", "fin": "black", "eye": "black"},
       {"body": ("banded", "white", (0.35, 0.55), (0.12, 0.28))}),
    _c("koi", "fish", {"body": "white", "tail": "orange", "fin": "white", "eye": "black"},
       {"body": ("patched", "orange", (0.5, 0.9), (0.4, 0.85))}),
    # cars: the cabin (any paint)
    _c("sedan", "car", {"body": _ANY, "cabin": "=body", "window": "sky", "wheel": "black"},
       {}, {"cabin_len": (0.45, 0.6), "slope": (0.08, 0.16)}),
    _c("coupe", "car", {"body": _ANY, "cabin": "=body", "window": "sky", "wheel": "black"},
       {}, {"cabin_len": (0.3, 0.45), "slope": (0.14, 0.24), "cabin_h": (0.16, 0.22)}),
    _c("minivan", "car", {"body": _ANY, "cabin": "=body", "window": "sky", "wheel": "black"},
       {}, {"cabin_len": (0.55, 0.75), "slope": (0.02, 0.1), "cabin_h": (0.26, 0.34),
            "cabin_x": (-0.2, -0.05)}),
    # trucks: cargo height and wheel count
    _c("pickup", "truck", {"cargo": _ANY, "cabin": "=cargo", "window": "sky", "wheel": "black"},
       {}, {"cargo_h": (0.2, 0.3), "cab_h": (0.38, 0.48)}),
    _c("van", "truck", {"cargo": _ANY, "cabin": "=cargo", "window": "sky", "wheel": "black"},
       {}, {"cargo_h": (0.42, 0.52), "cab_h": (0.42, 0.52), "cab_len": (0.15, 0.2)}),
    _c("lorry", "truck", {"cargo": _ANY, "cabin": _ANY, "window": "sky", "wheel": "black"},
       {}, {"cargo_h": (0.5, 0.62), "wheels": (3, 3), "len": (1.0, 1.1)}),
    # houses: wall and roof colours, chimney or steeple
    _c("cottage", "house", {"wall": ("cream", "white"), "roof": ("red", "brown"), "door": "brown",
                            "window": "sky",
                            "chimney": "red"}, {}, {"chimney": (1, 1)}),
    _c("barn", "house", {"wall": ("red", "brown"), "roof": ("grey", "brown"), "door": "white",
                         "window": "white"},
       {"wall": ("striped", "brown", (0.08, 0.12), (0.15, 0.25))}, {"door": (0.22, 0.3)}),
    _c("church", "house", {"wall": ("white", "cream"), "roof": ("grey", "red"), "door": "brown",
                           "window": "sky",
                           "steeple": "white"}, {}, {"steeple": (1, 1)}),
    # trees: crown shape and shade
    _c("oak", "tree", {"trunk": "brown", "crown": ("green", "olive")},
       {"crown": ("patched", "dark green", (0.4, 0.7), (0.2, 0.4))}),
    _c("pine", "tree", {"trunk": "brown", "crown": ("dark green", "green")}, {},
       {"crown_kind": (1, 1)}),
    _c("poplar", "tree", {"trunk": "brown", "crown": ("green", "dark green")},
       {"crown": ("patched", "olive", (0.4, 0.7), (0.2, 0.4))}, {"crown_kind": (2, 2)}),
    # flowers: petal colour and centre size
    _c("sunflower", "flower", {"petal": ("yellow", "gold"), "centre": "brown", "stem": "green",
                               "leaf": "green"}, {}, {"centre": (0.16, 0.22), "petals": (14, 18)}),
    _c("marigold", "flower", {"petal": ("orange", "gold"), "centre": "gold", "stem": "green",
                              "leaf": "green"}, {}, {"petal_w": (0.09, 0.12), "petals": (9, 12)}),
    _c("rudbeckia", "flower", {"petal": ("gold", "yellow", "orange"), "centre": "black",
                               "stem": "green", "leaf": "green"}, {}, {"centre": (0.11, 0.16)}),
    # crockery: proportions, saucer, spout (any paint)
    _c("mug", "crockery", {"body": _ANY, "handle": "=body", "rim": "white"},
       {}, {"height": (0.45, 0.55), "width": (0.32, 0.4)}),
    _c("teacup", "crockery", {"body": _ANY, "handle": "=body", "rim": "white", "saucer": "white"},
       {}, {"height": (0.25, 0.35), "width": (0.38, 0.48), "saucer": (1, 1)}),
    _c("teapot", "crockery", {"body": _ANY, "handle": "=body", "spout": "=body", "lid": "=body"},
       {}, {"pot": (1, 1), "width": (0.45, 0.55), "height": (0.32, 0.4)}),
    # bottles: glass colour and neck length
    _c("wine bottle", "bottle", {"body": ("dark green", "dark green", "black"), "neck": "=body",
                                 "cap": ("red", "gold"),
                                 "label": "cream"}, {}, {"neck": (0.45, 0.6)}),
    _c("beer bottle", "bottle", {"body": ("brown", "brown", "dark green"), "neck": "=body",
                                 "cap": ("gold", "red"),
                                 "label": "cream"}, {}, {"neck": (0.3, 0.45)}),
    _c("water bottle", "bottle", {"body": ("teal", "sky"), "neck": "=body", "cap": "blue",
                                  "label": "white"}, {},
       {"neck": (0.12, 0.25), "width": (0.24, 0.3)}),
)

CLASSES: tuple[str, ...] = tuple(c.name for c in CLASS_SPECS)
NUM_CLASSES = len(CLASSES)
#: group -> its class indices (the confusable sets).
GROUPS: dict[str, tuple[int, ...]] = {
    g: tuple(i for i, c in enumerate(CLASS_SPECS) if c.group == g) for g in FAMILIES
}
SUPERCATEGORIES: tuple[str, ...] = tuple(dict.fromkeys(f[2] for f in FAMILIES.values()))
#: group -> the part whose colour, texture and shape are the object's own in the scene graph.
MAIN_PART: dict[str, str] = {g: "body" for g in FAMILIES} | {
    "truck": "cargo", "house": "wall", "tree": "crown", "flower": "petal"}
#: Pairs of groups that appear together in ``kind="pair"`` scenes (Fig. 1's cat and dog).
COOCCURRING: tuple[tuple[str, str], ...] = (
    ("feline", "canine"), ("bird", "tree"), ("car", "house"), ("crockery", "bottle"),
    ("flower", "bird"), ("truck", "house"),
)
