"""Sec. 8.2's measurements of answer maps, on held-out world v2 scenes.

For each scene one question is drawn (``default_rng((seed, i))``, :func:`pick_question`)
among those about objects in the scene (so "the objects the question is about" exist); the
model's top-1 answer a is explained (the decision being explained), and each method's map of
y^a is compared by Spearman rank correlation over the 112 x 112 pixels with

- the occlusion map of the same answer (mean drop of y^a when a ``window`` x ``window`` patch
  is filled with ``fill``, every ``stride`` pixels; paper: Grad-CAM 0.60 +- 0.038, Guided
  Backprop 0.42 +- 0.038);
- "human attention", here the 0/1 union of the exact masks of the objects the question names
  (:func:`camlens.synthetic.v2.words.named_classes`; paper, against VQA-HAT's human maps:
  Grad-CAM 0.136).

Maps are those of :func:`camlens.evaluate.explainer.localization_maps`: Grad-CAM's raw map
(Eq. 2) upsampled; pixel-space maps as the maximum over colour channels of |map|. One CSV row
per (scene, method), resumable (:class:`~camlens.evaluate.store.RowStore`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import camlens
from camlens.evaluate.explainer import localization_maps
from camlens.evaluate.faithfulness import rank_correlation
from camlens.evaluate.language import MeanSEM, mask_rank_correlation, mean_sem
from camlens.evaluate.store import RowStore
from camlens.synthetic.v2 import HELDOUT_SEED, Scene
from camlens.synthetic.v2.graph import QA
from camlens.synthetic.v2.spec import SyntheticSpec, parse_synthetic
from camlens.synthetic.v2.words import named_classes
from camlens.vqa.data import SCENE_KIND, SCENE_OBJECTS, images
from camlens.vqa.explain import FIG12
from camlens.vqa.model import DEFAULT_LAYER, Vocabulary, VQANet, load_bundled

__all__ = ["VQARow", "VQASummary", "PAPER_OCCLUSION", "PAPER_HUMAN", "pick_question",
           "compute_scene", "summarize", "evaluate_vqa", "evaluate_spec"]

#: The paper's rank correlations with occlusion (Sec. 8.2): mean, "+-".
PAPER_OCCLUSION: dict[str, tuple[float, float]] = {"gradcam": (0.60, 0.038),
                                                   "guided-backprop": (0.42, 0.038)}
#: The paper's rank correlation with human attention (VQA-HAT).
PAPER_HUMAN: dict[str, float] = {"gradcam": 0.136}


@dataclass(frozen=True)
class VQARow:
    """One scene and one method: the question, the model's answer (explained), the true
    answer, and the map's rank correlations (``rho_occlusion`` None for the occlusion map
    itself; NaN for a constant map)."""

    question: str
    kind: str
    answer: str
    truth: str
    method: str
    rho_occlusion: float | None
    rho_human: float


def pick_question(scene: Scene, rng: np.random.Generator) -> QA | None:
    """One question about objects of ``scene`` (the classes it names are present): a kind
    drawn uniformly among the kinds the scene asks such questions of, then a question of that
    kind (drawn among all questions, shape and position questions, one per part or pair,
    would outnumber colour questions six to one); None when the scene asks none."""
    present = {o.name for o in scene.objects}
    by_kind: dict[str, list[QA]] = {}
    for q in scene.graph().questions():
        if named_classes(q.question) & present:
            by_kind.setdefault(q.kind, []).append(q)
    if not by_kind:
        return None
    kind = sorted(by_kind)[int(rng.integers(len(by_kind)))]
    return by_kind[kind][int(rng.integers(len(by_kind[kind])))]


def compute_scene(model: VQANet, vocab: Vocabulary, scene: Scene, qa: QA, *,
                  methods: Sequence[str] = FIG12, window: int = 16, stride: int = 16,
                  fill: float = 0.0, layer: str = DEFAULT_LAYER) -> list[VQARow]:
    """The rows of one scene and question (module doc): one per method, and one for the
    occlusion map against human attention."""
    x = images([scene])
    words = vocab.encode([qa.question])
    with torch.no_grad():
        a = int(model(x, words).argmax(1))
    target = torch.tensor([[a]])
    size = (x.shape[-2], x.shape[-1])
    exs = camlens.explain(model, (x, words), method=list(methods), layer=layer, target=target)
    occ = camlens.explain(model, (x, words), method="occlusion", target=target, window=window,
                          stride=stride, fill=fill)
    occ_map = localization_maps(occ, size)[0, 0].numpy()
    objects = [(o.name, o.mask) for o in scene.objects]
    classes = named_classes(qa.question)
    rows = []
    for m in methods:
        hm = localization_maps(exs[m], size)[0, 0].numpy()
        rows.append(VQARow(qa.question, qa.kind, vocab.answers[a], qa.answer, m,
                           rank_correlation(hm, occ_map),
                           mask_rank_correlation(hm, classes, objects)))
    rows.append(VQARow(qa.question, qa.kind, vocab.answers[a], qa.answer, "occlusion", None,
                       mask_rank_correlation(occ_map, classes, objects)))
    return rows


@dataclass
class VQASummary:
    """Per method, mean +- standard error of the rank correlations (NaNs of constant maps left
    out and counted), with the model's accuracy on the questions asked."""

    methods: list[str]
    occlusion: dict[str, MeanSEM]
    human: dict[str, MeanSEM]
    accuracy: MeanSEM
    n: int
    window: int = 16
    stride: int = 16
    fill: float = 0.0
    seconds: float = 0.0
    resumed: int = 0
    csv_path: str | None = None
    per_kind_accuracy: dict[str, MeanSEM] = field(default_factory=dict)
    per_kind: dict[str, dict[str, MeanSEM]] = field(default_factory=dict)
    """kind -> ``"<method> occlusion"`` / ``"<method> human"`` -> mean +- s.e.m."""

    def markdown(self) -> str:
        """The table, ours beside the paper's."""
        def cell(v: MeanSEM | None) -> str:
            if v is None:
                return "-"
            lo, hi = v.ci95
            return f"{v.mean:.3f} +- {v.sem:.3f} [{lo:.3f}, {hi:.3f}]"

        def paper_occ(m: str) -> str:
            p = PAPER_OCCLUSION.get(m)
            return f"{p[0]:.2f} +- {p[1]:.3f}" if p else "-"

        lines = [
            f"VQA answer maps on {self.n} held-out world v2 scenes (one question each; the "
            f"model's answer explained; its accuracy on these questions "
            f"{self.accuracy.mean:.3f}); occlusion window {self.window}, stride "
            f"{self.stride}, fill {self.fill}. Mean +- s.e.m. [95% CI].",
            "",
            "| map | rank corr. with occlusion | paper | rank corr. with object masks "
            "(\"human attention\") | paper |",
            "|---|---|---|---|---|",
        ]
        for m in self.methods:
            ph = PAPER_HUMAN.get(m)
            lines.append(f"| {m} | {cell(self.occlusion.get(m))} | {paper_occ(m)} | "
                         f"{cell(self.human[m])} | {f'{ph:.3f}' if ph else '-'} |")
        if self.per_kind:
            lines += ["", "By question kind (mean +- s.e.m.):", "",
                      "| kind | n | accuracy | Grad-CAM / occlusion | Guided BP / occlusion | "
                      "Grad-CAM / masks | Guided BP / masks | occlusion / masks |",
                      "|---|---|---|---|---|---|---|---|"]
            for k, d in self.per_kind.items():
                acc = self.per_kind_accuracy[k]
                keys = ("gradcam occlusion", "guided-backprop occlusion", "gradcam human",
                        "guided-backprop human", "occlusion human")
                lines.append(f"| {k} | {acc.n} | {acc.mean:.2f} | " + " | ".join(
                    f"{d[x].mean:.3f} +- {d[x].sem:.3f}" if x in d else "-" for x in keys)
                    + " |")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        def d(v: MeanSEM) -> dict[str, Any]:
            return {"mean": v.mean, "sem": v.sem, "ci95": list(v.ci95), "n": v.n,
                    "skipped": v.skipped}
        return {"methods": self.methods, "n": self.n, "window": self.window,
                "stride": self.stride, "fill": self.fill, "seconds": self.seconds,
                "resumed": self.resumed, "csv_path": self.csv_path,
                "occlusion": {m: d(v) for m, v in self.occlusion.items()},
                "human": {m: d(v) for m, v in self.human.items()},
                "accuracy": d(self.accuracy),
                "per_kind_accuracy": {k: d(v) for k, v in self.per_kind_accuracy.items()}}


def summarize(scenes: Sequence[Sequence[VQARow]], **extra: Any) -> VQASummary:
    """Means +- s.e.m. over scenes, per method."""
    methods = list(dict.fromkeys(r.method for rows in scenes for r in rows))
    occ = {m: mean_sem(r.rho_occlusion for rows in scenes for r in rows if r.method == m)
           for m in methods if m != "occlusion"}
    human = {m: mean_sem(r.rho_human for rows in scenes for r in rows if r.method == m)
             for m in methods}
    firsts = [rows[0] for rows in scenes if rows]
    kinds = sorted({r.kind for r in firsts})
    per_kind = {k: {f"{m} {what}": mean_sem(getattr(r, f"rho_{what}") for rows in scenes
                                            for r in rows if r.kind == k and r.method == m)
                    for m in methods for what in ("occlusion", "human")
                    if not (m == "occlusion" and what == "occlusion")}
                for k in kinds}
    return VQASummary(methods, occ, human, mean_sem(r.answer == r.truth for r in firsts),
                      len(firsts), per_kind_accuracy={
                          k: mean_sem(r.answer == r.truth for r in firsts if r.kind == k)
                          for k in kinds}, per_kind=per_kind, **extra)


def evaluate_vqa(n: int = 200, *, model: VQANet | None = None, vocab: Vocabulary | None = None,
                 seed: int = HELDOUT_SEED, start: int = 0, methods: Sequence[str] = FIG12,
                 window: int = 16, stride: int = 16, fill: float = 0.0,
                 csv_path: str | os.PathLike[str] | None = None, resume: bool = True,
                 progress: bool = True, data: SyntheticSpec | None = None) -> VQASummary:
    """The measurements of the module doc on scenes ``start .. start+n-1`` of ``seed`` (default
    world v2's held-out seed; the VQA data's ``kind=multi,objects=1-4``), or on the scenes of
    ``data`` (a parsed ``synthetic:`` spec; it replaces n, seed and start), with ``model``
    (default the bundled net). Rows go to ``csv_path`` as each scene finishes; a rerun with the
    same configuration resumes."""
    from camlens.pipeline import progress_bar

    t0 = time.perf_counter()
    if (model is None) != (vocab is None):
        raise ValueError("give both model and vocab, or neither (the bundled net)")
    if model is None or vocab is None:
        model, vocab = load_bundled()
    if data is None and n < 1:
        raise ValueError(f"n must be a positive number of scenes, got {n}")
    spec = (SyntheticSpec(seed, n, start=start) if data is None else data).with_defaults(
        kind=SCENE_KIND, objects=SCENE_OBJECTS)
    seed, n, start = spec.seed, spec.n, spec.start
    config = {"task": "vqa", "questions": "kind first", "seed": seed, "methods": list(methods),
              "window": window, "stride": stride, "fill": fill, "layer": DEFAULT_LAYER,
              "answers": len(vocab.answers), "words": len(vocab.words),
              "weights": float(sum(float(p.double().sum()) for p in model.parameters()))}
    if (spec.kind, spec.objects, spec.cue_rate) != (SCENE_KIND, SCENE_OBJECTS, None):
        config["scenes"] = str(spec)  # the VQA data's own scenes keep the old configuration
    store = RowStore(csv_path, VQARow, config, resume)
    ids = [f"scene{seed}-{i}" for i in range(start, start + n)]
    resumed = sum(1 for k in ids if k in store.done)
    with store, progress_bar(n, "vqa", enabled=progress, initial=resumed) as bar:
        for j, (k, i) in enumerate(zip(ids, range(start, start + n))):
            if k in store.done:
                continue
            scene = spec.scene(j)
            qa = pick_question(scene, np.random.default_rng((seed, i)))
            rows = ([] if qa is None else
                    compute_scene(model, vocab, scene, qa, methods=methods, window=window,
                                  stride=stride, fill=fill))
            store.add(k, rows)
            bar.update(1)
    done = [store.done[k] for k in ids if k in store.done]
    return summarize(done, window=window, stride=stride, fill=fill,
                     seconds=time.perf_counter() - t0, resumed=resumed,
                     csv_path=None if csv_path is None else str(csv_path))


def evaluate_spec(data: str, model: Any = None, **kwargs: Any) -> VQASummary:
    """:func:`evaluate_vqa` from ``camlens evaluate vqa`` arguments: ``data`` is
    ``synthetic:seed=S,n=N[,...]`` (:func:`camlens.synthetic.parse_synthetic`; kind default the
    VQA data's ``multi`` with ``objects=1-4``; ``seed=20251`` is the held-out seed); ``model``
    None or ``"bundled"`` (the shipped net) or a folder with ``vqa.pt`` and ``vocab.json``."""
    spec = parse_synthetic(data)
    net, vocab = load_bundled(None if model in (None, "bundled") else model)
    return evaluate_vqa(model=net, vocab=vocab, data=spec, **kwargs)
