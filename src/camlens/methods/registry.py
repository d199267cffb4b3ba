"""The method registry: name -> :class:`Method`. It drives ``explain``, the CLI, the tests.

A method is a pure function ``compute(job, evidence, **options) -> Explanation`` plus a
declaration of the evidence it needs (:class:`~camlens.evidence.Needs`), so that
``explain(..., method=[...])`` can gather once for all requested methods: one forward pass and
one backward per distinct (destination, rectifier rule). Its keyword-only parameters are its
options, typed by their annotations (which the CLI's ``--option KEY=VALUE`` parses).

A *preset* is a registered name for a method with some options fixed, e.g.
``counterfactual-gradcam`` = ``gradcam`` with ``counterfactual=True``.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from camlens.errors import OptionError
from camlens.evidence import Needs, Reshape
from camlens.explanation import Explanation
from camlens.targets import TargetSpec


@dataclass(frozen=True)
class Job:
    """What to explain: the model (camlens's private view of the user's, see camlens.view), its
    inputs, the layers (modules of that view) and the target."""

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
class Option:
    """One keyword option of a method: its name, default, annotation and allowed values."""

    name: str
    default: Any
    annotation: Any
    choices: tuple[Any, ...] = ()

    @property
    def kinds(self) -> tuple[Any, ...]:
        """The plain types the annotation allows (``int | tuple[int, int]`` -> (int, tuple))."""
        args = typing.get_args(self.annotation) if typing.get_origin(self.annotation) in (
            typing.Union, types.UnionType) else (self.annotation,)
        return tuple(typing.get_origin(a) or a for a in args)

    def parse(self, text: str) -> Any:
        """The value of ``text`` (from ``--option KEY=VALUE``) for this option's type."""
        if self.choices:
            for c in self.choices:
                if str(c) == text:
                    return c
            raise OptionError(f"option {self.name}={text!r}: choose one of {list(self.choices)}")
        kind = type(self.default)
        try:
            if tuple in self.kinds:  # e.g. window=16 or window=16,8
                parts = [int(p) for p in text.split(",")]
                return parts[0] if len(parts) == 1 else tuple(parts)
            if kind is bool:
                low = text.strip().lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(text)
                return low in ("true", "1", "yes")
            if kind in (int, float):
                return kind(text)
        except ValueError:
            raise OptionError(
                f"option {self.name}={text!r}: expected {self.type_name}") from None
        return text

    @property
    def type_name(self) -> str:
        if self.choices:
            return " | ".join(repr(c) for c in self.choices)
        if tuple in self.kinds:
            return "an integer or H,W"
        return {bool: "true/false", int: "an integer", float: "a number"}.get(
            type(self.default), "text")


@dataclass(frozen=True)
class Method:
    """A registered method (or preset): what it computes, needs and takes.

    ``needs(job, **options)`` declares the evidence; ``compute(job, evidence, **options)``
    builds the :class:`Explanation` from it. ``fixed`` are a preset's options.
    """

    name: str
    compute: Callable[..., Explanation]
    needs: Callable[..., Needs]
    needs_layer: bool
    pixel_space: bool
    summary: str
    options: Mapping[str, Option] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    base: str = ""

    @property
    def free_options(self) -> dict[str, Option]:
        """The options a caller may set (a preset's fixed ones excluded)."""
        return {k: o for k, o in self.options.items() if k not in self.fixed}

    def settings(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The method's full options: defaults, then ``given`` (those it takes), then a preset's
        fixed ones."""
        opts = {k: o.default for k, o in self.options.items()}
        opts.update({k: v for k, v in given.items() if k in self.free_options})
        opts.update(self.fixed)
        for key, value in opts.items():
            choices = self.options[key].choices
            if choices and value not in choices:
                raise OptionError(f"{self.name}: {key} must be one of {list(choices)}, "
                                  f"got {value!r}")
        return opts


METHODS: dict[str, Method] = {}
"""Every registered method and preset, by name."""


def _options(fn: Callable[..., Any]) -> dict[str, Option]:
    hints = typing.get_type_hints(fn)
    out = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        ann = hints.get(p.name, Any)
        choices = typing.get_args(ann) if typing.get_origin(ann) is Literal else ()
        out[p.name] = Option(p.name, p.default, ann, tuple(choices))
    return out


def register(name: str, *, needs: Callable[..., Needs], needs_layer: bool, pixel_space: bool,
             summary: str) -> Callable[[Callable[..., Explanation]], Callable[..., Explanation]]:
    """Decorator adding ``compute`` to :data:`METHODS`; its keyword-only parameters (with
    defaults and type annotations) are the method's options."""

    def add(compute: Callable[..., Explanation]) -> Callable[..., Explanation]:
        METHODS[name] = Method(name, compute, needs, needs_layer, pixel_space, summary,
                               _options(compute), base=name)
        return compute

    return add


def preset(name: str, base: str, summary: str, **fixed: Any) -> None:
    """Register ``name`` as method ``base`` with the options ``fixed``."""
    m = METHODS[base]
    unknown = sorted(set(fixed) - set(m.options))
    if unknown:
        raise OptionError(f"preset {name}: {base} has no option(s) {unknown}")
    METHODS[name] = Method(name, m.compute, m.needs, m.needs_layer, m.pixel_space, summary,
                           m.options, fixed, base)
