"""A self-contained HTML report: PNGs embedded as data URIs, plain tables, no scripts. A row of
panels (:meth:`Page.panels`) is a grid of pictures, each titled in HTML text, that wraps to
three columns at a phone's width (each at most twice its pixel size)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from camlens.viz import overlay, pixel_space_image

__all__ = ["Page", "png_uri", "PANEL_SCALE"]

#: Panels are shown at this many times their pixel size (nearest neighbour) where room allows.
PANEL_SCALE = 2

_STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #bbb;padding:3px 7px;
text-align:right;white-space:nowrap}th{background:#eee}td.l,th.l{text-align:left;
white-space:normal}figure{margin:6px 0 20px}figcaption{font-size:14px;max-width:600px}
img{image-rendering:pixelated;max-width:100%;height:auto}.note{color:#555;font-size:14px}
.scroll{overflow-x:auto;max-width:100%}
.panels{display:grid;grid-template-columns:repeat(auto-fit,minmax(104px,1fr));gap:8px 6px;
max-width:var(--row)}.panels figure{margin:0;display:block}.panels img{display:block;width:100%}
.panels figcaption{line-height:1.25;margin-top:2px;overflow-wrap:anywhere}
.panels+figcaption{margin-top:10px;color:#444}
@media(max-width:600px){body{margin:.6em}h1{font-size:1.5em}h2{font-size:1.2em}
td,th{padding:3px 4px}}"""


def png_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def cam_panel(image: np.ndarray, cam: np.ndarray) -> Image.Image:
    """Grad-CAM over the image (the map scaled by its maximum)."""
    peak = float(cam.max())
    return overlay(image, cam / peak if peak > 0 else cam)


def guided_panel(guided: np.ndarray) -> Image.Image:
    return pixel_space_image(guided)


class Page:
    """An HTML page built block by block; :meth:`write` saves it."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = [f"<h1>{html.escape(title)}</h1>"]

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def text(self, text: str, note: bool = False) -> None:
        cls = ' class="note"' if note else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        def cell(v: Any, tag: str) -> str:
            left = isinstance(v, str)
            small = isinstance(v, float) and v != 0 and abs(v) < 1e-3
            text = (f"{v:.2e}" if small else f"{v:.3f}") if isinstance(v, float) else str(v)
            return f"<{tag}{' class=l' if left else ''}>{html.escape(text)}</{tag}>"

        head = "".join(cell(h, "th") for h in header)
        body = "".join("<tr>" + "".join(cell(v, "td") for v in r) + "</tr>" for r in rows)
        self.parts.append(f"<div class=scroll><table><tr>{head}</tr>{body}</table></div>")

    def panels(self, panels: Sequence[tuple[str, Image.Image]], caption: str) -> None:
        """Pictures side by side, each with its title under it as text (legible at any width),
        at :data:`PANEL_SCALE` times their size, fewer a row on a narrow screen; ``caption``
        under the row."""
        row = len(panels) * (max(p.width for _, p in panels) * PANEL_SCALE + 6) - 6
        cells = "".join(f'<figure><img src="{png_uri(img)}" alt="{html.escape(title)}">'
                        f"<figcaption>{html.escape(title)}</figcaption></figure>"
                        for title, img in panels)
        self.parts.append(f'<figure><div class=panels style="--row:{row}px">{cells}'
                          f"</div><figcaption>{html.escape(caption)}</figcaption></figure>")

    def write(self, path: Path) -> Path:
        doc = (f"<!DOCTYPE html><html><head><meta charset='utf-8'>"
               "<meta name='viewport' content='width=device-width, initial-scale=1'><title>"
               f"{html.escape(self.title)}</title><style>{_STYLE}</style></head><body>"
               + "\n".join(self.parts) + "</body></html>\n")
        path.write_text(doc, encoding="utf-8")
        return path
