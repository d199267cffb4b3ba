"""Score-CAM and Ablation-CAM against literal re-implementations (one forward of the user's model
per channel, loops, float64), hand-derived values, K targets = K calls, and the suffix runner
that reruns only the network after the layer (against the full forward, and its fallbacks)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import camlens
import camlens.suffix as suffix
from camlens import LayerError, NonFiniteError, OptionError
from models import ZOO, build, sample

CLASSES = torch.tensor([[0, 3], [4, 1]])


def as_tuple(x: Any) -> tuple[torch.Tensor, ...]:
    return x if isinstance(x, tuple) else (x,)


def activations(model: nn.Module, inputs: tuple[torch.Tensor, ...], layer: str) -> torch.Tensor:
    store: list[torch.Tensor] = []
    h = dict(model.named_modules())[layer].register_forward_hook(
        lambda m, i, o: store.append(o.detach().clone()))
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        h.remove()
    return store[0]


def literal_scorecam(model: nn.Module, inputs: tuple[torch.Tensor, ...], layer: str,
                     classes: torch.Tensor, baseline: str = "zeros", softmax: bool = True,
                     channel_softmax: bool = False) -> torch.Tensor:
    """Eq. 6-8 (Algorithm 1 with ``channel_softmax``), one masked forward per sample and
    channel, constant maps included (their mask is 0)."""
    a = activations(model, inputs, layer)
    image = inputs[0]
    b, c, h, w = a.shape
    out = torch.zeros(b, classes.shape[1], h, w, dtype=torch.float64)

    def score(x: torch.Tensor, s: int) -> torch.Tensor:
        rest = [t[s:s + 1] for t in inputs[1:]]
        with torch.no_grad():
            y = model(x[None], *rest)[0]
        return (y.softmax(-1) if softmax else y)[classes[s]]

    for s in range(b):
        base = score(torch.zeros_like(image[s]), s)
        alphas = []
        for k in range(c):
            up = F.interpolate(a[s:s + 1, k:k + 1], size=image.shape[-2:], mode="bilinear",
                               align_corners=False)[0, 0]
            lo, hi = float(up.min()), float(up.max())
            mask = (up - lo) / (hi - lo) if hi > lo else torch.zeros_like(up)
            p = score(image[s] * mask, s)
            alphas.append(p - base if baseline == "zeros" else p)
        alpha = torch.stack(alphas)  # (C, K)
        if channel_softmax:
            alpha = alpha.softmax(dim=0)
        for k in range(c):
            for j in range(classes.shape[1]):
                out[s, j] += float(alpha[k, j]) * a[s, k]
    return out.clamp(min=0)


def literal_ablationcam(model: nn.Module, inputs: tuple[torch.Tensor, ...], layer: str,
                        classes: torch.Tensor, relative: bool = True) -> torch.Tensor:
    """Eq. 3-4: one full forward of the user's model per sample and zeroed channel."""
    a = activations(model, inputs, layer)
    b, c, h, w = a.shape
    out = torch.zeros(b, classes.shape[1], h, w, dtype=torch.float64)
    module = dict(model.named_modules())[layer]
    with torch.no_grad():
        y = model(*inputs).gather(1, classes)
    for s in range(b):
        for k in range(c):
            def zero(m: nn.Module, i: Any, o: torch.Tensor, k: int = k) -> torch.Tensor:
                o = o.clone()
                o[:, k] = 0
                return o

            hook = module.register_forward_hook(zero)
            try:
                with torch.no_grad():
                    yk = model(*(t[s:s + 1] for t in inputs))[0, classes[s]]
            finally:
                hook.remove()
            for j in range(classes.shape[1]):
                drop = float(y[s, j] - yk[j])
                out[s, j] += (drop / float(y[s, j]) if relative else drop) * a[s, k]
    return out.clamp(min=0)


# every zoo net with the defaults; the other options on two of them (one forward per channel
# is slow on MobileNet's 32-channel head)
SCORE_CASES = [(n, {}) for n in sorted(ZOO)] + [
    (n, o) for n in ("resnet", "two_input")
    for o in ({"baseline": "none"}, {"softmax": False, "batch_size": 3},
              {"softmax": False, "channel_softmax": True})]


@pytest.mark.parametrize("name,opt", SCORE_CASES, ids=[
    n + "".join(f"-{k}={v}" for k, v in o.items()) for n, o in SCORE_CASES])
def test_scorecam_matches_the_literal_algorithm(name: str, opt: dict[str, Any]) -> None:
    model = build(name)
    inputs = as_tuple(sample(model))
    ex = camlens.explain(model, inputs, method="scorecam", layer=model.LAYER, target=CLASSES,
                         **opt)
    expected = literal_scorecam(model, inputs, model.LAYER, CLASSES,
                                **{k: v for k, v in opt.items() if k != "batch_size"})
    assert float(expected.abs().amax()) > 0
    torch.testing.assert_close(ex.raw, expected, rtol=1e-9, atol=1e-13)


class InputGap(nn.Module):
    """y = W mean_ij(x) + b with an identity ``layer`` on the input: A = x, so Score-CAM's masks
    are the input's own channels, min-max scaled."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Identity()
        self.fc = nn.Linear(3, 4)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0],
                                               [2.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]))
            self.fc.bias.copy_(torch.tensor([0.1, -0.2, 0.0, 0.3]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer(x).mean((2, 3)))


def test_scorecam_by_hand_on_a_linear_net() -> None:
    """p^c(X o H^k) = softmax(W mean(X o H^k) + b)_c; X_b = 0 gives softmax(b)_c. Channel 2 of
    the image is constant: H^2 = 0, weight exactly 0 (and softmax(b)_c without the baseline)."""
    model = InputGap().double().eval()
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[-1.0, 0.0], [2.0, 1.0]],
                       [[5.0, 5.0], [5.0, 5.0]]]], dtype=torch.float64)
    ex = camlens.explain(model, x, method="scorecam", layer="layer", target=[[0, 2]])
    h = torch.stack([(x[0, 0] - 1) / 3, (x[0, 1] + 1) / 3])  # min-max scaled channels 0, 1
    w, b = model.fc.weight.detach(), model.fc.bias.detach()
    base = torch.softmax(b, 0)
    expected = torch.zeros(2, 3, dtype=torch.float64)
    for k in range(2):
        p = torch.softmax(w @ (x[0] * h[k]).mean((1, 2)) + b, 0)
        expected[:, k] = (p - base)[[0, 2]]
    torch.testing.assert_close(ex.weights[0], expected, rtol=1e-12, atol=1e-15)
    assert ex.weights[0, :, 2].tolist() == [0.0, 0.0]
    plain = camlens.explain(model, x, method="scorecam", layer="layer", target=[[0, 2]],
                            baseline="none")
    torch.testing.assert_close(plain.weights[0, :, 2], base[[0, 2]], rtol=1e-12, atol=0)
    torch.testing.assert_close(plain.weights[0, :, :2], expected[:, :2] + base[[0, 2], None])


@pytest.mark.parametrize("name", sorted(ZOO))
@pytest.mark.parametrize("relative", [True, False])
def test_ablationcam_matches_the_literal_equation(name: str, relative: bool) -> None:
    model = build(name)
    inputs = as_tuple(sample(model))
    ex = camlens.explain(model, inputs, method="ablationcam", layer=model.LAYER, target=CLASSES,
                         relative=relative, batch_size=5)
    expected = literal_ablationcam(model, inputs, model.LAYER, CLASSES, relative)
    assert float(expected.abs().amax()) > 0
    torch.testing.assert_close(ex.raw, expected, rtol=1e-9, atol=1e-12)


def test_ablationcam_by_hand_on_gap_linear() -> None:
    """y^c = sum_k w_k^c GAP(A^k) + b_c: zeroing channel k drops y^c by w_k^c GAP(A^k)."""
    model = build("gap")
    x = sample(model, batch=3)
    ex = camlens.explain(model, x, method="ablationcam", layer="features", top_k=2,
                         relative=False)
    gap = model.features(x).mean((2, 3)).detach()  # (B, C)
    expected = model.fc.weight.detach()[ex.targets] * gap[:, None, :]
    torch.testing.assert_close(ex.weights, expected, rtol=1e-10, atol=1e-13)
    rel = camlens.explain(model, x, method="ablationcam", layer="features", top_k=2)
    torch.testing.assert_close(rel.weights, expected / ex.scores[:, :, None], rtol=1e-10,
                               atol=1e-13)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
@pytest.mark.parametrize("name", ["resnet", "two_input"])
def test_k_targets_in_one_call_equal_k_single_calls(method: str, name: str) -> None:
    model = build(name)
    inputs = as_tuple(sample(model))
    together = camlens.explain(model, inputs, method=method, layer=model.LAYER, target=CLASSES)
    for k in range(2):
        alone = camlens.explain(model, inputs, method=method, layer=model.LAYER,
                                target=CLASSES[:, k:k + 1])
        torch.testing.assert_close(together.raw[:, k:k + 1], alone.raw, rtol=1e-12, atol=0)
        torch.testing.assert_close(together.weights[:, k:k + 1], alone.weights, rtol=1e-12,
                                   atol=0)


class Counted(nn.Module):
    """Identity that counts how often its forward body runs (in a list: camlens's private view
    of the model shares it)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        return x


class Blocky(nn.Module):
    """A counted stem, then a residual block whose shortcut comes from before the explained
    ``block.conv2`` and a shared in-place ReLU used before and after it."""

    def __init__(self, write_shortcut: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), Counted(), nn.ReLU())
        self.block = nn.ModuleDict({"conv1": nn.Conv2d(6, 6, 3, padding=1),
                                    "conv2": nn.Conv2d(6, 6, 3, padding=1)})
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(6, 4)
        self.write_shortcut = write_shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        a = self.relu(self.block["conv1"](s))
        a = self.block["conv2"](a)
        if self.write_shortcut:
            s.mul_(0.5)  # writes into a recorded output: the runner must notice
        return self.fc(self.relu(a + s).mean((2, 3)))


@pytest.mark.parametrize("write", [False, True], ids=["replay", "fallback"])
def test_ablation_runs_the_prefix_once_and_matches_the_literal(write: bool) -> None:
    """Replay: the stem runs for the explained forward and the recording only (2 of 2 samples
    x 6 channels / batch 2 = 6 batches); a write into a recorded output falls back to full
    forwards, and both equal the literal map."""
    model = Blocky(write).double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([[1, 2], [3, 0]])
    counter = model.stem[1]
    ex = camlens.explain(model, x, method="ablationcam", layer="block.conv2", target=target,
                         batch_size=2)
    runs = len(counter.calls)
    expected = literal_ablationcam(model, (x,), "block.conv2", target)
    torch.testing.assert_close(ex.raw, expected, rtol=1e-9, atol=1e-12)
    if write:
        assert runs >= 2 + 6  # one full forward per batch after the fallback
    else:
        assert runs == 2


def test_replay_equals_full_forwards_on_every_zoo_net(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same maps when the runner is never allowed to replay (full forwards only)."""
    fast = {}
    for name in sorted(ZOO):
        model = build(name)
        fast[name] = camlens.explain(model, as_tuple(sample(model)), method="ablationcam",
                                     layer=model.LAYER, target=CLASSES, batch_size=4)

    def diverge(*_: Any) -> Any:
        raise suffix._Diverged

    monkeypatch.setattr(suffix.SuffixRunner, "_replay", diverge)
    for name in sorted(ZOO):
        model = build(name)
        slow = camlens.explain(model, as_tuple(sample(model)), method="ablationcam",
                               layer=model.LAYER, target=CLASSES, batch_size=4)
        torch.testing.assert_close(fast[name].raw, slow.raw, rtol=1e-10, atol=1e-13)


def test_replay_is_used_on_the_zoo_nets(monkeypatch: pytest.MonkeyPatch) -> None:
    """No zoo net needs the fallback (it would hide a runner that never replays)."""
    fell_back = []
    full = suffix.SuffixRunner._full

    def spy(self: suffix.SuffixRunner, *a: Any) -> Any:
        fell_back.append(type(self.model).__name__)
        return full(self, *a)

    monkeypatch.setattr(suffix.SuffixRunner, "_full", spy)
    for name in sorted(ZOO):
        model = build(name)
        camlens.explain(model, as_tuple(sample(model)), method="ablationcam", layer=model.LAYER,
                        target=CLASSES)
    assert fell_back == []


def test_scorecam_skips_constant_maps_without_a_forward() -> None:
    """All-zero channels (dead ReLUs) cost no masked forward: 1 + live channels per sample."""
    model = build("gap")
    with torch.no_grad():
        model.features[2].bias[:5] = -100.0  # five channels dead after the ReLU
    x = sample(model, batch=1)
    live = int((model.features(x).flatten(2).amax(-1) > 0).sum())
    calls = []
    h = model.fc.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    try:
        ex = camlens.explain(model, x, method="scorecam", layer="features", batch_size=4)
    finally:
        h.remove()
    assert live <= 11 and sum(calls) == 1 + 1 + live  # explained forward, baseline, live maps
    assert bool((ex.weights[0, 0][model.features(x)[0].flatten(1).amax(-1) == 0] == 0).all())
    again = camlens.explain(model, x, method="scorecam", layer="features", baseline="none",
                            channel_softmax=True)
    assert float(again.weights.sum()) == pytest.approx(1.0)  # dead maps get exp(f(X_b)) / Z


def test_options_are_checked() -> None:
    model = build("gap")
    x = sample(model)
    with pytest.raises(OptionError, match="scorecam batch_size .* positive int, got 0"):
        camlens.explain(model, x, method="scorecam", layer="features", batch_size=0)
    with pytest.raises(OptionError, match="ablationcam batch_size"):
        camlens.explain(model, x, method="ablationcam", layer="features", batch_size=True)
    with pytest.raises(OptionError, match="baseline must be one of"):
        camlens.explain(model, x, method="scorecam", layer="features", baseline="blur")
    with pytest.raises(camlens.InputError, match="torch.uint8 image would truncate"):
        camlens.explain(nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten(1), nn.Linear(32, 3)).eval(),
                        torch.zeros(1, 3, 4, 4, dtype=torch.uint8), method="scorecam",
                        layer="0", target=0)
    vit = __import__("models").make_vit()
    with pytest.raises(LayerError, match="ablationcam .* no reshape"):
        camlens.explain(vit, torch.randn(1, 3, 16, 16, dtype=torch.float64),
                        method="ablationcam", layer=vit.LAYER, reshape="tokens")


def test_ablationcam_refuses_a_zero_score_for_the_relative_drop() -> None:
    model = InputGap().double().eval()
    with torch.no_grad():
        model.fc.bias.zero_()
    x = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    x[0, 0, 0, 0] = 1.0
    with torch.no_grad():
        model.fc.weight[1, 0] = 0.0  # class 1 scores exactly 0
    with pytest.raises(NonFiniteError, match="exactly 0 for sample 0, target 0; use "
                                             "relative=False"):
        camlens.explain(model, x, method="ablationcam", layer="layer", target=1)
    ex = camlens.explain(model, x, method="ablationcam", layer="layer", target=0,
                         relative=False)
    assert ex.weights[0, 0].tolist() == [0.25, 0.0, 0.0]  # w_00 GAP(A^0) = 1 * 1/4


def test_runner_keeps_one_map_of_a_sequential_and_leaves_no_forward_behind() -> None:
    """Of the 4 calls before the layer inside an nn.Sequential only the last output is kept;
    a replay with the layer's own output gives the model's output; no module keeps the
    intercepting forward."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                          nn.Conv2d(4, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).double()
    x = torch.randn(2, 3, 10, 10, dtype=torch.float64)
    runner = suffix.suffix_runner(model, model[4], [x], 0)
    kept = [o for o in runner._outputs() if o is not None]
    assert len(runner._outputs()) == 4 and len(kept) == 1 and kept[0].shape == (2, 4, 6, 6)
    a = model[:5](x).detach()
    out = runner.run(1, a[1:2].expand(3, -1, -1, -1).clone())
    assert runner.fast
    torch.testing.assert_close(out, model(x)[1:2].expand(3, -1).detach(), rtol=1e-12, atol=0)
    assert all("forward" not in vars(m) for m in model.modules())


def test_scorecam_of_constant_maps_only_scores_the_baseline() -> None:
    """Every map constant (a 1 x 1 layer): one forward for X_b; with the baseline subtracted
    all weights are 0, without it they are f(X_b) = softmax(b)."""
    model = InputGap().double().eval()
    model.layer = nn.AdaptiveAvgPool2d(1)  # A: (B, 3, 1, 1)
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ex = camlens.explain(model, x, method="scorecam", layer="layer", target=[1, 2])
    assert ex.weights.abs().max() == 0
    plain = camlens.explain(model, x, method="scorecam", layer="layer", target=[1, 2],
                            baseline="none")
    expected = torch.softmax(model.fc.bias.detach(), 0)[[1, 2]]
    torch.testing.assert_close(plain.weights[:, 0], expected[:, None].expand(2, 3))


@pytest.mark.parametrize("channels_last", [True, False])
def test_scorecam_masks_keep_the_layout_explain_chose(channels_last: bool) -> None:
    """With channels_last=True the masked copies keep the channels-last layout of the image
    (oneDNN's native one); by default they keep the caller's (here the default) layout."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3))
    seen: list[bool] = []
    hook = model[0].register_forward_pre_hook(lambda m, a: seen.append(
        not a[0].is_contiguous() and a[0].is_contiguous(memory_format=torch.channels_last)))
    try:
        camlens.explain(model.eval(), torch.rand(1, 3, 8, 8), method="scorecam", layer="3",
                        batch_size=2, channels_last=channels_last)
    finally:
        hook.remove()
    assert len(seen) >= 3 and (all(seen) if channels_last else not any(seen))


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_k_targets_share_the_forwards(method: str) -> None:
    """Three targets cost the forwards of one: every masked or ablated batch scores all K."""
    model = build("gap")
    x = sample(model, batch=2)
    counts = []
    for target in ([[1], [2]], [[1, 3, 0], [2, 4, 1]]):
        seen: list[int] = []
        h = model.fc.register_forward_hook(
            lambda m, i, o, seen=seen: seen.append(o.shape[0]))
        try:
            camlens.explain(model, x, method=method, layer="features", target=target,
                            batch_size=5)
        finally:
            h.remove()
        counts.append(seen)
    assert counts[0] == counts[1] and len(counts[0]) > 3
