"""The orchestrator: validate, plan what the methods need, gather it once, let each method
compute its map, keep the model untouched."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any, Literal, overload

import torch
from torch import nn

from camlens.errors import ExplainError, InputError, LayerError
from camlens.evidence import RESHAPES, Needs, Reshape, ReshapeSpec, gather
from camlens.explanation import Explanation
from camlens.guided import RULES
from camlens.layers import LayerSpec, layer_hint, residual_blocks, resolve_layers
from camlens.methods import METHODS, Job, Method, OptionError
from camlens.targets import TargetSpec
from camlens.view import private_view


@overload
def explain(model: nn.Module, inputs: torch.Tensor | Sequence[torch.Tensor], *,
            method: str = ..., layer: LayerSpec | Sequence[LayerSpec] | None = ...,
            target: TargetSpec = ..., top_k: int | None = ..., image_index: int = ...,
            rectifiers: Literal["functions", "modules"] = ..., reshape: ReshapeSpec = ...,
            channels_last: bool = ..., **options: Any) -> Explanation: ...


@overload
def explain(model: nn.Module, inputs: torch.Tensor | Sequence[torch.Tensor], *,
            method: Sequence[str], layer: LayerSpec | Sequence[LayerSpec] | None = ...,
            target: TargetSpec = ..., top_k: int | None = ..., image_index: int = ...,
            rectifiers: Literal["functions", "modules"] = ..., reshape: ReshapeSpec = ...,
            channels_last: bool = ..., **options: Any) -> dict[str, Explanation]: ...


def explain(
    model: nn.Module,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    method: str | Sequence[str] = "gradcam",
    layer: LayerSpec | Sequence[LayerSpec] | None = None,
    target: TargetSpec = None,
    top_k: int | None = None,
    image_index: int = 0,
    rectifiers: Literal["functions", "modules"] = "functions",
    reshape: ReshapeSpec = None,
    channels_last: bool = False,
    **options: Any,
) -> Explanation | dict[str, Explanation]:
    """Explain ``model``'s decision on ``inputs`` with ``method`` (a key of ``camlens.METHODS``),
    or with several methods at once (a list of keys: returns ``{name: Explanation}``).

    ``inputs``: the image batch (B, C, H, W), or a tuple of inputs (``image_index`` says which
    is the image, e.g. image + question). ``layer``: a dotted name, a module, or a list of them
    (maps fused). ``target``: None (top-1 class), an int, one int per sample, a (B, K) tensor, or
    a callable from the output to (B,) or (B, K) scores (e.g. :class:`camlens.CaptionTarget`,
    :class:`camlens.AnswerTarget`); or ``top_k=K`` instead. Class indices read ``output.logits``
    or ``output["logits"]`` when the model returns such an object. ``options`` are
    the methods' keywords (e.g. ``counterfactual=True``, ``pooling="gmp"``, ``relu=False``,
    ``backward="guided"``; ``window``/``stride`` for occlusion); with several methods each
    option goes to the methods that take it. ``reshape``: how a layer's
    output becomes (B, C, h, w) feature maps when it is not already: ``"tokens"`` for a vision
    transformer's (B, N, C) tokens (leading class tokens dropped, patches on their square grid),
    ``"channels-last"`` for (B, h, w, C) maps (Swin), or a callable that only rearranges
    elements (it is applied to the gradients too). ``channels_last``: False (default) runs the
    model on the image in the layout it comes in, so the maps are the gradients of the forward
    pass the caller runs; True on a channels-last copy of a 4-D image (oneDNN's native layout
    on CPU: about 15-30% faster at batch 16 for an image in the default layout). Its
    convolutions round differently, so where two inputs of a max-pool window tie to float
    rounding the gradient can go to the other one, and maps that weight each element by its
    own gradient (HiResCAM, LayerCAM) move that element's value to its neighbour (VGG-16, batch
    16: 4 of 401,408 windows, up to 0.06 of the map's range).

    Several methods share one forward pass and one backward per distinct (layer or input,
    rectifier rule): the CLI's Figure 1 set costs one forward and two backwards.

    The model is left as it was: no hooks, same modules, flags, ``requires_grad``, ``.grad``
    and buffers (BatchNorm's running statistics too, in training mode). Safe to call from any
    number of threads on one model: each call runs on its own view of the model (shared
    weights, private hooks and buffers), so other threads' forwards see nothing of it.
    """
    names = [method] if isinstance(method, str) else list(method)
    out = _explain(model, inputs, names, single=isinstance(method, str), layer=layer,
                   target=target, top_k=top_k, image_index=image_index, rectifiers=rectifiers,
                   reshape=reshape, channels_last=channels_last, options=options,
                   per_layer=False)
    return out[names[0]][""] if isinstance(method, str) else {n: d[""] for n, d in out.items()}


def explain_layers(
    model: nn.Module,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    layers: Literal["all-blocks"] | LayerSpec | Sequence[LayerSpec],
    *,
    method: str = "gradcam",
    target: TargetSpec = None,
    top_k: int | None = None,
    image_index: int = 0,
    rectifiers: Literal["functions", "modules"] = "functions",
    reshape: ReshapeSpec = None,
    channels_last: bool = False,
    **options: Any,
) -> dict[str, Explanation]:
    """One map per layer, ``{layer name: Explanation}``, from ONE forward pass and one backward
    (the gradients with respect to every layer come from a single ``autograd.grad``): the
    block-by-block analysis of the paper's Appendix G (Fig. 19/20). ``layers``: names or
    modules, or ``"all-blocks"`` for :func:`camlens.layers.residual_blocks`. Each map equals
    ``explain(model, inputs, layer=name, ...)``; the other arguments are :func:`explain`'s.
    Methods that run the model again per layer (Score-CAM, Ablation-CAM, occlusion) still do.
    """
    if isinstance(layers, str):
        if layers != "all-blocks":
            raise LayerError(f"layers must be 'all-blocks' or a list of layer names, got "
                             f"{layers!r}; for one layer use explain(layer=...)")
        if isinstance(model, nn.Module):
            layers = residual_blocks(model)
    elif isinstance(layers, nn.Module):
        layers = [layers]
    if not isinstance(method, str):
        raise ExplainError("explain_layers takes one method name; call it once per method")
    out = _explain(model, inputs, [method], single=True, layer=list(layers), target=target,
                   top_k=top_k, image_index=image_index, rectifiers=rectifiers,
                   reshape=reshape, channels_last=channels_last, options=options,
                   per_layer=True)
    return out[method]


def _explain(
    model: nn.Module, inputs: torch.Tensor | Sequence[torch.Tensor], names: list[str], *,
    single: bool, layer: LayerSpec | Sequence[LayerSpec] | None, target: TargetSpec,
    top_k: int | None, image_index: int, rectifiers: Literal["functions", "modules"],
    reshape: ReshapeSpec, channels_last: bool, options: dict[str, Any], per_layer: bool,
) -> dict[str, dict[str, Explanation]]:
    """The work of :func:`explain`: ``{method: {"": Explanation}}``, or with ``per_layer``
    ``{method: {layer name: Explanation}}`` (each layer's map alone, not fused)."""
    specs = _methods(names, options)
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if model.training:
        warnings.warn(
            f"{type(model).__name__} is in training mode: BatchNorm mixes the samples of a batch "
            "and dropout is random, so explanations depend on the batch; call model.eval() first",
            stacklevel=3,
        )
    seq = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    if not seq or not all(isinstance(t, torch.Tensor) for t in seq):
        raise InputError("inputs must be a tensor or a sequence of tensors")
    if not 0 <= image_index < len(seq):
        raise InputError(f"image_index {image_index} is out of range for {len(seq)} input(s)")
    device = next((p.device for p in model.parameters()), seq[image_index].device)
    with torch.inference_mode(False):  # also under a caller's inference_mode()
        # private copies: a model that writes into its input (x.sub_(mean)) must not write into
        # the caller's tensors, and tensors made under inference_mode cannot enter autograd
        seq = tuple(t.detach().to(device, copy=True) for t in seq)
        if channels_last and seq[image_index].dim() == 4:
            seq = tuple(t.contiguous(memory_format=torch.channels_last) if i == image_index
                        else t for i, t in enumerate(seq))
        image = seq[image_index]
        _check_inputs(seq, image_index)
        for spec in specs.values():
            if (spec.pixel_space or spec.base == "occlusion") and image.dim() != 4:
                raise InputError(f"{spec.name} needs an image batch (B, C, H, W), got shape "
                                 f"{tuple(image.shape)}")
        needs_layer = [n for n, s in specs.items() if s.needs_layer]
        if needs_layer:
            if layer is None:
                raise LayerError(f"{', '.join(needs_layer)} need(s) layer=...: "
                                 f"{layer_hint(model)}")
            layers = resolve_layers(model, layer)
        elif layer is not None and single:
            raise ExplainError(f"{names[0]} works on the input and takes no layer; drop layer=")
        else:
            layers = []
        if reshape is None:
            reshape = _known_layout(model, [n for n, _ in layers])
        elif not needs_layer and single:
            raise ExplainError(f"{names[0]} works on the input and takes no reshape; "
                               "drop reshape=")
        # Everything runs on a private view: hooks and buffer updates never reach the model
        # that other threads may be running (see camlens.view).
        view = private_view(model)
        job = Job(view.root, seq, view.layers(layers), target, top_k, image_index, rectifiers,
                  _reshape(reshape))
        settings = {n: s.settings(options) for n, s in specs.items()}
        needs = Needs()
        for n, s in specs.items():
            needs = needs | s.needs(job, **settings[n])
        ev = gather(job.model, seq, job.layers, target, top_k, needs, image_index=image_index,
                    via=rectifiers, reshape=job.reshape)
        out: dict[str, dict[str, Explanation]] = {}
        parts = ([(name, i) for i, name in enumerate(job.layer_names)] if per_layer
                 else [("", None)])
        for n, s in specs.items():
            out[n] = {}
            for key, i in parts:
                ex = (s.compute(job, ev, **settings[n]) if i is None else
                      s.compute(dataclasses.replace(job, layers=[job.layers[i]]),
                                ev.only_layer(i), **settings[n]))
                out[n][key] = ex if ex.method == n else dataclasses.replace(ex, method=n)
        for text in dict.fromkeys(ev.warnings):
            warnings.warn(text, stacklevel=3)
    return out


def _methods(names: list[str], options: dict[str, Any]) -> dict[str, Method]:
    """The registered methods called ``names``; every option must belong to one of them."""
    if not names:
        raise ExplainError(f"method is an empty list; choose from {sorted(METHODS)}")
    unknown = [n for n in names if not isinstance(n, str) or n not in METHODS]
    if unknown:
        raise ExplainError(f"unknown method {unknown[0]!r}; choose one of {sorted(METHODS)}")
    specs = {n: METHODS[n] for n in names}
    taken = {k for s in specs.values() for k in s.free_options}
    stray = sorted(set(options) - taken)
    if stray:
        which = (f"method {names[0]!r} takes" if len(names) == 1 else f"methods {names} take")
        raise OptionError(f"{which} no option(s) {stray}; the options are "
                          f"{sorted(taken) or 'none'}")
    if options.get("backward", "normal") not in RULES:
        raise OptionError(f"backward must be one of {list(RULES)}, got {options['backward']!r}")
    return specs


def _check_inputs(seq: tuple[torch.Tensor, ...], image_index: int) -> None:
    """An empty batch or a non-finite value is a clear :class:`InputError`, not a bare error
    from deep inside the method or an all-zero "no evidence" map."""
    image = seq[image_index]
    if image.dim() >= 1 and image.shape[0] == 0:
        raise InputError(f"the image batch is empty (shape {tuple(image.shape)}); pass at least "
                         "one image")
    # the image must be finite; another input may hold -inf as a mask, never NaN
    for i, t in enumerate(seq):
        if t.is_floating_point():
            bad = int(t.numel() - (torch.isfinite(t) if i == image_index
                                   else ~torch.isnan(t)).sum())
            if bad:
                which = "the image" if i == image_index else f"input {i}"
                what = "non-finite value(s) (NaN or Inf)" if i == image_index else "NaN value(s)"
                raise InputError(
                    f"{which} holds {bad} {what} of {t.numel()}; the input must be finite: "
                    "check how it was loaded and normalised")


def _known_layout(model: nn.Module, layer_names: list[str]) -> ReshapeSpec:
    """The layout of layers whose shape cannot tell it: torchvision's Swin Transformers keep
    (B, h, w, C) maps in ``features`` and ``norm``, which would otherwise be read as h channels
    of w x C pixels without any error."""
    swin = type(model).__module__ == "torchvision.models.swin_transformer"
    if swin and layer_names and all(n.split(".")[0] in ("features", "norm") for n in layer_names):
        return "channels-last"
    return None


def _reshape(reshape: ReshapeSpec) -> Reshape | None:
    if reshape is None:
        return None
    if isinstance(reshape, str):
        if reshape not in RESHAPES:
            raise ExplainError(f"unknown reshape {reshape!r}; choose one of {sorted(RESHAPES)} "
                               "or pass a callable (B, N, C) -> (B, C, h, w)")
        return RESHAPES[reshape]
    if not callable(reshape):
        raise ExplainError(f"reshape must be a name or a callable, got {type(reshape).__name__}")
    return reshape
