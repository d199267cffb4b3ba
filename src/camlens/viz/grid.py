"""Panel grids: the paper's Figure 1 (one row per target, one column per method) and the
geometry behind it; captions on panels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from camlens.viz.pictures import ImageLike

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


def panel_width(image_size: tuple[int, int], panel_height: int) -> int:
    """Width of a ``panel_height`` tall panel with the aspect ratio of ``image_size`` = (w, h)."""
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
    pw = panel_width(image_size, panel_height)
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


def text_panel(lines: Sequence[str], size: tuple[int, int]) -> Image.Image:
    """A white ``size`` = (w, h) panel with ``lines`` in black, top-left, the font shrunk so
    they fit in height (each line cut with "..." to fit in width)."""
    w, h = size
    n = max(len(lines), 1)
    pt = _font_size(h)
    while pt > 8 and n * _line_height(_font(pt)) > h - 4:
        pt -= 1
    font = _font(pt)
    step = _line_height(font)
    img = Image.new("RGB", size, _BACKGROUND)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((3, 2 + i * step), _fit_text(line, font, w - 6), fill=_TEXT, font=font)
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


def draw_grid(
    layout: GridLayout,
    cells: Sequence[Sequence[ImageLike | None]],
    headers: Sequence[str] | None,
    titles: Sequence[str] | None,
) -> Image.Image:
    """Paste ``cells[r][c]`` (None: blank) into ``layout``, fitted and centred, with
    ``headers`` above the columns and ``titles`` above the rows."""
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
    return draw_grid(layout, cells, [h for _, h in columns], [row.title for row in rows])
