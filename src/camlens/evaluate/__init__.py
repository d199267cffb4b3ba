"""Evaluation of visual explanations, as in the Grad-CAM paper (Selvaraju et al., ICCV 2017 /
IJCV 2019): weakly-supervised localisation (Sec. 4.1), the pointing game (Sec. 4.3), faithfulness
by rank correlation (Sec. 5.3), RISE deletion / insertion curves, and ground-truth readers.

Pure functions over numpy arrays (torch tensors are accepted and converted). Boxes are
inclusive, 0-based ``(x0, y0, x1, y1)``; connected components default to 8-connectivity.
"""

from camlens.evaluate.curves import auc, deletion_curve, gaussian_blur, insertion_curve
from camlens.evaluate.datasets import (
    VOC_CLASSES,
    AnnotatedObject,
    Sample,
    coco_box,
    coco_mask,
    dataset_formats,
    load_dataset,
    polygon_mask,
    read_coco,
    read_ilsvrc_xml,
    read_synsets,
    read_voc_xml,
    register_format,
    rle_decode,
    rle_encode,
    wnid_to_index,
)
from camlens.evaluate.faithfulness import inside_outside_ratio, rank_correlation, rankdata, resize_map
from camlens.evaluate.localization import (
    Box,
    ImageLocalization,
    LocalizationResult,
    RELATIVE_TO,
    bbox_from_map,
    box_to_mask,
    connected_components,
    iou,
    largest_component,
    localization_error,
    localization_table,
    mask_to_box,
)
from camlens.evaluate.pointing import (
    PointingResult,
    PointingTrial,
    choose_rejection_threshold,
    max_locations,
    pointing_game,
    pointing_hit,
)

__all__ = [
    "AnnotatedObject",
    "Box",
    "ImageLocalization",
    "LocalizationResult",
    "PointingResult",
    "PointingTrial",
    "RELATIVE_TO",
    "Sample",
    "VOC_CLASSES",
    "auc",
    "bbox_from_map",
    "box_to_mask",
    "choose_rejection_threshold",
    "coco_box",
    "coco_mask",
    "connected_components",
    "dataset_formats",
    "deletion_curve",
    "gaussian_blur",
    "inside_outside_ratio",
    "insertion_curve",
    "iou",
    "largest_component",
    "load_dataset",
    "localization_error",
    "localization_table",
    "mask_to_box",
    "max_locations",
    "pointing_game",
    "pointing_hit",
    "polygon_mask",
    "rank_correlation",
    "rankdata",
    "read_coco",
    "read_ilsvrc_xml",
    "read_synsets",
    "read_voc_xml",
    "register_format",
    "resize_map",
    "rle_decode",
    "rle_encode",
    "wnid_to_index",
]

# Dataset-scale runs; importing the runner also registers the "synthetic:" dataset format.
from camlens.evaluate.runner import (  # noqa: E402
    evaluate,
    evaluate_faithfulness,
    evaluate_localization,
    evaluate_pointing,
)

__all__ += ["evaluate", "evaluate_faithfulness", "evaluate_localization", "evaluate_pointing"]
