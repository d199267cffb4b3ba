"""Concept-annotated datasets for network dissection: world v2's concept maps and Broden's
on-disk format.

A :class:`ConceptData` has ``concepts`` (global concept ids 1..C; id 0 means "no concept"),
``len()`` and ``data[i]`` -> :class:`Sample`: the model's input (3, H, W), the picture to show
and, per annotated category, label layers (L, h, w) of concept ids at the mask resolution
(several layers where a pixel carries several labels of one category, as Broden's parts do).
A category missing from ``labels`` is not annotated in that image (its pixels do not count).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from camlens.errors import DataError
from camlens.plural import counted
from camlens.synthetic.v2.spec import DEFAULT_OBJECTS, SyntheticSpec, parse_synthetic

__all__ = ["Concept", "Sample", "ConceptData", "WorldV2Concepts", "BrodenConcepts",
           "DISSECT_SEED", "WORLD_CATEGORIES"]

#: Seed of the world v2 scenes dissected by default (neither training's nor the held-out one).
DISSECT_SEED = 20252
#: World v2's concept categories (its per-pixel maps), in Broden's order of abstraction.
WORLD_CATEGORIES = ("part", "shape", "colour", "texture")

Preprocess = Callable[[Image.Image], torch.Tensor]


@dataclass(frozen=True)
class Concept:
    """One concept: its name and its category (part, colour, object, texture...)."""

    name: str
    category: str

    def __str__(self) -> str:
        return f"{self.name} ({self.category})"


@dataclass(frozen=True)
class Sample:
    """One annotated image: ``image`` the model's input (3, H, W) float32; ``picture`` (H', W',
    3) uint8 to show; ``labels`` category -> (L, h, w) int64 concept ids (0: none)."""

    image: torch.Tensor
    picture: np.ndarray
    labels: Mapping[str, np.ndarray]


class ConceptData(Protocol):
    """What :func:`camlens.dissect.dissect` reads (see the module docstring)."""

    @property
    def concepts(self) -> Sequence[Concept]:
        """Concept ``j`` has id ``j + 1``."""

    @property
    def name(self) -> str:
        """A short description for reports."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


def _to_input(picture: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [0, 1] (world v2 nets standardise inside)."""
    return torch.from_numpy(picture).permute(2, 0, 1).float().div(255.0)


class WorldV2Concepts:
    """World v2 scenes with their part, shape, colour and texture maps as concepts (full
    resolution). ``data``: a number of scenes ``n`` (scene ``i`` from
    ``default_rng((seed, i))`` with ``kind``, :func:`~camlens.synthetic.v2.make_dataset`), or
    the scenes of a ``synthetic:seed=S,n=N[,...]`` spec (text or parsed; docs/world.md; its
    kind default ``single``; ``seed`` and ``kind`` then do not apply). Scenes are generated on
    demand; ``cache`` keeps them (about 88 KB a scene at 112x112) since dissection reads the
    data twice. ``preprocess`` turns the PIL image into the model's input (default: [0, 1]
    floats, what the world v2 nets take)."""

    def __init__(self, data: int | str | SyntheticSpec, *, seed: int = DISSECT_SEED,
                 kind: str = "single", preprocess: Preprocess | None = None, cache: bool = True,
                 categories: Sequence[str] = WORLD_CATEGORIES) -> None:
        from camlens.synthetic.v2 import COLOURS, PARTS, SHAPES, TEXTURES

        if isinstance(data, str):
            data = parse_synthetic(data)
        if isinstance(data, SyntheticSpec):
            spec = data.with_defaults()
        elif data < 1:
            raise DataError(f"world v2: need at least 1 scene, got {data}")
        else:
            spec = SyntheticSpec(seed, int(data), kind=kind)
        bad = [c for c in categories if c not in WORLD_CATEGORIES]
        if bad or not categories:
            raise DataError(f"world v2 categories {list(categories)}: choose from "
                            f"{list(WORLD_CATEGORIES)}")
        self.spec = spec
        self.n, self.seed, self.kind, self.preprocess = spec.n, spec.seed, spec.kind, preprocess
        vocab = {"part": PARTS, "shape": SHAPES, "colour": COLOURS, "texture": TEXTURES}
        self.categories = tuple(categories)
        self._concepts: list[Concept] = []
        self._offset: dict[str, int] = {}
        for cat in self.categories:
            self._offset[cat] = len(self._concepts)
            self._concepts += [Concept(name, cat) for name in vocab[cat]]
        self._cache: dict[int, Sample] | None = {} if cache else None

    @property
    def concepts(self) -> Sequence[Concept]:
        return self._concepts

    @property
    def name(self) -> str:
        s, extra = self.spec, ""
        if s.start:
            extra += f", start {s.start}"
        if s.objects not in (None, DEFAULT_OBJECTS):
            extra += f", objects {s.objects[0]}-{s.objects[1]}"
        if s.cue_rate is not None:
            extra += f", cue_rate {s.cue_rate:g}"
        return f"world v2 ({counted(self.n, f'{self.kind} scene')}, seed {self.seed}{extra})"

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.n:
            raise IndexError(index)
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        scene = self.spec.scene(index)
        labels = {}
        for cat in self.categories:
            m = scene.concepts[cat].astype(np.int64)  # category index + 1, 0 = none
            labels[cat] = np.where(m > 0, m + self._offset[cat], 0)[None]
        image = (_to_input(scene.image) if self.preprocess is None
                 else self.preprocess(Image.fromarray(scene.image)))
        sample = Sample(image, scene.image, labels)
        if self._cache is not None:
            self._cache[index] = sample
        return sample


_META = ("image", "split", "ih", "iw", "sh", "sw")
_CATEGORY = re.compile(r"^([^()]+)\((\d+)\)$")


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except OSError as exc:
        raise DataError(f"Broden: cannot read {path} ({exc.strerror or exc})") from exc


class BrodenConcepts:
    """The Broden dataset's on-disk format (Bau et al. 2017), read from ``directory``:

    - ``index.csv``: one row per image: ``image`` (path under ``images/``), ``split``,
      ``ih``, ``iw`` (image size), ``sh``, ``sw`` (segmentation size), then one column per
      category holding ``;``-separated items: a PNG under ``images/`` (pixel labels) or a
      number (an image-level label: the whole image);
    - ``label.csv``: ``number,name,category,...`` (global label numbers; 0 = none);
    - ``c_<category>.csv``: ``code,number,name,...``: the labels of each category.

    A label PNG encodes label number ``R + 256 * G`` per pixel. ``categories`` selects some
    (default: every category that has a ``c_*.csv``), ``split`` filters rows. ``preprocess``
    turns the image into the model's input (default: [0, 1] floats at the image's size).
    """

    def __init__(self, directory: str | Path, *, preprocess: Preprocess | None = None,
                 categories: Sequence[str] | None = None, split: str | None = None) -> None:
        root = Path(directory).expanduser()
        if not (root / "index.csv").is_file():
            raise DataError(f"{root}: no index.csv, so this is not a Broden-format folder "
                            "(index.csv, label.csv, c_<category>.csv, images/)")
        self.root, self.preprocess = root, preprocess
        rows = _read_csv(root / "index.csv")
        columns = [c for c in (rows[0] if rows else {}) if c not in _META]
        available = [c for c in columns if (root / f"c_{c}.csv").is_file()]
        if categories is None:
            chosen = available
        else:
            chosen = list(categories)
            bad = [c for c in chosen if c not in available]
            if bad:
                raise DataError(f"Broden {root}: no category {bad}; it has {available}")
        if not chosen:
            raise DataError(f"Broden {root}: no category column of index.csv has its "
                            f"c_<category>.csv (columns: {columns})")
        names = {int(r["number"]): r["name"] for r in _read_csv(root / "label.csv")}
        self.categories = tuple(chosen)
        self._concepts: list[Concept] = []
        self._id: dict[str, np.ndarray] = {}  # category -> global number -> concept id
        top = max(names, default=0)
        for cat in self.categories:
            table = np.zeros(top + 1, dtype=np.int64)
            for r in _read_csv(root / f"c_{cat}.csv"):
                number = int(r["number"])
                if number == 0:
                    continue
                if number > top:
                    raise DataError(f"Broden {root}/c_{cat}.csv: label {number} is not in "
                                    "label.csv")
                self._concepts.append(Concept(names[number], cat))
                table[number] = len(self._concepts)
            self._id[cat] = table
        self.rows = [r for r in rows if split is None or r.get("split") == split]
        if not self.rows:
            raise DataError(f"Broden {root}: no image rows" + (f" in split {split!r}"
                                                              if split else ""))

    @property
    def concepts(self) -> Sequence[Concept]:
        return self._concepts

    @property
    def name(self) -> str:
        return f"Broden {self.root.name} ({len(self.rows)} images)"

    def __len__(self) -> int:
        return len(self.rows)

    def _layer(self, cat: str, item: str, shape: tuple[int, int]) -> np.ndarray:
        table = self._id[cat]
        if item.isdigit():
            number = int(item)
            if number >= len(table):
                raise DataError(f"Broden: image-level label {number} of {cat} is not in "
                                "label.csv")
            return np.full(shape, table[number], dtype=np.int64)
        path = self.root / "images" / item
        try:
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB"), dtype=np.int64)
        except OSError as exc:
            raise DataError(f"Broden: cannot read the label image {path} ({exc})") from exc
        if rgb.shape[:2] != shape:
            raise DataError(f"Broden: {path} is {rgb.shape[1]}x{rgb.shape[0]}, index.csv "
                            f"says sw x sh = {shape[1]}x{shape[0]}")
        numbers = rgb[..., 0] + 256 * rgb[..., 1]
        if numbers.max(initial=0) >= len(table):
            raise DataError(f"Broden: {path} holds label {int(numbers.max())}, which is not "
                            "in label.csv")
        return table[numbers]

    def __getitem__(self, index: int) -> Sample:
        row = self.rows[index]
        path = self.root / "images" / row["image"]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except OSError as exc:
            raise DataError(f"Broden: cannot read the image {path} ({exc})") from exc
        shape = (int(row["sh"]), int(row["sw"]))
        labels = {}
        for cat in self.categories:
            items = [s for s in (row.get(cat) or "").split(";") if s]
            if items:
                labels[cat] = np.stack([self._layer(cat, s, shape) for s in items])
        picture = np.array(img)
        image = _to_input(picture) if self.preprocess is None else self.preprocess(img)
        return Sample(image, picture, labels)
