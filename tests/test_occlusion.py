"""Occlusion: the options refused with a camlens error before any forward pass."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import camlens
from camlens import ExplainError, OptionError


class WeightedSum(nn.Module):
    """y^c = sum_ij W^c_ij x_ij on a one-channel image (no bias); counts its forward passes."""

    def __init__(self, weights: list) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(weights, dtype=torch.float64), requires_grad=False)
        self.calls = 0
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return (x[:, None, 0] * self.w).sum(dim=(2, 3))


def refused(options: dict[str, Any], *, size: tuple[int, int] = (16, 16)) -> str:
    """The message of the OptionError that explain raises, checking no forward pass ran."""
    model = WeightedSum([[[1.0] * size[1]] * size[0]])
    x = torch.ones(1, 1, *size, dtype=torch.float64)
    with pytest.raises(OptionError) as err:
        camlens.explain(model, x, method="occlusion", **options)
    assert model.calls == 0
    assert isinstance(err.value, ExplainError) and isinstance(err.value, ValueError)
    return str(err.value)


@pytest.mark.parametrize("window", [17, (17, 4), (4, 13), (20, 20)])
def test_a_window_larger_than_the_input_is_refused(window: Any) -> None:
    msg = refused({"window": window, "stride": 1}, size=(16, 12))
    assert "does not fit the 16 x 12 input; the largest window is (16, 12)" in msg


def test_a_window_equal_to_the_input_is_allowed() -> None:
    model = WeightedSum([[[1.0] * 12] * 16])
    ex = camlens.explain(model, torch.ones(1, 1, 16, 12, dtype=torch.float64),
                         method="occlusion", window=(16, 12), stride=(16, 12))
    assert model.calls == 2 and ex.raw.unique().tolist() == [192.0]  # 16 * 12 pixels


@pytest.mark.parametrize("window,stride,shown", [
    (4, 5, "stride (5, 5) is larger than the window (4, 4)"),
    ((4, 8), (4, 9), "stride (4, 9) is larger than the window (4, 8)"),
    (4, None, "stride (8, 8) is larger than the window (4, 4) (stride defaults to 8)"),
])
def test_a_stride_larger_than_the_window_is_refused(window: Any, stride: Any,
                                                    shown: str) -> None:
    # such strides leave pixels that no window covers (0/0 = NaN, or an all-zero map)
    msg = refused({"window": window} if stride is None else {"window": window, "stride": stride})
    assert shown in msg and "use a stride <= the window" in msg


@pytest.mark.parametrize("options,shown", [
    ({"window": 0}, "window must be a positive int or a (height, width) pair of them, got 0"),
    ({"window": (4, -1)}, "got (4, -1)"),
    ({"window": (4,)}, "got (4,)"),
    ({"window": 2.5}, "got 2.5"),
    ({"window": True}, "got True"),
    ({"window": "4"}, "got '4'"),
    ({"window": 4, "stride": 0}, "stride must be a positive int or a (height, width) pair"),
    ({"batch_size": 0}, "batch_size (occluded images per forward pass) must be a positive int"),
    ({"batch_size": 1.5}, "got 1.5"),
    ({"fill": float("nan")}, "fill must be a finite number, got nan"),
    ({"fill": "grey"}, "fill must be a finite number, got 'grey'"),
])
def test_bad_options_are_refused(options: dict[str, Any], shown: str) -> None:
    assert shown in refused(options)


def test_option_error_is_exported() -> None:
    assert camlens.OptionError is OptionError and issubclass(OptionError, ExplainError)
    assert "OptionError" in camlens.__all__
