"""Excitation Backprop (MWP) and contrastive MWP (c-MWP): hand-checked numbers on tiny nets, a
slow literal reference (the rule unit by unit, Python loops over explicit connections), the
conservation of probability, K targets in one call, and the operations it refuses."""

from __future__ import annotations

import warnings
from fractions import Fraction as Fr

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import camlens
from camlens import LayerError, TargetError
from camlens.excitation import marginal_winning_probabilities
from models import build, sample

D = torch.float64


def _set(module: nn.Module, **params: list) -> nn.Module:
    with torch.no_grad():
        for name, value in params.items():
            getattr(module, name).copy_(torch.tensor(value, dtype=D))
    return module


def _mwp(model: nn.Module, x: torch.Tensor, layers: list[str], targets: list[int],
         contrastive: bool = False) -> list[torch.Tensor]:
    """Per-unit MWP (B, K, C, h, w) at ``layers`` for the same ``targets`` of every sample."""
    named = dict(model.named_modules())
    idx = torch.tensor([targets] * x.shape[0])
    return marginal_winning_probabilities(model, [x], [(n, named[n]) for n in layers], idx,
                                          contrastive=contrastive)[0]


def _exact(values: list) -> torch.Tensor:
    return torch.tensor([float(v) for v in values], dtype=D)


# -- 1. hand-checked numbers -----------------------------------------------------------------


def conv_linear_net() -> nn.Sequential:
    """A (2 channels x 1 x 2, the explained layer "0") -> 1x1 conv W1 = [[1, -1], [2, 1]],
    b1 = [5, -1] -> ReLU -> flatten -> linear W2 (2 x 4), no bias."""
    conv = _set(nn.Conv2d(2, 2, 1), weight=[[[[1.0]], [[-1.0]]], [[[2.0]], [[1.0]]]],
                bias=[5.0, -1.0])
    fc = _set(nn.Linear(4, 2, bias=False), weight=[[1.0, 1.0, -1.0, 2.0], [-1.0, 1.0, 0.0, 2.0]])
    return nn.Sequential(nn.Identity(), conv, nn.ReLU(), nn.Flatten(), fc).to(D).eval()


# A at positions p0, p1: channel 0 = [1, 2], channel 1 = [3, 1].
A = torch.tensor([[[[1.0, 2.0]], [[3.0, 1.0]]]], dtype=D)
# h0 = a0 - a1 + 5 = [3, 6], h1 = 2 a0 + a1 - 1 = [4, 4]: all > 0, so u = flatten = [3, 6, 4, 4].
# Class 0, W2 row [1, 1, -1, 2], W2^+ = [1, 1, 0, 2]: Z = 3 + 6 + 0 + 8 = 17,
#   P(u) = [3/17, 6/17, 0, 8/17].  Conv W1^+ = [[1, 0], [2, 1]] (biases ignored):
#   h0p0 -> a0p0 all: 3/17;  h0p1 -> a0p1 all: 6/17;
#   h1p1 -> a0p1: 2*2/(2*2 + 1*1) = 4/5 of 8/17 = 32/85, a1p1: 1/5 of 8/17 = 8/85.
#   MWP: a0 = [15/85, 62/85], a1 = [0, 8/85]; map (channel sum) [3/17, 14/17], total 1.
# Dual of class 0, weights [-1, -1, 1, -2], positive part [0, 0, 1, 0]: P(u) = [0, 0, 1, 0];
#   h1p0 -> a0p0: 2*1/(2*1 + 1*3) = 2/5, a1p0: 3/5.  Dual map [1, 0].
#   c-MWP = max([3/17 - 1, 14/17 - 0], 0) = [0, 14/17].
# Class 1, W2 row [-1, 1, 0, 2], W2^+ = [0, 1, 0, 2]: Z = 6 + 8 = 14, P(u) = [0, 3/7, 0, 4/7];
#   h0p1 -> a0p1: 3/7; h1p1 -> a0p1: 4/5 * 4/7 = 16/35, a1p1: 4/35.
#   MWP: a0 = [0, 31/35], a1 = [0, 4/35]; map [0, 1].
# Dual of class 1, positive part [1, 0, 0, 0]: h0p0 -> a0p0 = 1; map [1, 0]; c-MWP [0, 1].
MWP_0 = [[Fr(15, 85), Fr(62, 85)], [0, Fr(8, 85)]]
MWP_1 = [[0, Fr(31, 35)], [0, Fr(4, 35)]]
DUAL_0 = [[Fr(2, 5), 0], [Fr(3, 5), 0]]
DUAL_1 = [[1, 0], [0, 0]]


def test_mwp_and_cmwp_by_hand_on_conv_and_linear() -> None:
    model = conv_linear_net()
    assert model(A).tolist() == [[13.0, 11.0]]  # the activations the comments use
    (got,) = _mwp(model, A, ["0"], [0, 1])
    want = torch.stack([_exact(sum(MWP_0, [])), _exact(sum(MWP_1, []))]).view(1, 2, 2, 1, 2)
    torch.testing.assert_close(got, want, rtol=1e-15, atol=1e-15)
    (contrast,) = _mwp(model, A, ["0"], [0, 1], contrastive=True)
    dual = torch.stack([_exact(sum(DUAL_0, [])), _exact(sum(DUAL_1, []))]).view(1, 2, 2, 1, 2)
    torch.testing.assert_close(contrast, want - dual, rtol=1e-15, atol=1e-15)

    ex = camlens.explain(model, A, method="excitation-backprop", layer="0", target=[0, 1])
    torch.testing.assert_close(ex.raw, _exact([Fr(3, 17), Fr(14, 17), 0, 1]).view(1, 2, 1, 2))
    ex = camlens.explain(model, A, method="cmwp", layer="0", target=[0, 1])
    torch.testing.assert_close(ex.raw, _exact([0, Fr(14, 17), 0, 1]).view(1, 2, 1, 2))
    assert ex.options == {"contrastive": True} and ex.weights is None


def pool_net(pool: nn.Module) -> nn.Sequential:
    fc = _set(nn.Linear(2, 2, bias=False), weight=[[1.0, 2.0], [2.0, -1.0]])
    return nn.Sequential(nn.Identity(), pool, nn.Flatten(), fc).to(D).eval()


# A = [1, 3, 2, 2] (one channel, 1 x 4), windows of 2.
# Max pooling: m = [3, 2]; class 0 (W^+ [1, 2]): Z = 3 + 4 = 7, P(m) = [3/7, 4/7]; each window's
#   maximum takes all, the first one in the tie [2, 2]: MWP [0, 3/7, 4/7, 0].
#   Its dual [-1, -2] has no excitatory weight: Z = 0, all shares 0/0 = 0, so c-MWP = MWP.
#   Class 1 ([2, -1]): P(m) = [1, 0] -> [0, 1, 0, 0]; dual [-2, 1]: P(m) = [0, 1] -> [0, 0, 1, 0];
#   c-MWP = max([0, 1, -1, 0], 0) = [0, 1, 0, 0].
# Average pooling: m = [2, 2]; class 0: Z = 2 + 4 = 6, P(m) = [1/3, 2/3]; shares by activation
#   (not a uniform split): [1/4 * 1/3, 3/4 * 1/3, 1/2 * 2/3, 1/2 * 2/3] = [1/12, 1/4, 1/3, 1/3].
POOL_CASES = {
    "max": (nn.MaxPool2d((1, 2)), [[0, Fr(3, 7), Fr(4, 7), 0], [0, 1, 0, 0]],
            [[0, Fr(3, 7), Fr(4, 7), 0], [0, 1, 0, 0]]),
    "avg": (nn.AvgPool2d((1, 2)), [[Fr(1, 12), Fr(1, 4), Fr(1, 3), Fr(1, 3)], None], None),
}


@pytest.mark.parametrize("kind", list(POOL_CASES))
def test_pooling_by_hand(kind: str) -> None:
    pool, mwp, cmwp = POOL_CASES[kind]
    model, x = pool_net(pool), torch.tensor([[[[1.0, 3.0, 2.0, 2.0]]]], dtype=D)
    ex = camlens.explain(model, x, method="excitation-backprop", layer="0", target=[0, 1])
    torch.testing.assert_close(ex.raw[0, 0, 0], _exact(mwp[0]), rtol=1e-15, atol=1e-15)
    if mwp[1] is not None:
        torch.testing.assert_close(ex.raw[0, 1, 0], _exact(mwp[1]), rtol=1e-15, atol=1e-15)
    if cmwp is not None:
        ex = camlens.explain(model, x, method="cmwp", layer="0", target=[0, 1])
        torch.testing.assert_close(ex.raw[0, :, 0], torch.stack([_exact(c) for c in cmwp]))


class Residual(nn.Module):
    """a (the input, layer "inp") -> b = conv(a) = 2a (layer "conv") -> s = a + b -> linear
    [1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Identity()
        self.conv = _set(nn.Conv2d(1, 1, 1, bias=False), weight=[[[[2.0]]]])
        self.fc = _set(nn.Linear(2, 1, bias=False), weight=[[1.0, 1.0]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.inp(x)
        return self.fc((a + self.conv(a)).flatten(1))


def test_residual_addition_by_hand() -> None:
    # a = [1, 3], b = [2, 6], s = [3, 9]; P(s) = [3/12, 9/12]; each operand takes x_k / s.
    # At "conv" (b): [2/3 * 3/12, 6/9 * 9/12] = [1/6, 1/2]: a's third leaves along the shortcut,
    # which starts below the layer. At "inp" (a): its own share plus all of b's (b's one child):
    # [1/3 * 3/12 + 1/6, 1/3 * 9/12 + 1/2] = [1/4, 3/4], total 1.
    model = Residual().to(D).eval()
    x = torch.tensor([[[[1.0, 3.0]]]], dtype=D)
    at_inp, at_conv = _mwp(model, x, ["inp", "conv"], [0])
    torch.testing.assert_close(at_conv.flatten(), _exact([Fr(1, 6), Fr(1, 2)]))
    torch.testing.assert_close(at_inp.flatten(), _exact([Fr(1, 4), Fr(3, 4)]))


def test_batchnorm_is_folded_into_the_conv_before_it() -> None:
    # a = [1, 2] (2 channels, one pixel); conv W = [[1, -1], [1, 1]] -> h = [-1, 3];
    # BN (eps 0, mean 0, var 1) gamma = [-1, 1], beta = [10, 0] -> y = [11, 3]; ReLU; linear
    # [1, 1]: Z = 14, P(y) = [11/14, 3/14]. Folded weights s W = [[-1, 1], [1, 1]]: unit 0's
    # excitatory child is a1 alone: a1 += 11/14; unit 1: a0 += 1/3 * 3/14, a1 += 2/3 * 3/14.
    # MWP = [1/14, 13/14] (not [12/14, 2/14], what the unfolded W^+ = [[1, 0], [1, 1]] gives).
    conv = _set(nn.Conv2d(2, 2, 1, bias=False), weight=[[[[1.0]], [[-1.0]]], [[[1.0]], [[1.0]]]])
    bn = _set(nn.BatchNorm2d(2, eps=0.0), weight=[-1.0, 1.0], bias=[10.0, 0.0],
              running_mean=[0.0, 0.0], running_var=[1.0, 1.0])
    fc = _set(nn.Linear(2, 1, bias=False), weight=[[1.0, 1.0]])
    model = nn.Sequential(nn.Identity(), conv, bn, nn.ReLU(), nn.Flatten(), fc).to(D).eval()
    x = torch.tensor([[[[1.0]], [[2.0]]]], dtype=D)
    assert model(x).item() == 14.0
    (got,) = _mwp(model, x, ["0"], [0])
    torch.testing.assert_close(got.flatten(), _exact([Fr(1, 14), Fr(13, 14)]))
    # at the conv's own output BN cannot fold across the layer: it passes P through
    (at_conv,) = _mwp(model, x, ["1"], [0])
    torch.testing.assert_close(at_conv.flatten(), _exact([Fr(11, 14), Fr(3, 14)]))


# -- 2. a slow literal reference -------------------------------------------------------------


def _dense(fn, shape: tuple[int, ...]) -> list[list[tuple[int, float]]]:
    """The connections of a linear map: for each output unit i, its (child j, w_ji) with
    w_ji != 0, column j being ``fn`` of the j-th unit vector."""
    n = torch.Size(shape).numel()
    m = fn(torch.eye(n, dtype=D).view(n, *shape)).reshape(n, -1).T.tolist()
    return [[(j, w) for j, w in enumerate(row) if w != 0] for row in m]


def _excite(p_out: list[float], conns: list[list[tuple[int, float]]],
            a: list[float]) -> list[float]:
    """P(a_j) = sum_i P(a_i) a_j w_ji^+ / sum_j' a_j' w_j'i^+, one unit at a time."""
    p_in = [0.0] * len(a)
    for i, p in enumerate(p_out):
        kids = [(j, w) for j, w in conns[i] if w > 0]
        z = sum(a[j] * w for j, w in kids)
        if p == 0 or z == 0:
            continue
        for j, w in kids:
            p_in[j] += p * a[j] * w / z
    return p_in


def _winner(p_out: list[float], a: torch.Tensor, pool: nn.MaxPool2d) -> list[float]:
    """Max pooling: the first maximum of each window takes all of its P."""
    c, h, w = a.shape
    k, s, pad = pool.kernel_size, pool.stride, pool.padding
    assert isinstance(k, int) and isinstance(s, int) and isinstance(pad, int)
    oh, ow = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
    vals, p_in = a.flatten().tolist(), [0.0] * a.numel()
    for ch in range(c):
        for y in range(oh):
            for x in range(ow):
                best = None
                for dy in range(k):
                    for dx in range(k):
                        r, q = y * s - pad + dy, x * s - pad + dx
                        if 0 <= r < h and 0 <= q < w:
                            j = (ch * h + r) * w + q
                            if best is None or vals[j] > vals[best]:
                                best = j
                assert best is not None
                p_in[best] += p_out[(ch * oh + y) * ow + x]
    return p_in


def literal_mwp(seq: nn.Sequential, x: torch.Tensor, target: int, dual: bool = False,
                cache: dict | None = None) -> list[torch.Tensor]:
    """MWP at the output of every module of ``seq`` for one sample x (C, H, W), walking down
    from a one-hot prior on ``target``; ``dual``: the last Linear's weights negated. A
    BatchNorm after a Conv2d passes P to the conv's output and is folded into its weights
    below. ``cache`` keeps the connections (they do not depend on the sample)."""
    cache = {} if cache is None else cache
    acts = [x[None]]
    for m in seq:
        acts.append(m(acts[-1]))
    last_linear = max(i for i, m in enumerate(seq) if isinstance(m, nn.Linear))
    p = [0.0] * acts[-1].numel()
    p[target] = 1.0
    out: list[torch.Tensor] = [torch.empty(0)] * len(seq)
    for i in range(len(seq) - 1, -1, -1):
        out[i] = torch.tensor(p, dtype=D).view(acts[i + 1].shape[1:])
        m, a_in = seq[i], acts[i][0]  # acts[i] is the input of seq[i]
        a, key = a_in.flatten().tolist(), (i, dual and i == last_linear)
        if isinstance(m, nn.Conv2d):
            if key not in cache:
                w = m.weight.detach()
                nxt = seq[i + 1] if i + 1 < len(seq) else None
                if isinstance(nxt, nn.BatchNorm2d):
                    w = w * ((nxt.running_var + nxt.eps).rsqrt() * nxt.weight).view(-1, 1, 1, 1)
                cache[key] = _dense(lambda e, w=w, m=m: F.conv2d(
                    e, w, None, m.stride, m.padding, m.dilation, m.groups), a_in.shape)
            p = _excite(p, cache[key], a)
        elif isinstance(m, nn.Linear):
            if key not in cache:
                w = m.weight.detach() * (-1 if key[1] else 1)
                cache[key] = _dense(lambda e, w=w: e @ w.T, a_in.shape)
            p = _excite(p, cache[key], a)
        elif isinstance(m, nn.MaxPool2d):
            p = _winner(p, a_in, m)
        elif isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            if key not in cache:
                cache[key] = _dense(m, a_in.shape)
            p = _excite(p, cache[key], a)
        else:  # P passes through (BatchNorm: folded into the conv below it)
            assert isinstance(m, (nn.ReLU, nn.Dropout, nn.Flatten, nn.BatchNorm2d)), m
    return out


def vgg_like() -> nn.Sequential:
    """Max pooling, a grouped conv, a BatchNorm with some negative gammas, two FC layers."""
    torch.manual_seed(3)
    seq = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),                      # 0, 1
        nn.Conv2d(4, 6, 3, padding=1, groups=2), nn.ReLU(),            # 2, 3
        nn.MaxPool2d(2),                                               # 4
        nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),   # 5, 6, 7
        nn.MaxPool2d(2),                                               # 8
        nn.Flatten(), nn.Linear(8 * 2 * 2, 10), nn.ReLU(), nn.Dropout(0.5),  # 9-12
        nn.Linear(10, 4),                                              # 13
    ).to(D).eval()
    bn = seq[6]
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.2, -0.7, 0.9, 1.1, -1.3, 0.8, 1.0, 0.6], dtype=D))
        bn.running_mean.normal_(0, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
    return seq


def gap_like() -> nn.Sequential:
    torch.manual_seed(4)
    return nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(),                      # 0, 1
        nn.Conv2d(5, 6, 3, stride=2, padding=1), nn.ReLU(),            # 2, 3
        nn.AvgPool2d(2), nn.Conv2d(6, 7, 1), nn.ReLU(),                # 4, 5, 6
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(7, 3),        # 7, 8, 9
    ).to(D).eval()


REFERENCE_CASES = [(vgg_like, [1, 2, 4, 5, 7, 8]), (gap_like, [1, 3, 4, 6])]


@pytest.mark.parametrize("contrastive", [False, True], ids=["mwp", "cmwp"])
@pytest.mark.parametrize("net,layers", REFERENCE_CASES, ids=["vgg-like", "gap-like"])
def test_matches_the_literal_reference(net, layers: list[int], contrastive: bool) -> None:
    model = net()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(7), dtype=D)
    targets = [0, 2]
    got = _mwp(model, x, [str(i) for i in layers], targets, contrastive=contrastive)
    cache: dict = {}
    for b in range(2):
        for k, t in enumerate(targets):
            want = literal_mwp(model, x[b], t, cache=cache)
            if contrastive:
                dual = literal_mwp(model, x[b], t, dual=True, cache=cache)
                want = [w - d for w, d in zip(want, dual)]
            for layer, mwp in zip(layers, got):
                torch.testing.assert_close(mwp[b, k], want[layer], rtol=1e-6, atol=1e-12,
                                           msg=f"layer {layer}, sample {b}, class {t}")
    assert float(got[0].abs().amax()) > 0


# -- 3. probability is conserved ---------------------------------------------------------------


@pytest.mark.parametrize("arch", ["vgg", "functional", "gap"])
def test_mwp_is_a_distribution_at_every_layer(arch: str) -> None:
    """With non-negative activations above the layer, every unit hands all of its P to its
    children, so the MWP at any layer is >= 0 and sums to the prior's mass, 1 per target.
    (Where a unit's excitatory inputs are all 0, its share is 0/0 and its P is lost; with
    BatchNorm shifts before a residual sum, as in the zoo's ResNet, that P can be negative.)"""
    model = build(arch)
    x = sample(model, batch=2)
    names = [n for n, m in model.named_modules() if n and isinstance(
        m, (nn.Conv2d, nn.ReLU, nn.MaxPool2d)) and not n.startswith(("classifier", "fc"))]
    assert len(names) >= 3, names
    mwp = _mwp(model, x, names, [0, 3])
    for name, m in zip(names, mwp):
        torch.testing.assert_close(m.sum((2, 3, 4)), torch.ones(2, 2, dtype=D), rtol=1e-9,
                                   atol=1e-9, msg=name)
        assert float(m.min()) >= 0, name


# -- 4. K targets in one call ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["excitation-backprop", "cmwp"])
@pytest.mark.parametrize("arch", ["vgg", "resnet", "two_input"])
def test_k_targets_at_once_equal_single_calls(arch: str, method: str) -> None:
    model = build(arch)
    x = sample(model, batch=2)
    targets = torch.tensor([[0, 4, 2], [3, 1, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the two-input net's question is negative in places
        together = camlens.explain(model, x, method=method, layer=model.LAYER, target=targets)
        for k in range(3):
            alone = camlens.explain(model, x, method=method, layer=model.LAYER,
                                    target=targets[:, k])
            torch.testing.assert_close(together.raw[:, k], alone.raw[:, 0], rtol=1e-12,
                                       atol=1e-15)
            torch.testing.assert_close(together.maps[:, k], alone.maps[:, 0])
    assert float(together.raw.amax()) > 0


def test_cmwp_is_the_clamped_difference_of_mwp_and_its_dual() -> None:
    """c-MWP at the layer = max(sum_c (MWP_c - MWP_dual), 0), the dual propagated separately
    with the classifier's weights negated (here by hand, on a copy of the model)."""
    model = build("vgg")
    x = sample(model, batch=2)
    mwp = _mwp(model, x, [model.LAYER], [1, 2])[0].sum(2)
    negated = build("vgg")
    with torch.no_grad():
        negated.classifier[3].weight.neg_()
    dual = _mwp(negated, x, [model.LAYER], [1, 2])[0].sum(2)
    ex = camlens.explain(model, x, method="cmwp", layer=model.LAYER, target=[[1, 2], [1, 2]])
    torch.testing.assert_close(ex.raw, (mwp - dual).clamp(min=0), rtol=1e-12, atol=1e-15)
    assert float((mwp - dual).amin()) < 0 < float(ex.raw.amax())  # the clamp bites


# -- 5. what it refuses --------------------------------------------------------------------------


class Head(nn.Module):
    """conv (the layer) -> ``op`` -> GAP -> linear."""

    def __init__(self, op: nn.Module) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.op = op
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.op(self.conv(x)).mean((2, 3)))


class Gate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class Softmaxed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = Head(nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).softmax(dim=1)


@pytest.mark.parametrize("model,op", [
    (Head(nn.SiLU()), r"torch\.nn\.functional\.silu in module 'op'"),
    (Head(nn.GELU()), r"torch\.nn\.functional\.gelu in module 'op'"),
    (Head(nn.GroupNorm(2, 4)), r"torch\.nn\.functional\.group_norm in module 'op'"),
    (Head(Gate()), r"torch\.sigmoid in module 'op'"),
    (Softmaxed(), r"Tensor\.softmax"),
], ids=["silu", "gelu", "groupnorm", "x*sigmoid(x)", "softmax-output"])
@pytest.mark.parametrize("method", ["excitation-backprop", "cmwp"])
def test_unsupported_operations_are_named(model: nn.Module, op: str, method: str) -> None:
    layer = "net.conv" if isinstance(model, Softmaxed) else "conv"
    with pytest.raises(LayerError, match=op + r".*between layer\(s\) \['" + layer + r"'\].*"
                       r"use method='gradcam' or 'occlusion'"):
        camlens.explain(model.eval(), torch.rand(1, 3, 8, 8), method=method, layer=layer)


def test_product_of_two_path_tensors_is_refused() -> None:
    class Square(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * x

    with pytest.raises(LayerError, match=r"Tensor\.mul in module 'op' \(a product"):
        camlens.explain(Head(Square()).eval(), torch.rand(1, 3, 8, 8),
                        method="excitation-backprop", layer="conv")


def test_cmwp_needs_one_top_layer() -> None:
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv, self.a, self.b = nn.Conv2d(3, 4, 3), nn.Linear(4, 3), nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = F.relu(self.conv(x)).mean((2, 3))
            return self.a(f) + self.b(f)

    class NoHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.relu(self.conv(x)).mean((2, 3))

    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(LayerError, match="computed from several tensors"):
        camlens.explain(TwoHeads().eval(), x, method="cmwp", layer="conv")
    with pytest.raises(LayerError, match="no conv/linear layer lies between"):
        camlens.explain(NoHead().eval(), x, method="cmwp", layer="conv")
    ex = camlens.explain(NoHead().eval(), x, method="excitation-backprop", layer="conv")
    assert float(ex.raw.sum()) == pytest.approx(1.0)  # MWP needs no top layer


def test_callable_targets_and_token_layouts_are_refused() -> None:
    model = build("gap")
    x = sample(model)
    with pytest.raises(TargetError, match="explains class indices only"):
        camlens.explain(model, x, method="cmwp", layer=model.LAYER,
                        target=lambda out: out[:, 0])
    with pytest.raises(LayerError, match="take no reshape"):
        camlens.explain(model, x, method="excitation-backprop", layer=model.LAYER,
                        reshape="channels-last")


def test_warnings_negative_inputs_and_a_second_forward_that_differs() -> None:
    model = build("vgg")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ReLU before every layer: nothing to warn about
        camlens.explain(model, sample(model), method="excitation-backprop", layer=model.LAYER)
    no_relu = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 36, 2)).eval()
    with pytest.warns(UserWarning, match=r"excitation-backprop: \d+ inputs .* are negative"):
        camlens.explain(no_relu, torch.rand(1, 3, 8, 8), method="excitation-backprop",
                        layer="0")

    class Drifts(nn.Module):  # each forward adds a shared counter: the second run differs
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)
            self.runs = [0]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.runs[0] += 1
            return self.fc(F.relu(self.conv(x + self.runs[0])).mean((2, 3)))

    with pytest.warns(UserWarning, match="cmwp: running the model again gave other scores"):
        camlens.explain(Drifts().eval(), torch.rand(1, 3, 8, 8), method="cmwp", layer="conv")
