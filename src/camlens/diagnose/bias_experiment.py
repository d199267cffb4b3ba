"""The doctor/nurse experiment (Sec. 6.3) rebuilt on world v2, small enough for a CPU.

    python -m camlens.diagnose.bias_experiment --out DIR [--train 1200] [--epochs 6]

Two copies of one small net (:func:`small_net`) learn the classes of one confusable group
(default ``feline``: tabby, tiger cat, Egyptian cat) from the SAME scenes, which differ only in
the colour of the background cue band (world v2's ``cue_rate``): for the *biased* model the
band is the class's cue with probability ``--cue-rate`` (0.9: "most of the time"; the paper's
search results were 78% and 93% gendered), for the *balanced* model with probability 1/3 (the
cue says nothing). Both are tested on a third set of scenes whose cue is at chance (the
paper's test set, balanced in gender across the classes), and :func:`camlens.diagnose.bias_study`
measures where their Grad-CAM evidence lies. Writes ``DIR/bias_experiment.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from camlens.diagnose.data import Item, items_from_scenes, load_record
from camlens.models.registry import ModelRecord
from camlens.synthetic.v2 import CLASSES, CUE_CHANCE, GROUPS, NUM_CLASSES, make_scene

__all__ = ["small_net", "SMALL_LAYER", "scenes", "train", "record", "run"]

SMALL_LAYER = "1.7"
"""Grad-CAM's layer of :func:`small_net`: the last convolution's ReLU, 14x14 at 112 px."""


class _Standardise(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.4) / 0.25


def small_net(num_classes: int = NUM_CLASSES, seed: int = 0) -> nn.Module:
    """A 3-conv net (16, 32, 64 channels; 112 -> 14x14) with global average pooling and one
    linear layer over all world v2 classes (30 of them never seen in training)."""
    torch.manual_seed(seed)
    return nn.Sequential(_Standardise(), nn.Sequential(
        nn.Conv2d(3, 16, 5, stride=2, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))


def record(model: nn.Module, name: str) -> ModelRecord:
    """``model`` (a :func:`small_net`) as a record: world v2's class names, its layer."""
    return load_record(SimpleNamespace(model=model.eval(), labels=list(CLASSES),
                                       default_layer=SMALL_LAYER, name=name))


def scenes(classes: Sequence[int], n: int, seed: int, cue_rate: float) -> list[Any]:
    """``n`` single scenes, classes in turn; scene ``i`` from ``default_rng((seed, i))``, so
    two cue rates give the same scenes up to the cue band's colour."""
    return [make_scene(np.random.default_rng((seed, i)), labels=[classes[i % len(classes)]],
                       cue_rate=cue_rate) for i in range(n)]


def _tensors(items: Sequence[Item]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.stack([it.image for it in items])).permute(0, 3, 1, 2).float() / 255
    return x.contiguous(), torch.tensor([it.labels[0] for it in items])


def train(items: Sequence[Item], epochs: int, seed: int = 0, batch: int = 32,
          lr: float = 3e-3) -> nn.Module:
    """Adam with cosine decay, cross-entropy, ``epochs`` passes in a seeded order."""
    x, y = _tensors(items)
    net = small_net(seed=seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    total = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(total, 1))
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


def run(group: str = "feline", n_train: int = 1200, n_test: int = 300, epochs: int = 6,
        cue_rate: float = 0.9, seed: int = 0) -> dict[str, Any]:
    """Train the biased and the balanced model, test both, measure their evidence."""
    from camlens.diagnose.bias import bias_study

    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r}; choose from {sorted(GROUPS)}")
    classes = GROUPS[group]
    test = items_from_scenes(scenes(classes, n_test, 7_000_000 + seed, CUE_CHANCE), "test/")
    out: dict[str, Any] = {"group": group, "classes": [CLASSES[c] for c in classes],
                           "train_images": n_train, "test_images": n_test, "epochs": epochs,
                           "cue_rate": cue_rate, "seed": seed, "threads": torch.get_num_threads(),
                           "models": {}}
    for name, rate in (("biased", cue_rate), ("balanced", CUE_CHANCE)):
        t0 = time.perf_counter()
        data = items_from_scenes(scenes(classes, n_train, 6_000_000 + seed, rate), "train/")
        net = train(data, epochs, seed)
        seconds = time.perf_counter() - t0
        study = bias_study(record(net, f"small net, {name}"), test)
        out["models"][name] = {"train_cue_rate": rate, "train_seconds": round(seconds, 1),
                               "load": round(os.getloadavg()[0], 1), "study": study,
                               "state": net}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--group", default="feline")
    p.add_argument("--train", type=int, default=1200)
    p.add_argument("--test", type=int, default=300)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--cue-rate", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    res = run(a.group, a.train, a.test, a.epochs, a.cue_rate, a.seed)
    os.makedirs(a.out, exist_ok=True)
    for name, m in res["models"].items():
        torch.save(m.pop("state").state_dict(), os.path.join(a.out, f"{name}.pt"))
    with open(os.path.join(a.out, "bias_experiment.json"), "w", encoding="utf-8") as fh:
        json.dump(res, fh, indent=1)
    for name, m in res["models"].items():
        s = m["study"]
        print(f"{name}: test accuracy {s['accuracy']:.3f}, cue agrees "
              f"{s.get('accuracy_cue_agrees')}, differs {s.get('accuracy_cue_differs')}, "
              f"{m['train_seconds']} s")
    return res


if __name__ == "__main__":
    main()
