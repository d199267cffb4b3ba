"""Reading images robustly, resolving input specs, and writing outputs atomically.

* :mod:`camlens.io.images`: :func:`load_image` (any PNG, JPEG, GIF, BMP, TIFF or WebP file
  as 8-bit RGB, or an :class:`ImageError` that says what is wrong and what would be right)
  and, for a decoder's C-level chatter, :func:`c_stderr_to` / :func:`decoder_said` (used by
  :class:`camlens.pipeline.decoding.Decoders`).
* :mod:`camlens.io.inputs`: :func:`sample_image` (the bundled sample photos, no download)
  and :func:`resolve_inputs` (folders and ``sample:`` specs expanded into image paths).
* :mod:`camlens.io.files`: :func:`display_path` and :func:`safe_stem` (any file name as text
  and as a safe folder name), :func:`atomic_path` / :func:`atomic_write_bytes` /
  :func:`npz_writer` (outputs written all or nothing), :func:`png_bytes` (a fast PNG
  encoder).
"""

from camlens.io.files import (
    atomic_path,
    atomic_write_bytes,
    display_path,
    is_inside,
    npz_writer,
    png_bytes,
    safe_stem,
)
from camlens.io.images import (
    DEFAULT_MAX_PIXELS,
    RASTER_FORMATS,
    ImageError,
    c_stderr_to,
    decoder_said,
    load_image,
)
from camlens.io.inputs import (
    IMAGE_EXTENSIONS,
    SAMPLE_IMAGES,
    SAMPLE_PREFIX,
    resolve_inputs,
    sample_image,
)

__all__ = [
    "c_stderr_to",
    "decoder_said",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "RASTER_FORMATS",
    "SAMPLE_IMAGES",
    "SAMPLE_PREFIX",
    "ImageError",
    "atomic_path",
    "atomic_write_bytes",
    "display_path",
    "is_inside",
    "load_image",
    "npz_writer",
    "png_bytes",
    "resolve_inputs",
    "safe_stem",
    "sample_image",
]
