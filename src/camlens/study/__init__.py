"""The paper's human studies (Sec. 5): class discrimination (5.1) and trust (5.2).

Build a study from a dataset and models (:mod:`camlens.study.build`), keep it with its
participants' answers in SQLite (:mod:`camlens.study.store`), serve it to participants
(:mod:`camlens.study.web`, the ``web`` extra) and summarise it (:mod:`camlens.study.results`,
:mod:`camlens.study.stats`)::

    camlens study create class-discrimination --data synthetic:seed=7,n=200,kind=two \\
        --model synthetic:vgg --db study.sqlite
    camlens study invite --db study.sqlite --n 72
    camlens serve --db study.sqlite
    camlens study results --db study.sqlite --csv responses.csv

See docs/studies.md.
"""

from camlens.study.build import (
    PAPER_CLASS_METHODS,
    PAPER_TRUST_METHODS,
    StudyPlan,
    class_discrimination,
    trust,
)
from camlens.study.results import StudyResults, summarise, write_csv
from camlens.study.store import (
    BadChoice,
    DuplicateResponse,
    StudyError,
    StudyStore,
    UnknownTrial,
)

__all__ = [
    "PAPER_CLASS_METHODS", "PAPER_TRUST_METHODS", "StudyPlan", "class_discrimination", "trust",
    "StudyResults", "summarise", "write_csv", "StudyStore", "StudyError", "DuplicateResponse",
    "UnknownTrial", "BadChoice", "create",
]


def create(path: str, plan: StudyPlan) -> tuple[StudyStore, str]:
    """Write ``plan`` to a new study database at ``path``; return the store and the admin
    token (printed once; only its hash is stored)."""
    return StudyStore.create(path, plan.study, plan.trials, plan.files)
