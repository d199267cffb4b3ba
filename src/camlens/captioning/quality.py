"""Caption quality on held-out scenes: BLEU-4 and exact-attribute accuracy.

- **BLEU-4**: nltk's ``corpus_bleu`` (uniform 1- to 4-gram weights, the scene graph's one
  caption as the reference, no smoothing), on lower-case words.
- **Attributes**: a caption names objects as "a SIZE COLOUR [TEXTURE] CLASS"
  (:func:`phrases` reads them back). Each ground-truth object is matched to the first unused
  phrase naming its class; ``recall`` is the share of objects whose class is named, and the
  size / colour / texture accuracies (texture: its word, or none for plain) and ``exact`` (all
  three) are over the matched objects. ``exact_caption``: the share of captions equal to the
  reference word for word.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from camlens.captioning.vocab import SIZES, TEXTURE_WORDS
from camlens.synthetic.v2.catalogue import CLASS_SPECS, COLOURS
from camlens.synthetic.v2.graph import _TEXTURE_WORDS, SceneGraph

__all__ = ["Phrase", "phrases", "attribute_scores", "bleu4"]

_CLASSES = sorted((tuple(c.name.split()) for c in CLASS_SPECS), key=len, reverse=True)
_COLOURS = sorted((tuple(c.split()) for c in COLOURS), key=len, reverse=True)


@dataclass(frozen=True)
class Phrase:
    """An object phrase of a caption: its class and the size, colour and texture words it
    gives ("" where the phrase has none)."""

    cls: str
    size: str
    colour: str
    texture: str


def _match(words: Sequence[str], i: int, options: list[tuple[str, ...]]) -> tuple[str, ...]:
    for o in options:
        if tuple(words[i:i + len(o)]) == o:
            return o
    return ()


def phrases(words: Sequence[str]) -> list[Phrase]:
    """The object phrases of a caption's words, left to right: after each "a"/"an", an
    optional size, colour and texture word, then a class name (a phrase without a class name
    is skipped)."""
    out = []
    for i, w in enumerate(words):
        if w not in ("a", "an"):
            continue
        j = i + 1
        size = words[j] if j < len(words) and words[j] in SIZES else ""
        j += bool(size)
        colour = _match(words, j, _COLOURS)
        j += len(colour)
        texture = words[j] if j < len(words) and words[j] in TEXTURE_WORDS else ""
        j += bool(texture)
        cls = _match(words, j, _CLASSES)
        if cls:
            out.append(Phrase(" ".join(cls), size, " ".join(colour), texture))
    return out


def attribute_scores(graphs: Sequence[SceneGraph],
                     captions: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Recall of the objects' classes and size / colour / texture / exact accuracies (module
    doc) of generated ``captions`` (lists of words) against the scene graphs."""
    n_obj = matched = 0
    right = {"size": 0, "colour": 0, "texture": 0, "exact": 0}
    for g, words in zip(graphs, captions):
        free = phrases(words)
        for o in g.objects:
            n_obj += 1
            p = next((p for p in free if p.cls == o.cls), None)
            if p is None:
                continue
            free.remove(p)
            matched += 1
            ok = {"size": p.size == o.size, "colour": p.colour == o.colour,
                  "texture": p.texture == _TEXTURE_WORDS[o.texture]}
            ok["exact"] = all(ok.values())
            for k, v in ok.items():
                right[k] += v
    return {"objects": n_obj, "recall": matched / max(n_obj, 1),
            **{k: v / max(matched, 1) for k, v in right.items()}}


def bleu4(references: Sequence[Sequence[str]], hypotheses: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU-4 (nltk's ``corpus_bleu``, one reference per caption) of a non-empty
    corpus (an empty one has no BLEU: nltk would divide 0 by 0)."""
    if not references or len(references) != len(hypotheses):
        raise ValueError(f"BLEU needs one hypothesis per reference and at least one of each, "
                         f"got {len(references)} references and {len(hypotheses)} hypotheses")
    try:
        from nltk.translate.bleu_score import corpus_bleu
    except ImportError as err:  # pragma: no cover - the extra is missing
        raise ImportError("BLEU needs nltk: pip install 'camlens[caption]'") from err
    return float(corpus_bleu([[list(r)] for r in references], [list(h) for h in hypotheses]))
