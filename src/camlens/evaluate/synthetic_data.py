"""The ``synthetic:`` dataset format: camlens's synthetic world (world v2,
:mod:`camlens.synthetic`) as evaluation samples."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from camlens.evaluate.datasets import AnnotatedObject, ArraySample, Sample, read_coco
from camlens.evaluate.localization import Box

#: ``synthetic:seed=S,n=N`` parameters and what they must be.
_PARAMS = ("seed", "n", "kind")


def _box(coords: Sequence[Any]) -> Box:
    x0, y0, x1, y1 = (int(c) for c in coords)
    return (x0, y0, x1, y1)


def scenes_to_samples(scenes: Sequence[Any], prefix: str = "") -> list[ArraySample]:
    """Synthetic :class:`camlens.synthetic.Scene` objects as :class:`ArraySample` records.

    Labels are the class indices, boxes and masks the scene's exact ground truth, image ids
    ``f"{prefix}{i:05d}"``.
    """
    out = []
    for i, scene in enumerate(scenes):
        h, w = scene.size
        objects = tuple(
            AnnotatedObject(label=int(o.label), box=_box(o.box), mask=o.mask)
            for o in scene.objects
        )
        out.append(ArraySample(image_path=None, width=w, height=h, objects=objects,
                               image_id=f"{prefix}{i:05d}", pixels=scene.image))
    return out


def _read_folder(root: Path) -> list[Sample]:
    """A folder written by :func:`camlens.synthetic.save_coco` (split ``val``): its PNGs with
    the exact masks, labels as class indices (as generated scenes have), ids the file stems."""
    from camlens.synthetic import CLASSES

    index = {name: i for i, name in enumerate(CLASSES)}
    json_path = root / "annotations" / "instances_val.json"
    if not json_path.is_file():
        raise FileNotFoundError(f"synthetic:{root}: no annotations/instances_val.json; write the "
                                "folder with camlens.synthetic.save_coco(scenes, FOLDER)")
    out: list[Sample] = []
    for s in read_coco(json_path, root / "val"):
        objects = tuple(dataclasses.replace(o, label=index[str(o.label)]) for o in s.objects)
        stem = s.image_path.stem if s.image_path is not None else str(s.image_id)
        out.append(dataclasses.replace(s, objects=objects, image_id=stem))
    return out


def load_synthetic_samples(rest: str) -> list[Sample]:
    """Loader of ``load_dataset("synthetic:...")``.

    - ``synthetic:FOLDER``: a folder written by :func:`camlens.synthetic.save_coco`: samples
      read from its PNGs, with exact masks;
    - ``synthetic:seed=S,n=N[,kind=K]``: world v2 scenes generated on the fly with
      ``make_dataset(N, seed=S, kind=K)`` (``kind``: single (default), multi, two, pair; see
      :data:`camlens.synthetic.KINDS`), held in memory, ids ``S/00000``...
    """
    from camlens.synthetic import KINDS, make_dataset

    text = rest.strip()
    if Path(text).is_dir():
        return _read_folder(Path(text))
    if "=" not in text:
        raise ValueError(
            f"synthetic:{rest}: expected a folder written by camlens.synthetic.save_coco or "
            "seed=S,n=N[,kind=single|multi|two|pair]"
        )
    params: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in _PARAMS:
            raise ValueError(f"synthetic:{rest}: unknown parameter {part!r} (seed, n, kind)")
        if key == "kind":
            if value not in KINDS:
                raise ValueError(f"synthetic:{rest}: kind must be one of {', '.join(KINDS)}, "
                                 f"got {value!r}")
            params[key] = value
            continue
        try:
            params[key] = int(value)
        except ValueError:
            raise ValueError(f"synthetic:{rest}: {key} must be an integer, got {value!r}") from None
    if "seed" not in params or "n" not in params:
        raise ValueError(f"synthetic:{rest}: give both seed= and n=")
    if params["n"] < 1:
        raise ValueError(f"synthetic:{rest}: n must be at least 1, got {params['n']}")
    scenes = make_dataset(params["n"], params["seed"], kind=params.get("kind", "single"))
    return list(scenes_to_samples(scenes, prefix=f"{params['seed']}/"))
