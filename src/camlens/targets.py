"""Targets: what is explained. One normaliser turns every accepted form into scores.

A target is anything that picks, from the model's output, one differentiable score y^c per
sample and explained item: class indices (an int, one per sample, a (B, K) tensor), the top-k
classes, or a callable ``f(output) -> (B,) or (B, K)`` for tuple, dict and Hugging Face style
outputs, caption log-probabilities, VQA answers or policy actions. Class indices read the
output's ``.logits`` or ``["logits"]`` when it has one (:func:`output_tensor`). Callables whose
scores depend on per-sample data implement :class:`SampleTarget` (camlens's caption and answer
targets in :mod:`camlens.tasks` do).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias, runtime_checkable

import torch

from camlens.errors import TargetError

TargetFn: TypeAlias = Callable[[Any], torch.Tensor]
TargetSpec: TypeAlias = (
    int | Sequence[int] | Sequence[Sequence[int]] | torch.Tensor | TargetFn | None
)


@runtime_checkable
class SampleTarget(Protocol):
    """A callable target whose scores depend on per-sample data (a caption's tokens, each
    sample's answer): ``at(s)`` is the target for sample ``s`` alone, applied to the outputs of
    N copies of that sample (occlusion runs the model on a batch of occluded copies)."""

    def __call__(self, output: Any) -> torch.Tensor: ...

    def at(self, sample: int) -> TargetFn: ...


def for_sample(target: TargetSpec, sample: int) -> TargetSpec:
    """The target for a batch of copies of sample ``sample``: ``target.at(sample)`` for a
    :class:`SampleTarget`, the target itself otherwise (class indices are resolved per sample
    by the caller)."""
    return target.at(sample) if isinstance(target, SampleTarget) else target


def output_tensor(output: Any) -> Any:
    """The score tensor of a model's output: ``output.logits`` for Hugging Face style objects,
    ``output["logits"]`` for dicts (a ``ModelOutput`` is both), else ``output`` itself."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, Mapping):
        logits = output.get("logits")
    return output if logits is None else logits


def logits_of(output: Any) -> torch.Tensor:
    """The (B, N) class-score tensor of ``output``, or a :class:`TargetError` saying what to do."""
    logits = output_tensor(output)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        kind = (f"a tensor of shape {tuple(logits.shape)}" if isinstance(logits, torch.Tensor)
                else type(output).__name__)
        raise TargetError(
            f"class-index targets need a (batch, classes) output, but the model returned {kind}; "
            "pass target=callable(output) -> (B,) or (B, K) scores instead"
        )
    return logits


def class_indices(
    output: Any, target: TargetSpec, top_k: int | None, batch: int
) -> torch.Tensor | None:
    """Resolve ``target``/``top_k`` to (B, K) class indices, or None for a callable target."""
    if callable(target) and not isinstance(target, torch.Tensor):
        if top_k is not None:
            raise TargetError("give either a callable target or top_k, not both")
        return None
    if top_k is not None:
        if target is not None:
            raise TargetError(f"give either target or top_k, not both (got target={target!r})")
        logits = logits_of(output)
        if not 1 <= top_k <= logits.shape[1]:
            raise TargetError(f"top_k must be between 1 and {logits.shape[1]}, got {top_k}")
        return logits.detach().topk(top_k, dim=1).indices
    logits = logits_of(output)
    if target is None:
        return logits.detach().argmax(dim=1, keepdim=True)
    idx = _as_index_tensor(target, batch)
    n = logits.shape[1]
    bad = (idx < 0) | (idx >= n)
    if bad.any():
        raise TargetError(
            f"class index {int(idx[bad][0])} is out of range: the model has {n} classes, "
            f"so indices run from 0 to {n - 1}"
        )
    return idx.to(logits.device)


def _as_index_tensor(target: TargetSpec, batch: int) -> torch.Tensor:
    if isinstance(target, bool) or isinstance(target, float):
        raise TargetError(f"a class index must be an int, got {target!r}")
    if isinstance(target, int):
        return torch.full((batch, 1), target, dtype=torch.long)
    try:
        idx = torch.as_tensor(target)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TargetError(
            f"target must be an int, a list of ints, a (B, K) tensor or a callable, not {target!r}"
        ) from err
    if idx.is_floating_point() or idx.dtype == torch.bool:
        raise TargetError(f"class indices must be integers, got dtype {idx.dtype}")
    idx = (idx.clone() if idx.is_inference() else idx).long()  # e.g. an argmax under inference_mode
    if idx.dim() == 0:
        return idx.expand(batch, 1).clone()
    if idx.dim() == 1:
        if idx.numel() == batch:
            return idx[:, None]
        if batch == 1:  # a single sample: the list is its K targets
            return idx[None, :]
        raise TargetError(
            f"got {idx.numel()} class indices for a batch of {batch}: give one per sample, "
            f"or a ({batch}, K) tensor to explain K classes of every sample"
        )
    if idx.dim() == 2 and idx.shape[0] in (batch, 1):
        return idx.expand(batch, -1).clone()
    raise TargetError(
        f"a target tensor must be (B, K) = ({batch}, K), got shape {tuple(idx.shape)}"
    )


def scores_of(output: Any, target: TargetSpec, indices: torch.Tensor | None) -> torch.Tensor:
    """The (B, K) scores y^c to explain (pre-softmax class scores for class targets)."""
    if indices is not None:
        return logits_of(output).gather(1, indices)
    if not callable(target) or isinstance(target, torch.Tensor):
        raise TargetError(
            f"target={target!r} is not callable: pass its (B, K) class indices from class_indices"
        )
    scores = target(output)
    if not isinstance(scores, torch.Tensor):
        raise TargetError(
            f"a callable target must return a tensor of scores, got {type(scores).__name__}"
        )
    if scores.dim() == 1:
        scores = scores[:, None]
    if scores.dim() != 2:
        raise TargetError(
            f"a callable target must return (B,) or (B, K) scores, got shape {tuple(scores.shape)}"
        )
    return scores


def class_index(text: str, labels: Sequence[str]) -> int:
    """A class index (``"281"``) or a label name (``"Tabby"``, case-insensitive) -> its class
    index in ``labels``; a :class:`TargetError` naming the nearest labels otherwise."""
    s = text.strip()
    n = len(labels)
    if re.fullmatch(r"[+-]?\d+", s):
        idx = int(s)
        if not 0 <= idx < n:
            raise TargetError(f"{s}: class index out of range: the model has {n} classes, "
                              f"so indices run from 0 to {n - 1}")
        return idx
    key = s.casefold()
    hits = [i for i, name in enumerate(labels) if name.casefold() == key]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise TargetError(f"{s!r} names {len(hits)} classes ({', '.join(map(str, hits))}); "
                          "pass the class index instead")
    folded: dict[str, str] = {}
    for name in labels:
        folded.setdefault(name.casefold(), name)
    near = difflib.get_close_matches(key, list(folded), n=5, cutoff=0.6)
    hint = ("nearest names: " + ", ".join(repr(folded[m]) for m in near) if near else
            f"give a class index (0 to {n - 1}) or one of the model's label names")
    raise TargetError(f"{s!r}: no class has that name; {hint}")
