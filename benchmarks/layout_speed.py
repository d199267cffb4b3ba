#!/usr/bin/env python3
"""camlens alone, ``channels_last=True`` against ``channels_last=False``: VGG-16 and ResNet-50
(torchvision, random weights), batch 1 and 16, Grad-CAM and HiResCAM. Paired runs alternate in
one process (the order flips every pair); prints the median of each and the median of the
per-pair ratios False / True. Output: benchmarks/results/layout_speed.txt

    cd benchmarks && PYTHONPATH=../src nice -n 19 /tmp/benchvenv/bin/python layout_speed.py [pairs]
"""

import gc
import os
import statistics
import sys
import time

import run
import torch

import camlens

PAIRS = int(sys.argv[1]) if len(sys.argv) > 1 else 5


def call(model: torch.nn.Module, x: torch.Tensor, method: str, layer: str, target: torch.Tensor,
         cl: bool) -> float:
    t0 = time.perf_counter()
    camlens.explain(model, x, method=method, layer=layer, target=target, channels_last=cl)
    return time.perf_counter() - t0


torch.set_num_threads(2)
print(f"torch {torch.__version__}, 2 threads, {PAIRS} pairs, load average at start "
      f"{os.getloadavg()}", flush=True)
for name in ("resnet50", "vgg16"):
    model, layer = run.build_model(name)
    for batch in (1, 16):
        x = run.make_input(batch)
        t1, _ = run.targets_of(model, x)
        for method in ("gradcam", "hirescam"):
            args = (model, x, method, layer, t1)
            times: dict[bool, list[float]] = {True: [], False: []}
            call(*args, True), call(*args, False)  # warm-up
            for i in range(PAIRS):
                for cl in ((True, False) if i % 2 == 0 else (False, True)):
                    times[cl].append(call(*args, cl))
            ratio = statistics.median(f / t for f, t in zip(times[False], times[True]))
            print(f"{name} b{batch} {method}: channels_last=True "
                  f"{1000 * statistics.median(times[True]):,.1f} ms, False "
                  f"{1000 * statistics.median(times[False]):,.1f} ms, paired False/True "
                  f"{ratio:.3f}, load {os.getloadavg()[0]:.2f}", flush=True)
    del model
    gc.collect()
