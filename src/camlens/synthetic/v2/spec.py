"""The one way to name world v2 scenes on the command line and in the library:
``synthetic:seed=S,n=N[,kind=K][,start=I][,objects=A-B][,cue_rate=R]`` (docs/world.md).

>>> spec = parse_synthetic("synthetic:seed=20251,n=200,kind=two")
>>> spec.scenes()[0] is not None          # scenes start .. start+n-1 of stream ``seed``
>>> spec.ids()[:2]                        # ['20251/00000', '20251/00001']

Scene ``i`` is drawn from ``default_rng((seed, i))`` by :func:`~camlens.synthetic.v2.make_scene`
with the spec's kind, object count and cue rate, so it depends on neither ``n`` nor ``start``
(``make_dataset``'s rule). Keys:

- ``seed`` (required): the stream, an integer >= 0; 20251 is the held-out seed
  (:data:`~camlens.synthetic.v2.HELDOUT_SEED`) no shipped net was trained on;
- ``n`` (required): how many scenes, >= 1;
- ``kind``: ``single`` (one object), ``multi`` (several of distinct classes), ``two``, ``pair``
  (see :data:`~camlens.synthetic.v2.KINDS`), or ``mixed`` (single, two, pair and multi in turn
  by scene index: the captioner's data); default the command's (see :data:`DEFAULT_KIND`);
- ``start``: the first scene index (default 0), e.g. ``start=16,n=1`` is scene 16 alone;
- ``objects``: ``A-B`` (or ``A``), how many objects a multi scene has (default 2-4; the VQA
  net's scenes are ``kind=multi,objects=1-4``); only for multi and mixed scenes;
- ``cue_rate``: a number in [0, 1]: paint the bias cue band (Sec. 6.3), the class's own cue
  with this probability (default: no band).

Whitespace around keys, values and commas is ignored; a key given twice, an unknown key or a
bad value is a :class:`~camlens.errors.DataSpecError` naming it and the accepted form.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from camlens.errors import DataSpecError
from camlens.synthetic.v2.catalogue import NUM_CLASSES
from camlens.synthetic.v2.world import KINDS, Scene, make_scene

__all__ = ["SyntheticSpec", "parse_synthetic", "is_synthetic", "FORM", "KEYS", "SPEC_KINDS",
           "MIXED_CYCLE", "DEFAULT_KIND", "DEFAULT_OBJECTS"]

#: How synthetic data is written (every error message repeats it).
FORM = "synthetic:seed=S,n=N[,kind=K][,start=I][,objects=A-B][,cue_rate=R]"
#: The keys, in the order :meth:`SyntheticSpec.__str__` writes them.
KEYS = ("seed", "n", "kind", "start", "objects", "cue_rate")
#: ``mixed`` scenes cycle through these kinds by scene index (the captioner's data).
MIXED_CYCLE = ("single", "two", "pair", "multi")
#: Every ``kind=`` value.
SPEC_KINDS = (*KINDS, "mixed")
#: The kind when the spec gives none (commands may pass their own, e.g. ``mixed``).
DEFAULT_KIND = "single"
#: World v2's object count for multi scenes when the spec gives none.
DEFAULT_OBJECTS = (2, 4)

_INT = re.compile(r"[0-9]+")
_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?")


@dataclass(frozen=True)
class SyntheticSpec:
    """Scenes ``start .. start+n-1`` of stream ``seed``; None fields take the command's or world
    v2's defaults (:meth:`with_defaults`)."""

    seed: int
    n: int
    kind: str | None = None
    start: int = 0
    objects: tuple[int, int] | None = None
    cue_rate: float | None = None

    def with_defaults(self, kind: str = DEFAULT_KIND,
                      objects: tuple[int, int] = DEFAULT_OBJECTS) -> SyntheticSpec:
        """This spec with ``kind`` and ``objects`` filled where it gives none."""
        return replace(self, kind=self.kind or kind, objects=self.objects or objects)

    def limited(self, limit: int | None) -> SyntheticSpec:
        """The first ``limit`` scenes (all when None)."""
        return self if limit is None else replace(self, n=min(self.n, int(limit)))

    def scene(self, i: int) -> Scene:
        """Scene ``start + i`` (``0 <= i < n``)."""
        if not 0 <= i < self.n:
            raise IndexError(f"scene {i} of {self.n}")
        index = self.start + i
        kind = self.kind or DEFAULT_KIND
        if kind == "mixed":
            kind = MIXED_CYCLE[index % len(MIXED_CYCLE)]
        return make_scene(np.random.default_rng((self.seed, index)), kind=kind,
                          n_objects=self.objects or DEFAULT_OBJECTS, cue_rate=self.cue_rate)

    def scenes(self) -> list[Scene]:
        """All ``n`` scenes, in index order."""
        return [self.scene(i) for i in range(self.n)]

    def ids(self) -> list[str]:
        """``"seed/index"`` of each scene (``index`` five digits), the rows' image ids."""
        return [f"{self.seed}/{self.start + i:05d}" for i in range(self.n)]

    def __str__(self) -> str:
        parts = [f"seed={self.seed}", f"n={self.n}"]
        if self.kind is not None:
            parts.append(f"kind={self.kind}")
        if self.start:
            parts.append(f"start={self.start}")
        if self.objects is not None:
            a, b = self.objects
            parts.append(f"objects={a}-{b}")
        if self.cue_rate is not None:
            parts.append(f"cue_rate={self.cue_rate:g}")
        return "synthetic:" + ",".join(parts)


def is_synthetic(text: str) -> bool:
    """Whether ``text`` is meant as a synthetic spec (``synthetic:`` then ``KEY=VALUE``)."""
    fmt, sep, rest = text.strip().partition(":")
    return bool(sep) and fmt.strip().lower() == "synthetic" and "=" in rest


def _fail(text: str, why: str) -> DataSpecError:
    return DataSpecError(f"bad data spec {text!r}: {why}; synthetic data is written {FORM} "
                         "(docs/world.md)")


def _int(text: str, key: str, value: str, least: int) -> int:
    if not _INT.fullmatch(value) or int(value) < least:
        raise _fail(text, f"{key} must be an integer >= {least}, got {value!r}")
    return int(value)


def parse_synthetic(text: str) -> SyntheticSpec:
    """``synthetic:seed=S,n=N[,kind=K][,start=I][,objects=A-B][,cue_rate=R]`` (module doc) as a
    :class:`SyntheticSpec`; anything else raises :class:`~camlens.errors.DataSpecError` (a
    ``ValueError``) with a one-line message: ``unknown data spec 'world:200'; synthetic data
    is written synthetic:seed=S,n=N[,...]``."""
    fmt, sep, rest = text.strip().partition(":")
    if not sep or fmt.strip().lower() != "synthetic" or not rest.strip():
        raise DataSpecError(f"unknown data spec {text!r}; synthetic data is written {FORM} "
                            "(docs/world.md)")
    given: dict[str, str] = {}
    for part in rest.split(","):
        key, eq, value = (s.strip() for s in part.partition("="))
        if not part.strip():
            raise _fail(text, "empty KEY=VALUE (a stray comma?)")
        if not eq or key not in KEYS:
            raise _fail(text, f"unknown key {key!r}; keys are {', '.join(KEYS)}"
                        if eq else f"expected KEY=VALUE, got {part.strip()!r}")
        if key in given:
            raise _fail(text, f"{key} given twice")
        given[key] = value
    missing = [k for k in ("seed", "n") if k not in given]
    if missing:
        raise _fail(text, f"give {' and '.join(k + '=' for k in missing)}")
    out: dict[str, Any] = {"seed": _int(text, "seed", given["seed"], 0),
                           "n": _int(text, "n", given["n"], 1)}
    if "start" in given:
        out["start"] = _int(text, "start", given["start"], 0)
    if "kind" in given:
        if given["kind"] not in SPEC_KINDS:
            raise _fail(text, f"kind must be one of {', '.join(SPEC_KINDS)}, "
                              f"got {given['kind']!r}")
        out["kind"] = given["kind"]
    if "objects" in given:
        m = _RANGE.fullmatch(given["objects"])
        lo, hi = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (0, 0)
        if not 1 <= lo <= hi <= NUM_CLASSES:
            raise _fail(text, f"objects must be A-B (or A) with 1 <= A <= B <= {NUM_CLASSES}, "
                              f"got {given['objects']!r}")
        if out.get("kind") in ("single", "two", "pair"):
            raise _fail(text, f"objects applies to multi and mixed scenes, not kind="
                              f"{out['kind']}")
        out["objects"] = (lo, hi)
    if "cue_rate" in given:
        try:
            rate = float(given["cue_rate"])
        except ValueError:
            rate = math.nan
        if not 0.0 <= rate <= 1.0:
            raise _fail(text, f"cue_rate must be a number in [0, 1], got {given['cue_rate']!r}")
        out["cue_rate"] = rate
    return SyntheticSpec(**out)
