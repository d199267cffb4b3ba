"""World v2's word-to-category map (Sec. 8.1.1): which classes a caption or question word names.

The paper maps 830 visual words of COCO captions ("child", "man", "woman", ...) to the 80 COCO
categories, and counts a word's map as a hit when its maximum falls in the mask of an object of
those categories. World v2's captions and questions (:mod:`camlens.synthetic.v2.graph`) name
objects by their class ("a striped brown tabby"), and its questions also by group ("Is there a
bottle?") and supercategory ("How many animals are there?"). So:

- a class name names that class; each of its words is a visual word for it ("tiger" and "cat"
  in "tiger cat" both name the tiger cat);
- a group name ("feline", "bottle") names every class of the group;
- a supercategory ("animal", "household item"), singular or plural, names every class under it;
- "object" / "objects" ("How many objects are there?") names every class.

A phrase is matched longest first, so "wine bottle" names the wine bottle, not every bottle.
Size, colour, texture and relation words name no object and are not visual words here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from camlens.synthetic.v2.catalogue import CLASS_SPECS, FAMILIES

__all__ = ["WORD_CATEGORIES", "tokenize", "visual_words", "named_classes"]


def _build() -> dict[tuple[str, ...], frozenset[str]]:
    everything = frozenset(c.name for c in CLASS_SPECS)
    out: dict[tuple[str, ...], frozenset[str]] = {("object",): everything,
                                                  ("objects",): everything}
    for group in FAMILIES:
        out[(group,)] = frozenset(c.name for c in CLASS_SPECS if c.group == group)
    for sup in dict.fromkeys(f[2] for f in FAMILIES.values()):
        members = frozenset(c.name for c in CLASS_SPECS if c.supercategory == sup)
        words = tuple(sup.split())
        out[words] = members
        out[words[:-1] + (words[-1] + "s",)] = members
    for c in CLASS_SPECS:
        out[tuple(c.name.split())] = frozenset({c.name})  # a class name wins over a group's
    return out


#: phrase (a tuple of lower-case words) -> the class names it names.
WORD_CATEGORIES: dict[tuple[str, ...], frozenset[str]] = _build()
_LONGEST = max(len(p) for p in WORD_CATEGORIES)


def tokenize(text: str) -> list[str]:
    """Lower-case words of ``text`` (letters only: "A tabby, on a mat." -> a tabby on a mat)."""
    return re.findall(r"[a-z]+", text.lower())


def visual_words(words: Sequence[str]) -> list[tuple[int, frozenset[str]]]:
    """(position, classes named) for every visual word of ``words`` (lower-case tokens), the
    phrases matched longest first, left to right; every word of a matched phrase is listed."""
    out: list[tuple[int, frozenset[str]]] = []
    i = 0
    while i < len(words):
        for n in range(min(_LONGEST, len(words) - i), 0, -1):
            classes = WORD_CATEGORIES.get(tuple(words[i:i + n]))
            if classes is not None:
                out += [(i + j, classes) for j in range(n)]
                i += n
                break
        else:
            i += 1
    return out


def named_classes(text: str) -> frozenset[str]:
    """Every class a caption or question names (e.g. the objects a question is about)."""
    return frozenset().union(*(c for _, c in visual_words(tokenize(text))))
