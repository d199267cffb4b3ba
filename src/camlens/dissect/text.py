"""Textual explanations (Sec. 7): the units with the largest and smallest neuron importance
alpha_k^c (Eq. 1: alpha_k^c = 1/Z sum_ij dy^c/dA^k_ij) for a prediction, with their names
from a network dissection, as a sentence:

    "predicted tabby: evidence for striped (texture; unit 12, alpha 0.031), ...;
     evidence against sky (colour; unit 3, alpha -0.011), ..."

"For" lists up to ``k`` units of positive alpha, largest first; "against" up to ``k`` units of
negative alpha, most negative first (a unit with alpha 0 is neither).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from camlens.dissect.core import Dissection
from camlens.errors import LayerError

__all__ = ["UnitEvidence", "TextualExplanation", "TextPlan", "textual_explanation",
           "explain_text", "TOP"]

TOP = 5
"""Units per side (the paper shows the top-5 units)."""


@dataclass(frozen=True)
class UnitEvidence:
    """One unit in a sentence: its alpha_k^c and its name (None: unnamed or no dissection)."""

    unit: int
    alpha: float
    concept: str | None = None
    category: str | None = None
    iou: float | None = None

    def phrase(self, dissected: bool = True) -> str:
        """"striped (texture; unit 12, alpha +0.031)"; "unnamed (...)" for a unit the
        dissection left unnamed; "unit 12 (alpha +0.031)" without a dissection."""
        if not dissected:
            return f"unit {self.unit} (alpha {self.alpha:+.3g})"
        what = f"{self.concept} ({self.category}; " if self.concept else "unnamed ("
        return f"{what}unit {self.unit}, alpha {self.alpha:+.3g})"

    def short(self, dissected: bool = True) -> str:
        """"striped u12 +0.031" (for a picture panel)."""
        name = f"{self.concept or 'unnamed'} " if dissected else ""
        return f"{name}u{self.unit} {self.alpha:+.2g}"

    def to_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "alpha": self.alpha, "concept": self.concept,
                "category": self.category, "iou": self.iou}


@dataclass(frozen=True)
class TextualExplanation:
    """The sentence for class ``index`` (``name``) and the units behind it; ``missing`` says
    why units carry no names (no dissection for this model and layer), else None."""

    index: int
    name: str
    evidence_for: tuple[UnitEvidence, ...]
    evidence_against: tuple[UnitEvidence, ...]
    missing: str | None = None
    predicted: bool = True
    """the model's top-1 class ("predicted X: ..."), else "class X: ..." """

    @property
    def sentence(self) -> str:
        known = self.missing is None
        pro = ", ".join(u.phrase(known) for u in self.evidence_for) or "none"
        con = ", ".join(u.phrase(known) for u in self.evidence_against) or "none"
        return f"{self._lead()}: evidence for {pro}; evidence against {con}"

    def _lead(self) -> str:
        return f"{'predicted' if self.predicted else 'class'} {self.name}"

    def lines(self) -> list[str]:
        """The sentence as short lines, for summary.png's panel."""
        out = [self._lead(), "evidence for:"]
        known = self.missing is None
        out += [" " + u.short(known) for u in self.evidence_for] or [" none"]
        out += ["evidence against:"]
        out += [" " + u.short(known) for u in self.evidence_against] or [" none"]
        if self.missing:
            out.append("(no unit names: no dissection)")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "predicted": self.predicted,
                "sentence": self.sentence,
                "evidence_for": [u.to_dict() for u in self.evidence_for],
                "evidence_against": [u.to_dict() for u in self.evidence_against],
                **({"names_missing": self.missing} if self.missing else {})}


def textual_explanation(alphas: torch.Tensor | Sequence[float], index: int, name: str,
                        dissection: Dissection | None, *, k: int = TOP,
                        missing: str | None = None, predicted: bool = True
                        ) -> TextualExplanation:
    """The sentence for one class from its alphas (C,) over the layer's C units.
    ``dissection`` names the units (None: unnamed; say why in ``missing``)."""
    a = torch.as_tensor(alphas, dtype=torch.float64).flatten()
    if not torch.isfinite(a).all():
        raise ValueError("the neuron importances are not finite (NaN or Inf)")
    if dissection is not None and len(dissection) != a.numel():
        raise LayerError(f"the dissection names {len(dissection)} units of layer "
                         f"{dissection.layer!r}, but the explained layer has {a.numel()} "
                         "channels; dissect that layer (`camlens dissect --layer ...`)")
    order = torch.argsort(a, descending=True, stable=True).tolist()

    def unit(u: int) -> UnitEvidence:
        if dissection is None:
            return UnitEvidence(u, float(a[u]))
        n = dissection.units[u]
        return UnitEvidence(u, float(a[u]), n.concept, n.category,
                            round(n.iou, 4) if n.concept else None)

    pro = tuple(unit(u) for u in order[:k] if a[u] > 0)
    con = tuple(unit(u) for u in order[::-1][:k] if a[u] < 0)
    return TextualExplanation(index, name, pro, con, missing, predicted)


def explain_text(model: nn.Module, images: torch.Tensor, dissection: Dissection, *,
                 target: torch.Tensor | None = None, labels: Sequence[str] | None = None,
                 k: int = TOP) -> list[TextualExplanation]:
    """One sentence per image for ``target`` (B,) class indices (default: the top-1 class),
    from Grad-CAM's alphas at ``dissection.layer`` (:func:`camlens.explain`, so the model is
    left untouched)."""
    import camlens

    ex = camlens.explain(model, images, method="gradcam", layer=dissection.layer,
                         target=None if target is None else target.reshape(-1, 1),
                         top_k=None if target is not None else 1)
    assert ex.weights is not None and ex.targets is not None and ex.output is not None
    top1 = ex.output.argmax(dim=1)
    out = []
    for b in range(images.shape[0]):
        c = int(ex.targets[b, 0])
        out.append(textual_explanation(ex.weights[b, 0], c, labels[c] if labels else str(c),
                                       dissection, k=k, predicted=c == int(top1[b])))
    return out


@dataclass(frozen=True)
class TextPlan:
    """``camlens explain --text``: the dissection naming the Grad-CAM layer's units (None:
    none available, ``missing`` says why) and the units per side."""

    dissection: Dissection | None
    missing: str | None = None
    k: int = TOP

    def explain(self, alphas: torch.Tensor, index: int, name: str,
                predicted: bool = True) -> TextualExplanation:
        return textual_explanation(alphas, index, name, self.dissection, k=self.k,
                                   missing=self.missing, predicted=predicted)
