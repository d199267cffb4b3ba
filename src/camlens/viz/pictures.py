"""Colormaps and single pictures of maps: a heatmap overlaid on its image, a heatmap or a
pixel-space map alone.

numpy and Pillow draw; torch resizes maps. matplotlib is optional: when installed it supplies
the perceptual colormaps (``viridis``, ``inferno``, ...); ``jet`` (the paper's) and ``gray`` are
built in. Torch tensors are accepted wherever an array is.
"""

from __future__ import annotations

from functools import cache
from typing import Any, TypeAlias

import numpy as np
import torch
from PIL import Image

from camlens.maps import upsample

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
    NaN gets the lowest colour. float32 maps are binned in float32 (``x * 256`` is exact there,
    so the bins are those of float64).
    """
    h = _map_array(heatmap)
    if h.ndim != 2:
        raise ValueError(f"heatmap must be (H, W), got shape {h.shape}")
    idx = np.nan_to_num(h, nan=0.0) * h.dtype.type(_LUT_SIZE)
    np.floor(idx, out=idx)
    np.clip(idx, 0, _LUT_SIZE - 1, out=idx)
    return np.take(_lut(name), idx.astype(np.intp), axis=0)


# --------------------------------------------------------------------------------------------
# Array helpers
# --------------------------------------------------------------------------------------------


def as_float_array(x: ArrayLike) -> np.ndarray:
    """numpy float64 view of a numpy array or torch tensor (detached, on CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    return np.asarray(x, dtype=np.float64)


def _map_array(x: ArrayLike) -> np.ndarray:
    """A map as a float numpy array without a float64 copy where none is needed: tensors as
    float32, float32 and float64 arrays as they are, anything else as float64."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().float().numpy()
    arr = np.asarray(x)
    return arr if arr.dtype in (np.float32, np.float64) else arr.astype(np.float64)


@cache
def _blend_table(alpha: float) -> np.ndarray:
    """The blend of :func:`overlay` for every pair of uint8 values: entry ``256 * i + c`` is
    ``floor((1 - alpha) * i + alpha * c + 0.5)``, computed in float64; (65536,) uint8."""
    v = np.arange(256, dtype=np.float64)
    table = np.floor((1.0 - alpha) * v[:, None] + alpha * v[None, :] + 0.5).clip(0, 255)
    out = table.astype(np.uint8).ravel()
    out.setflags(write=False)
    return out


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
    h = _squeeze_2d(_map_array(heatmap), "heatmap")
    if h.shape != img.shape[:2]:
        h = upsample(torch.from_numpy(h.astype(np.float64))[None, None], img.shape[:2],
                     antialias=True)[0, 0].numpy()
    # the float64 blend of every (image, colour) pair, looked up: the same bytes, 3x faster
    pairs = img.astype(np.uint16) << 8
    pairs |= apply_colormap(h, colormap)
    return Image.fromarray(np.take(_blend_table(float(alpha)), pairs), "RGB")


def heatmap_image(heatmap: ArrayLike, colormap: str = "jet") -> Image.Image:
    """An (H, W) heatmap in [0, 1] as a coloured RGB image."""
    h = _squeeze_2d(as_float_array(heatmap), "heatmap")
    return Image.fromarray(apply_colormap(h, colormap), "RGB")


def pixel_space_image(map: ArrayLike, percentile: float | None = 99.0) -> Image.Image:
    """A pixel-space map, (3, H, W) or (H, W, 3) in [0, 1] with 0.5 = no contribution, as RGB.

    For Guided Backprop / Guided Grad-CAM maps (``Explanation.maps`` of pixel-space methods).
    A few extreme gradients would leave everything else flat grey, so the deviation from 0.5 is
    stretched until its ``percentile``-th percentile reaches the ends (None: no stretch).
    A (3, H, 3) array is read channels-first.
    """
    m = as_float_array(map)
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
