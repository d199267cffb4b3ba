"""Measured statistics of world v2 (for docs/world.md): object scale against the ILSVRC and
PASCAL targets, objects per scene, parts, and generation speed.

    python -m camlens.synthetic.v2.stats [--n 2000] [--seed 777]

Object scale = box area / image area (the box of the visible pixels), as in the ILSVRC
analysis; generation speed is scenes per second in this one process (numpy is single-threaded
here), ground truth and concept maps included.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from camlens.synthetic.v2.catalogue import CLASSES, NUM_CLASSES
from camlens.synthetic.v2.world import KINDS, SCALE_TARGETS, make_scene

__all__ = ["measure", "target_quantiles"]

_Q = (0.1, 0.25, 0.5, 0.75, 0.9)


def target_quantiles(name: str, n: int = 400_000) -> list[float]:
    """Quantiles :data:`_Q` of the truncated Beta target ``name`` (by sampling, seed 0)."""
    t = SCALE_TARGETS[name]
    a, b = t["beta"]
    d = np.random.default_rng(0).beta(a, b, size=n)
    lo, hi = t["range"]
    d = d[(d >= lo) & (d <= hi)]
    return [round(float(q), 3) for q in np.quantile(d, _Q)]


def _summary(fr: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    per_class = [fr[labels == c].mean() for c in range(NUM_CLASSES) if (labels == c).any()]
    return {
        "boxes": int(fr.size), "mean": round(float(fr.mean()), 3),
        "per_class_mean": round(float(np.mean(per_class)), 3),
        "quantiles": [round(float(q), 3) for q in np.quantile(fr, _Q)],
        "share_over_half": round(float((fr > 0.5).mean()), 3),
        "share_under_tenth": round(float((fr < 0.1).mean()), 3),
    }


def measure(n: int = 2000, seed: int = 777) -> dict[str, Any]:
    """Scale summaries (single scenes against ``ilsvrc``, multi against ``pascal``), objects
    per scene and scenes per second for every kind, parts per object, class counts."""
    out: dict[str, Any] = {"n": n, "seed": seed, "kinds": {}}
    for kind in KINDS:
        m = n if kind == "single" else max(n // 4, 1)
        fr, labels, counts, parts = [], [], [], []
        t0 = time.perf_counter()
        scenes = [make_scene(np.random.default_rng((seed, i)), kind=kind) for i in range(m)]
        rate = m / (time.perf_counter() - t0)
        for s in scenes:
            h, w = s.size
            counts.append(len(s.objects))
            for o in s.objects:
                x0, y0, x1, y1 = o.box
                fr.append((x1 - x0 + 1) * (y1 - y0 + 1) / (h * w))
                labels.append(o.label)
                parts.append(len(o.parts))
        rec = _summary(np.array(fr), np.array(labels))
        rec.update(scenes=m, scenes_per_second=round(rate, 1),
                   objects_per_scene=round(float(np.mean(counts)), 2),
                   visible_parts_per_object=round(float(np.mean(parts)), 2))
        if kind == "single":
            rec["class_counts_min_max"] = [int(np.bincount(labels, minlength=NUM_CLASSES).min()),
                                           int(np.bincount(labels, minlength=NUM_CLASSES).max())]
        out["kinds"][kind] = rec
    out["targets"] = {k: {"mean": v["mean"], "beta": list(v["beta"]), "range": list(v["range"]),
                          "quantiles": target_quantiles(k)} for k, v in SCALE_TARGETS.items()}
    return out


def _markdown(r: dict[str, Any]) -> str:
    rows = ["| Scenes | Boxes | Mean scale | Per-class mean | Quantiles 10/25/50/75/90% | "
            "> 0.5 | < 0.1 | Objects / scene | Scenes / s |", "|---|---:|---:|---:|---|---:|"
            "---:|---:|---:|"]
    for kind, k in r["kinds"].items():
        q = " / ".join(f"{v:.3f}" for v in k["quantiles"])
        rows.append(f"| {kind} | {k['boxes']} | {k['mean']:.3f} | {k['per_class_mean']:.3f} | "
                    f"{q} | {k['share_over_half']:.3f} | {k['share_under_tenth']:.3f} | "
                    f"{k['objects_per_scene']} | {k['scenes_per_second']} |")
    for name, t in r["targets"].items():
        q = " / ".join(f"{v:.3f}" for v in t["quantiles"])
        rows.append(f"| target {name} (Beta{tuple(t['beta'])} in {tuple(t['range'])}) | | "
                    f"{t['mean']:.3f} | | {q} | | | | |")
    return "\n".join(rows) + f"\n\n{len(CLASSES)} classes; seed {r['seed']}."


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="single scenes (other kinds: n / 4)")
    p.add_argument("--seed", type=int, default=777)
    args = p.parse_args()
    print(_markdown(measure(args.n, args.seed)))
