"""Detection targets: explain one detected box (or K boxes, as K targets of one call).

:class:`BoxTarget` reads a torchvision-style detector's output, a list (one per sample) of
dicts with ``boxes`` (N, 4) xyxy, ``labels`` (N,) and ``scores`` (N,), and explains the
prediction that matches a reference box by class and IoU. :class:`YoloTarget` reads a
YOLO-style raw output, a dense (B, N, 4 + 1 + C) tensor taken *before* the non-differentiable
NMS, and maps each kept box back to the pre-NMS prediction it came from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from camlens.errors import TargetError


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of xyxy boxes: (N, 4) x (M, 4) -> (N, M); differentiable in both."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / union.clamp(min=torch.finfo(union.dtype).tiny)


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) centre-size boxes (cx, cy, w, h) -> corners (x1, y1, x2, y2)."""
    centre, size = boxes[..., :2], boxes[..., 2:4]
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1)


def _labels_of(labels: Any, k: int, where: str) -> list[int]:
    """K class labels from one int or K ints (an integer tensor too), validated."""
    if isinstance(labels, torch.Tensor) and not labels.is_floating_point():
        labels = labels.tolist()  # e.g. a detector's output["labels"][keep]
    labs = list(labels) if isinstance(labels, (list, tuple)) else [labels]
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in labs):
        raise TargetError(f"{where}labels must be ints, one per box, got {labels!r}")
    if len(labs) == 1 and k > 1:
        labs = labs * k
    if len(labs) != k:
        raise TargetError(f"{where}got {len(labs)} labels for {k} boxes: give one label per box "
                          "(or one for all)")
    return labs


def _boxes_of(boxes: Any, where: str) -> torch.Tensor:
    """(K, 4) xyxy reference boxes from (4,) or (K, 4), validated."""
    ref = torch.as_tensor(boxes, dtype=torch.float64).detach()
    if ref.dim() == 1:
        ref = ref[None]
    if ref.dim() != 2 or ref.shape[1] != 4 or ref.shape[0] == 0:
        raise TargetError(f"{where}boxes must be (4,) or (K, 4) x1, y1, x2, y2 coordinates, got "
                          f"shape {tuple(ref.shape)}")
    if not torch.isfinite(ref).all() or bool((ref[:, 2:] <= ref[:, :2]).any()):
        raise TargetError(f"{where}boxes must be finite x1, y1, x2, y2 with x2 > x1 and y2 > y1, "
                          f"got {ref.tolist()}")
    return ref


def _per_image(boxes: Any) -> bool:
    """Whether ``boxes`` holds one set of boxes per image: a (B, K, 4) array, or a sequence
    whose items are tensors / arrays or nested sequences (each image's (K, 4) or (4,))."""
    if hasattr(boxes, "ndim") and not isinstance(boxes, (list, tuple)):
        return int(boxes.ndim) == 3
    if isinstance(boxes, (list, tuple)) and boxes:
        first = boxes[0]
        return hasattr(first, "ndim") or (isinstance(first, (list, tuple)) and bool(first)
                                          and isinstance(first[0], (list, tuple)))
    return False


def _reference(boxes: Any, labels: Any) -> tuple[torch.Tensor, list[list[int]], bool]:
    """Reference boxes (B', K, 4) and labels (B' lists of K), validated; B' = 1 when the same
    boxes serve every image (the third value, per_image, is then False)."""
    if not _per_image(boxes):
        ref = _boxes_of(boxes, "")
        return ref[None], [_labels_of(labels, ref.shape[0], "")], False
    items = list(boxes.unbind(0)) if isinstance(boxes, torch.Tensor) else list(boxes)
    if isinstance(labels, torch.Tensor) and not labels.is_floating_point() and labels.dim() < 2:
        labels = labels.tolist()
    if isinstance(labels, int) and not isinstance(labels, bool):
        labels = [labels] * len(items)
    if isinstance(labels, torch.Tensor) and labels.dim() == 2:
        labels = list(labels.unbind(0))
    if not isinstance(labels, (list, tuple)) or len(labels) != len(items):
        raise TargetError(
            f"with boxes for each of {len(items)} images, labels must be one int for all, or "
            f"{len(items)} items (each image's int or list of ints), got {labels!r}")
    refs = [_boxes_of(b, f"image {i}: ") for i, b in enumerate(items)]
    counts = [r.shape[0] for r in refs]
    if len(set(counts)) > 1:
        raise TargetError(f"every image needs the same number of boxes K (the maps are (B, K, "
                          f"H, W)), got {counts}; explain the images in separate calls")
    labs = [_labels_of(lab, counts[0], f"image {i}: ") for i, lab in enumerate(labels)]
    return torch.stack(refs), labs, True


def _reference_for(target: Any, b: int, images: int) -> tuple[torch.Tensor, list[int]]:
    """Image b's (K, 4) boxes and K labels; checks the number of images once, at b = 0."""
    if target.per_image and b == 0 and images != len(target.labels):
        raise TargetError(f"{type(target).__name__} has boxes for {len(target.labels)} images, "
                          f"but the model returned {images}: give one set of boxes per image")
    i = b if target.per_image else 0
    return target.boxes[i], target.labels[i]


def _check_threshold(iou_threshold: float) -> float:
    if not 0.0 < iou_threshold <= 1.0:
        raise TargetError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    return float(iou_threshold)


class BoxTarget:
    """Explain K detected boxes of a torchvision-style detector (Faster R-CNN, RetinaNet...).

    For sample b and reference box k (class ``labels[k]``), the matched prediction j is, among
    the predictions labelled ``labels[k]`` whose IoU with the box is >= ``iou_threshold``, the
    one with the highest IoU. The explained score is

        y_bk = scores_b[j]                                  (with_iou=False)
        y_bk = scores_b[j] + IoU(boxes_b[j], box_k)         (with_iou=True)

    the IoU term carrying the gradient of the box regression. No match raises a
    :class:`TargetError` that reports the best IoU found. ``boxes``: (4,) or (K, 4) xyxy in
    the detector's output coordinates, the same K boxes in every image; ``labels``: one class
    per box or one for all (ints or an integer tensor, e.g. the detector's own ``labels``).

    Per image: ``boxes`` as a (B, K, 4) array or a sequence of B (K, 4) / (4,) items (each
    image's own boxes, e.g. ``[d["boxes"][:2] for d in detections]``), and ``labels`` as one int
    for all, or B items, each an int or K ints (a (B, K) integer tensor too); image b's K maps
    then explain its own boxes. Every image has the same K.
    """

    def __init__(self, boxes: Any, labels: int | Sequence[Any] | torch.Tensor, *,
                 iou_threshold: float = 0.5, with_iou: bool = False) -> None:
        self.boxes, self.labels, self.per_image = _reference(boxes, labels)
        self.iou_threshold = _check_threshold(iou_threshold)
        self.with_iou = with_iou

    def __call__(self, output: Any) -> torch.Tensor:
        """(B,) list of prediction dicts -> (B, K) scores."""
        if not isinstance(output, (list, tuple)) or not all(
                isinstance(d, Mapping) for d in output):
            raise TargetError(
                f"BoxTarget needs a torchvision-style detector output, a list of dicts with "
                f"'boxes', 'labels' and 'scores' (one per image), got {type(output).__name__}; "
                "for a raw YOLO tensor use YoloTarget")
        return torch.stack([self._sample(b, d, len(output)) for b, d in enumerate(output)])

    def _sample(self, b: int, pred: Mapping[str, Any], images: int) -> torch.Tensor:
        missing = [k for k in ("boxes", "labels", "scores") if k not in pred]
        if missing:
            raise TargetError(f"the detector's output for image {b} has no {missing} "
                              f"(keys: {sorted(pred)}); BoxTarget needs boxes, labels, scores")
        boxes, labels, scores = pred["boxes"], pred["labels"], pred["scores"]
        ref, labs = _reference_for(self, b, images)
        iou = box_iou(boxes, ref.to(boxes.device, boxes.dtype))  # (N, K)
        out = []
        for k, label in enumerate(labs):
            same = labels == label
            fit = iou[:, k].detach().where(same, torch.full_like(iou[:, k], -1.0))
            j = int(fit.argmax()) if fit.numel() else -1
            if j < 0 or float(fit[j]) < self.iou_threshold:
                raise TargetError(self._miss(b, ref[k], label, iou[:, k].detach(), labels, fit))
            score = scores[j] + iou[j, k] if self.with_iou else scores[j]
            out.append(score)
        return torch.stack(out)

    def _miss(self, b: int, ref: torch.Tensor, label: int, iou: torch.Tensor,
              labels: torch.Tensor, fit: torch.Tensor) -> str:
        box = [round(v, 2) for v in ref.tolist()]
        if iou.numel() == 0:
            return f"image {b}: the detector predicted no boxes, so box {box} cannot be matched"
        best = float(fit.max())
        same = (f"the best IoU of a class-{label} prediction is {best:.3f}" if best >= 0
                else f"no prediction has class {label}")
        j = int(iou.argmax())
        return (f"image {b}: no class-{label} prediction overlaps box {box} with IoU >= "
                f"{self.iou_threshold}; {same} (best of any class: {float(iou[j]):.3f}, class "
                f"{int(labels[j])}); lower iou_threshold or check the box and label")


class YoloTarget:
    """Explain K kept boxes of a YOLO-style detector through its raw, pre-NMS output.

    The output (or its first element, for models returning ``(raw, features)``) is
    (B, N, 4 + 1 + C): box, objectness p_o, class scores p_1..p_C per prediction
    (``objectness=False``: (B, N, 4 + C), no objectness column). ``box_format`` says how the
    first 4 columns read (``"cxcywh"``, YOLOv5's, or ``"xyxy"``). Each kept box k (after NMS,
    in the same coordinates) is mapped back to the prediction with the highest IoU with it,
    ties going to the higher class score; NMS keeps a prediction as it is, so the match has
    IoU 1. The explained score is y_bk = p_{labels[k]} * p_o (or p_{labels[k]}). ``boxes`` and
    ``labels`` take the same forms as :class:`BoxTarget`'s, per image too.
    """

    def __init__(self, boxes: Any, labels: int | Sequence[Any] | torch.Tensor, *,
                 iou_threshold: float = 0.5, objectness: bool = True,
                 box_format: Literal["cxcywh", "xyxy"] = "cxcywh") -> None:
        self.boxes, self.labels, self.per_image = _reference(boxes, labels)
        self.iou_threshold = _check_threshold(iou_threshold)
        if box_format not in ("cxcywh", "xyxy"):
            raise TargetError(f"box_format must be 'cxcywh' or 'xyxy', got {box_format!r}")
        self.objectness = objectness
        self.box_format = box_format

    def __call__(self, output: Any) -> torch.Tensor:
        """(B, N, 4 + 1 + C) raw predictions -> (B, K) scores."""
        raw = output[0] if isinstance(output, (tuple, list)) else output
        first = 5 if self.objectness else 4
        if not isinstance(raw, torch.Tensor) or raw.dim() != 3 or raw.shape[2] <= first:
            shape = tuple(raw.shape) if isinstance(raw, torch.Tensor) else type(raw).__name__
            raise TargetError(
                f"YoloTarget needs the raw (B, N, {first} + C) predictions before NMS, got "
                f"{shape}" + ("; objectness=False reads (B, N, 4 + C)" if self.objectness
                              else ""))
        classes = raw.shape[2] - first
        bad = [c for labs in self.labels for c in labs if not 0 <= c < classes]
        if bad:
            raise TargetError(f"label {bad[0]} is out of range: the output has {classes} "
                              f"classes, so labels run from 0 to {classes - 1}")
        boxes = raw[..., :4] if self.box_format == "xyxy" else cxcywh_to_xyxy(raw[..., :4])
        probs = raw[..., first:]
        if self.objectness:
            probs = probs * raw[..., 4:5]
        out = []
        for b in range(raw.shape[0]):
            ref, labs = _reference_for(self, b, raw.shape[0])
            scores = probs[b][:, torch.tensor(labs, device=raw.device)]  # (N, K)
            iou = box_iou(boxes[b].detach(), ref.to(raw.device, raw.dtype))  # (N, K)
            picks = []
            for k in range(len(labs)):
                best = iou[:, k].max()
                if float(best) < self.iou_threshold:
                    box = [round(v, 2) for v in ref[k].tolist()]
                    raise TargetError(
                        f"image {b}: no pre-NMS prediction overlaps box {box} with IoU >= "
                        f"{self.iou_threshold} (best IoU {float(best):.3f}); pass the boxes "
                        f"NMS kept, in the raw output's coordinates (box_format="
                        f"{self.box_format!r})")
                tied = iou[:, k] >= best
                pick = scores[:, k].detach().where(tied, torch.full_like(
                    scores[:, k], -torch.inf)).argmax()
                picks.append(scores[pick, k])
            out.append(torch.stack(picks))
        return torch.stack(out)
