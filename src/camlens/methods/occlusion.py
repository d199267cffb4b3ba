"""Occlusion sensitivity (Zeiler & Fergus): the score drop when a window of the input is masked."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import torch

from camlens import maps
from camlens.errors import OptionError
from camlens.evidence import Evidence, Needs
from camlens.explanation import Explanation
from camlens.methods.assemble import result
from camlens.methods.copies import copy_scores, sample_inputs
from camlens.methods.registry import Job, register


def _pair(name: str, value: Any) -> tuple[int, int]:
    """``value`` as (height, width): a positive int, or a pair of them."""
    pair = (value, value) if isinstance(value, numbers.Integral) else value
    try:
        a, b = pair
    except (TypeError, ValueError):
        a = b = None
    ints = [int(v) for v in (a, b) if isinstance(v, numbers.Integral) and not isinstance(v, bool)]
    if len(ints) != 2 or min(ints) < 1:
        raise OptionError(f"occlusion {name} must be a positive int or a (height, width) pair "
                          f"of them, got {value!r}")
    return ints[0], ints[1]


def _fill(fill: Any, dtype: torch.dtype) -> float:
    """``fill`` as a float, refused unless the image's dtype holds it exactly (an integer image
    would silently truncate 0.5 to 0 or wrap -1 to 255)."""
    real = isinstance(fill, numbers.Real) and not isinstance(fill, bool)
    value = float(fill) if real else math.nan
    if not math.isfinite(value):
        raise OptionError(f"occlusion fill must be a finite number, got {fill!r}")
    if dtype.is_floating_point or dtype.is_complex:
        largest = torch.finfo(dtype).max
        if abs(value) > largest:
            raise OptionError(f"occlusion fill {fill!r} is out of range for the {dtype} image "
                              f"(|fill| <= {largest:g})")
    else:
        lo, hi = (0, 1) if dtype == torch.bool else (torch.iinfo(dtype).min,
                                                     torch.iinfo(dtype).max)
        if not (value.is_integer() and lo <= value <= hi):
            raise OptionError(f"occlusion fill {fill!r} cannot be stored in the {dtype} image; "
                              f"use an integer in [{lo}, {hi}]")
    return value


def occlusion_options(image: torch.Tensor, window: Any, stride: Any, fill: Any,
                      batch_size: Any) -> tuple[tuple[int, int], tuple[int, int], float]:
    """Check the options against the image (B, C, H, W) before any forward pass; return
    (window, stride) as (height, width) pairs and the fill. Every pixel must be covered by a
    window, so the stride may not exceed the window: a pixel no window covers has no score
    drop to average (0/0)."""
    win, std = _pair("window", window), _pair("stride", stride)
    h, w = image.shape[-2:]
    if win[0] > h or win[1] > w:
        raise OptionError(f"occlusion window {win} (height, width) does not fit the {h} x {w} "
                          f"input; the largest window is ({h}, {w})")
    if std[0] > win[0] or std[1] > win[1]:
        raise OptionError(
            f"occlusion stride {std} is larger than the window {win} (stride defaults to 8): "
            "the pixels between windows would be covered by none and have no score; use a "
            f"stride <= the window on both axes, e.g. stride={tuple((v + 1) // 2 for v in win)} "
            "for half-overlapping windows")
    if (isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral)
            or int(batch_size) < 1):
        raise OptionError("occlusion batch_size (occluded images per forward pass) must be a "
                          f"positive int, got {batch_size!r}")
    return win, std, _fill(fill, image.dtype)


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window offsets along one axis (window <= size): every ``stride`` pixels, plus one flush
    with the far edge when the stride does not land there."""
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def _cover(size: int, starts: list[int], window: int, like: torch.Tensor) -> torch.Tensor:
    """R (size, len(starts)): R[i, a] = 1 where window ``a`` covers pixel ``i`` of the axis."""
    pos = torch.arange(size, device=like.device)[:, None]
    begin = torch.tensor(starts, device=like.device)[None, :]
    return ((pos >= begin) & (pos < begin + window)).to(like.dtype)


def occlusion_maps(
    score_fn: Callable[[torch.Tensor, int], torch.Tensor],
    image: torch.Tensor,
    base_scores: torch.Tensor,
    *,
    window: tuple[int, int],
    stride: tuple[int, int],
    fill: float = 0.0,
    batch_size: int = 64,
) -> torch.Tensor:
    """Occlusion map (B, K, H, W): each pixel's mean score drop y^c(x) - y^c(x with window masked)
    over the windows that cover it; options as :func:`occlusion_options` returns them.

    ``score_fn(images, s)`` maps N occluded copies (N, C, H, W) of sample ``s`` to their scores
    (N, K) for that sample's targets; ``base_scores`` are the unoccluded scores (B, K). Windows
    are evaluated ``batch_size`` at a time, all K targets from the same forward. The windows form
    a grid of rows ys (A) by columns xs (A'); with one sample's drops D^k (A, A') and the 0/1
    cover matrices R_y (H, A), R_x (W, A'), the map is R_y D^k R_x^T / (R_y 1)(R_x 1)^T.
    Accumulated in the scores' dtype (float64 for integer scores), whatever the image's.
    """
    b, _, h, w = image.shape
    wy, wx = window
    ys = window_starts(h, wy, stride[0])
    xs = window_starts(w, wx, stride[1])
    boxes = [(y, x) for y in ys for x in xs]
    k = base_scores.shape[1]
    acc = base_scores if base_scores.is_floating_point() else base_scores.double()
    cover_y, cover_x = _cover(h, ys, wy, acc), _cover(w, xs, wx, acc)
    total = acc.new_zeros(b, k, h, w)
    n = min(batch_size, len(boxes))
    layout = (torch.channels_last if image.is_contiguous(memory_format=torch.channels_last)
              and not image.is_contiguous() else torch.contiguous_format)  # keep the image's
    for s in range(b):
        # One real copy of the sample per slot, in the image's layout (never a view of the
        # image: the fill would go into the caller's tensor); between chunks only the last
        # window of each slot is restored, unless the model wrote into its input.
        batch: torch.Tensor | None = None
        masked: list[tuple[int, int]] = []
        drops = []
        for start in range(0, len(boxes), n):
            chunk = boxes[start:start + n]
            if batch is None:
                batch = image[s:s + 1].expand(n, -1, -1, -1).clone(memory_format=layout)
                masked = []
            for i, (y, x) in enumerate(chunk):
                if i < len(masked):
                    py, px = masked[i]
                    batch[i, :, py:py + wy, px:px + wx] = image[s, :, py:py + wy, px:px + wx]
                batch[i, :, y:y + wy, x:x + wx] = fill
            masked = chunk
            version = batch._version
            drops.append(base_scores[s] - score_fn(batch[:len(chunk)], s))
            if batch._version != version:  # written in place by the model: copy afresh
                batch = None
        d = torch.cat(drops).to(acc.dtype).T.reshape(k, len(ys), len(xs))  # D^k
        total[s] = cover_y @ d @ cover_x.T
    return total / (cover_y.sum(1)[:, None] * cover_x.sum(1))


def _occlusion_needs(job: Job, *, window: Any, stride: Any, fill: Any, batch_size: Any) -> Needs:
    """Only the forward's scores; the options are checked here, before any forward pass."""
    occlusion_options(job.image, window, stride, fill, batch_size)
    return Needs()


@register("occlusion", needs=_occlusion_needs, needs_layer=False, pixel_space=False,
          summary="Occlusion sensitivity: score drop when a sliding window is masked")
def run_occlusion(job: Job, ev: Evidence, *, window: int | tuple[int, int] = 16,
                  stride: int | tuple[int, int] = 8, fill: float = 0.0,
                  batch_size: int = 64) -> Explanation:
    """Mean drop of y^c over the windows covering each pixel; batched forwards, no autograd.
    ``window`` and ``stride`` are ints or (height, width) pairs; the stride may not exceed the
    window (pixels between windows would have no score). ``fill`` must fit the image's dtype."""
    win, std, fill = occlusion_options(job.image, window, stride, fill, batch_size)

    def score_fn(images: torch.Tensor, s: int) -> torch.Tensor:
        n = images.shape[0]
        with torch.no_grad():
            out = job.model(*sample_inputs(job, images, s))
        return copy_scores(job, ev, out, s, n,
                           f"occlusion runs the model on {n} occluded copies")

    raw = occlusion_maps(score_fn, job.image, ev.scores, window=win, stride=std, fill=fill,
                         batch_size=batch_size)
    return result(job, ev, "occlusion", maps.minmax(raw).float(), raw, None,
                  window=win, stride=std, fill=fill)
