#!/usr/bin/env python3
"""camlens's Grad-CAM family and perturbation methods against pytorch-grad-cam and torchcam:
agreement of the maps (no timing).

On a torchvision model with seeded random weights (default resnet18, layer4) and a few seeded
random images, each method is run by every library that has it, on the model's top-1 classes;
the maps are compared at the layer's resolution, each min-max scaled per map: the largest and
mean absolute difference. pytorch-grad-cam's maps are taken before its resize (its
``scale_cam_image`` is replaced by the identity for this script, so they are its ReLU'd layer
maps); torchcam's are its layer maps.

camlens runs with the options that give the peers' equation (benchmarks/peers.py) and, where
its default differs, also with its default (``paper`` rows). Two extra rows explain known
differences: torchcam's Grad-CAM++ against alpha = g^2 (its division is a no-op), and
pytorch-grad-cam's Eigen-CAM against camlens's with the sign flipped (it keeps LAPACK's sign).

    python benchmarks/agreement.py [--model resnet18] [--images 2] [--size 128]

Needs the ``bench`` extra (torchvision, grad-cam, torchcam; see docs/performance.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from peers import FAMILY, camlens_call, libs_with, pgc_call, torchcam_call  # noqa: E402

LAYERS = {"resnet18": "layer4", "vgg11": "features.19", "resnet50": "layer4",
          "vgg16": "features.29"}


def minmax(m: torch.Tensor) -> torch.Tensor:
    flat = m.double().flatten(-2)
    lo, hi = flat.amin(-1, keepdim=True), flat.amax(-1, keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, 1), 0)


def compare(a: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
    """a, b: (B, h, w) maps. Largest and mean |minmax(a) - minmax(b)|."""
    if a.shape != b.shape:
        return {"error": f"shapes {tuple(a.shape)} vs {tuple(b.shape)}"}
    d = (minmax(a) - minmax(b)).abs()
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean())}


def gradcampp_variant(model: Any, layer: str, x: torch.Tensor, classes: torch.Tensor,
                      eps: float | None) -> torch.Tensor:
    """Grad-CAM++ as a peer computes it: ``eps=None``: alpha = g^2 (torchcam's division never
    reaches alpha); else Eq. 19 with ``eps`` added to the denominator (pytorch-grad-cam's 1e-6,
    alpha = 0 where g = 0). w = sum_ij alpha ReLU(g), L = ReLU(sum_k w A)."""
    store: list[torch.Tensor] = []
    h = model.get_submodule(layer).register_forward_hook(lambda m, i, o: store.append(o))
    try:
        out = model(x)
    finally:
        h.remove()
    a = store[0]
    (g,) = torch.autograd.grad(out.gather(1, classes).sum(), a)
    model.zero_grad(set_to_none=True)
    a = a.detach()
    if eps is None:
        alpha = g * g
    else:
        den = 2 * g * g + a.sum((2, 3), keepdim=True) * g ** 3 + eps
        alpha = torch.where(g != 0, g * g / den, 0)
    w = (alpha * g.clamp(min=0)).sum((2, 3))
    return torch.einsum("bc,bchw->bhw", w, a).clamp(min=0)


def scorecam_variant(model: Any, layer: str, x: torch.Tensor, classes: torch.Tensor, *,
                     align_corners: bool, scale_first: bool, batch: int = 32) -> torch.Tensor:
    """Score-CAM as the peers compute it: alpha = softmax_k of the class logit of X o H^k,
    with H^k = minmax(upsample(A^k)) (pytorch-grad-cam: align_corners=True) or
    upsample(minmax(A^k)) (``scale_first``, torchcam: align_corners=False)."""
    import torch.nn.functional as F

    store: list[torch.Tensor] = []
    h = model.get_submodule(layer).register_forward_hook(lambda m, i, o: store.append(o))
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    a = store[0]

    def mm(t: torch.Tensor) -> torch.Tensor:
        lo = t.flatten(-2).amin(-1)[..., None, None]
        hi = t.flatten(-2).amax(-1)[..., None, None]
        return (t - lo) / (hi - lo + 1e-8)

    up = (F.interpolate(mm(a), size=x.shape[-2:], mode="bilinear", align_corners=align_corners)
          if scale_first else
          mm(F.interpolate(a, size=x.shape[-2:], mode="bilinear", align_corners=align_corners)))
    maps = []
    for s in range(x.shape[0]):
        masked = x[s:s + 1] * up[s][:, None]
        with torch.no_grad():
            logits = torch.cat([model(masked[i:i + batch]) for i in range(0, len(masked), batch)])
        alpha = logits[:, classes[s, 0]].softmax(0)
        maps.append(torch.einsum("c,chw->hw", alpha, a[s]).clamp(min=0))
    return torch.stack(maps)


def best_sign(base: Any, layer: str, x: torch.Tensor, classes: torch.Tensor,
              theirs: torch.Tensor) -> torch.Tensor:
    """camlens's centred Eigen-CAM with, per image, the sign closer to ``theirs`` (an SVD's
    sign is arbitrary and pytorch-grad-cam keeps LAPACK's)."""
    import camlens

    proj = camlens.explain(copy.deepcopy(base), x, method="eigencam", layer=layer,
                           target=classes, center=True, relu=False).raw[:, 0]
    out = []
    for s in range(proj.shape[0]):
        options = [proj[s].clamp(min=0), (-proj[s]).clamp(min=0)]
        diffs = [float((minmax(o[None]) - minmax(theirs[s][None])).abs().max()) for o in options]
        out.append(options[diffs.index(min(diffs))])
    return torch.stack(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18", choices=sorted(LAYERS))
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--kinds", default=",".join(FAMILY))
    p.add_argument("--explain-scorecam", action="store_true",
                   help="also run each peer's Score-CAM variant (one more masked forward per "
                        "channel and peer) to show where the maps differ")
    p.add_argument("--out", type=Path, default=HERE / "results" / "agreement")
    a = p.parse_args(argv)

    import pytorch_grad_cam.base_cam as pgc_base
    import torchvision

    pgc_base.scale_cam_image = lambda cam, target_size=None: cam  # layer maps, no resize
    torch.manual_seed(0)
    base = getattr(torchvision.models, a.model)(weights=None).eval()
    layer = LAYERS[a.model]
    x = torch.randn(a.images, 3, a.size, a.size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        classes = base(x).argmax(1, keepdim=True)

    rows: list[dict[str, Any]] = []

    def add(kind: str, what: str, other: str, ref: torch.Tensor, got: Any,
            seconds: float) -> None:
        got = torch.as_tensor(got).double()
        rows.append({"kind": kind, "camlens": what, "peer": other,
                     "seconds": round(seconds, 2), **compare(ref, got)})
        print(rows[-1], flush=True)

    for kind in a.kinds.split(","):
        t0 = time.perf_counter()
        mine = camlens_call(kind, copy.deepcopy(base), layer, x, classes)().raw[:, 0]
        t_mine = time.perf_counter() - t0
        method = FAMILY[kind][0]
        paper = None
        if FAMILY[kind][1]:
            import camlens

            paper = camlens.explain(copy.deepcopy(base), x, method=method, layer=layer,
                                    target=classes).raw[:, 0]
        for lib in libs_with(kind)[1:]:
            model = copy.deepcopy(base)
            call = (pgc_call if lib == "pytorch-grad-cam" else torchcam_call)(
                kind, model, layer, x, classes)
            t0 = time.perf_counter()
            theirs = torch.as_tensor(call()).double()
            seconds = time.perf_counter() - t0
            shown = " ".join(f"{k}={v}" for k, v in FAMILY[kind][1].items())
            add(kind, f"{method} {shown}".strip(), lib, mine, theirs, seconds)
            if paper is not None:
                add(kind, f"{method} (default)", lib, paper, theirs, seconds)
            if kind == "eigencam" and lib == "pytorch-grad-cam":
                add(kind, f"{method} center=True, the sign that fits each image", lib,
                    best_sign(base, layer, x, classes, theirs), theirs, seconds)
            if kind == "gradcampp" and lib == "torchcam":
                undivided = gradcampp_variant(copy.deepcopy(base), layer, x, classes, None)
                add(kind, "alpha = g^2 (no division)", lib, undivided, theirs, seconds)
            if kind == "scorecam" and a.explain_scorecam:
                variant = scorecam_variant(copy.deepcopy(base), layer, x, classes,
                                           align_corners=lib == "pytorch-grad-cam",
                                           scale_first=lib == "torchcam")
                how = ("align_corners=True" if lib == "pytorch-grad-cam" else
                       "min-max before upsampling")
                add(kind, f"Algorithm 1 on logits, {how}", lib, variant, theirs, seconds)
            if kind == "gradcampp" and lib == "pytorch-grad-cam":
                eps = gradcampp_variant(copy.deepcopy(base), layer, x, classes, 1e-6)
                add(kind, "Eq. 19 + 1e-6 in the denominator", lib, eps, theirs, seconds)
        rows.append({"kind": kind, "camlens": method, "peer": "(camlens time)",
                     "seconds": round(t_mine, 2)})

    result = {"model": a.model, "layer": layer, "images": a.images, "size": a.size,
              "torch": torch.__version__, "python": platform.python_version(), "rows": rows}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# Agreement with the peers: {a.model} ({layer}), {a.images} random images of "
             f"{a.size} px, random weights (seed 0)", "",
             "| method | camlens | peer | max abs diff | mean abs diff |", "|---|---|---|---|---|"]
    for r in rows:
        if "max_abs" in r:
            lines.append(f"| {r['kind']} | {r['camlens']} | {r['peer']} | {r['max_abs']:.2e} | "
                         f"{r['mean_abs']:.2e} |")
        elif "error" in r:
            lines.append(f"| {r['kind']} | {r['camlens']} | {r['peer']} | {r['error']} | |")
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
