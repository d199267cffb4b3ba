#!/usr/bin/env python3
"""Ablation-CAM's replay (only the network after the layer reruns) against full forwards with
only the layer's output replaced (what pytorch-grad-cam runs), on torchvision architectures with
seeded random weights: time, the largest relative difference of the maps, and whether the replay
had to fall back.

    python benchmarks/ablation_replay.py [--size 64] [--images 2]

Needs torchvision (the ``bench`` extra, docs/performance.md).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

import camlens
import camlens.suffix as sfx

CASES = [("resnet50", "layer4"), ("resnet50", "layer4.2.conv2"), ("resnet50", "layer3.5"),
         ("vgg16", "features.29"), ("vgg16", "features.28"),
         ("densenet121", "features.denseblock4.denselayer16.conv2"),
         ("mobilenet_v3_small", "features.12"), ("efficientnet_b0", "features.8")]


def main(argv: list[str] | None = None) -> int:
    import torchvision

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    full, replay = sfx.SuffixRunner._full, sfx.SuffixRunner._replay
    fell: list[int] = []

    def spy(self: sfx.SuffixRunner, *args: Any) -> Any:
        fell.append(1)
        return full(self, *args)

    def never(self: sfx.SuffixRunner, *args: Any) -> Any:
        raise sfx._Diverged

    print("| model | layer | replay s | full forwards s | ratio | max rel diff | fallbacks |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, layer in CASES:
        torch.manual_seed(0)
        m = getattr(torchvision.models, name)(weights=None).eval()
        x = torch.randn(a.images, 3, a.size, a.size, generator=torch.Generator().manual_seed(1))
        fell.clear()
        sfx.SuffixRunner._full = spy  # type: ignore[method-assign]
        t0 = time.perf_counter()
        fast = camlens.explain(m, x, method="ablationcam", layer=layer)
        t_fast = time.perf_counter() - t0
        fallbacks = len(fell)
        sfx.SuffixRunner._full = full  # type: ignore[method-assign]
        sfx.SuffixRunner._replay = never  # type: ignore[method-assign]
        t0 = time.perf_counter()
        slow = camlens.explain(m, x, method="ablationcam", layer=layer)
        t_slow = time.perf_counter() - t0
        sfx.SuffixRunner._full, sfx.SuffixRunner._replay = full, replay  # type: ignore[method-assign]
        rel = float((fast.raw - slow.raw).abs().max() / slow.raw.abs().max().clamp(min=1e-30))
        print(f"| {name} | {layer} | {t_fast:.1f} | {t_slow:.1f} | {t_slow / t_fast:.1f} | "
              f"{rel:.1e} | {fallbacks} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
