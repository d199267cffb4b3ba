"""BoxTarget and YoloTarget with each image's own boxes and classes (a batch of detections):
Grad-CAM's weights against hand-derived values on tests/dense_models.py's fixed-weight
detectors, K boxes per image against K single calls and against one call per image, the
accepted forms, and the errors."""

from __future__ import annotations

import pytest
import torch

import camlens
from camlens import BoxTarget, TargetError, YoloTarget
from camlens.detection import cxcywh_to_xyxy
from dense_models import SIDE, TorchvisionStyleDetector, YoloStyleDetector
from test_dense_targets import image, yolo_hand_weights

HW = SIDE * SIDE
# TorchvisionStyleDetector's anchors: 0 = [0, 0, 4, 4] class 1, 1 = [4, 4, 8, 8] class 2,
# 2 = [1, 1, 7, 7] class 1 (each shifted by 0.1 * V_j . GAP(A), a small move)
BOXES = [[[1.0, 1.0, 7.0, 7.0], [4.0, 4.0, 8.0, 8.0]],   # image 0: anchors 2 and 1
         [[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 7.0, 7.0]]]   # image 1: anchors 0 and 2
LABELS = [[1, 2], [1, 1]]
ANCHOR = [[2, 1], [0, 2]]


def test_each_image_explains_its_own_box_by_hand() -> None:
    """score_j = W_j . GAP(A) + b_j, so image b's weights are alpha = W_{j_b} / 16 for the
    anchor j_b its own box matches, and its score is that anchor's."""
    model = TorchvisionStyleDetector().eval()
    x = image(batch=2, seed=3)
    target = BoxTarget([[BOXES[0][0]], [BOXES[1][0]]], [1, 1])  # one box per image
    assert target.per_image and target.boxes.shape == (2, 1, 4)
    # a list of two plain 4-number lists is the shared form: two boxes for every image
    assert not BoxTarget([BOXES[0][0], BOXES[1][0]], [1, 1]).per_image
    ex = camlens.explain(model, x, layer="features", target=target)
    w = model.score.weight.detach()
    with torch.no_grad():
        out = model(x)
        a = model.features(x)
    for b, j in enumerate([2, 0]):
        torch.testing.assert_close(ex.weights[b, 0], w[j] / HW)
        torch.testing.assert_close(ex.scores[b, 0], out[b]["scores"][j])
        torch.testing.assert_close(ex.raw[b, 0],
                                   torch.einsum("c,chw->hw", w[j] / HW, a[b]).clamp(min=0))
    # the same boxes for both images (the shared form) explain anchor 2 in both
    shared = camlens.explain(model, x, layer="features", target=BoxTarget(BOXES[0][0], 1))
    torch.testing.assert_close(shared.weights[1, 0], w[2] / HW)


def test_k_boxes_per_image_equal_k_single_calls_and_one_call_per_image() -> None:
    model = TorchvisionStyleDetector().eval()
    x = image(batch=2, seed=4)
    many = camlens.explain(model, x, layer="features", target=BoxTarget(BOXES, LABELS))
    assert many.maps.shape == (2, 2, 8, 8)
    w = model.score.weight.detach()
    for k in range(2):
        one = camlens.explain(model, x, layer="features", target=BoxTarget(
            [[BOXES[0][k]], [BOXES[1][k]]], [LABELS[0][k], LABELS[1][k]]))
        torch.testing.assert_close(many.maps[:, k], one.maps[:, 0])
        torch.testing.assert_close(many.scores[:, k], one.scores[:, 0])
        for b in range(2):
            torch.testing.assert_close(many.weights[b, k], w[ANCHOR[b][k]] / HW)
    for b in range(2):  # image b alone, with its boxes as the shared form
        alone = camlens.explain(model, x[b:b + 1], layer="features",
                                target=BoxTarget(BOXES[b], LABELS[b]))
        torch.testing.assert_close(many.maps[b], alone.maps[0])
        torch.testing.assert_close(many.raw[b], alone.raw[0])


def test_with_iou_per_image() -> None:
    """The IoU term is each image's own: with_iou adds IoU(box_j(b), box_bk) to image b's score."""
    model = TorchvisionStyleDetector().eval()
    x = image(batch=2, seed=5)
    plain = camlens.explain(model, x, layer="features", target=BoxTarget(BOXES, LABELS))
    both = camlens.explain(model, x, layer="features",
                           target=BoxTarget(BOXES, LABELS, with_iou=True))
    with torch.no_grad():
        out = model(x)
    for b in range(2):
        for k in range(2):
            pred = out[b]["boxes"][ANCHOR[b][k]]
            iou = camlens.detection.box_iou(pred[None], torch.tensor([BOXES[b][k]]))[0, 0]
            torch.testing.assert_close(both.scores[b, k] - plain.scores[b, k], iou)


@pytest.mark.parametrize("boxes, labels", [
    (torch.tensor(BOXES), torch.tensor(LABELS)),          # (B, K, 4) and (B, K) tensors
    ([torch.tensor(b) for b in BOXES], LABELS),           # a detector's tensors, one per image
    (BOXES, [torch.tensor(lab) for lab in LABELS]),
])
def test_the_forms_agree(boxes: object, labels: object) -> None:
    target = BoxTarget(boxes, labels)
    assert target.per_image and target.labels == LABELS
    torch.testing.assert_close(target.boxes, torch.tensor(BOXES, dtype=torch.float64))


def test_one_label_for_all_or_per_image() -> None:
    assert BoxTarget(BOXES, 1).labels == [[1, 1], [1, 1]]
    assert BoxTarget(BOXES, [2, [1, 2]]).labels == [[2, 2], [1, 2]]
    assert BoxTarget([[[0.0, 0.0, 1.0, 1.0]], [[0.0, 0.0, 2.0, 2.0]]], [3, 4]).labels == [[3], [4]]


@pytest.mark.parametrize("boxes, labels, match", [
    ([[[0, 0, 1, 1], [0, 0, 2, 2]], [[0, 0, 1, 1]]], 1, r"same number of boxes K .* \[2, 1\]"),
    (BOXES, [1, 2, 1], "labels must be one int for all, or 2 items"),
    (BOXES, [[1, 2], [1, 2, 1]], "image 1: got 3 labels for 2 boxes"),
    ([[[0, 0, 1, 1]], [[2, 0, 1, 1]]], 1, "image 1: boxes must be finite .* x2 > x1"),
    ([torch.zeros(0, 4), torch.zeros(0, 4)], 1, r"image 0: boxes must be \(4,\) or \(K, 4\)"),
    (BOXES, [[1, 2], [1.0, 2]], "image 1: labels must be ints"),
])
def test_bad_per_image_arguments(boxes: object, labels: object, match: str) -> None:
    with pytest.raises(TargetError, match=match):
        BoxTarget(boxes, labels)


def test_boxes_for_another_number_of_images() -> None:
    model = TorchvisionStyleDetector().eval()
    with pytest.raises(TargetError, match="boxes for 2 images, but the model returned 3"):
        camlens.explain(model, image(batch=3), layer="features", target=BoxTarget(BOXES, LABELS))
    raw = torch.zeros(1, 2, 7)
    with pytest.raises(TargetError, match="YoloTarget has boxes for 2 images, but the model "
                                          "returned 1"):
        YoloTarget(BOXES, 0)(raw)


def test_no_match_names_the_image() -> None:
    model = TorchvisionStyleDetector().eval()
    boxes = [BOXES[0][:1], [[4.0, 4.0, 8.0, 8.0]]]
    with pytest.raises(TargetError, match=r"image 1: no class-1 prediction overlaps box "
                                          r"\[4\.0, 4\.0, 8\.0, 8\.0\]"):
        camlens.explain(model, image(batch=2), layer="features",
                        target=BoxTarget(boxes, [1, 1]))


def test_yolo_per_image_by_hand() -> None:
    """Image b's kept box is grid cell cells[b]: alpha = (p_c W_o + p_o W_c) / 16 there."""
    model = YoloStyleDetector().eval()
    x = image(batch=2, seed=6)
    cells, labels = [[6, 0], [15, 5]], [[2, 0], [1, 2]]
    kept = [cxcywh_to_xyxy(model.grid_boxes()[c]) for c in cells]
    many = camlens.explain(model, x, layer="features", target=YoloTarget(kept, labels))
    for b in range(2):
        alone = camlens.explain(model, x[b:b + 1], layer="features",
                                target=YoloTarget(kept[b], labels[b]))
        torch.testing.assert_close(many.maps[b], alone.maps[0])
        for k in range(2):
            torch.testing.assert_close(
                many.weights[b, k], yolo_hand_weights(model, x[b:b + 1], cells[b][k],
                                                      labels[b][k]))
