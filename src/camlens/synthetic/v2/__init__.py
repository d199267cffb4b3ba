"""World v2: a synthetic ImageNet with exact ground truth, and the paper's nets for it.

>>> import numpy as np
>>> from camlens.synthetic.v2 import make_scene, make_dataset, NETS, DEFAULT_LAYERS
>>> scene = make_scene(np.random.default_rng(0))     # one labelled object, 112x112
>>> scene.objects[0].name, scene.objects[0].box      # class, inclusive (x0, y0, x1, y1)
>>> scene.graph().caption(), scene.graph().questions()[:3]
>>> pairs = make_dataset(100, seed=1, kind="pair")   # co-occurring pairs (cat and dog)

33 classes in 11 confusable groups, objects built from named parts, per-pixel concept maps
(object, part, shape, colour, texture), scene graphs with captions and questions, ILSVRC-like
object scales, a background cue for bias experiments, COCO-style files (:func:`save_coco`).
See docs/world.md. Nets: ``vgg``, ``vgg_gap``, ``alexnet``, ``resnet``; train them with
``python -m camlens.synthetic.v2.train``; :func:`load_pretrained` loads shipped weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

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
from camlens.synthetic.v2.nets import CONV_LAYERS, DEFAULT_LAYERS, INPUT_SIZE, NETS
from camlens.synthetic.v2.spec import SyntheticSpec, is_synthetic, parse_synthetic
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
    "NETS", "DEFAULT_LAYERS", "CONV_LAYERS", "INPUT_SIZE", "HELDOUT_SEED", "WEIGHTS_DIR",
    "load_pretrained", "recorded_accuracy", "SyntheticSpec", "parse_synthetic", "is_synthetic",
]

#: Where the trained weights (``<net>.pt``) and ``accuracy.json`` are shipped.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def load_pretrained(name: str, folder: str | Path | None = None) -> nn.Module:
    """The trained ``name`` net (see :data:`NETS`) from ``folder`` (default
    :data:`WEIGHTS_DIR`), float32, in eval mode."""
    if name not in NETS:
        raise KeyError(f"unknown world v2 net {name!r}; choose from {sorted(NETS)}")
    path = Path(folder or WEIGHTS_DIR) / f"{name}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: train it with `python -m "
                                f"camlens.synthetic.v2.train --out {path.parent} --minutes 60`")
    model = NETS[name]()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.eval()


def recorded_accuracy(folder: str | Path | None = None) -> dict[str, Any]:
    """``accuracy.json`` of a training run (default: the shipped weights')."""
    with open(Path(folder or WEIGHTS_DIR) / "accuracy.json", encoding="utf-8") as f:
        return json.load(f)
