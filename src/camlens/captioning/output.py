"""Write a :class:`~camlens.captioning.explain.CaptionExplanation` in ``camlens explain``'s
layout (:mod:`camlens.output`; read back with :func:`camlens.output.load`):

    explanation.json   the caption, its source and log-probability, per-word scores, methods,
                       layer, the map keys and the files written
    maps.npz           "<method>/caption" and "<method>/<position>-<word>" -> float16 maps in
                       [0, 1] at the photo's size ((H, W) heatmaps, (H, W, 3) pixel-space)
    <method>_caption.png, <method>_<position>-<word>.png
    summary.png        Fig. 10/11 style: the photo, then one row per target (the caption, each
                       word), one column per method
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import camlens
from camlens import io as cio
from camlens import viz
from camlens.captioning.explain import CaptionExplanation
from camlens.errors import ExplainError
from camlens.output import (
    MAPS,
    SUMMARY,
    WHAT,
    all_or_nothing,
    columns,
    png_name,
    resized,
    write_record,
)

__all__ = ["save_caption"]


def _png(img: Image.Image, path: Path) -> Path:
    cio.atomic_write_bytes(path, cio.png_bytes(np.asarray(img.convert("RGB"))))
    return path


def save_caption(result: CaptionExplanation, image: Image.Image, folder: str | Path, *,
                 what: Collection[str] = WHAT, colormap: str = "jet", alpha: float = 0.5,
                 record: dict[str, Any] | None = None) -> list[Path]:
    """Write ``result`` for the photo ``image`` into ``folder`` (module doc); maps are resized
    to the photo's size. Non-finite maps are refused (:class:`ExplainError`, nothing written);
    on an error what this call wrote is removed. Returns the paths, explanation.json last."""
    methods = list(result.explanations)
    keys = result.keys()
    maps = {m: result.explanations[m].maps[0].detach().float().cpu() for m in methods}
    bad = [m for m in methods if not torch.isfinite(maps[m]).all()]
    if bad:
        raise ExplainError(f"the {', '.join(bad)} map(s) came out non-finite (NaN or Inf); "
                           "nothing was written")
    by_pos = {w.position: w for w in result.words}
    titles = [f'caption "{result.text}" (log p = {result.log_probability:.2f})'] + [
        f'word "{by_pos[p].word}" at {p} (log p = {by_pos[p].log_probability:.2f})'
        for p in result.explained]
    folder = Path(folder)
    empty: list[str] = []
    with all_or_nothing(folder) as written:
        size = (image.height, image.width)
        cols = columns(methods)
        layout = viz.figure1_layout(image.size, len(keys), cols)
        thumb = (layout.panel_w, layout.panel_h)
        panels: list[dict[str, Image.Image]] = [{} for _ in keys]
        with contextlib.ExitStack() as stack:
            add = (stack.enter_context(cio.npz_writer(folder / MAPS, level=1))
                   if "maps" in what else None)
            for m in methods:
                for k, key in enumerate(keys):
                    arr = resized(maps[m][k], size)
                    if add is not None:
                        add(f"{m}/{key}", arr.astype(np.float16))
                    flat = bool(np.float16(arr.max()) == np.float16(arr.min()))
                    if flat:
                        empty.append(f"{m}/{key}")
                    if "png" not in what and "summary" not in what:
                        continue
                    pic = (viz.pixel_space_image(arr) if arr.ndim == 3
                           else viz.overlay(image, arr, alpha=alpha, colormap=colormap))
                    if flat:
                        pic = viz.caption(pic, "no evidence: the map is zero")
                    if "png" in what:
                        written.append(_png(pic, folder / png_name(f"{m}/{key}")))
                    panels[k][m] = pic.resize(thumb, Image.Resampling.BILINEAR)
        if add is not None:
            written.append(folder / MAPS)
        if "summary" in what:
            rows = [viz.Row(t, p) for t, p in zip(titles, panels)]
            fig = viz.figure1(image.resize(thumb, Image.Resampling.BILINEAR), rows, columns=cols)
            written.append(_png(fig, folder / SUMMARY))
        first = result.explanations[methods[0]]
        doc = {
            "camlens_version": camlens.__version__,
            "task": "captioning",
            "caption": result.text,
            "caption_source": result.source,
            "log_probability": result.log_probability,
            "log_probability_note": "log p(caption | image) under teacher forcing: the sum of "
                                    "every word's log p and <end>'s",
            "token_ids": list(result.ids),
            "words": [asdict(w) | {"classes": list(w.classes)} for w in result.words],
            "explained": [{"key": key, "position": p, "target": t} for key, p, t in zip(
                keys, [None, *result.explained],
                ["log p(caption)"] + [f"log p(word at {p})" for p in result.explained])],
            "methods": methods,
            "layers": list(first.layers),
            "output_size": {"height": image.height, "width": image.width},
            "maps_dtype": "float16",
            "maps": sorted(f"{m}/{k}" for m in methods for k in keys),
            "empty_maps": sorted(empty),
            "empty_maps_note": "maps that are constant (no evidence for the method's question)",
            **(record or {}),
            "files": sorted(p.name for p in written),
            "files_note": "what this save wrote beside explanation.json",
        }
        write_record(folder, doc, written)
    return written
