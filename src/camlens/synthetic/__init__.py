"""A synthetic world with exact ground truth, and two small nets trained on it.

>>> from camlens.synthetic import load_pretrained, make_dataset, to_tensors, DEFAULT_LAYERS
>>> model = load_pretrained("gapnet")                # eval mode, float32
>>> x, y = to_tensors(make_dataset(8, seed=12345))   # (8, 3, 64, 64), (8, NUM_CLASSES)
>>> logits = model(x)                                # multi-label: sigmoid(logits) per class

Shipped weights are ``weights/<name>.pt`` (float32 state dicts) with their held-out
accuracies in ``weights/accuracy.json``; ``python -m camlens.synthetic.train`` rebuilds them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from camlens.synthetic.nets import DEFAULT_LAYERS, LAST_CONV, NETS, GAPNet, VGGStyleNet
from camlens.synthetic.world import (
    CLASS_STYLES,
    CLASSES,
    NUM_CLASSES,
    Scene,
    SceneObject,
    load_synthetic,
    make_dataset,
    make_scene,
    rle_decode,
    rle_encode,
    save_dataset,
    to_tensors,
)

__all__ = [
    "CLASSES",
    "CLASS_STYLES",
    "NUM_CLASSES",
    "Scene",
    "SceneObject",
    "make_scene",
    "make_dataset",
    "to_tensors",
    "save_dataset",
    "load_synthetic",
    "rle_encode",
    "rle_decode",
    "VGGStyleNet",
    "GAPNet",
    "NETS",
    "DEFAULT_LAYERS",
    "LAST_CONV",
    "WEIGHTS_DIR",
    "HELDOUT_SEED",
    "load_pretrained",
    "recorded_accuracy",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: Seed of the held-out scenes the shipped accuracies were measured on (training never uses it).
HELDOUT_SEED = 12345


def load_pretrained(name: str) -> nn.Module:
    """The shipped ``name`` net (see :data:`NETS`), float32, in eval mode."""
    if name not in NETS:
        raise KeyError(f"unknown synthetic net {name!r}; choose from {sorted(NETS)}")
    path = WEIGHTS_DIR / f"{name}.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: run `python -m camlens.synthetic.train --out {WEIGHTS_DIR}`"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = NETS[name]()
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.eval()


def recorded_accuracy() -> dict:
    """The contents of ``weights/accuracy.json`` (held-out metrics per net, training facts)."""
    with open(WEIGHTS_DIR / "accuracy.json") as f:
        return json.load(f)
