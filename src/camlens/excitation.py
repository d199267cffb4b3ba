"""The excitation rules of Excitation Backprop (Zhang et al., ECCV 2016 / IJCV 2018), applied to
every operation between the explained layers and the output; the methods are in
:mod:`camlens.methods.excitation`.

Probabilistic Winner-Take-All: a unit a_i passes its winning probability to its children a_j
(the units it reads) in proportion to their excitation of it,

    P(a_j) = sum_i P(a_j | a_i) P(a_i),   P(a_j | a_i) = a_j w_ji^+ / sum_j' a_j' w_j'i^+,

w^+ = max(w, 0) (only excitatory connections count), biases ignored, a 0/0 share taken as 0 (as
the authors' Caffe code does). For a layer y = f(A; W): P_A = A * f^T(P_y / f(A; W^+)),
element-wise, f^T the transposed layer. Per operation (the authors' choices unless noted):

- conv2d, linear: the rule above with W^+.
- max pooling (also adaptive): winner take all, the window's first maximum gets all of P.
- average pooling (also adaptive, ``mean``, ``sum``): the rule with uniform weights,
  P(a_j | a_i) = a_j / sum_window a (not a uniform split).
- ReLU, ReLU6, dropout (any mode; a dropped unit has a_j = 0, so gets nothing): P passes.
- BatchNorm (running statistics in eval, the batch's in training), y = s_c x + t_c with
  s_c = gamma_c / sqrt(var_c + eps): folded into the conv/linear that produced x when nothing
  else read x first, W'_c = s_c W_c. For s_c > 0 this equals passing P through (s_c cancels),
  which is what the authors' code does; for gamma_c < 0 the conv's negative weights excite. A
  BatchNorm reading anything else (the layer's output, a sum, a concatenation) passes P through.
- x + y (residual connections, ``add(x, y, alpha)``): each operand a child of weight 1 (alpha),
  P_x = x / (x + y) P (Caffe-ExcitationBP's Eltwise SUM). An operand that does not depend on the
  layer (a shortcut from below it) takes its share, which leaves the map; a scalar or broadcast
  (bias-like) operand is ignored.
- x * g, x / g, g not depending on the layer (a gate, a constant): one connection of weight g
  (1 / g), P passes where x g^+ != 0 (our extension: the rule for a single child).
- concatenation, padding, flatten / view / reshape / permute / squeeze / indexing, casts:
  re-indexing, P follows its unit.

Anything else that depends on a layer (SiLU, GELU, sigmoid, softmax, LayerNorm, attention, the
product of two such tensors, ...) is a :class:`~camlens.errors.LayerError` naming it.

Implementation: under a TorchFunctionMode, beside every operation on the path, a surrogate eps
(value 1 everywhere) whose vector-Jacobian product is the rule: eps_y = f(A * eps_A; W^+) /
f(A; W^+), held at 1 with no gradient where the denominator is 0. The backward from the prior at
the output to eps at a layer is the MWP there (K targets: one vmapped backward).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from camlens.capture import forward
from camlens.errors import LayerError
from camlens.evidence import gradients
from camlens.guided import _FUNCTIONS as RECTIFIERS
from camlens.targets import logits_of

Tensor = torch.Tensor
Excite = Callable[[Sequence[Tensor]], Tensor]
_Refold = Callable[[Tensor], tuple[Excite, Excite]]  # weights -> (excite, dual)
SUPPORTED = ("conv2d, linear, max/average pooling, ReLU/ReLU6, BatchNorm, dropout, additions, "
             "scaling by a tensor that does not depend on the layer, concatenation and reshapes")


@dataclass
class _Step:
    """One operation on the path: ids of its path inputs and output, the inputs' eps when it
    ran, and how to build the output's eps (``dual``: with the negated weights)."""

    ins: tuple[int, ...]
    out: int
    es: tuple[Tensor, ...]
    excite: Excite
    dual: Excite | None
    saved: tuple[tuple[Tensor, int], ...]  # tensors the closures read, with their versions


def _ratio(s: Tensor) -> Tensor:
    """s / s.detach(): value 1, gradient g / s; 1 with no gradient where s = 0 (a 0/0 share)."""
    z = s.detach()
    nonzero = z != 0
    return torch.where(nonzero, s / torch.where(nonzero, z, 1.0), 1.0)


def _tensors(args: Sequence[Any], kwargs: dict[str, Any]) -> list[Tensor]:
    out, stack = [], [*args, *kwargs.values()]
    while stack:
        a = stack.pop()
        if isinstance(a, Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            stack.extend(a)
    return out


def _bind(names: Sequence[str], args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    return {**dict(zip(names, args)), **kwargs}


def _name(func: Callable[..., Any]) -> str:
    name = str(getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func)))
    for prefix, new in (("TensorBase.", "Tensor."), ("_VariableFunctionsClass.", "torch.")):
        if name.startswith(prefix):
            return new + name[len(prefix):]
    module = getattr(func, "__module__", None) or ""
    module = "torch.nn.functional" if module == "torch._C._nn" else module
    return f"{module}.{name}" if module else name


def _writes(func: Callable[..., Any]) -> bool:
    """Whether ``func`` writes into its first argument (``x.sigmoid_()``, ``x[i] = v``)."""
    name = getattr(func, "__name__", "")
    return (name.endswith("_") and not name.startswith("_")) or name == "__setitem__" or \
        name.startswith("__i")


class _Excitation(TorchFunctionMode):
    """Runs the forward pass, building eps beside every operation that depends on a layer."""

    def __init__(self, layer_names: Sequence[str]) -> None:
        super().__init__()
        self.layer_names = list(layer_names)
        self.eps: dict[int, Tensor] = {}  # id(tensor of the forward) -> its eps
        self.keep: list[Tensor] = []  # the path's tensors stay alive: their ids stay unique
        self.steps: list[_Step] = []
        self.foldable: dict[int, tuple[_Step, Tensor, _Refold]] = {}  # conv/linear outputs
        self.used: set[int] = set()
        self.leaves: list[Tensor | None] = [None] * len(layer_names)
        self.leaf_at: dict[int, Tensor] = {}  # id(a layer's output) -> its leaf
        self.negative: Tensor | int = 0
        self.modules: list[str] = []  # the module stack, for error messages

    # -- bookkeeping ------------------------------------------------------------------------
    def record(self, out: Tensor, ins: Sequence[Tensor], excite: Excite, *,
               dual: Excite | None = None, saved: Sequence[Tensor] = (),
               es: tuple[Tensor, ...] | None = None) -> _Step:
        es = tuple(self.eps[id(t)] for t in ins) if es is None else es
        with torch.enable_grad():
            self.eps[id(out)] = excite(es)
        step = _Step(tuple(id(t) for t in ins), id(out), es, excite, dual,
                     tuple((t, t._version) for t in saved))
        self.steps.append(step)
        self.keep.append(out)
        self.used.update(step.ins)
        return step

    def check_sign(self, *xs: Tensor) -> None:
        for x in xs:
            self.negative = self.negative + (x < 0).sum()

    def unsupported(self, func: Callable[..., Any], why: str = "") -> LayerError:
        where = f" in module {self.modules[-1]!r}" if self.modules and self.modules[-1] else ""
        return LayerError(
            f"excitation-backprop/cmwp cannot pass its probabilities through {_name(func)}"
            f"{where}{why}, which lies between layer(s) {self.layer_names} and the output: "
            f"Excitation Backprop has rules for {SUPPORTED} only; explain a layer above it, or "
            "use method='gradcam' or 'occlusion', which work on any differentiable model")

    def enter(self, name: str) -> Callable[[nn.Module, Any], None]:
        def hook(module: nn.Module, args: Any) -> None:
            self.modules.append(name)

        return hook

    def leave(self, module: nn.Module, args: Any, output: Any) -> None:
        self.modules.pop()

    def layer_hook(self, i: int) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not isinstance(output, Tensor):
                raise LayerError(f"layer {self.layer_names[i]!r} returns "
                                 f"{type(output).__name__}, not a tensor")
            leaf = torch.ones(output.shape, dtype=output.dtype, device=output.device)
            leaf.requires_grad_(True)
            before = self.eps.get(id(output))  # a layer above another: both stay connected
            with torch.enable_grad():
                self.eps[id(output)] = leaf if before is None else before * leaf
            self.keep.append(output)
            self.leaf_at[id(output)] = self.leaves[i] = leaf

        return hook

    # -- dispatch ---------------------------------------------------------------------------
    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        on = [t for t in _tensors(args, kwargs) if id(t) in self.eps]
        if not on:
            return func(*args, **kwargs)
        rule = _RULES.get(func)
        if rule is None and func in RECTIFIERS and RECTIFIERS[func](args, kwargs) is not None:
            rule = _same_unit
        if rule is not None:
            return rule(self, func, args, kwargs, on)
        out = func(*args, **kwargs)
        if _tensors((out,), {}) or _writes(func):
            raise self.unsupported(func)
        return out  # x.shape, x.size(0), x.dim(): no tensor, nothing to follow

    # -- contrast ---------------------------------------------------------------------------
    def dual_top(self, out: int) -> Tensor:
        """eps of the output with the top layer's weights negated (replaying what follows)."""
        cur, top = out, None
        for i in range(len(self.steps) - 1, -1, -1):
            s = self.steps[i]
            if s.out != cur:
                continue
            if s.dual is not None:
                top = i
                break
            if len(set(s.ins)) != 1:
                raise LayerError(
                    "cmwp negates the weights of the top layer, the last conv/linear before the "
                    "output, but the output is computed from several tensors (an addition or "
                    "concatenation) after it; use method='excitation-backprop'")
            cur = s.ins[0]
        if top is None:
            raise LayerError("cmwp negates the weights of the top layer, but no conv/linear "
                             "layer lies between the explained layer and the output; use "
                             "method='excitation-backprop' or explain a lower layer")
        dual: dict[int, Tensor] = {}
        with torch.enable_grad():
            for s in self.steps[top:]:
                if dual and not any(k in dual for k in s.ins):
                    continue  # not downstream of the top layer
                if any(t._version != v for t, v in s.saved):
                    raise LayerError("cmwp: the model wrote in place into a tensor after the "
                                     "top layer had read it; use method='excitation-backprop'")
                dual[s.out] = s.excite(tuple(dual.get(k, e) for k, e in zip(s.ins, s.es))) \
                    if dual else s.dual(s.es)  # type: ignore[misc]
        return dual[out]


# -- rules: (mode, func, args, kwargs, the arguments on the path) -> the real output ------------
Rule = Callable[[_Excitation, Callable[..., Any], tuple, dict, list], Any]


def _only_first(mode: _Excitation, func: Callable[..., Any], args: tuple, on: list) -> Tensor:
    if not args or any(t is not args[0] for t in on):
        raise mode.unsupported(func, " (it reads several tensors that depend on the layer)")
    return args[0]


def _same_unit(mode: _Excitation, func: Callable[..., Any], args: tuple, kwargs: dict,
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
    inplace = _writes(func)
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
        value = x.detach().clone() if _writes(func) else x
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
_RULES: dict[Callable[..., Any], Rule] = {
    torch.conv2d: _weighted(_CONV),
    F.linear: _weighted(("input", "weight", "bias")),
    F.batch_norm: _batch_norm,
    F.max_pool2d: _max_pool(_POOL, F.max_pool2d_with_indices),
    F.max_pool2d_with_indices: _max_pool(_POOL, F.max_pool2d_with_indices),
    torch.max_pool2d: _max_pool(_POOL, F.max_pool2d_with_indices),
    F.adaptive_max_pool2d: _max_pool(("input", "output_size", "return_indices"),
                                     F.adaptive_max_pool2d_with_indices),
    F.pad: _pad,
    F.dropout: _same_unit,
    F.dropout2d: _same_unit,
    torch.cat: _cat,
    torch.concat: _cat,
    torch.concatenate: _cat,
}


def _methods(*names: str) -> list[Callable[..., Any]]:
    return [getattr(Tensor, n) for n in names]


_RULES.update(dict.fromkeys(
    [F.avg_pool2d, F.adaptive_avg_pool2d, torch.mean, torch.sum, *_methods("mean", "sum")],
    _average))
_RULES.update(dict.fromkeys(
    [torch.add, *_methods("add", "add_", "__add__", "__radd__", "__iadd__")], _add))
_RULES.update(dict.fromkeys(
    [torch.mul, *_methods("mul", "mul_", "__mul__", "__rmul__", "__imul__")],
    _scale(divide=False)))
_RULES.update(dict.fromkeys(
    [torch.div, torch.true_divide, *_methods("div", "div_", "__truediv__", "__itruediv__")],
    _scale(divide=True)))
_RULES.update(dict.fromkeys(
    [torch.reshape, torch.flatten, torch.squeeze, torch.unsqueeze, torch.permute,
     torch.transpose, torch.clone,
     *_methods("view", "reshape", "flatten", "contiguous", "squeeze", "unsqueeze", "permute",
               "transpose", "clone", "expand", "__getitem__", "to", "float", "double", "half",
               "bfloat16")], _reindex))


def marginal_winning_probabilities(
    model: nn.Module, inputs: Sequence[Tensor], layers: Sequence[tuple[str, nn.Module]],
    indices: Tensor, *, contrastive: bool = False,
) -> tuple[list[Tensor], Tensor, int]:
    """MWP (``contrastive``: MWP_c - MWP_dual) at each layer for the (B, K) class ``indices``.

    Runs ``model`` (camlens's private view: hooks are added to it for the call) once under the
    excitation rules. Returns ([(B, K, C, h, w) per layer], the (B, N) scores of this forward,
    the number of negative inputs met by conv/linear/pooling/addition).
    """
    mode = _Excitation([n for n, _ in layers])
    handles = []
    try:
        for name, module in model.named_modules():
            if not isinstance(module, torch.jit.ScriptModule):  # shared with the user's model
                handles.append(module.register_forward_pre_hook(mode.enter(name)))
                handles.append(module.register_forward_hook(mode.leave))
        handles += [m.register_forward_hook(mode.layer_hook(i)) for i, (_, m) in enumerate(layers)]
        with mode:
            output = forward(model, [t.clone() for t in inputs], grad=False)
    finally:
        for h in handles:
            h.remove()
    logits = logits_of(output)
    top = mode.eps.get(id(logits))
    if top is None or any(leaf is None for leaf in mode.leaves):
        raise LayerError(
            f"excitation-backprop could not follow the model's output back to layer(s) "
            f"{mode.layer_names}: the path runs through code camlens does not see (a TorchScript "
            "module, a C++ extension), or the layer is not on the path to the output")
    if contrastive:
        top = top - mode.dual_top(id(logits))
    scores = top.gather(1, indices.to(top.device))
    mwp = gradients(scores, [leaf for leaf in mode.leaves if leaf is not None],
                    what="the layer (through the excitation rules)")
    negative = mode.negative if isinstance(mode.negative, int) else int(mode.negative)
    return mwp, logits.detach(), negative
