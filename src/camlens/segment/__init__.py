"""Weakly-supervised segmentation with SEC (Kolesnikov & Lampert, ECCV 2016) seeded by any
camlens map: the paper's Sec. 4.2 (Grad-CAM seeds vs CAM seeds) on world v2.

- :mod:`~camlens.segment.seeds`: SEC's localisation cues from a map (20% of its maximum) and
  the background cue (lowest 10% gradient saliency); their precision and recall.
- :mod:`~camlens.segment.crf`: the fully-connected CRF, exact mean-field inference.
- :mod:`~camlens.segment.losses`: seeding, expansion (GWRP) and constrain-to-boundary losses.
- :mod:`~camlens.segment.net`: a small FCN head on the frozen world v2 ``vgg`` features.
- :mod:`~camlens.segment.train`: data, training, prediction, mean IoU.
- :mod:`~camlens.segment.pipeline`: :func:`compare_seeds`, the paper's comparison.
"""

from camlens.segment.crf import CRFParams, crf_probabilities, kernel_matrix, mean_field
from camlens.segment.losses import constrain_loss, expansion_loss, gwrp, seeding_loss
from camlens.segment.net import GRID, SegHead, vgg_features
from camlens.segment.pipeline import (
    ARMS,
    EXACT,
    PAPER,
    TEST,
    TRAIN,
    Arm,
    ArmResult,
    SegmentComparison,
    check_disjoint,
    compare_seeds,
    prepare,
    run_arm,
)
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
    NUM_LABELS,
    SegData,
    TrainConfig,
    confusion,
    make_data,
    mean_iou,
    predict,
    present_mask,
    scene_spec,
    train_head,
)

__all__ = [
    "CRFParams", "crf_probabilities", "kernel_matrix", "mean_field",
    "constrain_loss", "expansion_loss", "gwrp", "seeding_loss",
    "GRID", "SegHead", "vgg_features",
    "ARMS", "EXACT", "PAPER", "TRAIN", "TEST", "Arm", "ArmResult", "SegmentComparison",
    "check_disjoint", "compare_seeds", "prepare", "run_arm",
    "SeedQuality", "background_cues", "class_maps", "foreground_cues", "gradient_saliency",
    "make_cues", "mask_cues", "seed_quality",
    "NUM_LABELS", "SegData", "TrainConfig", "confusion", "make_data", "mean_iou", "predict",
    "present_mask", "scene_spec", "train_head",
]
