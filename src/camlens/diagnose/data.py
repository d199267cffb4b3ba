"""What every diagnosis runs on: images with their classes (and, for world v2, the scene's
exact ground truth), a model record, and Grad-CAM / Guided Grad-CAM maps at image size.

``--data`` takes the specs of :func:`camlens.evaluate.load_dataset` (``coco:FILE``,
``voc:ROOT``, ``synthetic:FOLDER``...) and, for world v2 scenes generated on the fly,
``synthetic:seed=S,n=N[,kind=K][,start=I][,objects=A-B][,cue_rate=R]`` (docs/world.md;
:func:`camlens.synthetic.parse_synthetic`): then every item keeps its
:class:`camlens.synthetic.Scene` (parts, decoys, the bias cue band) for the measurements that
need exact ground truth.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from camlens.evaluate.datasets import ArraySample, Sample, load_dataset
from camlens.evaluate.localization import Box, box_to_mask
from camlens.evaluate.model import label_index, resolve_model
from camlens.models.registry import ModelRecord
from camlens.synthetic.v2 import Scene
from camlens.synthetic.v2.spec import is_synthetic, parse_synthetic

__all__ = ["Item", "load_items", "items_from_scenes", "load_record", "model_inputs",
           "class_maps", "Maps", "predict"]


@dataclass(frozen=True)
class Item:
    """One image: ``image`` (H, W, 3) uint8 RGB; ``labels`` the classes present (sorted class
    indices); ``masks[c]`` (H, W) bool where class ``c`` is (boxes when there is no mask);
    ``boxes[c]`` its inclusive boxes; ``scene`` the world v2 scene, or None."""

    id: str
    image: np.ndarray
    labels: tuple[int, ...]
    masks: dict[int, np.ndarray]
    boxes: dict[int, list[Box]]
    scene: Scene | None = None

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])


def items_from_scenes(scenes: Sequence[Scene], prefix: str = "", start: int = 0) -> list[Item]:
    """World v2 scenes as items (ids ``f"{prefix}{start + i:05d}"``), exact masks and boxes."""
    out = []
    for i, s in enumerate(scenes):
        masks: dict[int, np.ndarray] = {}
        boxes: dict[int, list[Box]] = {}
        for o in s.objects:
            masks[o.label] = masks.get(o.label, np.zeros(s.size, dtype=bool)) | o.mask
            boxes.setdefault(o.label, []).append(tuple(int(v) for v in o.box))  # type: ignore[arg-type]
        out.append(Item(f"{prefix}{start + i:05d}", s.image, tuple(sorted(masks)), masks, boxes, s))
    return out


def _pixels(sample: Sample) -> np.ndarray:
    if isinstance(sample, ArraySample) and sample.pixels is not None:
        return np.asarray(sample.pixels, dtype=np.uint8)
    if sample.image_path is None or not sample.image_path.is_file():
        raise FileNotFoundError(f"image of {sample.image_id!r} not found: {sample.image_path}")
    with Image.open(sample.image_path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def load_items(spec: str, to_index: Callable[[Any], int] | None = None,
               limit: int | None = None) -> list[Item]:
    """Items of a ``--data`` spec (see the module docstring); ``to_index`` maps a dataset's
    labels (names) to class indices (default: ints as they are). ``limit``: the first N."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if is_synthetic(spec):
        scenes = parse_synthetic(spec).limited(limit)
        return items_from_scenes(scenes.scenes(), prefix=f"{scenes.seed}/", start=scenes.start)
    index = to_index or label_index(None, None)
    out = []
    for sample in load_dataset(spec)[:limit]:
        image = _pixels(sample)
        h, w = image.shape[:2]
        if (sample.height, sample.width) != (h, w):
            raise ValueError(f"image {sample.image_id!r} is {w}x{h}, its annotation says "
                             f"{sample.width}x{sample.height}")
        masks: dict[int, np.ndarray] = {}
        boxes: dict[int, list[Box]] = {}
        for obj in sample.objects:
            c = index(obj.label)
            m = sample.object_mask(obj)
            m = box_to_mask(obj.box, (h, w)) if m is None else m
            masks[c] = masks.get(c, np.zeros((h, w), dtype=bool)) | m
            boxes.setdefault(c, []).append(obj.box)
        if masks:
            out.append(Item(str(sample.image_id), image, tuple(sorted(masks)), masks, boxes))
    if not out:
        raise ValueError(f"{spec}: no annotated image to diagnose")
    return out


def load_record(model: Any, weights: str | None = None, layer: str | None = None,
                device: str = "cpu") -> ModelRecord:
    """The model as :func:`camlens.evaluate.resolve_model` gives it; ``layer`` overrides its
    default Grad-CAM layer (one is needed)."""
    rec = resolve_model(model, default_layer=layer, device=device, weights=weights)
    if rec.default_layer is None:
        raise ValueError(f"{rec.name} has no default Grad-CAM layer; give --layer")
    return rec


def model_inputs(rec: ModelRecord, items: Sequence[Item]) -> torch.Tensor:
    """The model's input batch (B, 3, H', W') of ``items`` (one size, or an error)."""
    xs = [rec.preprocess(Image.fromarray(it.image)) for it in items]
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) > 1:
        raise ValueError(f"images of one batch give inputs of several sizes {sorted(shapes)}; "
                         "use --batch-size 1")
    return torch.stack(xs).to(rec.device)


def predict(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits (B, N) float32 on the CPU, without autograd, from a private view of ``model``
    (:func:`camlens.view.private_view`): a model in training mode keeps its BatchNorm
    statistics (the view's clones are updated), as with :func:`camlens.explain`."""
    from camlens.evaluate.model import predict as plain
    from camlens.view import private_view

    return plain(private_view(model).root, x)


@dataclass(frozen=True)
class Maps:
    """Per image and target: ``gradcam`` (B, K, H, W) Eq. 2's map (ReLU'd, not rescaled)
    upsampled to image size, float64; ``guided`` (B, K, H, W, 3) Guided Grad-CAM in [0, 1]
    (0.5: no contribution) or None; ``scores`` (B, K) the explained logits."""

    gradcam: np.ndarray
    guided: np.ndarray | None
    scores: np.ndarray


def class_maps(rec: ModelRecord, x: torch.Tensor, targets: torch.Tensor,
               size: tuple[int, int], guided: bool = False) -> Maps:
    """Grad-CAM (and Guided Grad-CAM) of ``targets`` (B, K) on ``x`` at image ``size``."""
    import camlens
    from camlens.maps import upsample
    from camlens.output import resized

    methods = ["gradcam", "guided-gradcam"] if guided else ["gradcam"]
    ex = camlens.explain(rec.model, x, method=methods, layer=rec.default_layer, target=targets)
    raw = ex["gradcam"].raw.detach().double().cpu()
    cam = upsample(raw, size).clamp_min(0.0).numpy()
    g = None
    if guided:
        gm = ex["guided-gradcam"].maps
        g = np.stack([np.stack([resized(gm[b, k], size) for k in range(gm.shape[1])])
                      for b in range(gm.shape[0])])
    return Maps(cam, g, ex["gradcam"].scores.detach().double().cpu().numpy())
