"""Ground-truth readers for the paper's evaluations: ILSVRC (Sec. 4.1), PASCAL VOC and COCO
(pointing game, Sec. 4.3; faithfulness, Sec. 5.3).

``xml.etree`` and ``json`` for the readers; COCO's masks (RLE, polygons) are decoded by
pycocotools (the ``eval`` extra) when first asked for. Every reader returns
:class:`Sample` records whose boxes follow the package convention: inclusive, 0-based pixel
indices ``(x0, y0, x1, y1)`` (see :mod:`camlens.evaluate.localization`).

Coordinate conversions:

- PASCAL VOC XML boxes are 1-based (the VOC devkit: the top-left pixel is (1, 1)), so 1 is
  subtracted.
- ILSVRC XML boxes are used as stored (taken as 0-based indices); pass ``one_based=True`` to
  shift them like VOC if your copy is 1-based.
- COCO ``bbox`` ``[x, y, w, h]`` is continuous (pixel ``i`` spans ``[i, i+1)``); it becomes the
  inclusive box of the pixels it overlaps: ``floor(x) .. ceil(x + w) - 1``.

All boxes are clipped to the image.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from camlens.evaluate.extras import require
from camlens.evaluate.localization import Box, as_mask, box_to_mask

PathLike = Union[str, "os.PathLike[str]"]

IMAGE_SUFFIXES = (".JPEG", ".jpg", ".jpeg", ".png", ".JPG", ".PNG")

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
"""The 20 PASCAL VOC classes in the devkit's (alphabetical) order."""


@dataclass(frozen=True)
class AnnotatedObject:
    """One ground-truth object.

    ``mask``: an explicit (H, W) boolean mask when the source has one as an array;
    ``segmentation``: COCO's raw polygons or RLE, decoded on demand by
    :meth:`Sample.object_mask` (so loading COCO stays cheap); ``difficult``: VOC's flag;
    ``crowd``: COCO's ``iscrowd``.
    """

    label: str | int
    box: Box
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)
    difficult: bool = False
    crowd: bool = False
    segmentation: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Sample:
    """One annotated image: its path (None when unknown), size and objects."""

    image_path: Path | None
    width: int
    height: int
    objects: tuple[AnnotatedObject, ...] = ()
    image_id: str | int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))

    @property
    def labels(self) -> list[str | int]:
        """Distinct object labels in order of first appearance."""
        return list(dict.fromkeys(o.label for o in self.objects))

    def boxes(self, label: str | int, include_difficult: bool = True) -> list[Box]:
        """Boxes of the objects with ``label``."""
        return [
            o.box
            for o in self.objects
            if o.label == label and (include_difficult or not o.difficult)
        ]

    def object_mask(self, obj: AnnotatedObject) -> np.ndarray | None:
        """The object's (height, width) boolean mask, or None when it has only a box."""
        if obj.mask is not None:
            m = as_mask(obj.mask, "object mask")
            if m.shape != (self.height, self.width):
                size = (self.height, self.width)
                raise ValueError(f"object mask shape {m.shape} differs from the image's {size}")
            return m
        if obj.segmentation is not None:
            return coco_mask(obj.segmentation, self.height, self.width)
        return None

    def gt_mask(
        self, label: str | int, use_boxes: bool = True, include_difficult: bool = True
    ) -> np.ndarray:
        """Union of the masks of every object with ``label`` (pointing-game ground truth).

        Objects without a mask contribute their box when ``use_boxes`` (VOC, ILSVRC). An
        all-False mask means the class is absent.
        """
        out = np.zeros((self.height, self.width), dtype=bool)
        for obj in self.objects:
            if obj.label != label or (obj.difficult and not include_difficult):
                continue
            m = self.object_mask(obj)
            if m is not None:
                out |= m
            elif use_boxes:
                out |= box_to_mask(obj.box, (self.height, self.width))
        return out


@dataclass(frozen=True)
class ArraySample(Sample):
    """A :class:`Sample` whose image is held in memory: ``pixels`` is (H, W, 3) uint8 RGB."""

    pixels: np.ndarray | None = field(default=None, compare=False, repr=False)


# --------------------------------------------------------------------------------------------
# XML (ILSVRC, PASCAL VOC)


def _clip_box(x0: int, y0: int, x1: int, y1: int, width: int, height: int) -> Box:
    x0 = min(max(x0, 0), width - 1)
    y0 = min(max(y0, 0), height - 1)
    x1 = min(max(x1, x0), width - 1)
    y1 = min(max(y1, y0), height - 1)
    return (x0, y0, x1, y1)


def _text(node: ET.Element, tag: str, path: Path) -> str:
    found = node.find(tag)
    if found is None or found.text is None:
        raise ValueError(f"{path}: <{node.tag}> has no <{tag}>")
    return found.text.strip()


def _find_image(images_dir: Path | None, filename: str, default_suffix: str) -> Path | None:
    """The image file for ``filename`` in ``images_dir``: the name as given if it exists, else
    the first existing name with a known suffix, else the name with ``default_suffix``."""
    if images_dir is None or not filename:
        return None
    given = images_dir / filename
    if given.is_file():
        return given
    base = given.with_suffix("") if given.suffix in IMAGE_SUFFIXES else given
    for suffix in IMAGE_SUFFIXES:
        candidate = base.with_name(base.name + suffix)
        if candidate.is_file():
            return candidate
    return given if given.suffix in IMAGE_SUFFIXES else base.with_name(base.name + default_suffix)


def _read_bndbox_xml(
    path: PathLike, images_dir: PathLike | None, one_based: bool, default_suffix: str
) -> Sample:
    path = Path(path)
    root = ET.parse(path).getroot()
    size = root.find("size")
    if size is None:
        raise ValueError(f"{path}: no <size> element")
    width = int(float(_text(size, "width", path)))
    height = int(float(_text(size, "height", path)))
    if width < 1 or height < 1:
        raise ValueError(f"{path}: image size {width}x{height} is not positive")
    shift = 1 if one_based else 0
    objects = []
    for obj in root.findall("object"):
        name = _text(obj, "name", path)
        bnd = obj.find("bndbox")
        if bnd is None:
            raise ValueError(f"{path}: object {name!r} has no <bndbox>")
        coords = [
            round(float(_text(bnd, t, path))) - shift for t in ("xmin", "ymin", "xmax", "ymax")
        ]
        difficult_node = obj.find("difficult")
        difficult = (
            difficult_node is not None and (difficult_node.text or "0").strip() not in ("", "0")
        )
        box = _clip_box(coords[0], coords[1], coords[2], coords[3], width, height)
        objects.append(AnnotatedObject(label=name, box=box, difficult=difficult))
    filename_node = root.find("filename")
    filename = (filename_node.text or "").strip() if filename_node is not None else ""
    if not filename:
        filename = path.stem
    image_dir = Path(images_dir) if images_dir is not None else None
    return Sample(
        image_path=_find_image(image_dir, filename, default_suffix),
        width=width,
        height=height,
        objects=tuple(objects),
        image_id=path.stem,
    )


def read_ilsvrc_xml(
    path: PathLike, images_dir: PathLike | None = None, one_based: bool = False
) -> Sample:
    """One ILSVRC (CLS-LOC) validation annotation: image size and every ``(wnid, box)``.

    Labels are the wnids as written (``n01751748``); map them to class indices with
    :func:`wnid_to_index`. ``images_dir``: where to look for ``<filename>.JPEG``.
    """
    return _read_bndbox_xml(path, images_dir, one_based, ".JPEG")


def read_voc_xml(
    path: PathLike, images_dir: PathLike | None = None, one_based: bool = True
) -> Sample:
    """One PASCAL VOC annotation: size, objects (class name, box, ``difficult``).

    VOC coordinates are 1-based and are shifted to 0-based unless ``one_based=False``.
    """
    return _read_bndbox_xml(path, images_dir, one_based, ".jpg")


def read_synsets(path: PathLike) -> list[str]:
    """The wnids of a synset list in index order, one per line (``LOC_synset_mapping.txt``
    style: ``n01440764 tench, Tinca tinca``; anything after the wnid is ignored)."""
    wnids = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line:
                wnids.append(line.split()[0])
    if len(set(wnids)) != len(wnids):
        raise ValueError(f"{path}: repeated wnids")
    return wnids


def wnid_to_index(synsets: PathLike | Sequence[str]) -> dict[str, int]:
    """``{wnid: class index}`` from a synset list file or a list of wnids in index order."""
    wnids = read_synsets(synsets) if isinstance(synsets, (str, os.PathLike)) else list(synsets)
    return {w: i for i, w in enumerate(wnids)}


# --------------------------------------------------------------------------------------------
# COCO


def _mask_api() -> Any:
    return require("pycocotools.mask", "COCO masks (RLE, polygons)")


def rle_encode(mask: Any) -> dict[str, Any]:
    """COCO compressed RLE of a boolean (H, W) mask: ``{"size": [H, W], "counts": str}``
    (``pycocotools.mask.encode``; runs over the pixels in column-major order, starting with
    background)."""
    m = as_mask(mask)
    h, w = m.shape
    if m.size == 0:
        return {"size": [h, w], "counts": ""}
    rle = _mask_api().encode(np.asfortranarray(m, dtype=np.uint8))
    return {"size": [h, w], "counts": rle["counts"].decode("ascii")}


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """Boolean (H, W) mask of a COCO RLE, compressed (string counts) or not (list of ints).

    The runs must cover the mask exactly; a compressed string must be as pycocotools writes it
    (re-encoding the decoded mask gives it back), which also catches a truncated string.
    """
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"not a COCO RLE (needs 'size' [h, w] and 'counts'): {err}") from err
    if h < 0 or w < 0:
        raise ValueError(f"RLE size {[h, w]} is negative")
    if h * w == 0:
        return np.zeros((h, w), dtype=bool)
    api = _mask_api()
    if isinstance(counts, (str, bytes)):
        text = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
        try:
            m = api.decode({"size": [h, w], "counts": text})
        except ValueError as err:
            raise ValueError(f"RLE counts {text[:40]!r} do not decode to a {h}x{w} mask "
                             f"({err})") from None
        if api.encode(np.asfortranarray(m, dtype=np.uint8))["counts"] != text:
            raise ValueError(f"RLE counts {text[:40]!r} do not cover the {h}x{w} mask exactly "
                             "(a truncated string, or not written by pycocotools)")
        return m.astype(bool)
    runs = [int(c) for c in counts]
    if any(r < 0 for r in runs):
        raise ValueError("RLE has negative run lengths")
    if sum(runs) != h * w:
        raise ValueError(f"RLE runs cover {sum(runs)} pixels, the mask has {h * w}")
    compressed = api.frPyObjects({"size": [h, w], "counts": runs}, h, w)
    return api.decode(compressed).astype(bool)


def polygon_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` (their union) to (H, W) bool
    with pycocotools (the rasterisation of COCO's own masks: a pixel is in when its centre
    ``(c + 0.5, r + 0.5)`` is, up to pixels the outline passes through). Polygons of fewer
    than three vertices have no area and are skipped; the result is clipped to the image."""
    polys = [[float(v) for v in np.asarray(p, dtype=np.float64).reshape(-1)]
             for p in polygons]
    polys = [p for p in polys if len(p) >= 6 and len(p) % 2 == 0]
    if not polys or height < 1 or width < 1:
        return np.zeros((max(height, 0), max(width, 0)), dtype=bool)
    api = _mask_api()
    return api.decode(api.merge(api.frPyObjects(polys, height, width))).astype(bool)


def coco_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Boolean (height, width) mask of a COCO annotation or of its ``segmentation``.

    Accepts polygons (list of coordinate lists, see :func:`polygon_mask`), an uncompressed RLE
    (``counts`` a list, as for crowds) or a compressed RLE (``counts`` a string).
    """
    if isinstance(segmentation, dict) and "segmentation" in segmentation:
        segmentation = segmentation["segmentation"]
    if isinstance(segmentation, dict):
        m = rle_decode(segmentation)
        if m.shape != (height, width):
            raise ValueError(f"RLE size {m.shape} differs from the image size {(height, width)}")
        return m
    if isinstance(segmentation, (list, tuple)):
        return polygon_mask(segmentation, height, width)
    raise ValueError(f"unsupported COCO segmentation of type {type(segmentation).__name__}")


def coco_box(bbox: Sequence[float], height: int, width: int) -> Box:
    """COCO ``[x, y, w, h]`` to the inclusive box of the pixels it overlaps, clipped."""
    x, y, w, h = (float(v) for v in bbox)
    x0, y0 = math.floor(x), math.floor(y)
    x1, y1 = math.ceil(x + w) - 1, math.ceil(y + h) - 1
    return _clip_box(x0, y0, x1, y1, width, height)


def read_coco(annotation_json: PathLike, images_dir: PathLike | None = None) -> list[Sample]:
    """Every image of a COCO instances file, in file order, with its objects.

    Labels are category names; ``crowd`` is ``iscrowd``; segmentations are kept raw and decoded
    by :meth:`Sample.object_mask`. Images without annotations have no objects.
    """
    with open(annotation_json, encoding="utf-8") as fh:
        data = json.load(fh)
    try:
        categories = {c["id"]: c["name"] for c in data["categories"]}
        images = data["images"]
        annotations = data.get("annotations", [])
    except (KeyError, TypeError) as err:
        raise ValueError(f"{annotation_json}: not a COCO instances file ({err})") from err
    sizes = {img["id"]: (int(img["height"]), int(img["width"])) for img in images}
    per_image: dict[Any, list[AnnotatedObject]] = {img["id"]: [] for img in images}
    for ann in annotations:
        if ann["image_id"] not in sizes:
            raise ValueError(
                f"{annotation_json}: annotation {ann.get('id')} refers to unknown image "
                f"{ann['image_id']}"
            )
        h, w = sizes[ann["image_id"]]
        per_image[ann["image_id"]].append(
            AnnotatedObject(
                label=categories[ann["category_id"]],
                box=coco_box(ann["bbox"], h, w),
                crowd=bool(ann.get("iscrowd", 0)),
                segmentation=ann.get("segmentation") or None,
            )
        )
    root = Path(images_dir) if images_dir is not None else None
    return [
        Sample(
            image_path=(root / img["file_name"]) if root is not None else None,
            width=int(img["width"]),
            height=int(img["height"]),
            objects=tuple(per_image[img["id"]]),
            image_id=img["id"],
        )
        for img in images
    ]


# --------------------------------------------------------------------------------------------
# load_dataset


def _split_paths(rest: str) -> tuple[str, str | None]:
    """``PATH`` or ``PATH:SECOND``; a PATH that exists as given wins over splitting."""
    if not rest:
        raise ValueError("the dataset spec has no path after the format")
    if os.path.exists(rest) or ":" not in rest:
        return rest, None
    first, second = rest.rsplit(":", 1)
    return first, second or None


def _load_ilsvrc(rest: str) -> list[Sample]:
    xml_dir, images_dir = _split_paths(rest)
    folder = Path(xml_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"ILSVRC annotation folder not found: {folder}")
    images = Path(images_dir) if images_dir else folder
    return [read_ilsvrc_xml(p, images) for p in sorted(folder.glob("*.xml"))]


def _load_voc(rest: str) -> list[Sample]:
    root = Path(rest)
    annotations = root / "Annotations"
    if not annotations.is_dir():
        raise FileNotFoundError(f"no Annotations/ folder under the VOC root {root}")
    split = root / "ImageSets" / "Main" / "val.txt"
    if split.is_file():
        lines = split.read_text(encoding="utf-8").splitlines()
        ids = [line.split()[0] for line in lines if line.strip()]
        paths = [annotations / f"{i}.xml" for i in ids]
    else:
        paths = sorted(annotations.glob("*.xml"))
    return [read_voc_xml(p, root / "JPEGImages") for p in paths]


def _coco_images_dir(json_path: Path) -> Path:
    """``instances_val2017.json`` in ``annotations/`` -> ``../val2017`` (the COCO layout), else
    ``val2017`` or ``images`` beside the JSON, else the JSON's folder."""
    split = json_path.stem.split("_", 1)[-1]
    folder = json_path.parent
    for candidate in (folder.parent / split, folder / split, folder / "images"):
        if candidate.is_dir():
            return candidate
    return json_path.parent


def _load_coco(rest: str) -> list[Sample]:
    json_file, images_dir = _split_paths(rest)
    path = Path(json_file)
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    return read_coco(path, Path(images_dir) if images_dir else _coco_images_dir(path))


def _load_synthetic(rest: str) -> list[Sample]:
    from camlens.evaluate.synthetic_data import load_synthetic_samples

    return load_synthetic_samples(rest)


_LOADERS: dict[str, Callable[[str], list[Sample]]] = {
    "ilsvrc": _load_ilsvrc,
    "voc": _load_voc,
    "coco": _load_coco,
    "synthetic": _load_synthetic,  # camlens.synthetic's world (camlens.evaluate.synthetic_data)
}


def register_format(name: str, loader: Callable[[str], list[Sample]]) -> None:
    """Make ``load_dataset(f"{name}:...")`` call ``loader`` with the text after the colon."""
    if not name or ":" in name:
        raise ValueError(f"invalid format name {name!r}")
    _LOADERS[name.lower()] = loader


def dataset_formats() -> list[str]:
    """The format names :func:`load_dataset` accepts."""
    return sorted(_LOADERS)


def load_dataset(spec: str) -> list[Sample]:
    """Load ground truth from ``FORMAT:PATH``.

    - ``ilsvrc:XML_DIR`` or ``ilsvrc:XML_DIR:IMAGES_DIR``: every ``*.xml`` (sorted); images
      are looked for in ``IMAGES_DIR``, by default beside the XMLs.
    - ``voc:ROOT``: ``ROOT/Annotations``, images in ``ROOT/JPEGImages``; the ids of
      ``ROOT/ImageSets/Main/val.txt`` when it exists, else every annotation.
    - ``coco:ANNOTATION_JSON`` or ``coco:ANNOTATION_JSON:IMAGES_DIR``: the images folder
      defaults to the COCO layout (``annotations/instances_val2017.json`` -> ``val2017/``).
    - ``synthetic:FOLDER`` or ``synthetic:seed=S,n=N[,kind=K][,...]``: camlens's synthetic world,
      v2 (see :func:`camlens.evaluate.synthetic_data.load_synthetic_samples`, docs/world.md).

    An unknown format raises ``ValueError`` naming the known ones.
    """
    fmt, sep, rest = spec.partition(":")
    loader = _LOADERS.get(fmt.lower()) if sep else None
    if loader is None:
        from camlens.errors import DataSpecError

        known = ", ".join(dataset_formats())
        raise DataSpecError(
            f"unknown dataset spec {spec!r}: expected FORMAT:PATH with FORMAT one of {known}; "
            "synthetic data is written synthetic:seed=S,n=N[,...] (docs/world.md)"
        )
    return loader(rest)
