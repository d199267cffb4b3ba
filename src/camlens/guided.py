"""Guided Backpropagation and Deconvnet rectifier rules, applied to every rectifier *call*.

Rectifiers are ``y = clamp(x, 0, hi)`` with ``hi = inf`` (ReLU) or 6 (ReLU6). Their backward
pass, for an incoming gradient g (Springenberg et al.; Zeiler & Fergus):

- ``normal``:  dx = g * 1[0 < x < hi]
- ``guided``:  dx = g * 1[0 < x < hi] * 1[g > 0]   (Guided Backpropagation)
- ``deconv``:  dx = max(g, 0)                        (Deconvnet: rectifies the gradient alone)

:func:`rectifiers` swaps the rule in for the duration of one block. By default it intercepts the
rectifier *functions* through a :class:`torch.overrides.TorchFunctionMode`, so ``nn.ReLU``
(in-place too, and one module reused several times), ``F.relu``, ``torch.relu``,
``Tensor.relu``, ``Tensor.relu_``, ``nn.ReLU6``, ``F.relu6`` and ``F.hardtanh(x, 0, hi)`` are all
covered. ``via="modules"`` is the fallback for code that function modes do not see (TorchScript):
it hooks ``nn.ReLU``/``nn.ReLU6`` modules only. The rule is read when the backward runs, so one
forward pass can serve a normal backward (Grad-CAM) and a guided one (Guided Backprop).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

Rule = Literal["normal", "guided", "deconv"]
RULES: tuple[Rule, ...] = ("normal", "guided", "deconv")


@dataclass
class RuleState:
    """The rule the rectifiers' backward applies; mutable so it can change between backwards.
    ``calls`` counts the rectifier calls routed through it."""

    rule: Rule = "normal"
    calls: int = 0


class _Rectifier(torch.autograd.Function):
    """clamp(x, 0, hi) whose backward follows ``state.rule`` at backward time."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, hi: float, inplace: bool, state: RuleState) -> torch.Tensor:
        upper = None if math.isinf(hi) else hi
        return x.clamp_(0, upper) if inplace else x.clamp(0, upper)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        x, hi, inplace, state = inputs
        if inplace:
            ctx.mark_dirty(x)
        # The output selects the same elements as the input (0 < y < hi iff 0 < x < hi), and the
        # next layer keeps it alive anyway: no extra mask tensor.
        ctx.save_for_backward(output)
        ctx.hi = hi
        ctx.state = state

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        (out,) = ctx.saved_tensors
        rule = ctx.state.rule
        if rule == "deconv":
            return grad.clamp(min=0), None, None, None
        if rule == "guided":
            grad = grad.clamp(min=0)
        if math.isinf(ctx.hi):
            passed = torch.ops.aten.threshold_backward(grad, out, 0)
        else:
            passed = torch.ops.aten.hardtanh_backward(grad, out, 0.0, ctx.hi)
        return passed, None, None, None


def rectify(x: torch.Tensor, hi: float, inplace: bool, state: RuleState) -> torch.Tensor:
    """clamp(x, 0, hi) with the rule-following backward (in place when ``inplace``)."""
    state.calls += 1
    return _Rectifier.apply(x, hi, inplace, state)


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


_INF = math.inf
# func -> (args, kwargs) -> (hi, inplace) or None when the call is not a rectifier.
_FUNCTIONS: dict[Callable, Callable[[tuple, dict], tuple[float, bool] | None]] = {
    F.relu: lambda a, k: (_INF, bool(_arg(a, k, 1, "inplace", False))),
    torch.relu: lambda a, k: (_INF, False),
    torch.relu_: lambda a, k: (_INF, True),
    torch.Tensor.relu: lambda a, k: (_INF, False),
    torch.Tensor.relu_: lambda a, k: (_INF, True),
    F.relu6: lambda a, k: (6.0, bool(_arg(a, k, 1, "inplace", False))),
    F.hardtanh: lambda a, k: (
        (float(_arg(a, k, 2, "max_val", 1.0)), bool(_arg(a, k, 3, "inplace", False)))
        if float(_arg(a, k, 1, "min_val", -1.0)) == 0.0 else None
    ),
}


class _RectifierMode(TorchFunctionMode):
    def __init__(self, state: RuleState) -> None:
        super().__init__()
        self.state = state

    def __torch_function__(
        self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        parse = _FUNCTIONS.get(func)
        spec = parse(args, kwargs) if parse is not None else None
        if spec is None:
            return func(*args, **kwargs)
        hi, inplace = spec
        return rectify(args[0], hi, inplace, self.state)


def _module_bound(module: nn.Module) -> float | None:
    if isinstance(module, nn.ReLU):
        return _INF
    if isinstance(module, nn.Hardtanh) and module.min_val == 0.0:  # ReLU6 is Hardtanh(0, 6)
        return float(module.max_val)
    return None


@contextmanager
def rectifiers(
    model: nn.Module, state: RuleState, via: Literal["functions", "modules"] = "functions"
) -> Iterator[None]:
    """Route every rectifier call of ``model`` inside the block through ``state.rule``."""
    if via == "functions":
        with _RectifierMode(state):
            yield
        return
    if via != "modules":
        raise ValueError(f"via must be 'functions' or 'modules', got {via!r}")
    handles = []
    stash: dict[int, list[torch.Tensor]] = {}

    def pre_hook(module: nn.Module, args: tuple) -> tuple:
        stash.setdefault(id(module), []).append(args[0])
        return (args[0].clone(),)  # an in-place module then leaves the real input intact

    def post_hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x = stash[id(module)].pop()
        return rectify(x, _module_bound(module), False, state)  # type: ignore[arg-type]

    try:
        for module in model.modules():
            if _module_bound(module) is not None:
                handles.append(module.register_forward_pre_hook(pre_hook))
                handles.append(module.register_forward_hook(post_hook))
        yield
    finally:
        for h in handles:
            h.remove()
