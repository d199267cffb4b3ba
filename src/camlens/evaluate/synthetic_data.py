"""The ``synthetic:`` dataset format: camlens's synthetic world as evaluation samples."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from camlens.evaluate.datasets import AnnotatedObject, ArraySample, Sample
from camlens.evaluate.localization import Box


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
    from camlens.synthetic.world import ANNOTATIONS, rle_decode

    with open(root / ANNOTATIONS, encoding="utf-8") as fh:
        data = json.load(fh)
    samples: list[Sample] = []
    for rec in data["images"]:
        objects = tuple(
            AnnotatedObject(label=int(o["label"]), box=_box(o["box"]),
                            mask=rle_decode(o["mask"]))
            for o in rec["objects"]
        )
        samples.append(Sample(image_path=root / rec["file"], width=int(rec["width"]),
                              height=int(rec["height"]), objects=objects, image_id=rec["file"]))
    return samples


def load_synthetic_samples(rest: str) -> list[Sample]:
    """Loader of ``load_dataset("synthetic:...")``.

    - ``synthetic:FOLDER``: a folder written by :func:`camlens.synthetic.save_dataset`
      (``annotations.json`` + ``images/``): samples read from the PNGs, with exact masks;
    - ``synthetic:seed=S,n=N`` (optionally ``,size=64``): scenes generated on the fly with
      ``make_dataset(N, seed=S)``, held in memory, ids ``S/00000``...
    """
    from camlens.synthetic import make_dataset

    text = rest.strip()
    if Path(text).is_dir():
        return _read_folder(Path(text))
    if "=" not in text:
        raise ValueError(
            f"synthetic:{rest}: expected a folder written by camlens.synthetic.save_dataset or "
            "seed=S,n=N[,size=PIXELS]"
        )
    params: dict[str, int] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ("seed", "n", "size"):
            raise ValueError(f"synthetic:{rest}: unknown parameter {part!r} (seed, n, size)")
        try:
            params[key] = int(value)
        except ValueError:
            raise ValueError(f"synthetic:{rest}: {key} must be an integer, got {value!r}") from None
    if "seed" not in params or "n" not in params:
        raise ValueError(f"synthetic:{rest}: give both seed= and n=")
    kwargs = {"size": params["size"]} if "size" in params else {}
    scenes = make_dataset(params["n"], params["seed"], **kwargs)
    return list(scenes_to_samples(scenes, prefix=f"{params['seed']}/"))
