"""One model shared by several threads: explanations equal to sequential ones, and other threads'
plain forwards see nothing of camlens, not even while a call runs."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import camlens
from test_contract import assert_same, snapshot

THREADS = 4
CALLS = 12  # per thread
FORWARD_THREADS = 2


class Shared(nn.Module):
    """Every kind of rectifier (module in place, reused module, ReLU6, functional), BatchNorm,
    and a GAP + linear head so that CAM applies too."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.relu = nn.ReLU(inplace=True)  # reused twice per forward
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.act = nn.ReLU6()
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 6)
        with torch.no_grad():
            self.bn1.running_mean.normal_(0, 0.1)
            self.bn1.running_var.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu(self.bn1(self.conv1(x)))
        a = self.relu(self.act(self.conv2(a)) + F.relu(a.mean(1, keepdim=True)))
        return self.fc(self.conv3(a).mean((2, 3)))


# (method, keywords): a mix of hooks (capture, module rectifiers) and function-mode rectifiers
CALL_KINDS: list[tuple[str, dict[str, Any]]] = [
    ("gradcam", {"layer": "conv2", "top_k": 2}),
    ("guided-backprop", {"rectifiers": "modules"}),
    ("gradcam", {"layer": ["conv1", "conv3"], "backward": "guided", "rectifiers": "modules"}),
    ("guided-backprop", {"rectifiers": "functions"}),
    ("guided-gradcam", {"layer": "conv3", "rectifiers": "modules"}),
    ("cam", {"layer": "conv3", "target": 2}),
    ("occlusion", {"window": 8, "stride": 8, "batch_size": 3}),
    ("deconv-gradcam", {"layer": "bn1", "rectifiers": "modules"}),
    # Ablation-CAM replays the view with its modules' forwards intercepted
    ("ablationcam", {"layer": "conv2", "top_k": 2, "batch_size": 5}),
    ("scorecam", {"layer": "conv3", "batch_size": 7}),
    ("gradcampp", {"layer": "conv2", "top_k": 2}),
    ("eigencam", {"layer": "conv3"}),
]


def _inputs(n: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(2, 3, 24, 24, generator=gen) for _ in range(n)]


@pytest.mark.filterwarnings("ignore:.*training mode")
@pytest.mark.parametrize("training", [False, True])
def test_threads_share_one_model(training: bool) -> None:
    """THREADS threads x CALLS calls of a mix of methods on one model, while FORWARD_THREADS
    threads run plain no_grad forwards on it (in eval mode: in training mode those would update
    BatchNorm's statistics themselves)."""
    model = Shared().train(training)
    n_forwarders = 0 if training else FORWARD_THREADS
    images = _inputs(5)
    calls = [(t, c) for t in range(THREADS) for c in range(CALLS)]

    def job(t: int, c: int) -> tuple[str, dict[str, Any], torch.Tensor]:
        method, kw = CALL_KINDS[(t * CALLS + c) % len(CALL_KINDS)]
        return method, kw, images[(t + c) % len(images)]

    def run(t: int, c: int) -> camlens.Explanation:
        method, kw, x = job(t, c)
        return camlens.explain(model, x, method=method, **kw)

    expected = {(t, c): run(t, c) for t, c in calls}  # sequential reference
    with torch.no_grad():
        plain = [model(x) for x in images]
    before = snapshot(model)

    got: dict[tuple[int, int], camlens.Explanation] = {}
    errors: list[str] = []  # from explain calls
    leaks: list[str] = []  # what plain forwards saw of camlens
    done = threading.Event()
    barrier = threading.Barrier(THREADS + n_forwarders)

    def explainer(t: int) -> None:
        barrier.wait()
        for c in range(CALLS):
            try:
                got[t, c] = run(t, c)
            except Exception as err:  # noqa: BLE001 - collected and reported below
                errors.append(f"thread {t} call {c} ({job(t, c)[0]}): {type(err).__name__}: "
                              f"{err}")

    def forwarder(f: int) -> None:
        barrier.wait()
        i = 0
        while not done.is_set() or i < 20:
            x = images[i % len(images)]
            try:
                with torch.no_grad():
                    out = model(x)
            except Exception as err:  # noqa: BLE001
                leaks.append(f"a plain forward raised {type(err).__name__}: {err}")
                continue
            finally:
                i += 1
            if out.requires_grad:
                leaks.append("a no_grad forward returned an output that requires grad")
            elif not torch.equal(out, plain[(i - 1) % len(images)]):
                leaks.append("a plain forward gave a different output")

    workers = [threading.Thread(target=explainer, args=(t,)) for t in range(THREADS)]
    forwarders = [threading.Thread(target=forwarder, args=(f,)) for f in range(n_forwarders)]
    for th in workers + forwarders:
        th.start()
    for th in workers:
        th.join()
    done.set()
    for th in forwarders:
        th.join()

    assert errors == [], f"{len(errors)} of {len(calls)} calls failed, e.g. {errors[:3]}"
    assert leaks == [], f"{len(leaks)} plain forwards saw camlens, e.g. {leaks[:3]}"
    for key, ref in expected.items():
        ex = got[key]
        torch.testing.assert_close(ex.maps, ref.maps, rtol=0, atol=1e-6, msg=str(key))
        torch.testing.assert_close(ex.raw, ref.raw, rtol=1e-6, atol=1e-6, msg=str(key))
        assert torch.equal(ex.targets, ref.targets) if ref.targets is not None else True
    assert_same(before, snapshot(model))
