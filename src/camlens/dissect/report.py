"""Sec. 7 measured on world v2: are the names of the units behind a prediction the predicted
class's defining concepts?

For each held-out scene the net predicts class c; its top-5 units by alpha_k^c (Eq. 1) are
looked up in the shipped dissection; a unit is a *hit* when its name is one of c's defining
concepts (:func:`defining_concepts`: its parts, their shapes, its fixed colours and its
textures, from :mod:`camlens.synthetic.v2.catalogue`). Baseline: 5 units drawn at random
from the layer, whose expected hit rate is exactly (units named with a defining concept of
c) / (units). Intervals: 95% percentile bootstrap over scenes (1000 resamples).

    python -m camlens.dissect.report [--quick]     # prints the markdown section
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import torch

import camlens
from camlens.dissect import TOP, Dissection, shipped, shipped_path

__all__ = ["defining_concepts", "Measure", "measure", "row", "table", "section", "NETS"]

NETS = ("vgg", "vgg_gap", "alexnet", "resnet")
BOOTSTRAP = 1000


def defining_concepts(label: int) -> dict[str, set[str]]:
    """Class ``label``'s defining concepts per category: ``part`` (the parts its family
    builds for it), ``shape`` (their shapes), ``colour`` (the fixed colour names of its spec,
    second colours of its textures included; random paint (vehicles, crockery) is not
    defining) and ``texture`` (its patterns other than plain)."""
    from camlens.synthetic.v2.catalogue import _ANY, CLASS_SPECS, FAMILIES

    spec = CLASS_SPECS[label]
    builder, ranges, _ = FAMILIES[spec.group]
    g = {k: (lo + hi) / 2 for k, (lo, hi) in {**ranges, **spec.geometry}.items()}
    parts = builder(g, np.random.default_rng(0))
    colours: set[str] = set()
    for value in spec.colours.values():
        names = (value,) if isinstance(value, str) else tuple(value)
        if tuple(names) == _ANY:
            continue
        colours |= {n for n in names if n and not n.startswith("=")}
    colours |= {t[1] for t in spec.textures.values()}
    return {"part": {p[0] for p in parts}, "shape": {p[1] for p in parts},
            "colour": colours, "texture": {t[0] for t in spec.textures.values()}}


@dataclass(frozen=True)
class Measure:
    """One net's numbers (rates are shares of the 5 unit slots per scene)."""

    net: str
    layer: str
    scenes: int
    accuracy: float
    named_units: int
    units: int
    top_hit: float
    top_ci: tuple[float, float]
    random_hit: float
    random_ci: tuple[float, float]
    diff_ci: tuple[float, float]
    top_named: float
    random_named: float
    hits_by_category: dict[str, int]
    predictions: tuple[int, ...] = ()


def _ci(values: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    idx = rng.integers(0, len(values), size=(BOOTSTRAP, len(values)))
    means = values[idx].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def measure(net: str, scenes: int = 330, *, dissection: Dissection | None = None,
            batch_size: int = 32, seed: int | None = None) -> Measure:
    """The hit rates of ``net``'s top-5 units on ``scenes`` held-out single scenes."""
    from camlens.synthetic.v2 import (
        CLASSES,
        HELDOUT_SEED,
        load_pretrained,
        make_dataset,
        to_tensors,
    )

    d = dissection or shipped(net)
    model = load_pretrained(net)
    defs = [defining_concepts(c) for c in range(len(CLASSES))]
    hit_top, hit_rand, named_top, rows_cat = [], [], [], {"part": 0, "shape": 0, "colour": 0,
                                                         "texture": 0}
    correct = 0
    preds: list[int] = []
    named = np.array([u.concept is not None for u in d.units])
    for start in range(0, scenes, batch_size):
        x, y = to_tensors(make_dataset(min(batch_size, scenes - start),
                                       seed=HELDOUT_SEED if seed is None else seed,
                                       start=start))
        ex = camlens.explain(model, x, method="gradcam", layer=d.layer, top_k=1)
        assert ex.weights is not None and ex.targets is not None
        for b in range(x.shape[0]):
            c = int(ex.targets[b, 0])
            correct += int(c == int(y[b]))
            preds.append(c)
            good = np.array([u.concept is not None and u.concept in defs[c].get(u.category or "",
                                                                               set())
                             for u in d.units])
            top = torch.argsort(ex.weights[b, 0], descending=True, stable=True)[:TOP].numpy()
            hit_top.append(good[top].mean())
            named_top.append(named[top].mean())
            hit_rand.append(good.mean())
            for u in top:
                if good[u]:
                    rows_cat[d.units[u].category or ""] += 1
    rng = np.random.default_rng(0)
    t, r = np.array(hit_top), np.array(hit_rand)
    return Measure(net, d.layer, scenes, correct / scenes, len(d.named()), len(d),
                   float(t.mean()), _ci(t, rng), float(r.mean()), _ci(r, rng), _ci(t - r, rng),
                   float(np.mean(named_top)), float(named.mean()), rows_cat, tuple(preds))


def row(m: Measure) -> str:
    """One net's row of :func:`table`."""
    cats = ", ".join(f"{k} {v}" for k, v in m.hits_by_category.items() if v)
    return (f"| {m.net} | {m.layer} | {m.named_units}/{m.units} | {m.accuracy:.2f} | "
            f"**{m.top_hit:.3f}** [{m.top_ci[0]:.3f}, {m.top_ci[1]:.3f}] | "
            f"{m.random_hit:.3f} [{m.random_ci[0]:.3f}, {m.random_ci[1]:.3f}] | "
            f"{m.diff_ci[0]:+.3f} to {m.diff_ci[1]:+.3f} | {m.top_named:.2f} / "
            f"{m.random_named:.2f} | {cats} |")


def table(measures: list[Measure]) -> str:
    """The markdown section for ``measures`` (one per net)."""
    scenes = sorted({m.scenes for m in measures})
    heads = []
    for m in measures:
        d = shipped(m.net)
        heads.append(f"{m.net}: {d.images} scenes")
    return "\n".join([
        "## Textual explanations (Sec. 7): do the top units' names fit the class?",
        "",
        "The paper shows textual explanations qualitatively (Fig. 9, VGG-16 on Places365, "
        "neuron names from Network Dissection on Broden, IoU threshold 0.05) and reports no "
        "number: its top units' names are 'descriptive of' the predicted class (e.g. water "
        "and stratified for waterfall). Here, on world v2, a unit's name is a hit when it is "
        "one of the predicted class's defining concepts (its parts, their shapes, its fixed "
        "colours and textures). Dissections (shipped; world v2, top quantile 0.005, IoU > "
        f"0.05): {', '.join(heads) or 'none'}. Held-out single scenes per net: "
        f"{', '.join(map(str, scenes))}; intervals: 95% bootstrap over scenes.",
        "",
        "| net | layer | named units | top-1 acc. | top-5 units: hit rate | random 5 units: "
        "hit rate | difference (95% CI) | named share top-5 / random | hits by category |",
        "|---|---|---|---|---|---|---|---|---|",
        *[row(m) for m in measures],
        "",
    ])


def section(quick: bool = False) -> str:
    """The markdown section for the reproduction report (``quick``: 66 scenes per net, else
    330), from the shipped dissections (``camlens dissect --data synthetic:seed=20252,n=N``)."""
    scenes = 66 if quick else 330
    return table([measure(n, scenes) for n in NETS if shipped_path(n).is_file()])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true")
    print(section(p.parse_args(argv).quick))


if __name__ == "__main__":
    main()
