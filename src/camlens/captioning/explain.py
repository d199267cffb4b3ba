"""Explain a caption and its words (Sec. 8.1): generate or take a caption, score it under
teacher forcing, and map the whole caption and each word with one call per image.

The whole caption's map explains log p(caption | image) = sum_t log p_t; a word's map explains
log p_t of that word at its step (:class:`camlens.CaptionTarget`): K words and the caption are
1 + K targets of one forward pass and one batched backward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from torch import nn

import camlens
from camlens.captioning.decode import StepDecoder, beam_search
from camlens.captioning.vocab import Vocabulary
from camlens.explanation import Explanation
from camlens.synthetic.v2.words import visual_words
from camlens.tasks.caption import CaptionTarget

__all__ = ["WordScore", "CaptionExplanation", "FUNCTION_WORDS", "explain_caption",
           "caption_scores", "generate", "world_visual", "content_visual"]

#: Words that are never visual words of a user's vocabulary (articles, prepositions, ...).
FUNCTION_WORDS = frozenset(
    "a an the of on in at to and or with next left right near above below under over by for "
    "is are was were be it its this that there their his her some".split())

Visual = Callable[[Sequence[str]], list[tuple[int, Sequence[str]]]]


def world_visual(words: Sequence[str]) -> list[tuple[int, Sequence[str]]]:
    """(index, classes named) of the words that name world v2 objects
    (:func:`camlens.synthetic.v2.words.visual_words`)."""
    return [(i, sorted(c)) for i, c in visual_words(list(words))]


def content_visual(words: Sequence[str]) -> list[tuple[int, Sequence[str]]]:
    """For vocabularies other than the world's: every word not in :data:`FUNCTION_WORDS`
    (no classes known)."""
    return [(i, []) for i, w in enumerate(words) if w not in FUNCTION_WORDS]


@dataclass(frozen=True)
class WordScore:
    """One word of the caption: its ``position`` in the token ids (``<start>`` is 0), the
    ``word``, log p of it at its step, whether it is a visual word and the classes it names."""

    position: int
    word: str
    log_probability: float
    visual: bool
    classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class CaptionExplanation:
    """A caption (``text``, ``ids`` = ``<start>`` ... ``<end>``), where it came from
    (``source``), log p(caption | image) including ``<end>``, per-word scores, the positions
    explained (``explained``: map 0 is the whole caption, map k the word at
    ``explained[k - 1]``) and the explanations per method (maps (1, 1 + K, ...))."""

    text: str
    ids: tuple[int, ...]
    source: str
    log_probability: float
    words: tuple[WordScore, ...]
    explained: tuple[int, ...]
    explanations: dict[str, Explanation]

    def keys(self) -> list[str]:
        """Map names: ``caption``, then ``<position>-<word>`` per explained word."""
        by_pos = {w.position: w.word for w in self.words}
        return ["caption"] + [f"{p}-{by_pos[p]}" for p in self.explained]


def generate(model: nn.Module, image: torch.Tensor, vocab: Vocabulary, beam: int = 3,
             max_len: int = 30) -> tuple[list[int], str]:
    """The best caption of a step-wise captioner (``begin``/``step``, see
    :mod:`camlens.captioning.decode`) for one image (1, 3, H, W): ids with ``<start>`` and
    ``<end>`` (the latter added if the search hit ``max_len``), and a description."""
    best = beam_search(cast(StepDecoder, model), image, beam, start=vocab.start, end=vocab.end,
                       pad=vocab.pad, max_len=max_len)[0][0]
    ids = [vocab.start, *best.ids]
    if ids[-1] != vocab.end:
        ids.append(vocab.end)
    return ids, ("greedy" if beam == 1 else f"beam search, width {beam}")


@torch.no_grad()
def caption_scores(model: nn.Module, image: torch.Tensor, ids: Sequence[int]) -> torch.Tensor:
    """log p_t (T,) of each token of ``ids`` at its step (position 0, ``<start>``, gets 0)."""
    tokens = torch.tensor([list(ids)], device=image.device)
    picked, mask = CaptionTarget(tokens, whole=True).step_scores(model(image, tokens))
    return torch.where(mask, picked, 0)[0].float().cpu()


def explain_caption(model: nn.Module, image: torch.Tensor, vocab: Vocabulary, *,
                    caption: str | None = None, methods: Sequence[str] = (
                        "guided-backprop", "gradcam", "guided-gradcam"),
                    layer: Any = None, words: Literal["visual", "all"] = "visual",
                    visual: Visual = world_visual, beam: int = 3,
                    options: dict[str, Any] | None = None) -> CaptionExplanation:
    """Generate (``caption=None``; beam search of width ``beam``, 1: greedy) or take
    ``caption`` for ``image`` (1, 3, H, W), and explain log p(caption) and each visual word
    (``words="all"``: every word and ``<end>``) with ``methods`` at ``layer``.

    ``model(image, tokens)`` returns logits (1, T, V) where step t scores token t + 1. An
    unknown word in ``caption`` raises :class:`camlens.captioning.vocab.UnknownWordError`, an
    empty one ``ValueError``. The model is not changed (:func:`camlens.explain`'s contract).
    """
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"image must be (1, 3, H, W), got shape {tuple(image.shape)}")
    if caption is None:
        if not (hasattr(model, "begin") and hasattr(model, "step")):
            raise ValueError("the model cannot generate captions (it has no begin/step "
                             "methods); give the caption to explain")
        ids, source = generate(model, image, vocab, beam)
    else:
        ids, source = vocab.encode(caption), "given"
    text = vocab.decode(ids[1:])
    scores = caption_scores(model, image, ids)
    tokens = [vocab.words[i] for i in ids]
    named = {i + 1: tuple(c) for i, c in visual(tokens[1:-1])}
    per_word = tuple(WordScore(p, tokens[p], float(scores[p]), p in named, named.get(p, ()))
                     for p in range(1, len(ids)))
    explained = tuple(sorted(named) if words == "visual" else range(1, len(ids)))
    t = torch.tensor([ids], device=image.device)
    ex = camlens.explain(model, (image, t), method=list(methods), layer=layer,
                         target=CaptionTarget(t, words=list(explained)), **(options or {}))
    return CaptionExplanation(text, tuple(ids), source, float(scores.sum()), per_word,
                              explained, ex)
