"""The on-disk layout of explanations, shared by the CLI and any other consumer:
:func:`save` writes it, :func:`load` reads it back.

One folder per image::

    explanation.json  what was explained: methods, options, layers, targets, the map keys,
                      the files written beside it, and the caller's record (always written)
    maps.npz          "<method>/<class>" -> float16 maps in [0, 1] at the output size:
                      (H, W) heatmaps, (H, W, 3) pixel-space maps (0.5 = no contribution);
                      compressed (deflate), read with ``np.load`` or :func:`load`
    <method>_<class>.png   the map over the photo (heatmaps) or as an image (pixel space)
    summary.png       the paper's Figure 1: one row per class, one column per method

``what`` chooses among maps, png and summary; explanation.json is always written, since it
says what the folder holds (``"files"``) and :func:`load` starts from it. The output size is
the size of the photo given to :func:`save`: ``camlens explain`` gives the photo shrunk to a
longer side of ``--max-output-side`` pixels (default 768), as the maps come from a model input
of about ``--input-size`` pixels and more pixels would only interpolate them. float16 keeps
three significant digits (an error of at most 2.4e-4 in [0, 1]).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import zipfile
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import camlens
from camlens import io as cio
from camlens import viz
from camlens.errors import DataError, ExplainError
from camlens.explanation import Explanation
from camlens.methods import FIGURE1, METHODS

__all__ = ["WHAT", "Saved", "columns", "load", "resized", "save"]

WHAT = ("maps", "png", "summary", "json")
"""What :func:`save` can write: maps.npz, the per-map PNGs, summary.png, explanation.json
(always written: ``what=("json",)`` writes it alone)."""

JSON = "explanation.json"
MAPS = "maps.npz"
SUMMARY = "summary.png"
TEXT_HEADER = "Textual explanation"


def png_name(key: str) -> str:
    """The file of map ``key`` = "<method>/<class>": "<method>_<class>.png"."""
    method, _, cls = key.partition("/")
    return f"{method}_{cls}.png"


def resized(m: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """One (h, w) heatmap or (3, h, w) pixel-space map -> ``size`` = (H, W), bilinear
    (antialiased when shrinking), clipped to [0, 1]; float32 (H, W) or (H, W, 3)."""
    pixel = m.dim() == 3
    x = (m if pixel else m[None])[None].detach().float().cpu()
    if tuple(x.shape[-2:]) != size:
        shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
    arr = x[0].clamp(0.0, 1.0).numpy()
    return np.ascontiguousarray(np.moveaxis(arr, 0, -1)) if pixel else arr[0]


def _header(name: str) -> str:
    """A method's short title, from its summary: "Grad-CAM (Eq. 1-2): ..." -> "Grad-CAM"."""
    summary = METHODS[name].summary if name in METHODS else name
    return re.split(r" \(|:", summary, maxsplit=1)[0]


def columns(methods: Sequence[str]) -> list[tuple[str, str]]:
    """summary.png's columns as (method, header): the photo, then Figure 1's methods in the
    paper's order, then any others in the order given."""
    ordered = [m for m in FIGURE1 if m in methods] + [m for m in methods if m not in FIGURE1]
    return [("image", "Original image")] + [(m, _header(m)) for m in ordered]


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def save(explanations: Mapping[str, Explanation], image: Image.Image, folder: str | Path, *,
         labels: Sequence[str] | None = None, sample: int = 0,
         what: Collection[str] = WHAT, colormap: str = "jet", alpha: float = 0.5,
         record: Mapping[str, Any] | None = None,
         texts: Mapping[int, Sequence[str]] | None = None) -> list[Path]:
    """Write sample ``sample`` of ``explanations`` (method -> :class:`Explanation`, all with
    the same targets) for the photo ``image`` into ``folder`` (the module's layout); maps are
    resized to the photo's size. ``what``: a subset of :data:`WHAT` (explanation.json is
    written in any case). ``record``: extra fields for explanation.json. Non-finite maps are
    refused (:class:`ExplainError`, nothing written); on any error, what this call wrote is
    removed. Returns the paths written, explanation.json last."""
    unknown = sorted(set(what) - set(WHAT))
    if unknown:
        raise ExplainError(f"save: unknown output(s) {unknown}; choose from {list(WHAT)}")
    if not explanations:
        raise ExplainError("save: no explanations to write")
    methods = list(explanations)
    first = explanations[methods[0]]
    n = first.maps.shape[1]
    classes = (first.targets[sample].tolist() if first.targets is not None
               else list(range(n)))
    maps = {m: explanations[m].maps[sample].detach().float().cpu() for m in methods}
    bad = [m for m in methods if not torch.isfinite(maps[m]).all()]
    if bad:
        raise ExplainError(f"the {', '.join(bad)} map(s) came out non-finite (NaN or Inf); "
                           "nothing was written")
    names = [labels[c] if labels is not None and first.targets is not None else str(c)
             for c in classes]
    output = first.output
    probs = (torch.softmax(output[sample].detach().float().cpu(), dim=0)
             if isinstance(output, torch.Tensor) and output.dim() == 2 else None)

    folder = Path(folder)
    with all_or_nothing(folder) as written:
        empty = _write_maps(maps, classes, names, probs, image, folder, what, colormap, alpha,
                            written, texts or {})
        targets = [{"index": c, "name": name,
                    **({} if probs is None else {"probability": float(probs[c])})}
                   for c, name in zip(classes, names)]
        doc = {
            "camlens_version": camlens.__version__,
            "methods": methods,
            "options": {m: {k: _jsonable(v) for k, v in explanations[m].options.items()}
                        for m in methods},
            "layers": list(first.layers),
            "targets": targets,
            "output_size": {"height": image.height, "width": image.width},
            "maps_dtype": "float16",
            "maps": sorted(f"{m}/{c}" for m in methods for c in classes),
            "empty_maps": sorted(empty),
            "empty_maps_note": "maps that are constant (no evidence for the method's "
                               "question)",
            **(record or {}),
            "files": sorted(p.name for p in written),
            "files_note": "what this save wrote beside explanation.json",
        }
        write_record(folder, doc, written)
    return written


@contextlib.contextmanager
def all_or_nothing(folder: Path) -> Iterator[list[Path]]:
    """Make ``folder`` if needed and yield the list of the files written into it; if the block
    raises, remove those files (and ``folder`` if this call made it) and re-raise, so a failed
    save leaves nothing half-written."""
    created = not os.path.lexists(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        yield written
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def write_record(folder: Path, doc: Mapping[str, Any], written: list[Path]) -> None:
    """Write ``doc`` as ``folder/explanation.json`` (atomically; NaN refused) and note it in
    ``written``."""
    text = json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    cio.atomic_write_bytes(folder / JSON, text.encode("utf-8"))
    written.append(folder / JSON)


NPZ_LEVEL = 1
"""zlib level of maps.npz: level 1 deflates a 600 x 400 float16 map in about half the time of
the default 6, for a file about 2% larger."""


def _png(img: Image.Image, path: Path) -> Path:
    """Write ``img`` to ``path`` as PNG (:func:`camlens.io.png_bytes`: one fixed row filter,
    2.5x faster than Pillow's encoder, the file about 14% larger), atomically."""
    data = cio.png_bytes(np.asarray(img if img.mode == "RGB" else img.convert("RGB")))
    with cio.atomic_path(path, make_parents=False) as tmp, open(tmp, "xb") as fh:
        fh.write(data)
    return path


def _write_maps(maps: Mapping[str, torch.Tensor], classes: list[int], names: list[str],
                probs: torch.Tensor | None, img: Image.Image, folder: Path,
                what: Collection[str], colormap: str, alpha: float,
                written: list[Path], texts: Mapping[int, Sequence[str]]) -> list[str]:
    """maps.npz, the per-map PNGs and summary.png, one map at a time at the photo's size.
    Returns the keys of the constant ("empty") maps."""
    size = (img.height, img.width)
    cols = columns(list(maps)) + ([("text", TEXT_HEADER)] if texts else [])
    layout = viz.figure1_layout(img.size, len(classes), cols)
    thumb = (layout.panel_w, layout.panel_h)
    pictures = "png" in what or "summary" in what
    empty: list[str] = []
    panels: dict[int, dict[str, Image.Image]] = {k: {} for k in range(len(classes))}
    with contextlib.ExitStack() as stack:
        add = (stack.enter_context(cio.npz_writer(folder / MAPS, level=NPZ_LEVEL))
               if "maps" in what else None)
        for name, stack_k in maps.items():
            for k, cls in enumerate(classes):
                m = resized(stack_k[k], size)
                saved = m.astype(np.float16)
                if add is not None:
                    add(f"{name}/{cls}", saved)
                # constant as saved (e.g. nothing against the class); float16 rounding is
                # monotone, so the float16 extremes are the rounded float32 ones (and float16
                # reductions are slow in numpy)
                lo, hi = np.float16(m.min()), np.float16(m.max())
                is_empty = bool(hi == lo)
                if is_empty:
                    empty.append(f"{name}/{cls}")
                if not pictures:
                    continue
                pic = viz.pixel_space_image(m) if m.ndim == 3 else viz.overlay(
                    img, m, alpha=alpha, colormap=colormap)
                if is_empty:
                    pic = viz.caption(pic, "no evidence: the map is zero")
                if "png" in what:
                    written.append(_png(pic, folder / png_name(f"{name}/{cls}")))
                panels[k][name] = pic.resize(thumb, Image.Resampling.BILINEAR)
    if add is not None:
        written.append(folder / MAPS)
    if "summary" in what:
        for k, cls in enumerate(classes):
            if cls in texts:
                panels[k]["text"] = viz.text_panel(texts[cls], thumb)
        rows = [viz.Row(f"{name} (class {cls}" + (
                    "" if probs is None else f", p={float(probs[cls]):.3f}") + ")", panels[k])
                for k, (cls, name) in enumerate(zip(classes, names))]
        summary = viz.figure1(img.resize(thumb, Image.Resampling.BILINEAR), rows, columns=cols)
        written.append(_png(summary, folder / SUMMARY))
    return empty


@dataclass(frozen=True)
class Saved:
    """One folder written by :func:`save`, read back by :func:`load`."""

    folder: Path
    record: dict[str, Any]
    """explanation.json, parsed"""
    maps: dict[str, np.ndarray]
    """"<method>/<class>" -> float32 (H, W) heatmap or (H, W, 3) pixel-space map in [0, 1];
    empty when maps.npz was not written"""
    pngs: dict[str, Path]
    """"<method>/<class>" -> its PNG, for the maps whose PNG was written"""
    summary: Path | None
    """summary.png, when it was written"""


def load(folder: str | Path) -> Saved:
    """Read back a folder written by :func:`save`: its explanation.json, the maps of maps.npz
    as float32 (equal to the saved maps up to float16 rounding) and the paths of its PNGs.
    Only the files explanation.json lists are read, so a file left by an earlier save into the
    same folder is never mixed in. A folder that is not such a folder, or has lost a listed
    file, raises :class:`~camlens.errors.DataError`."""
    folder = Path(folder)
    shown = cio.display_path(folder)
    try:
        record = json.loads((folder / JSON).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{shown}: no {JSON}, so this is not a folder written by "
                        "camlens.output.save or `camlens explain`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{shown}/{JSON}: cannot be read as JSON ({exc})") from exc
    keys, files = (record.get(k) if isinstance(record, dict) else None for k in ("maps", "files"))
    if not (isinstance(keys, list) and isinstance(files, list)
            and all(isinstance(k, str) for k in keys + files)):
        raise DataError(f"{shown}/{JSON}: expected the \"maps\" and \"files\" lists that "
                        "camlens.output.save writes; was it written by another program or an "
                        "older camlens?")
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise DataError(f"{shown}: {JSON} lists {', '.join(missing)}, which is missing")
    maps = _read_maps(folder / MAPS, keys) if MAPS in files else {}
    pngs = {k: folder / png_name(k) for k in keys if png_name(k) in files}
    return Saved(folder, record, maps, pngs, folder / SUMMARY if SUMMARY in files else None)


def _read_maps(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    """maps.npz -> {key: float32 map}; its keys must be ``keys``."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            maps = {k: npz[k].astype(np.float32) for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{cio.display_path(path)}: cannot be read ({exc})") from exc
    if sorted(maps) != sorted(keys):
        raise DataError(f"{cio.display_path(path)} holds {sorted(maps)}, but {JSON} lists "
                        f"{sorted(keys)}")
    return maps
