"""Count phrases whose noun agrees with the number, for reports and messages.

>>> counted(1, "top-5 failure"), counted(0, "image"), counted(2, "image")
('1 top-5 failure', '0 images', '2 images')
"""

from __future__ import annotations

__all__ = ["counted"]


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``"n noun"``: the singular for exactly 1, else ``plural`` (default ``noun + "s"``; give it
    for irregular nouns, e.g. ``counted(n, "match", "matches")``)."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"
