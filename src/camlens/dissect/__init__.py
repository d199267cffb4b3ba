"""Textual explanations with Grad-CAM (Sec. 7): network dissection names a layer's units with
concepts, Grad-CAM's neuron importances alpha_k^c pick the units behind a prediction.

>>> from camlens.dissect import WorldV2Concepts, dissect, explain_text, shipped
>>> d = dissect(model, WorldV2Concepts(500), "features.18")    # name every unit
>>> d.units[12].label                                             # "striped (texture)"
>>> explain_text(model, images, shipped("vgg"))[0].sentence       # "predicted tabby: ..."

Datasets: :class:`WorldV2Concepts` (world v2's part, shape, colour and texture maps) and
:class:`BrodenConcepts` (Broden's on-disk format). ``camlens dissect`` writes an HTML report;
``camlens explain --text`` adds the sentence to summary.png and explanation.json, and
``camlens serve`` to its result pages (both find the dissection with :func:`text_plan`).
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
from camlens.errors import LayerError

__all__ = [
    "dissect", "Dissection", "UnitName", "TopQuantile", "QUANTILE", "MIN_IOU",
    "Concept", "ConceptData", "Sample", "WorldV2Concepts", "BrodenConcepts", "DISSECT_SEED",
    "WORLD_CATEGORIES", "TextualExplanation", "TextPlan", "UnitEvidence", "textual_explanation",
    "explain_text", "TOP", "SHIPPED_DIR", "shipped", "shipped_path", "text_plan",
]

#: Dissections of the world v2 nets' Grad-CAM layers, computed by ``camlens dissect``.
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"


def shipped_path(net: str) -> Path:
    """The shipped dissection file of world v2 net ``net`` (may not exist)."""
    return SHIPPED_DIR / f"{net}.json"


def shipped(net: str) -> Dissection:
    """The shipped dissection of world v2 net ``net``'s default Grad-CAM layer."""
    return Dissection.load(shipped_path(net))


def text_plan(model: str, layer: str | None, dissection: str | Path | None = None) -> TextPlan:
    """The dissection that names the units of ``model``'s Grad-CAM ``layer`` (``model``: a
    :func:`camlens.models.load_model` spec such as ``synthetic:vgg``): the file ``dissection``
    when given (:class:`~camlens.errors.DataError` when it is not one,
    :class:`~camlens.errors.LayerError` when it names another layer's units), else the shipped
    one of a world v2 net at its default layer, else none: ``TextPlan(None, missing=why)``."""
    from camlens.synthetic.v2 import DEFAULT_LAYERS

    if dissection is not None:
        d = Dissection.load(dissection)
        if d.layer != layer:
            raise LayerError(f"--dissection {dissection} names the units of layer {d.layer!r}, "
                             f"but Grad-CAM reads {layer!r}; give the dissection of {layer}")
        return TextPlan(d)
    net = model.split(":", 1)[1] if model.startswith("synthetic:") else None
    if net is not None and DEFAULT_LAYERS.get(net) == layer and shipped_path(net).is_file():
        return TextPlan(Dissection.load(shipped_path(net)))
    why = (f"no dissection of {model} layer {layer}: camlens ships unit names only for the "
           "world v2 nets' (synthetic:NAME) Grad-CAM layers"
           + (", and has no concept-annotated dataset for ImageNet models such as "
              "efficientnet_lite0: dissect the layer on Broden (`camlens dissect --data "
              "broden:DIR`) and pass --dissection" if net is None else
              ": run `camlens dissect` on that layer and pass --dissection"))
    return TextPlan(None, missing=why)
