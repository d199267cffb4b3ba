"""Reading images robustly, resolving input specs, and writing outputs atomically.

* :func:`load_image` turns any image file Pillow understands into an 8-bit RGB
  image (EXIF orientation applied, transparency flattened on white, 16-bit and
  float data rescaled) or raises :class:`ImageError` with a one-line message
  that says what is wrong and what would be right.
* :func:`sample_image` resolves the bundled sample photos (``sample:chelsea``...)
  from the installed scikit-image / matplotlib packages, without any download.
* :func:`resolve_inputs` expands folders and ``sample:`` specs into image paths.
* :func:`atomic_path` / :func:`atomic_write_bytes` write outputs so a crash or
  an error never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import threading
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "SAMPLE_IMAGES",
    "SAMPLE_PREFIX",
    "ImageError",
    "atomic_path",
    "atomic_write_bytes",
    "load_image",
    "resolve_inputs",
    "sample_image",
]

#: Default decompression-bomb guard: twice Pillow's default warning threshold
#: (the size at which Pillow itself refuses to open an image), ~179 megapixels.
DEFAULT_MAX_PIXELS = 2 * 89_478_485

#: Extensions picked up when a folder is expanded (compared case-insensitively).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
)

SAMPLE_PREFIX = "sample:"

#: Sample name -> (python package that ships it, path inside the package, pip extra).
SAMPLE_IMAGES: dict[str, tuple[str, str, str]] = {
    "astronaut": ("skimage", "data/astronaut.png", "samples"),
    "chelsea": ("skimage", "data/chelsea.png", "samples"),
    "coffee": ("skimage", "data/coffee.png", "samples"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "viz"),
    "rocket": ("skimage", "data/rocket.jpg", "samples"),
}

_PIP_NAMES = {"skimage": "scikit-image", "matplotlib": "matplotlib"}

_WHITE = (255, 255, 255)
_PIL_LIMIT_LOCK = threading.Lock()


class ImageError(ValueError):
    """An input image cannot be used; the message says why and what would work."""


# --------------------------------------------------------------------------- reading


@contextlib.contextmanager
def _pil_limit_lifted() -> Iterator[None]:
    """Switch off Pillow's global bomb check while we enforce our own limit."""
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _bomb_message(path: Path, size: tuple[int, int], max_pixels: int) -> str:
    width, height = size
    return (
        f"{path}: image is {width}x{height} = {width * height} pixels, above the limit of "
        f"{max_pixels} pixels (a guard against decompression bombs); if you trust this file, "
        f"raise the limit with load_image(..., max_pixels=N) or the CLI flag --max-pixels N"
    )


def _open_and_decode(path: Path, max_pixels: int | None) -> Image.Image:
    """Open ``path``, check its size against ``max_pixels``, then fully decode it."""
    try:
        img = Image.open(path)
    except UnidentifiedImageError:
        raise ImageError(
            f"{path}: not an image Pillow can read; expected a JPEG, PNG, BMP, GIF, TIFF or WebP file"
        ) from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied; make the file readable") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{path}: cannot read the image header ({exc}); the file is corrupt") from None

    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        img.close()
        raise ImageError(_bomb_message(path, img.size, max_pixels))
    try:
        img.load()  # force a full decode now: truncation shows up here, not later
    except Image.DecompressionBombError:
        img.close()
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        img.close()
        raise ImageError(
            f"{path}: the image data is truncated or corrupt ({exc}); re-export or re-download the file"
        ) from None
    if width == 0 or height == 0:
        img.close()
        raise ImageError(f"{path}: the image is {width}x{height} pixels; it needs at least 1x1")
    return img


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
        lo, hi = (float(data[finite].min()), float(data[finite].max())) if finite.any() else (0.0, 0.0)
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
            f"{path}: colour mode {mode!r} cannot be converted to RGB; save the image as RGB or grayscale"
        ) from None


def load_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read an image file as an 8-bit RGB PIL image, fully decoded and detached from the file.

    * EXIF orientation is applied (a portrait phone photo comes back portrait).
    * Transparency (RGBA, LA, PA, palette or RGB/L with a transparent colour) is
      composited on white; palette, 1-bit, grayscale and CMYK are converted to RGB.
    * 16-bit data (``I;16*``, and ``I`` holding 0..65535) is scaled 0..65535 -> 0..255;
      other ``I`` data is stretched min..max; float (``F``) data in 0..1 is scaled by
      255, otherwise stretched min..max (NaN/inf become 0).
    * Multi-frame files (GIF, TIFF) give their first frame.

    ``max_pixels`` (``None``: no limit) bounds width x height and is checked from
    the header, before decoding, independently of ``PIL.Image.MAX_IMAGE_PIXELS``.
    Every problem raises :class:`ImageError`.
    """
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive number of pixels or None, got {max_pixels}")
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file; check the path (or use sample:NAME for a bundled photo)")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder; expected an image file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: the file is empty (0 bytes); expected an image file")

    with warnings.catch_warnings():
        # Our own max_pixels check replaces Pillow's size warnings.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = _open_and_decode(path, max_pixels)
        except Image.DecompressionBombError:
            # Pillow's global limit is below ours: retry with it lifted (ours still applies).
            with _pil_limit_lifted():
                img = _open_and_decode(path, max_pixels)

    with img:
        try:
            oriented = ImageOps.exif_transpose(img)
        except Exception:  # malformed EXIF must not make the photo unreadable
            oriented = img
        rgb = _to_rgb8(oriented, path)
        if rgb is img:
            rgb = img.copy()  # detach from the (about to be closed) file
    return rgb


# --------------------------------------------------------------------------- samples


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def sample_image(name: str) -> Path:
    """Return the path of a bundled sample photo: ``chelsea``, ``coffee``, ``rocket``,
    ``astronaut`` (scikit-image) or ``grace_hopper`` (matplotlib).

    A leading ``sample:`` is accepted. Nothing is downloaded.
    """
    key = name[len(SAMPLE_PREFIX) :] if name.lower().startswith(SAMPLE_PREFIX) else name
    key = key.strip().lower()
    available = ", ".join(sorted(SAMPLE_IMAGES))
    if key not in SAMPLE_IMAGES:
        raise ImageError(f"unknown sample {name!r}; available samples: {available}")
    package, relative, extra = SAMPLE_IMAGES[key]
    pip_name = _PIP_NAMES[package]
    root = _package_dir(package)
    if root is None:
        raise ImageError(
            f"sample:{key} comes with {pip_name}, which is not installed; "
            f'install it with `pip install "camlens[{extra}]"`'
        )
    path = root / relative
    if not path.is_file():
        raise ImageError(
            f"sample:{key}: {path} is missing from the installed {pip_name}; "
            f'reinstall it with `pip install --force-reinstall "camlens[{extra}]"`'
        )
    return path


# --------------------------------------------------------------------------- inputs


def _normalise_extensions(extensions: Iterable[str]) -> frozenset[str]:
    return frozenset(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)


def _images_in_folder(folder: Path, extensions: frozenset[str]) -> list[Path]:
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions:
                found.append(Path(root) / name)
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def resolve_inputs(specs: Iterable[str | Path], extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Expand input specs into image paths, in order, without duplicates.

    A spec is a file (taken as is, whatever its extension), a folder (searched
    recursively for files with one of ``extensions``, case-insensitive, sorted,
    hidden files and folders skipped) or ``sample:NAME`` (see :func:`sample_image`).
    Missing paths and folders without images raise :class:`ImageError`.
    """
    exts = _normalise_extensions(extensions)
    result: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            result.append(path)

    for spec in specs:
        text = str(spec)
        if isinstance(spec, str) and text.lower().startswith(SAMPLE_PREFIX):
            add(sample_image(text))
            continue
        path = Path(text).expanduser()
        if path.is_dir():
            images = _images_in_folder(path, exts)
            if not images:
                raise ImageError(
                    f"{path}: folder contains no images; expected files ending in "
                    f"{', '.join(sorted(exts))}"
                )
            for image in images:
                add(image)
        elif path.exists():
            add(path)
        else:
            raise ImageError(
                f"{path}: no such file or folder; give an image file, a folder of images or "
                f"sample:NAME ({', '.join(sorted(SAMPLE_IMAGES))})"
            )
    return result


# --------------------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_path(path: str | Path, *, make_parents: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    The temporary name keeps the suffix of ``path`` (so ``img.save(tmp)`` picks
    the right format) and is not created in advance. If the block raises, the
    temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    if make_parents:
        target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp{target.suffix}")
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (all or nothing, never a partial file)."""
    with atomic_path(path) as tmp:
        with open(tmp, "xb") as fh:
            fh.write(data)
