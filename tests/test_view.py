"""camlens explains a private view of the model (camlens.view): the same computation on the
same weights, whatever the model keeps where, and nothing of it reaches the user's model."""

from __future__ import annotations

import functools
import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

import camlens
from camlens import LayerError
from camlens.view import private_view
from test_contract import assert_same, snapshot


def _image(seed: int = 0, size: int = 8) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


class Small(nn.Module):
    """conv-BN-ReLU-conv, GAP, linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv2(F.relu(self.bn(self.conv1(x)))).mean((2, 3)))


def test_view_shares_parameters_and_copies_the_rest() -> None:
    model = Small().train()
    model.fc.eval()
    view = private_view(model)
    root = view.root
    assert root is not model and type(root) is Small
    for (n, m), (vn, vm) in zip(model.named_modules(), root.named_modules()):
        assert n == vn and vm is not m and type(vm) is type(m) and vm.training == m.training
        assert vm._forward_hooks is not m._forward_hooks and vm._modules is not m._modules
    for (n, p), (vn, vp) in zip(model.named_parameters(), root.named_parameters()):
        assert n == vn and vp is p  # the same weights, not copies
    for (n, b), (vn, vb) in zip(model.named_buffers(), root.named_buffers()):
        assert n == vn and vb is not b and torch.equal(vb, b)
    assert view.copies[id(model.bn)] is root.bn


def test_the_models_own_hooks_still_act() -> None:
    """The user's hooks are copied into the view: the explanation is that of the hooked model."""
    model, x = Small().eval(), _image()
    handle = model.conv2.register_forward_hook(lambda m, a, out: out * 3 - 1)
    pre = model.conv1.register_forward_pre_hook(lambda m, a, kw: ((a[0].flip(-1),), kw),
                                                with_kwargs=True)
    try:
        before = snapshot(model)
        hooked = camlens.explain(model, x, layer="conv2", target=1)
        assert_same(before, snapshot(model))
    finally:
        handle.remove()
        pre.remove()

    class Tripled(nn.Conv2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * 3 - 1

    class Baked(Small):
        def __init__(self) -> None:
            super().__init__()
            self.conv2 = Tripled(6, 8, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x.flip(-1))

    baked = Baked().eval()
    baked.load_state_dict(model.state_dict())
    ref = camlens.explain(baked, x, layer="conv2", target=1)
    torch.testing.assert_close(hooked.raw, ref.raw)
    assert not torch.allclose(hooked.raw, camlens.explain(model, x, layer="conv2", target=1).raw)


class Aliases(nn.Module):
    """Submodules also reached through a plain list, a dict, a plain attribute and a bound
    method: the view points all of them at its copies."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.convs = nn.ModuleList([nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)])
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 4)
        self.order = [self.convs[0], self.bn]  # plain list: not registered twice
        self.by_name = {"last": self.convs[1]}
        object.__setattr__(self, "head", self.fc)  # plain attribute, outside _modules
        self.step = self._step  # a bound method kept as an attribute

    def _step(self, x: torch.Tensor) -> torch.Tensor:
        return self.by_name["last"](F.relu(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.order:
            x = m(x)
        return self.head(self.step(x).mean((2, 3)))


@pytest.mark.filterwarnings("ignore:.*training mode")
@pytest.mark.parametrize("training", [False, True])
def test_modules_reached_through_plain_attributes(training: bool) -> None:
    model, x = Aliases().train(training), _image()
    before = snapshot(model)
    for layer in ("convs.0", "bn", "convs.1"):
        ex = camlens.explain(model, x, layer=layer, target=2)
        assert float(ex.raw.abs().amax()) > 0
    ex = camlens.explain(model, x, method="occlusion", window=4, stride=4)
    assert float(ex.raw.abs().amax()) > 0
    assert_same(before, snapshot(model))  # BatchNorm's statistics included


def _patch_forward(module: nn.Module) -> None:
    """Wrap ``module.forward`` the way accelerate's hooks do: a partial over the module."""
    module._old_forward = module.forward  # type: ignore[assignment]

    def new_forward(m: nn.Module, *args: Any) -> Any:
        return m._old_forward(*args)  # type: ignore[operator]

    module.forward = functools.update_wrapper(  # type: ignore[method-assign]
        functools.partial(new_forward, module), module._old_forward)


@pytest.mark.filterwarnings("ignore:.*training mode")
def test_forward_patched_with_a_partial() -> None:
    model, x = Aliases().train(), _image()
    ref = camlens.explain(model, x, layer="convs.1", target=2)
    _patch_forward(model)
    before = snapshot(model)
    ex = camlens.explain(model, x, layer="convs.1", target=2)
    torch.testing.assert_close(ex.raw, ref.raw, rtol=0, atol=0)
    assert_same(before, snapshot(model))


_GLOBAL_NET: nn.Module | None = None


def _global_forward(x: torch.Tensor) -> torch.Tensor:
    net: Any = _GLOBAL_NET
    return net.fc(net.conv2(F.relu(net.bn(net.conv1(x)))).mean((2, 3)))


@pytest.mark.filterwarnings("ignore:.*training mode")
@pytest.mark.parametrize("how", ["closure", "global"])
def test_forward_patched_as_a_function(how: str) -> None:
    """``model.forward = lambda x: ...`` over the model (a closure, or a notebook's global):
    the view's copy of the function names the view's modules."""
    global _GLOBAL_NET
    model, x = Small().train(), _image()
    ref = camlens.explain(model, x, layer="conv1", target=2)
    if how == "closure":
        net = model
        model.forward = lambda x: net.fc(  # type: ignore[method-assign]
            net.conv2(F.relu(net.bn(net.conv1(x)))).mean((2, 3)))
    else:
        _GLOBAL_NET = model
        model.forward = _global_forward  # type: ignore[method-assign]
    before = snapshot(model)
    try:
        ex = camlens.explain(model, x, layer="conv1", target=2)
    finally:
        _GLOBAL_NET = None
    torch.testing.assert_close(ex.raw, ref.raw, rtol=0, atol=0)
    assert_same(before, snapshot(model))


def test_a_reference_the_view_cannot_follow_is_named_in_the_error() -> None:
    class Hidden(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(2)
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4, 2)
            self.nested = [[self.conv]]  # two levels deep: the view does not look there

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.nested[0][0](x).mean((2, 3)))

    with pytest.raises(LayerError, match="did not run.*a nested container.*original module"):
        camlens.explain(Hidden().eval(), _image(), layer="conv")


@pytest.mark.filterwarnings("ignore:.*torch.jit.script. is deprecated")
def test_torchscript_parts_are_shared_and_cannot_be_layers() -> None:
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(3)
            self.stem = nn.Conv2d(3, 6, 3, padding=1)
            self.body = torch.jit.script(nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.ReLU()))
            self.fc = nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.body(self.stem(x)).mean((2, 3)))

    model, x = Mixed().eval(), _image()
    view = private_view(model)
    assert view.root.body is model.body  # opaque: shared as it is
    before = snapshot(model)
    ex = camlens.explain(model, x, layer="stem", target=0)
    with torch.no_grad():
        a = model.stem(x)
    a.requires_grad_(True)
    (g,) = torch.autograd.grad(model.fc(model.body(a).mean((2, 3)))[:, 0].sum(), a)
    ref = (g.mean((2, 3))[:, :, None, None] * a).sum(1).clamp(min=0)
    torch.testing.assert_close(ex.raw[:, 0], ref.detach())
    for layer, where in (("body.0", "inside a TorchScript"), ("body", "is a TorchScript")):
        with pytest.raises(LayerError, match=f"{where} module"):
            camlens.explain(model, x, layer=layer)
    with pytest.raises(LayerError, match="inside a TorchScript module"):
        camlens.explain(torch.jit.script(Small().eval()), x, layer="conv2")
    assert_same(before, snapshot(model))
    # shared, so in training mode its BatchNorm would change the user's statistics: refused
    scripted = torch.jit.script(Small().train())
    before = snapshot(scripted)
    with pytest.raises(camlens.InputError, match=r"TorchScript module .* training mode .* "
                                                 r"call model.eval\(\) first"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        camlens.explain(scripted, x, method="occlusion", window=4, stride=4)
    assert_same(before, snapshot(scripted))
    camlens.explain(scripted.eval(), x, method="occlusion", window=4, stride=4)  # eval: fine


class Triple(nn.Module):
    """The parametrization w -> 3 w."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return 3 * w


@pytest.mark.parametrize("kind", ["parametrize", "weight_norm"])
def test_parametrized_weights(kind: str) -> None:
    """A parametrized conv gives the map of the plain model with the computed weight."""
    model, x = Small().eval(), _image()
    plain = Small().eval()
    if kind == "parametrize":
        parametrize.register_parametrization(model.conv2, "weight", Triple())
        with torch.no_grad():
            plain.conv2.weight.mul_(3)
    else:
        model.conv2 = nn.utils.parametrizations.weight_norm(model.conv2)
    before = snapshot(model)
    for layer in ("conv1", "conv2"):
        ex = camlens.explain(model, x, layer=layer, target=1)
        ref = camlens.explain(plain, x, layer=layer, target=1)
        torch.testing.assert_close(ex.raw, ref.raw, rtol=1e-5, atol=1e-6)
    assert_same(before, snapshot(model))


def test_old_style_weight_norm_keeps_its_computed_weight_in_the_view() -> None:
    """torch.nn.utils.weight_norm recomputes ``weight`` in a forward pre-hook and sets it on the
    module: that happens on the view's copy, the map is the plain model's."""
    model, x, plain = Small().eval(), _image(), Small().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        nn.utils.weight_norm(model.conv2)
    with torch.no_grad():  # a direction that differs from the stored weight
        model.conv2.weight_g.mul_(2)
        plain.conv2.weight.mul_(2)
    stale = model.conv2.weight
    ex = camlens.explain(model, x, layer="conv2", target=1)
    ref = camlens.explain(plain, x, layer="conv2", target=1)
    torch.testing.assert_close(ex.raw, ref.raw, rtol=1e-5, atol=1e-6)
    assert model.conv2.weight is stale  # the user's module keeps its attribute


def test_training_flag_read_by_forward_and_tied_weights() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(4)
            self.a = nn.Conv2d(3, 3, 3, padding=1)
            self.b = nn.Conv2d(3, 3, 3, padding=1)
            self.b.weight = self.a.weight  # tied
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.b(F.relu(self.a(x)))
            if self.training:  # the flag is read by forward: it must stay as it is
                y = y * 0.5
            return self.fc(y.mean((2, 3)))

    for training in (False, True):
        model, x = Tied().train(training), _image()
        view = private_view(model).root
        assert view.b.weight is view.a.weight is model.a.weight and view.training == training
        before = snapshot(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            ex = camlens.explain(model, x, layer="b", target=1)
        xa = F.relu(model.a(x)).detach()
        act = model.b(xa).detach().requires_grad_(True)
        out = model.fc(((act * 0.5) if training else act).mean((2, 3)))
        (g,) = torch.autograd.grad(out[:, 1].sum(), act)
        ref = (g.mean((2, 3))[:, :, None, None] * act).sum(1).clamp(min=0)
        torch.testing.assert_close(ex.raw[:, 0], ref.detach())
        assert_same(before, snapshot(model))


def test_layer_given_as_a_module_maps_to_its_copy() -> None:
    model, x = Small().eval(), _image()
    by_module: Any = camlens.explain(model, x, layer=[model.conv1, model.conv2], target=0)
    by_name = camlens.explain(model, x, layer=["conv1", "conv2"], target=0)
    assert torch.equal(by_module.raw, by_name.raw) and by_module.layers == ("conv1", "conv2")
    assert camlens.explain(model, x, layer=model, method="gradcam", target=0,
                           reshape=lambda t: t[:, :, None, None]).raw.shape == (2, 1, 1, 1)


def test_compiled_model_is_explained_eagerly() -> None:
    """torch.compile's forward closes over the original module: the view runs its own copy of
    that module, uncompiled, so hooks see it and the map is the plain model's."""
    model, x = Small().eval(), _image()
    compiled = torch.compile(model, backend="eager")
    before = snapshot(compiled)
    for method, kw in (("gradcam", {"layer": "_orig_mod.conv2"}), ("guided-backprop", {})):
        ex = camlens.explain(compiled, x, method=method, target=1, **kw)
        plain_kw = {"layer": "conv2"} if kw else {}
        ref = camlens.explain(model, x, method=method, target=1, **plain_kw)
        torch.testing.assert_close(ex.raw, ref.raw, rtol=0, atol=0)
    assert_same(before, snapshot(compiled))
