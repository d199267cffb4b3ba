"""Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM, Eigen-CAM and Eigen-Grad-CAM against literal
loop-by-loop re-implementations of their papers' equations (float64, plain autograd, no camlens),
hand-derived values, identities, and K targets in one call = K single calls."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import camlens
from models import ZOO, build, sample

FAMILY = ["gradcampp", "xgradcam", "hirescam", "layercam", "eigencam", "eigengradcam"]
CLASSES = torch.tensor([[0, 3], [4, 1]])


def as_tuple(x: Any) -> tuple[torch.Tensor, ...]:
    return x if isinstance(x, tuple) else (x,)


def layer_evidence(model: nn.Module, inputs: tuple[torch.Tensor, ...], layer: str,
                   classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A (B, C, h, w) and dS/dA (B, K, C, h, w) by plain autograd (the test's own hook)."""
    store: list[torch.Tensor] = []

    def hook(m: nn.Module, i: Any, o: torch.Tensor) -> torch.Tensor:
        store.append(o)
        return o.clone()  # an in-place ReLU may follow: it must not change the stored A

    h = dict(model.named_modules())[layer].register_forward_hook(hook)
    try:
        out = model(*inputs)
    finally:
        h.remove()
    a = store[0]
    grads = [torch.autograd.grad(out.gather(1, classes)[:, k].sum(), a, retain_graph=True)[0]
             for k in range(classes.shape[1])]
    return a.detach(), torch.stack(grads, dim=1)


def literal(method: str, a: torch.Tensor, g: torch.Tensor, **opt: Any) -> torch.Tensor:
    """The map (B, K, h, w) by loops over samples, targets, channels and pixels."""
    b, k_, c, h, w = g.shape
    out = torch.zeros(b, k_, h, w, dtype=torch.float64)
    for s in range(b):
        for k in range(k_):
            if method in ("eigencam", "eigengradcam"):
                out[s, k] = literal_eigen(a[s] if method == "eigencam" else a[s] * g[s, k],
                                          **opt)
                continue
            cam = torch.zeros(h, w, dtype=torch.float64)
            for ch in range(c):
                A, G = a[s, ch], g[s, k, ch]
                if method == "gradcampp":
                    total = sum(float(A[i, j]) for i in range(h) for j in range(w))
                    wk = 0.0
                    for i in range(h):
                        for j in range(w):
                            gij = float(G[i, j])
                            den = 2 * gij ** 2 + total * gij ** 3
                            alpha = gij ** 2 / den if den != 0 else 0.0
                            wk += alpha * max(gij, 0.0)
                    cam += wk * A
                elif method == "xgradcam":
                    total = float(A.sum())
                    wk = sum(float(A[i, j] * G[i, j]) for i in range(h) for j in range(w))
                    cam += (wk / total if total != 0 else 0.0) * A
                elif method == "hirescam":
                    cam += G * A
                elif method == "layercam":
                    for i in range(h):
                        for j in range(w):
                            cam[i, j] += max(float(G[i, j]), 0.0) * float(A[i, j])
            out[s, k] = cam if method == "hirescam" and not opt.get("relu", True) else \
                cam.clamp(min=0)
    return out


def literal_eigen(m: torch.Tensor, center: bool, relu: bool = True) -> torch.Tensor:
    """numpy's SVD of the (hw, C) matrix, projection on v_1, sign as camlens documents it."""
    c, h, w = m.shape
    mat = m.reshape(c, h * w).T.numpy()
    if center:
        mat = mat - mat.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(mat, full_matrices=False)
    proj = mat @ vt[0]
    if proj[np.argmax(np.abs(proj))] < 0:
        proj = -proj
    out = torch.from_numpy(proj.reshape(h, w))
    return out.clamp(min=0) if relu else out


CASES = [(m, {}) for m in FAMILY] + [("hirescam", {"relu": False}),
                                     ("eigencam", {"center": True}),
                                     ("eigengradcam", {"center": False})]


@pytest.mark.parametrize("name", sorted(ZOO))
@pytest.mark.parametrize("method,opt", CASES, ids=[m + "".join(f"-{k}={v}" for k, v in o.items())
                                                   for m, o in CASES])
def test_matches_the_literal_equation(method: str, opt: dict[str, Any], name: str) -> None:
    model = build(name)
    inputs = as_tuple(sample(model))
    a, g = layer_evidence(model, inputs, model.LAYER, CLASSES)
    ex = camlens.explain(model, inputs, method=method, layer=model.LAYER, target=CLASSES, **opt)
    expected = literal(method, a, g, **({"center": method == "eigengradcam"} | opt))
    assert float(expected.abs().amax()) > 0  # not a vacuous comparison
    torch.testing.assert_close(ex.raw, expected, rtol=1e-9, atol=1e-12)


class ExpLinear(nn.Module):
    """S^c = sum_kij V_c,k,ij A_kij with A = conv(x) (no rectifier after the layer): S is linear
    in A, so Y = exp(S) has d^nY/dA_ij^n = Y (V_ij)^n exactly, the case Grad-CAM++'s closed
    form is derived for."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.v = nn.Parameter(torch.randn(4, 3, 4, 4) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bkij,ckij->bc", self.conv(x), self.v)


def test_gradcampp_equals_eq10_with_true_higher_derivatives_of_exp_score() -> None:
    """Eq. 10 of the paper with the 2nd and 3rd derivatives of Y = exp(S) taken by autograd,
    entry by entry; Eq. 19 drops the common factor exp(S^c), so camlens's weights times
    exp(S^c) must equal them."""
    model = ExpLinear().double().eval()
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    a0 = model.conv(x).detach()
    for c in range(4):
        a = a0.clone().requires_grad_(True)
        y = torch.exp(torch.einsum("bkij,ckij->bc", a, model.v)[0, c])
        (d1,) = torch.autograd.grad(y, a, create_graph=True)
        expected = torch.zeros(3, dtype=torch.float64)
        for k in range(3):
            total = float(a0[0, k].sum())
            for i in range(4):
                for j in range(4):
                    (d2,) = torch.autograd.grad(d1[0, k, i, j], a, create_graph=True)
                    (d3,) = torch.autograd.grad(d2[0, k, i, j], a, retain_graph=True)
                    alpha = d2[0, k, i, j] / (2 * d2[0, k, i, j] + total * d3[0, k, i, j])
                    expected[k] += float((alpha * d1[0, k, i, j].clamp(min=0)).detach())
        ex = camlens.explain(model, x, method="gradcampp", layer="conv", target=c)
        torch.testing.assert_close(ex.weights[0, 0] * torch.exp(ex.scores[0, 0]), expected,
                                   rtol=1e-10, atol=1e-14)
        assert float(expected.abs().amax()) > 0


def test_gradcampp_weights_by_hand() -> None:
    """One channel, two pixels: A = (1, 3), dS/dA = (2, -1); sum A = 4.
    alpha = g^2 / (2 g^2 + 4 g^3): (4 / (8 + 32), 1 / (2 - 4)) = (0.1, -0.5);
    w = 0.1 * ReLU(2) + (-0.5) * ReLU(-1) = 0.2."""
    from camlens.methods.camfamily import gradcampp_weights
    a = torch.tensor([[[[1.0, 3.0]]]], dtype=torch.float64)
    g = torch.tensor([[[[[2.0, -1.0]]]]], dtype=torch.float64)
    assert float(gradcampp_weights(a, g)) == pytest.approx(0.2, abs=1e-15)


def test_torchcams_no_op_division_is_not_what_camlens_computes() -> None:
    """torchcam 0.5.0 divides ``grad_2[mask].div_(denom[mask])``: boolean indexing returns a
    copy, so the in-place division never reaches grad_2 and its alpha is g^2, not Eq. 19's
    g^2 / (2 g^2 + sum A g^3). The mechanism, and that the two weights differ here:"""
    from camlens.methods.camfamily import gradcampp_weights
    g2 = torch.tensor([4.0, 1.0])
    g2[g2 > 0].div_(torch.tensor([40.0, -2.0]))
    assert g2.tolist() == [4.0, 1.0]  # unchanged: the division went to a temporary
    a = torch.tensor([[[[1.0, 3.0]]]], dtype=torch.float64)
    g = torch.tensor([[[[[2.0, -1.0]]]]], dtype=torch.float64)
    undivided = float((g * g * g.clamp(min=0)).sum())  # alpha = g^2: 4 * 2 = 8
    assert undivided == 8.0 and float(gradcampp_weights(a, g)) == pytest.approx(0.2)


@pytest.mark.parametrize("method", ["xgradcam", "hirescam"])
def test_equals_gradcam_on_a_gap_linear_head(method: str) -> None:
    """dS^c/dA_ij^k = w_k^c / Z on GAP + linear: HiResCAM's sum_k g^k A^k is then Grad-CAM's
    sum_k (w_k^c / Z) A^k, and XGrad-CAM's weight sum_ij A_ij g_ij / sum_ab A_ab is w_k^c / Z."""
    model = build("gap")
    x = sample(model, batch=3)
    ref = camlens.explain(model, x, method="gradcam", layer="features", top_k=3)
    ex = camlens.explain(model, x, method=method, layer="features", top_k=3)
    torch.testing.assert_close(ex.raw, ref.raw, rtol=1e-10, atol=1e-13)
    if method == "xgradcam":  # a channel that is zero everywhere (sum A = 0) has weight 0
        active = sample_sums(model, x)[:, None, :].expand_as(ex.weights) != 0
        assert bool((~active).any())
        torch.testing.assert_close(ex.weights[active], ref.weights[active], rtol=1e-10,
                                   atol=1e-13)
        assert bool((ex.weights[~active] == 0).all())


def sample_sums(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """sum_ij A_ij^k (B, C) at GapNet's features."""
    return model.features(x).sum(dim=(2, 3))


def test_hirescam_differs_from_gradcam_where_gradients_vary() -> None:
    """Not the same method: on VGG (flatten + linear head) the gradients vary over pixels."""
    model = build("vgg")
    x = sample(model)
    ref = camlens.explain(model, x, method="gradcam", layer=model.LAYER, relu=False)
    ex = camlens.explain(model, x, method="hirescam", layer=model.LAYER, relu=False)
    assert float((ex.raw - ref.raw).abs().amax()) > 1e-3 * float(ref.raw.abs().amax())


def test_xgradcam_weights_by_hand() -> None:
    """A = (1, 3), g = (2, -1): (1 * 2 + 3 * (-1)) / (1 + 3) = -0.25; sum A = 0 gives 0."""
    from camlens.methods.camfamily import xgradcam_weights
    a = torch.tensor([[[[1.0, 3.0]], [[1.0, -1.0]]]], dtype=torch.float64)
    g = torch.tensor([[[[[2.0, -1.0]], [[5.0, 5.0]]]]], dtype=torch.float64)
    assert xgradcam_weights(a, g).tolist() == [[[-0.25, 0.0]]]


def test_layercam_by_hand() -> None:
    """S = sum_kij V_kij A_kij on ExpLinear: g = V, the map is ReLU(sum_k ReLU(V^k) A^k)."""
    model = ExpLinear().double().eval()
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    a = model.conv(x).detach()
    ex = camlens.explain(model, x, method="layercam", layer="conv", target=2)
    expected = (model.v[2].detach().clamp(min=0) * a[0]).sum(0).clamp(min=0)
    torch.testing.assert_close(ex.raw[0, 0], expected, rtol=1e-12, atol=1e-14)


def test_eigencam_of_a_rank_one_map_is_the_spatial_factor_with_a_positive_sign() -> None:
    """A^k_ij = s_ij c_k (rank one, s, c >= 0): v_1 = +-c / |c|, M v_1 = +-|c| s, and the sign
    convention (largest entry positive) picks |c| s; also for -A, whose SVD differs in sign."""
    from camlens.methods.camfamily import principal_projection
    g = torch.Generator().manual_seed(0)
    s, c = torch.rand(5, 6, generator=g, dtype=torch.float64), torch.rand(7, generator=g,
                                                                          dtype=torch.float64)
    a = (c[:, None, None] * s)[None]
    torch.testing.assert_close(principal_projection(a, center=False)[0], c.norm() * s)
    torch.testing.assert_close(principal_projection(-a, center=False)[0], c.norm() * s)


def test_eigencam_sign_makes_the_largest_entry_positive() -> None:
    """Whatever sign the SVD returns, the projection's largest-magnitude entry is positive, and
    the projection is +-(M v_1) of numpy's SVD."""
    from camlens.methods.camfamily import principal_projection
    g = torch.Generator().manual_seed(2)
    m = torch.randn(4, 9, 5, 5, generator=g, dtype=torch.float64)
    for center in (False, True):
        p = principal_projection(m, center).flatten(-2)
        peak = p.gather(-1, p.abs().argmax(-1, keepdim=True))
        assert bool((peak > 0).all())
        for s in range(4):
            ref = literal_eigen(m[s], center, relu=False).flatten()
            torch.testing.assert_close(p[s], ref)


@pytest.mark.parametrize("method", FAMILY)
def test_k_targets_in_one_call_equal_k_single_calls(method: str) -> None:
    model = build("resnet")
    x = sample(model, batch=2)
    together = camlens.explain(model, x, method=method, layer=model.LAYER, target=CLASSES)
    for k in range(2):
        alone = camlens.explain(model, x, method=method, layer=model.LAYER,
                                target=CLASSES[:, k:k + 1])
        torch.testing.assert_close(together.raw[:, k:k + 1], alone.raw, rtol=1e-12, atol=0)
        torch.testing.assert_close(together.maps[:, k:k + 1], alone.maps, rtol=1e-6, atol=0)
