"""Explain a VQA net's answers (Sec. 8.2, Fig. 12): maps per answer, and answer-versus-answer.

For the question q and an answer a, every method explains the answer's score y^a
(:class:`camlens.AnswerTarget`): Grad-CAM weighs the image layer's maps A^k by
alpha^a_k = mean_ij dy^a/dA^k_ij (Eq. 1) and keeps ReLU(sum_k alpha^a_k A^k) (Eq. 2); Guided
Backprop is the rectified input gradient dy^a/dx; Guided Grad-CAM is their product. A contrast
"a vs b" explains y^a - y^b: where the evidence for a rather than b lies. All answers come from
one forward and one batched backward per method family; the question is held fixed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

import camlens
from camlens.explanation import Explanation
from camlens.synthetic.v2.nets import INPUT_SIZE
from camlens.tasks.vqa import AnswerTarget
from camlens.vqa.model import DEFAULT_LAYER, Vocabulary, VQANet

__all__ = ["FIG12", "VQAExplanation", "explain_answers", "to_input"]

#: Fig. 12's methods, in the paper's column order.
FIG12 = ("guided-backprop", "gradcam", "guided-gradcam")


def to_input(image: Image.Image) -> torch.Tensor:
    """A photo as the net's input (1, 3, 112, 112), float32 in [0, 1] (bilinear resize)."""
    import numpy as np

    img = image.convert("RGB")
    if img.size != (INPUT_SIZE, INPUT_SIZE):
        img = img.resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
    return x.permute(2, 0, 1)[None].contiguous()


@dataclass(frozen=True)
class VQAExplanation:
    """What was asked and the maps.

    ``probabilities``: (N,) softmax over the answer set. ``answers``: the K explained answers;
    ``maps[method]``: their :class:`~camlens.Explanation` (targets (1, K) = answer indices).
    ``contrasts``: (a, b) pairs; ``contrast_maps[method]``: maps of y^a - y^b (1, P, ...)."""

    question: str
    answers: tuple[str, ...]
    probabilities: torch.Tensor
    maps: dict[str, Explanation]
    contrasts: tuple[tuple[str, str], ...] = ()
    contrast_maps: dict[str, Explanation] | None = None

    def top(self, vocab: Vocabulary, k: int = 5) -> list[tuple[str, float]]:
        """The k most probable answers with their probabilities."""
        p, i = self.probabilities.topk(min(k, self.probabilities.numel()))
        return [(vocab.answers[j], float(q)) for q, j in zip(p.tolist(), i.tolist())]


def explain_answers(model: VQANet, vocab: Vocabulary, image: torch.Tensor, question: str,
                    answers: Sequence[str] | None = None, *, top: int = 3,
                    versus: Sequence[tuple[str, str]] = (),
                    methods: Sequence[str] = FIG12,
                    layer: str = DEFAULT_LAYER) -> VQAExplanation:
    """Explain ``answers`` (default: the ``top`` most probable) to ``question`` about ``image``
    (1, 3, 112, 112), and each (a, b) of ``versus`` as y^a - y^b. Unknown words or answers
    raise :class:`~camlens.vqa.model.UnknownWordError`. The model is left untouched."""
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"one image (1, 3, H, W) expected, got shape {tuple(image.shape)}")
    words = vocab.encode([question])
    with torch.no_grad():
        probs = model(image, words).softmax(-1)[0]
    if answers:
        idx = [vocab.answer_index(a) for a in answers]
    else:
        idx = probs.topk(min(top, probs.numel())).indices.tolist()
    pairs = [(vocab.answer_index(a), vocab.answer_index(b)) for a, b in versus]
    maps = camlens.explain(model, (image, words), method=list(methods), layer=layer,
                           target=torch.tensor([idx]))
    contrast_maps = None
    if pairs:
        target = AnswerTarget([a for a, _ in pairs], versus=[b for _, b in pairs])
        contrast_maps = camlens.explain(model, (image, words), method=list(methods),
                                        layer=layer, target=target)
    return VQAExplanation(question, tuple(vocab.answers[i] for i in idx), probs, maps,
                          tuple((vocab.answers[a], vocab.answers[b]) for a, b in pairs),
                          contrast_maps)
