"""The ``synthetic:`` dataset format: camlens's synthetic world (world v2,
:mod:`camlens.synthetic`) as evaluation samples."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from camlens.evaluate.datasets import AnnotatedObject, ArraySample, Sample, read_coco
from camlens.evaluate.localization import Box


def _box(coords: Sequence[Any]) -> Box:
    x0, y0, x1, y1 = (int(c) for c in coords)
    return (x0, y0, x1, y1)


def scenes_to_samples(scenes: Sequence[Any], prefix: str = "",
                      start: int = 0) -> list[ArraySample]:
    """Synthetic :class:`camlens.synthetic.Scene` objects as :class:`ArraySample` records.

    Labels are the class indices, boxes and masks the scene's exact ground truth, image ids
    ``f"{prefix}{start + i:05d}"``.
    """
    out = []
    for i, scene in enumerate(scenes):
        h, w = scene.size
        objects = tuple(
            AnnotatedObject(label=int(o.label), box=_box(o.box), mask=o.mask)
            for o in scene.objects
        )
        out.append(ArraySample(image_path=None, width=w, height=h, objects=objects,
                               image_id=f"{prefix}{start + i:05d}", pixels=scene.image))
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
    - ``synthetic:seed=S,n=N[,kind=K][,start=I][,objects=A-B][,cue_rate=R]``: world v2 scenes
      generated on the fly (:func:`camlens.synthetic.parse_synthetic`; kind default single),
      held in memory, ids ``S/00000``...
    """
    from camlens.errors import DataSpecError
    from camlens.synthetic.v2.spec import FORM, is_synthetic, parse_synthetic

    text = rest.strip()
    if Path(text).expanduser().is_dir():
        return _read_folder(Path(text).expanduser())
    if not is_synthetic(f"synthetic:{text}"):
        raise DataSpecError(f"bad data spec 'synthetic:{rest}': no such folder (one written by "
                            f"camlens.synthetic.save_coco); synthetic data is written {FORM} "
                            "(docs/world.md)")
    spec = parse_synthetic(f"synthetic:{text}")
    return list(scenes_to_samples(spec.scenes(), prefix=f"{spec.seed}/", start=spec.start))
