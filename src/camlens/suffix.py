"""Run only the part of a model after a layer, many times, from replaced layer outputs.

Ablation-CAM scores the model once per ablated channel; rerunning the network before the layer
each time would cost C full forwards. :func:`suffix_runner` records one forward pass of
camlens's private view (never the user's model) as a tree of module calls, keeping the outputs
of the calls that finished before the layer started. A replay then runs the model again with

- the layer's call returning the given replacement (N copies of one sample's activations,
  modified) without running the layer,
- every call that finished before the layer started, and whose parent call was still running
  when the layer started (the largest finished blocks: a stem, earlier stages, the first
  convolutions of the layer's own residual block), returning its recorded output for that
  sample, expanded to N copies without copying, instead of running,
- everything else running as usual: the code of the calls that enclose the layer (a residual
  addition with a recorded shortcut, a flatten) and all of the network after the layer.

Calls are matched by their position in the recorded tree (the k-th call under the same parent
call, of the same module), so a module reused in several places (``self.relu``) is matched
per call. The first replay is checked: its first copy is the unmodified activation, whose
scores must reproduce the recorded forward's; a model whose control flow depends on its
batch, an output that is not a tensor (tuple, list, dict of them) and a write into a recorded
output are detected, and the runner then falls back to running the whole network on N copies
of the sample with only the layer's output replaced (always right, just slower).

Modules are intercepted by giving the view's module copies an instance attribute ``forward``
for the duration of one recording or replay (removed in ``finally``; the view is private to
one ``explain`` call, see :mod:`camlens.view`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from camlens.capture import forward

_MISSING = object()


class _Diverged(Exception):
    """The replay's module calls do not follow the recorded ones (or a recorded output was
    written): use the full forward instead."""


@dataclass(eq=False)
class _Call:
    """One module call of the recorded forward."""

    module: nn.Module | None
    children: list[_Call] = field(default_factory=list)
    output: Any = _MISSING  # kept for calls that finished before the layer started
    encloses: bool = False  # running when the layer started (an ancestor of it)
    layer: bool = False


@contextmanager
def _intercept(root: nn.Module, call: Callable[[nn.Module, Callable[..., Any], tuple[Any, ...],
                                                     dict[str, Any]], Any]) -> Iterator[None]:
    """Route every call of every (non-TorchScript) module of ``root`` through ``call(module,
    its forward, args, kwargs)`` while the block runs."""
    saved: list[tuple[nn.Module, Any]] = []
    try:
        for m in root.modules():  # each module once
            if isinstance(m, torch.jit.ScriptModule):
                continue
            own = vars(m).get("forward", _MISSING)
            saved.append((m, own))
            original = m.forward

            def wrapped(*args: Any, _m: nn.Module = m, _f: Any = original,
                        **kwargs: Any) -> Any:
                return call(_m, _f, args, kwargs)

            vars(m)["forward"] = wrapped
        yield
    finally:
        for m, own in saved:
            if own is _MISSING:
                vars(m).pop("forward", None)
            else:
                vars(m)["forward"] = own


def _record(model: nn.Module, layer: nn.Module, inputs: Sequence[torch.Tensor]) -> _Call:
    """One no-grad forward, recorded as a call tree (see the module docstring)."""
    top = _Call(None, encloses=True)
    stack = [top]
    started = [False]

    def call(m: nn.Module, f: Callable[..., Any], args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> Any:
        node = _Call(m)
        stack[-1].children.append(node)
        if m is layer and not started[0]:
            started[0] = node.layer = True
            for s in stack:
                s.encloses = True
        stack.append(node)
        try:
            out = f(*args, **kwargs)
        finally:
            stack.pop()
        if not started[0]:  # finished before the layer: keep its output, not its children's
            node.output, node.children = out, []
        return out

    with _intercept(model, call):
        forward(model, inputs, grad=False)
    _trim(top)
    return top


def _trim(node: _Call) -> None:
    """Free the recorded outputs no replay reads: inside a plain ``nn.Sequential`` each child
    only feeds the next, so of the children that finished before the layer only the last
    one's output can reach running code (the others feed recorded calls, which ignore their
    input). VGG's ``features`` then keeps one map instead of 29."""
    for child in node.children:
        if child.encloses:
            _trim(child)
    sequential = (node.module is not None and type(node.module) is nn.Sequential
                  and type(node.module).forward is nn.Sequential.forward)
    if sequential and node.encloses:
        done = [c for c in node.children if c.output is not _MISSING]
        for c in done[:-1]:
            c.output = None  # returned as None: the next (recorded) call ignores it


def _expand(value: Any, s: int, n: int, batch: int) -> Any:
    """Sample ``s`` of a recorded output as ``n`` copies (a view); tensors without the batch
    dimension as they are."""
    if isinstance(value, torch.Tensor):
        if value.dim() and value.shape[0] == batch:
            return value[s:s + 1].expand(n, *value.shape[1:])
        return value
    if isinstance(value, (tuple, list)) and type(value) in (tuple, list):
        return type(value)(_expand(v, s, n, batch) for v in value)
    if type(value) is dict:
        return {k: _expand(v, s, n, batch) for k, v in value.items()}
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    raise _Diverged  # an output camlens cannot expand: run the prefix


def _versions(value: Any) -> list[int]:
    if isinstance(value, torch.Tensor):
        return [value._version]
    if isinstance(value, (tuple, list)):
        return [v for x in value for v in _versions(x)]
    if isinstance(value, dict):
        return [v for x in value.values() for v in _versions(x)]
    return []


@dataclass
class SuffixRunner:
    """Runs ``model`` with ``layer``'s output replaced; see :func:`suffix_runner`."""

    model: nn.Module
    layer: nn.Module
    inputs: tuple[torch.Tensor, ...]
    image_index: int
    tree: _Call | None
    fast: bool = True

    @property
    def batch(self) -> int:
        return self.inputs[self.image_index].shape[0]

    def copies(self, s: int, n: int, real: bool) -> list[torch.Tensor]:
        """The inputs of sample ``s``, ``n`` copies each: views (a model that writes into its
        input then fails on the overlapping copies, and the runner falls back), or ``real``
        copies. One copy is always real: a view would let such a model write into ours."""
        return [t[s:s + 1].expand(n, *t.shape[1:]).clone() if real or n == 1 else
                t[s:s + 1].expand(n, *t.shape[1:]) for t in self.inputs]

    def run(self, s: int, replacement: torch.Tensor) -> Any:
        """The model's output when ``layer`` outputs ``replacement`` (N copies of sample
        ``s``'s activations, modified): only the rest of the network runs when possible."""
        if self.fast and self.tree is not None:
            try:
                return self._replay(s, replacement)
            except _Diverged:
                self.fast = False
        return self._full(s, replacement)

    def _full(self, s: int, replacement: torch.Tensor) -> Any:
        def call(m: nn.Module, f: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> Any:
            return replacement if m is self.layer else f(*args, **kwargs)

        with _intercept(self.model, call):
            return forward(self.model, self.copies(s, replacement.shape[0], True), grad=False)

    def _replay(self, s: int, replacement: torch.Tensor) -> Any:
        n = replacement.shape[0]
        assert self.tree is not None
        stack: list[_Call | None] = [self.tree]
        cursor: dict[int, int] = {}
        cached: list[Any] = []

        def call(m: nn.Module, f: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> Any:
            parent = stack[-1]
            if parent is None:  # inside a call after the layer: untracked
                return f(*args, **kwargs)
            i = cursor.get(id(parent), 0)
            if i >= len(parent.children) or parent.children[i].module is not m:
                raise _Diverged
            cursor[id(parent)] = i + 1
            node = parent.children[i]
            if node.layer:
                return replacement
            if node.output is not _MISSING:
                out = _expand(node.output, s, n, self.batch)
                cached.append(out)
                return out
            stack.append(node if node.encloses else None)
            try:
                return f(*args, **kwargs)
            finally:
                stack.pop()

        before = _versions(self._outputs())
        with _intercept(self.model, call):
            try:
                out = forward(self.model, self.copies(s, n, False), grad=False)
            except _Diverged:
                raise
            except Exception as err:  # noqa: BLE001 - a replay the model cannot take
                raise _Diverged from err
        if _versions(self._outputs()) != before:
            raise _Diverged  # something wrote into a recorded output
        return out

    def _outputs(self) -> list[Any]:
        found: list[Any] = []

        def walk(node: _Call) -> None:
            if node.output is not _MISSING:
                found.append(node.output)
            for c in node.children:
                walk(c)

        if self.tree is not None:
            walk(self.tree)
        return found


def suffix_runner(model: nn.Module, layer: nn.Module, inputs: Sequence[torch.Tensor],
                  image_index: int) -> SuffixRunner:
    """Record one forward of ``model`` (camlens's private view) on ``inputs`` and return a
    runner of the part after ``layer``. The caller checks the first replay (see the module
    docstring) and sets ``fast = False`` when it does not reproduce the recorded scores."""
    inputs = tuple(t.detach() for t in inputs)
    tree = _record(model, layer, [t.clone() for t in inputs])
    return SuffixRunner(model, layer, inputs, image_index, tree)
