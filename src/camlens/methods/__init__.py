"""The registered methods. :data:`METHODS` (name -> :class:`Method`) drives ``explain``, the
CLI's choices and the parametrised tests; see :mod:`camlens.methods.registry`."""

from camlens.methods import (  # noqa: F401 - they register themselves
    camfamily,
    excitation,
    gradcam,
    occlusion,
    perturbation,
    pixel,
)
from camlens.methods.registry import METHODS, Job, Method, Option, OptionError, preset, register

FIGURE1 = ("guided-backprop", "gradcam", "guided-gradcam", "counterfactual-gradcam")
"""The paper's Figure 1 set: the CLI's default methods and the columns of ``summary.png``."""

__all__ = ["FIGURE1", "METHODS", "Job", "Method", "Option", "OptionError", "preset", "register"]
