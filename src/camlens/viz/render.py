"""An :class:`~camlens.explanation.Explanation` as one picture (a row of panels, one per
target), and PNG output."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from camlens.io import atomic_path
from camlens.viz.grid import draw_grid, grid_layout, panel_width
from camlens.viz.pictures import (
    ImageLike,
    as_float_array,
    heatmap_image,
    overlay,
    pixel_space_image,
)

if TYPE_CHECKING:  # pragma: no cover
    from camlens.explanation import Explanation


def _target_title(ex: Explanation, sample: int, k: int) -> str:
    score = float(as_float_array(ex.scores[sample, k]))
    if ex.targets is not None:
        return f"#{k} class {int(as_float_array(ex.targets[sample, k]))}: {score:.3g}"
    return f"#{k}: {score:.3g}"


def explanation_image(
    ex: Explanation,
    image: Image.Image | None = None,
    sample: int = 0,
    panel_height: int = 224,
    colormap: str = "jet",
    alpha: float = 0.5,
) -> Image.Image:
    """One row of panels, one per target of ``sample``, titled with target index and score.

    Heatmaps are overlaid on ``image`` when given, else shown in ``colormap``; pixel-space maps
    are shown as images. Geometry: ``grid_layout(1, K, (w, panel_height))`` with ``w`` from the
    aspect ratio of ``image`` if given, else of the maps.
    """
    maps = ex.maps
    n = int(maps.shape[0])
    if not -n <= sample < n:
        raise IndexError(f"sample {sample} out of range for {n} samples")
    sample %= n
    pixel = maps.dim() == 5 if hasattr(maps, "dim") else np.ndim(maps) == 5
    panels: list[ImageLike | None] = []
    for k in range(int(maps.shape[1])):
        m = maps[sample, k]
        if pixel:
            panels.append(pixel_space_image(m))
        elif image is not None:
            panels.append(overlay(image, m, alpha=alpha, colormap=colormap))
        else:
            panels.append(heatmap_image(m, colormap))
    h, w = (int(s) for s in maps.shape[-2:])
    aspect_size = image.size if image is not None else (w, h)
    layout = grid_layout(
        1, max(1, len(panels)), (panel_width(aspect_size, panel_height), panel_height)
    )
    headers = [_target_title(ex, sample, k) for k in range(len(panels))]
    return draw_grid(layout, [panels], headers, [f"{ex.method} (sample {sample})"])


def explanation_png(
    ex: Explanation, image: Image.Image | None = None, sample: int = 0, **kwargs: Any
) -> bytes:
    """PNG bytes of :func:`explanation_image` (also what notebooks show for an Explanation)."""
    buf = io.BytesIO()
    explanation_image(ex, image, sample, **kwargs).save(buf, format="PNG")
    return buf.getvalue()


def shrink_to(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` itself when its longer side is at most ``max_side`` pixels, else a copy shrunk
    to that longer side (aspect kept, each side at least 1 pixel; Pillow's bilinear filter,
    which averages over the whole footprint when shrinking)."""
    if max_side < 1:
        raise ValueError(f"max_side must be a positive number of pixels, got {max_side}")
    w, h = image.size
    if max(w, h) <= max_side:
        return image
    scale = max_side / max(w, h)
    size = (max(1, min(max_side, round(w * scale))), max(1, min(max_side, round(h * scale))))
    return image.resize(size, Image.Resampling.BILINEAR)


def save_png(img: Image.Image, path: str | os.PathLike[str]) -> Path:
    """Write ``img`` as PNG to ``path`` atomically (:func:`camlens.io.atomic_path`): on any
    error ``path`` is left untouched and no temporary file stays behind."""
    dest = Path(path)
    with atomic_path(dest, make_parents=False) as tmp, open(tmp, "xb") as f:
        img.save(f, format="PNG")
    return dest
