"""Grad-CAM (Eq. 1-2) and CAM (Zhou et al.), of which Grad-CAM is the generalisation (Sec. 3.1)."""

from __future__ import annotations

import torch
from torch import nn

from camlens import maps
from camlens.errors import LayerError, TargetError
from camlens.evidence import Evidence, Needs
from camlens.explanation import Explanation
from camlens.guided import Rule
from camlens.methods.assemble import heatmaps, result
from camlens.methods.registry import Job, preset, register


def gradcam_maps(
    activations: torch.Tensor,
    grads: torch.Tensor,
    *,
    pooling: maps.Pooling = "gap",
    relu: bool = True,
    counterfactual: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM from a layer's activations A (B, C, h, w) and gradients dy^c/dA (B, K, C, h, w).

    alpha_k^c = 1/Z sum_ij dy^c/dA^k_ij (Eq. 1; ``gmp``: max_ij), L^c = ReLU(sum_k alpha_k^c A^k)
    (Eq. 2). ``counterfactual`` negates the gradients (Sec. 3.3). Returns (L (B, K, h, w),
    alpha (B, K, C)).
    """
    if counterfactual:
        grads = -grads
    weights = maps.pool_gradients(grads, pooling)
    cam = maps.weighted_sum(weights, activations)
    return (cam.clamp(min=0) if relu else cam), weights


def classifier_weights(
    model: nn.Module, channels: int, classifier: str | nn.Module | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (N, C) weight and (N,) bias of the linear classifier that follows global average
    pooling. Default: the last ``nn.Linear`` in ``model`` with ``in_features == C``.
    """
    if classifier is None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        fits = [m for m in linears if m.in_features == channels]
        if not fits:
            raise LayerError(
                f"CAM needs a global-average-pooling + linear head whose input has the layer's "
                f"{channels} channels, and the model has no such nn.Linear; pass "
                "classifier=<name or module>, or use method='gradcam', which works on any head"
            )
        module: nn.Module = fits[-1]
    elif isinstance(classifier, str):
        named = dict(model.named_modules())
        if classifier not in named:
            from camlens.layers import nearest_names

            hint = ", ".join(nearest_names(classifier, [n for n in named if n]))
            raise LayerError(f"no classifier named {classifier!r}; nearest names: {hint}")
        module = named[classifier]
    else:
        module = classifier
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != channels:
        raise LayerError(
            f"the CAM classifier must be linear with a (classes, {channels}) weight, got "
            f"{type(module).__name__} with weight shape "
            f"{tuple(weight.shape) if isinstance(weight, torch.Tensor) else None}"
        )
    bias = getattr(module, "bias", None)
    return weight.detach(), (bias.detach() if isinstance(bias, torch.Tensor) else None)


def check_gap_linear_head(
    activations: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
    indices: torch.Tensor, scores: torch.Tensor, layer: str,
) -> None:
    """CAM is only defined when y^c = sum_k w_k^c GAP(A^k) + b_c: check that identity on the
    scores the model produced, so a classifier that does not follow the layer directly is an
    error rather than a meaningless map.

    The identity is recomputed in float32 (float64 for float64 models); the error is taken
    relative to the size of its terms, max |w^c| . |GAP(A)| + |b_c| (at least 1), and allowed
    to be 4 eps of the least precise dtype involved (at least 1e-3): a bfloat16 model rounds
    its pooled features and scores to eps = 2^-7.
    """
    exact = torch.promote_types(weight.dtype, torch.float32)
    pooled = activations.to(exact).mean(dim=(-2, -1))  # (B, C)
    w = weight.to(exact)[indices]  # (B, K, C)
    predicted = torch.einsum("bc,bkc->bk", pooled, w)
    size = torch.einsum("bc,bkc->bk", pooled.abs(), w.abs())
    if bias is not None:
        predicted = predicted + bias.to(exact)[indices]
        size = size + bias.to(exact)[indices].abs()
    scale = size.amax().clamp(min=1.0)
    err = float((predicted - scores.to(exact)).abs().amax() / scale)
    eps = max(torch.finfo(t.dtype).eps for t in (activations, weight, scores))
    if err > max(1e-3, 4 * eps):
        raise LayerError(
            f"CAM needs layer {layer!r} to be followed directly by global average pooling and the "
            f"linear classifier, but W . GAP(A) + b does not reproduce the model's scores "
            f"(relative error {err:.2g}); use method='gradcam', which works on any head"
        )


def cam_maps(
    activations: torch.Tensor, fc_weight: torch.Tensor, indices: torch.Tensor, *, relu: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """CAM: M_c = sum_k w_k^c A^k with w the linear classifier's weights (no gradients).

    On a GAP + linear head w_k^c = Z alpha_k^c, so CAM = Z x Grad-CAM (Sec. 3.1). Returns
    (M (B, K, h, w), w (B, K, C)).
    """
    weights = fc_weight.to(activations.dtype)[indices]
    cam = maps.weighted_sum(weights, activations)
    return (cam.clamp(min=0) if relu else cam), weights



def _gradcam_needs(job: Job, *, backward: Rule = "normal", **_: object) -> Needs:
    return Needs(layer=True, layer_rules=frozenset({backward}))


@register("gradcam", needs=_gradcam_needs, needs_layer=True, pixel_space=False,
          summary="Grad-CAM (Eq. 1-2): gradient-weighted sum of a layer's feature maps")
def run_gradcam(job: Job, ev: Evidence, *, pooling: maps.Pooling = "gap", relu: bool = True,
                counterfactual: bool = False, backward: Rule = "normal") -> Explanation:
    """Grad-CAM with the paper's switches: ``pooling`` (gap/gmp), ``relu``, ``counterfactual``
    (negated gradients, Sec. 3.3) and ``backward`` (the rectifier rule used while
    back-propagating to the layer, Table 3)."""
    pairs = [gradcam_maps(a, g, pooling=pooling, relu=relu, counterfactual=counterfactual)
             for a, g in zip(ev.activations, ev.layer_grads(backward))]
    heat, raw = heatmaps(job, [p[0] for p in pairs])
    weights = pairs[0][1] if len(pairs) == 1 else None
    return result(job, ev, "gradcam", heat, raw, weights, pooling=pooling, relu=relu,
                  counterfactual=counterfactual, backward=backward)


preset("counterfactual-gradcam", "gradcam", counterfactual=True,
       summary="Counterfactual Grad-CAM (Sec. 3.3): regions whose removal raises the score")


def _cam_needs(job: Job, **_: object) -> Needs:
    return Needs(layer=True)


@register("cam", needs=_cam_needs, needs_layer=True, pixel_space=False,
          summary="CAM (Zhou et al.): classifier weights times feature maps, GAP + linear heads")
def run_cam(job: Job, ev: Evidence, *, classifier: str | nn.Module | None = None,
            relu: bool = True) -> Explanation:
    """CAM, M_c = sum_k w_k^c A^k; needs no backward pass. ``relu=False`` gives Zhou's map."""
    if ev.indices is None:
        raise TargetError("CAM explains class indices only; use method='gradcam' for a "
                          "callable target")
    pairs = []
    for name, act in zip(job.layer_names, ev.activations):
        act = act.detach()  # autograd may run from the input for other methods of the call
        weight, bias = classifier_weights(job.model, act.shape[1], classifier)
        check_gap_linear_head(act, weight, bias, ev.indices, ev.scores.detach(), name)
        pairs.append(cam_maps(act, weight, ev.indices, relu=relu))
    heat, raw = heatmaps(job, [p[0] for p in pairs])
    weights = pairs[0][1] if len(pairs) == 1 else None
    return result(job, ev, "cam", heat, raw, weights, relu=relu)
