"""Excitation Backprop (Zhang, Bargal, Lin, Brandt, Shen, Sclaroff, "Top-down Neural Attention
by Excitation Backprop", ECCV 2016 / IJCV 2018): the marginal winning probability (MWP) of each
unit of a layer, and contrastive MWP (c-MWP), which the Grad-CAM paper compares against
(Table 1, the pointing game, Sec. 5.3).

- ``excitation-backprop``: the top prior is one-hot on each explained class (mass 1, on the
  pre-softmax scores); the map is the MWP at the layer summed over channels, (B, K, h, w). The
  rules per operation are in :mod:`camlens.excitation`.
- ``cmwp`` (``contrastive=True``; Sec. 3.3 of the EB paper): the dual of output unit c has c's
  weights negated ("non-c"); c-MWP = max(sum_channels (MWP_c - MWP_dual), 0). As in the authors'
  demo, both are propagated through the top layer (the last conv/linear before the output: only
  pooling, rectifiers and reshapes may follow it), subtracted at its input, and the difference
  is propagated down; the rule is linear in P for a fixed forward pass, so that is MWP_c -
  MWP_dual at every layer below.

Both run the model once more, on camlens's private view, after the forward pass that resolved
the targets. They warn when that second run gives other scores (dropout in training mode, a
model that writes into its input) and when conv/linear/pooling/addition inputs after the layer
are negative (BatchNorm outputs summed by a residual connection, no ReLU before a layer): EB's
probabilities assume non-negative activations, and the MWP can then be negative.
"""

from __future__ import annotations

import math

import torch

from camlens.errors import LayerError, TargetError
from camlens.evidence import Evidence, Needs
from camlens.excitation import marginal_winning_probabilities
from camlens.explanation import Explanation
from camlens.methods.assemble import heatmaps, result
from camlens.methods.registry import Job, preset, register
from camlens.targets import logits_of


def _needs(job: Job, **_: object) -> Needs:
    if job.reshape is not None:
        raise LayerError("excitation-backprop and cmwp explain convolutional feature maps; they "
                         "take no reshape (transformer tokens are not supported)")
    return Needs(layer=True)


@register("excitation-backprop", needs=_needs, needs_layer=True, pixel_space=False,
          summary="Excitation Backprop (Zhang et al.): marginal winning probabilities at a layer")
def run_excitation_backprop(job: Job, ev: Evidence, *, contrastive: bool = False) -> Explanation:
    """MWP summed over channels (B, K, h, w); ``contrastive``: c-MWP, max(MWP_c - MWP_dual, 0)."""
    method = "cmwp" if contrastive else "excitation-backprop"
    if ev.indices is None:
        raise TargetError(f"{method} starts from a one-hot prior over the output's classes, so "
                          "it explains class indices only; use method='gradcam' for a callable "
                          "target")
    mwp, logits, negative = marginal_winning_probabilities(
        job.model, job.inputs, job.layers, ev.indices, contrastive=contrastive)
    raws = [m.sum(dim=2) for m in mwp]
    if contrastive:
        raws = [r.clamp(min=0) for r in raws]
    first = logits_of(ev.output).detach()
    gap = float((logits - first).abs().amax()) if logits.shape == first.shape else math.inf
    if gap > max(1e-4, 8 * torch.finfo(logits.dtype).eps) * max(float(first.abs().amax()), 1):
        ev.warnings.append(
            f"{method}: running the model again gave other scores (largest difference {gap:.3g}):"
            " a model in training mode (dropout), one that is not deterministic, or one that "
            "writes into its input; the map explains the second run")
    if negative:
        ev.warnings.append(
            f"{method}: {negative} inputs of the conv/linear/pooling/addition operations after "
            "the layer are negative (e.g. BatchNorm outputs summed by a residual connection, or "
            "no ReLU before a layer); Excitation Backprop's probabilities assume non-negative "
            "activations, so the map can hold negative values")
    heat, raw = heatmaps(job, raws)
    return result(job, ev, method, heat, raw, None, contrastive=contrastive)


preset("cmwp", "excitation-backprop", contrastive=True,
       summary="Contrastive MWP (c-MWP, Zhang et al.): MWP of the class minus its dual's, >= 0")
