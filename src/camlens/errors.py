"""Errors camlens raises: each says what was wrong and what would be right."""

from __future__ import annotations


class ExplainError(ValueError):
    """Base class for every error camlens raises about its inputs."""


class LayerError(ExplainError):
    """An unknown layer, or a layer that cannot be explained (runs twice, returns no tensor)."""


class TargetError(ExplainError):
    """A target that is out of range, has the wrong shape, or does not depend on the layer."""


class InputError(ExplainError):
    """An input the model cannot take, or one of the wrong rank for the method."""


class OptionError(ExplainError):
    """A method option of the wrong type or out of range (e.g. an occlusion window larger than
    the image, or a stride that would leave pixels no window covers)."""


class NonFiniteError(ExplainError):
    """NaN or Inf in the model's scores, a layer's output, the gradients or the map (NaN weights,
    an overflow): the explanation would be meaningless."""


class DataError(ValueError):
    """A dataset, annotation or sample that cannot be read or used (a missing image, a sample
    with no pixels): in a run over many items, one item's DataError skips that item only."""


class DataSpecError(ExplainError):
    """A ``--data`` / data spec that is not of an accepted form (e.g. ``world:200`` instead of
    ``synthetic:seed=S,n=N``), or has an unknown key or a bad value."""
