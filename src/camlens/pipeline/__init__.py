"""Running many items: read/decode -> batch by shape -> compute -> write.

:func:`run` is the local executor (threads overlap decoding and writing with compute); a
distributed executor is meant to offer the same call. :func:`progress_bar` is the one progress
display.
"""

from camlens.pipeline.executor import ITEM_FAILURES, Failure, Report, run
from camlens.pipeline.progress import progress_bar

__all__ = ["ITEM_FAILURES", "Failure", "Report", "progress_bar", "run"]
