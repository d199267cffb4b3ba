"""The model-untouched contract and input validation, for every registered method."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules import module as module_globals

import camlens
from camlens import ExplainError, InputError, LayerError, TargetError


class Boom(nn.Module):
    """Identity that raises while ``armed``: injects a failure after the explained layer."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.armed:
            raise RuntimeError("injected failure")
        return x


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(inplace=True),
        )
        self.boom = Boom()
        self.head = nn.Sequential(nn.Linear(8 * 4 * 4, 16), nn.ReLU(), nn.Dropout(0.3),
                                  nn.Linear(16, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.boom(self.features(x))
        return self.head(F.adaptive_avg_pool2d(F.relu(a), 4).flatten(1))


# every hook dict a module has in the installed torch (_forward_hooks, ..._with_kwargs, ...)
HOOK_DICTS = tuple(k for k, v in vars(nn.Module()).items() if k.endswith("hooks")
                   or "hooks_" in k)


def snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything of ``model`` a call must leave as it was (buffers via the state dict)."""
    return {
        "modules": [(n, id(m), type(m)) for n, m in model.named_modules()],
        "hooks": {
            n: [len(getattr(m, d, {})) for d in HOOK_DICTS] for n, m in model.named_modules()
        },
        "training": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grad": {
            n: None if p.grad is None else (id(p.grad), p.grad.clone())
            for n, p in model.named_parameters()
        },
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "global": (
            len(module_globals._global_forward_hooks),
            len(module_globals._global_forward_pre_hooks),
            len(module_globals._global_backward_hooks),
        ),
        "grad_mode": torch.is_grad_enabled(),
        "function_modes": torch._C._len_torch_function_stack(),
    }


def assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    for key in ("modules", "hooks", "training", "requires_grad", "global", "grad_mode",
                "function_modes"):
        assert before[key] == after[key], key
    for name, g in before["grad"].items():
        h = after["grad"][name]
        assert (g is None) == (h is None), name
        if g is not None:
            assert g[0] == h[0] and torch.equal(g[1], h[1]), name
    for k, v in before["state"].items():  # exactly equal, NaN where it was NaN
        torch.testing.assert_close(after["state"][k], v, rtol=0, atol=0, equal_nan=True,
                                   msg=k)


def prepared_model(training: bool = False) -> Net:
    model = Net().train(training)
    model.features[0].weight.grad = torch.full_like(model.features[0].weight, 0.25)
    model.head[0].bias.requires_grad_(False)
    return model


LAYER_KW = {name: ({"layer": "features"} if m.needs_layer else {})
            for name, m in camlens.METHODS.items()}
LAYER_KW["occlusion"] = {"window": 4, "stride": 4}
LAYER_KW["cam"] = {"layer": "features", "classifier": nn.Linear(8, 5)}


@pytest.mark.filterwarnings("ignore:.*training mode")
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("method", sorted(camlens.METHODS))
def test_model_untouched_on_success(method: str, training: bool) -> None:
    """Also in training mode: BatchNorm's running statistics and num_batches_tracked stay."""
    model = prepared_model(training)
    kw = dict(LAYER_KW[method])
    if method == "cam":  # CAM needs a linear head on the layer's channels: use its own model
        kw.pop("classifier")
    x = torch.randn(2, 3, 8, 8)
    before = snapshot(model)
    if method == "cam":
        with pytest.raises(LayerError, match="global-average-pooling"):
            camlens.explain(model, x, method=method, top_k=2, **kw)
    else:
        ex = camlens.explain(model, x, method=method, top_k=2, **kw)
        assert ex.maps.dtype == torch.float32 and not ex.maps.requires_grad
        assert float(ex.maps.min()) >= 0.0 and float(ex.maps.max()) <= 1.0
        again = camlens.explain(model, x, method=method, top_k=2, **kw)
        if not training:  # training mode: dropout draws new masks
            assert torch.equal(ex.maps, again.maps)  # deterministic
    assert_same(before, snapshot(model))


@pytest.mark.filterwarnings("ignore:.*training mode")
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("method", sorted(camlens.METHODS))
@pytest.mark.parametrize("failure", ["forward", "target", "index"])
def test_model_untouched_when_the_call_raises(method: str, failure: str, training: bool) -> None:
    model = prepared_model(training)
    x = torch.randn(2, 3, 8, 8)
    before = snapshot(model)
    kw = dict(LAYER_KW[method])
    if failure == "forward":
        model.boom.armed = True
        expected: Any = (InputError, "injected failure")
        kw_target: dict[str, Any] = {}
    elif failure == "target":
        def bad(output: torch.Tensor) -> torch.Tensor:
            raise KeyError("no such answer")
        expected = (KeyError, "no such answer")
        kw_target = {"target": bad}
    else:
        expected = (TargetError, "out of range")
        kw_target = {"target": 7}
    with pytest.raises(expected[0], match=expected[1]):
        camlens.explain(model, x, method=method, **kw, **kw_target)
    model.boom.armed = False
    assert_same(before, snapshot(model))


def test_training_mode_warns_and_stays_training() -> None:
    model = prepared_model(training=True)
    with pytest.warns(UserWarning, match="training mode"):
        camlens.explain(model, torch.randn(2, 3, 8, 8), layer="features")
    assert model.training and all(m.training for m in model.modules())


def test_eval_mode_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        camlens.explain(prepared_model(), torch.randn(1, 3, 8, 8), layer="features")


def test_inplace_relu_after_layer_does_not_change_the_captured_activation() -> None:
    # features.3 (BatchNorm) is followed by an in-place ReLU6: the map must use the BN output.
    model = prepared_model()
    x = torch.randn(1, 3, 8, 8)
    ex = camlens.explain(model, x, layer="features.3", target=1, relu=False)
    acts: list[torch.Tensor] = []
    h = model.features[3].register_forward_hook(lambda m, i, o: acts.append(o.clone()))
    try:
        out = model(x)
    finally:
        h.remove()
    assert (acts[0] < 0).any()  # the in-place ReLU6 would have zeroed these
    ex_expected = (ex.weights[0, 0][:, None, None] * acts[0][0]).sum(0)
    torch.testing.assert_close(ex.raw[0, 0], ex_expected, rtol=1e-5, atol=1e-6)
    assert out.shape == (1, 5)


def test_unknown_layer_lists_nearest_names() -> None:
    with pytest.raises(LayerError) as err:
        camlens.explain(prepared_model(), torch.randn(1, 3, 8, 8), layer="feature.4")
    assert "'features.4'" in str(err.value) and "nearest" in str(err.value)


def test_missing_layer_suggests_the_last_conv_block() -> None:
    with pytest.raises(LayerError, match="'features'"):
        camlens.explain(prepared_model(), torch.randn(1, 3, 8, 8))


def test_layer_that_runs_twice_is_rejected() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(self.conv(x)).mean((2, 3)))

    model = Twice().eval()
    before = snapshot(model)
    with pytest.raises(LayerError, match="more than once"):
        camlens.explain(model, torch.randn(1, 3, 6, 6), layer="conv")
    assert_same(before, snapshot(model))


def test_layer_off_the_path_and_layer_that_never_runs() -> None:
    class Branches(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 4, 1)
            self.b = nn.Conv2d(3, 4, 1)
            self.unused = nn.Conv2d(3, 4, 1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.b(x)  # computed, but the output does not depend on it
            return self.fc(self.a(x).mean((2, 3)))

    model = Branches().eval()
    x = torch.randn(1, 3, 4, 4)
    with pytest.raises(TargetError, match="do not depend on the layer"):
        camlens.explain(model, x, layer="b")
    with pytest.raises(LayerError, match="did not run"):
        camlens.explain(model, x, layer="unused")
    assert camlens.explain(model, x, layer="a").maps.shape == (1, 1, 4, 4)


def test_wrong_input_shape_says_what_the_model_got() -> None:
    with pytest.raises(InputError, match=r"\(1, 1, 8, 8\)"):
        camlens.explain(prepared_model(), torch.randn(1, 1, 8, 8), layer="features")
    with pytest.raises(InputError, match=r"needs an image batch"):
        camlens.explain(prepared_model(), torch.randn(3, 8, 8), method="guided-backprop")


def test_bad_options_and_targets() -> None:
    model, x = prepared_model(), torch.randn(2, 3, 8, 8)
    with pytest.raises(ExplainError, match="unknown method 'gradcamm'"):
        camlens.explain(model, x, method="gradcamm", layer="features")
    with pytest.raises(ExplainError, match=r"takes no option\(s\) \['window'\]"):
        camlens.explain(model, x, layer="features", window=3)
    with pytest.raises(ExplainError, match="backward must be one of"):
        camlens.explain(model, x, layer="features", backward="sideways")
    with pytest.raises(ValueError, match="pooling must be"):
        camlens.explain(model, x, layer="features", pooling="avg")
    with pytest.raises(ExplainError, match="takes no layer"):
        camlens.explain(model, x, method="guided-backprop", layer="features")
    with pytest.raises(TargetError, match="3 class indices for a batch of 2"):
        camlens.explain(model, x, layer="features", target=[1, 2, 3])
    with pytest.raises(TargetError, match="must be an int"):
        camlens.explain(model, x, layer="features", target=1.0)
    with pytest.raises(TargetError, match="top_k must be between 1 and 5"):
        camlens.explain(model, x, layer="features", top_k=6)
    with pytest.raises(TargetError, match="either target or top_k"):
        camlens.explain(model, x, layer="features", target=1, top_k=2)


def test_scores_of_an_index_target_needs_its_indices() -> None:
    from camlens.targets import scores_of

    with pytest.raises(TargetError, match="target=3 is not callable"):
        scores_of(torch.zeros(1, 5), 3, None)


def test_target_forms_agree() -> None:
    model, x = prepared_model(), torch.randn(2, 3, 8, 8)
    per_sample = camlens.explain(model, x, layer="features", target=[3, 1])
    tensor = camlens.explain(model, x, layer="features", target=torch.tensor([[3], [1]]))
    fn = camlens.explain(model, x, layer="features",
                         target=lambda out: out[:, [3, 1]].diagonal().clone() * 0
                         + torch.stack([out[0, 3], out[1, 1]]))
    torch.testing.assert_close(per_sample.raw, tensor.raw)
    torch.testing.assert_close(per_sample.raw, fn.raw)
    assert fn.targets is None and per_sample.targets.tolist() == [[3], [1]]
    top1 = camlens.explain(model, x, layer="features")
    assert top1.targets[:, 0].tolist() == model(x).argmax(1).tolist()
    single = camlens.explain(model, x[:1], layer="features", target=[4, 0])  # K targets of one
    assert single.maps.shape == (1, 2, 8, 8)


@pytest.mark.parametrize("key", ["logits", "scores"])
def test_dict_outputs_take_class_indices_from_logits_else_need_a_callable(key: str) -> None:
    """A ModelOutput-like dict with a "logits" entry is read like ``.logits``; any other dict
    (and a tuple) needs a callable target."""
    class Dict(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = prepared_model()

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {key: self.net(x), "aux": x.mean()}

    model, x = Dict().eval(), torch.randn(1, 3, 8, 8)
    ref = camlens.explain(model.net, x, layer="features", target=2)
    if key == "logits":
        by_index = camlens.explain(model, x, layer="net.features", target=2)
        torch.testing.assert_close(by_index.raw, ref.raw)
        torch.testing.assert_close(by_index.output, ref.output)
    else:
        with pytest.raises(TargetError, match="callable"):
            camlens.explain(model, x, layer="net.features", target=2)
    ex = camlens.explain(model, x, layer="net.features", target=lambda o: o[key][:, 2])
    torch.testing.assert_close(ex.raw, ref.raw)


def test_multi_input_model() -> None:
    class VQA(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(1)
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.q = nn.Linear(6, 4)
            self.answer = nn.Linear(4, 7)

        def forward(self, image: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
            a = F.relu(self.conv(image))
            return self.answer(a.mean((2, 3)) * torch.tanh(self.q(question)))

    model = VQA().eval()
    image, q1, q2 = torch.randn(1, 3, 6, 6), torch.randn(1, 6), torch.randn(1, 6)
    e1 = camlens.explain(model, (image, q1), layer="conv", target=3)
    e2 = camlens.explain(model, (image, q2), layer="conv", target=3)
    assert not torch.allclose(e1.weights, e2.weights)  # the question changes the explanation
    for method in ("guided-backprop", "occlusion"):
        kw = {"window": 3, "stride": 3} if method == "occlusion" else {}
        ex = camlens.explain(model, (image, q1), method=method, target=3, **kw)
        assert ex.maps.shape[-2:] == (6, 6)
    with pytest.raises(InputError, match="image_index 2"):
        camlens.explain(model, (image, q1), layer="conv", image_index=2)


def test_float64_and_constant_maps() -> None:
    model = prepared_model().double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    ex = camlens.explain(model, x, layer="features", top_k=2)
    assert ex.raw.dtype == torch.float64 and ex.maps.dtype == torch.float32

    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)
            self.fc = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(x).mean((2, 3)))

    flat = Flat().eval()
    with torch.no_grad():
        flat.conv.weight.zero_()
        flat.conv.bias.fill_(1.0)
    ex = camlens.explain(flat, torch.randn(1, 3, 4, 4), layer="conv", target=0)
    assert torch.equal(ex.maps, torch.zeros_like(ex.maps))  # constant map -> zeros, not NaN
    occ = camlens.explain(flat, torch.randn(1, 3, 4, 4), method="occlusion", window=2, stride=2)
    assert not occ.maps.isnan().any()


def test_grad_mode_and_user_input_untouched() -> None:
    model = prepared_model()
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    x_before = x.detach().clone()
    with torch.no_grad():
        ex = camlens.explain(model, x, method="guided-gradcam", layer="features")
        assert not torch.is_grad_enabled()
    assert torch.equal(x.detach(), x_before) and x.grad is None
    assert ex.maps.shape == (1, 1, 3, 8, 8)


def test_layer_without_spatial_maps_is_rejected() -> None:
    with pytest.raises(LayerError, match=r"outputs shape \(2, 16\), but the map needs"):
        camlens.explain(prepared_model(), torch.randn(2, 3, 8, 8), layer="head.0")


def test_layers_before_the_target_run_without_autograd() -> None:
    # "A single forward and a partial backward pass": nothing below the layer is recorded.
    model = prepared_model()
    seen: dict[str, bool] = {}
    hooks = [model.features[i].register_forward_hook(
        lambda m, i, o, k=str(i): seen.__setitem__(k, o.requires_grad)) for i in (0, 2, 3)]
    hooks.append(model.head[0].register_forward_hook(
        lambda m, i, o: seen.__setitem__("head", o.requires_grad)))
    try:
        camlens.explain(model, torch.randn(1, 3, 8, 8), layer="features.2", top_k=3)
    finally:
        for h in hooks:
            h.remove()
    # The layer's own output is computed without autograd too: camlens makes it a leaf.
    assert seen == {"0": False, "2": False, "3": True, "head": True}
    assert all(p.grad is None for n, p in model.named_parameters() if n != "features.0.weight")


def test_cam_refuses_a_classifier_that_does_not_follow_the_pooling() -> None:
    class Deep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(3)
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.hidden = nn.Linear(4, 4)
            self.out = nn.Linear(4, 3)  # in_features == channels, but not after the pooling

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(F.relu(self.hidden(self.conv(x).mean((2, 3)))))

    model, x = Deep().eval(), torch.randn(2, 3, 6, 6)
    with pytest.raises(LayerError, match="does not reproduce the model's scores"):
        camlens.explain(model, x, method="cam", layer="conv")
    with pytest.raises(LayerError, match="does not reproduce"):
        camlens.explain(model, x, method="cam", layer="conv", classifier="hidden")
    assert camlens.explain(model, x, method="gradcam", layer="conv").maps.shape == (2, 1, 6, 6)


class SmoothNet(nn.Module):
    """No rectifier anywhere: SiLU and GELU, as in EfficientNet-B0 and transformers."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.SiLU(),
                                      nn.Conv2d(6, 8, 3, padding=1), nn.GELU())
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


@pytest.mark.parametrize("method", ["guided-backprop", "deconvnet", "guided-gradcam",
                                    "deconv-gradcam"])
def test_rectifier_rules_warn_when_no_rectifier_runs(method: str) -> None:
    model = SmoothNet().double().eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kw = LAYER_KW[method]
    with pytest.warns(UserWarning, match=f"{method}: no rectifier .* plain input gradient") as rec:
        ex = camlens.explain(model, x, method=method, target=1, **kw)
    assert rec[0].filename == __file__  # it points at the caller's line
    xg = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(model(xg)[:, 1].sum(), xg)
    if "gradcam" not in method:  # what the warning says: the map is the plain gradient
        torch.testing.assert_close(ex.raw[:, 0], plain)
    with warnings.catch_warnings():  # a model with rectifiers: no warning
        warnings.simplefilter("error")
        camlens.explain(Net().eval(), torch.randn(1, 3, 8, 8), method=method, **kw)


@pytest.mark.parametrize("method", sorted(camlens.METHODS))
def test_inference_mode_tensors_and_context(method: str) -> None:
    """Predictions are usually made under torch.inference_mode(): its tensors as inputs or
    targets, or a call made inside it, give the same explanation as plain tensors."""
    from models import make_gap

    model = make_gap()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    kw: dict[str, Any] = {"layer": model.LAYER} if camlens.METHODS[method].needs_layer else {}
    if method == "occlusion":
        kw = {"window": 4, "stride": 4}
    with torch.inference_mode():
        x_inf = x.clone()
        t_inf = model(x_inf).topk(2, dim=1).indices
    ref = camlens.explain(model, x, method=method, target=t_inf.clone(), **kw)
    assert ref.maps.abs().amax() > 0
    before = snapshot(model)
    from_inference_tensors = camlens.explain(model, x_inf, method=method, target=t_inf, **kw)
    with torch.inference_mode():
        inside = camlens.explain(model, x, method=method, target=t_inf, **kw)
    assert_same(before, snapshot(model))
    for ex in (from_inference_tensors, inside):
        assert torch.equal(ex.maps, ref.maps) and torch.equal(ex.raw, ref.raw)
        assert not ex.maps.is_inference()


def _layouts_seen(model: nn.Module, first: nn.Module, **kw: Any) -> tuple[list[bool], Any]:
    """Run explain and record whether ``first`` (the model's first layer) saw channels-last."""
    seen: list[bool] = []
    handle = first.register_forward_pre_hook(
        lambda m, a: seen.append(a[0].is_contiguous(memory_format=torch.channels_last)))
    try:
        ex = camlens.explain(model, **kw)
    finally:
        handle.remove()
    return seen, ex


@pytest.mark.parametrize("method", ["gradcam", "guided-gradcam", "occlusion"])
def test_the_model_runs_in_the_callers_layout_unless_asked(method: str) -> None:
    """By default every forward pass (occlusion's occluded copies too) gets the image in the
    layout the caller gave it, whatever the model's modules: the maps are the gradients of the
    caller's own forward pass. ``channels_last=True`` hands a channels-last copy, and the model
    is untouched either way."""
    from camlens.models import efficientnet_lite0

    torch.manual_seed(0)
    bundled = efficientnet_lite0(pretrained=False).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    where: dict[str, Any] = ({"window": 16, "stride": 16} if method == "occlusion"
                             else {"layer": "_relu_head"})
    kw = dict(method=method, target=3, **where)
    calls = 1 + 2 if method == "occlusion" else 1  # the unoccluded forward, then the copies
    before = snapshot(bundled)
    seen_default, default = _layouts_seen(bundled, bundled._conv_stem, inputs=x, **kw)
    seen_given, given = _layouts_seen(bundled, bundled._conv_stem, inputs=x_cl, **kw)
    seen_asked, asked = _layouts_seen(bundled, bundled._conv_stem, inputs=x,
                                      channels_last=True, **kw)
    assert_same(before, snapshot(bundled))
    assert len(seen_default) == len(seen_given) == len(seen_asked) == calls
    assert not any(seen_default) and all(seen_given) and all(seen_asked)
    assert torch.equal(given.raw, asked.raw)  # same layout, same arithmetic
    for ex in (default, asked):
        assert ex.maps.is_contiguous() and ex.raw.is_contiguous()
    scale = float(default.raw.abs().amax())
    assert scale > 0 and float((asked.raw - default.raw).abs().amax()) < 1e-4 * scale

    own = Net().eval()
    where = {"window": 4, "stride": 4} if method == "occlusion" else {"layer": "features"}
    kw = dict(inputs=torch.randn(2, 3, 8, 8), method=method, target=1, **where)
    assert not any(_layouts_seen(own, own.features[0], **kw)[0])
    assert all(_layouts_seen(own, own.features[0], channels_last=True, **kw)[0])
