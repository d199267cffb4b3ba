"""The method registry: name -> :class:`Method`. It drives the CLI choices and the tests.

Each method is a small function ``run(job, **options) -> Explanation`` over evidence that
:mod:`camlens.evidence` gathers; its keyword options are its whole configuration.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import torch
from torch import nn

from camlens import maps
from camlens.evidence import Evidence, Reshape, gather, gradients
from camlens.explanation import Explanation
from camlens.guided import Rule, RuleState
from camlens.methods.gradcam import (
    cam_maps,
    check_gap_linear_head,
    classifier_weights,
    gradcam_maps,
    layer_gradients,
)
from camlens.methods.occlusion import occlusion_maps
from camlens.targets import TargetSpec, scores_of


@dataclass(frozen=True)
class Job:
    """What to explain: the model, its inputs, the layers and the target."""

    model: nn.Module
    inputs: tuple[torch.Tensor, ...]
    layers: Sequence[tuple[str, nn.Module]]
    target: TargetSpec
    top_k: int | None
    image_index: int = 0
    rectifiers: Literal["functions", "modules"] = "functions"
    reshape: Reshape | None = None

    @property
    def image(self) -> torch.Tensor:
        return self.inputs[self.image_index]

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.layers)


@dataclass(frozen=True)
class Method:
    """A registered method: its runner and what it needs."""

    name: str
    run: Callable[..., Explanation]
    needs_layer: bool
    pixel_space: bool
    summary: str
    options: tuple[str, ...] = field(default=())


METHODS: dict[str, Method] = {}


def register(name: str, *, needs_layer: bool, pixel_space: bool, summary: str):  # noqa: ANN201
    """Decorator adding a runner to :data:`METHODS`; its keyword-only parameters are its options."""

    def add(run: Callable[..., Explanation]) -> Callable[..., Explanation]:
        params = inspect.signature(run).parameters.values()
        opts = tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)
        METHODS[name] = Method(name, run, needs_layer, pixel_space, summary, opts)
        return run

    return add


def _heatmaps(job: Job, raws: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(maps at input size in [0, 1], raw): raw is the layer map for one layer, else the fused
    input-size map before its final scaling."""
    size = job.image.shape[-2:] if job.image.dim() == 4 else raws[0].shape[-2:]
    ups = [maps.minmax(maps.upsample(r, size)) for r in raws]
    if len(raws) == 1:
        return ups[0].float(), raws[0].detach()
    fused = torch.stack(ups).mean(dim=0)
    return maps.minmax(fused).float(), fused.detach()


def _result(job: Job, ev: Evidence, method: str, maps_: torch.Tensor, raw: torch.Tensor,
            weights: torch.Tensor | None, **options: Any) -> Explanation:
    out = getattr(ev.output, "logits", ev.output)
    return Explanation(
        method=method,
        maps=maps_.detach().contiguous(),  # whatever layout the model ran in
        raw=raw.detach().contiguous(),
        scores=ev.scores.detach(),
        weights=None if weights is None else weights.detach(),
        targets=ev.indices,
        output=out.detach() if isinstance(out, torch.Tensor) else None,
        layers=job.layer_names,
        options=options,
    )


def _gradcam_evidence(job: Job, backward: Rule) -> Evidence:
    rules = RuleState(backward) if backward != "normal" else None
    return gather(job.model, job.inputs, job.layers, job.target, job.top_k, grad="from-layer",
                  image_index=job.image_index, rules=rules, via=job.rectifiers,
                  reshape=job.reshape)


@register("gradcam", needs_layer=True, pixel_space=False,
          summary="Grad-CAM (Eq. 1-2): gradient-weighted sum of a layer's feature maps")
def run_gradcam(job: Job, *, pooling: maps.Pooling = "gap", relu: bool = True,
                counterfactual: bool = False, backward: Rule = "normal") -> Explanation:
    """Grad-CAM with the paper's switches: ``pooling`` (gap/gmp), ``relu``, ``counterfactual``
    (negated gradients, Sec. 3.3) and ``backward`` (the rectifier rule used while
    back-propagating to the layer, Table 3)."""
    ev = _gradcam_evidence(job, backward)
    grads = layer_gradients(ev)
    pairs = [gradcam_maps(a, g, pooling=pooling, relu=relu, counterfactual=counterfactual)
             for a, g in zip(ev.activations, grads)]
    heat, raw = _heatmaps(job, [p[0] for p in pairs])
    weights = pairs[0][1] if len(pairs) == 1 else None
    return _result(job, ev, "gradcam", heat, raw, weights, pooling=pooling, relu=relu,
                   counterfactual=counterfactual, backward=backward)


@register("cam", needs_layer=True, pixel_space=False,
          summary="CAM (Zhou et al.): classifier weights times feature maps, GAP + linear heads")
def run_cam(job: Job, *, classifier: str | nn.Module | None = None,
            relu: bool = True) -> Explanation:
    """CAM, M_c = sum_k w_k^c A^k; needs no backward pass. ``relu=False`` gives Zhou's map."""
    ev = gather(job.model, job.inputs, job.layers, job.target, job.top_k, grad="none",
                image_index=job.image_index, reshape=job.reshape)
    if ev.indices is None:
        from camlens.errors import TargetError

        raise TargetError("CAM explains class indices only; use method='gradcam' for a "
                          "callable target")
    pairs = []
    for name, act in zip(job.layer_names, ev.activations):
        weight, bias = classifier_weights(job.model, act.shape[1], classifier)
        check_gap_linear_head(act, weight, bias, ev.indices, ev.scores, name)
        pairs.append(cam_maps(act, weight, ev.indices, relu=relu))
    heat, raw = _heatmaps(job, [p[0] for p in pairs])
    weights = pairs[0][1] if len(pairs) == 1 else None
    return _result(job, ev, "cam", heat, raw, weights, relu=relu)


def _warn_if_no_rectifier(state: RuleState, job: Job, method: str) -> None:
    if state.calls == 0:
        seen = ("rectifier (ReLU, ReLU6)" if job.rectifiers == "functions" else
                "nn.ReLU or nn.ReLU6 module (rectifiers='modules' sees no functional ones)")
        warnings.warn(
            f"{method}: no {seen} ran in the model's forward pass, so its rule changes nothing "
            "and the map is built from the plain input gradient; SiLU, GELU and other smooth "
            "activations are not rectifiers",
            stacklevel=5,  # the caller of camlens.explain
        )


def _pixel(job: Job, method: str, rule: Rule) -> Explanation:
    """Input gradients (B, K, 3, H, W) under ``rule``; "normal" runs plain autograd (no
    rectifier is intercepted, so there is nothing to warn about)."""
    state = RuleState(rule) if rule != "normal" else None
    ev = gather(job.model, job.inputs, (), job.target, job.top_k, grad="from-input",
                image_index=job.image_index, rules=state, via=job.rectifiers)
    if state is not None:
        _warn_if_no_rectifier(state, job, method)
    (grads,) = gradients(ev.scores, [ev.image], what="the input", batched=False)
    return _result(job, ev, method, maps.signed_scale(grads).float(), grads, None)


@register("gradient", needs_layer=False, pixel_space=True,
          summary="Input gradient (Simonyan et al.; the paper's 'Backprop'): plain dy^c/dx")
def run_gradient(job: Job) -> Explanation:
    """dy^c/dx (B, K, 3, H, W) by plain autograd; its saliency map is max_channels |dy^c/dx|."""
    return _pixel(job, "gradient", "normal")


@register("guided-backprop", needs_layer=False, pixel_space=True,
          summary="Guided Backpropagation: input gradients through guided rectifiers")
def run_guided_backprop(job: Job) -> Explanation:
    """dy^c/dx with every rectifier's backward guided (only positive gradients pass)."""
    return _pixel(job, "guided-backprop", "guided")


@register("deconvnet", needs_layer=False, pixel_space=True,
          summary="Deconvolution (Zeiler & Fergus): input gradients through rectified backward")
def run_deconvnet(job: Job) -> Explanation:
    """dy^c/dx with every rectifier's backward replaced by a ReLU of the gradient."""
    return _pixel(job, "deconvnet", "deconv")


def _fused_pixel(job: Job, method: str, rule: Rule, pooling: maps.Pooling, relu: bool,
                 counterfactual: bool, backward: Rule) -> Explanation:
    """Pixel-space map times the upsampled Grad-CAM, from one forward and two backwards: a
    partial one to the layer under ``backward``, then one to the input under ``rule``."""
    state = RuleState(backward)
    ev = gather(job.model, job.inputs, job.layers, job.target, job.top_k, grad="from-input",
                image_index=job.image_index, rules=state, via=job.rectifiers,
                reshape=job.reshape)
    _warn_if_no_rectifier(state, job, method)
    grads = layer_gradients(ev, retain_graph=True)
    pairs = [gradcam_maps(a, g, pooling=pooling, relu=relu, counterfactual=counterfactual)
             for a, g in zip(ev.activations, grads)]
    heat, fused = _heatmaps(job, [p[0] for p in pairs])
    # Sec. 3.2: L^c is bilinearly upsampled to the input, then multiplied point-wise.
    heat = maps.upsample(pairs[0][0], heat.shape[-2:]) if len(pairs) == 1 else fused
    state.rule = rule
    (pixel,) = gradients(ev.scores, [ev.image], what="the input", batched=False)
    raw = pixel * heat.to(pixel.dtype).unsqueeze(2)
    weights = pairs[0][1] if len(pairs) == 1 else None
    return _result(job, ev, method, maps.signed_scale(raw).float(), raw, weights,
                   pooling=pooling, relu=relu, counterfactual=counterfactual, backward=backward)


@register("guided-gradcam", needs_layer=True, pixel_space=True,
          summary="Guided Grad-CAM: Guided Backprop times the upsampled Grad-CAM")
def run_guided_gradcam(job: Job, *, pooling: maps.Pooling = "gap", relu: bool = True,
                       counterfactual: bool = False, backward: Rule = "normal") -> Explanation:
    """Guided Backprop (B, K, 3, H, W) times bilinear-upsampled Grad-CAM (B, K, 1, H, W)."""
    return _fused_pixel(job, "guided-gradcam", "guided", pooling, relu, counterfactual, backward)


@register("deconv-gradcam", needs_layer=True, pixel_space=True,
          summary="Deconvolution Grad-CAM: Deconvnet times the upsampled Grad-CAM")
def run_deconv_gradcam(job: Job, *, pooling: maps.Pooling = "gap", relu: bool = True,
                       counterfactual: bool = False, backward: Rule = "normal") -> Explanation:
    """Deconvnet (B, K, 3, H, W) times bilinear-upsampled Grad-CAM (B, K, 1, H, W)."""
    return _fused_pixel(job, "deconv-gradcam", "deconv", pooling, relu, counterfactual, backward)


@register("occlusion", needs_layer=False, pixel_space=False,
          summary="Occlusion sensitivity: score drop when a sliding window is masked")
def run_occlusion(job: Job, *, window: int | tuple[int, int] = 16,
                  stride: int | tuple[int, int] = 8, fill: float = 0.0,
                  batch_size: int = 64) -> Explanation:
    """Mean drop of y^c over the windows covering each pixel; batched forwards, no autograd."""
    win = (window, window) if isinstance(window, int) else tuple(window)
    std = (stride, stride) if isinstance(stride, int) else tuple(stride)
    if min(win) < 1 or min(std) < 1 or batch_size < 1:
        raise ValueError(f"window, stride and batch_size must be >= 1, got {win}, {std}, "
                         f"{batch_size}")
    ev = gather(job.model, job.inputs, (), job.target, job.top_k, grad="none",
                image_index=job.image_index)

    def score_fn(images: torch.Tensor, s: int) -> torch.Tensor:
        n = images.shape[0]
        inputs = [images if i == job.image_index else t[s:s + 1].expand(n, *t.shape[1:])
                  for i, t in enumerate(job.inputs)]
        with torch.no_grad():
            out = job.model(*inputs)
        idx = None if ev.indices is None else ev.indices[s:s + 1].expand(n, -1)
        return scores_of(out, job.target, idx)

    raw = occlusion_maps(score_fn, job.image, ev.scores, window=win, stride=std, fill=fill,
                         batch_size=batch_size)
    return _result(job, ev, "occlusion", maps.minmax(raw).float(), raw, None,
                   window=win, stride=std, fill=fill)
