#!/usr/bin/env python3
"""Cross-check camlens.segment's exact dense CRF against pydensecrf (Kraehenbuehl's C++ code,
permutohedral-lattice filtering), when it is importable (it is not a camlens dependency:
``pip install pydensecrf2`` builds it from source).

A 28x28 four-block colour image with noisy unaries over 4 labels; both run with the same kernel
(pydensecrf's positions are in grid cells, so sxy = theta / cell; compat = the kernel weight;
NO_NORMALIZATION, Potts). Prints the mean and largest |Q_ours - Q_pydensecrf| and how often
their labellings agree. The differences are the lattice's approximation.

    python benchmarks/crf_vs_pydensecrf.py
"""

from __future__ import annotations

import numpy as np
import torch

from camlens.segment.crf import CRFParams, mean_field


def main() -> int:
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        print("pydensecrf is not installed (pip install pydensecrf2); nothing to compare")
        return 0
    rng = np.random.default_rng(0)
    h = w = 28
    n_labels, cell = 4, 4.0
    img = np.zeros((h, w, 3), np.uint8)
    truth = np.zeros((h, w), int)
    for k, (ys, xs, colour) in enumerate([(slice(0, 14), slice(0, 14), (200, 30, 30)),
                                          (slice(0, 14), slice(14, 28), (30, 200, 30)),
                                          (slice(14, 28), slice(0, 14), (30, 30, 200)),
                                          (slice(14, 28), slice(14, 28), (200, 200, 30))]):
        img[ys, xs] = colour
        truth[ys, xs] = k
    logits = rng.normal(size=(n_labels, h, w)) + (np.arange(n_labels)[:, None, None] == truth)
    p = np.exp(logits) / np.exp(logits).sum(0)
    unary = -np.log(p).astype(np.float32)
    for params in (CRFParams(iterations=5),
                   CRFParams(w_app=0.05, theta_alpha=40, theta_beta=20, w_smooth=0.05,
                             theta_gamma=6, iterations=5)):
        d = dcrf.DenseCRF2D(w, h, n_labels)
        d.setUnaryEnergy(np.ascontiguousarray(unary.reshape(n_labels, -1)))
        d.addPairwiseGaussian(sxy=params.theta_gamma / cell, compat=params.w_smooth,
                              kernel=dcrf.DIAG_KERNEL, normalization=dcrf.NO_NORMALIZATION)
        d.addPairwiseBilateral(sxy=params.theta_alpha / cell, srgb=params.theta_beta,
                               rgbim=np.ascontiguousarray(img), compat=params.w_app,
                               kernel=dcrf.DIAG_KERNEL, normalization=dcrf.NO_NORMALIZATION)
        q_ref = np.array(d.inference(params.iterations)).reshape(n_labels, h, w)
        image = torch.from_numpy(img).permute(2, 0, 1)[None].double() / 255
        q = mean_field(torch.from_numpy(unary)[None].double(), image, params, cell=cell)[0]
        q = q.numpy()
        print(f"{params}: mean |dQ| {np.abs(q - q_ref).mean():.4f}, max "
              f"{np.abs(q - q_ref).max():.3f}, labels agree "
              f"{(q.argmax(0) == q_ref.argmax(0)).mean():.4f}; pixel accuracy unaries "
              f"{(p.argmax(0) == truth).mean():.3f}, ours {(q.argmax(0) == truth).mean():.3f}, "
              f"pydensecrf {(q_ref.argmax(0) == truth).mean():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
