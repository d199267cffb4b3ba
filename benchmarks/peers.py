"""The Grad-CAM family and perturbation methods as jobs of camlens, pytorch-grad-cam and torchcam
(used by benchmarks/run.py for timing and by benchmarks/agreement.py for agreement).

``FAMILY[kind] = (camlens method, camlens options, pytorch-grad-cam class, torchcam class)``:
the options make camlens compute the peers' equation where camlens's default differs from it
(Score-CAM: the peers take Algorithm 1's softmax over channels of pre-softmax scores; Eigen-CAM:
pytorch-grad-cam centres the activations). None: the peer has no such method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

FAMILY: dict[str, tuple[str, dict[str, Any], str | None, str | None]] = {
    "gradcampp": ("gradcampp", {}, "GradCAMPlusPlus", "GradCAMpp"),
    "xgradcam": ("xgradcam", {}, "XGradCAM", "XGradCAM"),
    "hirescam": ("hirescam", {}, "HiResCAM", None),
    "layercam": ("layercam", {}, "LayerCAM", "LayerCAM"),
    "eigencam": ("eigencam", {"center": True}, "EigenCAM", None),
    "eigengradcam": ("eigengradcam", {}, "EigenGradCAM", None),
    "scorecam": ("scorecam", {"softmax": False, "channel_softmax": True}, "ScoreCAM", "ScoreCAM"),
    "ablationcam": ("ablationcam", {}, "AblationCAM", None),
}
SCORE_BATCH = 32  # masked images per forward, every library (torchcam's and camlens's default)
ABLATION_BATCH = 32  # ablated copies per forward (pytorch-grad-cam's default)


def libs_with(kind: str) -> tuple[str, ...]:
    """The libraries that have ``kind``."""
    _, _, pgc, tc = FAMILY[kind]
    return ("camlens",) + (("pytorch-grad-cam",) if pgc else ()) + (("torchcam",) if tc else ())


def camlens_call(kind: str, model: Any, layer: str, x: Any, classes: Any,
                 **explain_kw: Any) -> Callable[[], Any]:
    """``camlens.explain`` for ``kind`` with the peers' equation; returns the Explanation."""
    import camlens

    method, options = FAMILY[kind][:2]
    options = dict(options)
    if kind == "scorecam":
        options["batch_size"] = SCORE_BATCH
    if kind == "ablationcam":
        options["batch_size"] = ABLATION_BATCH
    return lambda: camlens.explain(model, x, method=method, layer=layer, target=classes,
                                   **options, **explain_kw)


def pgc_call(kind: str, model: Any, layer: str, x: Any, classes: Any) -> Callable[[], Any]:
    """pytorch-grad-cam's extractor for ``kind``, built once; the call returns (B, H, W) maps
    (min-max scaled and resized by pytorch-grad-cam)."""
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = getattr(pgc, FAMILY[kind][2])  # type: ignore[arg-type]
    kw: dict[str, Any] = {"batch_size": ABLATION_BATCH} if kind == "ablationcam" else {}
    cam = cls(model=model, target_layers=[model.get_submodule(layer)], **kw)
    if kind == "scorecam":
        cam.batch_size = SCORE_BATCH
    targets = [ClassifierOutputTarget(int(c)) for c in classes[:, 0].tolist()]

    def call() -> Any:
        out = cam(input_tensor=x, targets=targets)
        model.zero_grad(set_to_none=True)  # it calls loss.backward()
        return out

    return call


def torchcam_call(kind: str, model: Any, layer: str, x: Any, classes: Any) -> Callable[[], Any]:
    """torchcam's extractor for ``kind`` (hooks stay on ``model``: give it a private copy); the
    call returns its (B, h, w) layer maps, min-max scaled by torchcam."""
    import torch
    import torchcam.methods as tcm

    cls = getattr(tcm, FAMILY[kind][3])  # type: ignore[arg-type]
    kw: dict[str, Any] = {}
    if kind == "scorecam":
        kw = {"batch_size": SCORE_BATCH, "input_shape": tuple(x.shape[1:])}
    ext = cls(model, target_layer=layer, **kw)
    idx = classes[:, 0].tolist()

    def call() -> Any:
        if kind == "scorecam":
            with torch.no_grad():
                model(x)
            return ext(class_idx=idx)[0]
        out = ext(class_idx=idx, scores=model(x))[0]
        model.zero_grad(set_to_none=True)
        return out

    return call
