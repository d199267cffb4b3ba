"""Evaluation of visual explanations, as in the Grad-CAM paper (Selvaraju et al., ICCV 2017 /
IJCV 2019): weakly-supervised localisation (Sec. 4.1), the pointing game (Sec. 4.3), faithfulness
by rank correlation (Sec. 5.3), RISE deletion / insertion curves, the captioning and VQA
measurements (Sec. 8, :mod:`~camlens.evaluate.language`), and ground-truth readers.

- metrics, pure functions over numpy arrays (torch tensors are accepted and converted):
  :mod:`~camlens.evaluate.localization`, :mod:`~camlens.evaluate.pointing`,
  :mod:`~camlens.evaluate.faithfulness`, :mod:`~camlens.evaluate.curves`. Boxes are
  inclusive, 0-based ``(x0, y0, x1, y1)``; connected components default to 8-connectivity;
- ground truth: :mod:`~camlens.evaluate.datasets` (ILSVRC, VOC, COCO, ``synthetic:``);
- dataset-scale runs: :func:`evaluate_localization`, :func:`evaluate_pointing`,
  :func:`evaluate_faithfulness` and :func:`evaluate` (:mod:`~camlens.evaluate.tasks`), with
  their maps (:mod:`~camlens.evaluate.explainer`), resumable CSV rows
  (:mod:`~camlens.evaluate.store`) and tables (:mod:`~camlens.evaluate.report`);
- the paper's reproduction: :mod:`~camlens.evaluate.reproduce`.

Connected components and ranks need scipy, COCO masks pycocotools: ``pip install camlens[eval]``.
"""

from camlens.evaluate.curves import auc, deletion_curve, gaussian_blur, insertion_curve
from camlens.evaluate.datasets import (
    VOC_CLASSES,
    AnnotatedObject,
    ArraySample,
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
from camlens.evaluate.explainer import MapCache, localization_maps
from camlens.evaluate.faithfulness import (
    inside_outside_ratio,
    rank_correlation,
    rankdata,
    resize_map,
)
from camlens.evaluate.language import (
    MeanSEM,
    mask_rank_correlation,
    mean_sem,
    word_pointing_hit,
)
from camlens.evaluate.localization import (
    RELATIVE_TO,
    Box,
    ImageLocalization,
    LocalizationResult,
    bbox_from_map,
    box_to_mask,
    connected_components,
    iou,
    largest_component,
    localization_error,
    localization_table,
    mask_to_box,
)
from camlens.evaluate.model import resolve_model, to_unit_tensor
from camlens.evaluate.pointing import (
    PointingResult,
    PointingTrial,
    choose_rejection_threshold,
    max_locations,
    pointing_game,
    pointing_hit,
)
from camlens.evaluate.tasks import (
    FaithfulnessSummary,
    LocalizationSummary,
    PointingSummary,
    evaluate,
    evaluate_faithfulness,
    evaluate_localization,
    evaluate_pointing,
)

__all__ = [
    "RELATIVE_TO",
    "VOC_CLASSES",
    "AnnotatedObject",
    "ArraySample",
    "Box",
    "FaithfulnessSummary",
    "ImageLocalization",
    "LocalizationResult",
    "LocalizationSummary",
    "MapCache",
    "MeanSEM",
    "PointingResult",
    "PointingSummary",
    "PointingTrial",
    "Sample",
    "auc",
    "bbox_from_map",
    "box_to_mask",
    "choose_rejection_threshold",
    "coco_box",
    "coco_mask",
    "connected_components",
    "dataset_formats",
    "deletion_curve",
    "evaluate",
    "evaluate_faithfulness",
    "evaluate_localization",
    "evaluate_pointing",
    "gaussian_blur",
    "insertion_curve",
    "inside_outside_ratio",
    "iou",
    "largest_component",
    "load_dataset",
    "localization_error",
    "localization_maps",
    "localization_table",
    "mask_rank_correlation",
    "mask_to_box",
    "max_locations",
    "mean_sem",
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
    "resolve_model",
    "rle_decode",
    "rle_encode",
    "to_unit_tensor",
    "wnid_to_index",
    "word_pointing_hit",
]
