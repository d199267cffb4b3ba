"""The model-untouched and no-input-write contract for the detection and segmentation targets,
for every registered method (new methods are covered through the registry): after a call,
successful or not, the model's parameters, .grad, requires_grad, hooks and modes are as they
were, and the caller's image is bit-identical with the same version counter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import camlens
from camlens import BoxTarget, ExplainError, SegmentationTarget, YoloTarget
from camlens.detection import cxcywh_to_xyxy
from dense_models import Segmenter, TorchvisionStyleDetector, YoloStyleDetector
from test_contract import assert_same, snapshot

# the test models have no ReLU: the pixel-space methods say so, which is not what is tested here
pytestmark = pytest.mark.filterwarnings("ignore:.*no rectifier")

CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[], Any]]] = {
    "box": (TorchvisionStyleDetector,
            lambda: BoxTarget([[1.0, 1.0, 7.0, 7.0], [4.0, 4.0, 8.0, 8.0]], [1, 2])),
    "box-iou": (TorchvisionStyleDetector,
                lambda: BoxTarget([1.0, 1.0, 7.0, 7.0], 1, with_iou=True)),
    "yolo": (YoloStyleDetector,
             lambda: YoloTarget(cxcywh_to_xyxy(YoloStyleDetector.grid_boxes()[[3, 6]]), [0, 2])),
    "segmentation": (Segmenter, lambda: SegmentationTarget([0, 1, 2], torch.ones(4, 4))),
}
OPTIONS: dict[str, dict[str, Any]] = {"occlusion": {"window": 4, "stride": 4}}
# methods that explain class indices only: a callable target is a clear error for them
CLASS_ONLY = {"cam", "cmwp", "excitation-backprop"}


def prepared(build: Callable[[], nn.Module]) -> nn.Module:
    model = build().eval()
    model.features.weight.grad = torch.full_like(model.features.weight, 0.25)
    model.features.bias.requires_grad_(False)
    return model


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("method", sorted(camlens.METHODS))
def test_dense_targets_leave_model_and_input_untouched(method: str, case: str) -> None:
    build, target = CASES[case]
    model = prepared(build)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    x_copy, version = x.clone(), x._version
    before = snapshot(model)
    kw = dict(OPTIONS.get(method, {}))
    if camlens.METHODS[method].needs_layer:
        kw["layer"] = "features"
    if camlens.METHODS[method].base in CLASS_ONLY:
        with pytest.raises(ExplainError, match="class indices only|global-average-pooling"):
            camlens.explain(model, x, method=method, target=target(), **kw)
    else:
        ex = camlens.explain(model, x, method=method, target=target(), **kw)
        assert ex.scores.shape[0] == 2 and torch.isfinite(ex.maps).all()
        assert float(ex.maps.min()) >= 0.0 and float(ex.maps.max()) <= 1.0
    assert_same(before, snapshot(model))
    assert x._version == version and torch.equal(x, x_copy)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_target_that_matches_nothing_leaves_the_model_untouched(case: str) -> None:
    build, _ = CASES[case]
    model = prepared(build)
    x = torch.randn(1, 3, 8, 8)
    x_copy = x.clone()
    before = snapshot(model)
    miss = {"box": BoxTarget([50.0, 50.0, 60.0, 60.0], 1),
            "box-iou": BoxTarget([0.0, 0.0, 8.0, 8.0], 9),
            "yolo": YoloTarget([50.0, 50.0, 60.0, 60.0], 0),
            "segmentation": SegmentationTarget(3)}[case]
    with pytest.raises(camlens.TargetError):
        camlens.explain(model, x, layer="features", target=miss)
    assert_same(before, snapshot(model))
    assert torch.equal(x, x_copy)
