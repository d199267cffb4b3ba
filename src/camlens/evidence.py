"""Gather the evidence the methods work on: one forward pass, then batched partial backwards."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import torch
from torch import nn

from camlens.capture import capture, forward
from camlens.errors import LayerError, NonFiniteError, TargetError
from camlens.guided import Rule, RuleState, rectifiers
from camlens.targets import TargetSpec, class_indices, scores_of

Reshape: TypeAlias = Callable[[torch.Tensor], torch.Tensor]
"""Turns a layer's output into (B, C, h, w) feature maps, e.g. ViT tokens (B, N, C)."""

MAX_EXTRA_TOKENS = 8


def tokens_to_maps(tokens: torch.Tensor) -> torch.Tensor:
    """ViT-style tokens (B, N, C) -> feature maps (B, C, s, s).

    The last s^2 tokens are the patches in row-major order; the fewest leading tokens (class,
    distillation, register tokens: at most 8) that leave a square number are dropped.
    """
    if tokens.dim() != 3:
        raise LayerError(
            f"reshape='tokens' needs (B, N, C) tokens, got shape {tuple(tokens.shape)}")
    n = tokens.shape[1]
    for extra in range(min(n - 1, MAX_EXTRA_TOKENS) + 1):
        side = math.isqrt(n - extra)
        if side * side == n - extra:
            return tokens[:, extra:].transpose(1, 2).unflatten(2, (side, side))
    raise LayerError(
        f"reshape='tokens': {n} tokens are not a square grid of patches after dropping up to "
        f"{MAX_EXTRA_TOKENS} leading tokens; pass reshape=<callable (B, N, C) -> (B, C, h, w)>"
    )


def channels_last_to_maps(x: torch.Tensor) -> torch.Tensor:
    """Channels-last feature maps (B, h, w, C), as Swin and ConvNeXt blocks keep them ->
    (B, C, h, w)."""
    if x.dim() != 4:
        raise LayerError(f"reshape='channels-last' needs (B, h, w, C) maps, got shape "
                         f"{tuple(x.shape)}")
    return x.permute(0, 3, 1, 2)


def require_finite(t: torch.Tensor, what: str) -> None:
    """Raise :class:`NonFiniteError` when ``t`` holds NaN or Inf, saying how many and where."""
    bad = int(t.numel() - torch.isfinite(t).sum())
    if bad:
        raise NonFiniteError(
            f"{what} hold {bad} NaN or Inf value(s) of {t.numel()}, so the map would be "
            "meaningless; check the model's weights (NaN after training or loading?) and the "
            "input's scaling (an overflow in a low-precision dtype?)")


RESHAPES: dict[str, Reshape] = {"tokens": tokens_to_maps, "channels-last": channels_last_to_maps}
ReshapeSpec: TypeAlias = str | Reshape | None


@dataclass(frozen=True)
class Needs:
    """The evidence a method needs from one forward pass.

    ``layer``: the layers' activations; ``layer_rules``: dy^c/dA at the layers under these
    rectifier rules; ``input_rules``: dy^c/dx at the image under these rules. Needs combine with
    ``|``, so one gather serves several methods.
    """

    layer: bool = False
    layer_rules: frozenset[Rule] = frozenset()
    input_rules: frozenset[Rule] = frozenset()

    def __or__(self, other: Needs) -> Needs:
        return Needs(self.layer or other.layer, self.layer_rules | other.layer_rules,
                     self.input_rules | other.input_rules)

    @property
    def grad(self) -> Literal["none", "from-layer", "from-input"]:
        """Where autograd must start: at the image, at the layer (nothing before it), or nowhere."""
        if self.input_rules:
            return "from-input"
        return "from-layer" if self.layer_rules else "none"

    @property
    def rules(self) -> frozenset[Rule]:
        return self.layer_rules | self.input_rules


@dataclass
class Evidence:
    """What one forward pass and its backwards recorded.

    ``scores`` (B, K) carries the autograd graph while gradients are taken; ``captured[i]`` is
    layer i's output as the model produced it (the tensor gradients are taken against);
    ``activations[i]`` is that output as (B, C, h, w) feature maps (``reshape`` applied, if any);
    ``image`` is the input leaf (B, 3, H, W) when input gradients are wanted.
    ``rectifier_calls`` counts the rectifier calls routed through a rule (None: no rule was
    installed); methods add caveats to ``warnings``, which ``explain`` issues once.
    :meth:`layer_grads` / :meth:`input_grads` return the gradients gathered per rule.
    """

    output: Any
    indices: torch.Tensor | None
    scores: torch.Tensor
    captured: list[torch.Tensor]
    activations: list[torch.Tensor]
    image: torch.Tensor | None = None
    reshape: Reshape | None = None
    rectifier_calls: int | None = None
    grads: dict[tuple[str, Rule], list[torch.Tensor]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def only_layer(self, i: int) -> Evidence:
        """This evidence for layer ``i`` alone (its activations and layer gradients; scores,
        output and input gradients shared), so a method computes that layer's map unfused."""
        grads = {key: [g[i]] if key[0] == "layer" else g for key, g in self.grads.items()}
        return dataclasses.replace(self, captured=[self.captured[i]],
                                   activations=[self.activations[i]], grads=grads)

    def as_maps(self, grads: torch.Tensor) -> torch.Tensor:
        """Gradients w.r.t. a captured output (B, K, *s) -> (B, K, C, h, w), rearranged like
        the activations (a reshape only selects and moves elements, so this is exact)."""
        if self.reshape is None:
            return grads
        return self.reshape(grads.flatten(0, 1)).unflatten(0, grads.shape[:2])

    def layer_grads(self, rule: Rule = "normal") -> list[torch.Tensor]:
        """dy^c/dA for every layer under ``rule``, arranged like its feature maps:
        [(B, K, C, h, w)]."""
        return self.grads[("layer", rule)]

    def input_grads(self, rule: Rule = "normal") -> torch.Tensor:
        """dy^c/dx under ``rule``: (B, K, C, H, W)."""
        return self.grads[("input", rule)][0]


def gather(
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    layers: Sequence[tuple[str, nn.Module]],
    target: TargetSpec,
    top_k: int | None,
    needs: Needs,
    *,
    image_index: int = 0,
    via: Literal["functions", "modules"] = "functions",
    reshape: Reshape | None = None,
) -> Evidence:
    """Run the model once, resolve the target scores and take every gradient ``needs`` asks for.

    Autograd starts at the image when input gradients are needed, else at the first layer (the
    layer's output is a leaf: nothing before it is recorded), else nowhere. When a rule other
    than ``normal`` is needed, every rectifier call is routed through a :class:`RuleState`
    whose rule is switched before each backward. Layer gradients come first (one vmapped
    backward per rule), then input gradients (K backwards per rule), each distinct
    (destination, rule) once.
    """
    grad = needs.grad
    # the forward gets copies: a model may write into its input (x.sub_(mean)), and methods
    # that run the model again (occlusion, excitation) must see the inputs as they were
    inputs = [t.clone() for t in inputs]
    image = None
    if grad == "from-input":
        image = inputs[image_index].detach().requires_grad_(True)
        inputs[image_index] = image.clone()
    state = RuleState() if needs.rules - {"normal"} else None
    with ExitStack() as stack:
        if state is not None:  # first: a hooked rectifier layer then feeds the capture hook
            stack.enter_context(rectifiers(model, state, via))
        cap = stack.enter_context(capture(layers, grad_from_layer=grad == "from-layer"))
        output = forward(model, inputs, grad=grad == "from-input")
        captured = cap.require_all()
    activations = [act if reshape is None else reshape(act) for act in captured]
    for name, raw, act in zip(cap.names, captured, activations):
        if act.dim() != 4 or act.shape[0] != raw.shape[0]:
            shown = f"outputs shape {tuple(raw.shape)}" + (
                "" if reshape is None else f", reshaped to {tuple(act.shape)}")
            hint = (" or pass reshape='tokens' (camlens explain --reshape tokens) for a "
                    "transformer's (B, N, C) tokens"
                    if raw.dim() == 3 and reshape is None else "")
            raise LayerError(
                f"layer {name!r} {shown}, but the map needs (B, C, h, w) feature maps; choose a "
                f"convolutional layer (`camlens layers` shows the shapes){hint}"
            )
    batch = inputs[image_index].shape[0]
    indices = class_indices(output, target, top_k, batch)
    with torch.set_grad_enabled(grad != "none"):
        scores = scores_of(output, target, indices)
    if scores.shape[0] != batch:
        raise TargetError(f"the target gave {scores.shape[0]} scores for a batch of {batch}")
    for name, act in zip(cap.names, captured):
        require_finite(act.detach(), f"the outputs of layer {name!r}")
    require_finite(scores.detach(), "the model's scores for the explained targets")
    ev = Evidence(output, indices, scores, captured, activations, image, reshape,
                  None if state is None else state.calls)
    plan = [("layer", r) for r in sorted(needs.layer_rules)]
    plan += [("input", r) for r in sorted(needs.input_rules)]
    for i, (where, rule) in enumerate(plan):
        if state is not None:
            state.rule = rule
        last = i == len(plan) - 1
        if where == "layer":
            grads = gradients(scores, captured, retain_graph=not last, what="the layer")
            ev.grads[(where, rule)] = [ev.as_maps(g) for g in grads]
        else:
            ev.grads[(where, rule)] = gradients(scores, [image], retain_graph=not last,  # type: ignore[list-item]
                                                what="the input", batched=False)
    return ev


def gradients(
    scores: torch.Tensor, wrt: Sequence[torch.Tensor], *, retain_graph: bool = False,
    what: str = "the layer", batched: bool = True,
) -> list[torch.Tensor]:
    """dy^c/dwrt for each of the K scores: (B, K) x [(B, *s)] -> [(B, K, *s)].

    Samples are independent, so the gradient of the batch sum gives every sample's gradient at
    once. ``batched``: one vmapped backward (``is_grads_batched``) for all K; otherwise K
    backwards over the same graph, which is faster for full backwards to the input (measured on
    EfficientNet-Lite0, K=5: 0.18 s looped vs 0.34 s vmapped).
    """
    if not scores.requires_grad:
        raise TargetError(
            f"the explained scores do not depend on {what}: they carry no gradient; make the "
            "target a differentiable function of the model's output"
        )
    k = scores.shape[1]
    with torch.enable_grad():  # also under a caller's no_grad()
        if k == 1 or not batched:
            per_k = [torch.autograd.grad(scores[:, i].sum(), list(wrt), allow_unused=True,
                                         retain_graph=retain_graph or i < k - 1)
                     for i in range(k)]
            out = [None if per_k[0][j] is None else torch.stack([g[j] for g in per_k], dim=1)
                   for j in range(len(wrt))]
        else:
            basis = torch.eye(k, dtype=scores.dtype, device=scores.device)[:, None, :]
            basis = basis.expand(k, scores.shape[0], k)
            grads = torch.autograd.grad(scores, list(wrt), grad_outputs=basis,
                                        is_grads_batched=True, retain_graph=retain_graph,
                                        allow_unused=True)
            out = [g.movedim(0, 1) if g is not None else None for g in grads]
    if any(g is None for g in out):
        raise TargetError(
            f"the explained scores do not depend on {what}: choose a layer on the path from "
            "the input to the explained output"
        )
    for g in out:
        require_finite(g, f"the gradients of the scores with respect to {what}")  # type: ignore[arg-type]
    return out  # type: ignore[return-value]
