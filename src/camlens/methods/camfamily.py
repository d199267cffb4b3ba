"""The Grad-CAM family that users know from pytorch-grad-cam, each from its own paper.

Notation: A (B, C, h, w) the layer's activations, g = dS^c/dA (B, K, C, h, w) the gradients of
the K explained scores S^c (pre-softmax class scores, or a callable target's value). Every map is
(B, K, h, w) at the layer's resolution; weights, where a method has per-channel ones, (B, K, C).

- ``gradcampp`` (Chattopadhay et al. 2018, Eq. 19): with Y^c = exp(S^c) the higher derivatives
  have the closed form d^nY/dA^n = Y (dS/dA)^n for a piecewise-linear net, so
  alpha_ij^kc = g^2 / (2 g^2 + sum_ab A_ab^k g^3) (0 where the denominator is 0),
  w_k^c = sum_ij alpha_ij^kc ReLU(g_ij^k), L = ReLU(sum_k w_k^c A^k). The common factor
  exp(S^c) of dY/dA is left out, as in the paper's Eq. 19 (it scales the map only).
- ``xgradcam`` (Fu et al. 2020, Eq. 9): w_k^c = sum_ij (A_ij^k / sum_ab A_ab^k) g_ij^k
  (0 where sum_ab A_ab^k = 0), L = ReLU(sum_k w_k^c A^k).
- ``hirescam`` (Draelos & Carin 2020, Eq. 3): L = sum_k g^k * A^k element-wise, then ReLU
  (``relu=False`` gives the paper's signed sum).
- ``layercam`` (Jiang et al. 2021, Eq. 5-6): L = ReLU(sum_k ReLU(g^k) * A^k).
- ``eigencam`` (Muhammad & Yeasin 2020): M = A as an (hw, C) matrix per sample (its column
  means subtracted when ``center``), v = the first right singular vector of M,
  L = ReLU(M v) as (h, w); the same map for every target (it uses no gradients).
- ``eigengradcam`` (as pytorch-grad-cam defines it; no paper): the same with M = A * g
  (per target), centred by default as pytorch-grad-cam does.

Sign of the principal component (an SVD's is arbitrary, and pytorch-grad-cam keeps whatever
LAPACK returns): v is chosen so that the projection's entry of largest magnitude is positive
(scikit-learn's ``svd_flip`` convention for u). For an uncentred A of one sign (after a ReLU)
all of M v then has one sign and the map is M v >= 0 everywhere, so the ReLU keeps all of it.
"""

from __future__ import annotations

import torch

from camlens.evidence import Evidence, Needs
from camlens.explanation import Explanation
from camlens.methods.assemble import heatmaps, result
from camlens.methods.registry import Job, register


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, 0 where den == 0."""
    ok = den != 0
    return torch.where(ok, num / torch.where(ok, den, 1), 0)


def gradcampp_weights(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ weights (B, K, C) from A (B, C, h, w) and g (B, K, C, h, w) (Eq. 19)."""
    g2 = grads * grads
    total = activations.sum(dim=(-2, -1))[:, None, :, None, None]  # sum_ab A_ab^k
    alpha = _safe_div(g2, 2 * g2 + total * g2 * grads)
    return (alpha * grads.clamp(min=0)).sum(dim=(-2, -1))


def xgradcam_weights(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM weights (B, K, C): sum_ij A_ij^k g_ij^k / sum_ab A_ab^k (Eq. 9)."""
    num = torch.einsum("bchw,bkchw->bkc", activations, grads)
    return _safe_div(num, activations.sum(dim=(-2, -1))[:, None, :])


def principal_projection(m: torch.Tensor, center: bool) -> torch.Tensor:
    """(..., C, h, w) -> (..., h, w): the feature maps projected on their first principal
    direction (first right singular vector of the (hw, C) matrix), signed as the module says."""
    h, w = m.shape[-2:]
    flat = m.flatten(-2).transpose(-1, -2)  # (..., hw, C)
    if center:
        flat = flat - flat.mean(dim=-2, keepdim=True)
    exact = flat.to(torch.promote_types(flat.dtype, torch.float32))
    _, _, vh = torch.linalg.svd(exact, full_matrices=False)
    proj = exact @ vh[..., 0, :, None]  # (..., hw, 1)
    proj = proj[..., 0]
    peak = proj.gather(-1, proj.abs().argmax(dim=-1, keepdim=True))
    proj = proj * torch.where(peak < 0, -1, 1)
    return proj.to(m.dtype).unflatten(-1, (h, w))


def _grad_needs(job: Job, **_: object) -> Needs:
    return Needs(layer=True, layer_rules=frozenset({"normal"}))


def _layer_needs(job: Job, **_: object) -> Needs:
    return Needs(layer=True)


def _weighted(job: Job, ev: Evidence, name: str, weigh: object) -> Explanation:
    """L = ReLU(sum_k w_k^c A^k) for per-channel weights ``weigh(A, g) -> (B, K, C)``."""
    pairs = []
    for a, g in zip(ev.activations, ev.layer_grads("normal")):
        a = a.detach()
        w = weigh(a, g)  # type: ignore[operator]
        pairs.append((torch.einsum("bkc,bchw->bkhw", w, a).clamp(min=0), w))
    heat, raw = heatmaps(job, [p[0] for p in pairs])
    return result(job, ev, name, heat, raw, pairs[0][1] if len(pairs) == 1 else None)


@register("gradcampp", needs=_grad_needs, needs_layer=True, pixel_space=False,
          summary="Grad-CAM++ (Chattopadhay et al. 2018): pixel-weighted positive gradients")
def run_gradcampp(job: Job, ev: Evidence) -> Explanation:
    """Grad-CAM++, Eq. 19 with the exponential-score closed form (see the module docstring)."""
    return _weighted(job, ev, "gradcampp", gradcampp_weights)


@register("xgradcam", needs=_grad_needs, needs_layer=True, pixel_space=False,
          summary="XGrad-CAM (Fu et al. 2020): activation-normalised gradient weights")
def run_xgradcam(job: Job, ev: Evidence) -> Explanation:
    """XGrad-CAM, w_k^c = sum_ij A_ij^k g_ij^k / sum_ab A_ab^k (Eq. 9)."""
    return _weighted(job, ev, "xgradcam", xgradcam_weights)


@register("hirescam", needs=_grad_needs, needs_layer=True, pixel_space=False,
          summary="HiResCAM (Draelos & Carin 2020): element-wise gradients times activations")
def run_hirescam(job: Job, ev: Evidence, *, relu: bool = True) -> Explanation:
    """HiResCAM, L = sum_k g^k * A^k (B, K, h, w), then ReLU unless ``relu=False``."""
    raws = [(g * a.detach()[:, None]).sum(dim=2)
            for a, g in zip(ev.activations, ev.layer_grads("normal"))]
    heat, raw = heatmaps(job, [r.clamp(min=0) if relu else r for r in raws])
    return result(job, ev, "hirescam", heat, raw, None, relu=relu)


@register("layercam", needs=_grad_needs, needs_layer=True, pixel_space=False,
          summary="LayerCAM (Jiang et al. 2021): positive gradients times activations, per pixel")
def run_layercam(job: Job, ev: Evidence) -> Explanation:
    """LayerCAM, L = ReLU(sum_k ReLU(g^k) * A^k) (B, K, h, w)."""
    raws = [(g.clamp(min=0) * a.detach()[:, None]).sum(dim=2).clamp(min=0)
            for a, g in zip(ev.activations, ev.layer_grads("normal"))]
    heat, raw = heatmaps(job, raws)
    return result(job, ev, "layercam", heat, raw, None)


@register("eigencam", needs=_layer_needs, needs_layer=True, pixel_space=False,
          summary="Eigen-CAM (Muhammad & Yeasin 2020): first principal component of activations")
def run_eigencam(job: Job, ev: Evidence, *, center: bool = False,
                 relu: bool = True) -> Explanation:
    """Eigen-CAM, ReLU(M v_1) with M = A (hw, C) per sample, repeated for the K targets."""
    k = ev.scores.shape[1]
    raws = []
    for a in ev.activations:
        proj = principal_projection(a.detach(), center)[:, None].expand(-1, k, -1, -1)
        raws.append(proj.clamp(min=0) if relu else proj)
    heat, raw = heatmaps(job, raws)
    return result(job, ev, "eigencam", heat, raw, None, center=center, relu=relu)


@register("eigengradcam", needs=_grad_needs, needs_layer=True, pixel_space=False,
          summary="Eigen-Grad-CAM (pytorch-grad-cam): first principal component of A * dS/dA")
def run_eigengradcam(job: Job, ev: Evidence, *, center: bool = True,
                     relu: bool = True) -> Explanation:
    """Eigen-Grad-CAM, ReLU(M v_1) with M = A * g (hw, C) per sample and target."""
    raws = []
    for a, g in zip(ev.activations, ev.layer_grads("normal")):
        proj = principal_projection(a.detach()[:, None] * g, center)
        raws.append(proj.clamp(min=0) if relu else proj)
    heat, raw = heatmaps(job, raws)
    return result(job, ev, "eigengradcam", heat, raw, None, center=center, relu=relu)
