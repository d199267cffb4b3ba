"""Models camlens can explain out of the box, and the one registry every command loads through.

>>> record = camlens.models.load_model("efficientnet_lite0")   # or synthetic:vgg, ...
>>> record.model, record.preprocess, record.labels, record.default_layer
"""

from camlens.models.bundled import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    efficientnet_lite0,
    efficientnet_lite0_weights_path,
    imagenet_labels,
    model_input_size,
    preprocess_capped,
    preprocess_image,
)
from camlens.models.efficientnet_lite import EfficientNetLite0
from camlens.models.registry import (
    BUNDLED,
    FACTORIES,
    ModelRecord,
    ModelSource,
    load_model,
    register_model,
)

__all__ = [
    "BUNDLED",
    "FACTORIES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EfficientNetLite0",
    "ModelRecord",
    "ModelSource",
    "efficientnet_lite0",
    "efficientnet_lite0_weights_path",
    "imagenet_labels",
    "load_model",
    "model_input_size",
    "preprocess_capped",
    "preprocess_image",
    "register_model",
]
