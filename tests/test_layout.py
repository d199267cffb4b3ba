"""The memory layout camlens runs the model in: the caller's by default, so the maps are the
gradients of the caller's own forward pass; channels-last only when asked. What a layout
change can do: at a max-pool window whose inputs tie to float rounding, a last-bit difference
moves the gradient to the other input, and element-wise maps (HiResCAM, LayerCAM) move that
input's whole value to its neighbour, while Grad-CAM's channel means do not see it."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import camlens

CL = torch.channels_last


def tie_net() -> nn.Sequential:
    """A = ReLU(x) (1, 2, 2, 2), max pool 2x2, score = 2 max(A_0) + 3 max(A_1)."""
    net = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        net[3].weight.copy_(torch.tensor([[2.0, 3.0]]))
    return net.eval()


def tie_input(first: float) -> torch.Tensor:
    """Channel 0 [[first, 3], [1, 2]], channel 1 [[1, 4], [4, 0]]: channel 1 ties exactly
    (4 and 4), channel 0 too when ``first`` is 3."""
    return torch.tensor([[[[first, 3.0], [1.0, 2.0]], [[1.0, 4.0], [4.0, 0.0]]]])


@pytest.mark.parametrize("given", ["default", "channels-last"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_a_last_bit_at_a_max_pool_tie_moves_element_wise_maps(given: str,
                                                              channels_last: bool) -> None:
    """An exact tie sends the gradient to the window's first input (row by row), in either
    layout; one float32 ulp less on that input sends it to the other one. By hand: g = 2 (3)
    at channel 0's (1)'s argmax, 0 elsewhere, so HiResCAM = LayerCAM = sum_k g_k A_k is
    [[2*3, 3*4], [0, 0]] with the tie and [[0, 2*3 + 3*4], [0, 0]] one ulp below it.
    Grad-CAM's weights are the gradients' means (2/4, 3/4) wherever the argmax is: its map
    changes by at most half an ulp of 3."""
    below = float(torch.nextafter(torch.tensor(3.0), torch.tensor(0.0)))
    maps = {}
    for first in (3.0, below):
        x = tie_input(first)
        x = x.contiguous(memory_format=CL) if given == "channels-last" else x
        maps[first] = camlens.explain(tie_net(), x, method=["hirescam", "layercam", "gradcam"],
                                      layer="0", target=0, channels_last=channels_last)
    tie = torch.tensor([[6.0, 12.0], [0.0, 0.0]])
    moved = torch.tensor([[0.0, 18.0], [0.0, 0.0]])
    for method in ("hirescam", "layercam"):
        assert torch.equal(maps[3.0][method].raw[0, 0], tie)
        assert torch.equal(maps[below][method].raw[0, 0], moved)
    gradcam = torch.tensor([[0.5 * 3 + 0.75 * 1, 0.5 * 3 + 0.75 * 4],
                            [0.5 * 1 + 0.75 * 4, 0.5 * 2 + 0.75 * 0]])
    assert torch.equal(maps[3.0]["gradcam"].raw[0, 0], gradcam)
    torch.testing.assert_close(maps[below]["gradcam"].raw[0, 0], gradcam, rtol=0,
                               atol=0.5 * (3.0 - below))


def small_vgg() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 8 * 8, 10)).eval()


@pytest.mark.parametrize("given", ["default", "channels-last"])
def test_default_maps_are_the_gradients_of_the_callers_forward(given: str) -> None:
    """HiResCAM by default equals, bit for bit, relu(sum_k g_k A_k) from the caller's own
    forward pass on the tensor as given (A: the ReLU before the max pool, g = d score / dA)."""
    model = small_vgg()
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    x = x.contiguous(memory_format=CL) if given == "channels-last" else x
    kept: list[torch.Tensor] = []
    hook = model[3].register_forward_hook(lambda m, i, out: kept.append(out))
    try:
        scores = model(x)
    finally:
        hook.remove()
    target = scores.argmax(1)
    (g,) = torch.autograd.grad(scores.gather(1, target[:, None]).sum(), kept[0])
    literal = (g * kept[0]).sum(1).clamp(min=0).detach()
    ex = camlens.explain(model, x, method="hirescam", layer="3", target=target[:, None])
    assert torch.equal(ex.raw[:, 0], literal)
    assert float(literal.amax()) > 0
