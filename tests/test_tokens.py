"""Grad-CAM on a vision transformer's tokens: ``reshape="tokens"`` (or a callable) turns a
layer's (B, N, C) output and its gradients into (B, C, h, w) feature maps; ``"channels-last"``
does the same for (B, h, w, C) maps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import camlens
from camlens import ExplainError, LayerError
from camlens.evidence import tokens_to_maps
from models import make_vit
from test_contract import assert_same, snapshot


def literal_token_gradcam(model: nn.Module, x: torch.Tensor, layer: str,
                          classes: list[int]) -> torch.Tensor:
    """Eq. 1-2 on the patch tokens, written out: full forward with autograd, hook on the layer,
    gradients of y^c w.r.t. its (B, N, C) output, class token dropped, patches put back on their
    row-major s x s grid. Returns (B, K, s, s)."""
    saved = []
    handle = dict(model.named_modules())[layer].register_forward_hook(
        lambda m, i, o: saved.append(o))
    try:
        out = model(x)
    finally:
        handle.remove()
    tokens = saved[0]
    side = int((tokens.shape[1] - 1) ** 0.5)
    maps = []
    for c in classes:
        (g,) = torch.autograd.grad(out[:, c].sum(), tokens, retain_graph=True)
        b = tokens.shape[0]
        a_grid = tokens[:, 1:].detach().reshape(b, side, side, -1)  # (B, s, s, C)
        g_grid = g[:, 1:].reshape(b, side, side, -1)
        alpha = g_grid.mean(dim=(1, 2))  # (B, C)
        maps.append(torch.relu((a_grid * alpha[:, None, None, :]).sum(-1)))
    return torch.stack(maps, dim=1)


def test_gradcam_on_tokens_matches_the_literal_reference() -> None:
    model = make_vit()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    classes = [0, 2, 4]
    before = snapshot(model)
    ex = camlens.explain(model, x, layer=model.LAYER, target=torch.tensor([classes] * 3),
                         method="gradcam", reshape="tokens")
    assert_same(before, snapshot(model))
    ref = literal_token_gradcam(model, x, model.LAYER, classes)
    assert ex.raw.shape == (3, 3, 4, 4) and ex.weights.shape == (3, 3, model.DIM)
    assert ref.abs().amax() > 1e-3  # a real map, not zeros that would match anything
    torch.testing.assert_close(ex.raw, ref, rtol=1e-6, atol=1e-10)
    assert ex.maps.shape == (3, 3, 16, 16)
    # K targets in one call equal K single-target calls
    for k, c in enumerate(classes):
        one = camlens.explain(model, x, layer=model.LAYER, target=c, reshape="tokens")
        torch.testing.assert_close(one.raw[:, 0], ex.raw[:, k], rtol=1e-9, atol=1e-12)


def test_a_callable_reshape_equals_tokens_and_counterfactual_negates() -> None:
    model = make_vit()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def grid(t: torch.Tensor) -> torch.Tensor:  # what a user would write for a ViT
        return t[:, 1:].reshape(t.shape[0], 4, 4, t.shape[2]).permute(0, 3, 1, 2)

    a = camlens.explain(model, x, layer=model.LAYER, top_k=2, reshape="tokens", relu=False)
    b = camlens.explain(model, x, layer=model.LAYER, top_k=2, reshape=grid, relu=False)
    torch.testing.assert_close(a.raw, b.raw, rtol=0, atol=0)
    cf = camlens.explain(model, x, layer=model.LAYER, top_k=2, reshape="tokens", relu=False,
                         counterfactual=True)
    torch.testing.assert_close(cf.raw, -a.raw)
    assert (a.raw > 0).any() and (a.raw < 0).any()  # signed map: the negation is a real test


def test_guided_gradcam_on_tokens_uses_the_token_map() -> None:
    model = make_vit()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    gc = camlens.explain(model, x, layer=model.LAYER, target=1, reshape="tokens")
    with pytest.warns(UserWarning, match="no rectifier"):  # GELU only: guided = plain gradient
        gg = camlens.explain(model, x, layer=model.LAYER, target=1, reshape="tokens",
                             method="guided-gradcam")
    with pytest.warns(UserWarning, match="no rectifier"):
        gb = camlens.explain(model, x, target=1, method="guided-backprop")
    heat = torch.nn.functional.interpolate(gc.raw, size=(16, 16), mode="bilinear",
                                           align_corners=False)
    torch.testing.assert_close(gg.raw, gb.raw * heat.unsqueeze(2))  # Sec. 3.2, on tokens


def test_tokens_to_maps_drops_the_fewest_leading_tokens() -> None:
    t = torch.arange(2 * 18 * 3, dtype=torch.float32).reshape(2, 18, 3)  # 2 extra + 4x4 patches
    m = tokens_to_maps(t)
    assert m.shape == (2, 3, 4, 4)
    assert torch.equal(m[1, 2, 1, 3], t[1, 2 + 1 * 4 + 3, 2])  # row-major patch (1, 3)
    assert tokens_to_maps(torch.zeros(1, 49, 2)).shape == (1, 2, 7, 7)  # no class token
    with pytest.raises(LayerError, match="45 tokens are not a square grid"):
        tokens_to_maps(torch.zeros(1, 45, 2))  # 45..37 holds no square


def test_token_errors_say_what_would_be_right() -> None:
    model = make_vit()
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    before = snapshot(model)
    with pytest.raises(LayerError, match=r"\(1, 17, 8\).*reshape='tokens'"):
        camlens.explain(model, x, layer=model.LAYER)
    with pytest.raises(ExplainError, match="unknown reshape 'patches'.*tokens"):
        camlens.explain(model, x, layer=model.LAYER, reshape="patches")
    with pytest.raises(ExplainError, match="takes no reshape"):
        camlens.explain(model, x, method="guided-backprop", reshape="tokens")
    with pytest.raises(LayerError, match=r"reshaped to \(1, 16, 8\)"):  # still tokens
        camlens.explain(model, x, layer=model.LAYER, reshape=lambda t: t[:, 1:])
    x2 = torch.cat([x, x])
    with pytest.raises(LayerError, match=r"reshaped to \(1, 8, 2, 17\)"):  # batch mixed up
        camlens.explain(model, x2, layer=model.LAYER,
                        reshape=lambda t: t.permute(2, 0, 1).unsqueeze(0))
    assert_same(before, snapshot(model))


class ChannelsLastNet(nn.Module):
    """conv-ReLU (``features``, NCHW), then the same maps channels-last (``last``, NHWC, as Swin
    keeps them), a non-linear head over their spatial mean."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU())
        self.last = Permute()
        self.head = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.last(self.features(x)).mean(dim=(1, 2)))


class Permute(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


def test_channels_last_equals_gradcam_on_the_same_maps_channels_first() -> None:
    model = ChannelsLastNet().double().eval()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    first = camlens.explain(model, x, layer="features", top_k=3)
    last = camlens.explain(model, x, layer="last", top_k=3, reshape="channels-last")
    assert first.raw.abs().amax() > 1e-3
    torch.testing.assert_close(last.raw, first.raw, rtol=1e-12, atol=0)
    torch.testing.assert_close(last.weights, first.weights, rtol=1e-12, atol=0)
    # without the reshape the (B, h, w, C) maps would be read as h channels of w x C pixels
    # (h = w = C = 6 here, so nothing in the shapes gives it away: camlens cannot tell)
    wrong = camlens.explain(model, x, layer="last", top_k=3)
    assert not torch.allclose(wrong.raw, first.raw)


class SwinLike(nn.Module):
    """The layout of torchvision's SwinTransformer: ``features`` keep (B, h, w, C) maps, ``norm``
    too, ``permute`` turns them to (B, C, h, w) before pooling and the head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 2, stride=2), Permute())
        self.norm = nn.LayerNorm(6)
        self.permute = PermuteBack()
        self.head = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.permute(self.norm(self.features(x))).mean(dim=(2, 3)))


class PermuteBack(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)


def test_torchvision_swin_layers_are_read_channels_last(monkeypatch: pytest.MonkeyPatch) -> None:
    model = SwinLike().double().eval()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    plain = camlens.explain(model, x, layer="norm", top_k=2)  # a user's class: read as it is
    explicit = camlens.explain(model, x, layer="norm", top_k=2, reshape="channels-last")
    nchw = camlens.explain(model, x, layer="permute", top_k=2)  # the same maps, channels first
    torch.testing.assert_close(explicit.raw, nchw.raw, rtol=1e-12, atol=0)
    assert not torch.allclose(plain.raw, nchw.raw)  # (h = w = C = 6: shapes cannot tell)
    monkeypatch.setattr(SwinLike, "__module__", "torchvision.models.swin_transformer")
    for layer in ("norm", "features"):  # torchvision's Swin: channels-last without being told
        auto = camlens.explain(model, x, layer=layer, top_k=2)
        told = camlens.explain(model, x, layer=layer, top_k=2, reshape="channels-last")
        assert torch.equal(auto.raw, told.raw)
    torch.testing.assert_close(camlens.explain(model, x, layer="norm", top_k=2).raw, nchw.raw,
                               rtol=1e-12, atol=0)
    torch.testing.assert_close(camlens.explain(model, x, layer="permute", top_k=2).raw, nchw.raw)
