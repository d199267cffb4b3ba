"""The report of ``camlens dissect``: dissection.json, units.csv, index.html (units sorted by
IoU, with names and their most activating image crops) and units/unit_<k>.png."""

from __future__ import annotations

import csv
import html
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from camlens.dissect.core import Dissection, activations, unit_mask
from camlens.dissect.data import ConceptData
from camlens.plural import counted

__all__ = ["write_report", "CROP"]

CROP = 96
"""Side of one crop in the unit strips, pixels."""


def _crop(picture: np.ndarray, mask: np.ndarray) -> Image.Image:
    """The mask's bounding box (padded by an eighth of the picture), the region outside the
    mask dimmed and its outline in yellow, resized to CROP x CROP."""
    img = picture.astype(np.float32)
    if mask.shape != picture.shape[:2]:
        mask = np.asarray(Image.fromarray(mask).resize(picture.shape[1::-1]))
    img[~mask] *= 0.35
    out = Image.fromarray(img.astype(np.uint8))
    if mask.any():
        edge = mask & ~(np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1)
                        & np.roll(mask, -1, 1))
        arr = np.asarray(out).copy()
        arr[edge] = (255, 230, 0)
        out = Image.fromarray(arr)
        ys, xs = np.nonzero(mask)
        pad = max(picture.shape[:2]) // 8
        box = (max(int(xs.min()) - pad, 0), max(int(ys.min()) - pad, 0),
               min(int(xs.max()) + pad + 1, picture.shape[1]),
               min(int(ys.max()) + pad + 1, picture.shape[0]))
        out = out.crop(box)
    return out.resize((CROP, CROP), Image.Resampling.BILINEAR)


def _strip(crops: list[Image.Image]) -> Image.Image:
    strip = Image.new("RGB", (max(len(crops), 1) * (CROP + 4), CROP), (255, 255, 255))
    for i, c in enumerate(crops):
        strip.paste(c, (i * (CROP + 4), 0))
    return strip


def write_report(d: Dissection, model: nn.Module, data: ConceptData, out: Path) -> list[Path]:
    """Write the report of dissection ``d`` (computed on ``data`` with ``model``) into ``out``.
    Returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "units").mkdir(exist_ok=True)
    written = [d.save(out / "dissection.json")]
    with open(out / "units.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["unit", "concept", "category", "iou", "best", "best_category", "threshold"])
        for u in d.units:
            w.writerow([u.unit, u.concept or "", u.category or "", f"{u.iou:.5f}", u.best,
                        u.best_category, f"{u.threshold:.6g}"])
    written.append(out / "units.csv")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    wanted = sorted({i for tops in d.top_images.values() for i, _ in tops})
    cache: dict[int, tuple[np.ndarray, torch.Tensor]] = {}
    for start in range(0, len(wanted), 16):
        samples = [data[i] for i in wanted[start:start + 16]]
        if len({s.image.shape for s in samples}) == 1:
            acts = activations(model, d.layer, torch.stack([s.image for s in samples])
                               .to(device)).cpu()
        else:
            acts = torch.cat([activations(model, d.layer, s.image[None].to(device)).cpu()
                              for s in samples])
        cache.update({i: (s.picture, a) for i, s, a in zip(wanted[start:], samples, acts)})
    rows = []
    for u in sorted(d.units, key=lambda u: -u.iou):
        crops = []
        for i, _ in d.top_images.get(u.unit, []):
            picture, act = cache[i]
            crops.append(_crop(picture, unit_mask(act[u.unit], u.threshold, picture.shape[:2])))
        strip = _strip(crops)
        png = out / "units" / f"unit_{u.unit}.png"
        strip.save(png, compress_level=1)
        written.append(png)
        name = (f"<b>{html.escape(u.concept)}</b> <span class=cat>({html.escape(u.category or '')})"
                "</span>" if u.concept else
                f"<span class=un>unnamed</span> <span class=cat>(best: {html.escape(u.best)}"
                f", {html.escape(u.best_category)})</span>")
        others = "; ".join(f"{html.escape(c)} ({html.escape(cat)}) {v:.3f}" for c, cat, v in u.top)
        rows.append(f"<tr><td>{u.unit}</td><td>{name}</td><td>{u.iou:.3f}</td>"
                    f"<td class=small>{others}</td><td><img src='units/unit_{u.unit}.png' "
                    f"alt='unit {u.unit}'></td></tr>")
    by_cat = Counter(u.category for u in d.named())
    cats = ", ".join(f"{c}: {n}" for c, n in sorted(by_cat.items(), key=lambda t: -t[1]))
    named, images = len(d.named()), counted(d.images, "image")
    page = f"""<!doctype html>
<html lang=en><head><meta charset=utf-8>
<meta name=viewport content='width=device-width, initial-scale=1'>
<title>Network dissection: {html.escape(d.model)}
{html.escape(d.layer)}</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:70em}}
table{{border-collapse:collapse}}td,th{{border-bottom:1px solid #ddd;padding:4px 8px;
text-align:left;vertical-align:middle}}.cat{{color:#666}}.un{{color:#a00}}
.small{{font-size:85%;color:#444;max-width:18em;min-width:11em}}.scroll{{overflow-x:auto;max-width:100%}}
@media(max-width:600px){{body{{margin:.6em}}h1{{font-size:1.4em}}}}</style></head><body>
<h1>Network dissection of {html.escape(d.model)}, layer {html.escape(d.layer)}</h1>
<p>Data: {html.escape(d.data)}, {images}. Each unit's threshold T<sub>k</sub> is its top
{d.quantile:g} quantile of activations over all positions; its mask is the bilinearly upsampled
activation map above T<sub>k</sub>; IoU<sub>k,c</sub> = &Sigma;|M<sub>k</sub> &cap; L<sub>c</sub>|
/ &Sigma;|M<sub>k</sub> &cup; L<sub>c</sub>| over the data (Bau et al. 2017). A unit is named
by its best concept when that IoU is above {d.min_iou:g} (the Grad-CAM paper's threshold).</p>
<p><b>{named} of {counted(len(d), 'unit')} named</b> ({cats or 'none'}).</p>
<p>Crops: the unit's most activating images, cropped to its mask (outlined in yellow; outside
dimmed).</p>
<div class=scroll><table><tr><th>unit</th><th>name</th><th>IoU</th><th>top concepts (IoU)</th>
<th>most activating images</th></tr>
{chr(10).join(rows)}
</table></div></body></html>
"""
    (out / "index.html").write_text(page, encoding="utf-8")
    written.append(out / "index.html")
    return written
