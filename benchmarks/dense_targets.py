#!/usr/bin/env python3
"""camlens's detection and segmentation targets on torchvision's Faster R-CNN, RetinaNet and
DeepLabV3 (issue 14), with random weights (``weights=None, weights_backbone=None``: nothing is
downloaded).

For each model: one forward pass on a photo, then

- Faster R-CNN, RetinaNet: the highest-scoring box is explained with ``camlens.BoxTarget``
  (matched by class and IoU in the explaining forward pass);
- DeepLabV3: the class with the largest predicted region is explained with
  ``camlens.SegmentationTarget`` (its logits summed over that region);

by Grad-CAM and HiResCAM at ``layer4`` of the ResNet-50 backbone. One PNG per model: the photo
with the box (or the region tinted), then the two maps over it; the JSON gives the times and
what share of each map's mass falls inside the box or region, beside its share of the image.
With random weights the score is a random function of the image, so the maps show what the
*architecture* lets the score depend on (see docs/targets.md), not what an object looks like.

    python benchmarks/dense_targets.py --image sample:chelsea --out docs/img/targets

torchvision comes from the bench environment (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

import camlens
from camlens.io.images import load_image
from camlens.io.inputs import sample_image
from camlens.viz import overlay

METHODS = ("gradcam", "hirescam")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build(name: str, size: int) -> tuple[Any, str]:
    """(model in eval mode, layer) with seeded random weights; detectors keep ``size`` px and
    report every box (their score threshold is 0: random weights score every class ~1/C)."""
    from torchvision.models import detection, segmentation

    torch.manual_seed(0)
    none: dict[str, Any] = {"weights": None, "weights_backbone": None}
    if name == "fasterrcnn":
        return detection.fasterrcnn_resnet50_fpn(**none, min_size=size, max_size=size,
                                                 box_score_thresh=0.0).eval(), \
            "backbone.body.layer4"
    if name == "retinanet":
        return detection.retinanet_resnet50_fpn(**none, min_size=size, max_size=size,
                                                score_thresh=0.0).eval(), "backbone.body.layer4"
    if name == "deeplabv3":
        return segmentation.deeplabv3_resnet50(**none).eval(), "backbone.layer4"
    raise ValueError(name)


def target_of(name: str, model: Any, x: torch.Tensor) -> tuple[Any, dict[str, Any]]:
    """The camlens target for the model's own top prediction, and what it is."""
    with torch.no_grad():
        out = model(x)
    if name == "deeplabv3":
        pred = out["out"][0].argmax(0)
        counts = torch.bincount(pred.flatten(), minlength=out["out"].shape[1])
        c = int(counts.argmax())
        return camlens.SegmentationTarget(c), {"class": c, "pixels": int(counts[c]),
                                               "of": pred.numel(), "region": pred == c}
    det = out[0]
    j = int(det["scores"].argmax())
    box, label = det["boxes"][j], int(det["labels"][j])
    return camlens.BoxTarget(box, label), {"box": [round(v, 1) for v in box.tolist()],
                                           "label": label, "score": float(det["scores"][j]),
                                           "boxes": int(det["boxes"].shape[0])}


def panel(img: Image.Image, what: dict[str, Any]) -> Image.Image:
    """The photo with the explained box, or the explained region tinted."""
    pic = img.copy()
    if "box" in what:
        ImageDraw.Draw(pic).rectangle(what["box"], outline=(255, 255, 0), width=3)
    else:
        region = what["region"].numpy()
        arr = np.asarray(pic).astype(np.float32)
        arr[region] = 0.5 * arr[region] + 0.5 * np.array([255.0, 255.0, 0.0])
        pic = Image.fromarray(arr.round().astype(np.uint8))
    return pic


def region_of(what: dict[str, Any], size: int) -> torch.Tensor:
    """(size, size) 0/1: the pixels inside the explained box, or the explained region."""
    if "region" in what:
        return what["region"].float()
    x1, y1, x2, y2 = (round(v) for v in what["box"])
    inside = torch.zeros(size, size)
    inside[y1:y2, x1:x2] = 1.0
    return inside


def label(pic: Image.Image, text: str) -> Image.Image:
    out = Image.new("RGB", (pic.width, pic.height + 18), (255, 255, 255))
    out.paste(pic, (0, 18))
    ImageDraw.Draw(out).text((4, 3), text, fill=(0, 0, 0))
    return out


def run(name: str, img: Image.Image, size: int, out: Path, threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    model, layer = build(name, size)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255
    if name == "deeplabv3":  # the segmenters take a normalised image; the detectors normalise
        x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    t0 = time.perf_counter()
    target, what = target_of(name, model, x)
    forward_s = time.perf_counter() - t0
    panels = [label(panel(img, what), f"{name}: " + (
        f"box, class {what['label']}, score {what['score']:.3f}" if "box" in what else
        f"class {what['class']} region, {100 * what['pixels'] / what['of']:.0f}%"))]
    row: dict[str, Any] = {"model": name, "layer": layer, "forward_s": round(forward_s, 2),
                           **{k: v for k, v in what.items() if k != "region"}}
    inside = region_of(what, size)  # (H, W) 0/1: the box or the region
    row["area_inside"] = round(float(inside.mean()), 3)
    for method in METHODS:
        t0 = time.perf_counter()
        ex = camlens.explain(model, x, method=method, layer=layer, target=target)
        row[f"{method}_s"] = round(time.perf_counter() - t0, 2)
        row[f"{method}_score"] = float(ex.scores[0, 0])
        raw = ex.raw[0, 0]
        row[f"{method}_layer_map"] = list(raw.shape)
        row[f"{method}_nonzero"] = round(float((raw > 0).float().mean()), 3)
        row[f"{method}_mass_inside"] = round(float((ex.maps[0, 0] * inside).sum()
                                                   / ex.maps[0, 0].sum()), 3)
        panels.append(label(overlay(img, ex.maps[0, 0].numpy()), method))
    grid = Image.new("RGB", (sum(p.width for p in panels), panels[0].height), (255, 255, 255))
    left = 0
    for p in panels:
        grid.paste(p, (left, 0))
        left += p.width
    out.mkdir(parents=True, exist_ok=True)
    # a 128-colour palette keeps the picture small enough for the docs (~55 kB)
    grid.quantize(128, method=Image.Quantize.MEDIANCUT).save(out / f"{name}.png", optimize=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", default="sample:chelsea",
                   help="a photo, or sample:NAME (needs scikit-image)")
    p.add_argument("--models", default="fasterrcnn,retinanet,deeplabv3")
    p.add_argument("--size", type=int, default=224, help="square input side in pixels")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/dense_targets")
    a = p.parse_args()
    path = sample_image(a.image) if a.image.startswith("sample:") else Path(a.image)
    img = load_image(path).resize((a.size, a.size), Image.Resampling.BILINEAR)
    out = Path(a.out)
    rows = []
    for name in a.models.split(","):
        rows.append(run(name, img, a.size, out, a.threads))
        print(json.dumps(rows[-1]), flush=True)
    (out / "dense_targets.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
