"""camlens's synthetic world (world v2, :mod:`camlens.synthetic.v2`): a synthetic ImageNet with
exact ground truth, and the paper's four nets trained on it.

>>> from camlens.synthetic import load_pretrained, make_dataset, to_tensors, DEFAULT_LAYERS
>>> model = load_pretrained("vgg")                   # eval mode, float32; vgg_gap, alexnet, resnet
>>> x, y = to_tensors(make_dataset(8, seed=20251))   # (8, 3, 112, 112) in [0, 1], (8,) classes
>>> logits = model(x)                                # single-label: softmax over 33 classes

Shipped weights are ``v2/weights/<name>.pt`` with their held-out errors in
``v2/weights/accuracy.json``; ``python -m camlens.synthetic.v2.train`` rebuilds them. See
docs/world.md.
"""

from __future__ import annotations

from camlens.synthetic.v2 import *  # noqa: F403
from camlens.synthetic.v2 import __all__  # noqa: F401
