"""World v2 scenes on disk in the COCO layout the evaluation readers load.

:func:`save_coco` writes, under ``folder``::

    <split>/00000.png ...                      lossless images
    annotations/instances_<split>.json         COCO instances: images, categories (the 33
                                               classes, with their supercategory), one
                                               annotation per object (bbox [x, y, w, h] of the
                                               inclusive box, area = visible pixels, compressed
                                               RLE segmentation, plus "parts": part -> RLE and
                                               "world": parts' attributes and pose)
    annotations/scenes_<split>.json            per image: kind, background, scene graph;
                                               the concept vocabularies
    annotations/concepts_<split>.npz           concept maps (N, H, W) uint8 per concept

so ``camlens.evaluate.datasets.load_dataset("coco:FOLDER/annotations/instances_val.json")``
reads the objects (labels are class names), and :func:`load_coco` reads back the exact scenes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from camlens.evaluate.datasets import rle_decode, rle_encode
from camlens.synthetic.v2.catalogue import CLASS_SPECS, CLASSES, COLOURS, PARTS, SHAPES
from camlens.synthetic.v2.render import TEXTURES
from camlens.synthetic.v2.world import ObjectGT, Scene

__all__ = ["save_coco", "load_coco", "CONCEPTS"]

#: The concept maps saved, in order.
CONCEPTS = ("object", "part", "shape", "colour", "texture")


def _vocabularies() -> dict[str, list[str]]:
    return {"classes": list(CLASSES), "parts": list(PARTS), "shapes": list(SHAPES),
            "colours": list(COLOURS), "textures": list(TEXTURES)}


def save_coco(scenes: Sequence[Scene], folder: str | os.PathLike, split: str = "val") -> Path:
    """Write ``scenes`` under ``folder`` (layout in the module docstring); returns the path of
    the instances JSON."""
    from PIL import Image

    if not scenes:
        raise ValueError("no scenes to save")
    root = Path(folder)
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    for i, scene in enumerate(scenes):
        name = f"{i:05d}.png"
        Image.fromarray(np.ascontiguousarray(scene.image), mode="RGB").save(root / split / name)
        h, w = scene.size
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        for k, o in enumerate(scene.objects):
            x0, y0, x1, y1 = o.box
            parts = {p: rle_encode(scene.part_mask(k, p)) for p in o.parts}
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": o.label + 1,
                "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1], "area": o.area, "iscrowd": 0,
                "segmentation": rle_encode(o.mask), "parts": parts,
                "world": {"parts": o.parts, "pose": o.pose},
            })
        records.append({"image_id": i + 1, "kind": scene.kind, "background": scene.background,
                        "graph": scene.graph().to_dict()})
    categories = [{"id": c + 1, "name": spec.name, "supercategory": spec.supercategory,
                   "group": spec.group} for c, spec in enumerate(CLASS_SPECS)]
    path = root / "annotations" / f"instances_{split}.json"
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    with open(root / "annotations" / f"scenes_{split}.json", "w", encoding="utf-8") as f:
        json.dump({"vocabularies": _vocabularies(), "scenes": records}, f)
    stacked: dict[str, Any] = {c: np.stack([s.concepts[c] for s in scenes]) for c in CONCEPTS}
    np.savez_compressed(root / "annotations" / f"concepts_{split}.npz", **stacked)
    return path


def load_coco(folder: str | os.PathLike, split: str = "val") -> list[Scene]:
    """Read back the scenes :func:`save_coco` wrote (images, objects, concepts, background)."""
    from PIL import Image

    root = Path(folder)
    ann_dir = root / "annotations"
    try:
        with open(ann_dir / f"instances_{split}.json", encoding="utf-8") as f:
            inst = json.load(f)
        with open(ann_dir / f"scenes_{split}.json", encoding="utf-8") as f:
            extra = json.load(f)
        arrays = np.load(ann_dir / f"concepts_{split}.npz")
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{root} is not a folder written by save_coco(..., "
                                f"split={split!r}): {err.filename} is missing") from None
    if extra["vocabularies"] != _vocabularies():
        raise ValueError(f"{root}: written with other class or concept vocabularies than "
                         "this version of world v2 has")
    per_image: dict[int, list[dict[str, Any]]] = {}
    for a in inst["annotations"]:
        per_image.setdefault(a["image_id"], []).append(a)
    maps = {c: arrays[c] for c in CONCEPTS}
    scenes = []
    for n, (img, rec) in enumerate(zip(inst["images"], extra["scenes"])):
        with Image.open(root / split / img["file_name"]) as im:
            pixels = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
        objects = []
        for a in sorted(per_image.get(img["id"], []), key=lambda a: a["id"]):
            x, y, w, h = (int(v) for v in a["bbox"])
            objects.append(ObjectGT(int(a["category_id"]) - 1, (x, y, x + w - 1, y + h - 1),
                                    rle_decode(a["segmentation"]), a["world"]["parts"],
                                    a["world"]["pose"]))
        concepts = {c: maps[c][n].copy() for c in CONCEPTS}
        scenes.append(Scene(pixels, objects, concepts, rec["background"], rec["kind"]))
    return scenes
