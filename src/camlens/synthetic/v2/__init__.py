"""World v2: a synthetic ImageNet with exact ground truth, and the paper's nets for it.

>>> import numpy as np
>>> from camlens.synthetic.v2 import make_scene, make_dataset
>>> scene = make_scene(np.random.default_rng(0))     # one labelled object, 112x112
>>> scene.objects[0].name, scene.objects[0].box      # class, inclusive (x0, y0, x1, y1)
>>> scene.graph().caption(), scene.graph().questions()[:3]
>>> pairs = make_dataset(100, seed=1, kind="pair")   # co-occurring pairs (cat and dog)

33 classes in 11 confusable groups, objects built from named parts, per-pixel concept maps
(object, part, shape, colour, texture), scene graphs with captions and questions, ILSVRC-like
object scales, a background cue for bias experiments, COCO-style files (:func:`save_coco`).
See docs/world.md.
"""

from __future__ import annotations

from camlens.synthetic.v2.catalogue import (
    CLASS_SPECS,
    CLASSES,
    COLOURS,
    COOCCURRING,
    GROUPS,
    NUM_CLASSES,
    PALETTE,
    PARTS,
    SHAPES,
    SUPERCATEGORIES,
)
from camlens.synthetic.v2.coco import load_coco, save_coco
from camlens.synthetic.v2.graph import QA, ObjectNode, SceneGraph
from camlens.synthetic.v2.world import (
    CUE_CHANCE,
    CUE_COLOURS,
    HELDOUT_SEED,
    KINDS,
    SCALE_TARGETS,
    TEXTURES,
    ObjectGT,
    Scene,
    class_cue,
    make_dataset,
    make_scene,
    to_tensors,
)

__all__ = [
    "CLASSES", "CLASS_SPECS", "NUM_CLASSES", "GROUPS", "SUPERCATEGORIES", "COOCCURRING",
    "PALETTE", "COLOURS", "PARTS", "SHAPES", "TEXTURES", "KINDS", "SCALE_TARGETS",
    "CUE_COLOURS", "CUE_CHANCE", "class_cue", "ObjectGT", "Scene", "make_scene",
    "make_dataset", "to_tensors", "SceneGraph", "ObjectNode", "QA", "save_coco", "load_coco",
    "HELDOUT_SEED",
]
