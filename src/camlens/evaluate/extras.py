"""Optional dependencies of the evaluations (the ``eval`` extra: scipy, pycocotools).

The core of camlens needs only torch, numpy and Pillow; the metrics that lean on a maintained
library import it when they first run, through :func:`require`, so ``import camlens.evaluate``
works without them and a missing one says how to install it.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (e.g. ``"scipy.ndimage"``) or raise ImportError naming ``purpose`` and
    the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        raise ImportError(
            f"{purpose} needs {top}, which is not installed: pip install camlens[eval] "
            f"(or pip install {top})"
        ) from err
