"""A private view of the user's model for one call: what camlens sets, and what the forward
writes into buffers, stays in the view; the model other threads share sees none of it.

Every ``nn.Module`` of the tree is copied shallowly: the copy has its own ``__dict__`` and its
own containers (``_modules`` pointing at the copied children, every hook dict holding the user's
own hooks, ``_parameters`` holding the SAME ``Parameter`` objects) and its buffers are clones.
So the view computes exactly what the model computes, on the same weights, but camlens's capture
and rectifier hooks go into the view's hook dicts only, and a model in training mode updates the
clones of BatchNorm's ``running_mean``/``running_var``/``num_batches_tracked``, not the user's.

Attributes that refer to modules of the tree outside ``_modules`` (a plain attribute, a list,
tuple or dict of modules, a method bound to one, a functools.partial of one as accelerate's hooks
set, a function such as ``model.forward = lambda x: ...`` through its closure or globals) are
pointed at the copies too. TorchScript modules are shared as they are: their code cannot be
hooked and is not copied (so one in training mode with buffers is refused). A torch.compile'd
model runs its copied original module eagerly (its compiled forward closes over the original).
Cost: about 1.3 ms for 150 modules, and one clone of every buffer (BatchNorm's statistics are
small).
"""

from __future__ import annotations

import functools
import sys
import types
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from camlens.errors import InputError, LayerError

# The dict/set containers nn.Module.__init__ gives every module (hook dicts included) in the
# installed torch; _parameters, _buffers and _modules are handled apart.
_CONTAINERS = tuple(k for k, v in vars(nn.Module()).items()
                    if isinstance(v, (dict, set)) and k not in
                    ("_parameters", "_buffers", "_modules"))


@dataclass(frozen=True)
class View:
    """The private copy ``root`` of a model; ``copies`` maps id(original) -> its copy."""

    root: nn.Module
    copies: dict[int, nn.Module]

    def layers(self, resolved: Sequence[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
        """The copies of layers resolved on the original model: (name, copy)."""
        out = []
        for name, module in resolved:
            copy = self.copies.get(id(module))
            if copy is None or isinstance(copy, torch.jit.ScriptModule):
                raise LayerError(
                    f"layer {name!r} is {'' if copy is not None else 'inside '}a TorchScript "
                    "module, whose code camlens cannot observe; choose a layer outside the "
                    "scripted part, or pass the model before torch.jit.script/trace"
                )
            out.append((name, copy))
        return out


def private_view(model: nn.Module) -> View:
    """Copy ``model``'s module tree: shared parameters, cloned buffers, private hook dicts."""
    copies: dict[int, nn.Module] = {}
    tensors: dict[int, torch.Tensor] = {}
    root = _copy(model, copies, tensors)  # the originals stay alive: their ids stay valid
    for copy in copies.values():
        if not isinstance(copy, torch.jit.ScriptModule):
            _redirect(copy, copies)
    return View(root, copies)


def _copy(module: nn.Module, copies: dict[int, nn.Module],
          tensors: dict[int, torch.Tensor]) -> nn.Module:
    """The copy of ``module`` (one per module: a module used twice stays one module)."""
    done = copies.get(id(module))
    if done is not None:
        return done
    if isinstance(module, torch.jit.ScriptModule):
        _check_script(module)
        copies[id(module)] = module
        return module
    # object.__new__: a class's own __new__ may do more (torch.fx makes a class per instance)
    view = object.__new__(type(module))
    copies[id(module)] = view
    state = dict(vars(module))
    for key in _CONTAINERS:
        if key in state:
            state[key] = type(state[key])(state[key])
    state["_parameters"] = dict(module._parameters)
    state["_buffers"] = {k: None if b is None else _clone(b, tensors)
                         for k, b in module._buffers.items()}
    state["_modules"] = {k: None if c is None else _copy(c, copies, tensors)
                         for k, c in module._modules.items()}
    if _compiled(module):  # its forward closes over the original: run the copy, eagerly
        state["forward"] = state["_modules"]["_orig_mod"]
        state.pop("_forward", None)
    vars(view).update(state)
    return view


def _check_script(module: nn.Module) -> None:
    """A TorchScript module is shared, not copied: in training mode its BatchNorm would update
    the user's statistics, so that is an error rather than a silent change."""
    if any(m.training and any(True for _ in m.buffers(recurse=False)) for m in module.modules()):
        raise InputError(
            f"the model has a TorchScript module ({type(module).__name__}) in training mode with "
            "buffers (e.g. BatchNorm statistics); camlens cannot copy TorchScript modules, so "
            "its forward would change them: call model.eval() first"
        )


def _compiled(module: nn.Module) -> bool:
    """Whether ``module`` is torch.compile's wrapper (torch._dynamo is imported by then)."""
    dynamo = sys.modules.get("torch._dynamo.eval_frame")
    return dynamo is not None and isinstance(module, dynamo.OptimizedModule)


def _clone(buffer: torch.Tensor, tensors: dict[int, torch.Tensor]) -> torch.Tensor:
    """One clone per buffer tensor, so a buffer shared by two modules stays shared."""
    done = tensors.get(id(buffer))
    if done is None:
        done = tensors[id(buffer)] = buffer.detach().clone()
    return done


def _redirect(view: nn.Module, copies: dict[int, nn.Module]) -> None:
    """Point ``view``'s plain attributes that refer to modules of the tree at their copies."""
    skip = {"_parameters", "_buffers", "_modules", *_CONTAINERS}
    for key, value in list(vars(view).items()):
        if key not in skip:
            new = _mapped(value, copies)
            if new is not value:
                vars(view)[key] = new


def _mapped(value: Any, copies: dict[int, nn.Module]) -> Any:
    """``value`` with modules of the tree replaced by their copies: a module, a method bound to
    one, a functools.partial of one, a function that names one (closure or global), or a list,
    tuple or dict of them (one level); anything else as it is."""
    if isinstance(value, nn.Module):
        return copies.get(id(value), value)
    if isinstance(value, types.MethodType) and isinstance(value.__self__, nn.Module):
        owner = copies.get(id(value.__self__))
        return value if owner is None else types.MethodType(value.__func__, owner)
    if isinstance(value, functools.partial) and any(isinstance(a, nn.Module) for a in value.args):
        # e.g. accelerate's forward = partial(new_forward, module)
        bound = functools.partial(value.func, *_mapped(list(value.args), copies),
                                  **value.keywords)
        vars(bound).update(vars(value))
        return bound
    if isinstance(value, types.FunctionType):  # e.g. model.forward = lambda x: ...
        return _function(value, copies)
    kind = type(value)
    if kind in (list, tuple) and any(isinstance(v, nn.Module) for v in value):
        return kind(copies.get(id(v), v) if isinstance(v, nn.Module) else v for v in value)
    if kind in (dict, OrderedDict) and any(isinstance(v, nn.Module) for v in value.values()):
        return kind((k, copies.get(id(v), v) if isinstance(v, nn.Module) else v)
                    for k, v in value.items())
    return value


def _function(f: types.FunctionType, copies: dict[int, nn.Module]) -> types.FunctionType:
    """``f``, or a copy of it whose closure cells and globals that hold modules of the tree
    hold their copies instead (a forward patched onto a model as a lambda or a function)."""
    cells = f.__closure__ or ()
    old = [c.cell_contents if _full(c) else _EMPTY for c in cells]
    new = [copies.get(id(v), v) if isinstance(v, nn.Module) else v for v in old]
    named = {n: copies[id(v)] for n in f.__code__.co_names
             if isinstance(v := f.__globals__.get(n), nn.Module) and id(v) in copies}
    if not named and all(a is b for a, b in zip(old, new)):
        return f
    glob = {**f.__globals__, **named} if named else f.__globals__
    closure = tuple(types.CellType() if v is _EMPTY else types.CellType(v) for v in new)
    g = types.FunctionType(f.__code__, glob, f.__name__, f.__defaults__, closure or None)
    g.__kwdefaults__ = f.__kwdefaults__
    g.__qualname__ = f.__qualname__
    vars(g).update(vars(f))
    return g


_EMPTY = object()


def _full(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - raises ValueError for an empty cell
    except ValueError:
        return False
    return True
