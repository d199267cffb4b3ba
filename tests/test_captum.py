"""Agreement with captum 0.9.0 (LayerGradCam, GuidedBackprop, Deconvolution, Occlusion).

On float64 toy models (tests/models.py) camlens and captum agree to 1e-5 relative (in fact to
the last bit for the gradient methods) on: a VGG-style net with a fully-connected head and
in-place ReLU modules, a ResNet-style net that reuses ONE in-place ReLU module several times per
block, a net with functional rectifiers only (F.relu, torch.relu, Tensor.relu_, Tensor.relu),
a MobileNet-style net with nn.ReLU6 modules and F.relu6, and a GAP + linear net.

Where captum is wrong, the test asserts that camlens agrees with the literal reference of
tests/test_reference.py instead, AND that captum differs from camlens, describing what captum
computes:

- ``GuidedBackprop`` / ``Deconvolution`` hook ``nn.ReLU`` modules only (captum's own docstring
  warns about it). On the F.relu net and on the ReLU6 net (ReLU6 is an nn.Hardtanh, not an
  nn.ReLU) captum silently returns the PLAIN input gradient: measured relative difference from
  the true guided/deconv gradient 1.3 to 3.6, and from the plain gradient ~1e-16.
- ``Occlusion`` returns float32 attributions for a float64 model (it divides
  ``single_attrib.float() / weight``): agreement is ~1e-7 relative, not 1e-15.
- ``Occlusion`` with a stride that does not tile the input ends with a window truncated at the
  far edge, where camlens adds a full window flush with the edge: the maps then differ near
  that edge (this is a convention, not a bug of either; the tiled cases agree).

``LayerGradCam`` is right on every layer tried, including layers followed by in-place
operations (captum clones the layer output in its hook, as camlens does).
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

captum_attr = pytest.importorskip("captum.attr")

from test_reference import (  # noqa: E402  (the literal references, tests/test_reference.py)
    assert_rel,
    explain,
    reference_gradcam,
    reference_occlusion,
    reference_pixel,
    rel_err,
    zoo,
)

CAPTUM_RTOL = 1e-5
ARCHS = ["vgg", "resnet", "functional", "mobilenet", "gap"]
# nets whose every rectifier is an nn.ReLU module: the only ones captum's guided methods handle
CAPTUM_SEES_ALL_RECTIFIERS = {"vgg", "resnet", "gap"}
TARGETS = [[0, 3], [1, 1], [2, 4], [4, 0]]  # one class per sample, batch of 2


pytestmark = pytest.mark.usefixtures("one_thread")  # toy models: see conftest.py


def module(model: torch.nn.Module, name: str) -> torch.nn.Module:
    return dict(model.named_modules())[name]


def quiet(fn: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
    """Run a captum call without its informational warnings (hooks set, grads required)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# --------------------------------------------------------------------------------------------
# LayerGradCam
# --------------------------------------------------------------------------------------------

GRADCAM_LAYERS = [
    ("vgg", "features.8"),       # the last rectified conv map (an in-place nn.ReLU module)
    ("vgg", "features.7"),       # a conv followed by an in-place nn.ReLU
    ("vgg", "features.3"),
    ("resnet", "layer2"),
    ("resnet", "layer1"),
    ("resnet", "layer2.0.bn2"),  # followed by an in-place `+= identity` and an in-place ReLU
    ("functional", "conv3"),     # followed by Tensor.relu_()
    ("functional", "conv2"),
    ("mobilenet", "head"),       # ends with an in-place nn.ReLU6
    ("mobilenet", "stem"),
    ("gap", "features"),
]


@pytest.mark.parametrize("name,layer", GRADCAM_LAYERS)
def test_layer_gradcam_agrees(name: str, layer: str) -> None:
    model, inputs = zoo(name)
    (x,) = inputs
    gc = captum_attr.LayerGradCam(model, module(model, layer))
    for target in TARGETS:
        ours = explain(model, inputs, method="gradcam", layer=layer, target=target)
        theirs = quiet(gc.attribute, x, target=target, relu_attributions=True)
        assert theirs.shape == ours.raw.shape  # (B, 1, h, w)
        assert_rel(ours.raw, theirs, CAPTUM_RTOL)
        # and both are the paper's equations (captum is right here, in-place ops included)
        cam, _ = reference_gradcam(model, inputs, layer, torch.tensor(target)[:, None])
        assert_rel(theirs, cam)


@pytest.mark.parametrize("relu", [True, False])
def test_layer_gradcam_two_inputs(relu: bool) -> None:
    model, inputs = zoo("two_input")
    image, question = inputs
    gc = captum_attr.LayerGradCam(model, module(model, model.LAYER))
    for target in TARGETS:
        ours = explain(model, inputs, layer=model.LAYER, target=target, relu=relu)
        theirs = quiet(gc.attribute, image, target=target, additional_forward_args=(question,),
                       relu_attributions=relu)
        assert_rel(ours.raw, theirs, CAPTUM_RTOL)


# --------------------------------------------------------------------------------------------
# GuidedBackprop and Deconvolution
# --------------------------------------------------------------------------------------------

PIXEL = {
    "guided-backprop": ("GuidedBackprop", "guided"),
    "deconvnet": ("Deconvolution", "deconv"),
}


@pytest.mark.parametrize("method", list(PIXEL))
@pytest.mark.parametrize("name", ARCHS)
def test_guided_backprop_and_deconvolution(name: str, method: str) -> None:
    model, inputs = zoo(name)
    (x,) = inputs
    cls, rule = PIXEL[method]
    attr = getattr(captum_attr, cls)(model)
    for target in TARGETS:
        ours = explain(model, inputs, method=method, target=target).raw[:, 0]
        theirs = quiet(attr.attribute, x, target=target)
        classes = torch.tensor(target)[:, None]
        if name in CAPTUM_SEES_ALL_RECTIFIERS:
            # includes the ResNet's one in-place ReLU module reused twice per block
            assert_rel(ours, theirs, CAPTUM_RTOL)
        else:
            # CAPTUM IS WRONG HERE: it hooks nn.ReLU modules only, so F.relu / torch.relu /
            # Tensor.relu_ and nn.ReLU6 / F.relu6 keep their plain backward and captum returns
            # the plain input gradient. camlens equals the literal reference instead.
            assert_rel(ours, reference_pixel(model, inputs, classes, rule)[:, 0])
            plain = reference_pixel(model, inputs, classes, "normal")[:, 0]
            assert_rel(theirs, plain, 1e-12)
            assert rel_err(theirs, ours) > 0.5


# --------------------------------------------------------------------------------------------
# Occlusion
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("window,stride", [(4, 4), (6, 2), (2, 2)])  # all tile 16 exactly
@pytest.mark.parametrize("name", ARCHS)
def test_occlusion_agrees_when_windows_tile_the_image(name: str, window: int,
                                                      stride: int) -> None:
    model, inputs = zoo(name)
    (x,) = inputs
    assert (16 - window) % stride == 0
    occ = captum_attr.Occlusion(model)
    for target in TARGETS[:2]:
        ours = explain(model, inputs, method="occlusion", target=target, window=window,
                       stride=stride)
        theirs = quiet(occ.attribute, x, sliding_window_shapes=(3, window, window),
                       strides=(3, stride, stride), target=target, baselines=0)
        # captum's attribution is the same for the 3 channels (one window spans them all)
        assert_rel(ours.raw[:, 0:1].expand_as(theirs), theirs, CAPTUM_RTOL)
    # captum downcasts to float32 (`single_attrib.float() / weight`): ~1e-7, not 1e-15
    assert theirs.dtype == torch.float32
    assert rel_err(theirs[:, :1], ours.raw[:, :1]) < 1e-6


def test_occlusion_edge_convention_differs_when_the_stride_does_not_tile() -> None:
    """Window 5, stride 3 on 16 pixels: camlens's windows start at 0, 3, 6, 9 and 11 (a full
    window flush with the edge); captum's at 0, 3, 6, 9 and 12, the last one truncated to
    12..15. Each matches a literal loop with its own window set; they differ near the edge."""
    model, inputs = zoo("vgg")
    (x,) = inputs
    classes = torch.tensor([[0], [3]])
    ours = explain(model, inputs, method="occlusion", target=[0, 3], window=5, stride=3).raw
    theirs = quiet(captum_attr.Occlusion(model).attribute, x, sliding_window_shapes=(3, 5, 5),
                   strides=(3, 3, 3), target=[0, 3], baselines=0)[:, :1]
    assert_rel(ours, reference_occlusion(model, inputs, classes, (5, 5), (3, 3)))
    assert_rel(theirs, _truncated_window_occlusion(model, x, classes, 5, 3), CAPTUM_RTOL)
    # away from the far edges (rows/cols < 11: no window from 11 on) the two agree
    assert_rel(ours[..., :11, :11], theirs[..., :11, :11], CAPTUM_RTOL)
    assert rel_err(ours, theirs) > 1e-2


def _truncated_window_occlusion(model: torch.nn.Module, x: torch.Tensor, classes: torch.Tensor,
                                window: int, stride: int) -> torch.Tensor:
    """Occlusion with window starts 0, s, 2s, ... up to ceil((H - w) / s) * s, windows clipped
    at the image edge (captum's convention)."""
    batch, _, h, w = x.shape
    starts = list(range(0, -(-(h - window) // stride) * stride + 1, stride))
    total = torch.zeros(batch, 1, h, w, dtype=torch.float64)
    count = torch.zeros(h, w, dtype=torch.float64)
    with torch.no_grad():
        for s in range(batch):
            c = int(classes[s, 0])
            base = model(x[s:s + 1])[0, c]
            for y0 in starts:
                for x0 in starts:
                    masked = x[s:s + 1].clone()
                    masked[..., y0:y0 + window, x0:x0 + window] = 0
                    total[s, 0, y0:y0 + window, x0:x0 + window] += base - model(masked)[0, c]
                    if s == 0:
                        count[y0:y0 + window, x0:x0 + window] += 1
    return total / count
