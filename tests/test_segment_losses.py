"""SEC's losses (camlens.segment.losses): hand-derived values and literal loop versions."""

from __future__ import annotations

import math

import pytest
import torch

from camlens.segment.losses import (
    D_BG,
    D_MINUS,
    D_PLUS,
    constrain_loss,
    expansion_loss,
    gwrp,
    seeding_loss,
)


def literal_gwrp(values: list[float], d: float) -> float:
    ranked = sorted(values, reverse=True)
    num = sum(d ** j * v for j, v in enumerate(ranked))
    return num / sum(d ** j for j in range(len(ranked)))


def literal_seeding(f: torch.Tensor, cues: torch.Tensor) -> float:
    total = 0.0
    for b in range(f.shape[0]):
        s, n = 0.0, 0
        for c in range(f.shape[1]):
            for y in range(f.shape[2]):
                for x in range(f.shape[3]):
                    if cues[b, c, y, x]:
                        s -= math.log(float(f[b, c, y, x]))
                        n += 1
        total += s / n if n else 0.0
    return total / f.shape[0]


def literal_expansion(f: torch.Tensor, present: torch.Tensor) -> float:
    total = 0.0
    for b in range(f.shape[0]):
        def pixels(c: int, b: int = b) -> list[float]:
            return [float(v) for v in f[b, c].flatten()]

        fg = range(1, f.shape[1])
        t = [c for c in fg if present[b, c]]
        a = [c for c in fg if not present[b, c]]
        loss = -sum(math.log(literal_gwrp(pixels(c), D_PLUS)) for c in t) / len(t)
        loss -= sum(math.log(1 - literal_gwrp(pixels(c), D_MINUS)) for c in a) / len(a)
        loss -= math.log(literal_gwrp(pixels(0), D_BG))
        total += loss
    return total / f.shape[0]


def literal_constrain(q: torch.Tensor, f: torch.Tensor) -> float:
    b, n_labels, h, w = f.shape
    total = 0.0
    for i in range(b):
        for y in range(h):
            for x in range(w):
                for c in range(n_labels):
                    qv = float(q[i, c, y, x])
                    if qv > 0:
                        total += qv * math.log(qv / float(f[i, c, y, x]))
    return total / (b * h * w)


def test_gwrp_by_hand() -> None:
    s = torch.tensor([1.0, 3.0, 2.0], dtype=torch.float64)
    # sorted 3, 2, 1 with weights 1, 0.5, 0.25: (3 + 1 + 0.25) / 1.75
    assert gwrp(s, 0.5).item() == pytest.approx(4.25 / 1.75)
    assert gwrp(s, 0.0).item() == 3.0            # d = 0: max
    assert gwrp(s, 1.0).item() == pytest.approx(2.0)  # d = 1: mean
    g = torch.Generator().manual_seed(0)
    many = torch.rand(4, 50, generator=g, dtype=torch.float64)
    got = gwrp(many, D_PLUS)
    for i in range(4):
        assert got[i].item() == pytest.approx(literal_gwrp(many[i].tolist(), D_PLUS), rel=1e-12)
    with pytest.raises(ValueError, match="decay"):
        gwrp(s, 1.5)


def test_seeding_loss_by_hand_and_literal() -> None:
    # one image, 2 labels, 1x2 pixels: cue label 0 at pixel 0, label 1 at pixel 1
    f = torch.tensor([[[[0.8, 0.4]], [[0.2, 0.6]]]], dtype=torch.float64)
    cues = torch.tensor([[[[True, False]], [[False, True]]]])
    want = -(math.log(0.8) + math.log(0.6)) / 2
    assert seeding_loss(f.log(), cues).item() == pytest.approx(want)
    # a second image without cues adds 0 to the batch mean
    f2 = torch.cat([f, f])
    cues2 = torch.cat([cues, torch.zeros_like(cues)])
    assert seeding_loss(f2.log(), cues2).item() == pytest.approx(want / 2)
    g = torch.Generator().manual_seed(1)
    f = torch.softmax(torch.randn(3, 4, 5, 5, generator=g, dtype=torch.float64), dim=1)
    cues = torch.rand(3, 4, 5, 5, generator=g) > 0.8
    assert seeding_loss(f.log(), cues).item() == pytest.approx(literal_seeding(f, cues),
                                                               rel=1e-12)


def test_expansion_loss_by_hand() -> None:
    # labels: background, class a (present), class b (absent); 2 pixels
    f = torch.tensor([[[[0.5, 0.2]], [[0.3, 0.6]], [[0.2, 0.2]]]], dtype=torch.float64)
    present = torch.tensor([[True, True, False]])
    g_a = (0.6 + D_PLUS * 0.3) / (1 + D_PLUS)
    g_b = 0.2                                          # max
    g_bg = (0.5 + D_BG * 0.2) / (1 + D_BG)
    want = -math.log(g_a) - math.log(1 - g_b) - math.log(g_bg)
    assert expansion_loss(f, present).item() == pytest.approx(want, rel=1e-12)


def test_expansion_loss_literal() -> None:
    g = torch.Generator().manual_seed(2)
    f = torch.softmax(torch.randn(2, 6, 4, 4, generator=g, dtype=torch.float64), dim=1)
    present = torch.tensor([[True, False, True, True, False, False],
                            [True, False, False, False, False, True]])
    assert expansion_loss(f, present).item() == pytest.approx(literal_expansion(f, present),
                                                              rel=1e-12)


def test_constrain_loss_by_hand_and_literal() -> None:
    f = torch.full((1, 4, 1, 1), 0.25, dtype=torch.float64)
    q = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64).reshape(1, 4, 1, 1)
    assert constrain_loss(f, q).item() == pytest.approx(math.log(4))   # KL(onehot || uniform)
    assert constrain_loss(f, f).item() == pytest.approx(0.0, abs=1e-15)
    g = torch.Generator().manual_seed(3)
    f = torch.softmax(torch.randn(2, 5, 3, 3, generator=g, dtype=torch.float64), dim=1)
    q = torch.softmax(torch.randn(2, 5, 3, 3, generator=g, dtype=torch.float64) * 3, dim=1)
    q[:, 4] = 0.0                                   # a forbidden label: 0 log 0 = 0
    q = q / q.sum(1, keepdim=True)
    assert constrain_loss(f, q).item() == pytest.approx(literal_constrain(q, f), rel=1e-12)


def test_constrain_loss_gradient_flows_to_f_only() -> None:
    f = torch.full((1, 2, 1, 1), 0.5, dtype=torch.float64, requires_grad=True)
    q = torch.tensor([0.9, 0.1], dtype=torch.float64).reshape(1, 2, 1, 1).requires_grad_()
    constrain_loss(f, q).backward()
    assert q.grad is None
    assert f.grad is not None
    # d/df_c of -sum_c q_c log f_c = -q_c / f_c
    assert torch.allclose(f.grad.flatten(), torch.tensor([-1.8, -0.2], dtype=torch.float64))
