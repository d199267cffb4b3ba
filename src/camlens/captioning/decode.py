"""Greedy and beam-search decoding of a step-wise captioner.

A decoder is any model with ``begin(image) -> state`` (the state after reading the image) and
``step(token (N,), state) -> (log-probabilities (N, V), state)``, a state being a tuple of
tensors (1, N, ...): an LSTM's (h, c), or (h, c, v) for
:class:`camlens.captioning.model.Captioner`. Decoding feeds ``<start>`` (id
``start``) first; ``<pad>`` and ``<start>`` are never emitted. A caption is a sequence of at most
``max_len`` tokens; it is complete when it ends with ``<end>``, and a sequence that reaches
``max_len`` without one is taken as it is. Its score is sum_t log p(w_t | w_<t, image).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

__all__ = ["StepDecoder", "Decoded", "greedy", "beam_search"]


class StepDecoder(Protocol):
    """What decoding needs of a captioner (module doc)."""

    def begin(self, image: torch.Tensor) -> Any: ...

    def step(self, token: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]: ...


@dataclass(frozen=True)
class Decoded:
    """A generated caption: ``ids`` (the words and the final ``<end>`` if any, no
    ``<start>``) and ``score`` (their summed log-probability)."""

    ids: tuple[int, ...]
    score: float


def _banned(logp: torch.Tensor, start: int, pad: int) -> torch.Tensor:
    logp = logp.clone()
    logp[:, [start, pad]] = -torch.inf
    return logp


@torch.no_grad()
def greedy(model: StepDecoder, image: torch.Tensor, *, start: int = 1, end: int = 2,
           pad: int = 0, max_len: int = 30) -> list[Decoded]:
    """The most likely word at every step, for each image of (B, 3, H, W)."""
    state = model.begin(image)
    b = image.shape[0]
    token = torch.full((b,), start, dtype=torch.long)
    ids: list[list[int]] = [[] for _ in range(b)]
    score = [0.0] * b
    alive = [True] * b
    for _ in range(max_len):
        logp, state = model.step(token, state)
        best = _banned(logp, start, pad).max(-1)
        for i in range(b):
            if alive[i]:
                ids[i].append(int(best.indices[i]))
                score[i] += float(best.values[i])
                alive[i] = ids[i][-1] != end
        if not any(alive):
            break
        token = best.indices
    return [Decoded(tuple(i), s) for i, s in zip(ids, score)]


@torch.no_grad()
def beam_search(model: StepDecoder, image: torch.Tensor, beam: int = 3, *, start: int = 1,
                end: int = 2, pad: int = 0, max_len: int = 30) -> list[list[Decoded]]:
    """The ``beam`` best captions found for each image of (B, 3, H, W), best first.

    At each step every kept sequence is extended by every word and the ``beam`` best
    extensions (by total score) are kept; those ending in ``<end>`` are complete and leave the
    beam. The search stops when no sequence is left or the best complete score is at least the
    best kept one (scores only fall as words are added, so nothing kept can win). With
    ``beam = 1`` it is :func:`greedy`; with ``beam`` at least the number of possible
    sequences it is exact (an exhaustive search).
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    out = []
    for i in range(image.shape[0]):
        state = model.begin(image[i:i + 1])
        seqs: list[tuple[int, ...]] = [()]
        scores = torch.zeros(1)
        token = torch.tensor([start])
        done: list[Decoded] = []
        for _ in range(max_len):
            logp, state = model.step(token, state)
            cand = (scores[:, None] + _banned(logp, start, pad)).flatten()
            k = min(beam, int(torch.isfinite(cand).sum()))
            top = cand.topk(k)  # ties: topk's order, deterministic on CPU
            v = logp.shape[1]
            keep_rows, keep_tok, keep_score, new_seqs = [], [], [], []
            for s, flat in zip(top.values.tolist(), top.indices.tolist()):
                row, tok = divmod(flat, v)
                seq = seqs[row] + (tok,)
                if tok == end:
                    done.append(Decoded(seq, s))
                else:
                    keep_rows.append(row)
                    keep_tok.append(tok)
                    keep_score.append(s)
                    new_seqs.append(seq)
            if not new_seqs:
                break
            rows = torch.tensor(keep_rows)
            state = tuple(x[:, rows] for x in state)
            token = torch.tensor(keep_tok)
            scores = torch.tensor(keep_score, dtype=cand.dtype)
            seqs = new_seqs
            if done and max(d.score for d in done) >= float(scores.max()):
                break
        else:
            done += [Decoded(sq, float(sc)) for sq, sc in zip(seqs, scores.tolist())]
        done.sort(key=lambda d: -d.score)
        out.append(done[:beam])
    return out
