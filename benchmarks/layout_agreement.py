#!/usr/bin/env python3
"""VGG-16, batch 16, HiResCAM and LayerCAM: camlens in its default layout (channels-last on
CPU) and with ``channels_last=False`` against pytorch-grad-cam, as benchmarks/run.py compares
maps (min-max scaled, at input size). Output: benchmarks/results/layout_agreement_vgg16_b16.txt

    PYTHONPATH=src /tmp/benchvenv/bin/python benchmarks/layout_agreement.py
"""

import copy

import run
import torch
from peers import camlens_call, pgc_call

torch.set_num_threads(2)
model, layer = run.build_model("vgg16")
x = run.make_input(16)
t1, _ = run.targets_of(model, x)
peer_model = copy.deepcopy(model)  # pytorch-grad-cam leaves hooks on its model
for kind in ("hirescam", "layercam"):
    ref = run.canon("pytorch-grad-cam", kind, pgc_call(kind, peer_model, layer, x, t1)())
    for layout in (None, False):
        out = run.canon("camlens", kind,
                        camlens_call(kind, model, layer, x, t1, channels_last=layout)())
        print(kind, "channels_last", layout, run.agreement(out, ref), flush=True)
