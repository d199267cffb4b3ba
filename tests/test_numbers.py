"""Numbers a map cannot be made of: NaN/Inf in the input, the weights, the gradients or the map,
an empty batch, and low-precision models (bfloat16, float16)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import camlens
from camlens import InputError, NonFiniteError
from test_contract import LAYER_KW, assert_same, prepared_model, snapshot

METHODS = sorted(camlens.METHODS)
# methods whose maps come from autograd gradients of the scores (Excitation Backprop propagates
# probabilities by its own rules, and refuses AbsNet's sqrt(c * c) by name; Eigen-CAM and the
# perturbation methods take no gradients)
GRADIENT_METHODS = [m for m in METHODS if camlens.METHODS[m].base not in (
    "cam", "occlusion", "excitation-backprop", "eigencam", "scorecam", "ablationcam")]


def _image(batch: int = 2, size: int = 8) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("method", METHODS)
def test_non_finite_input_is_an_input_error(method: str, bad: float) -> None:
    model, x = prepared_model(), _image()
    x[1, 2, 3, :3] = bad
    before = snapshot(model)
    with pytest.raises(InputError, match=r"the image holds 3 non-finite value\(s\) \(NaN or Inf\) "
                                         r"of 384; the input must be finite"):
        camlens.explain(model, x, method=method, **LAYER_KW[method])
    assert_same(before, snapshot(model))


def test_other_inputs_may_hold_inf_masks_but_not_nan() -> None:
    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4, 5)

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.fc(F.relu(self.conv(x)).mean((2, 3))) + mask.clamp(min=-1e4)

    model, x = Masked().eval(), _image()
    mask = torch.zeros(2, 5)
    mask[:, 3] = -float("inf")  # class 3 masked out: never the top-1
    ex = camlens.explain(model, (x, mask), layer="conv")
    assert (ex.targets != 3).all() and float(ex.raw.abs().amax()) > 0
    mask[0, 0] = float("nan")
    with pytest.raises(InputError, match=r"input 1 holds 1 NaN value\(s\) of 10"):
        camlens.explain(model, (x, mask), layer="conv")


@pytest.mark.parametrize("method", METHODS)
def test_nan_weights_are_a_non_finite_error(method: str) -> None:
    model = prepared_model()
    with torch.no_grad():
        model.features[2].weight[0, 0, 0, 0] = float("nan")  # every pixel of channel 0 is NaN
    before = snapshot(model)
    where = "the outputs of layer 'features'" if LAYER_KW[method].get("layer") else \
        "the model's scores for the explained targets"
    with pytest.raises(NonFiniteError, match=f"{where} hold .* NaN or Inf value.*check the "
                                             "model's weights"):
        camlens.explain(model, _image(), method=method, **LAYER_KW[method])
    assert_same(before, snapshot(model))


class AbsNet(nn.Module):
    """Finite forward, NaN backward: |a| as sqrt(a * a), whose gradient at a = 0 is
    inf * 0; the image's zero rows give a = 0 exactly (no bias)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 4, 1, bias=False)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv(x)
        return self.fc(F.relu(torch.sqrt(c * c).mean((2, 3))))


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_non_finite_gradients_are_a_non_finite_error(method: str) -> None:
    model, x = AbsNet().eval(), _image()
    x[:, :, :2] = 0
    kw: dict[str, Any] = {"layer": "conv"} if camlens.METHODS[method].needs_layer else {}
    assert torch.isfinite(model(x)).all()
    with pytest.raises(NonFiniteError, match="the gradients of the scores with respect to the "
                                             r"(layer|input) hold \d+ NaN or Inf"):
        camlens.explain(model, x, method=method, **kw)


def test_inf_at_the_layer_with_finite_scores_is_named() -> None:
    class Saturating(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(2)
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = self.conv(x * 1e38)  # overflows float32
            return self.fc(torch.tanh(a).mean((2, 3)))

    model, x = Saturating().eval(), _image()
    assert torch.isfinite(model(x)).all()
    with pytest.raises(NonFiniteError, match="the outputs of layer 'conv' hold"):
        camlens.explain(model, x, layer="conv")


def test_occlusion_map_from_non_finite_scores_is_an_error() -> None:
    class Ratio(nn.Module):
        """Divides by the top-left 4 x 4 patch's mean: occluding it with 0 divides by 0."""

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.mean((2, 3))) / x[:, :, :4, :4].abs().mean((1, 2, 3))[:, None]

    model, x = Ratio().eval(), _image()
    with pytest.raises(NonFiniteError, match="the occlusion map's values hold"):
        camlens.explain(model, x, method="occlusion", window=4, stride=4)


@pytest.mark.parametrize("method", METHODS)
def test_empty_batch_is_an_input_error(method: str) -> None:
    model = prepared_model()
    with pytest.raises(InputError, match=r"the image batch is empty \(shape \(0, 3, 8, 8\)\)"):
        camlens.explain(model, torch.zeros(0, 3, 8, 8), method=method, **LAYER_KW[method])


class WideGap(nn.Module):
    """GAP + linear head, 256 channels and scores of tens: bfloat16 rounds them to 2^-8."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(64, 256, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(256, 10)
        with torch.no_grad():
            self.fc.weight.mul_(400)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cam_on_a_low_precision_model(dtype: torch.dtype) -> None:
    """CAM's head check allows the dtype's rounding (bfloat16's 2^-7 failed the float32
    tolerance of 1e-3); the map equals the float32 one within that precision."""
    model = WideGap().eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    target = [[1, 2], [3, 4]]
    ref = camlens.explain(model, x, method="cam", layer="features", target=target)
    assert float(ref.scores.abs().amax()) > 20
    low = camlens.explain(model.to(dtype), x.to(dtype), method="cam", layer="features",
                          target=target)
    assert low.raw.dtype == dtype
    eps = torch.finfo(dtype).eps
    scale = float(ref.raw.abs().amax())
    assert float((low.raw.float() - ref.raw).abs().amax()) < 4 * eps * scale
    assert float((low.maps - ref.maps).abs().amax()) < 8 * eps
    with pytest.raises(camlens.LayerError, match="does not reproduce"):  # still checked
        camlens.explain(model, x.to(dtype), method="cam", layer="features.2", target=target)
