"""Scoring modified copies of one sample (occlusion, Score-CAM, Ablation-CAM): the explained
targets of that sample on a batch of N model outputs."""

from __future__ import annotations

from typing import Any

import torch

from camlens.errors import TargetError
from camlens.evidence import Evidence
from camlens.methods.registry import Job
from camlens.targets import for_sample, logits_of, scores_of

_HINT = ("; a callable target must score any batch of copies of one sample: give it a method "
         "at(sample) returning the target for that sample (camlens.SampleTarget), as camlens's "
         "caption and answer targets do")


def sample_inputs(job: Job, images: torch.Tensor, s: int) -> list[torch.Tensor]:
    """The model's inputs for N modified ``images`` of sample ``s``: the other inputs are N
    copies (views) of that sample's."""
    n = images.shape[0]
    return [images if i == job.image_index else t[s:s + 1].expand(n, *t.shape[1:])
            for i, t in enumerate(job.inputs)]


def copy_scores(job: Job, ev: Evidence, out: Any, s: int, n: int, what: str,
                softmax: bool = False) -> torch.Tensor:
    """(N, K) scores of sample ``s``'s explained targets on the output ``out`` of N copies
    (``what``: e.g. "occlusion runs the model on 5 occluded copies"). ``softmax``: class
    probabilities instead of pre-softmax scores (class-index targets only)."""
    idx = None if ev.indices is None else ev.indices[s:s + 1].expand(n, -1)
    try:
        if softmax and idx is not None:
            scores = logits_of(out).softmax(dim=-1).gather(1, idx)
        else:
            scores = scores_of(out, for_sample(job.target, s), idx)
    except (RuntimeError, IndexError) as err:  # it scored the batch, not these copies
        raise TargetError(f"{what} of sample {s}, and the target failed on them ({err})"
                          f"{_HINT}") from err
    if scores.shape != (n, ev.scores.shape[1]):
        raise TargetError(f"{what} of sample {s}, and the target gave scores of shape "
                          f"{tuple(scores.shape)} for them, not ({n}, {ev.scores.shape[1]})"
                          f"{_HINT}")
    return scores
