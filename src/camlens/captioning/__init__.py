"""A Show-and-Tell captioner for world v2, its decoding, quality and explanation (Sec. 8.1).

>>> from camlens.captioning import load_captioner, load_vocabulary, explain_caption
>>> model, vocab = load_captioner(), load_vocabulary()      # shipped, offline
>>> res = explain_caption(model, image, vocab)                # image (1, 3, 112, 112) in [0, 1]
>>> res.text, res.log_probability, res.explanations["gradcam"].maps.shape   # (1, 1 + K, H, W)

Train with ``python -m camlens.captioning.train --out DIR`` (see docs/captioning.md).
"""

from __future__ import annotations

from pathlib import Path

from camlens.captioning.decode import Decoded, beam_search, greedy
from camlens.captioning.explain import CaptionExplanation, WordScore, explain_caption
from camlens.captioning.model import LAYER, WEIGHTS_DIR, Captioner, load_captioner
from camlens.captioning.vocab import UnknownWordError, Vocabulary, world_vocabulary

__all__ = ["Captioner", "LAYER", "WEIGHTS_DIR", "load_captioner", "load_vocabulary",
           "Vocabulary", "UnknownWordError", "world_vocabulary", "greedy", "beam_search",
           "Decoded", "explain_caption", "CaptionExplanation", "WordScore"]


def load_vocabulary(path: str | Path | None = None) -> Vocabulary:
    """A vocabulary file (default: the shipped captioner's ``vocab.json``)."""
    return Vocabulary.load(path or WEIGHTS_DIR / "vocab.json")
