"""The captioner's vocabulary: every word world v2's captions can hold, and the special tokens.

Ids: ``<pad>`` 0, ``<start>`` 1, ``<end>`` 2, then the words in sorted order. The word list is
built from the world's catalogue (sizes, colours, texture words, class names, the caption
grammar's function words), not from a sample of captions, so every caption the scene graphs
generate encodes (:func:`caption_tokens`). Saved as JSON (``{"words": [...]}``, the special
tokens first), the ``--vocab`` file of ``camlens caption``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from camlens.synthetic.v2.catalogue import CLASS_SPECS, COLOURS
from camlens.synthetic.v2.graph import _TEXTURE_WORDS, SceneGraph
from camlens.synthetic.v2.words import tokenize

__all__ = ["PAD", "START", "END", "SIZES", "TEXTURE_WORDS", "Vocabulary", "UnknownWordError",
           "world_vocabulary", "caption_tokens"]

PAD, START, END = "<pad>", "<start>", "<end>"
SIZES = ("small", "medium", "large")
#: The words the captions use for a texture ("plain" objects get none).
TEXTURE_WORDS: tuple[str, ...] = tuple(sorted(w for w in _TEXTURE_WORDS.values() if w))
#: The caption grammar's other words (:meth:`SceneGraph.caption`).
_FUNCTION = ("a", "an", "on", "next", "to", "the", "left", "of", "and", "background", "plain",
             "empty", "scene")


class UnknownWordError(ValueError):
    """A caption word that is not in the vocabulary (the message names the nearest words)."""


class Vocabulary:
    """Words <-> ids. ``words``: the special tokens ``<pad>``, ``<start>``, ``<end>`` first,
    then the words (unique, lower case)."""

    def __init__(self, words: Sequence[str]) -> None:
        words = list(words)
        if words[:3] != [PAD, START, END]:
            raise ValueError(f"a vocabulary starts with {PAD}, {START}, {END}; got {words[:3]}")
        if len(set(words)) != len(words):
            raise ValueError("a vocabulary lists each word once")
        self.words: list[str] = words
        self.index: dict[str, int] = {w: i for i, w in enumerate(words)}

    pad, start, end = 0, 1, 2

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.index

    def encode(self, text: str | Sequence[str]) -> list[int]:
        """``<start>`` + the caption's words + ``<end>`` as ids; text is lower-cased and split on
        anything that is not a letter. An unknown word raises :class:`UnknownWordError` naming
        the nearest vocabulary words; an empty caption raises ``ValueError``."""
        words = tokenize(text) if isinstance(text, str) else [w.lower() for w in text]
        if not words:
            raise ValueError(f"the caption {text!r} has no words (letters a-z)")
        unknown = [w for w in words if w not in self.index or w in (PAD, START, END)]
        if unknown:
            w = unknown[0]
            near = difflib.get_close_matches(w, self.words[3:], n=3, cutoff=0.5)
            hint = f"nearest: {', '.join(near)}" if near else "no vocabulary word is close"
            raise UnknownWordError(f"the word {w!r} is not in the captioner's vocabulary of "
                                   f"{len(self) - 3} words ({hint})")
        return [self.start] + [self.index[w] for w in words] + [self.end]

    def decode(self, ids: Iterable[int]) -> str:
        """The words of ``ids`` up to the first ``<end>``, without special tokens."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.end:
                break
            if i > self.end:
                out.append(self.words[i])
        return " ".join(out)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"words": self.words}, indent=0) + "\n",
                              encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """A vocabulary file: JSON ``{"words": [...]}`` or a text file of one word a line, the
        special tokens first in both."""
        text = Path(path).read_text(encoding="utf-8")
        try:
            data = json.loads(text)
            words = data["words"] if isinstance(data, dict) else data
        except json.JSONDecodeError:
            words = [line.strip() for line in text.splitlines() if line.strip()]
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ValueError(f"{path}: a vocabulary is a JSON list of words (or {{'words': "
                             "[...]}}) or one word a line")
        return cls(words)


def world_vocabulary() -> Vocabulary:
    """Every word of world v2's captions (see the module doc), sorted, after the specials."""
    words: set[str] = set(SIZES) | set(TEXTURE_WORDS) | set(_FUNCTION)
    for c in COLOURS:
        words.update(tokenize(c))
    for spec in CLASS_SPECS:
        words.update(tokenize(spec.name))
    return Vocabulary([PAD, START, END, *sorted(words)])


def caption_tokens(graph: SceneGraph) -> list[str]:
    """The words of the scene graph's caption, lower case, no punctuation."""
    return tokenize(graph.caption())
