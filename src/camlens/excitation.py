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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from camlens.capture import forward
from camlens.errors import LayerError
from camlens.evidence import gradients
from camlens.excitation_rules import RULES, Excite, same_unit, writes
from camlens.guided import _FUNCTIONS as RECTIFIERS
from camlens.targets import logits_of

Tensor = torch.Tensor
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


def _tensors(args: Sequence[Any], kwargs: dict[str, Any]) -> list[Tensor]:
    out, stack = [], [*args, *kwargs.values()]
    while stack:
        a = stack.pop()
        if isinstance(a, Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            stack.extend(a)
    return out


def _name(func: Callable[..., Any]) -> str:
    name = str(getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func)))
    for prefix, new in (("TensorBase.", "Tensor."), ("_VariableFunctionsClass.", "torch.")):
        if name.startswith(prefix):
            return new + name[len(prefix):]
    module = getattr(func, "__module__", None) or ""
    module = "torch.nn.functional" if module == "torch._C._nn" else module
    return f"{module}.{name}" if module else name


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
        rule = RULES.get(func)
        if rule is None and func in RECTIFIERS and RECTIFIERS[func](args, kwargs) is not None:
            rule = same_unit
        if rule is not None:
            return rule(self, func, args, kwargs, on)
        out = func(*args, **kwargs)
        if _tensors((out,), {}) or writes(func):
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
