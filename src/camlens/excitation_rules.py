"""The per-operation rules of Excitation Backprop (the list in :mod:`camlens.excitation`'s
docstring): for each torch function on the path from the explained layers to the output, a rule
that runs it and records, beside its output, the surrogate eps whose vector-Jacobian product is
the rule (:data:`RULES`). The mode that dispatches to them is :mod:`camlens.excitation`'s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from camlens.excitation import _Excitation

Tensor = torch.Tensor
Excite = Callable[[Sequence[Tensor]], Tensor]


def _ratio(s: Tensor) -> Tensor:
    """s / s.detach(): value 1, gradient g / s; 1 with no gradient where s = 0 (a 0/0 share)."""
    z = s.detach()
    nonzero = z != 0
    return torch.where(nonzero, s / torch.where(nonzero, z, 1.0), 1.0)


def _bind(names: Sequence[str], args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    return {**dict(zip(names, args)), **kwargs}


def writes(func: Callable[..., Any]) -> bool:
    """Whether ``func`` writes into its first argument (``x.sigmoid_()``, ``x[i] = v``)."""
    name = getattr(func, "__name__", "")
    return (name.endswith("_") and not name.startswith("_")) or name == "__setitem__" or \
        name.startswith("__i")


Rule = Callable[["_Excitation", Callable[..., Any], tuple, dict, list], Any]
"""(mode, func, args, kwargs, the arguments on the path) -> the real output"""


def _only_first(mode: _Excitation, func: Callable[..., Any], args: tuple, on: list) -> Tensor:
    if not args or any(t is not args[0] for t in on):
        raise mode.unsupported(func, " (it reads several tensors that depend on the layer)")
    return args[0]


def same_unit(mode: _Excitation, func: Callable[..., Any], args: tuple, kwargs: dict,
              on: list) -> Any:
    """ReLU, ReLU6, dropout: P passes through."""
    x = _only_first(mode, func, args, on)
    out = func(*args, **kwargs)
    mode.record(out, [x], lambda es: es[0])
    return out


def _reindex(mode: _Excitation, func: Callable[..., Any], args: tuple, kwargs: dict,
             on: list) -> Any:
    """view, reshape, flatten, permute, indexing, casts: the same function moves eps."""
    x = _only_first(mode, func, args, on)
    out = func(*args, **kwargs)
    mode.record(out, [x], lambda es: func(es[0], *args[1:], **kwargs))
    return out


def _pad(mode: _Excitation, func: Callable[..., Any], args: tuple, kwargs: dict,
         on: list) -> Any:
    x = _only_first(mode, func, args, on)
    b = _bind(("input", "pad", "mode", "value"), args, kwargs)
    out = func(*args, **kwargs)
    constant = b.get("mode", "constant") == "constant"  # padded units have no child
    mode.record(out, [x], lambda es: F.pad(es[0], b["pad"], b.get("mode", "constant"),
                                           1.0 if constant else None))
    return out


def _weighted(names: tuple[str, ...]) -> Rule:
    """conv2d / linear: eps_y = f(A * eps_A; W^+) / f(A; W^+) (bias dropped)."""

    def rule(mode: _Excitation, func: Callable[..., Any], args: tuple, kwargs: dict,
             on: list) -> Any:
        b = _bind(names, args, kwargs)
        x, w = b["input"], b["weight"]
        if any(t is not x for t in on):
            raise mode.unsupported(func, " (its weights depend on the layer)")
        out = func(*args, **kwargs)
        rest = {k: v for k, v in b.items() if k not in ("input", "weight", "bias")}

        def make(weight: Tensor) -> tuple[Excite, Excite]:
            plus, minus = weight.clamp(min=0), (-weight).clamp(min=0)
            return (lambda es: _ratio(func(x * es[0], plus, None, **rest)),
                    lambda es: _ratio(func(x * es[0], minus, None, **rest)))

        mode.check_sign(x)
        excite, dual = make(w.detach())
        step = mode.record(out, [x], excite, dual=dual, saved=[x])
        mode.foldable[id(out)] = (step, w.detach(), make)
        return out

    return rule


def _batch_norm(mode: _Excitation, func: Callable[..., Any], args: tuple, kwargs: dict,
                on: list) -> Any:
    """Folded into the conv/linear that produced its input, W' = s W; else P passes."""
    x = _only_first(mode, func, args, on)
    b = _bind(("input", "running_mean", "running_var", "weight", "bias", "training",
               "momentum", "eps"), args, kwargs)
    batch_stats = bool(b.get("training", False)) or b.get("running_var") is None
    with torch.no_grad():
        dims = [d for d in range(x.dim()) if d != 1]
        var = x.var(dim=dims, unbiased=False) if batch_stats else b["running_var"]
        scale = (var + b.get("eps", 1e-5)).rsqrt()
        if b.get("weight") is not None:
            scale = scale * b["weight"]
    out = func(*args, **kwargs)
    fold = mode.foldable.get(id(x))
    if fold is None or id(x) in mode.used:
        mode.record(out, [x], lambda es: es[0])
        return out
    conv, weight, make = fold
    excite, dual = make(weight * scale.to(weight.dtype).view(-1, *[1] * (weight.dim() - 1)))
    leaf = mode.leaf_at.get(id(x))
    if leaf is not None:  # x is also an explained layer: it gets the P that reaches y
        excite, dual = _times(excite, leaf), _times(dual, leaf)
    mode.record(out, [t for t, _ in conv.saved], excite, dual=dual,
                saved=[t for t, _ in conv.saved], es=conv.es)
    return out


def _times(excite: Excite, leaf: Tensor) -> Excite:
    return lambda es: excite(es) * leaf


def _max_pool(names: tuple[str, ...], with_indices: Callable[..., tuple[Tensor, Tensor]]) -> Rule:
    """Winner take all: eps_y = eps_A at the window's argmax (the first maximum)."""

    def rule(mode: _Excitation, func: Callable[..., Any], args: tuple, kwargs: dict,
             on: list) -> Any:
        x = _only_first(mode, func, args, on)
        b = _bind(names, args, kwargs)
        b.pop("return_indices", None)
        out = func(*args, **kwargs)
        values = out[0] if isinstance(out, tuple) else out
        idx = with_indices(**b)[1]
        mode.record(values, [x], lambda es: es[0].flatten(-2).gather(-1, idx.flatten(-2))
                    .view_as(idx))
        return out

    return rule


def _average(mode: _Excitation, func: Callable[..., Any], args: tuple, kwargs: dict,
             on: list) -> Any:
    """Average pooling, mean, sum: eps_y = f(A * eps_A) / f(A)."""
    x = _only_first(mode, func, args, on)
    out = func(*args, **kwargs)
    mode.check_sign(x)
    mode.record(out, [x], lambda es: _ratio(func(x * es[0], *args[1:], **kwargs)), saved=[x])
    return out


def _operands(args: tuple, kwargs: dict) -> tuple[Any, Any]:
    return args[0], (args[1] if len(args) > 1 else kwargs["other"])


def _add(mode: _Excitation, func: Callable[..., Any], args: tuple, kwargs: dict,
         on: list) -> Any:
    """Each operand a child of weight 1 (alpha): eps_y = sum_k w_k^+ x_k eps_k / sum_k w_k^+ x_k."""
    a, o = _operands(args, kwargs)
    alpha = kwargs.get("alpha", 1)
    inplace = writes(func)
    before = a.detach().clone() if inplace else a  # the value the sum read
    out = func(*args, **kwargs)
    path: list[tuple[Tensor, Tensor, float]] = []  # (tensor, its value, weight^+)
    fixed: list[Tensor] = []  # children off the path: their share leaves the map
    for t, value, weight in ((a, before, 1.0), (o, o, alpha)):
        w = max(float(weight), 0.0)
        if not isinstance(t, Tensor) or w == 0:
            continue
        if id(t) in mode.eps:
            path.append((t, value, w))
        elif t.shape == out.shape and not isinstance(t, nn.Parameter):
            fixed.append((value * w).detach())
    mode.check_sign(*(v for _, v, _ in path), *fixed)

    def excite(es: Sequence[Tensor]) -> Tensor:
        s = sum((v * e * w for (_, v, w), e in zip(path, es)), start=torch.zeros_like(out))
        return _ratio(s + sum(fixed, start=torch.zeros_like(out)))

    mode.record(out, [t for t, _, _ in path], excite, saved=[v for _, v, _ in path])
    return out


def _scale(divide: bool) -> Rule:
    """x * g or x / g, g off the path: one child of weight g (1 / g); eps_y = eps_x where
    x g^+ != 0."""

    def rule(mode: _Excitation, func: Callable[..., Any], args: tuple, kwargs: dict,
             on: list) -> Any:
        a, o = _operands(args, kwargs)
        if len(on) != 1 or kwargs.get("rounding_mode") is not None or (divide and on[0] is o):
            raise mode.unsupported(func, " (a product or quotient of two tensors that depend "
                                   "on the layer, or a rounding division)")
        x, g = (a, o) if on[0] is a else (o, a)
        value = x.detach().clone() if writes(func) else x
        if isinstance(g, Tensor):
            g = g.detach()
            w: Tensor | float = (1 / g if divide else g).clamp(min=0)
        else:
            w = max(1 / g if divide else g, 0.0) if math.isfinite(g) and g else 0.0
        out = func(*args, **kwargs)
        mode.record(out, [x], lambda es: _ratio(value * es[0] * w), saved=[value])
        return out

    return rule


def _cat(mode: _Excitation, func: Callable[..., Any], args: tuple, kwargs: dict,
         on: list) -> Any:
    b = _bind(("tensors", "dim"), args, kwargs)
    parts, dim = list(b["tensors"]), b.get("dim", 0)
    where = [i for i, t in enumerate(parts) if id(t) in mode.eps]
    out = func(*args, **kwargs)

    def excite(es: Sequence[Tensor]) -> Tensor:
        pieces = [torch.ones_like(t) for t in parts]  # off the path: no gradient
        for i, e in zip(where, es):
            pieces[i] = e
        return torch.cat(pieces, dim)

    mode.record(out, [parts[i] for i in where], excite)
    return out


_CONV = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_POOL = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
RULES: dict[Callable[..., Any], Rule] = {
    torch.conv2d: _weighted(_CONV),
    F.linear: _weighted(("input", "weight", "bias")),
    F.batch_norm: _batch_norm,
    F.max_pool2d: _max_pool(_POOL, F.max_pool2d_with_indices),
    F.max_pool2d_with_indices: _max_pool(_POOL, F.max_pool2d_with_indices),
    torch.max_pool2d: _max_pool(_POOL, F.max_pool2d_with_indices),
    F.adaptive_max_pool2d: _max_pool(("input", "output_size", "return_indices"),
                                     F.adaptive_max_pool2d_with_indices),
    F.pad: _pad,
    F.dropout: same_unit,
    F.dropout2d: same_unit,
    torch.cat: _cat,
    torch.concat: _cat,
    torch.concatenate: _cat,
}


def _methods(*names: str) -> list[Callable[..., Any]]:
    return [getattr(Tensor, n) for n in names]


RULES.update(dict.fromkeys(
    [F.avg_pool2d, F.adaptive_avg_pool2d, torch.mean, torch.sum, *_methods("mean", "sum")],
    _average))
RULES.update(dict.fromkeys(
    [torch.add, *_methods("add", "add_", "__add__", "__radd__", "__iadd__")], _add))
RULES.update(dict.fromkeys(
    [torch.mul, *_methods("mul", "mul_", "__mul__", "__rmul__", "__imul__")],
    _scale(divide=False)))
RULES.update(dict.fromkeys(
    [torch.div, torch.true_divide, *_methods("div", "div_", "__truediv__", "__itruediv__")],
    _scale(divide=True)))
RULES.update(dict.fromkeys(
    [torch.reshape, torch.flatten, torch.squeeze, torch.unsqueeze, torch.permute,
     torch.transpose, torch.clone,
     *_methods("view", "reshape", "flatten", "contiguous", "squeeze", "unsqueeze", "permute",
               "transpose", "clone", "expand", "__getitem__", "to", "float", "double", "half",
               "bfloat16")], _reindex))
