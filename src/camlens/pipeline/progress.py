"""The one progress display: a tqdm bar on stderr."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal (False for files, pipes, closed streams)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_bar(total: int | None, desc: str = "", *, enabled: bool = True,
                 initial: int = 0, stream: TextIO | None = None, unit: str = "it",
                 leave: bool = True) -> tqdm:
    """A tqdm bar over ``total`` items (``None``: unknown), starting at ``initial`` (items
    already done, e.g. resumed). Redrawn in place on a terminal; elsewhere (a log file) at
    most every 10 s. ``enabled=False`` draws nothing; ``leave=False`` erases it at the end.
    Use it as a context manager."""
    out = stream or sys.stderr
    tty = is_terminal(out)
    return tqdm(total=total, desc=desc, initial=initial, disable=not enabled, file=out,
                mininterval=0.2 if tty else 10.0, dynamic_ncols=tty, leave=leave, unit=unit)
