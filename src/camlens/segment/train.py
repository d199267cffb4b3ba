"""Data, training with SEC's losses, prediction and mean IoU for weakly-supervised segmentation.

Labels: 0 is the background, ``c + 1`` the world v2 class ``c`` (L = 34 labels).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from camlens.segment.crf import CRFParams, crf_probabilities, image_kernels
from camlens.segment.losses import constrain_loss, expansion_loss, seeding_loss
from camlens.segment.net import SegHead
from camlens.synthetic.v2.spec import SyntheticSpec, parse_synthetic

__all__ = ["NUM_LABELS", "SCENE_KIND", "SegData", "scene_spec", "make_data", "present_mask",
           "TrainConfig", "train_head", "predict", "confusion", "mean_iou"]

#: Background + world v2's 33 classes.
NUM_LABELS = 34
LOSSES = ("seed", "expand", "constrain")
#: The scenes' kind when a data spec names none: several objects of distinct classes.
SCENE_KIND = "multi"


@dataclass(frozen=True)
class SegData:
    """Images (N, 3, H, W) in [0, 1], each image's classes, exact label maps ``truth``
    (N, H, W) int64 (0 background, c + 1 class c)."""

    images: torch.Tensor
    labels: list[list[int]]
    truth: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])


def scene_spec(data: str | SyntheticSpec) -> SyntheticSpec:
    """``data`` (``synthetic:seed=S,n=N[,...]``, text or parsed; docs/world.md) with kind
    :data:`SCENE_KIND` where it names none."""
    spec = parse_synthetic(data) if isinstance(data, str) else data
    return replace(spec, kind=spec.kind or SCENE_KIND)


def make_data(data: str | SyntheticSpec) -> SegData:
    """The world v2 scenes of ``data`` (:func:`scene_spec`: kind default ``multi``, 2-4
    objects of distinct classes, PASCAL-style) with their exact per-pixel label maps."""
    scenes = scene_spec(data).scenes()
    images = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2)
    truth = []
    for s in scenes:
        lut = np.array([0] + [o.label + 1 for o in s.objects], dtype=np.int64)
        truth.append(lut[s.concepts["object"]])
    return SegData(images.float().div(255.0).contiguous(), [s.labels for s in scenes],
                   torch.from_numpy(np.stack(truth)))


def present_mask(labels: Sequence[Sequence[int]], num_labels: int = NUM_LABELS) -> torch.Tensor:
    """(B, L) bool: background and each image's classes (label c + 1)."""
    out = torch.zeros(len(labels), num_labels, dtype=torch.bool)
    out[:, 0] = True
    for i, row in enumerate(labels):
        out[i, [c + 1 for c in row]] = True
    return out


@dataclass(frozen=True)
class TrainConfig:
    """Adam on the head, ``steps`` minibatches of ``batch`` images drawn from a generator seeded
    by ``seed`` (the head's initialisation too), SEC's ``losses`` summed with weight 1; ``width``
    is the head's channel width; ``crf`` the constrain loss's CRF (run on the head's grid; 5
    mean-field steps, not 10, to halve its cost: the CRF is most of a training step on CPU)."""

    steps: int = 400
    batch: int = 16
    lr: float = 1e-3
    weight_decay: float = 5e-4
    seed: int = 0
    width: int = 32
    losses: tuple[str, ...] = LOSSES
    crf: CRFParams = field(default_factory=lambda: CRFParams(iterations=5))

    def __post_init__(self) -> None:
        unknown = set(self.losses) - set(LOSSES)
        if unknown or not self.losses:
            raise ValueError(f"losses must be a non-empty subset of {LOSSES}, got {self.losses}")
        if self.steps < 1 or self.batch < 1 or not self.lr > 0:
            raise ValueError(f"steps, batch and lr must be positive, got {self.steps}, "
                             f"{self.batch}, {self.lr}")


def train_head(f2: torch.Tensor, f3: torch.Tensor, images: torch.Tensor, cues: torch.Tensor,
               present: torch.Tensor, config: TrainConfig,
               progress: Callable[[int, dict[str, float]], None] | None = None,
               ) -> tuple[SegHead, list[dict[str, float]]]:
    """Train a :class:`SegHead` on frozen features (f2, f3) with SEC's losses.

    ``images`` (N, 3, H, W) feed the CRF of the constrain loss, ``cues`` (N, L, g, g) bool the
    seeding loss, ``present`` (N, L) bool the expansion loss and the CRF's allowed labels.
    Returns the head (eval mode) and one dict of loss values per step. The CRF kernels of all
    training images are computed once up front (float16, 1.2 MB per image at grid 28)."""
    n = f2.shape[0]
    if not (f3.shape[0] == images.shape[0] == cues.shape[0] == present.shape[0] == n):
        raise ValueError("features, images, cues and present labels must have one row per image")
    torch.manual_seed(config.seed)
    head = SegHead(num_labels=cues.shape[1], width=config.width)
    kernels = (image_kernels(images, cues.shape[-1], config.crf)
               if "constrain" in config.losses else None)
    opt = torch.optim.Adam(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    order = torch.randperm(n, generator=gen)
    pos = 0
    for step in range(config.steps):
        if pos + config.batch > n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos:pos + config.batch]
        pos += config.batch
        logits = head(f2[idx], f3[idx])
        log_probs = F.log_softmax(logits, dim=1)
        probs = log_probs.exp()
        parts: dict[str, torch.Tensor] = {}
        if "seed" in config.losses:
            parts["seed"] = seeding_loss(log_probs, cues[idx])
        if "expand" in config.losses:
            parts["expand"] = expansion_loss(probs, present[idx])
        if "constrain" in config.losses:
            assert kernels is not None
            q = crf_probabilities(probs.detach(), images[idx], config.crf, allowed=present[idx],
                                  kernel=kernels[idx])
            parts["constrain"] = constrain_loss(probs, q)
        loss = torch.stack(list(parts.values())).sum()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"SEC loss is not finite at step {step}: "
                                     f"{ {k: float(v) for k, v in parts.items()} }")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        record = {k: float(v.detach()) for k, v in parts.items()} | {"total": float(loss.detach())}
        history.append(record)
        if progress is not None:
            progress(step, record)
    head.eval()
    return head, history


@torch.no_grad()
def predict(head: SegHead, f2: torch.Tensor, f3: torch.Tensor, size: int,
            crf: CRFParams | None = None, images: torch.Tensor | None = None,
            batch: int = 32) -> torch.Tensor:
    """Label maps (N, size, size) int64: the head's probabilities, optionally refined by the CRF
    on its grid with ``images`` (SEC post-processes with the CRF at test time, over all labels:
    no image labels), bilinearly upsampled to ``size``, argmax."""
    if crf is not None and images is None:
        raise ValueError("predict with a CRF needs the images")
    out = []
    for start in range(0, f2.shape[0], batch):
        probs = torch.softmax(head(f2[start:start + batch], f3[start:start + batch]), dim=1)
        if crf is not None:
            assert images is not None
            probs = crf_probabilities(probs, images[start:start + batch], crf)
        up = F.interpolate(probs, size=(size, size), mode="bilinear", align_corners=False)
        out.append(up.argmax(1))
    return torch.cat(out)


def confusion(pred: torch.Tensor, truth: torch.Tensor, num_labels: int = NUM_LABELS
              ) -> torch.Tensor:
    """(L, L) int64 counts, rows = true label, columns = predicted."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and truth {tuple(truth.shape)} differ")
    flat = truth.reshape(-1).long() * num_labels + pred.reshape(-1).long()
    return torch.bincount(flat, minlength=num_labels ** 2).reshape(num_labels, num_labels)


def mean_iou(pred: torch.Tensor, truth: torch.Tensor, num_labels: int = NUM_LABELS
             ) -> tuple[float, list[float]]:
    """PASCAL VOC's mean IoU (background included): per label, intersection / union of its
    pixels summed over the whole set, TP / (TP + FP + FN); the mean over the labels that occur
    in the truth or the prediction (the others are NaN in the per-label list)."""
    conf = confusion(pred, truth, num_labels).double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    ious = [float(t / u) if u > 0 else math.nan for t, u in zip(tp, union)]
    seen = [v for v in ious if not math.isnan(v)]
    return (sum(seen) / len(seen) if seen else math.nan), ious

