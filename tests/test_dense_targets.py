"""Detection and segmentation targets on small fixed-weight models (tests/dense_models.py):
Grad-CAM's weights against hand-derived values, K targets against K single calls, and the
errors for boxes or regions that match nothing."""

from __future__ import annotations

import pytest
import torch

import camlens
from camlens import BoxTarget, SegmentationTarget, TargetError, YoloTarget
from camlens.detection import box_iou, cxcywh_to_xyxy
from dense_models import SIDE, Segmenter, TorchvisionStyleDetector, YoloStyleDetector

HW = SIDE * SIDE


def image(batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.features(x)


def test_box_iou_by_hand() -> None:
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0]])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 7, 1.0, 0.0]]))
    torch.testing.assert_close(cxcywh_to_xyxy(torch.tensor([3.0, 5.0, 2.0, 4.0])),
                               torch.tensor([2.0, 3.0, 4.0, 7.0]))


def test_box_target_gradcam_weights_by_hand() -> None:
    """score_2 = W_2 . GAP(A) + b_2, so dy/dA_k(p) = W_2k / 16 and alpha_k = W_2k / 16."""
    model = TorchvisionStyleDetector().eval()
    x = image()
    target = BoxTarget([1.0, 1.0, 7.0, 7.0], 1)  # anchor 2 (anchor 0, class 1 too: IoU 4/36)
    ex = camlens.explain(model, x, layer="features", target=target)
    w = model.score.weight.detach()[2]
    torch.testing.assert_close(ex.weights[0, 0], w / HW)
    a = features(model, x)[0]
    torch.testing.assert_close(ex.raw[0, 0], torch.einsum("c,chw->hw", w / HW, a).clamp(min=0))
    with torch.no_grad():
        expected = model(x)[0]["scores"][2]
    torch.testing.assert_close(ex.scores[0, 0], expected)


def test_box_target_with_iou_adds_the_box_term() -> None:
    model = TorchvisionStyleDetector().eval()
    x = image()
    ref = torch.tensor([1.0, 1.0, 7.0, 7.0])
    plain = camlens.explain(model, x, layer="features", target=BoxTarget(ref, 1))
    both = camlens.explain(model, x, layer="features", target=BoxTarget(ref, 1, with_iou=True))
    with torch.no_grad():
        pooled = features(model, x).mean(dim=(2, 3))[0]
        shift = float(0.1 * (model.shift.weight[2] @ pooled))
    box = ref + shift  # every coordinate shifted alike
    inter = (6.0 - abs(shift)) ** 2  # two 6x6 boxes offset diagonally
    iou = inter / (2 * 36.0 - inter)
    assert float(box_iou(box[None], ref[None])) == pytest.approx(iou, rel=1e-5)
    torch.testing.assert_close(both.scores - plain.scores, torch.tensor([[iou]]))
    assert not torch.allclose(both.weights, plain.weights)  # the IoU term has a gradient


def test_k_boxes_equal_k_single_calls() -> None:
    model = TorchvisionStyleDetector().eval()
    x = image(batch=2)
    boxes = [[0.0, 0.0, 4.0, 4.0], [4.0, 4.0, 8.0, 8.0], [1.0, 1.0, 7.0, 7.0]]
    labels = [1, 2, 1]
    both = camlens.explain(model, x, layer="features", target=BoxTarget(boxes, labels))
    assert both.maps.shape == (2, 3, 8, 8)
    for k in range(3):
        one = camlens.explain(model, x, layer="features", target=BoxTarget(boxes[k], labels[k]))
        torch.testing.assert_close(both.maps[:, k], one.maps[:, 0])
        torch.testing.assert_close(both.weights[:, k], one.weights[:, 0])
        torch.testing.assert_close(both.weights[:, k],
                                   (model.score.weight.detach()[k] / HW).expand(2, 4))


def test_box_target_no_match_reports_the_best_iou() -> None:
    model = TorchvisionStyleDetector().eval()
    ref = torch.tensor([4.0, 4.0, 8.0, 28.0])  # a tall box over anchor 1 (class 2)
    with torch.no_grad():
        pred = model(image())[0]["boxes"][1]
    best = float(box_iou(pred[None], ref[None]))
    assert 0.1 < best < 0.5
    with pytest.raises(TargetError, match=rf"best IoU of a class-2 prediction is {best:.3f}"):
        camlens.explain(model, image(), layer="features", target=BoxTarget(ref, 2))
    with pytest.raises(TargetError, match="no prediction has class 5"):
        camlens.explain(model, image(), layer="features",
                        target=BoxTarget([4.0, 4.0, 8.0, 8.0], 5))


@pytest.mark.parametrize("bad, match", [
    ({"boxes": [1.0, 2.0, 3.0], "labels": 1}, "shape"),
    ({"boxes": [3.0, 2.0, 1.0, 4.0], "labels": 1}, "x2 > x1"),
    ({"boxes": [[0, 0, 1, 1], [0, 0, 2, 2]], "labels": [1, 2, 3]}, "3 labels for 2 boxes"),
    ({"boxes": [0, 0, 1, 1], "labels": 1, "iou_threshold": 0.0}, "iou_threshold"),
])
def test_box_target_rejects_bad_arguments(bad: dict, match: str) -> None:
    with pytest.raises(TargetError, match=match):
        BoxTarget(**bad)


def test_box_target_takes_the_detectors_own_tensors() -> None:
    """Boxes and labels as a detector returns them (tensors, the boxes requiring grad)."""
    model = TorchvisionStyleDetector().eval()
    x = image()
    det = model(x)[0]
    keep = torch.tensor([True, False, True])
    target = BoxTarget(det["boxes"][keep], det["labels"][keep])
    assert target.labels == [[1, 1]] and not target.per_image
    ex = camlens.explain(model, x, layer="features", target=target)
    torch.testing.assert_close(ex.scores[0], det["scores"][keep].detach())
    with pytest.raises(TargetError, match="labels must be ints"):
        BoxTarget([0, 0, 1, 1], torch.tensor([1.0]))


def test_box_target_needs_a_list_of_dicts() -> None:
    with pytest.raises(TargetError, match="YoloTarget"):
        BoxTarget([0, 0, 1, 1], 1)(torch.zeros(1, 5))
    with pytest.raises(TargetError, match="no \\['scores'\\]"):
        BoxTarget([0, 0, 1, 1], 1)([{"boxes": torch.zeros(1, 4), "labels": torch.ones(1)}])


def yolo_hand_weights(model: YoloStyleDetector, x: torch.Tensor, cell: int, label: int,
                      objectness: bool = True) -> torch.Tensor:
    """alpha_k = (p_c W_o,k + p_o W_c,k) / 16 at the one cell whose score is explained."""
    with torch.no_grad():
        raw, _ = model(x)
    w = model.head.weight.detach()[:, :, 0, 0]  # (1 + C, 4)
    p_o, p_c = raw[0, cell, 4], raw[0, cell, 5 + label]
    grad = p_c * w[0] + p_o * w[1 + label] if objectness else w[1 + label]
    return grad / HW


def test_yolo_target_maps_a_kept_box_to_its_prediction_by_hand() -> None:
    model = YoloStyleDetector().eval()
    x = image()
    # cell (1, 2) is prediction 6 = [4, 2, 6, 4] xyxy; a kept box as NMS returns it
    kept = cxcywh_to_xyxy(model.grid_boxes()[6])
    ex = camlens.explain(model, x, layer="features", target=YoloTarget(kept, 2))
    torch.testing.assert_close(ex.weights[0, 0], yolo_hand_weights(model, x, 6, 2))
    with torch.no_grad():
        raw, _ = model(x)
    torch.testing.assert_close(ex.scores[0, 0], raw[0, 6, 7] * raw[0, 6, 4])


def test_yolo_target_without_objectness_reads_4_plus_c() -> None:
    """objectness=False: (B, N, 4 + C), the score is the class column alone (here the
    objectness column of the model reads as class 0, so class 2 is column 6)."""
    model = YoloStyleDetector().eval()
    x = image()
    kept = cxcywh_to_xyxy(model.grid_boxes()[6])
    ex = camlens.explain(model, x, layer="features",
                         target=YoloTarget(kept, 2, objectness=False))
    w = model.head.weight.detach()[:, :, 0, 0]
    torch.testing.assert_close(ex.weights[0, 0], w[2] / HW)


def test_yolo_k_boxes_equal_k_single_calls_and_xyxy() -> None:
    model = YoloStyleDetector().eval()
    x = image(batch=2, seed=1)
    kept = cxcywh_to_xyxy(model.grid_boxes()[[0, 5, 15]])
    labels = [0, 1, 2]
    many = camlens.explain(model, x, layer="features",
                           target=YoloTarget(kept, labels, box_format="cxcywh"))
    for k, cell in enumerate([0, 5, 15]):
        one = camlens.explain(model, x, layer="features", target=YoloTarget(kept[k], labels[k]))
        torch.testing.assert_close(many.maps[:, k], one.maps[:, 0])
        torch.testing.assert_close(many.weights[0, k],
                                   yolo_hand_weights(model, x[:1], cell, labels[k]))


def test_yolo_target_picks_the_exact_prediction_among_overlapping_ones() -> None:
    """Two predictions overlap the kept box; the one NMS kept (IoU 1) is explained, even when
    the other has the higher class score."""
    raw = torch.zeros(1, 2, 5 + 2, requires_grad=False)
    raw[0, 0, :4] = torch.tensor([5.0, 5.0, 4.0, 4.0])
    raw[0, 1, :4] = torch.tensor([5.5, 5.0, 4.0, 4.0])
    raw[0, :, 4] = 1.0
    raw[0, :, 6] = torch.tensor([0.3, 0.9])
    score = YoloTarget([3.0, 3.0, 7.0, 7.0], 1)(raw)
    assert float(score) == pytest.approx(0.3)
    with pytest.raises(TargetError, match=r"best IoU 0\.000"):
        YoloTarget([20.0, 20.0, 22.0, 22.0], 1)(raw)
    with pytest.raises(TargetError, match="out of range"):
        YoloTarget([3.0, 3.0, 7.0, 7.0], 2)(raw)
    with pytest.raises(TargetError, match=r"\(B, N, 5 \+ C\)"):
        YoloTarget([3.0, 3.0, 7.0, 7.0], 0)(torch.zeros(2, 7))


def test_segmentation_target_over_a_mask_by_hand() -> None:
    """y = sum_p M(p) (W_c . A(p) + b_c): alpha_k = W_ck |M| / 16."""
    model = Segmenter().eval()
    x = image()
    mask = torch.zeros(SIDE, SIDE)
    mask[1:3, 0:3] = 1.0
    ex = camlens.explain(model, x, layer="features", target=SegmentationTarget(2, mask))
    w = model.classifier.weight.detach()[:, :, 0, 0]
    torch.testing.assert_close(ex.weights[0, 0], w[2] * 6 / HW)
    with torch.no_grad():
        z = model(x)["out"][0, 2]
    torch.testing.assert_close(ex.scores[0, 0], (z * mask).sum())


def test_segmentation_target_over_the_predicted_region_and_k_classes() -> None:
    model = Segmenter().eval()
    x = image(batch=2, seed=4)
    with torch.no_grad():
        label = model(x)["out"].argmax(1)  # (2, 4, 4)
    present = [c for c in range(3) if all(bool((label[b] == c).any()) for b in range(2))]
    assert present, "the fixed weights predict no class in both images"
    many = camlens.explain(model, x, layer="features", target=SegmentationTarget(present))
    w = model.classifier.weight.detach()[:, :, 0, 0]
    for k, c in enumerate(present):
        count = (label == c).sum(dim=(1, 2)).double()
        torch.testing.assert_close(many.weights[:, k].double(),
                                   count[:, None] * w[c].double() / HW)
        one = camlens.explain(model, x, layer="features", target=SegmentationTarget(c))
        torch.testing.assert_close(many.maps[:, k], one.maps[:, 0])


def test_segmentation_target_errors() -> None:
    z = torch.zeros(1, 3, 4, 4)
    z[:, 0] = 1.0  # class 0 everywhere
    with pytest.raises(TargetError, match="class 1 is predicted at no pixel of image 0"):
        SegmentationTarget(1)(z)
    with pytest.raises(TargetError, match="does not fit"):
        SegmentationTarget(0, torch.ones(3, 3))(z)
    with pytest.raises(TargetError, match="out of range"):
        SegmentationTarget(3)({"out": z})
    with pytest.raises(TargetError, match=r"\(B, C, H, W\)"):
        SegmentationTarget(0)(torch.zeros(1, 3))
    torch.testing.assert_close(SegmentationTarget([0, 2], torch.ones(4, 4))({"out": z}),
                               torch.tensor([[16.0, 0.0]]))
