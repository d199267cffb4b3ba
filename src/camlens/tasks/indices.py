"""Integer indices given by a caller (word positions, answers) as a private (B or 1, K) copy."""

from __future__ import annotations

from typing import Any

import torch

from camlens.errors import TargetError


def index_matrix(value: Any, not_ints: str, not_int_dtype: str) -> torch.Tensor:
    """``value`` (an int, K ints or a (B, K) tensor) as a long tensor of at least 2 dims that the
    caller's later edits cannot reach. ``not_ints``: the message when ``value`` is not
    numbers (``value`` appended); ``not_int_dtype``: when they are floats or bools (the dtype
    appended)."""
    try:
        t = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TargetError(f"{not_ints}, got {value!r}") from err
    if (t.is_floating_point() and t.numel()) or t.dtype == torch.bool:
        raise TargetError(f"{not_int_dtype}, got dtype {t.dtype}")
    t = t.detach().long().clone()
    while t.dim() < 2:
        t = t[None]
    return t
