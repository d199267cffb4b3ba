"""The documentation site's code runs: docs/add-a-method.md's first Python block registers a
method whose map equals the page's formula computed directly, and docs/quickstart.md's Python
block runs on the bundled model as written (its own asserts included)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import camlens
from camlens.methods import METHODS

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGE = DOCS / "add-a-method.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


@pytest.fixture
def absgradcam() -> Iterator[camlens.Explanation]:
    """The page's first block executed; the method is unregistered afterwards."""
    code = python_blocks(PAGE.read_text(encoding="utf-8"))[0]
    assert "absgradcam" not in METHODS
    try:
        exec(compile(code, str(PAGE), "exec"), {"__name__": "docs_add_a_method"})
        yield METHODS["absgradcam"]
    finally:
        METHODS.pop("absgradcam", None)


def test_the_example_is_twenty_lines() -> None:
    """The page's promise: at most 20 non-blank lines besides the imports."""
    code = python_blocks(PAGE.read_text(encoding="utf-8"))[0]
    lines = [ln for ln in code.splitlines() if ln.strip() and not ln.startswith(("import", "from"))]
    assert len(lines) <= 20, len(lines)


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 4)).eval()


def direct(model: nn.Module, x: torch.Tensor, layer: nn.Module, cls: int,
           relu: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The page's formula from a hooked forward and autograd: (map (B, h, w), weights (B, C))."""
    saved: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda m, i, o: saved.append(o))
    try:
        y = model(x)[:, cls].sum()
    finally:
        handle.remove()
    (g,) = torch.autograd.grad(y, saved[0])
    w = g.abs().mean(dim=(-2, -1))
    cam = torch.einsum("bc,bchw->bhw", w, saved[0].detach())
    return (cam.clamp(min=0) if relu else cam), w


@pytest.mark.parametrize("relu", [True, False])
def test_the_example_method_computes_its_formula(absgradcam: object, relu: bool) -> None:
    model = net()
    x = torch.randn(2, 3, 9, 11, generator=torch.Generator().manual_seed(1))
    ex = camlens.explain(model, x, layer="2", target=2, method="absgradcam", relu=relu)
    assert isinstance(ex, camlens.Explanation)
    want, w = direct(model, x, model[2], 2, relu)  # conv output: A < 0 too
    torch.testing.assert_close(ex.raw[:, 0], want, rtol=1e-5, atol=1e-6)
    assert ex.weights is not None
    torch.testing.assert_close(ex.weights[:, 0], w, rtol=1e-5, atol=1e-6)
    assert ex.options == {"relu": relu}
    if not relu:
        assert (want < 0).any()  # the option changes the map on this net
    assert ex.maps.shape == (2, 1, 9, 11)
    assert ex.maps.amax(dim=(-2, -1)).eq(1).all()


def test_the_example_method_is_registered_like_the_others(absgradcam: object) -> None:
    m = METHODS["absgradcam"]
    assert set(m.options) == {"relu"} and m.options["relu"].parse("false") is False
    assert m.needs_layer and not m.pixel_space


def test_the_quickstart_runs(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("skimage")
    page = DOCS / "quickstart.md"
    (code,) = python_blocks(page.read_text(encoding="utf-8"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exec(compile(code, str(page), "exec"), {"__name__": "docs_quickstart"})
    finally:
        torch.set_num_threads(before)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "['Egyptian cat', 'tabby']"  # what the page and the concepts say
    assert printed[1].endswith("torch.Size([1, 2, 7, 11]) torch.Size([1, 2, 1280])")
