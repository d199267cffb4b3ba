"""Decoding images on several threads while keeping what each decoder says with its image.

Hearing Pillow's warnings and what C libraries write to file descriptor 2 (libtiff) takes
process-wide state. :class:`Decoders` does it for a run that decodes on loader threads while
the caller's thread computes and a writer thread writes:

- Python warnings are routed by thread: one raised while a thread decodes becomes a note of
  that image; any other goes on to the warning display that was in place (under the lock);
- descriptor 2 is redirected only while one decoder holds :attr:`Decoders.lock`; everything
  the run prints goes through the same lock (:meth:`Decoders.say`), so no line of the run
  lands in an image's notes and no decoder chatter reaches the terminal.

>>> with Decoders() as decoders:          # on the caller's thread, around the run
...     img, notes = decoders.load(path)  # on any thread
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from PIL import Image

from camlens import io as cio

__all__ = ["Decoders"]


class Decoders:
    """The run-wide state for :meth:`load` on many threads (see the module docstring)."""

    def __init__(self, max_pixels: int | None = cio.DEFAULT_MAX_PIXELS) -> None:
        self.max_pixels = max_pixels
        self.lock = threading.RLock()
        """held while descriptor 2 is redirected; take it to print anything during the run"""
        self._local = threading.local()
        self._saved: warnings.catch_warnings | None = None
        self._show: Callable[..., Any] = warnings.showwarning

    def __enter__(self) -> Decoders:
        self._saved = warnings.catch_warnings()
        self._saved.__enter__()
        # each image gets its note, not only the first with the same words (Pillow's warnings)
        warnings.filterwarnings("always", module=r"PIL\b")
        self._show = warnings.showwarning
        warnings.showwarning = self._route
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._saved is not None, "Decoders.__exit__ without __enter__"
        self._saved.__exit__(kind, error, tb)
        self._saved = None

    def _route(self, message: Warning | str, category: type[Warning], filename: str,
               lineno: int, file: TextIO | None = None, line: str | None = None) -> None:
        sink: list[str] | None = getattr(self._local, "sink", None)
        if sink is None:
            with self.lock:
                self._show(message, category, filename, lineno, file, line)
        elif not issubclass(category, Image.DecompressionBombWarning):  # max_pixels rules
            sink.append(" ".join(str(message).split()))

    def say(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` under :attr:`lock`: for anything that prints during the run."""
        with self.lock:
            return fn(*args)

    def load(self, path: Path) -> tuple[Image.Image, list[str]]:
        """:func:`camlens.io.load_image` of ``path`` and what decoding said (each Python warning,
        and the decoder's stderr lines joined into one), one string each; safe on any thread
        inside the ``with`` block."""
        notes: list[str] = []
        c_lines: list[str] = []
        self._local.sink = notes
        try:
            with self.lock, cio.c_stderr_to(c_lines):
                img = cio.load_image(path, max_pixels=self.max_pixels)
        except cio.ImageError as exc:
            if not c_lines:
                raise
            raise cio.ImageError(f"{exc} ({cio.decoder_said(c_lines)})") from None
        finally:
            self._local.sink = None
        if c_lines:
            notes.append(cio.decoder_said(c_lines))
        return img, notes
