"""The method planner: several methods share one forward pass and one backward per distinct
(destination, rule); presets; options declared once, typed, and routed to the methods taking
them."""

from __future__ import annotations

import itertools

import pytest
import torch

import camlens
from camlens import evidence
from camlens.methods import FIGURE1, METHODS, OptionError
from models import build, sample

CAMLESS = [n for n in METHODS if n != "cam"]  # CAM needs a GAP + linear head


def _count_forwards(model: torch.nn.Module) -> list[int]:
    calls = [0]
    model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def _count_backwards(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    seen: list[tuple[int, bool]] = []
    real = evidence.gradients

    def counting(scores, wrt, **kw):  # type: ignore[no-untyped-def]
        seen.append((len(wrt), kw.get("batched", True)))
        return real(scores, wrt, **kw)

    monkeypatch.setattr(evidence, "gradients", counting)
    return seen


@pytest.mark.parametrize("arch", ["vgg", "resnet", "gap"])
def test_all_methods_at_once_equal_each_alone(arch: str) -> None:
    model = build(arch)
    x = sample(model, batch=2)
    names = [n for n in METHODS if n != "cam" or arch == "gap"]
    opts = {"window": 4, "stride": 2}
    together = camlens.explain(model, x, method=names, layer=model.LAYER, top_k=2, **opts)
    assert list(together) == names
    for name in names:
        alone = camlens.explain(model, x, method=name, layer=model.LAYER
                                if METHODS[name].needs_layer else None, top_k=2,
                                **{k: v for k, v in opts.items() if k in METHODS[name].options})
        got = together[name]
        assert got.method == name
        torch.testing.assert_close(got.maps, alone.maps, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(got.raw, alone.raw, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(got.scores, alone.scores)


@pytest.mark.parametrize("pair", list(itertools.combinations(
    ["gradcam", "guided-backprop", "guided-gradcam", "deconvnet", "gradient"], 2)))
def test_pairs_equal_singles(pair: tuple[str, str]) -> None:
    model = build("resnet")
    x = sample(model, batch=1)
    kw = {"backward": "guided"} if any("backward" in METHODS[n].options for n in pair) else {}
    both = camlens.explain(model, x, method=list(pair), layer=model.LAYER, target=[1, 3], **kw)
    for name in pair:
        alone = camlens.explain(model, x, method=name, layer=model.LAYER
                                if METHODS[name].needs_layer else None, target=[1, 3],
                                **{k: v for k, v in kw.items() if k in METHODS[name].options})
        torch.testing.assert_close(both[name].raw, alone.raw, rtol=1e-9, atol=1e-12)


def test_figure1_set_costs_one_forward_and_two_backwards(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build("vgg")
    forwards = _count_forwards(model)
    backwards = _count_backwards(monkeypatch)
    out = camlens.explain(model, sample(model, batch=2), method=list(FIGURE1),
                          layer=model.LAYER, top_k=3)
    assert set(out) == set(FIGURE1)
    assert forwards == [1]
    # dy/dA once (vmapped over the 3 targets) and dy/dx once under the guided rule
    assert backwards == [(1, True), (1, False)]


def test_each_method_alone_costs_one_forward() -> None:
    model = build("gap")
    for name in METHODS:
        if METHODS[name].base in ("occlusion", "scorecam", "ablationcam"):
            continue  # a forward per batch of perturbed copies: counted in their own tests
        forwards = _count_forwards(model)
        camlens.explain(model, sample(model), method=name,
                        layer=model.LAYER if METHODS[name].needs_layer else None)
        # Excitation Backprop runs the model once more, under its own rules
        assert forwards == [2 if METHODS[name].base == "excitation-backprop" else 1], name
        model._forward_pre_hooks.clear()


def test_counterfactual_preset_is_gradcam_with_negated_gradients() -> None:
    model = build("vgg")
    x = sample(model)
    pre = camlens.explain(model, x, method="counterfactual-gradcam", layer=model.LAYER)
    base = camlens.explain(model, x, method="gradcam", layer=model.LAYER, counterfactual=True)
    torch.testing.assert_close(pre.raw, base.raw, rtol=0, atol=0)
    assert pre.method == "counterfactual-gradcam" and pre.options["counterfactual"] is True
    plain = camlens.explain(model, x, method="gradcam", layer=model.LAYER)
    assert not torch.allclose(pre.raw, plain.raw)
    with pytest.raises(OptionError, match=r"takes no option\(s\) \['counterfactual'\]"):
        camlens.explain(model, x, method="counterfactual-gradcam", layer=model.LAYER,
                        counterfactual=False)


def test_options_go_to_the_methods_that_take_them() -> None:
    model = build("gap")
    x = sample(model, batch=1)
    out = camlens.explain(model, x, method=["gradcam", "occlusion"], layer=model.LAYER,
                          window=4, stride=4, relu=False)
    assert out["occlusion"].options["window"] == (4, 4)
    assert out["gradcam"].options["relu"] is False
    with pytest.raises(OptionError, match=r"take no option\(s\) \['windw'\]"):
        camlens.explain(model, x, method=["gradcam", "occlusion"], layer=model.LAYER, windw=4)
    with pytest.raises(OptionError, match="pooling must be one of"):
        camlens.explain(model, x, method="gradcam", layer=model.LAYER, pooling="avg")


def test_layer_is_for_the_methods_that_need_one() -> None:
    model = build("vgg")
    x = sample(model, batch=1)
    out = camlens.explain(model, x, method=["gradcam", "guided-backprop"], layer=model.LAYER)
    assert out["guided-backprop"].layers == ()  or out["guided-backprop"].layers
    with pytest.raises(camlens.ExplainError, match="takes no layer"):
        camlens.explain(model, x, method="guided-backprop", layer=model.LAYER)
    with pytest.raises(camlens.LayerError, match="gradcam need"):
        camlens.explain(model, x, method=["gradcam", "guided-backprop"])
    with pytest.raises(camlens.ExplainError, match="empty list"):
        camlens.explain(model, x, method=[])


@pytest.mark.parametrize(("name", "text", "value"), [
    ("relu", "false", False), ("relu", "True", True), ("pooling", "gmp", "gmp"),
    ("window", "16", 16), ("window", "16,8", (16, 8)), ("fill", "0.5", 0.5),
    ("batch_size", "7", 7), ("backward", "guided", "guided"),
])
def test_options_parse_from_text(name: str, text: str, value: object) -> None:
    method = next(m for m in METHODS.values() if name in m.options)
    assert method.options[name].parse(text) == value


@pytest.mark.parametrize(("name", "text"), [("relu", "maybe"), ("pooling", "avg"),
                                            ("window", "a"), ("fill", "x")])
def test_bad_option_text_says_what_is_expected(name: str, text: str) -> None:
    method = next(m for m in METHODS.values() if name in m.options)
    with pytest.raises(OptionError, match=f"option {name}="):
        method.options[name].parse(text)


def test_gradient_is_the_plain_input_gradient() -> None:
    model = build("resnet")
    x = sample(model, batch=2)
    ex = camlens.explain(model, x, method="gradient", target=[0, 2])
    leaf = x.clone().requires_grad_(True)
    out = model(leaf)
    (g,) = torch.autograd.grad(out[0, 0] + out[1, 2], leaf)  # one class per sample
    torch.testing.assert_close(ex.raw[:, 0], g, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        assert not torch.equal(ex.raw, camlens.explain(model, x, method="guided-backprop",
                                                       target=[0, 2]).raw)
