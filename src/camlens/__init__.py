"""camlens: Grad-CAM and its family of visual explanations.

>>> ex = camlens.explain(model, x, layer="layer4", target=281, method="gradcam")
"""

from camlens.api import explain, explain_layers
from camlens.detection import BoxTarget, YoloTarget
from camlens.errors import (
    ExplainError,
    InputError,
    LayerError,
    NonFiniteError,
    OptionError,
    TargetError,
)
from camlens.explanation import Explanation
from camlens.layers import residual_blocks
from camlens.methods import METHODS
from camlens.segmentation_target import SegmentationTarget
from camlens.targets import SampleTarget
from camlens.tasks import AnswerTarget, CaptionTarget, word_positions

__version__ = "0.1.0"
__all__ = [
    "METHODS",
    "AnswerTarget",
    "BoxTarget",
    "CaptionTarget",
    "ExplainError",
    "Explanation",
    "InputError",
    "LayerError",
    "NonFiniteError",
    "OptionError",
    "SampleTarget",
    "SegmentationTarget",
    "TargetError",
    "explain",
    "explain_layers",
    "residual_blocks",
    "word_positions",
    "YoloTarget",
]
