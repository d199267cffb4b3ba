#!/usr/bin/env python3
"""Explaining the words of a caption: K targets of one call against one call per word.

The captioner is Show-and-Tell shaped, at the size the world v2 captioner will have: the world
v2 VGG-like CNN (``features``, 112 x 112 input, Grad-CAM at the last rectified conv
``features.18``, 14 x 14 x 128), its GAP projected as the first input of a one-layer LSTM (256
units), then the caption's embedded tokens, a linear layer over the vocabulary. Weights are
random (speed does not depend on them). A caption of T tokens is explained as its whole
log-probability plus K word log-probabilities:

- ``together``: ``explain(model, (image, tokens), target=CaptionTarget(tokens, words=K))``:
  one forward pass, one batched backward for all 1 + K targets;
- ``one by one``: 1 + K calls, each with one target (a forward and a backward each).

Both give the same maps (tests/test_caption.py checks that). Each job is timed ``--rounds``
times, interleaved (together, one by one, together, ...), after a warm-up, and the medians are
reported with their ratio. Methods: Grad-CAM alone, and the CLI's set (Guided Backprop,
Grad-CAM, Guided Grad-CAM).

    python benchmarks/caption.py                      # batch 1 and 8, K = 4 and 8
    python benchmarks/caption.py --threads 2 --rounds 9 --out benchmarks/results/caption
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import camlens
from camlens import CaptionTarget
from camlens.synthetic.v2.nets import VGGNet

LAYER = "features.18"
VOCAB = 96
HIDDEN = 256


class Captioner(nn.Module):
    """World v2 VGG features -> GAP -> linear as LSTM step 0, then the tokens; logits of steps
    1..T (logits[:, t] predict tokens[:, t + 1])."""

    def __init__(self) -> None:
        super().__init__()
        self.features = VGGNet().features
        self.project = nn.Linear(128, HIDDEN)
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.lstm = nn.LSTM(HIDDEN, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, VOCAB)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        a = self.features(image)  # (B, 128, 7, 7) after pool5
        steps = torch.cat([self.project(a.mean((2, 3)))[:, None], self.embed(tokens)], dim=1)
        h, _ = self.lstm(steps)
        return self.head(h[:, 1:])


def jobs(model: nn.Module, batch: int, k: int, tokens_per_caption: int,
         methods: list[str]) -> dict[str, Callable[[], Any]]:
    gen = torch.Generator().manual_seed(batch * 100 + k)
    image = torch.rand(batch, 3, 112, 112, generator=gen)
    tokens = torch.randint(2, VOCAB, (batch, tokens_per_caption), generator=gen)
    tokens[:, 0] = 0
    words = torch.linspace(1, tokens_per_caption - 1, k).round().long()  # K visual positions
    method: str | list[str] = methods[0] if len(methods) == 1 else methods

    def together() -> Any:
        return camlens.explain(model, (image, tokens), method=method, layer=LAYER,
                               target=CaptionTarget(tokens, words=words))

    def one_by_one() -> Any:
        out = [camlens.explain(model, (image, tokens), method=method, layer=LAYER,
                               target=CaptionTarget(tokens))]
        out += [camlens.explain(model, (image, tokens), method=method, layer=LAYER,
                                target=CaptionTarget(tokens, words=[int(p)], whole=False))
                for p in words]
        return out

    return {"together": together, "one by one": one_by_one}


def time_jobs(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):
        order = list(fns) if r % 2 == 0 else list(reversed(fns))
        for name in order:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--words", default="4,8", help="K values: words explained per caption")
    parser.add_argument("--tokens", type=int, default=14, help="tokens per caption")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="write OUT.json and OUT.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Captioner().eval()
    method_sets = {"gradcam": ["gradcam"],
                   "cli set": ["guided-backprop", "gradcam", "guided-gradcam"]}
    rows = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        for k in [int(v) for v in args.words.split(",")]:
            for label, methods in method_sets.items():
                med = time_jobs(jobs(model, batch, k, args.tokens, methods), args.rounds)
                row = {"batch": batch, "words": k, "targets": k + 1, "methods": label,
                       "together_s": med["together"], "one_by_one_s": med["one by one"],
                       "speedup": med["one by one"] / med["together"]}
                rows.append(row)
                print(f"batch {batch:2d}  K={k:2d} (+ whole)  {label:8s}  together "
                      f"{row['together_s'] * 1e3:8.1f} ms  one by one "
                      f"{row['one_by_one_s'] * 1e3:8.1f} ms  x{row['speedup']:.2f}", flush=True)
    if args.out:
        meta = {"torch": torch.__version__, "threads": args.threads, "rounds": args.rounds,
                "tokens": args.tokens, "python": platform.python_version(),
                "machine": platform.machine()}
        Path(args.out + ".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
        lines = ["| batch | words K | methods | together (ms) | one by one (ms) | speed-up |",
                 "|---:|---:|---|---:|---:|---:|"]
        lines += [f"| {r['batch']} | {r['words']} | {r['methods']} | {r['together_s'] * 1e3:.1f}"
                  f" | {r['one_by_one_s'] * 1e3:.1f} | {r['speedup']:.2f}x |" for r in rows]
        Path(args.out + ".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
