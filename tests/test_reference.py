"""Literal, slow re-implementations of the paper's equations, compared with camlens.

Every reference here is written independently of camlens's machinery (no camlens hooks, no
function modes, no batched backwards): each toy network of ``tests/models.py`` has its forward
pass written out by hand below (``FORWARDS``), with its rectifiers routed through a rectifier
written in this file, and with a "tap" that can cut the graph at a named layer. From that:

- Grad-CAM (Eq. 1-2): one separate ``torch.autograd.grad`` per sample and class, alpha_k^c =
  (1/Z) sum_i sum_j dy^c/dA^k_ij as explicit Python loops over k, i, j, then
  L^c = ReLU(sum_k alpha_k^c A^k), again as loops.
- Guided Backpropagation / Deconvnet: the same hand-written forward with a custom autograd
  rectifier whose backward is the guided (Springenberg et al.) or deconvnet (Zeiler & Fergus)
  rule.
- Occlusion: one forward per window position.
- Hand-derived numbers on fixed-weight toy models, the arithmetic written in comments.

All models and inputs are float64, so agreement is asserted to 1e-6 relative (in practice it is
~1e-15). "Relative" means: max |camlens - reference| <= 1e-6 * max |reference|.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import camlens
from models import (  # tests/models.py, the shared toy-model zoo
    ZOO,
    FunctionalNet,
    GapNet,
    MobileNet,
    ResNetNet,
    TwoInputNet,
    VGGNet,
    build,
    sample,
)

INF = math.inf
RTOL = 1e-6
NAMES = list(ZOO)


# --------------------------------------------------------------------------------------------
# Comparison helpers
# --------------------------------------------------------------------------------------------


def assert_rel(actual: Any, expected: Any, rtol: float = RTOL) -> None:
    """max |actual - expected| <= rtol * max |expected| (shapes must match exactly)."""
    actual = torch.as_tensor(actual).detach().to(torch.float64)
    expected = torch.as_tensor(expected).detach().to(torch.float64)
    assert actual.shape == expected.shape, (tuple(actual.shape), tuple(expected.shape))
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    err = float((actual - expected).abs().max()) if expected.numel() else 0.0
    assert err <= rtol * max(scale, 1e-300), f"max abs error {err:.3e} vs scale {scale:.3e}"


def rel_err(actual: Any, expected: Any) -> float:
    """max |actual - expected| / max |expected|."""
    actual = torch.as_tensor(actual).detach().to(torch.float64)
    expected = torch.as_tensor(expected).detach().to(torch.float64)
    return float((actual - expected).abs().max() / expected.abs().max().clamp(min=1e-300))


def as_inputs(x: Any) -> tuple[torch.Tensor, ...]:
    return x if isinstance(x, tuple) else (x,)


# --------------------------------------------------------------------------------------------
# The rectifier of the references: clamp(x, 0, hi) with a rule for its backward
# --------------------------------------------------------------------------------------------


class RefRectifier(torch.autograd.Function):
    """y = clamp(x, 0, hi). Backward for an incoming gradient g:

    - guided (Guided Backpropagation): g * 1[0 < x < hi] * 1[g > 0]
    - deconv (Deconvnet):              max(g, 0)   (the forward mask is ignored)
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, hi: float, rule: str) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.hi = hi
        ctx.rule = rule
        return x.clamp(min=0) if math.isinf(hi) else x.clamp(0, hi)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        if ctx.rule == "deconv":
            return torch.where(g > 0, g, torch.zeros_like(g)), None, None
        assert ctx.rule == "guided"
        passes = (x > 0) & (x < ctx.hi) & (g > 0)
        return torch.where(passes, g, torch.zeros_like(g)), None, None


Act = Callable[..., torch.Tensor]
Tap = Callable[[str, torch.Tensor], torch.Tensor]


def rectifier(rule: str = "normal", modules_only: bool = False) -> Act:
    """The rectifier the hand-written forwards call as ``act(x, hi, module)``.

    ``module`` says whether the real model applies this rectifier through an ``nn.ReLU``/
    ``nn.ReLU6`` module (True) or a function (False). ``modules_only=True`` applies ``rule``
    only to module rectifiers (what a module-hooking implementation can see), the plain
    rectifier elsewhere.
    """

    def act(x: torch.Tensor, hi: float = INF, module: bool = True) -> torch.Tensor:
        r = rule if (module or not modules_only) else "normal"
        if r == "normal":  # the plain network: torch's own rectifiers and their gradients
            return F.relu(x) if math.isinf(hi) else F.hardtanh(x, 0.0, hi)
        return RefRectifier.apply(x, hi, r)

    return act


def no_tap(name: str, t: torch.Tensor) -> torch.Tensor:
    return t


# --------------------------------------------------------------------------------------------
# The toy networks' forward passes, written out by hand
# --------------------------------------------------------------------------------------------


def conv(x: torch.Tensor, m: nn.Conv2d) -> torch.Tensor:
    return F.conv2d(x, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)


def bn(x: torch.Tensor, m: nn.BatchNorm2d) -> torch.Tensor:
    """Eval-mode batch norm, literally: (x - mean) / sqrt(var + eps) * gamma + beta."""
    shape = (1, -1, 1, 1)
    return ((x - m.running_mean.view(shape)) / torch.sqrt(m.running_var.view(shape) + m.eps)
            * m.weight.view(shape) + m.bias.view(shape))


def linear(x: torch.Tensor, m: nn.Linear) -> torch.Tensor:
    return x @ m.weight.T + m.bias


def fwd_vgg(m: VGGNet, inputs: tuple, act: Act, tap: Tap) -> torch.Tensor:
    (x,) = inputs
    f, c = m.features, m.classifier
    x = tap("features.1", act(conv(x, f[0])))
    x = tap("features.3", act(conv(x, f[2])))
    x = F.max_pool2d(x, 2)
    x = tap("features.6", act(conv(x, f[5])))
    x = tap("features.7", conv(x, f[7]))
    x = tap("features.8", act(x))
    x = F.max_pool2d(x, 2).flatten(1)
    x = act(linear(x, c[0]))  # the fully-connected head's ReLU; Dropout is the identity in eval
    return linear(x, c[3])


def _block(b: nn.Module, x: torch.Tensor, act: Act, tap: Tap, name: str) -> torch.Tensor:
    identity = x if b.downsample is None else bn(conv(x, b.downsample[0]), b.downsample[1])
    out = act(bn(conv(x, b.conv1), b.bn1))
    out = tap(f"{name}.bn2", bn(conv(out, b.conv2), b.bn2))
    return act(out + identity)


def fwd_resnet(m: ResNetNet, inputs: tuple, act: Act, tap: Tap) -> torch.Tensor:
    (x,) = inputs
    x = act(bn(conv(x, m.conv1), m.bn1))
    x = tap("layer1", _block(m.layer1[0], x, act, tap, "layer1.0"))
    x = tap("layer2", _block(m.layer2[0], x, act, tap, "layer2.0"))
    return linear(x.mean(dim=(2, 3)), m.fc)


def fwd_functional(m: FunctionalNet, inputs: tuple, act: Act, tap: Tap) -> torch.Tensor:
    (x,) = inputs
    x = act(conv(x, m.conv1), module=False)                        # F.relu
    x = F.max_pool2d(act(tap("conv2", conv(x, m.conv2)), module=False), 2)  # torch.relu
    x = act(tap("conv3", conv(x, m.conv3)), module=False)          # Tensor.relu_
    x = F.max_pool2d(x, 2).flatten(1)
    return linear(act(linear(x, m.fc1), module=False), m.fc2)      # Tensor.relu


def fwd_mobilenet(m: MobileNet, inputs: tuple, act: Act, tap: Tap) -> torch.Tensor:
    (x,) = inputs
    x = tap("stem", act(bn(conv(x, m.stem[0]), m.stem[1]), 6.0))           # nn.ReLU6
    x = act(bn(conv(x, m.expand1), m.bn_e1), 6.0, module=False)             # F.relu6
    x = act(bn(conv(x, m.dw1), m.bn_d1), 6.0)                               # nn.ReLU6 in place
    x = bn(conv(x, m.project1), m.bn_p1)
    y = act(bn(conv(x, m.expand2), m.bn_e2), 6.0, module=False)             # F.relu6
    y = act(bn(conv(y, m.dw2), m.bn_d2), 6.0, module=False)                 # F.relu6
    x = x + bn(conv(y, m.project2), m.bn_p2)
    x = tap("head", act(bn(conv(x, m.head[0]), m.head[1]), 6.0))            # nn.ReLU6 in place
    return linear(x.mean(dim=(2, 3)), m.classifier)


def fwd_gap(m: GapNet, inputs: tuple, act: Act, tap: Tap) -> torch.Tensor:
    (x,) = inputs
    f = m.features
    x = tap("features.1", act(conv(x, f[0])))
    x = tap("features", act(conv(x, f[2])))
    return linear(x.mean(dim=(2, 3)), m.fc)


def fwd_two_input(m: TwoInputNet, inputs: tuple, act: Act, tap: Tap) -> torch.Tensor:
    image, question = inputs
    gate = torch.tanh(linear(question, m.embed))
    x = tap("body.1", act(conv(image, m.body[0])))
    x = tap("body", act(conv(x, m.body[2])))
    pooled = (x * gate[:, :, None, None]).mean(dim=(2, 3))
    return linear(torch.cat([pooled, question], dim=1), m.answer)


FORWARDS: dict[type, Callable[..., torch.Tensor]] = {
    VGGNet: fwd_vgg,
    ResNetNet: fwd_resnet,
    FunctionalNet: fwd_functional,
    MobileNet: fwd_mobilenet,
    GapNet: fwd_gap,
    TwoInputNet: fwd_two_input,
}


def run_forward(model: nn.Module, inputs: tuple, act: Act | None = None,
                tap: Tap = no_tap) -> torch.Tensor:
    return FORWARDS[type(model)](model, inputs, act or rectifier("normal"), tap)


# --------------------------------------------------------------------------------------------
# The references
# --------------------------------------------------------------------------------------------


def reference_gradcam(
    model: nn.Module, inputs: tuple, layer: str, classes: torch.Tensor, *,
    pooling: str = "gap", relu: bool = True, counterfactual: bool = False,
    rule: str = "normal",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM by the paper's equations, for classes (B, K): returns (L (B,K,h,w), alpha (B,K,C)).

    The hand-written forward is cut at ``layer``: A becomes a leaf, and dy^c/dA is one separate
    ``torch.autograd.grad`` of the single scalar y^c of sample b. ``rule`` is the rectifier
    backward used between A and y (the paper's Table 3 ablation with ``rule="guided"``).
    """
    leaf: dict[str, torch.Tensor] = {}

    def tap(name: str, t: torch.Tensor) -> torch.Tensor:
        if name != layer:
            return t
        leaf["A"] = t.detach().requires_grad_(True)
        return leaf["A"]

    y = run_forward(model, inputs, rectifier(rule), tap)
    A = leaf["A"]
    batch, k_count = classes.shape
    cams = torch.zeros(batch, k_count, A.shape[2], A.shape[3], dtype=torch.float64)
    alphas = torch.zeros(batch, k_count, A.shape[1], dtype=torch.float64)
    for b in range(batch):
        a_b = A[b].detach().tolist()  # A^k_ij as Python floats (float64)
        for kk in range(k_count):
            c = int(classes[b, kk])
            (grad,) = torch.autograd.grad(y[b, c], A, retain_graph=True)
            g = grad[b].tolist()
            channels, h, w = len(g), len(g[0]), len(g[0][0])
            if counterfactual:  # Sec. 3.3: the weights of the negated gradients
                g = [[[-v for v in row] for row in ch] for ch in g]
            z = h * w
            alpha = []
            for k in range(channels):  # Eq. 1
                if pooling == "gap":
                    total = 0.0
                    for i in range(h):
                        for j in range(w):
                            total += g[k][i][j]
                    alpha.append(total / z)
                else:  # global max pooling of the gradients (the pooling ablation)
                    best = -INF
                    for i in range(h):
                        for j in range(w):
                            best = max(best, g[k][i][j])
                    alpha.append(best)
            for i in range(h):  # Eq. 2
                for j in range(w):
                    s = 0.0
                    for k in range(channels):
                        s += alpha[k] * a_b[k][i][j]
                    cams[b, kk, i, j] = max(s, 0.0) if relu else s
            alphas[b, kk] = torch.tensor(alpha, dtype=torch.float64)
    return cams, alphas


def reference_pixel(model: nn.Module, inputs: tuple, classes: torch.Tensor, rule: str,
                    modules_only: bool = False, image_index: int = 0) -> torch.Tensor:
    """dy^c/dx (B, K, 3, H, W) through the hand-written forward with rectifier backward ``rule``
    ("normal": plain gradients; "guided": Guided Backprop; "deconv": Deconvnet), one
    ``autograd.grad`` per sample and class."""
    inputs = list(inputs)
    x = inputs[image_index].detach().clone().requires_grad_(True)
    inputs[image_index] = x
    y = run_forward(model, tuple(inputs), rectifier(rule, modules_only))
    batch, k_count = classes.shape
    out = torch.zeros(batch, k_count, *x.shape[1:], dtype=torch.float64)
    for b in range(batch):
        for kk in range(k_count):
            (grad,) = torch.autograd.grad(y[b, int(classes[b, kk])], x, retain_graph=True)
            out[b, kk] = grad[b]
    return out


def literal_minmax(m: torch.Tensor) -> torch.Tensor:
    """Each (..., h, w) map scaled to [0, 1]; a constant map becomes zeros."""
    out = torch.zeros_like(m)
    flat = m.reshape(-1, m.shape[-2], m.shape[-1])
    res = out.view(-1, m.shape[-2], m.shape[-1])
    for n in range(flat.shape[0]):
        lo, hi = flat[n].min(), flat[n].max()
        if hi > lo:
            res[n] = (flat[n] - lo) / (hi - lo)
    return out


def upsample(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling, align_corners=False (the input-size heatmap of the paper)."""
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    return F.interpolate(m, size=size, mode="bilinear", align_corners=False)


def occlusion_starts(size: int, window: int, stride: int) -> list[int]:
    """Window positions: every ``stride`` pixels while the window fits, plus a last window flush
    with the far edge when the stride does not land there."""
    starts = []
    pos = 0
    while pos + window <= size:
        starts.append(pos)
        pos += stride
    if starts[-1] + window < size:
        starts.append(size - window)
    return starts


def reference_occlusion(model: nn.Module, inputs: tuple, classes: torch.Tensor,
                        window: tuple[int, int], stride: tuple[int, int],
                        fill: float = 0.0) -> torch.Tensor:
    """Mean score drop (B, K, H, W) over the windows covering each pixel, one forward each."""
    image = inputs[0]
    batch, _, height, width = image.shape
    k_count = classes.shape[1]
    total = torch.zeros(batch, k_count, height, width, dtype=torch.float64)
    count = torch.zeros(height, width, dtype=torch.float64)
    with torch.no_grad():
        for s in range(batch):
            one = tuple(t[s:s + 1] for t in inputs)
            base = model(*one)[0]
            for y0 in occlusion_starts(height, window[0], stride[0]):
                for x0 in occlusion_starts(width, window[1], stride[1]):
                    masked = one[0].clone()
                    masked[:, :, y0:y0 + window[0], x0:x0 + window[1]] = fill
                    out = model(masked, *one[1:])[0]
                    for kk in range(k_count):
                        c = int(classes[s, kk])
                        total[s, kk, y0:y0 + window[0], x0:x0 + window[1]] += base[c] - out[c]
                    if s == 0:
                        count[y0:y0 + window[0], x0:x0 + window[1]] += 1
    return total / count


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("one_thread")  # toy models: see conftest.py


_CACHE: dict[str, tuple[nn.Module, tuple]] = {}


def zoo(name: str) -> tuple[nn.Module, tuple]:
    """(model, inputs) for a zoo name, built once per session (camlens leaves models untouched)."""
    if name not in _CACHE:
        model = build(name)
        _CACHE[name] = (model, as_inputs(sample(model, batch=2)))
    return _CACHE[name]


def explain(model: nn.Module, inputs: tuple, **kw: Any) -> camlens.Explanation:
    return camlens.explain(model, inputs if len(inputs) > 1 else inputs[0], **kw)


def all_classes(batch: int, k: int) -> torch.Tensor:
    return torch.arange(k).expand(batch, k)


# --------------------------------------------------------------------------------------------
# The hand-written forwards are the networks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_hand_written_forward_reproduces_the_model(name: str) -> None:
    model, inputs = zoo(name)
    with torch.no_grad():
        expected = model(*inputs)
        for rule in ("normal", "guided", "deconv"):
            assert_rel(run_forward(model, inputs, rectifier(rule)), expected, 1e-12)
    for layer in model.LAYERS:  # every layer the tests cut at is tapped exactly once
        seen = []
        run_forward(model, inputs, tap=lambda n, t, seen=seen: (seen.append(n), t)[1])
        assert seen.count(layer) == 1, (layer, seen)


def test_mobilenet_exercises_the_upper_bound_of_relu6() -> None:
    """Some ReLU6 inputs exceed 6, so its upper bound is part of what the tests check."""
    model, inputs = zoo("mobilenet")
    above = []

    def act(x: torch.Tensor, hi: float = INF, module: bool = True) -> torch.Tensor:
        above.append(int((x > hi).sum()))
        return rectifier()(x, hi, module)

    with torch.no_grad():
        run_forward(model, inputs, act)
    assert sum(above[1:]) > 0


# --------------------------------------------------------------------------------------------
# Grad-CAM
# --------------------------------------------------------------------------------------------

GRADCAM_OPTIONS = [
    {},
    {"pooling": "gmp"},
    {"relu": False},
    {"counterfactual": True},
    {"counterfactual": True, "relu": False},
    {"pooling": "gmp", "counterfactual": True},
]


@pytest.mark.parametrize("options", GRADCAM_OPTIONS, ids=lambda o: "-".join(
    f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("name", NAMES)
def test_gradcam_matches_the_equations_for_every_class(name: str, options: dict) -> None:
    model, inputs = zoo(name)
    batch = inputs[0].shape[0]
    for c in range(5):
        ex = explain(model, inputs, method="gradcam", layer=model.LAYER, target=c, **options)
        cam, alpha = reference_gradcam(model, inputs, model.LAYER,
                                       torch.full((batch, 1), c), **options)
        assert_rel(ex.raw, cam)
        assert_rel(ex.weights, alpha)
        assert ex.targets.tolist() == [[c]] * batch
        with torch.no_grad():
            assert_rel(ex.scores, model(*inputs)[:, c:c + 1], 1e-12)
        # the heatmap: the raw map upsampled (bilinear) to the input and min-max scaled
        size = tuple(inputs[0].shape[-2:])
        assert_rel(ex.maps, literal_minmax(upsample(cam, size)))


@pytest.mark.parametrize("name", NAMES)
def test_counterfactual_with_relu_is_relu_of_minus_the_plain_sum(name: str) -> None:
    """Negating the gradients negates alpha, so the counterfactual map is ReLU(-sum alpha A)."""
    model, inputs = zoo(name)
    plain = explain(model, inputs, layer=model.LAYER, target=1, relu=False)
    counter = explain(model, inputs, layer=model.LAYER, target=1, counterfactual=True)
    assert_rel(counter.weights, -plain.weights, 1e-12)
    assert_rel(counter.raw, (-plain.raw).clamp(min=0), 1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_k_targets_per_sample_from_a_tensor(name: str) -> None:
    model, inputs = zoo(name)
    classes = torch.tensor([[0, 3, 1], [2, 2, 4]])
    ex = explain(model, inputs, layer=model.LAYER, target=classes)
    cam, alpha = reference_gradcam(model, inputs, model.LAYER, classes)
    assert ex.targets.tolist() == classes.tolist()
    assert_rel(ex.raw, cam)
    assert_rel(ex.weights, alpha)
    with torch.no_grad():
        assert_rel(ex.scores, model(*inputs).gather(1, classes), 1e-12)


@pytest.mark.parametrize("method", ["gradcam", "guided-backprop", "deconvnet", "guided-gradcam",
                                    "deconv-gradcam", "occlusion"])
@pytest.mark.parametrize("name", NAMES)
def test_top_k_equals_k_single_calls(name: str, method: str) -> None:
    """top_k=5 (one batched backward) gives the five single-target explanations: the same
    targets, scores and weights bit for bit; the maps to the last bit or so (the K-batched
    weighted sum sum_k alpha_k A^k may round differently, ~1e-16 relative)."""
    model, inputs = zoo(name)
    kw: dict[str, Any] = {"window": 4, "stride": 4} if method == "occlusion" else {}
    if camlens.METHODS[method].needs_layer:
        kw["layer"] = model.LAYER
    ex = explain(model, inputs, method=method, top_k=5, **kw)
    with torch.no_grad():
        assert ex.targets.tolist() == model(*inputs).topk(5, dim=1).indices.tolist()
    for j in range(5):
        single = explain(model, inputs, method=method, target=ex.targets[:, j].tolist(), **kw)
        assert_rel(ex.raw[:, j], single.raw[:, 0], 1e-13)
        assert_rel(ex.maps[:, j], single.maps[:, 0], 1e-6)  # maps are float32
        assert torch.equal(ex.scores[:, j], single.scores[:, 0]), j
        if ex.weights is not None:
            assert torch.equal(ex.weights[:, j], single.weights[:, 0]), j


@pytest.mark.parametrize("name", NAMES)
def test_multi_layer_fusion(name: str) -> None:
    """Fused maps: the mean of the per-layer upsampled, min-max scaled maps, rescaled."""
    model, inputs = zoo(name)
    classes = torch.tensor([[1, 4], [0, 1]])
    ex = explain(model, inputs, layer=list(model.LAYERS), target=classes)
    size = tuple(inputs[0].shape[-2:])
    per_layer = [
        literal_minmax(upsample(reference_gradcam(model, inputs, layer, classes)[0], size))
        for layer in model.LAYERS
    ]
    mean = sum(per_layer) / len(per_layer)
    assert ex.weights is None
    assert ex.raw.shape == (2, 2, *size)
    assert_rel(ex.raw, mean)
    assert_rel(ex.maps, literal_minmax(mean))
    # a single layer's map is not the fused one (the two layers disagree somewhere)
    assert rel_err(per_layer[0], mean) > 1e-3


# --------------------------------------------------------------------------------------------
# Guided Backpropagation and Deconvnet
# --------------------------------------------------------------------------------------------

PIXEL_RULES = {"guided-backprop": "guided", "deconvnet": "deconv"}
# what each net's rectifiers are: nn.ReLU (in place, reused), F.relu & co, nn.ReLU6 + F.relu6
MODULE_ONLY = {"vgg", "resnet", "gap", "two_input"}  # every rectifier is an nn.ReLU module


@pytest.mark.parametrize("method", list(PIXEL_RULES))
@pytest.mark.parametrize("name", NAMES)
def test_pixel_methods_match_the_hand_built_network(name: str, method: str) -> None:
    model, inputs = zoo(name)
    classes = torch.tensor([[0, 2], [4, 2]])
    ex = explain(model, inputs, method=method, target=classes)
    ref = reference_pixel(model, inputs, classes, PIXEL_RULES[method])
    assert_rel(ex.raw, ref)
    assert ex.raw.shape == (2, 2, 3, 16, 16)
    flat = ref.flatten(2)  # signed maps: zero gradient shows as 0.5
    peak = flat.abs().max(-1, keepdim=True).values
    assert_rel(ex.maps, (0.5 + 0.5 * flat / peak).view_as(ref), 1e-6)
    # the rule changes something: the result is not the plain input gradient
    assert rel_err(ex.raw, reference_pixel(model, inputs, classes, "normal")) > 1e-3


@pytest.mark.parametrize("method", list(PIXEL_RULES))
@pytest.mark.parametrize("name", NAMES)
def test_pixel_methods_via_module_hooks(name: str, method: str) -> None:
    """``rectifiers="modules"`` hooks nn.ReLU / nn.ReLU6 modules only. Where every rectifier is
    a module it equals the full reference; where some are functions (F.relu, torch.relu,
    Tensor.relu_, F.relu6) it cannot see those: it then equals the reference with the rule
    applied to the module rectifiers only, and differs from the full reference (documented
    limitation of the fallback)."""
    model, inputs = zoo(name)
    classes = torch.tensor([[0, 2], [4, 2]])
    rule = PIXEL_RULES[method]
    no_module = name == "functional"  # every rectifier is a function: the hooks see none
    with (pytest.warns(UserWarning, match="no nn.ReLU or nn.ReLU6 module") if no_module
          else contextlib.nullcontext()):
        ex = explain(model, inputs, method=method, target=classes, rectifiers="modules")
    full = reference_pixel(model, inputs, classes, rule)
    if name in MODULE_ONLY:
        assert_rel(ex.raw, full)
    else:
        assert_rel(ex.raw, reference_pixel(model, inputs, classes, rule, modules_only=True))
        assert rel_err(ex.raw, full) > 1e-2
        if no_module:  # plain input gradients
            assert_rel(ex.raw, reference_pixel(model, inputs, classes, "normal"))


# --------------------------------------------------------------------------------------------
# Guided Grad-CAM (and its Deconvnet twin)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fused,pixel", [("guided-gradcam", "guided-backprop"),
                                         ("deconv-gradcam", "deconvnet")])
@pytest.mark.parametrize("name", NAMES)
def test_guided_gradcam_is_the_product(name: str, fused: str, pixel: str) -> None:
    model, inputs = zoo(name)
    classes = torch.tensor([[3, 0], [1, 3]])
    size = tuple(inputs[0].shape[-2:])
    ex = explain(model, inputs, method=fused, layer=model.LAYER, target=classes)
    # from two separate camlens calls
    gb = explain(model, inputs, method=pixel, target=classes)
    gc = explain(model, inputs, method="gradcam", layer=model.LAYER, target=classes)
    # The paper (Sec. 3.2): L^c is "first upsampled ... using bilinear interpolation", then
    # multiplied point-wise; no scaling in between.
    heat = F.interpolate(gc.raw, size=size, mode="bilinear", align_corners=False)
    assert_rel(ex.raw, gb.raw * heat[:, :, None])
    assert_rel(ex.weights, gc.weights, 1e-12)
    # and from the literal references
    cam, _ = reference_gradcam(model, inputs, model.LAYER, classes)
    ref = reference_pixel(model, inputs, classes, PIXEL_RULES[pixel])
    assert_rel(ex.raw, ref * upsample(cam, size)[:, :, None])


# --------------------------------------------------------------------------------------------
# backward="guided": the paper's ablation (Table 3), guided rectifiers only after the layer
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,layer", [("vgg", "features.8"), ("vgg", "features.3"),
                                        ("resnet", "layer1"), ("functional", "conv2"),
                                        ("mobilenet", "stem")])
@pytest.mark.parametrize("backward", ["guided", "deconv"])
def test_backward_rule_applies_to_the_rectifiers_after_the_layer(
    name: str, layer: str, backward: str
) -> None:
    model, inputs = zoo(name)
    classes = torch.tensor([[0, 1], [2, 4]])
    ex = explain(model, inputs, layer=layer, target=classes, backward=backward)
    cam, alpha = reference_gradcam(model, inputs, layer, classes, rule=backward)
    assert_rel(ex.raw, cam)
    assert_rel(ex.weights, alpha)
    normal, _ = reference_gradcam(model, inputs, layer, classes)
    assert rel_err(cam, normal) > 1e-3  # the tail has rectifiers, so the ablation matters


def test_backward_guided_via_modules_on_the_vgg_head() -> None:
    """rectifiers="modules" with the layer a conv (features.7) whose output the in-place ReLU
    module features.8 then rectifies: the guided rule reaches the fc head's ReLU module."""
    model, inputs = zoo("vgg")
    classes = torch.tensor([[0, 1], [2, 4]])
    ex = explain(model, inputs, layer="features.7", target=classes, backward="guided",
                 rectifiers="modules")
    cam, alpha = reference_gradcam(model, inputs, "features.7", classes, rule="guided")
    assert_rel(ex.raw, cam)
    assert_rel(ex.weights, alpha)


@pytest.mark.parametrize("method,options", [("gradcam", {"backward": "guided"}),
                                            ("gradcam", {"backward": "deconv"}),
                                            ("guided-gradcam", {}),
                                            ("deconv-gradcam", {})])
def test_modules_rectifiers_when_the_layer_is_a_relu_module(method: str,
                                                                 options: dict) -> None:
    # The explained layer is itself a hooked rectifier module: its rectifier hook must run before
    # the capture hook, or the captured activation falls off the graph (a bug found and fixed).
    model, inputs = zoo("vgg")  # VGGNet.LAYER = "features.8" is an nn.ReLU(inplace=True)
    classes = torch.tensor([[0, 1], [2, 4]])
    via_functions = explain(model, inputs, method=method, layer="features.8", target=classes,
                            **options)
    via_modules = explain(model, inputs, method=method, layer="features.8", target=classes,
                          rectifiers="modules", **options)
    assert_rel(via_modules.raw, via_functions.raw)


# --------------------------------------------------------------------------------------------
# CAM is Grad-CAM times Z on a GAP + linear head (Sec. 3.1)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gap", "resnet", "mobilenet"])
def test_cam_identity(name: str) -> None:
    """y^c = sum_k w_k^c (1/Z) sum_ij A^k_ij + b^c, so alpha_k^c = w_k^c / Z and
    CAM = sum_k w_k^c A^k = Z * Grad-CAM (relu=False); with the ReLU on both, still Z times."""
    model, inputs = zoo(name)
    classes = torch.tensor([[0, 1, 2, 3, 4]] * 2)
    for relu in (False, True):
        cam = explain(model, inputs, method="cam", layer=model.LAYER, target=classes, relu=relu)
        gc = explain(model, inputs, method="gradcam", layer=model.LAYER, target=classes,
                     relu=relu)
        z = gc.raw.shape[-1] * gc.raw.shape[-2]
        assert z == 64
        assert_rel(cam.raw, z * gc.raw)
        assert_rel(cam.weights, z * gc.weights)
        assert_rel(cam.maps, gc.maps)
    # CAM itself, literally: the classifier's weights times the feature maps
    fc = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    ref, _ = reference_gradcam(model, inputs, model.LAYER, classes, relu=False)
    cam = explain(model, inputs, method="cam", layer=model.LAYER, target=classes, relu=False)
    assert_rel(cam.weights, fc.weight.detach()[classes])
    assert_rel(cam.raw, 64 * ref)


# --------------------------------------------------------------------------------------------
# Occlusion
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("window,stride,fill", [
    (4, 4, 0.0),            # windows tile the 16x16 image exactly
    (5, 3, 0.0),            # 3 does not divide 16 - 5: a last window flush with the edge
    ((3, 5), (2, 4), 0.5),  # rectangular, both axes need the flush window, another fill
])
@pytest.mark.parametrize("name", NAMES)
def test_occlusion_matches_one_forward_per_window(name: str, window: Any, stride: Any,
                                                  fill: float) -> None:
    model, inputs = zoo(name)
    classes = torch.tensor([[0, 3], [4, 1]])
    ex = explain(model, inputs, method="occlusion", target=classes, window=window,
                 stride=stride, fill=fill, batch_size=7)
    win = (window, window) if isinstance(window, int) else window
    std = (stride, stride) if isinstance(stride, int) else stride
    ref = reference_occlusion(model, inputs, classes, win, std, fill)
    assert_rel(ex.raw, ref)
    assert_rel(ex.maps, literal_minmax(ref))


def test_occlusion_window_positions() -> None:
    assert occlusion_starts(16, 4, 4) == [0, 4, 8, 12]
    assert occlusion_starts(16, 5, 3) == [0, 3, 6, 9, 11]  # 11 = 16 - 5: the flush window
    assert occlusion_starts(16, 3, 2) == [0, 2, 4, 6, 8, 10, 12, 13]
    assert occlusion_starts(16, 5, 4) == [0, 4, 8, 11]
    from camlens.methods.occlusion import window_starts

    for size, window, stride in [(16, 4, 4), (16, 5, 3), (16, 3, 2), (16, 5, 4), (7, 7, 3),
                                 (9, 2, 5)]:
        assert window_starts(size, window, stride) == occlusion_starts(size, window, stride)


# --------------------------------------------------------------------------------------------
# Hand-derived numbers on fixed-weight toy models
# --------------------------------------------------------------------------------------------


class IdentityGapLinear(nn.Module):
    """A = x (a 1x1 identity conv, the layer ``ident``), then GAP, then a hand-set linear layer:

        y^0 = 1.0 * mean(A^0) - 2.0 * mean(A^1)
        y^1 = 0.5 * mean(A^0) + 1.0 * mean(A^1) + 0.25
    """

    def __init__(self) -> None:
        super().__init__()
        self.ident = nn.Conv2d(2, 2, 1, bias=False)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.ident.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 1.0]]))
            self.fc.bias.copy_(torch.tensor([0.0, 0.25]))
        self.double().eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.ident(x).mean(dim=(2, 3)))


HAND_X = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]],     # A^0
                        [[4.0, 0.0], [0.0, 1.0]]]],   # A^1
                      dtype=torch.float64)


def test_hand_derived_gradcam() -> None:
    model = IdentityGapLinear()
    # Z = 2 * 2 = 4. dy^c/dA^k_ij = w_k^c / Z for every (i, j), so
    # alpha_k^c = (1/Z) sum_ij w_k^c / Z = w_k^c / 4:
    #   class 0: alpha = (1/4, -2/4) = (0.25, -0.5)
    #   class 1: alpha = (0.5/4, 1/4) = (0.125, 0.25)
    # Scores: mean(A^0) = 10/4 = 2.5, mean(A^1) = 5/4 = 1.25
    #   y^0 = 2.5 - 2 * 1.25 = 0.0,  y^1 = 0.5 * 2.5 + 1.25 + 0.25 = 2.75
    # Maps, sum_k alpha_k A^k:
    #   class 0: 0.25*[[1,2],[3,4]] - 0.5*[[4,0],[0,1]] = [[-1.75, 0.5], [0.75, 0.5]]
    #            ReLU -> [[0, 0.5], [0.75, 0.5]]
    #   class 1: 0.125*[[1,2],[3,4]] + 0.25*[[4,0],[0,1]] = [[1.125, 0.25], [0.375, 0.75]]
    # Heatmaps (already at input size; min-max scaled):
    #   class 0: [[0, 0.5/0.75], [1, 0.5/0.75]] = [[0, 2/3], [1, 2/3]]
    #   class 1: (v - 0.25) / 0.875 -> [[1, 0], [0.125/0.875, 0.5/0.875]] = [[1, 0], [1/7, 4/7]]
    ex = camlens.explain(model, HAND_X, layer="ident", target=[0, 1])
    assert ex.targets.tolist() == [[0, 1]]
    assert ex.weights.tolist() == [[[0.25, -0.5], [0.125, 0.25]]]
    assert ex.scores.tolist() == [[0.0, 2.75]]
    assert ex.raw.tolist() == [[[[0.0, 0.5], [0.75, 0.5]], [[1.125, 0.25], [0.375, 0.75]]]]
    expected_maps = torch.tensor([[[[0, 2 / 3], [1, 2 / 3]], [[1, 0], [1 / 7, 4 / 7]]]])
    assert_rel(ex.maps, expected_maps, 1e-7)
    # without the ReLU, class 0 keeps its negative corner
    ex = camlens.explain(model, HAND_X, layer="ident", target=0, relu=False)
    assert ex.raw.tolist() == [[[[-1.75, 0.5], [0.75, 0.5]]]]
    # counterfactual: alpha = -(0.25, -0.5) = (-0.25, 0.5); map ReLU(-[[-1.75,.5],[.75,.5]])
    ex = camlens.explain(model, HAND_X, layer="ident", target=0, counterfactual=True)
    assert ex.weights.tolist() == [[[-0.25, 0.5]]]
    assert ex.raw.tolist() == [[[[1.75, 0.0], [0.0, 0.0]]]]
    # the gradient is constant over (i, j), so global max pooling gives the same alpha
    ex = camlens.explain(model, HAND_X, layer="ident", target=1, pooling="gmp")
    assert ex.weights.tolist() == [[[0.125, 0.25]]]
    # CAM: w^c (not divided by Z): class 1 map = 4 * [[1.125,.25],[.375,.75]]
    ex = camlens.explain(model, HAND_X, method="cam", layer="ident", target=1)
    assert ex.weights.tolist() == [[[0.5, 1.0]]]
    assert ex.raw.tolist() == [[[[4.5, 1.0], [1.5, 3.0]]]]


class Square(nn.Module):
    """A = x (identity conv ``ident``), y = sum_ij (A^0_ij)^2 / 2: dy/dA^0_ij = A^0_ij."""

    def __init__(self) -> None:
        super().__init__()
        self.ident = nn.Conv2d(1, 1, 1, bias=False)
        with torch.no_grad():
            self.ident.weight.fill_(1.0)
        self.double().eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.ident(x)
        return (a * a).sum(dim=(1, 2, 3))[:, None] / 2


def test_hand_derived_gap_vs_gmp() -> None:
    model = Square()
    x = torch.tensor([[[[1.0, -2.0], [3.0, 0.0]]]], dtype=torch.float64)
    # gradient = A = [[1, -2], [3, 0]]
    # GAP: alpha = (1 - 2 + 3 + 0) / 4 = 0.5 -> map ReLU(0.5 * A) = [[0.5, 0], [1.5, 0]]
    # GMP: alpha = max = 3          -> map ReLU(3 * A)   = [[3, 0], [9, 0]]
    ex = camlens.explain(model, x, layer="ident", target=0)
    assert ex.weights.tolist() == [[[0.5]]]
    assert ex.raw.tolist() == [[[[0.5, 0.0], [1.5, 0.0]]]]
    ex = camlens.explain(model, x, layer="ident", target=0, pooling="gmp")
    assert ex.weights.tolist() == [[[3.0]]]
    assert ex.raw.tolist() == [[[[3.0, 0.0], [9.0, 0.0]]]]
    # counterfactual GMP: max of the negated gradient = max(-1, 2, -3, 0) = 2
    ex = camlens.explain(model, x, layer="ident", target=0, pooling="gmp", counterfactual=True)
    assert ex.weights.tolist() == [[[2.0]]]
    assert ex.raw.tolist() == [[[[2.0, 0.0], [6.0, 0.0]]]]


class LinearImage(nn.Module):
    """y^c = sum_ij W^c_ij x_ij on a one-channel image (no bias)."""

    def __init__(self, weights: list) -> None:
        super().__init__()
        w = torch.tensor(weights, dtype=torch.float64)
        self.fc = nn.Linear(w[0].numel(), w.shape[0], bias=False).double()
        with torch.no_grad():
            self.fc.weight.copy_(w.flatten(1))
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_hand_derived_occlusion_2x2() -> None:
    # W^0 = [[1, 2], [3, 4]], W^1 = [[-1, 0], [0, 1]], x = [[1, 1], [2, -1]], fill 0.
    model = LinearImage([[[1, 2], [3, 4]], [[-1, 0], [0, 1]]])
    x = torch.tensor([[[[1.0, 1.0], [2.0, -1.0]]]], dtype=torch.float64)
    # y^0 = 1 + 2 + 6 - 4 = 5, y^1 = -1 + 0 + 0 - 1 = -2.
    # window 1, stride 1: each pixel is its own window; masking it drops y by W_ij x_ij:
    #   class 0: [[1, 2], [6, -4]]; class 1: [[-1, 0], [0, -1]]
    ex = camlens.explain(model, x, method="occlusion", target=[0, 1], window=1, stride=1)
    assert ex.scores.tolist() == [[5.0, -2.0]]
    assert ex.raw.tolist() == [[[[1.0, 2.0], [6.0, -4.0]], [[-1.0, 0.0], [0.0, -1.0]]]]
    # window (2, 1): two windows, the columns. Column sums of W^0 x: 1 + 6 = 7, 2 - 4 = -2.
    ex = camlens.explain(model, x, method="occlusion", target=0, window=(2, 1), stride=1)
    assert ex.raw.tolist() == [[[[7.0, -2.0], [7.0, -2.0]]]]
    # window 2 (the whole image): every pixel gets the full drop y^0 - 0 = 5.
    ex = camlens.explain(model, x, method="occlusion", target=0, window=2, stride=1)
    assert ex.raw.tolist() == [[[[5.0, 5.0], [5.0, 5.0]]]]


def test_hand_derived_occlusion_with_flush_window() -> None:
    # 3x3 image, W x = P = [[1,2,3],[4,5,6],[7,8,9]] (x = 1), window 2, stride 2.
    # Starts per axis: 0, then 2 would overflow, so the flush window at 3 - 2 = 1: {0, 1}.
    # Window drops (sum of P over the window): (0,0): 1+2+4+5 = 12, (0,1): 2+3+5+6 = 16,
    #   (1,0): 4+5+7+8 = 24, (1,1): 5+6+8+9 = 28.
    # Pixel mean over the covering windows:
    #   corners: 12, 16, 24, 28; edges: (12+16)/2 = 14, (12+24)/2 = 18, (16+28)/2 = 22,
    #   (24+28)/2 = 26; centre: (12+16+24+28)/4 = 20.
    model = LinearImage([[[1, 2, 3], [4, 5, 6], [7, 8, 9]]])
    x = torch.ones(1, 1, 3, 3, dtype=torch.float64)
    ex = camlens.explain(model, x, method="occlusion", target=0, window=2, stride=2)
    assert ex.raw.tolist() == [[[[12.0, 14.0, 16.0], [18.0, 20.0, 22.0], [24.0, 26.0, 28.0]]]]
    # heatmap: (v - 12) / 16
    assert_rel(ex.maps, (ex.raw - 12) / 16, 1e-7)


class TwoReLU(nn.Module):
    """y = v . relu(U x) with hand-set U, v on a 1x1x1x2 "image": checks the guided rules.

    U = [[1, -1], [2, 1]], v = [1, -3], x = (2, 1):  U x = (1, 5), both rectifiers open.
    """

    def __init__(self, relu: nn.Module) -> None:
        super().__init__()
        self.u = nn.Linear(2, 2, bias=False)
        self.v = nn.Linear(2, 1, bias=False)
        self.relu = relu
        with torch.no_grad():
            self.u.weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 1.0]]))
            self.v.weight.copy_(torch.tensor([[1.0, -3.0]]))
        self.double().eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.v(self.relu(self.u(x.flatten(1))))


@pytest.mark.parametrize("relu", [nn.ReLU(), nn.ReLU6()], ids=["relu", "relu6"])
def test_hand_derived_guided_and_deconv(relu: nn.Module) -> None:
    x = torch.tensor([[[[2.0, 1.0]]]], dtype=torch.float64)
    model = TwoReLU(relu)
    # Gradient reaching the rectifiers' outputs: v = (1, -3); both inputs (1, 5) are in (0, 6).
    # plain:  dy/dx = U^T (v * 1[open]) = U^T (1, -3) = (1*1 + 2*-3, -1*1 + 1*-3) = (-5, -4)
    # guided: only positive gradient passes: (1, 0) -> U^T (1, 0) = (1, -1)
    # deconv: max(v, 0) = (1, 0) -> (1, -1) as well here
    gb = camlens.explain(model, x, method="guided-backprop", target=0)
    assert gb.raw.flatten().tolist() == [1.0, -1.0]
    dc = camlens.explain(model, x, method="deconvnet", target=0)
    assert dc.raw.flatten().tolist() == [1.0, -1.0]
    # x = (-1, 1): U x = (-2, -1), both closed. guided/plain: 0; deconv ignores the mask:
    # U^T (1, 0) = (1, -1).
    x = torch.tensor([[[[-1.0, 1.0]]]], dtype=torch.float64)
    gb = camlens.explain(model, x, method="guided-backprop", target=0)
    assert gb.raw.flatten().tolist() == [0.0, 0.0]
    dc = camlens.explain(model, x, method="deconvnet", target=0)
    assert dc.raw.flatten().tolist() == [1.0, -1.0]
    # x = (4, 1): U x = (3, 9): the second unit is above 6, closed for ReLU6 only.
    # ReLU: guided (1, 0) -> (1, -1); ReLU6 the same (the negative gradient is cut anyway),
    # plain: ReLU: U^T (1, -3) = (-5, -4); ReLU6: U^T (1, 0) = (1, -1).
    x = torch.tensor([[[[4.0, 1.0]]]], dtype=torch.float64)
    gb = camlens.explain(model, x, method="guided-backprop", target=0)
    assert gb.raw.flatten().tolist() == [1.0, -1.0]
    # x = (8, 1): U x = (7, 17): for ReLU6 both units are saturated (closed), for ReLU open.
    # guided: ReLU (1, 0) -> (1, -1); ReLU6: nothing passes -> (0, 0).
    # deconv ignores the forward mask: (1, -1) for both.
    x = torch.tensor([[[[8.0, 1.0]]]], dtype=torch.float64)
    gb = camlens.explain(model, x, method="guided-backprop", target=0)
    expected = [1.0, -1.0] if isinstance(relu, nn.ReLU) else [0.0, 0.0]
    assert gb.raw.flatten().tolist() == expected
    dc = camlens.explain(model, x, method="deconvnet", target=0)
    assert dc.raw.flatten().tolist() == [1.0, -1.0]
