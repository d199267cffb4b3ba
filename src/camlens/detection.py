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


def _reference(boxes: Any, labels: Any) -> tuple[torch.Tensor, list[int]]:
    """Reference boxes (K, 4) and their K class labels, validated."""
    ref = torch.as_tensor(boxes, dtype=torch.float64).detach()
    if ref.dim() == 1:
        ref = ref[None]
    if ref.dim() != 2 or ref.shape[1] != 4 or ref.shape[0] == 0:
        raise TargetError(f"boxes must be (4,) or (K, 4) x1, y1, x2, y2 coordinates, got shape "
                          f"{tuple(ref.shape)}")
    if not torch.isfinite(ref).all() or bool((ref[:, 2:] <= ref[:, :2]).any()):
        raise TargetError(f"boxes must be finite x1, y1, x2, y2 with x2 > x1 and y2 > y1, got "
                          f"{ref.tolist()}")
    if isinstance(labels, torch.Tensor) and not labels.is_floating_point():
        labels = labels.tolist()  # e.g. a detector's output["labels"][keep]
    labs = [labels] if isinstance(labels, int) else list(labels)
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in labs):
        raise TargetError(f"labels must be ints, one per box, got {labels!r}")
    if len(labs) == 1 and ref.shape[0] > 1:
        labs = labs * ref.shape[0]
    if len(labs) != ref.shape[0]:
        raise TargetError(f"got {len(labs)} labels for {ref.shape[0]} boxes: give one label "
                          "per box (or one for all)")
    return ref, labs


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
    the detector's output coordinates; ``labels``: one class per box or one for all (ints or
    an integer tensor, e.g. the detector's own ``labels``).
    """

    def __init__(self, boxes: Any, labels: int | Sequence[int], *, iou_threshold: float = 0.5,
                 with_iou: bool = False) -> None:
        self.boxes, self.labels = _reference(boxes, labels)
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
        return torch.stack([self._sample(b, d) for b, d in enumerate(output)])

    def _sample(self, b: int, pred: Mapping[str, Any]) -> torch.Tensor:
        missing = [k for k in ("boxes", "labels", "scores") if k not in pred]
        if missing:
            raise TargetError(f"the detector's output for image {b} has no {missing} "
                              f"(keys: {sorted(pred)}); BoxTarget needs boxes, labels, scores")
        boxes, labels, scores = pred["boxes"], pred["labels"], pred["scores"]
        ref = self.boxes.to(boxes.device, boxes.dtype)
        iou = box_iou(boxes, ref)  # (N, K)
        out = []
        for k, label in enumerate(self.labels):
            same = labels == label
            fit = iou[:, k].detach().where(same, torch.full_like(iou[:, k], -1.0))
            j = int(fit.argmax()) if fit.numel() else -1
            if j < 0 or float(fit[j]) < self.iou_threshold:
                raise TargetError(self._miss(b, k, label, iou[:, k].detach(), labels, fit))
            score = scores[j] + iou[j, k] if self.with_iou else scores[j]
            out.append(score)
        return torch.stack(out)

    def _miss(self, b: int, k: int, label: int, iou: torch.Tensor, labels: torch.Tensor,
              fit: torch.Tensor) -> str:
        box = [round(v, 2) for v in self.boxes[k].tolist()]
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
    IoU 1. The explained score is y_bk = p_{labels[k]} * p_o (or p_{labels[k]}).
    """

    def __init__(self, boxes: Any, labels: int | Sequence[int], *, iou_threshold: float = 0.5,
                 objectness: bool = True,
                 box_format: Literal["cxcywh", "xyxy"] = "cxcywh") -> None:
        self.boxes, self.labels = _reference(boxes, labels)
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
        bad = [c for c in self.labels if not 0 <= c < classes]
        if bad:
            raise TargetError(f"label {bad[0]} is out of range: the output has {classes} "
                              f"classes, so labels run from 0 to {classes - 1}")
        boxes = raw[..., :4] if self.box_format == "xyxy" else cxcywh_to_xyxy(raw[..., :4])
        probs = raw[..., first:]
        if self.objectness:
            probs = probs * raw[..., 4:5]
        labels = torch.tensor(self.labels, device=raw.device)
        scores = probs[..., labels]  # (B, N, K)
        out = []
        for b in range(raw.shape[0]):
            iou = box_iou(boxes[b].detach(), self.boxes.to(raw.device, raw.dtype))  # (N, K)
            picks = []
            for k in range(len(self.labels)):
                best = iou[:, k].max()
                if float(best) < self.iou_threshold:
                    box = [round(v, 2) for v in self.boxes[k].tolist()]
                    raise TargetError(
                        f"image {b}: no pre-NMS prediction overlaps box {box} with IoU >= "
                        f"{self.iou_threshold} (best IoU {float(best):.3f}); pass the boxes "
                        f"NMS kept, in the raw output's coordinates (box_format="
                        f"{self.box_format!r})")
                tied = iou[:, k] >= best
                pick = scores[b, :, k].detach().where(tied, torch.full_like(
                    scores[b, :, k], -torch.inf)).argmax()
                picks.append(scores[b, pick, k])
            out.append(torch.stack(picks))
        return torch.stack(out)
