"""No method writes into the caller's tensors: after ``explain`` (also one that raised), every
input tensor is bit-identical to a copy taken before, with the same version counter (any
in-place write bumps it, also through a ``detach()``-ed alias), ``requires_grad`` and ``.grad``.

Parametrised over ``camlens.METHODS``, so a newly registered method is covered without
touching this file; occlusion also with a chunk of one window (``batch_size=1``, a window
equal to the image, a window count that leaves one over).
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch import nn

import camlens
from models import build

#: extra option sets per method (each method also runs with its defaults, ``{}``). On the 16x16
#: images here occlusion's default window 16 is the whole image: one window, a chunk of one.
EXTRA: dict[str, list[dict[str, Any]]] = {
    "occlusion": [
        {"window": 4, "stride": 2, "batch_size": 1},
        {"window": 6, "stride": 4, "batch_size": 3},  # 4 x 4 = 16 windows: 5 chunks of 3, 1 of 1
    ],
}
CASES = [(m, {}) for m in camlens.METHODS] + [(m, o) for m, opts in EXTRA.items() for o in opts]
IDS = [m + "".join(f"-{k}={v}" for k, v in o.items()) for m, o in CASES]


class GatedGap(nn.Module):
    """An image and a 6-vector "question" that gates its channels, then GAP + linear (so CAM
    applies). ``image_first=False`` takes ``(question, image)``: ``image_index=1``."""

    LAYER = "gated"

    def __init__(self, image_first: bool) -> None:
        super().__init__()
        self.image_first = image_first
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.embed = nn.Linear(6, 8)
        self.gated = nn.Identity()
        self.fc = nn.Linear(8, 5)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        image, question = (a, b) if self.image_first else (b, a)
        gate = torch.sigmoid(self.embed(question))[:, :, None, None]
        return self.fc(self.gated(self.features(image) * gate).mean(dim=(2, 3)))


_MODELS: dict[str, nn.Module] = {}


def model_for(form: str) -> nn.Module:
    """``single``: the zoo's ResNet (in-place ReLUs, BatchNorm, GAP + fc); ``image-first`` /
    ``image-second``: :class:`GatedGap` taking the image as its first / second input."""
    if form not in _MODELS:
        torch.manual_seed(0)
        m = build("resnet") if form == "single" else GatedGap(form == "image-first")
        _MODELS[form] = m.double().eval()
    return _MODELS[form]


def caller_inputs(form: str, batch: int, variant: str) -> tuple[torch.Tensor, ...]:
    """The caller's tensors: image (B, 3, 16, 16) [+ question (B, 6)], in the order the model
    takes them. ``channels-last``: the image in that layout; ``requires-grad``: every tensor a
    leaf that requires grad and already holds a ``.grad``."""
    g = torch.Generator().manual_seed(batch)
    image = torch.randn(batch, 3, 16, 16, generator=g, dtype=torch.float64)
    if variant == "channels-last":
        image = image.contiguous(memory_format=torch.channels_last)
    question = torch.randn(batch, 6, generator=g, dtype=torch.float64)
    ts = (image,) if form == "single" else (
        (image, question) if form == "image-first" else (question, image))
    if variant == "requires-grad":
        for t in ts:
            t.requires_grad_(True)
            t.grad = torch.randn(t.shape, generator=g, dtype=t.dtype)
    return ts


def snapshot(ts: tuple[torch.Tensor, ...]) -> list[tuple[Any, ...]]:
    def grad(t: torch.Tensor) -> Any:
        return None if t.grad is None else (t.grad, t.grad.numpy().tobytes(), t.grad._version)

    return [(t.detach().numpy().tobytes(), t.stride(), t._version, t.requires_grad, t.is_leaf,
             grad(t)) for t in ts]


def assert_untouched(ts: tuple[torch.Tensor, ...], before: list[tuple[Any, ...]]) -> None:
    after = snapshot(ts)
    for i, (a, b) in enumerate(zip(after, before)):
        assert a[0] == b[0], f"input {i}: its values were changed"
        assert a[1:5] == b[1:5], f"input {i}: (stride, version, requires_grad, is_leaf) {a[1:5]}"
        if b[5] is None:
            assert a[5] is None, f"input {i}: gained a .grad"
        else:
            assert a[5][0] is b[5][0] and a[5][1:] == b[5][1:], f"input {i}: its .grad changed"


def run(method: str, options: dict[str, Any], form: str, ts: tuple[torch.Tensor, ...],
        variant: str, **kw: Any) -> camlens.Explanation:
    model = model_for(form)
    return camlens.explain(
        model, ts[0] if form == "single" else ts, method=method,
        layer=model.LAYER if camlens.METHODS[method].needs_layer else None,
        image_index=1 if form == "image-second" else 0,
        channels_last=variant == "channels-last", **kw, **options)


pytestmark = pytest.mark.usefixtures("one_thread")  # toy models: see conftest.py


@pytest.mark.parametrize("variant", ["plain", "channels-last", "requires-grad"])
@pytest.mark.parametrize("form", ["single", "image-first", "image-second"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("method,options", CASES, ids=IDS)
def test_explain_leaves_the_callers_tensors_as_they_were(method: str, options: dict[str, Any],
                                                         batch: int, form: str,
                                                         variant: str) -> None:
    ts = caller_inputs(form, batch, variant)
    before = snapshot(ts)
    ex = run(method, options, form, ts, variant)
    assert_untouched(ts, before)
    assert ex.maps.shape[0] == batch and bool(ex.maps.isfinite().all())


@pytest.mark.parametrize("method", list(camlens.METHODS))
def test_a_call_that_raises_leaves_them_too(method: str) -> None:
    # class 99 of 5: refused after the model's forward pass has run on the inputs
    ts = caller_inputs("image-second", 2, "requires-grad")
    before = snapshot(ts)
    with pytest.raises(camlens.TargetError):
        run(method, {}, "image-second", ts, "requires-grad", target=99)
    assert_untouched(ts, before)


class InPlaceNet(nn.Module):
    """Normalises its input in place (``x.sub_(0.5)``), as some users' models do."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.sub_(0.5)
        a = torch.relu(self.conv(x))
        return self.head(a.mean(dim=(2, 3)))


@pytest.mark.parametrize("method", sorted(camlens.METHODS))
def test_a_model_that_writes_into_its_input_does_not_reach_the_callers(method: str) -> None:
    model = InPlaceNet().eval()
    x = torch.rand(2, 3, 8, 8)
    before, version = x.clone(), x._version
    layer = "conv" if camlens.METHODS[method].needs_layer else None
    kw = {"window": 4, "stride": 4} if method == "occlusion" else {}
    if method == "cam":
        pytest.skip("InPlaceNet's head is GAP + linear after a ReLU, not after the layer")
    camlens.explain(model, x, method=method, layer=layer, **kw)
    assert torch.equal(x, before) and x._version == version


class OutOfPlaceNet(InPlaceNet):
    """InPlaceNet's function without the in-place write."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.conv(x - 0.5))
        return self.head(a.mean(dim=(2, 3)))


@pytest.mark.parametrize("method", sorted(m for m in camlens.METHODS if m != "cam"))
def test_methods_that_rerun_the_model_see_the_inputs_as_they_were(method: str) -> None:
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    layer = "conv" if camlens.METHODS[method].needs_layer else None
    kw = {"window": 4, "stride": 2} if method == "occlusion" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # excitation's caveats about negative inputs
        got = camlens.explain(InPlaceNet().double().eval(), x, method=method, layer=layer, **kw)
        want = camlens.explain(OutOfPlaceNet().double().eval(), x, method=method, layer=layer,
                               **kw)
    torch.testing.assert_close(got.raw, want.raw, rtol=1e-10, atol=1e-12)
