"""Block-by-block maps (Appendix G, Fig. 19/20): camlens.residual_blocks lists a ResNet's
blocks, camlens.explain_layers draws one map per block from one forward and one backward, and
each map equals a separate single-layer call."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import camlens
from camlens import LayerError
from models import build


class Counted(nn.Module):
    """``inner`` with its forward calls counted in ``calls`` (a list shared by copies)."""

    def __init__(self, inner: nn.Module, calls: list[int]) -> None:
        super().__init__()
        self.inner = inner
        self.calls = calls

    def forward(self, x: torch.Tensor) -> Any:
        self.calls.append(1)
        return self.inner(x)


def zoo_resnet() -> nn.Module:
    torch.manual_seed(0)
    return build("resnet").eval()


def test_residual_blocks_by_class_name_outermost_only() -> None:
    class BasicBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

    class Bottleneck(nn.Module):  # a block holding a block: only the outer one is listed
        def __init__(self) -> None:
            super().__init__()
            self.inner = BasicBlock()

    model = nn.Module()
    model.stem = nn.Conv2d(3, 3, 1)
    model.layer1 = nn.Sequential(BasicBlock(), BasicBlock())
    model.layer2 = nn.Sequential(Bottleneck())
    assert camlens.residual_blocks(model) == ["layer1.0", "layer1.1", "layer2.0"]
    zoo = zoo_resnet()
    names = camlens.residual_blocks(zoo)
    assert names == [n for n, m in zoo.named_modules() if type(m).__name__ == "BasicBlock"]
    assert len(names) >= 2


def test_residual_block_marker_and_no_blocks_error() -> None:
    class Mine(nn.Module):
        residual_block = True

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.conv(x)

    model = nn.Sequential(Mine(), nn.ReLU(), Mine())
    assert camlens.residual_blocks(model) == ["0", "2"]
    with pytest.raises(LayerError, match="no residual blocks"):
        camlens.residual_blocks(nn.Sequential(nn.Conv2d(3, 3, 1)))


def test_all_blocks_one_forward_one_backward_equal_separate_calls(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    model = Counted(zoo_resnet(), calls).eval()
    blocks = camlens.residual_blocks(model)
    assert len(blocks) >= 2
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)
    grads: list[int] = []
    real = torch.autograd.grad

    def counting(*args: Any, **kw: Any) -> Any:
        grads.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(torch.autograd, "grad", counting)
    per_block = camlens.explain_layers(model, x, "all-blocks", target=[1, 3])
    assert len(calls) == 1 and len(grads) == 1  # one forward, one backward for all blocks
    monkeypatch.setattr(torch.autograd, "grad", real)
    assert list(per_block) == blocks
    for name in blocks:
        one = camlens.explain(model, x, layer=name, target=[1, 3])
        ex = per_block[name]
        assert ex.layers == (name,)
        torch.testing.assert_close(ex.raw, one.raw)
        torch.testing.assert_close(ex.maps, one.maps)
        torch.testing.assert_close(ex.weights, one.weights)
    # the blocks' maps differ (not one fused map repeated)
    assert not torch.allclose(per_block[blocks[0]].maps, per_block[blocks[-1]].maps)


def test_explain_layers_with_a_list_and_other_methods() -> None:
    model = zoo_resnet()
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    names = camlens.residual_blocks(model)[:2]
    for method in ("gradcampp", "eigencam", "ablationcam"):
        out = camlens.explain_layers(model, x, names, method=method, top_k=2)
        for name in names:
            one = camlens.explain(model, x, layer=name, method=method, top_k=2)
            torch.testing.assert_close(out[name].maps, one.maps)


def test_explain_layers_bad_arguments() -> None:
    model = zoo_resnet()
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    with pytest.raises(LayerError, match="'all-blocks' or a list"):
        camlens.explain_layers(model, x, "all_blocks")
    with pytest.raises(camlens.ExplainError, match="one method"):
        camlens.explain_layers(model, x, "all-blocks", method=["gradcam", "cam"])  # type: ignore[arg-type]
