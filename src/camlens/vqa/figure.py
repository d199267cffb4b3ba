"""The Fig. 12-style summary of a VQA explanation: the question on top, then one row per
explained answer (its probability) and per contrast "a vs b", one column per method."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from camlens import output, viz
from camlens.explanation import Explanation
from camlens.vqa.explain import VQAExplanation

__all__ = ["fig12"]


def _panel(ex: Explanation, k: int, photo: Image.Image, colormap: str,
           alpha: float) -> Image.Image:
    m = output.resized(ex.maps[0, k], (photo.height, photo.width))
    if m.ndim == 3:
        pic = viz.pixel_space_image(m)
    else:
        pic = viz.overlay(photo, m, alpha=alpha, colormap=colormap)
    if float(np.ptp(m)) == 0.0:
        pic = viz.caption(pic, "no evidence: the map is zero")
    return pic


def fig12(result: VQAExplanation, photo: Image.Image, *, colormap: str = "jet",
          alpha: float = 0.5, panel_height: int = 224) -> Image.Image:
    """The summary picture (RGB) of ``result`` over ``photo`` (the maps resized to it)."""
    methods = list(result.maps)
    probs = result.probabilities
    targets = result.maps[methods[0]].targets
    if targets is None:
        raise ValueError("the answers' maps must carry their answer indices (targets)")
    ans_index = {a: int(i) for a, i in zip(result.answers, targets[0].tolist())}
    rows = [viz.Row(f'"{a}"  p={float(probs[ans_index[a]]):.3f}',
                    {m: _panel(result.maps[m], k, photo, colormap, alpha) for m in methods})
            for k, a in enumerate(result.answers)]
    if result.contrast_maps:
        rows += [viz.Row(f'"{a}" vs "{b}"',
                         {m: _panel(result.contrast_maps[m], k, photo, colormap, alpha)
                          for m in methods})
                 for k, (a, b) in enumerate(result.contrasts)]
    grid = viz.figure1(photo, rows, columns=output.columns(methods), panel_height=panel_height)
    size = max(12, min(24, panel_height // 10))
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.load_default(size=size)
    except (TypeError, OSError):  # older Pillow: the fixed bitmap font
        font = ImageFont.load_default()
    band = size * 2
    out = Image.new("RGB", (grid.width, grid.height + band), (255, 255, 255))
    out.paste(grid, (0, band))
    ImageDraw.Draw(out).text((8, size // 2), f"Q: {result.question}", fill=(0, 0, 0), font=font)
    return out
