"""Occlusion sensitivity (Zeiler & Fergus): the score drop when a window of the input is masked."""

from __future__ import annotations

from typing import Callable

import torch


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window offsets along one axis: every ``stride`` pixels, plus one flush with the far edge
    when the stride does not land there, so that every pixel is covered."""
    if window > size:
        raise ValueError(f"occlusion window {window} is larger than the input ({size} pixels)")
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def occlusion_maps(
    score_fn: Callable[[torch.Tensor, int], torch.Tensor],
    image: torch.Tensor,
    base_scores: torch.Tensor,
    *,
    window: tuple[int, int],
    stride: tuple[int, int],
    fill: float | torch.Tensor = 0.0,
    batch_size: int = 64,
) -> torch.Tensor:
    """Occlusion map (B, K, H, W): each pixel's mean score drop y^c(x) - y^c(x with window masked)
    over the windows that cover it.

    ``score_fn(images, s)`` maps N occluded copies (N, C, H, W) of sample ``s`` to their scores
    (N, K) for that sample's targets; ``base_scores`` are the unoccluded scores (B, K). Windows are evaluated ``batch_size`` at a
    time, all K targets from the same forward.
    """
    b, _, h, w = image.shape
    ys = window_starts(h, window[0], stride[0])
    xs = window_starts(w, window[1], stride[1])
    boxes = [(y, x) for y in ys for x in xs]
    k = base_scores.shape[1]
    total = image.new_zeros(b, k, h, w)
    count = image.new_zeros(h, w)
    for y, x in boxes:
        count[y:y + window[0], x:x + window[1]] += 1
    layout = (torch.channels_last if image.is_contiguous(memory_format=torch.channels_last)
              and not image.is_contiguous() else torch.contiguous_format)  # keep the image's
    for s in range(b):
        for start in range(0, len(boxes), batch_size):
            chunk = boxes[start:start + batch_size]
            batch = image[s:s + 1].expand(len(chunk), -1, -1, -1).contiguous(memory_format=layout)
            for i, (y, x) in enumerate(chunk):
                batch[i, :, y:y + window[0], x:x + window[1]] = fill
            drops = base_scores[s] - score_fn(batch, s)
            for i, (y, x) in enumerate(chunk):
                total[s, :, y:y + window[0], x:x + window[1]] += drops[i, :, None, None]
    return total / count
