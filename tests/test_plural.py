"""camlens.plural.counted: the noun agrees with the number (the reports' count phrases)."""

from __future__ import annotations

import pytest

from camlens.plural import counted


@pytest.mark.parametrize("n, noun, plural, want", [
    (0, "image", None, "0 images"),
    (1, "image", None, "1 image"),
    (2, "image", None, "2 images"),
    (0, "top-5 failure", None, "0 top-5 failures"),
    (1, "top-5 failure", None, "1 top-5 failure"),
    (2, "top-5 failure", None, "2 top-5 failures"),
    (1, "match", "matches", "1 match"),
    (2, "match", "matches", "2 matches"),
    (0, "match", "matches", "0 matches"),
    (11, "step", None, "11 steps"),
    (21, "step", None, "21 steps"),               # English: only exactly one is singular
])
def test_counted(n: int, noun: str, plural: str | None, want: str) -> None:
    assert counted(n, noun, plural) == want
