"""The one place that touches hooks: capture layer activations for one forward pass.

Hooks live for exactly one ``with`` block and are removed in ``finally``, also when the
forward raises. The forward hook hands a *clone* downstream, so an in-place operation after the
layer (``nn.ReLU(inplace=True)``) cannot change the captured activation.

With ``grad_from_layer=True`` the forward runs without autograd until the first captured layer,
which then switches autograd on and becomes a leaf: the part of the network before the layer
costs what inference costs, and the backward pass stops at the layer ("a single forward and a
partial backward pass", Sec. 3).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from camlens.errors import ExplainError, InputError, LayerError


@dataclass
class Capture:
    """Activations recorded during one forward: ``activations[i]`` belongs to ``names[i]``."""

    names: tuple[str, ...]
    activations: list[torch.Tensor | None] = field(default_factory=list)

    def require_all(self) -> list[torch.Tensor]:
        """The activations, raising :class:`LayerError` for a layer that did not run."""
        missing = [n for n, a in zip(self.names, self.activations) if a is None]
        if missing:
            raise LayerError(
                f"layer(s) {missing} did not run during the forward pass; choose a layer on "
                "the path from the input to the output (`camlens layers` lists them). If the "
                "model does run it, it reaches it in a way camlens cannot follow (e.g. a "
                "nested container, or a helper function called by a forward patched onto the "
                "model), which leads to the original module, not the private copy camlens "
                "explains: make the layer a registered submodule that forward calls"
            )
        return [a for a in self.activations if a is not None]


@contextmanager
def capture(
    layers: Sequence[tuple[str, nn.Module]], *, grad_from_layer: bool = False
) -> Iterator[Capture]:
    """Record each layer's output (B, C, h, w) during the forward passes run inside the block.

    With ``grad_from_layer``, run the forward under :func:`forward` with ``grad=False``: the
    first captured layer switches autograd on and its output becomes a leaf that requires grad.
    """
    cap = Capture(names=tuple(n for n, _ in layers), activations=[None] * len(layers))

    def make_hook(i: int, name: str):  # noqa: ANN202 - hook signature is torch's
        def hook(module: nn.Module, args: Any, output: Any) -> torch.Tensor:
            if not isinstance(output, torch.Tensor):
                raise LayerError(
                    f"layer {name!r} returns {type(output).__name__}, not a tensor; choose a "
                    "submodule whose output is a tensor"
                )
            if cap.activations[i] is not None:
                raise LayerError(
                    f"layer {name!r} ran more than once in one forward pass (a module reused "
                    "in several places has no single activation); choose a layer that runs once"
                )
            if grad_from_layer:
                torch.set_grad_enabled(True)
            act = output
            if not act.requires_grad and (grad_from_layer or torch.is_grad_enabled()):
                act = output.detach().requires_grad_(True)
            cap.activations[i] = act
            return act.clone()

        return hook

    handles = []
    try:
        for i, (name, module) in enumerate(layers):
            handles.append(module.register_forward_hook(make_hook(i, name)))
        yield cap
    finally:
        for h in handles:
            h.remove()


def forward(model: nn.Module, inputs: Sequence[torch.Tensor], *, grad: bool) -> Any:
    """Run ``model(*inputs)`` with autograd on or off, restoring the grad mode afterwards.

    A failure inside the model is re-raised as :class:`InputError` naming the input shapes, with
    the original exception chained, unless it is already one of camlens's own errors.
    """
    previous = torch.is_grad_enabled()
    torch.set_grad_enabled(grad)
    try:
        return model(*inputs)
    except ExplainError:
        raise
    except (RuntimeError, TypeError, ValueError, IndexError) as err:
        shapes = ", ".join(str(tuple(t.shape)) if isinstance(t, torch.Tensor) else
                           type(t).__name__ for t in inputs)
        raise InputError(
            f"{type(model).__name__} failed on input(s) of shape {shapes}: {err} "
            "(check the input's shape, channels and dtype against what the model expects)"
        ) from err
    finally:
        torch.set_grad_enabled(previous)
