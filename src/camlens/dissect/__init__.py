"""Textual explanations with Grad-CAM (Sec. 7): network dissection names a layer's units with
concepts, Grad-CAM's neuron importances alpha_k^c pick the units behind a prediction.

>>> from camlens.dissect import WorldV2Concepts, dissect, explain_text, shipped
>>> d = dissect(model, WorldV2Concepts(500), "features.18")    # name every unit
>>> d.units[12].label                                             # "striped (texture)"
>>> explain_text(model, images, shipped("vgg"))[0].sentence       # "predicted tabby: ..."

Datasets: :class:`WorldV2Concepts` (world v2's part, shape, colour and texture maps) and
:class:`BrodenConcepts` (Broden's on-disk format). ``camlens dissect`` writes an HTML report;
``camlens explain --text`` adds the sentence to summary.png and explanation.json.
"""

from __future__ import annotations

from pathlib import Path

from camlens.dissect.core import MIN_IOU, QUANTILE, Dissection, TopQuantile, UnitName, dissect
from camlens.dissect.data import (
    DISSECT_SEED,
    WORLD_CATEGORIES,
    BrodenConcepts,
    Concept,
    ConceptData,
    Sample,
    WorldV2Concepts,
)
from camlens.dissect.text import (
    TOP,
    TextPlan,
    TextualExplanation,
    UnitEvidence,
    explain_text,
    textual_explanation,
)

__all__ = [
    "dissect", "Dissection", "UnitName", "TopQuantile", "QUANTILE", "MIN_IOU",
    "Concept", "ConceptData", "Sample", "WorldV2Concepts", "BrodenConcepts", "DISSECT_SEED",
    "WORLD_CATEGORIES", "TextualExplanation", "TextPlan", "UnitEvidence", "textual_explanation",
    "explain_text", "TOP", "SHIPPED_DIR", "shipped", "shipped_path",
]

#: Dissections of the world v2 nets' Grad-CAM layers, computed by ``camlens dissect``.
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"


def shipped_path(net: str) -> Path:
    """The shipped dissection file of world v2 net ``net`` (may not exist)."""
    return SHIPPED_DIR / f"{net}.json"


def shipped(net: str) -> Dissection:
    """The shipped dissection of world v2 net ``net``'s default Grad-CAM layer."""
    return Dissection.load(shipped_path(net))
