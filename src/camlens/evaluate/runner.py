"""Where the dataset-scale evaluation used to live, kept so existing imports keep working
(``from camlens.evaluate.runner import evaluate_localization``, ``add_evaluate_arguments``).
New code imports from :mod:`camlens.evaluate`; the parts now live in
:mod:`~camlens.evaluate.tasks` (the protocols), :mod:`~camlens.evaluate.explainer` (maps and
their cache), :mod:`~camlens.evaluate.model`, :mod:`~camlens.evaluate.store` (CSV and resume),
:mod:`~camlens.evaluate.report` (tables) and :mod:`~camlens.evaluate.cli` (options)."""

from camlens.evaluate.cli import add_evaluate_arguments, run_cli
from camlens.evaluate.datasets import ArraySample
from camlens.evaluate.explainer import MapCache, localization_maps
from camlens.evaluate.model import ResolvedModel, resolve_model, to_unit_tensor
from camlens.evaluate.report import (
    faithfulness_markdown,
    localization_markdown,
    pointing_markdown,
)
from camlens.evaluate.synthetic_data import load_synthetic_samples, scenes_to_samples
from camlens.evaluate.tasks import (
    FaithfulnessSummary,
    LocalizationSummary,
    PointingSummary,
    evaluate,
    evaluate_faithfulness,
    evaluate_localization,
    evaluate_pointing,
)
from camlens.evaluate.tasks.localization import scale_box

__all__ = [
    "ArraySample",
    "FaithfulnessSummary",
    "LocalizationSummary",
    "MapCache",
    "PointingSummary",
    "ResolvedModel",
    "add_evaluate_arguments",
    "evaluate",
    "evaluate_faithfulness",
    "evaluate_localization",
    "evaluate_pointing",
    "faithfulness_markdown",
    "load_synthetic_samples",
    "localization_maps",
    "localization_markdown",
    "pointing_markdown",
    "resolve_model",
    "run_cli",
    "scale_box",
    "scenes_to_samples",
    "to_unit_tensor",
]
