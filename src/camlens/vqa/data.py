"""VQA data from world v2: scenes, the questions their scene graphs ask, and the answer set.

Questions come from :meth:`camlens.synthetic.v2.SceneGraph.questions` (existence, count, colour,
shape, position). A scene asks many shape questions (one per part) and many pairwise position
questions, so :func:`scene_questions` keeps at most :data:`PER_KIND` of each kind per scene,
drawn at random, so that no kind swamps the others.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from camlens.synthetic.v2 import COLOURS, SHAPES, Scene
from camlens.synthetic.v2.graph import QA
from camlens.synthetic.v2.spec import SyntheticSpec

__all__ = ["ANSWERS", "KINDS", "PER_KIND", "scene_questions", "make_scenes", "images",
           "SCENE_KIND", "SCENE_OBJECTS"]

#: The VQA data's scenes: ``kind=multi,objects=1-4`` (the default of ``camlens vqa`` and
#: ``camlens evaluate vqa`` for a ``synthetic:`` spec that gives neither).
SCENE_KIND, SCENE_OBJECTS = "multi", (1, 4)

_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
#: The fixed answer set: yes/no, counts, colours, shapes, thirds of the image.
ANSWERS: tuple[str, ...] = ("yes", "no", *_NUMBERS, *COLOURS, *SHAPES, "left", "middle", "right")
KINDS = ("existence", "count", "colour", "shape", "position")
#: At most this many questions of each kind per scene.
PER_KIND = {"existence": 4, "count": 2, "colour": 3, "shape": 3, "position": 4}


def scene_questions(scene: Scene, rng: np.random.Generator) -> list[QA]:
    """At most :data:`PER_KIND` questions of each kind about ``scene``, drawn with ``rng``."""
    by_kind: dict[str, list[QA]] = {}
    for qa in scene.graph().questions():
        by_kind.setdefault(qa.kind, []).append(qa)
    out: list[QA] = []
    for kind, items in by_kind.items():
        keep = rng.permutation(len(items))[:PER_KIND[kind]]
        out += [items[i] for i in sorted(keep)]
    return out


def make_scenes(n: int, seed: int, start: int = 0) -> list[Scene]:
    """Scenes ``start .. start+n-1`` of the VQA data: 1-4 objects of distinct classes
    (world v2's ``multi`` kind), scene i drawn from ``default_rng((seed, i))``:
    ``synthetic:seed=SEED,n=N,start=START,kind=multi,objects=1-4``."""
    return SyntheticSpec(int(seed), n, kind=SCENE_KIND, start=start,
                         objects=SCENE_OBJECTS).scenes()


def images(scenes: Sequence[Scene]) -> torch.Tensor:
    """The scenes' images (N, 3, H, W), float32 in [0, 1]."""
    x = np.stack([s.image for s in scenes]).astype(np.float32) / 255.0
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def answer_counts(qas: Sequence[QA]) -> dict[str, int]:
    """How often each answer occurs (for the majority baseline)."""
    out: dict[str, int] = {}
    for q in qas:
        out[q.answer] = out.get(q.answer, 0) + 1
    return out
