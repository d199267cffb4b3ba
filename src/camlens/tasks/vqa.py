"""VQA targets: the score of a chosen answer, and answer-versus-answer contrasts (Fig. 12).

A VQA model ``model(image, question)`` scores a fixed answer set, (B, N) (a tensor, or an
object / dict with ``.logits`` / ``["logits"]``). The score of answer a is its pre-softmax score
y^a (Eq. 1's y^c), or log softmax(y)_a with ``score="logprob"``. ``versus`` b gives the contrast
y^a - y^b: where the evidence for "red" rather than "yellow" lies. Counterfactual maps (regions
that lower the answer's score, Sec. 3.3) are ``explain(..., counterfactual=True)`` on the same
target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch

from camlens.errors import TargetError
from camlens.targets import class_index, output_tensor
from camlens.tasks.indices import index_matrix

Score = Literal["logit", "logprob"]


def _answers(value: Any, name: str) -> torch.Tensor:
    """Answer indices as a (B or 1, K) long tensor."""
    if isinstance(value, bool | float):
        raise TargetError(f"{name} must be answer indices (ints), got {value!r}")
    a = index_matrix(value, f"{name} must be answer indices (ints)",
                     f"{name} must be integer answer indices")
    if a.dim() != 2 or a.shape[1] == 0:
        raise TargetError(f"{name} must be an int, K ints, or a (B, K) tensor, got shape "
                          f"{tuple(a.shape)}")
    return a


@dataclass(frozen=True, eq=False)  # tensors: compared by identity
class AnswerTarget:
    """Scores (B, K) of K answers: y^a, or y^a - y^b against ``versus`` b.

    ``answers``: an int, K ints shared by every sample, or (B, K) per sample. ``versus``: None,
    or answers of the same shape (each contrasted with the answer in the same slot).
    ``score``: ``"logit"`` (pre-softmax, default) or ``"logprob"`` (log-softmax).
    :meth:`named` takes answer texts and the model's answer list.
    """

    answers: torch.Tensor
    versus: torch.Tensor | None = None
    score: Score = "logit"

    def __init__(self, answers: int | Sequence[int] | torch.Tensor,
                 versus: int | Sequence[int] | torch.Tensor | None = None, *,
                 score: Score = "logit") -> None:
        a = _answers(answers, "answers")
        b = None if versus is None else _answers(versus, "versus")
        if b is not None and b.shape[1] != a.shape[1]:
            raise TargetError(f"versus must give one answer per explained answer: {a.shape[1]} "
                              f"answers, {b.shape[1]} to contrast with")
        if score not in ("logit", "logprob"):
            raise TargetError(f"score must be 'logit' or 'logprob', got {score!r}")
        object.__setattr__(self, "answers", a)
        object.__setattr__(self, "versus", b)
        object.__setattr__(self, "score", score)

    @classmethod
    def named(cls, answers: Sequence[str], vocabulary: Sequence[str],
              versus: Sequence[str] | None = None, *, score: Score = "logit") -> AnswerTarget:
        """Answers by text (``["red", "yellow", "yellow and red"]``) in the model's answer list
        ``vocabulary``; an unknown answer is a :class:`TargetError` naming the nearest ones."""
        def look_up(texts: Sequence[str]) -> list[int]:
            return [class_index(t, vocabulary) for t in texts]
        return cls(look_up(answers), None if versus is None else look_up(versus), score=score)

    @property
    def k(self) -> int:
        """The number of explained answers."""
        return self.answers.shape[1]

    def at(self, sample: int) -> AnswerTarget:
        """This target for sample ``sample`` alone (its answers, shared by copies)."""
        def row(t: torch.Tensor) -> torch.Tensor:
            return t if t.shape[0] == 1 else t[sample:sample + 1]
        return replace(self, answers=row(self.answers),
                       versus=None if self.versus is None else row(self.versus))

    def __call__(self, output: Any) -> torch.Tensor:
        """(B, K): y^a (or log softmax(y)_a), minus the same for ``versus`` when given."""
        logits = output_tensor(output)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            got = (f"a tensor of shape {tuple(logits.shape)}" if isinstance(logits, torch.Tensor)
                   else type(logits).__name__)
            raise TargetError(f"an answer target needs (batch, answers) scores from the model, "
                              f"got {got}")
        b, n = logits.shape
        y = logits.log_softmax(-1) if self.score == "logprob" else logits

        def pick(idx: torch.Tensor) -> torch.Tensor:
            if idx.shape[0] not in (1, b):
                raise TargetError(f"{idx.shape[0]} rows of answers for a batch of {b}: give "
                                  "K answers for every sample, or (B, K)")
            bad = (idx < 0) | (idx >= n)
            if bad.any():
                raise TargetError(f"answer index {int(idx[bad][0])} is out of range: the model "
                                  f"has {n} answers (0 to {n - 1})")
            return y.gather(1, idx.to(y.device).expand(b, -1))

        scores = pick(self.answers)
        return scores if self.versus is None else scores - pick(self.versus)
