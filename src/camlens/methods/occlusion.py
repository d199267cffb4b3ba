"""Occlusion sensitivity (Zeiler & Fergus): the score drop when a window of the input is masked."""

from __future__ import annotations

from typing import Callable

import torch

from camlens import maps
from camlens.evidence import Evidence, Needs
from camlens.explanation import Explanation
from camlens.methods.assemble import result
from camlens.methods.registry import Job, register
from camlens.targets import scores_of


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


@register("occlusion", needs=lambda job, **_: Needs(), needs_layer=False, pixel_space=False,
          summary="Occlusion sensitivity: score drop when a sliding window is masked")
def run_occlusion(job: Job, ev: Evidence, *, window: int | tuple[int, int] = 16,
                  stride: int | tuple[int, int] = 8, fill: float = 0.0,
                  batch_size: int = 64) -> Explanation:
    """Mean drop of y^c over the windows covering each pixel; batched forwards, no autograd."""
    win = (window, window) if isinstance(window, int) else tuple(window)
    std = (stride, stride) if isinstance(stride, int) else tuple(stride)
    if min(win) < 1 or min(std) < 1 or batch_size < 1:
        raise ValueError(f"window, stride and batch_size must be >= 1, got {win}, {std}, "
                         f"{batch_size}")

    def score_fn(images: torch.Tensor, s: int) -> torch.Tensor:
        n = images.shape[0]
        inputs = [images if i == job.image_index else t[s:s + 1].expand(n, *t.shape[1:])
                  for i, t in enumerate(job.inputs)]
        with torch.no_grad():
            out = job.model(*inputs)
        idx = None if ev.indices is None else ev.indices[s:s + 1].expand(n, -1)
        return scores_of(out, job.target, idx)

    raw = occlusion_maps(score_fn, job.image, ev.scores, window=win, stride=std, fill=fill,
                         batch_size=batch_size)
    return result(job, ev, "occlusion", maps.minmax(raw).float(), raw, None,
                  window=win, stride=std, fill=fill)
