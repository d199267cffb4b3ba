"""Diagnosing classifiers with Grad-CAM (the paper's Sec. 6): failure modes, adversarial
noise, dataset bias. Each writes a report a person reads (report.html) and JSON/CSV.

>>> from camlens.diagnose import load_items, load_record, diagnose_failures
>>> rec = load_record("synthetic:vgg")
>>> items = load_items("synthetic:seed=1,n=100")            # world v2: exact ground truth
>>> summary = diagnose_failures(rec, items, "failures/")    # failures/report.html

Also :func:`adversarial_study` (with :func:`targeted_attack`), :func:`bias_study` (with
:func:`mass_shares`, :func:`rank_regions`), and ``camlens diagnose failures|adversarial|bias``.
"""

from camlens.diagnose.adversarial import (
    AttackResult,
    adversarial_study,
    choose_targets,
    targeted_attack,
)
from camlens.diagnose.bias import bias_study, mass_shares, rank_regions, read_regions
from camlens.diagnose.data import Item, items_from_scenes, load_items, load_record
from camlens.diagnose.failures import (
    ConfusionGroup,
    Failure,
    Prediction,
    diagnose_failures,
    find_failures,
    group_failures,
)

__all__ = [
    "Item", "load_items", "items_from_scenes", "load_record", "Prediction", "Failure",
    "ConfusionGroup", "find_failures", "group_failures", "diagnose_failures", "AttackResult",
    "targeted_attack", "choose_targets", "adversarial_study", "mass_shares", "rank_regions",
    "read_regions", "bias_study",
]
