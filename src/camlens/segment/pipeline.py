"""Sec. 4.2: SEC trained from Grad-CAM seeds vs CAM seeds on world v2, end to end.

>>> from camlens.segment import compare_seeds
>>> result = compare_seeds("synthetic:seed=4200,n=800", "synthetic:seed=20251,n=300", steps=400)
>>> print(result.markdown())

Scenes are named by world v2's data spec (``synthetic:seed=S,n=N[,...]``, docs/world.md; kind
default ``multi``); the defaults :data:`TRAIN` and :data:`TEST` are 800 scenes of seed 4200 and
300 held-out scenes of seed 20251, and the two may not share a scene. Every arm sees the same
training and test scenes, the same background cues (the ``vgg`` net's
gradient saliency: only the foreground seeds change, as in the paper, which replaced CAM's maps
and nothing else), the same head initialisation and minibatch order; only the foreground maps
differ: CAM on ``vgg_gap`` (SEC's seeds), Grad-CAM on ``vgg`` (the paper's "standard VGG-16")
and Grad-CAM on ``vgg_gap`` (the same net as CAM: on a GAP + linear head Grad-CAM is CAM up to a
constant, Sec. 3.1, so these two arms should agree). ``reference=True`` adds seeds from the
exact masks (cells wholly inside an object), an upper reference that SEC cannot have.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from camlens.plural import counted
from camlens.segment.crf import CRFParams
from camlens.segment.net import GRID, vgg_features
from camlens.segment.seeds import (
    SeedQuality,
    background_cues,
    class_maps,
    foreground_cues,
    gradient_saliency,
    make_cues,
    mask_cues,
    seed_quality,
)
from camlens.segment.train import (
    SCENE_KIND,
    SegData,
    TrainConfig,
    make_data,
    mean_iou,
    predict,
    present_mask,
    scene_spec,
    train_head,
)
from camlens.synthetic.v2.spec import SyntheticSpec

__all__ = ["PAPER", "ARMS", "EXACT", "Arm", "ArmResult", "SegmentComparison", "run_arm",
           "compare_seeds", "TRAIN_SEED", "TEST_SEED", "TRAIN", "TEST", "check_disjoint",
           "prepare"]

#: The paper's PASCAL VOC 2012 mean IoU with SEC: seeds from CAM and from Grad-CAM.
PAPER = {"cam": 44.6, "gradcam": 49.6}
TRAIN_SEED, TEST_SEED = 4200, 20251  # TEST_SEED is world v2's held-out seed
#: The default training and test scenes.
TRAIN = SyntheticSpec(TRAIN_SEED, 800, kind=SCENE_KIND)
TEST = SyntheticSpec(TEST_SEED, 300, kind=SCENE_KIND)


@dataclass(frozen=True)
class Arm:
    """Where the foreground seeds come from: a world v2 net, a camlens method, its layer; or
    :data:`EXACT`, cues from the exact masks (a reference, not SEC)."""

    net: str
    method: str
    layer: str | None = None

    @property
    def name(self) -> str:
        if self == EXACT:
            return "exact masks (reference)"
        return f"{self.method} on {self.net}"


ARMS = (Arm("vgg_gap", "cam"), Arm("vgg", "gradcam"), Arm("vgg_gap", "gradcam"))
#: Reference arm: foreground cues = grid cells wholly inside an object's exact mask.
EXACT = Arm("exact", "masks")


@dataclass(frozen=True)
class ArmResult:
    """One arm: its seeds' quality on the training images; the test mean IoU (%) of the head
    trained with each seed in ``config.seed, config.seed + 1, ...`` (``mious``), without and with
    test-time CRF; per-label IoU (%, NaN where a label never occurs) and the mean of the last
    20 steps' losses of the first run; seconds for the seeds and for all training runs."""

    arm: Arm
    seeds: SeedQuality
    mious: tuple[float, ...]
    mious_crf: tuple[float, ...]
    per_label: tuple[float, ...]
    final_losses: dict[str, float]
    seed_seconds: float
    train_seconds: float

    @property
    def miou(self) -> float:
        return statistics.fmean(self.mious)

    @property
    def miou_crf(self) -> float:
        return statistics.fmean(self.mious_crf)


def _mean_sd(values: tuple[float, ...]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}"


@dataclass(frozen=True)
class SegmentComparison:
    """All arms, the trivial all-background baseline's mean IoU (%), the set-up (training and
    test scenes as data specs)."""

    arms: tuple[ArmResult, ...]
    background_miou: float
    train: SyntheticSpec
    test: SyntheticSpec
    config: TrainConfig
    repeats: int
    seconds: float

    def result(self, net: str, method: str) -> ArmResult:
        for r in self.arms:
            if (r.arm.net, r.arm.method) == (net, method):
                return r
        raise KeyError(f"no arm {method} on {net}")

    def markdown(self) -> str:
        """The table: paper's PASCAL VOC mIoU beside ours, and seed quality."""
        lines = [
            "| Seeds | Paper mIoU (VOC 2012) | Ours mIoU | Ours + CRF | Fg seed precision | "
            "Fg seed recall | Bg seed precision | Seed coverage |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in self.arms:
            paper = PAPER.get(r.arm.method) if _PAPER_NET.get(r.arm.method) == r.arm.net else None
            s = r.seeds
            lines.append(
                f"| {r.arm.name} | {'' if paper is None else f'{paper:.1f}'} | "
                f"{_mean_sd(r.mious)} | {_mean_sd(r.mious_crf)} | {100 * s.fg_precision:.1f} | "
                f"{100 * s.fg_recall:.1f} | {100 * s.bg_precision:.1f} | "
                f"{100 * s.coverage:.1f} |")
        lines.append(f"| all background (trivial) | | {self.background_miou:.1f} | | | | | |")
        lines.append("")
        spread = (f"; mean ± sd over {self.repeats} trainings (head seeds {self.config.seed}.."
                  f"{self.config.seed + self.repeats - 1})" if self.repeats > 1 else "")
        lines.append(f"World v2 scenes: {counted(self.train.n, 'training image')} "
                     f"(`{self.train}`), {counted(self.test.n, 'test image')} (`{self.test}`); "
                     f"{counted(self.config.steps, 'step')} of "
                     f"{counted(self.config.batch, 'image')}{spread}; "
                     f"{self.seconds:.0f} s in all. mIoU in %, 34 labels with background; seed "
                     "precision/recall in % of pixels against the exact masks.")
        return "\n".join(lines)


_PAPER_NET = {"cam": "vgg_gap", "gradcam": "vgg"}


def _net(name: str, cache: dict[str, nn.Module]) -> nn.Module:
    from camlens.synthetic.v2 import load_pretrained

    if name not in cache:
        cache[name] = load_pretrained(name)
    return cache[name]


def run_arm(arm: Arm, train: SegData, test: SegData, feats: tuple[torch.Tensor, ...],
            bg: torch.Tensor, config: TrainConfig, nets: dict[str, nn.Module] | None = None,
            repeats: int = 1, crf_test: CRFParams | None = None,
            progress: Callable[[int, dict[str, float]], None] | None = None) -> ArmResult:
    """Seeds from ``arm`` on the training images, ``repeats`` heads trained with SEC's losses
    (head seeds ``config.seed`` + 0, 1, ...), their test mean IoU. ``feats`` = (train f2, train
    f3, test f2, test f3); ``bg`` (N, g, g) background cues of the training images;
    ``crf_test``: the test-time CRF (default :class:`CRFParams`, 10 steps)."""
    from camlens.synthetic.v2 import DEFAULT_LAYERS, NUM_CLASSES

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    nets = {} if nets is None else nets
    t0 = time.perf_counter()
    present = present_mask(train.labels)
    if arm == EXACT:
        fg = mask_cues(train.truth, GRID, NUM_CLASSES)
    else:
        layer = arm.layer or (DEFAULT_LAYERS[arm.net] if arm.method not in _PIXEL else None)
        maps = class_maps(_net(arm.net, nets), train.images, train.labels, arm.method, layer,
                          NUM_CLASSES)
        fg = foreground_cues(maps, present[:, 1:], GRID)
    cues = make_cues(fg, bg)
    quality = seed_quality(cues, train.truth)
    t1 = time.perf_counter()
    size = test.images.shape[-1]
    mious, mious_crf, first = [], [], None
    for r in range(repeats):
        head, history = train_head(feats[0], feats[1], train.images, cues, present,
                                   replace(config, seed=config.seed + r), progress=progress)
        pred = predict(head, feats[2], feats[3], size)
        pred_crf = predict(head, feats[2], feats[3], size, crf=crf_test or CRFParams(),
                           images=test.images)
        miou, ious = mean_iou(pred, test.truth)
        mious.append(100 * miou)
        mious_crf.append(100 * mean_iou(pred_crf, test.truth)[0])
        if first is None:
            tail = history[-20:]
            first = (ious, {k: sum(h[k] for h in tail) / len(tail) for k in tail[0]})
    assert first is not None
    return ArmResult(arm, quality, tuple(mious), tuple(mious_crf),
                     tuple(100 * v if not math.isnan(v) else v for v in first[0]), first[1],
                     t1 - t0, time.perf_counter() - t1)


_PIXEL = {"gradient", "guided-backprop", "deconvnet"}


def check_disjoint(train: SyntheticSpec, test: SyntheticSpec) -> None:
    """ValueError when the test scenes include a training scene (same seed, overlapping
    indices): the test mean IoU would not be held out."""
    if train.seed == test.seed and max(train.start, test.start) < min(
            train.start + train.n, test.start + test.n):
        raise ValueError(f"the test scenes {test} share scenes with the training scenes {train}; "
                         f"give the test scenes another seed (the held-out one is {TEST_SEED}) "
                         "or indices past the training ones (start=)")


def prepare(train_data: str | SyntheticSpec, test_data: str | SyntheticSpec,
            nets: dict[str, nn.Module] | None = None
            ) -> tuple[SegData, SegData, tuple[torch.Tensor, ...], torch.Tensor]:
    """Training and test scenes (data specs, :func:`~camlens.segment.train.scene_spec`), frozen
    ``vgg`` features of both, background cues of the training images (lowest 10% of the
    ``vgg`` net's gradient saliency)."""
    nets = {} if nets is None else nets
    train_spec, test_spec = scene_spec(train_data), scene_spec(test_data)
    check_disjoint(train_spec, test_spec)
    train, test = make_data(train_spec), make_data(test_spec)
    vgg = _net("vgg", nets)
    feats = (*vgg_features(vgg, train.images), *vgg_features(vgg, test.images))
    bg = background_cues(gradient_saliency(vgg, train.images, train.labels), GRID)
    return train, test, feats, bg


def compare_seeds(train_data: str | SyntheticSpec = TRAIN, test_data: str | SyntheticSpec = TEST,
                  steps: int = 400, *, arms: tuple[Arm, ...] = ARMS, seed: int = 0,
                  repeats: int = 1, reference: bool = False,
                  progress: Callable[[str], None] | None = None) -> SegmentComparison:
    """Train SEC's head ``repeats`` times per arm (default: CAM on ``vgg_gap``, Grad-CAM on
    ``vgg`` and on ``vgg_gap``; ``reference`` adds :data:`EXACT`, seeds from the exact masks)
    on the scenes of ``train_data``, measure on those of ``test_data`` (data specs, kind
    default ``multi``; ValueError when they share a scene) and return every arm's seed quality
    and test mIoU beside the all-background baseline."""
    t0 = time.perf_counter()
    nets: dict[str, nn.Module] = {}
    train_spec, test_spec = scene_spec(train_data), scene_spec(test_data)
    train, test, feats, bg = prepare(train_spec, test_spec, nets)
    config = TrainConfig(steps=steps, seed=seed)
    results = []
    for arm in arms + ((EXACT,) if reference else ()):
        if progress is not None:
            progress(f"training with {arm.name} seeds")
        results.append(run_arm(arm, train, test, feats, bg, config, nets, repeats=repeats))
    background, _ = mean_iou(torch.zeros_like(test.truth), test.truth)
    return SegmentComparison(tuple(results), 100 * background, train_spec, test_spec, config,
                             repeats, time.perf_counter() - t0)
