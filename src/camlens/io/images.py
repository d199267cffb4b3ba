"""Reading images robustly.

* :func:`load_image` turns a PNG, JPEG, GIF, BMP, TIFF or WebP file into an 8-bit RGB
  image (EXIF orientation applied, transparency flattened on white, 16-bit and
  float data rescaled) or raises :class:`ImageError` with a one-line message
  that says what is wrong and what would be right. It changes no process-wide
  state (Pillow's ``MAX_IMAGE_PIXELS``, warning filters), so threads may call it.
* :func:`c_stderr_to` catches what C decoders (libtiff) write to file descriptor 2 and
  :func:`decoder_said` turns it into one line: process-wide, so a multi-threaded run takes a
  lock around them (:class:`camlens.pipeline.decoding.Decoders`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps

from camlens.io.files import display_path

#: Default decompression-bomb guard: twice Pillow's default warning threshold
#: (the size at which Pillow itself refuses to open an image), ~179 megapixels.
DEFAULT_MAX_PIXELS = 2 * 89_478_485

#: The only formats :func:`load_image` opens, whatever the file's name: raster images that
#: Pillow decodes itself. EPS/PDF (which Pillow hands to Ghostscript), fonts, icons and the
#: rest of Pillow's plugins never see the file.
RASTER_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")

_WHITE = (255, 255, 255)
_EXPECTED = "expected a JPEG, PNG, BMP, GIF, TIFF or WebP file"


class ImageError(ValueError):
    """An input image cannot be used; the message says why and what would work."""


_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(name: str, mode: int) -> ImageError:
    if stat.S_ISDIR(mode):
        return ImageError(f"{name}: is a folder; expected an image file")
    kind = next((what for test, what in _KINDS if test(mode)), "not a regular file")
    return ImageError(f"{name}: is {kind}, not a regular file; {_EXPECTED}")


def _open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for reading if it is a non-empty regular file (symbolic links followed),
    else raise an ImageError that says what it is. Never blocks: a FIFO is refused from its
    ``stat`` before any ``open``, and the open itself is non-blocking."""
    name = display_path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise ImageError(f"{name}: is a symbolic link to {display_path(os.readlink(path))}, "
                             "which does not exist") from None
        raise ImageError(
            f"{name}: no such file; check the path (or use sample:NAME for a bundled photo)"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageError(f"{name}: is a symbolic link loop (a link that leads back to "
                             "itself); expected an image file") from None
        raise ImageError(f"{name}: cannot read it ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(name, st.st_mode)
    if st.st_size == 0:
        raise ImageError(f"{name}: the file is empty (0 bytes); expected an image file")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except PermissionError:
        raise ImageError(f"{name}: permission denied; make the file readable") from None
    except OSError as exc:
        raise ImageError(f"{name}: cannot open it ({exc.strerror or exc})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):  # replaced by something else since the stat
        os.close(fd)
        raise _not_regular(name, mode)
    return os.fdopen(fd, "rb")


@lru_cache(maxsize=1)
def _raster_plugins() -> tuple[tuple[str, type[ImageFile.ImageFile]], ...]:
    """(format, Pillow image-file class) of :data:`RASTER_FORMATS` this Pillow can read."""
    from PIL import (
        BmpImagePlugin,
        GifImagePlugin,
        JpegImagePlugin,
        PngImagePlugin,
        TiffImagePlugin,
    )

    plugins: list[tuple[str, type[ImageFile.ImageFile]]] = [
        ("PNG", PngImagePlugin.PngImageFile),
        ("JPEG", JpegImagePlugin.JpegImageFile),
        ("GIF", GifImagePlugin.GifImageFile),
        ("BMP", BmpImagePlugin.BmpImageFile),
        ("TIFF", TiffImagePlugin.TiffImageFile),
    ]
    try:
        from PIL import WebPImagePlugin, features

        if features.check_module("webp"):
            plugins.append(("WEBP", WebPImagePlugin.WebPImageFile))
    except ImportError:  # pragma: no cover - a Pillow built without WebP
        pass
    return tuple(plugins)


def _pillow_bomb_message(name: str, fmt: str, exc: Exception) -> str:
    return (
        f"{name}: Pillow refuses to decode this {fmt} image ({exc}): its own decompression-bomb "
        f"limit, PIL.Image.MAX_IMAGE_PIXELS (process-wide, which camlens never changes), is "
        f"lower for {fmt} files than camlens's --max-pixels / max_pixels; if you trust the "
        "file, convert it to PNG or JPEG, or raise PIL.Image.MAX_IMAGE_PIXELS in your program"
    )


def _identify(fh: BinaryIO, path: Path) -> ImageFile.ImageFile:
    """Read the header with the first raster plugin whose signature matches.

    The plugin classes are called directly rather than through ``Image.open``, which would
    also try every other plugin (Ghostscript for EPS) and apply Pillow's process-wide
    decompression-bomb check; camlens checks the size itself, against its own limit.
    """
    name = display_path(path)
    for fmt, plugin in _raster_plugins():
        fh.seek(0)
        try:
            return plugin(fh, os.fsdecode(path))
        except SyntaxError:  # not this format (Pillow's "not a PNG file" and the like)
            continue
        except Image.DecompressionBombError as exc:
            raise ImageError(_pillow_bomb_message(name, fmt, exc)) from None
        except (OSError, ValueError, EOFError, MemoryError) as exc:
            raise ImageError(
                f"{name}: cannot read the {fmt} header ({exc}); the file is corrupt"
            ) from None
    raise ImageError(f"{name}: not an image camlens can read; {_EXPECTED}")


def _bomb_message(name: str, size: tuple[int, int], max_pixels: int) -> str:
    width, height = size
    return (
        f"{name}: image is {width}x{height} = {width * height} pixels, above the limit of "
        f"{max_pixels} pixels (a guard against decompression bombs); if you trust this file, "
        f"raise the limit with load_image(..., max_pixels=N) or the CLI flag --max-pixels N"
    )


def _decode(img: ImageFile.ImageFile, name: str) -> None:
    """Fully decode ``img`` now: truncation shows up here, not later."""
    try:
        img.load()
    except Image.DecompressionBombError as exc:
        raise ImageError(_pillow_bomb_message(name, str(img.format), exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(
            f"{name}: the image data is truncated or corrupt ({exc}); re-export or re-download "
            "the file"
        ) from None


def _rescale_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Map 16-bit, 32-bit integer or float samples to 0..255."""
    if mode.startswith("I;16"):
        scaled = values.astype(np.float64) * (255.0 / 65535.0)
    elif mode == "I":
        data = values.astype(np.float64)
        lo, hi = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
        if lo >= 0 and hi <= 65535:  # 16-bit data stored as 32-bit ints (e.g. older PNG decoding)
            scaled = data * (255.0 / 65535.0)
        elif hi > lo:
            scaled = (data - lo) * (255.0 / (hi - lo))
        else:
            scaled = np.zeros_like(data)
    else:  # "F": 0..1 is taken as the nominal range, anything else is stretched min..max
        data = values.astype(np.float64)
        finite = np.isfinite(data)
        data = np.where(finite, data, 0.0)
        lo, hi = (
            (float(data[finite].min()), float(data[finite].max())) if finite.any() else (0.0, 0.0)
        )
        if lo >= 0 and hi <= 1:
            scaled = data * 255.0
        elif hi > lo:
            scaled = (data - lo) * (255.0 / (hi - lo))
        else:
            scaled = np.zeros_like(data)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _flatten_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, _WHITE + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_rgb8(img: Image.Image, path: Path) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (see :func:`load_image`)."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        gray = _rescale_to_uint8(np.asarray(img), mode)
        return Image.fromarray(gray).convert("RGB")
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info
    if has_alpha:
        return _flatten_on_white(img)
    try:
        return img.convert("RGB")  # 1, L, P, CMYK, YCbCr, RGBX, HSV ...
    except ValueError:
        raise ImageError(
            f"{display_path(path)}: colour mode {mode!r} cannot be converted to RGB; "
            "save the image as RGB or grayscale"
        ) from None


def load_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read an image file as an 8-bit RGB PIL image, fully decoded and detached from the file.

    * Only PNG, JPEG, GIF, BMP, TIFF and WebP are read (:data:`RASTER_FORMATS`), whatever
      the file's name; anything that is not a regular file (a FIFO, a device, a folder, a
      symbolic link loop) is refused with a message that says what it is.
    * EXIF orientation is applied (a portrait phone photo comes back portrait).
    * Transparency (RGBA, LA, PA, palette or RGB/L with a transparent colour) is
      composited on white; palette, 1-bit, grayscale and CMYK are converted to RGB.
    * 16-bit data (``I;16*``, and ``I`` holding 0..65535) is scaled 0..65535 -> 0..255;
      other ``I`` data is stretched min..max; float (``F``) data in 0..1 is scaled by
      255, otherwise stretched min..max (NaN/inf become 0).
    * Multi-frame files (GIF, TIFF) give their first frame.

    ``max_pixels`` (``None``: no limit) bounds width x height and is checked from
    the header, before decoding, independently of ``PIL.Image.MAX_IMAGE_PIXELS``, which
    is never changed (PNG, JPEG and BMP do not consult it at all; Pillow's own TIFF, GIF
    and WebP code still refuses images above twice its value). Safe to call from several
    threads. Every problem raises :class:`ImageError`.
    """
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(
            f"max_pixels must be a positive number of pixels or None, got {max_pixels}"
        )
    path = Path(path)
    name = display_path(path)
    with _open_regular(path) as fh, _identify(fh, path) as img:
        width, height = img.size
        if max_pixels is not None and width * height > max_pixels:
            raise ImageError(_bomb_message(name, img.size, max_pixels))
        _decode(img, name)
        try:
            oriented = ImageOps.exif_transpose(img)
        except Exception:  # noqa: BLE001 - malformed EXIF must not make the photo unreadable
            oriented = img
        rgb = _to_rgb8(oriented, path)
        if rgb is img:
            rgb = img.copy()  # detach from the (about to be closed) file
    return rgb


@contextlib.contextmanager
def c_stderr_to(sink: list[str]) -> Iterator[None]:
    """Send what C code writes to file descriptor 2 (libtiff's warnings) to ``sink``, one
    string per line, instead of the terminal. Process-wide while it runs."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no fd 2 to redirect: nothing to catch
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read(1 << 16).decode("utf-8", "replace")
            sink.extend(line.strip() for line in text.splitlines() if line.strip())


def decoder_said(lines: list[str], shown: int = 3) -> str:
    more = f" and {len(lines) - shown} more lines" if len(lines) > shown else ""
    return "the decoder printed: " + " | ".join(lines[:shown]) + more
