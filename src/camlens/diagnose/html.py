"""A self-contained HTML report: PNGs embedded as data URIs, plain tables, no scripts."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from camlens.viz import overlay, pixel_space_image

__all__ = ["Page", "png_uri", "strip"]

_STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #bbb;padding:3px 7px;
text-align:right;white-space:nowrap}th{background:#eee}td.l,th.l{text-align:left;
white-space:normal}figure{display:inline-block;
margin:4px 10px 10px 0;vertical-align:top}figcaption{font-size:12px;max-width:600px}
img{image-rendering:pixelated;max-width:100%;height:auto}.note{color:#555;font-size:14px}
.scroll{overflow-x:auto;max-width:100%}@media(max-width:600px){body{margin:.6em}h1{font-size:1.5em}h2{font-size:1.2em}
td,th{padding:3px 4px}}"""


def png_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def strip(panels: Sequence[tuple[str, Image.Image]], scale: int = 2) -> Image.Image:
    """Panels side by side, each enlarged ``scale`` times, its title above it."""
    h = max(p.height for _, p in panels) * scale
    w = sum(p.width * scale + 6 for _, p in panels)
    out = Image.new("RGB", (w, h + 16), "white")
    draw = ImageDraw.Draw(out)
    x = 0
    for title, p in panels:
        big = p.resize((p.width * scale, p.height * scale), Image.Resampling.NEAREST)
        out.paste(big, (x, 16))
        draw.text((x + 2, 2), title[: max(p.width * scale // 6, 4)], fill="black")
        x += big.width + 6
    return out


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

    def figure(self, img: Image.Image, caption: str) -> None:
        self.parts.append(f'<figure><img src="{png_uri(img)}" alt="{html.escape(caption)}">'
                          f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def write(self, path: Path) -> Path:
        doc = (f"<!DOCTYPE html><html><head><meta charset='utf-8'>"
               "<meta name='viewport' content='width=device-width, initial-scale=1'><title>"
               f"{html.escape(self.title)}</title><style>{_STYLE}</style></head><body>"
               + "\n".join(self.parts) + "</body></html>\n")
        path.write_text(doc, encoding="utf-8")
        return path
