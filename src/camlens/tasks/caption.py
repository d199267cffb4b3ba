"""Caption targets: the log-probability of a given caption under teacher forcing, and of single
words at their time steps, as K targets of one forward pass and one batched backward.

A captioner run with teacher forcing, ``model(image, tokens)``, returns per-step scores over the
vocabulary, logits (B, T', V) (a tensor, or an object / dict with ``.logits`` / ``["logits"]``).
With ``shift`` s, step t - s scores the token at position t of ``tokens`` (s = 1 for the usual
"logits[:, t] predict tokens[:, t + 1]"; s = 0 when the logits are already aligned with the
tokens). With log p_t = log_softmax(logits[:, t - s])[tokens[:, t]]:

- the whole caption: log p(caption | image) = sum_t log p_t over every scored position
  (positions t >= s with a step, not holding the ``ignore`` id);
- the word at position t: log p_t, i.e. the gradient of the one-hot at that word and step (Sec.
  8.1.1), or its pre-softmax logit with ``score="logit"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch

from camlens.errors import TargetError
from camlens.targets import output_tensor
from camlens.tasks.indices import index_matrix

Score = Literal["logprob", "logit"]


def _ids(tokens: Any) -> torch.Tensor:
    """Token ids as a (B, T) long tensor (a (T,) sequence is one caption)."""
    try:
        t = torch.as_tensor(tokens)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TargetError(f"caption tokens must be integer ids, got {tokens!r}") from err
    if t.is_floating_point() or t.dtype == torch.bool:
        raise TargetError(f"caption tokens must be integer ids, got dtype {t.dtype}")
    if t.dim() == 1:
        t = t[None]
    if t.dim() != 2 or t.shape[1] == 0:
        raise TargetError(f"caption tokens must be (T,) or (B, T) ids, got shape "
                          f"{tuple(t.shape)}")
    return t.detach().long().clone()  # the target's own copy: later edits of the caller's miss it


def _positions(words: Any, tokens: torch.Tensor) -> torch.Tensor:
    """Word positions as a (B or 1, K) long tensor; -1 marks "no word" (a padded slot)."""
    if words is None:
        return torch.zeros(1, 0, dtype=torch.long)
    w = index_matrix(words, "words must be positions in the caption (ints)",
                     "word positions must be integers")
    if w.dim() != 2 or w.shape[0] not in (1, tokens.shape[0]):
        raise TargetError(f"words must be K positions, or (B, K) = ({tokens.shape[0]}, K) "
                          f"positions per caption, got shape {tuple(w.shape)}")
    t = tokens.shape[1]
    bad = (w < -1) | (w >= t)
    if bad.any():
        raise TargetError(f"word position {int(w[bad][0])} is outside the caption of {t} tokens "
                          f"(positions run from 0 to {t - 1}; -1 marks an empty slot)")
    return w


@dataclass(frozen=True, eq=False)  # tensors: compared by identity
class CaptionTarget:
    """Scores of a given caption, (B, K): ``[log p(caption)] + [log p(word) for each word]``.

    ``tokens``: the caption's ids, (T,) or (B, T) (one caption per sample; a single caption is
    used for every sample), the same ids the model is fed. ``words``: positions t in ``tokens``
    of the words to explain, K shared positions or (B, K) per caption (-1: an empty slot, score
    0 and an all-zero map). ``whole``: put the whole caption's log-probability first.
    ``shift``: step t - shift scores the token at position t (1: logits[:, t] predict
    tokens[:, t + 1]). ``ignore``: a padding id never scored. ``score``: ``"logprob"`` (the
    log-softmax, default) or ``"logit"`` (the pre-softmax score) of each word.

    Use it as ``explain(model, (image, tokens), target=CaptionTarget(tokens, words=[2, 5]))``.
    """

    tokens: torch.Tensor
    words: torch.Tensor
    whole: bool = True
    shift: int = 1
    ignore: int | None = None
    score: Score = "logprob"

    def __init__(self, tokens: Any, words: Sequence[int] | torch.Tensor | None = None, *,
                 whole: bool = True, shift: int = 1, ignore: int | None = None,
                 score: Score = "logprob") -> None:
        ids = _ids(tokens)
        pos = _positions(words, ids)
        if isinstance(shift, bool) or not isinstance(shift, int) or shift < 0:
            raise TargetError(f"shift must be an int >= 0, got {shift!r}")
        if score not in ("logprob", "logit"):
            raise TargetError(f"score must be 'logprob' or 'logit', got {score!r}")
        if not whole and pos.shape[1] == 0:
            raise TargetError("nothing to explain: give words=positions, or whole=True")
        if ignore is not None and pos.numel():
            rows = ids.expand(max(ids.shape[0], pos.shape[0]), -1)
            at = rows.gather(1, pos.clamp(min=0).expand(rows.shape[0], -1))
            if ((at == ignore) & (pos >= 0)).any():
                raise TargetError(f"a word position points at the padding id {ignore}")
        for name, value in (("tokens", ids), ("words", pos), ("whole", whole), ("shift", shift),
                            ("ignore", ignore), ("score", score)):
            object.__setattr__(self, name, value)

    @property
    def k(self) -> int:
        """The number of targets: the whole caption (if ``whole``) and each word."""
        return int(self.whole) + self.words.shape[1]

    def at(self, sample: int) -> CaptionTarget:
        """This target for sample ``sample`` alone (its caption and words, shared by copies)."""
        def row(t: torch.Tensor) -> torch.Tensor:
            return t if t.shape[0] == 1 else t[sample:sample + 1]
        return replace(self, tokens=row(self.tokens), words=row(self.words))

    def step_scores(self, output: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-position scores (B, T) of the caption's tokens and the 0/1 mask (B, T) of the
        positions that are scored (a step exists and the token is not ``ignore``)."""
        logits = output_tensor(output)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
            got = (f"a tensor of shape {tuple(logits.shape)}" if isinstance(logits, torch.Tensor)
                   else type(logits).__name__)
            raise TargetError(f"a caption target needs per-step scores (batch, steps, vocabulary) "
                              f"from the model, got {got}")
        b, steps, vocab = logits.shape
        ids = self.tokens.to(logits.device)
        if ids.shape[0] not in (1, b):
            raise TargetError(f"the caption tokens hold {ids.shape[0]} captions for a batch of "
                              f"{b}: give one caption, or one per sample")
        ids = ids.expand(b, -1)
        t = ids.shape[1]
        pos = torch.arange(t, device=logits.device)
        has_step = (pos >= self.shift) & (pos - self.shift < steps)
        mask = has_step[None, :].expand(b, -1)
        if self.ignore is not None:
            mask = mask & (ids != self.ignore)
        scored = ids[mask]
        if scored.numel() and (int(scored.min()) < 0 or int(scored.max()) >= vocab):
            bad = scored[(scored < 0) | (scored >= vocab)][0]
            raise TargetError(f"caption token id {int(bad)} is outside the model's vocabulary "
                              f"of {vocab} (ids 0 to {vocab - 1})")
        per_step = logits.log_softmax(-1) if self.score == "logprob" else logits
        step = (pos - self.shift).clamp(0, steps - 1)  # (T,): the step scoring each position
        picked = per_step[:, step].gather(2, ids.clamp(0, vocab - 1)[:, :, None])[:, :, 0]
        return picked, mask

    def __call__(self, output: Any) -> torch.Tensor:
        """(B, K) scores: log p(caption) = sum of the scored positions' log p_t first (if
        ``whole``), then each word's log p_t (0 for an empty slot)."""
        picked, mask = self.step_scores(output)
        b = picked.shape[0]
        cols = []
        if self.whole:
            cols.append(torch.where(mask, picked, 0).sum(1, keepdim=True))
        if self.words.shape[1]:
            w = self.words.to(picked.device).expand(b, -1)
            ok = w >= 0
            wc = w.clamp(min=0)
            if (ok & ~mask.gather(1, wc)).any():
                p = int(w[ok & ~mask.gather(1, wc)][0])
                raise TargetError(f"the word at position {p} is not scored: with shift="
                                  f"{self.shift} positions {self.shift} to "
                                  f"{self.shift + output_tensor(output).shape[1] - 1} have a step")
            cols.append(torch.where(ok, picked.gather(1, wc), 0))
        return torch.cat(cols, dim=1)


def word_positions(tokens: Any, vocabulary_ids: Sequence[int] | torch.Tensor,
                   *, start: int = 0) -> torch.Tensor:
    """Positions (B, K) of the tokens that are in ``vocabulary_ids`` (e.g. the visual words),
    from position ``start`` on, left-aligned and padded with -1 to the longest row's count: the
    ``words`` of a :class:`CaptionTarget` explaining every visual word of each caption."""
    ids = _ids(tokens)
    wanted = torch.as_tensor(list(vocabulary_ids) if not isinstance(vocabulary_ids, torch.Tensor)
                             else vocabulary_ids, dtype=torch.long)
    hit = torch.isin(ids, wanted)
    hit[:, :start] = False
    k = int(hit.sum(1).max()) if hit.numel() else 0
    out = torch.full((ids.shape[0], k), -1, dtype=torch.long)
    for b in range(ids.shape[0]):
        p = hit[b].nonzero()[:, 0]
        out[b, :p.numel()] = p
    return out
