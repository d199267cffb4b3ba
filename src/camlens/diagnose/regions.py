"""World v2's exact regions: what a map's peak or mass lands on.

Every pixel of a scene is one of: an object (of some class), a decoy (a background piece that
resembles a class not in the scene: ``scene.background["decoys"]``), the bias cue band, clutter
(background fragments and foreground occluders: a shape but no object) or plain background.
Decoy pixels are those of a decoy's box with no object and a shape concept (clutter under a
decoy's box counts as the decoy: the box bounds what was painted, not each pixel).
"""

from __future__ import annotations

import numpy as np

from camlens.synthetic.v2 import CLASS_SPECS, CLASSES, COLOURS, Scene

__all__ = ["decoy_masks", "cue_mask", "scene_regions", "point_category", "CATEGORIES",
           "RESEMBLING", "RELATED"]

#: What the peak of class c's map can land on (:func:`point_category`), in order.
CATEGORIES = ("class c", "lookalike object", "lookalike decoy", "related object", "related decoy",
              "other object", "other decoy", "cue band", "clutter", "background")
#: The categories that resemble class c: c itself, or a thing of c's confusable group.
RESEMBLING = ("class c", "lookalike object", "lookalike decoy")
#: Related to class c: of its supercategory (a dog for a cat), outside its group.
RELATED = ("related object", "related decoy")


def _shaped_free(scene: Scene) -> np.ndarray:
    c = scene.concepts
    return (c["object"] == 0) & (c["shape"] != 0)


def cue_mask(scene: Scene) -> np.ndarray:
    """The visible cue band (H, W) bool: bottom rows painted in the cue colour, no object."""
    h, w = scene.size
    out = np.zeros((h, w), dtype=bool)
    cue = scene.background.get("cue")
    if cue is None:
        return out
    band = max(int(round(0.1 * h)), 1)
    c = scene.concepts
    out[h - band:] = True
    return out & (c["object"] == 0) & (c["shape"] == 0) & (c["colour"] == COLOURS.index(cue) + 1)


def decoy_masks(scene: Scene) -> list[tuple[int, np.ndarray]]:
    """``(class index, mask)`` of every decoy, later decoys winning where boxes overlap."""
    free = _shaped_free(scene)
    out: list[tuple[int, np.ndarray]] = []
    taken = np.zeros(scene.size, dtype=bool)
    for d in reversed(scene.background.get("decoys", [])):
        x0, y0, x1, y1 = d["box"]
        m = np.zeros(scene.size, dtype=bool)
        m[y0:y1 + 1, x0:x1 + 1] = True
        m &= free & ~taken
        taken |= m
        out.append((CLASSES.index(d["class"]), m))
    return out[::-1]


def scene_regions(scene: Scene, label: int) -> dict[str, np.ndarray]:
    """Disjoint masks covering the image, for class ``label``'s evidence: ``object`` (its
    objects), ``other objects``, ``decoys``, ``cue band``, ``clutter``, ``background``."""
    obj = scene.concepts["object"]
    mine = np.zeros(scene.size, dtype=bool)
    for o in scene.objects:
        if o.label == label:
            mine |= o.mask
    decoys = np.zeros(scene.size, dtype=bool)
    for _, m in decoy_masks(scene):
        decoys |= m
    cue = cue_mask(scene)
    clutter = _shaped_free(scene) & ~decoys
    others = (obj != 0) & ~mine
    rest = ~(mine | others | decoys | cue | clutter)
    return {"object": mine, "other objects": others, "decoys": decoys, "cue band": cue,
            "clutter": clutter, "background": rest}


def _kinship(label: int, cls: int) -> str:
    a, b = CLASS_SPECS[label], CLASS_SPECS[cls]
    if a.group == b.group:
        return "lookalike"
    return "related" if a.supercategory == b.supercategory else "other"


def point_category(scene: Scene, y: int, x: int, cls: int) -> str:
    """What pixel (y, x) is, seen from class ``cls``: one of :data:`CATEGORIES`."""
    hit = [o.label for o in scene.objects if o.mask[y, x]]
    if hit:
        return "class c" if hit[0] == cls else f"{_kinship(hit[0], cls)} object"
    for label, m in decoy_masks(scene):
        if m[y, x]:
            return f"{_kinship(label, cls)} decoy"
    if cue_mask(scene)[y, x]:
        return "cue band"
    return "clutter" if _shaped_free(scene)[y, x] else "background"
