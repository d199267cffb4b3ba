"""Scene graphs of world v2, and the captions and questions generated from them (Sec. 8).

A :class:`SceneGraph` lists the objects (class, group, supercategory, colour, texture, shape,
size, box, centroid, visible parts) and the relations between them, all read off the exact
ground truth by fixed rules (:func:`relations`):

- ``left of`` / ``right of``: centroids differ by more than 4% of the width along x;
- ``above`` / ``below``: the same along y;
- ``on``: A rests on B: in at least 3 columns an A pixel sits directly above a B pixel, A's
  centroid is higher and A is the smaller (fewer visible pixels);
- ``near``: the boxes are at most 8% of the width apart and neither is on the other.

An object's colour, texture and shape are those of its main part (a cat's body, a house's wall,
a tree's crown). Its size is ``small`` (box under 10% of the image), ``medium`` (under 35%)
or ``large``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from camlens.synthetic.v2.world import Scene

__all__ = ["ObjectNode", "SceneGraph", "QA", "relations", "size_word"]

_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_TEXTURE_WORDS = {"plain": "", "striped": "striped", "banded": "banded", "spotted": "spotted",
                  "checkered": "checkered", "patched": "patched", "bricks": "brick",
                  "waves": "wavy"}  # fmt: skip
_NEAR, _SIDE = 0.08, 0.04


def size_word(box_fraction: float) -> str:
    """``small`` (< 0.10 of the image), ``medium`` (< 0.35) or ``large``."""
    return "small" if box_fraction < 0.10 else "medium" if box_fraction < 0.35 else "large"


@dataclass
class ObjectNode:
    """One object of a scene graph (``cls``: class name; ``box``: inclusive x0, y0, x1, y1;
    ``centroid``: mean (x, y) of its visible pixel centres)."""

    id: int
    cls: str
    group: str
    supercategory: str
    colour: str
    texture: str
    shape: str
    size: str
    box: tuple[int, int, int, int]
    centroid: tuple[float, float]
    area: int
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class QA:
    """A question about a scene, its answer and its kind (existence, count, colour, shape,
    position)."""

    question: str
    answer: str
    kind: str


def relations(masks: list[np.ndarray], centroids: list[tuple[float, float]],
              boxes: list[tuple[int, int, int, int]], width: int) -> list[tuple[int, str, int]]:
    """Every true relation ``(i, name, j)`` between objects i != j (rules in the module doc)."""
    out: list[tuple[int, str, int]] = []
    n = len(masks)
    on = np.zeros((n, n), dtype=bool)
    for i in range(n):
        for j in range(n):
            if i != j:
                touching = (masks[i][:-1] & masks[j][1:]).any(axis=0).sum()
                on[i, j] = (touching >= 3 and centroids[i][1] < centroids[j][1]
                            and masks[i].sum() < masks[j].sum())
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            (xi, yi), (xj, yj) = centroids[i], centroids[j]
            if xi < xj - _SIDE * width:
                out.append((i, "left of", j))
            if xi > xj + _SIDE * width:
                out.append((i, "right of", j))
            if yi < yj - _SIDE * width:
                out.append((i, "above", j))
            if yi > yj + _SIDE * width:
                out.append((i, "below", j))
            if on[i, j]:
                out.append((i, "on", j))
            bi, bj = boxes[i], boxes[j]
            gap = max(bj[0] - bi[2] - 1, bi[0] - bj[2] - 1, bj[1] - bi[3] - 1, bi[1] - bj[3] - 1, 0)
            if gap <= _NEAR * width and not on[i, j] and not on[j, i]:
                out.append((i, "near", j))
    return out


def _a(phrase: str) -> str:
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


@dataclass
class SceneGraph:
    """Objects, relations ``(subject id, name, object id)``, background and image size."""

    objects: list[ObjectNode]
    relations: list[tuple[int, str, int]]
    background: dict[str, Any]
    size: tuple[int, int]

    @classmethod
    def from_scene(cls, scene: Scene) -> SceneGraph:
        h, w = scene.size
        nodes, masks, cents = [], [], []
        for i, o in enumerate(scene.objects):
            ys, xs = np.nonzero(o.mask)
            cent = (float(xs.mean() + 0.5), float(ys.mean() + 0.5))
            x0, y0, x1, y1 = o.box
            main = o.main
            nodes.append(ObjectNode(
                i, o.name, o.group, o.supercategory, main["colour"], main["texture"],
                main["shape"], size_word((x1 - x0 + 1) * (y1 - y0 + 1) / (h * w)), o.box, cent,
                o.area, {k: dict(v) for k, v in o.parts.items()}))
            masks.append(o.mask)
            cents.append(cent)
        rel = relations(masks, cents, [o.box for o in scene.objects], w)
        return cls(nodes, rel, dict(scene.background), (h, w))

    def to_dict(self) -> dict[str, Any]:
        return {"objects": [asdict(o) for o in self.objects],
                "relations": [list(r) for r in self.relations],
                "background": self.background, "size": list(self.size)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SceneGraph:
        objs = [ObjectNode(**{**o, "box": tuple(o["box"]), "centroid": tuple(o["centroid"])})
                for o in d["objects"]]
        rel = [(int(a), str(r), int(b)) for a, r, b in d["relations"]]
        h, w = d["size"]
        return cls(objs, rel, dict(d["background"]), (int(h), int(w)))

    def has(self, i: int, name: str, j: int) -> bool:
        return (i, name, j) in self.relations

    def phrase(self, o: ObjectNode) -> str:
        """``a large brown striped tabby``."""
        words = [o.size, o.colour, _TEXTURE_WORDS[o.texture], o.cls]
        return _a(" ".join(w for w in words if w))

    def caption(self) -> str:
        """One sentence: objects left to right, with the relation of the first two."""
        if not self.objects:
            return "An empty scene."
        order = sorted(self.objects, key=lambda o: (o.centroid[0], o.id))
        if len(order) == 1:
            bg = _TEXTURE_WORDS[self.background.get("texture", "plain")] or "plain"
            text = f"{self.phrase(order[0])} on {_a(bg)} background"
        elif len(order) == 2:
            a, b = order
            if self.has(a.id, "on", b.id):
                text = f"{self.phrase(a)} on {self.phrase(b)}"
            elif self.has(b.id, "on", a.id):
                text = f"{self.phrase(b)} on {self.phrase(a)}"
            elif self.has(a.id, "near", b.id):
                text = f"{self.phrase(a)} next to {self.phrase(b)}"
            else:
                text = f"{self.phrase(a)} to the left of {self.phrase(b)}"
        else:
            items = [self.phrase(o) for o in order]
            text = ", ".join(items[:-1]) + " and " + items[-1]
        return text[0].upper() + text[1:] + "."

    def questions(self) -> list[QA]:
        """Existence, count, colour, shape and position questions with their answers.

        Colour, shape and position questions name only classes present exactly once.
        """
        from camlens.synthetic.v2.catalogue import CLASS_SPECS, GROUPS

        qa: list[QA] = []
        counts: dict[str, int] = {}
        for o in self.objects:
            counts[o.cls] = counts.get(o.cls, 0) + 1
        for name in counts:
            qa.append(QA(f"Is there {_a(name)}?", "yes", "existence"))
        for group in dict.fromkeys(o.group for o in self.objects):
            absent = [CLASS_SPECS[c].name for c in GROUPS[group]
                      if CLASS_SPECS[c].name not in counts]
            if absent:
                qa.append(QA(f"Is there {_a(absent[0])}?", "no", "existence"))
        qa.append(QA("How many objects are there?", _NUMBERS[min(len(self.objects), 10)], "count"))
        supers: dict[str, int] = {}
        for o in self.objects:
            supers[o.supercategory] = supers.get(o.supercategory, 0) + 1
        for sup, k in supers.items():
            qa.append(QA(f"How many {sup}s are there?", _NUMBERS[min(k, 10)], "count"))
        unique = [o for o in self.objects if counts[o.cls] == 1]
        for o in unique:
            qa.append(QA(f"What colour is the {o.cls}?", o.colour, "colour"))
            for part, rec in o.parts.items():
                qa.append(QA(f"What shape is the {part} of the {o.cls}?", rec["shape"], "shape"))
        w = self.size[1]
        for o in unique:
            x = o.centroid[0]
            third = "left" if x < w / 3 else "right" if x > 2 * w / 3 else "middle"
            qa.append(QA(f"Where is the {o.cls}?", third, "position"))
        for a in unique:
            for b in unique:
                if a.id < b.id:
                    for rel in ("left of", "above"):
                        ans = "yes" if self.has(a.id, rel, b.id) else "no"
                        word = "to the left of" if rel == "left of" else rel
                        qa.append(QA(f"Is the {a.cls} {word} the {b.cls}?", ans, "position"))
        return qa
