"""Targets for vision-language models (Sec. 8): captions under teacher forcing and VQA answers.

They are callable targets ``f(output) -> (B, K)`` with a per-sample form ``at(s)``
(:class:`camlens.targets.SampleTarget`), so every method runs unchanged on them and all K
scores of a call come from one forward pass and one batched backward.
"""

from camlens.tasks.caption import CaptionTarget, word_positions
from camlens.tasks.vqa import AnswerTarget

__all__ = ["AnswerTarget", "CaptionTarget", "word_positions"]
