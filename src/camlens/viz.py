"""Pictures of explanations: colormaps, heatmap overlays, the paper's Figure 1 grid, PNG output.

numpy and Pillow draw; torch resizes maps. matplotlib is optional: when installed it supplies
the perceptual colormaps (``viridis``, ``inferno``, ...); ``jet`` (the paper's) and ``gray`` are
built in. Torch tensors are accepted wherever an array is.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from camlens.io import atomic_path
from camlens.maps import upsample

if TYPE_CHECKING:  # pragma: no cover
    from camlens.explanation import Explanation

__all__ = [
    "COLORMAPS",
    "BUILTIN_COLORMAPS",
    "DEFAULT_COLUMNS",
    "GridLayout",
    "Row",
    "apply_colormap",
    "caption",
    "colormap",
    "explanation_image",
    "explanation_png",
    "figure1",
    "figure1_layout",
    "grid_layout",
    "heatmap_image",
    "overlay",
    "pixel_space_image",
    "save_png",
    "shrink_to",
]

ArrayLike = Any  # numpy array, torch tensor, or anything np.asarray accepts
ImageLike: TypeAlias = Image.Image | np.ndarray

# --------------------------------------------------------------------------------------------
# Colormaps
# --------------------------------------------------------------------------------------------

# MATLAB's / matplotlib's 'jet': piecewise-linear segments (x, value) per channel.
_JET_SEGMENTS: dict[str, tuple[tuple[float, float], ...]] = {
    "red": ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    "green": ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    "blue": ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
}

BUILTIN_COLORMAPS: tuple[str, ...] = ("jet", "gray")
"""Colormaps computed in numpy, always available."""

_MATPLOTLIB_COLORMAPS: tuple[str, ...] = ("viridis", "inferno", "magma", "plasma", "turbo")

COLORMAPS: tuple[str, ...] = BUILTIN_COLORMAPS + _MATPLOTLIB_COLORMAPS
"""All colormap names; those not in ``BUILTIN_COLORMAPS`` need matplotlib at runtime."""

_LUT_SIZE = 256


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Float in [0, 1] -> uint8, rounding half up."""
    return np.floor(np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@cache
def _lut(name: str) -> np.ndarray:
    x = np.linspace(0.0, 1.0, _LUT_SIZE)
    if name == "jet":
        rgb = np.stack(
            [
                np.interp(x, [p for p, _ in seg], [v for _, v in seg])
                for seg in _JET_SEGMENTS.values()
            ],
            axis=1,
        )
    elif name == "gray":
        rgb = np.repeat(x[:, None], 3, axis=1)
    elif name in _MATPLOTLIB_COLORMAPS:
        try:
            import matplotlib
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                f"colormap {name!r} needs matplotlib (pip install 'camlens[viz]'); "
                f"built-in colormaps: {', '.join(BUILTIN_COLORMAPS)}"
            ) from err
        rgb = np.asarray(matplotlib.colormaps[name](x))[:, :3]
    else:
        raise ValueError(f"unknown colormap {name!r}; choose one of: {', '.join(COLORMAPS)}")
    lut = _to_uint8(rgb)
    lut.setflags(write=False)
    return lut


def colormap(name: str = "jet") -> np.ndarray:
    """The colormap ``name`` as a (256, 3) uint8 lookup table (entry i is the colour of i/255).

    Raises ValueError for an unknown name and ImportError for a matplotlib colormap when
    matplotlib is not installed.
    """
    return _lut(name).copy()


def apply_colormap(heatmap: ArrayLike, name: str = "jet") -> np.ndarray:
    """Colour an (H, W) heatmap in [0, 1] -> (H, W, 3) uint8.

    Values are clipped to [0, 1] and binned like matplotlib (index ``floor(x * 256)``, 1.0 -> 255);
    NaN gets the lowest colour.
    """
    h = _as_float_array(heatmap)
    if h.ndim != 2:
        raise ValueError(f"heatmap must be (H, W), got shape {h.shape}")
    idx = np.floor(np.nan_to_num(h, nan=0.0) * _LUT_SIZE)
    idx = np.clip(idx, 0, _LUT_SIZE - 1).astype(np.intp)
    return _lut(name)[idx]


# --------------------------------------------------------------------------------------------
# Array helpers
# --------------------------------------------------------------------------------------------


def _as_float_array(x: ArrayLike) -> np.ndarray:
    """numpy float64 view of a numpy array or torch tensor (detached, on CPU)."""
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu().float().numpy()
    return np.asarray(x, dtype=np.float64)


def _squeeze_2d(x: np.ndarray, what: str) -> np.ndarray:
    while x.ndim > 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 2:
        raise ValueError(f"{what} must be (H, W), got shape {x.shape}")
    return x


def _as_rgb_array(image: ImageLike) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"image array must be uint8, got {arr.dtype}")
    return arr


# --------------------------------------------------------------------------------------------
# Single pictures
# --------------------------------------------------------------------------------------------


def overlay(
    image: ImageLike, heatmap: ArrayLike, alpha: float = 0.5, colormap: str = "jet"
) -> Image.Image:
    """Blend a coloured heatmap onto an image: ``(1 - alpha) * image + alpha * colour``.

    ``image``: PIL image or (H, W, 3) uint8 array. ``heatmap``: (h, w) in [0, 1] (numpy or torch;
    leading singleton dims are dropped), resized to (H, W) when the sizes differ: bilinear
    (:func:`camlens.maps.upsample`), antialiased where it shrinks. The result is rounded half up
    to uint8.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    img = _as_rgb_array(image)
    h = _squeeze_2d(_as_float_array(heatmap), "heatmap")
    if h.shape != img.shape[:2]:
        h = upsample(torch.from_numpy(h)[None, None], img.shape[:2], antialias=True)[0, 0].numpy()
    colour = apply_colormap(h, colormap).astype(np.float64)
    blended = (1.0 - alpha) * img.astype(np.float64) + alpha * colour
    return Image.fromarray(np.floor(blended + 0.5).clip(0, 255).astype(np.uint8), "RGB")


def heatmap_image(heatmap: ArrayLike, colormap: str = "jet") -> Image.Image:
    """An (H, W) heatmap in [0, 1] as a coloured RGB image."""
    h = _squeeze_2d(_as_float_array(heatmap), "heatmap")
    return Image.fromarray(apply_colormap(h, colormap), "RGB")


def pixel_space_image(map: ArrayLike, percentile: float | None = 99.0) -> Image.Image:
    """A pixel-space map, (3, H, W) or (H, W, 3) in [0, 1] with 0.5 = no contribution, as RGB.

    For Guided Backprop / Guided Grad-CAM maps (``Explanation.maps`` of pixel-space methods).
    A few extreme gradients would leave everything else flat grey, so the deviation from 0.5 is
    stretched until its ``percentile``-th percentile reaches the ends (None: no stretch).
    A (3, H, 3) array is read channels-first.
    """
    m = _as_float_array(map)
    while m.ndim > 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 3 or 3 not in (m.shape[0], m.shape[2]):
        raise ValueError(f"pixel-space map must be (3, H, W) or (H, W, 3), got shape {m.shape}")
    if m.shape[0] == 3:
        m = np.moveaxis(m, 0, 2)
    m = np.nan_to_num(m, nan=0.5)
    if percentile is not None:
        spread = float(np.percentile(np.abs(m - 0.5), percentile))
        if spread > 0:
            m = np.clip(0.5 + (m - 0.5) * (0.5 / spread), 0.0, 1.0)
    return Image.fromarray(_to_uint8(m), "RGB")


# --------------------------------------------------------------------------------------------
# Grids
# --------------------------------------------------------------------------------------------

DEFAULT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("image", "Original image"),
    ("guided_backprop", "Guided Backprop"),
    ("gradcam", "Grad-CAM"),
    ("guided_gradcam", "Guided Grad-CAM"),
    ("counterfactual", "Counterfactual Grad-CAM"),
)
"""Figure 1's columns as (panel key, header)."""

_BACKGROUND = (255, 255, 255)
_TEXT = (0, 0, 0)


@dataclass
class Row:
    """One row of :func:`figure1`: a title (e.g. ``"tabby (p=0.71)"``) and panels by column key."""

    title: str
    panels: dict[str, Image.Image] = field(default_factory=dict)


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1
    except (TypeError, OSError, ImportError):  # older Pillow or no FreeType: fixed bitmap font
        return ImageFont.load_default()


def _font_size(panel_height: int) -> int:
    return max(10, min(24, panel_height // 16))


def _line_height(font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> int:
    return int(font.getbbox("Ag(p|)")[3]) + 2


@dataclass(frozen=True)
class GridLayout:
    """Pixel geometry of a panel grid: headers on top, a title band above each row.

    width = pad + n_cols * (panel_w + pad);
    height = pad + header_h + n_rows * (title_h + panel_h + pad).
    """

    n_rows: int
    n_cols: int
    panel_w: int
    panel_h: int
    pad: int
    header_h: int
    title_h: int

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the whole picture."""
        return (
            self.pad + self.n_cols * (self.panel_w + self.pad),
            self.pad + self.header_h + self.n_rows * (self.title_h + self.panel_h + self.pad),
        )

    def row_top(self, row: int) -> int:
        """y of the top of ``row``'s title band."""
        return self.pad + self.header_h + row * (self.title_h + self.panel_h + self.pad)

    def cell(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the panel box at ``row``, ``col`` (x1, y1 exclusive)."""
        x0 = self.pad + col * (self.panel_w + self.pad)
        y0 = self.row_top(row) + self.title_h
        return x0, y0, x0 + self.panel_w, y0 + self.panel_h


def grid_layout(
    n_rows: int,
    n_cols: int,
    panel_size: tuple[int, int],
    *,
    pad: int = 6,
    headers: bool = True,
    titles: bool = True,
) -> GridLayout:
    """Layout for ``n_rows`` x ``n_cols`` panels of ``panel_size`` = (w, h) pixels."""
    pw, ph = int(panel_size[0]), int(panel_size[1])
    if n_rows < 0 or n_cols < 1 or pw < 1 or ph < 1 or pad < 0:
        raise ValueError("grid needs n_rows >= 0, n_cols >= 1, a positive panel size, pad >= 0")
    line = _line_height(_font(_font_size(ph)))
    return GridLayout(
        n_rows=n_rows,
        n_cols=n_cols,
        panel_w=pw,
        panel_h=ph,
        pad=pad,
        header_h=line + pad if headers else 0,
        title_h=line if titles else 0,
    )


def _panel_width(image_size: tuple[int, int], panel_height: int) -> int:
    w, h = image_size
    return max(1, round(panel_height * w / h))


def figure1_layout(
    image_size: tuple[int, int],
    n_rows: int,
    columns: Sequence[tuple[str, str]] = DEFAULT_COLUMNS,
    panel_height: int = 224,
    pad: int = 6,
) -> GridLayout:
    """The layout :func:`figure1` uses for an image of ``image_size`` = (w, h)."""
    pw = _panel_width(image_size, panel_height)
    return grid_layout(n_rows, len(columns), (pw, panel_height), pad=pad)


def caption(image: ImageLike, text: str) -> Image.Image:
    """A copy of ``image`` with ``text`` in white on a black band along its bottom edge (used to
    mark a panel whose map is empty, e.g. "no evidence")."""
    img = (image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image)))
    img = img.convert("RGB")
    draw = ImageDraw.Draw(img)
    size = _font_size(img.height)
    font = _font(size)
    text = _fit_text(text, font, img.width - 4)
    band = min(img.height, size * 3 // 2 + 6)  # room for descenders below the text
    draw.rectangle((0, img.height - band, img.width, img.height), fill=(0, 0, 0))
    x = max(0.0, (img.width - font.getlength(text)) / 2)
    draw.text((x, img.height - band + 3), text, fill=(255, 255, 255), font=font)
    return img


def _fit_text(text: str, font: Any, width: int) -> str:
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "...") > width:
        text = text[:-1]
    return text + "..." if text else ""


def _fit_panel(panel: ImageLike, size: tuple[int, int]) -> tuple[Image.Image, tuple[int, int]]:
    """Resize ``panel`` to fit ``size`` keeping its aspect ratio; returns it and its offset."""
    img = panel if isinstance(panel, Image.Image) else Image.fromarray(np.asarray(panel))
    img = img.convert("RGB")
    bw, bh = size
    scale = min(bw / img.width, bh / img.height)
    w = min(bw, max(1, round(img.width * scale)))
    h = min(bh, max(1, round(img.height * scale)))
    if (w, h) != img.size:
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    return img, ((bw - w) // 2, (bh - h) // 2)


def _draw_grid(
    layout: GridLayout,
    cells: Sequence[Sequence[ImageLike | None]],
    headers: Sequence[str] | None,
    titles: Sequence[str] | None,
) -> Image.Image:
    canvas = Image.new("RGB", layout.size, _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font(_font_size(layout.panel_h))
    if headers and layout.header_h:
        for c, text in enumerate(headers):
            x0, _, x1, _ = layout.cell(0, c)
            text = _fit_text(text, font, layout.panel_w)
            x = x0 + (layout.panel_w - font.getlength(text)) / 2
            draw.text((x, layout.pad), text, fill=_TEXT, font=font)
    for r, row in enumerate(cells):
        if titles and layout.title_h and titles[r]:
            text = _fit_text(titles[r], font, layout.size[0] - 2 * layout.pad)
            draw.text((layout.pad, layout.row_top(r)), text, fill=_TEXT, font=font)
        for c, panel in enumerate(row):
            if panel is None:
                continue
            x0, y0, _, _ = layout.cell(r, c)
            img, (dx, dy) = _fit_panel(panel, (layout.panel_w, layout.panel_h))
            canvas.paste(img, (x0 + dx, y0 + dy))
    return canvas


def figure1(
    image: Image.Image,
    rows: Sequence[Row],
    columns: Sequence[tuple[str, str]] = DEFAULT_COLUMNS,
    panel_height: int = 224,
    pad: int = 6,
) -> Image.Image:
    """The paper's Figure 1: one row per target, one column per (key, header) in ``columns``.

    Panels are looked up in ``row.panels`` by key; the ``"image"`` column falls back to
    ``image``; missing panels stay blank. Every panel is ``panel_height`` tall and as wide as
    ``image``'s aspect ratio gives; panels of another aspect are fitted and centred.
    Geometry: :func:`figure1_layout`.
    """
    layout = figure1_layout(image.size, len(rows), columns, panel_height, pad)
    cells = [
        [row.panels.get(key, image if key == "image" else None) for key, _ in columns]
        for row in rows
    ]
    return _draw_grid(layout, cells, [h for _, h in columns], [row.title for row in rows])


# --------------------------------------------------------------------------------------------
# Explanation rendering and output
# --------------------------------------------------------------------------------------------


def _target_title(ex: Explanation, sample: int, k: int) -> str:
    score = float(_as_float_array(ex.scores[sample, k]))
    if ex.targets is not None:
        return f"#{k} class {int(_as_float_array(ex.targets[sample, k]))}: {score:.3g}"
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
        1, max(1, len(panels)), (_panel_width(aspect_size, panel_height), panel_height)
    )
    headers = [_target_title(ex, sample, k) for k in range(len(panels))]
    return _draw_grid(layout, [panels], headers, [f"{ex.method} (sample {sample})"])


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
