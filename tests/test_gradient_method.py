"""The registered "gradient" method (Simonyan et al.'s input gradient, the paper's "Backprop")
against a literal autograd reference: one image, one class, one backward at a time."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import camlens
from models import ZOO, build, sample


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def literal_gradient(model: nn.Module, inputs: tuple[torch.Tensor, ...],
                     classes: torch.Tensor) -> torch.Tensor:
    """dy^c/dx for image b and class classes[b, j], each from its own forward and backward:
    (B, K, 3, H, W)."""
    out = torch.zeros(*classes.shape, *inputs[0].shape[1:], dtype=inputs[0].dtype)
    for b in range(classes.shape[0]):
        for j, c in enumerate(classes[b].tolist()):
            leaf = inputs[0][b:b + 1].detach().clone().requires_grad_(True)
            rest = [t[b:b + 1] for t in inputs[1:]]
            (g,) = torch.autograd.grad(model(leaf, *rest)[0, c], leaf)
            out[b, j] = g[0]
    return out


@pytest.mark.parametrize("name", list(ZOO))
def test_gradient_is_the_literal_input_gradient(name: str) -> None:
    model = build(name)
    x = sample(model, batch=2)
    inputs = x if isinstance(x, tuple) else (x,)
    classes = torch.tensor([[0, 2], [4, 1]])
    ex = camlens.explain(model, x, method="gradient", target=classes)
    ref = literal_gradient(model, inputs, classes)
    assert ex.raw.shape == (2, 2, 3, 16, 16)
    torch.testing.assert_close(ex.raw, ref, rtol=1e-9, atol=1e-12)
    assert float(ref.abs().max()) > 1e-6  # not a trivially zero comparison
    # the map shown is the signed map scaled around grey, like Guided Backprop's
    flat = ref.flatten(2)
    peak = flat.abs().amax(-1, keepdim=True)
    torch.testing.assert_close(ex.maps, (0.5 + 0.5 * flat / peak).view_as(ref).float())


def test_gradient_differs_from_guided_backprop_where_relus_block() -> None:
    model = build("vgg")
    x = sample(model, batch=2)
    plain = camlens.explain(model, x, method="gradient", target=0).raw
    guided = camlens.explain(model, x, method="guided-backprop", target=0).raw
    assert float((plain - guided).abs().max()) > 1e-3 * float(plain.abs().max())


def test_gradient_of_a_smooth_model_does_not_warn_about_rectifiers() -> None:
    # no ReLU anywhere: Guided Backprop warns that its rule changed nothing; the plain
    # gradient has no rule, so nothing to warn about
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    x = torch.randn(2, 3, 8, 8)
    with pytest.warns(UserWarning, match="no rectifier"):
        camlens.explain(model, x, method="guided-backprop", target=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ex = camlens.explain(model, x, method="gradient", target=1)
    ref = literal_gradient(model, (x,), torch.tensor([[1], [1]]))
    torch.testing.assert_close(ex.raw, ref)


def test_gradient_is_registered_as_a_pixel_space_method_without_options() -> None:
    spec = camlens.METHODS["gradient"]
    assert spec.pixel_space and not spec.needs_layer and not spec.options
    model = build("gap")
    with pytest.raises(camlens.ExplainError, match="takes no option"):
        camlens.explain(model, sample(model), method="gradient", target=0, relu=False)

