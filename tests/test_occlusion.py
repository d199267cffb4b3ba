"""Occlusion: hand-derived maps, every chunking of the windows (a chunk of one included), the
options refused with a camlens error before any forward pass, integer images."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import camlens
from camlens import ExplainError, OptionError
from camlens.methods.occlusion import occlusion_maps
from models import build, sample
from test_no_input_write import assert_untouched, snapshot
from test_reference import assert_rel, reference_occlusion

pytestmark = pytest.mark.usefixtures("one_thread")  # toy models: see conftest.py


class WeightedSum(nn.Module):
    """y^c = sum_ij W^c_ij x_ij on a one-channel image (no bias); counts its forward passes."""

    def __init__(self, weights: list) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(weights, dtype=torch.float64), requires_grad=False)
        self.counter = [0]  # a shared list: camlens runs each call on a private copy of the module
        self.eval()

    @property
    def calls(self) -> int:
        return self.counter[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.counter[0] += 1
        return (x[:, None, 0] * self.w).sum(dim=(2, 3))


# W^0 = P with P_rc = 4r + c + 1 (1 ... 16 row by row), W^1 = 1 everywhere.
P = [[4 * r + c + 1 for c in range(4)] for r in range(4)]
ONES = [[1] * 4 for _ in range(4)]


def hand_model() -> WeightedSum:
    return WeightedSum([P, ONES])


def hand_image() -> torch.Tensor:
    """Sample 0 all ones, sample 1 all twos: (2, 1, 4, 4)."""
    return torch.stack([torch.ones(1, 4, 4), 2 * torch.ones(1, 4, 4)]).double()


def blocks(rows: list[list[float]]) -> list[list[float]]:
    return [list(map(float, r)) for r in rows]


# Fill 0: masking a window drops y^c by the sum of W^c x over it. Sample 1 (x = 2) drops twice
# what sample 0 (x = 1) does; class 1 (W = 1) drops x times the window's area.
HAND: list[tuple[int, int, list[list[float]], float]] = [
    # window 2, stride 2: four windows tile the image, every pixel has one.
    #   P-sums: (0,0) 1+2+5+6 = 14, (0,2) 3+4+7+8 = 22, (2,0) 9+10+13+14 = 46, (2,2) 54.
    (2, 2, blocks([[14, 14, 22, 22], [14, 14, 22, 22], [46, 46, 54, 54], [46, 46, 54, 54]]),
     4.0),
    # window 2, stride 1: starts 0, 1, 2 per axis, 9 windows. The window at (r, c) sums
    #   P_rc + P_r,c+1 + P_r+1,c + P_r+1,c+1 = 16r + 4c + 14. Pixel i is covered by the window
    #   rows {i-1, i} within [0, 2], whose mean is R = (0, 0.5, 1.5, 2) for i = 0..3; so the
    #   pixel mean is 14 + 16 R_i + 4 R_j.
    (2, 1, blocks([[14, 16, 20, 22], [22, 24, 28, 30], [38, 40, 44, 46], [46, 48, 52, 54]]),
     4.0),
    # window 3, stride 2: start 0, then 2 + 3 > 4, so the flush start 4 - 3 = 1: rows {0, 1}.
    #   A 3x3 window at (r, c) sums 9 (4(r+1) + (c+1) + 1) = 36r + 9c + 54; covering rows
    #   have mean R = (0, 0.5, 0.5, 1), so the pixel mean is 54 + 36 R_i + 9 R_j.
    (3, 2, [[54, 58.5, 58.5, 63], [72, 76.5, 76.5, 81], [72, 76.5, 76.5, 81],
            [90, 94.5, 94.5, 99]], 9.0),
    # window 4, the whole image: one window, every pixel drops by y^c = 1 + ... + 16 = 136.
    (4, 1, blocks([[136] * 4] * 4), 16.0),
]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 64])
@pytest.mark.parametrize("window,stride,map0,drop1", HAND,
                         ids=[f"window{w}-stride{s}" for w, s, _, _ in HAND])
def test_hand_derived_maps_for_every_batch_size(window: int, stride: int,
                                                map0: list[list[float]], drop1: float,
                                                batch_size: int) -> None:
    x = hand_image()
    before = snapshot((x,))
    ex = camlens.explain(hand_model(), x, method="occlusion",
                         target=torch.tensor([[0, 1]] * 2), window=window,
                         stride=stride, batch_size=batch_size)
    const, const0 = [[drop1] * 4] * 4, [[0.0] * 4] * 4
    assert ex.raw.tolist() == [
        [map0, const],
        [[[2 * v for v in row] for row in map0], [[2 * v for v in row] for row in const]],
    ]
    assert ex.scores.tolist() == [[136.0, 16.0], [272.0, 32.0]]
    assert_untouched((x,), before)
    # min-max scaled; a constant map (class 1, or the one window of window 4) becomes zeros
    assert ex.maps[:, 1].tolist() == [const0] * 2
    if window == 4:
        assert ex.maps[:, 0].tolist() == [const0] * 2
    else:
        lo, hi = map0[0][0], map0[3][3]
        scaled = (torch.tensor(map0) - lo) / (hi - lo)
        assert_rel(ex.maps[:, 0], scaled.expand(2, 4, 4), 1e-12)


@pytest.mark.parametrize("window,stride", [
    (4, 4),   # 16 windows
    (6, 4),   # starts 0, 4, 8, 10: 16 windows, batch_size 3 leaves a last chunk of one
    (16, 8),  # the whole 16x16 image: one window, a chunk of one for every batch size
])
@pytest.mark.parametrize("name", ["vgg", "two_input"])
def test_batch_size_does_not_change_the_maps(name: str, window: int, stride: int) -> None:
    model = build(name)
    x = sample(model, batch=2)
    inputs = x if isinstance(x, tuple) else (x,)
    before = snapshot(inputs)
    classes = torch.tensor([[0, 3], [4, 1]])
    raws = {bs: camlens.explain(model, x, method="occlusion", target=classes, window=window,
                                stride=stride, batch_size=bs).raw for bs in (1, 3, 64)}
    assert_untouched(inputs, before)
    ref = reference_occlusion(model, inputs, classes, (window, window), (stride, stride))
    for raw in raws.values():
        assert_rel(raw, ref, 1e-12)
        assert_rel(raw, raws[64], 1e-12)


def test_a_model_that_writes_into_its_input_still_gets_clean_copies() -> None:
    # occluded copies are reused between chunks (only the last window restored), unless the
    # model wrote into them: score_fn here negates its input in place.
    g = torch.Generator().manual_seed(0)
    image = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    weights = torch.randn(3, 8, 8, generator=g, dtype=torch.float64)

    def score(images: torch.Tensor) -> torch.Tensor:
        return (images * weights).sum(dim=(1, 2, 3))[:, None]

    def writes(images: torch.Tensor, s: int) -> torch.Tensor:
        return -score(images.neg_())

    def clean(images: torch.Tensor, s: int) -> torch.Tensor:
        return score(images)

    base = score(image)
    kw: dict[str, Any] = {"window": (3, 3), "stride": (2, 2), "fill": 0.5}
    expected = occlusion_maps(clean, image, base, batch_size=64, **kw)
    for bs in (1, 3, 4):
        assert_rel(occlusion_maps(writes, image, base, batch_size=bs, **kw), expected, 1e-12)


class Uint8Net(nn.Module):
    """Takes 8-bit images and scales them itself: x.float() / 255, then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * 8 * 8, 4)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc((x.float() / 255).flatten(1))


def test_an_integer_image_gives_the_scores_dtype() -> None:
    model = Uint8Net()
    x = torch.randint(0, 256, (2, 3, 8, 8), generator=torch.Generator().manual_seed(0),
                      dtype=torch.uint8)
    before = snapshot((x,))
    kw: dict[str, Any] = {"method": "occlusion", "target": [1, 2], "window": 4, "stride": 2}
    ours = camlens.explain(model, x, batch_size=3, **kw)
    assert_untouched((x,), before)
    assert ours.raw.dtype == torch.float32
    # the same pixel values as floats: the model sees identical numbers
    assert torch.equal(ours.raw, camlens.explain(model, x.float(), batch_size=3, **kw).raw)
    assert camlens.explain(model, x, fill=255, **kw).raw.isfinite().all()
    for fill in (0.5, -1, 256):  # not an 8-bit value: would truncate or wrap
        with pytest.raises(OptionError, match=r"cannot be stored in the torch.uint8 image"):
            camlens.explain(model, x, fill=fill, **kw)


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
