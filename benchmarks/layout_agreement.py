#!/usr/bin/env python3
"""VGG-16, batch 16, HiResCAM and LayerCAM: camlens with ``channels_last=True`` (a channels-last
copy of the input) and with ``channels_last=False`` (the default: the caller's layout) against
pytorch-grad-cam, as benchmarks/run.py compares maps (min-max scaled, at input size).
Output: benchmarks/results/layout_agreement_vgg16_b16.txt. Why they differ:
benchmarks/layout_cause.py.

    cd benchmarks && PYTHONPATH=../src nice -n 19 /tmp/benchvenv/bin/python layout_agreement.py
"""

import gc

import run
import torch
from peers import camlens_call, pgc_call

torch.set_num_threads(2)
KINDS = ("hirescam", "layercam")
# pytorch-grad-cam first, on its own copy of the model (it leaves hooks and .grad on it), freed
# before camlens's copy is built (run.build_model seeds the weights: the two are equal), so the
# process holds one VGG-16 at a time
peer_model, layer = run.build_model("vgg16")
x = run.make_input(16)
t1, _ = run.targets_of(peer_model, x)
refs = {kind: run.canon("pytorch-grad-cam", kind, pgc_call(kind, peer_model, layer, x, t1)())
        for kind in KINDS}
del peer_model
gc.collect()
model, _ = run.build_model("vgg16")
for kind in KINDS:
    for layout in (True, False):
        out = run.canon("camlens", kind,
                        camlens_call(kind, model, layer, x, t1, channels_last=layout)())
        print(kind, "channels_last", layout, run.agreement(out, refs[kind]), flush=True)
