"""The dense CRF (camlens.segment.crf): a slow literal mean-field, hand-checked cases."""

from __future__ import annotations

import math

import pytest
import torch

from camlens.segment.crf import (
    CRFParams,
    crf_probabilities,
    image_kernels,
    kernel_matrix,
    mean_field,
)


def literal_mean_field(unary: torch.Tensor, image: torch.Tensor, p: CRFParams,
                       cell: float) -> torch.Tensor:
    """Kraehenbuehl & Koltun's update written out: every pixel i, label l, other pixel j and
    label l', Potts mu(l, l') = [l != l'], kernel from the formula per pair. (L, h, w) in/out."""
    n_labels, h, w = unary.shape
    pix = [(y, x) for y in range(h) for x in range(w)]

    def k(a: tuple[int, int], b: tuple[int, int]) -> float:
        dp = ((a[0] - b[0]) * cell) ** 2 + ((a[1] - b[1]) * cell) ** 2
        dc = sum((255 * (float(image[c, a[0], a[1]]) - float(image[c, b[0], b[1]]))) ** 2
                 for c in range(3))
        return (p.w_app * math.exp(-dp / (2 * p.theta_alpha ** 2) - dc / (2 * p.theta_beta ** 2))
                + p.w_smooth * math.exp(-dp / (2 * p.theta_gamma ** 2)))

    def normalise(e: dict[tuple[tuple[int, int], int], float]) -> dict:
        q = {}
        for i in pix:
            z = sum(math.exp(-e[i, lab]) for lab in range(n_labels))
            for lab in range(n_labels):
                q[i, lab] = math.exp(-e[i, lab]) / z
        return q

    q = normalise({(i, lab): float(unary[lab, i[0], i[1]]) for i in pix for lab in range(n_labels)})
    for _ in range(p.iterations):
        energy = {}
        for i in pix:
            for lab in range(n_labels):
                msg = sum((1.0 if lab != lab2 else 0.0) * k(i, j) * q[j, lab2]
                          for j in pix if j != i for lab2 in range(n_labels))
                energy[i, lab] = float(unary[lab, i[0], i[1]]) + msg
        q = normalise(energy)
    out = torch.zeros(n_labels, h, w, dtype=torch.float64)
    for (i, lab), v in q.items():
        out[lab, i[0], i[1]] = v
    return out


def test_mean_field_matches_literal_reference() -> None:
    g = torch.Generator().manual_seed(3)
    unary = torch.rand(2, 3, 3, 4, generator=g, dtype=torch.float64) * 3
    image = torch.rand(2, 3, 3, 4, generator=g, dtype=torch.float64)
    params = CRFParams(w_app=0.8, theta_alpha=3.0, theta_beta=40.0, w_smooth=0.5,
                       theta_gamma=2.0, iterations=3)
    got = mean_field(unary, image, params, cell=1.5)
    for b in range(2):
        want = literal_mean_field(unary[b], image[b], params, cell=1.5)
        assert torch.allclose(got[b], want, atol=1e-10)
    # the pairwise terms do change the answer here (the test is not vacuous)
    assert (got - torch.softmax(-unary, dim=1)).abs().max() > 0.05


def test_kernel_matrix_two_pixels_by_hand() -> None:
    image = torch.tensor([[[[0.0, 0.1]], [[0.0, 0.0]], [[0.0, 0.0]]]], dtype=torch.float64)
    p = CRFParams(w_app=2.0, theta_alpha=3.0, theta_beta=10.0, w_smooth=0.5, theta_gamma=1.5)
    k = kernel_matrix(image, p, cell=2.0)
    # positions 2 px apart, colours 25.5 units apart
    want = 2.0 * math.exp(-4 / 18 - 25.5 ** 2 / 200) + 0.5 * math.exp(-4 / 4.5)
    assert k.shape == (1, 2, 2)
    assert k[0, 0, 1].item() == pytest.approx(want, rel=1e-12)
    assert k[0, 1, 0].item() == pytest.approx(want, rel=1e-12)
    assert k[0, 0, 0].item() == 0.0 and k[0, 1, 1].item() == 0.0


def test_zero_pairwise_weight_returns_softmax_of_unaries() -> None:
    g = torch.Generator().manual_seed(0)
    unary = torch.randn(2, 4, 5, 5, generator=g)
    image = torch.rand(2, 3, 5, 5, generator=g)
    for params in (CRFParams(w_app=0.0, w_smooth=0.0), CRFParams(iterations=0)):
        got = mean_field(unary, image, params)
        assert torch.allclose(got, torch.softmax(-unary, dim=1), rtol=0, atol=1e-7)


def test_strong_smoothness_flips_an_isolated_pixel() -> None:
    # 3x3, uniform colour; every pixel prefers label 0 by 2 (psi = (0, 2)) but the centre
    # prefers label 1 by 1 (psi = (1, 0)): alone it is label 1 with Q = sigmoid(1) = 0.731.
    unary = torch.zeros(1, 2, 3, 3, dtype=torch.float64)
    unary[0, 1] = 2.0
    unary[0, :, 1, 1] = torch.tensor([1.0, 0.0], dtype=torch.float64)
    image = torch.full((1, 3, 3, 3), 0.5, dtype=torch.float64)
    alone = mean_field(unary, image, CRFParams(w_app=0.0, w_smooth=0.0))
    assert alone[0, 1, 1, 1].item() == pytest.approx(1 / (1 + math.exp(-1)))
    # smoothness kernel of weight 1 and a width (1000 px) that makes k_ij = 1 for all pairs:
    # after one step the centre's logits are -1 + 8 sigmoid(2) for label 0 and 8 sigmoid(-2)
    # for label 1, so Q_centre(0) = sigmoid(8 (sigmoid(2) - sigmoid(-2)) - 1)
    params = CRFParams(w_app=0.0, w_smooth=1.0, theta_gamma=1000.0, iterations=1)
    q = mean_field(unary, image, params)
    s2 = 1 / (1 + math.exp(-2))
    want = 1 / (1 + math.exp(-(8 * (s2 - (1 - s2)) - 1)))
    assert q[0, 0, 1, 1].item() == pytest.approx(want, rel=1e-6)
    assert q[0, 0, 1, 1].item() > 0.99  # flipped to label 0


def test_appearance_kernel_keeps_a_colour_edge() -> None:
    # left half dark, right half bright; unaries say label 0 on the left, 1 on the right, except
    # one right pixel with weak unaries: the bilateral kernel pulls it to its own colour's label
    unary = torch.zeros(1, 2, 4, 4)
    unary[0, 1, :, :2] = 1.0
    unary[0, 0, :, 2:] = 1.0
    unary[0, :, 1, 2] = 0.0
    image = torch.zeros(1, 3, 4, 4)
    image[:, :, :, 2:] = 1.0
    q = mean_field(unary, image, CRFParams(w_app=1.0, theta_alpha=100.0, theta_beta=10.0,
                                           w_smooth=0.0, iterations=5))
    assert q[0, 1, 1, 2] > 0.95


def test_crf_probabilities_allowed_labels_and_cached_kernels() -> None:
    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(3, 6, 7, 7, generator=g), dim=1)
    image = torch.rand(3, 3, 28, 28, generator=g)
    allowed = torch.zeros(3, 6, dtype=torch.bool)
    allowed[:, 0] = True
    allowed[0, [2, 5]] = True
    allowed[1, 3] = True                       # image 2: background only
    params = CRFParams(w_app=0.5, w_smooth=0.3)
    q = crf_probabilities(probs, image, params, allowed=allowed)
    assert torch.equal(q[~allowed], torch.zeros_like(q[~allowed]))
    assert torch.allclose(q.sum(1), torch.ones(3, 7, 7), atol=1e-6)
    assert torch.equal(q[2, 0], torch.ones(7, 7))
    # the same as forbidding the labels with +inf unaries on the full label set
    small = torch.nn.functional.adaptive_avg_pool2d(image, (7, 7))
    unary = (-probs.log()).masked_fill(~allowed[:, :, None, None], float("inf"))
    want = mean_field(unary, small, params, cell=4.0)
    assert torch.allclose(q, want, atol=1e-6)
    # precomputed kernels (float32 here) give the same
    kernels = image_kernels(image, 7, params, dtype=torch.float32)
    assert torch.allclose(crf_probabilities(probs, image, params, allowed=allowed,
                                            kernel=kernels), q, atol=1e-6)


def test_bad_inputs_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="theta_beta"):
        CRFParams(theta_beta=0.0)
    with pytest.raises(ValueError, match="unary"):
        mean_field(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 4, 4), CRFParams())
    with pytest.raises(ValueError, match="at least one label"):
        crf_probabilities(torch.full((1, 2, 2, 2), 0.5), torch.zeros(1, 3, 4, 4), CRFParams(),
                          allowed=torch.zeros(1, 2, dtype=torch.bool))
