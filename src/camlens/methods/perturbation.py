"""Perturbation CAMs: channel weights from forward passes on modified inputs or activations.

- ``scorecam`` (Wang et al. 2020, Score-CAM, Eq. 6-8 and Algorithm 1): each channel's
  activation map A^k (h, w) is upsampled to the input (bilinear, align_corners=False) and
  min-max scaled to [0, 1], H^k (H, W); the weight is the score's increase over a baseline
  input, alpha_k^c = f^c(X o H^k) - f^c(X_b) (Eq. 6), with f^c the softmax probability of
  class c (``softmax``, as the authors' code scores; a callable target's own score otherwise)
  and X_b = 0, the black image, i.e. X o H for an all-zero mask (``baseline="zeros"``;
  ``"none"``: alpha_k^c = f^c(X o H^k), the authors' code). ``channel_softmax``: alpha^c =
  softmax_k of those increases (Algorithm 1 of the arXiv version; what pytorch-grad-cam and
  torchcam compute, there on pre-softmax scores: ``softmax=False``; the baseline then cancels).
  L^c = ReLU(sum_k alpha_k^c A^k) (B, K, h, w). A constant map scales to H^k = 0, so
  X o H^k = X_b: its score is the baseline's, known without a forward pass (the authors' code
  skips such maps; an all-zero map contributes nothing to L either way). All K targets are
  scored from the same masked forwards, ``batch_size`` images at a time, the baseline with the
  first batch.
- ``ablationcam`` (Desai & Ramaswamy 2020, Ablation-CAM, Eq. 3-4): y_k^c is the score with
  channel k of the layer's output set to zero; w_k^c = (y^c - y_k^c) / y^c (``relative``;
  otherwise the plain drop y^c - y_k^c), L^c = ReLU(sum_k w_k^c A^k). Only the network after the
  layer runs per batch of ``batch_size`` ablated copies (:mod:`camlens.suffix`); a channel that
  is zero everywhere is not run (its ablation changes nothing: w_k^c = 0). y^c is the score of
  the explained forward pass, as the paper defines it; with ``relative`` a score of exactly 0
  has no relative drop and is an error, and a negative score flips the weights' signs (the
  paper's equation, which assumes positive scores).
"""

from __future__ import annotations

import numbers
from typing import Any, Literal

import torch

from camlens import maps
from camlens.errors import InputError, LayerError, NonFiniteError, OptionError
from camlens.evidence import Evidence, Needs
from camlens.explanation import Explanation
from camlens.methods.assemble import heatmaps, result
from camlens.methods.copies import copy_scores, sample_inputs
from camlens.methods.registry import Job, register
from camlens.suffix import suffix_runner


def _batch_size(method: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise OptionError(f"{method} batch_size (copies per forward pass) must be a positive "
                          f"int, got {value!r}")
    return int(value)


def _scorecam_needs(job: Job, *, batch_size: Any, **_: object) -> Needs:
    _batch_size("scorecam", batch_size)
    if job.image.dim() != 4:
        raise InputError(f"scorecam masks an image batch (B, C, H, W), got shape "
                         f"{tuple(job.image.shape)}")
    if not job.image.is_floating_point():
        raise InputError(f"scorecam multiplies the image by masks in [0, 1], which a "
                         f"{job.image.dtype} image would truncate to 0 or 1; pass a "
                         "floating-point image")
    return Needs(layer=True)


def scorecam_weights(job: Job, ev: Evidence, act: torch.Tensor, *, batch_size: int,
                     softmax: bool, baseline: str, channel_softmax: bool) -> torch.Tensor:
    """Score-CAM weights alpha (B, K, C) for one layer's activations A (B, C, h, w). Masks
    are made a batch at a time (all of ResNet-50's 2048 at 224 px would take 400 MB per
    image)."""
    image = job.image
    act = act.detach()
    b, c = act.shape[:2]
    k = ev.scores.shape[1]
    weights = torch.zeros(b, k, c, dtype=torch.promote_types(ev.scores.dtype, torch.float32),
                          device=act.device)
    flat = act.flatten(2)
    live_all = flat.amax(-1) > flat.amin(-1)  # constant maps score like X_b: no forward
    for s in range(b):
        live = live_all[s].nonzero()[:, 0]
        got = []
        for start in range(-1, len(live), batch_size):  # -1: X_b = X o 0, with the first
            ks = live[max(start, 0):start + batch_size]
            chunk = image[s:s][:0]
            if len(ks):
                masks = maps.minmax(maps.upsample(act[s:s + 1, ks], image.shape[-2:]))[0]
                chunk = image[s:s + 1] * masks.to(image.dtype)[:, None]  # X o H^k
            if start < 0:
                chunk = torch.cat([torch.zeros_like(image[s:s + 1]), chunk])
            with torch.no_grad():
                out = job.model(*sample_inputs(job, chunk, s))
            got.append(copy_scores(job, ev, out, s, chunk.shape[0],
                                   f"scorecam runs the model on {chunk.shape[0]} masked copies",
                                   softmax=softmax))
        scores = torch.cat(got).to(weights.dtype).T  # (K, 1 + L)
        weights[s] = scores[:, :1]  # constant maps: f(X_b)
        weights[s][:, live] = scores[:, 1:]
        if baseline == "zeros":
            weights[s] -= scores[:, :1]
    return weights.softmax(dim=-1) if channel_softmax else weights


@register("scorecam", needs=_scorecam_needs, needs_layer=True, pixel_space=False,
          summary="Score-CAM (Wang et al. 2020): score increase of the input masked by each map")
def run_scorecam(job: Job, ev: Evidence, *, batch_size: int = 32, softmax: bool = True,
                 baseline: Literal["zeros", "none"] = "zeros",
                 channel_softmax: bool = False) -> Explanation:
    """Score-CAM (see the module docstring); ``softmax`` applies to class-index targets."""
    size = _batch_size("scorecam", batch_size)
    pairs = []
    for act in ev.activations:
        w = scorecam_weights(job, ev, act, batch_size=size, softmax=softmax, baseline=baseline,
                             channel_softmax=channel_softmax)
        a = act.detach().to(w.dtype)
        pairs.append((torch.einsum("bkc,bchw->bkhw", w, a).clamp(min=0), w))
    heat, raw = heatmaps(job, [p[0] for p in pairs])
    return result(job, ev, "scorecam", heat, raw, pairs[0][1] if len(pairs) == 1 else None,
                  batch_size=size, softmax=softmax and ev.indices is not None,
                  baseline=baseline, channel_softmax=channel_softmax)


def _ablation_needs(job: Job, *, batch_size: Any, **_: object) -> Needs:
    _batch_size("ablationcam", batch_size)
    if job.reshape is not None:
        raise LayerError("ablationcam zeroes channels of a (B, C, h, w) layer output; it takes "
                         "no reshape (transformer tokens are not supported)")
    return Needs(layer=True)


def ablation_drops(job: Job, ev: Evidence, layer: int, *, batch_size: int) -> torch.Tensor:
    """y^c - y_k^c (B, K, C) for layer ``layer``: the score drop when channel k is zeroed."""
    act = ev.captured[layer].detach()
    b, c = act.shape[:2]
    k = ev.scores.shape[1]
    base = ev.scores.detach()
    drops = torch.zeros(b, k, c, dtype=torch.promote_types(base.dtype, torch.float32),
                        device=act.device)
    runner = suffix_runner(job.model, job.layers[layer][1], job.inputs, job.image_index)
    for s in range(b):
        live = act[s].flatten(1).ne(0).any(dim=1).nonzero()[:, 0]  # zero channels: no change
        ys = []
        for start in range(0, len(live), batch_size):
            ks = live[start:start + batch_size]
            first = start == 0
            rep = act[s:s + 1].expand(len(ks) + first, *act.shape[1:]).clone()
            rep[torch.arange(first, len(ks) + first), ks] = 0
            what = f"ablationcam runs the model on {rep.shape[0]} channel-ablated copies"
            scores = copy_scores(job, ev, runner.run(s, rep), s, rep.shape[0], what)
            if first and not _same(scores[0], base[s]) and runner.fast:
                runner.fast = False  # the replay did not reproduce the forward: run it all
                scores = copy_scores(job, ev, runner.run(s, rep), s, rep.shape[0], what)
            if first and not _same(scores[0], base[s]):
                ev.warnings.append(
                    "ablationcam: running the model again on the unablated activations gave "
                    "other scores (a model in training mode with dropout, one that is not "
                    "deterministic); the drops are taken from the explained forward's scores")
            ys.append(scores[1:] if first else scores)
        if len(live):
            drops[s][:, live] = (base[s][:, None] - torch.cat(ys).T).to(drops.dtype)
    return drops


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Scores equal up to float rounding (a batched forward may sum in another order)."""
    tol = max(1e-4, 64 * torch.finfo(a.dtype).eps) if a.is_floating_point() else 0
    return bool(((a - b).abs() <= tol * b.abs().clamp(min=1)).all())


@register("ablationcam", needs=_ablation_needs, needs_layer=True, pixel_space=False,
          summary="Ablation-CAM (Desai & Ramaswamy 2020): score drop when each channel is zeroed")
def run_ablationcam(job: Job, ev: Evidence, *, batch_size: int = 64,
                    relative: bool = True) -> Explanation:
    """Ablation-CAM (see the module docstring); only the network after the layer reruns."""
    size = _batch_size("ablationcam", batch_size)
    pairs = []
    for i, act in enumerate(ev.activations):
        w = ablation_drops(job, ev, i, batch_size=size)
        if relative:
            y = ev.scores.detach().to(w.dtype)
            if bool((y == 0).any()):
                s, k = (int(v) for v in (y == 0).nonzero()[0])
                raise NonFiniteError(
                    f"ablationcam divides the score drop by the score y^c, which is exactly 0 "
                    f"for sample {s}, target {k}; use relative=False for the plain drop")
            w = w / y[:, :, None]
        a = act.detach().to(w.dtype)
        pairs.append((torch.einsum("bkc,bchw->bkhw", w, a).clamp(min=0), w))
    heat, raw = heatmaps(job, [p[0] for p in pairs])
    return result(job, ev, "ablationcam", heat, raw, pairs[0][1] if len(pairs) == 1 else None,
                  batch_size=size, relative=relative)
