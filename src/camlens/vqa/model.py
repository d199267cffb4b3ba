"""The VQA net of Sec. 8.2, in the style of Lu et al.'s deeper LSTM Q + norm I, for world v2.

``VQANet(image, question) -> (B, N)`` answer logits:

- image (B, 3, 112, 112) in [0, 1] -> world v2's VGG-like convolutions (``cnn``, the shipped
  ``synthetic:vgg`` features, frozen; Grad-CAM's layer ``cnn.18`` is its last rectified conv at
  14x14) -> pool5 (B, 128, 7, 7) flattened -> L2-normalised ("norm I") -> linear -> tanh: v (B, D);
- question (B, T) word ids (0 = padding, at the end) -> embedding -> tanh -> a 2-layer LSTM
  ("deeper LSTM Q") -> the final cell and hidden states of both layers, concatenated (B, 4H)
  -> linear -> tanh: q (B, D);
- fusion v * q (pointwise product) -> linear -> tanh -> linear: the scores of the fixed
  answer set (softmax over answers).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from camlens.synthetic.v2.nets import INPUT_MEAN, INPUT_STD, VGGNet
from camlens.synthetic.v2.words import tokenize

__all__ = ["VQANet", "Vocabulary", "UnknownWordError", "BUNDLED_DIR", "DEFAULT_LAYER",
           "load_bundled"]

#: Where the shipped VQA weights, vocabulary and answer set live.
BUNDLED_DIR = Path(__file__).resolve().parent / "weights"
#: Grad-CAM's layer: the rectified output of the last convolution (14x14), as relu5_3.
DEFAULT_LAYER = "cnn.18"
PAD = "<pad>"


class UnknownWordError(ValueError):
    """A question word or an answer outside the model's vocabulary / answer set."""


def nearest(word: str, known: Sequence[str], n: int = 4) -> list[str]:
    """The ``n`` entries of ``known`` closest to ``word`` (difflib's ratio; a lower cutoff
    than difflib's default so that a misspelling still gets suggestions)."""
    import difflib

    return difflib.get_close_matches(word, list(known), n=n, cutoff=0.5)


@dataclass(frozen=True)
class Vocabulary:
    """Question words (index 0 is padding) and the fixed answer set."""

    words: tuple[str, ...]
    answers: tuple[str, ...]

    def encode(self, questions: Sequence[str]) -> torch.Tensor:
        """Word ids (B, T), padded with 0 at the end (T: the longest question). An unknown
        word raises :class:`UnknownWordError` naming the nearest known words."""
        index = {w: i for i, w in enumerate(self.words)}
        rows: list[list[int]] = []
        for q in questions:
            toks = tokenize(q)
            if not toks:
                raise UnknownWordError(f"the question {q!r} has no words")
            for t in toks:
                if t not in index:
                    near = nearest(t, self.words[1:])
                    hint = (f"; nearest: {', '.join(near)}" if near else
                            "; no close word (the model knows questions about colour, shape, "
                            "count, existence and position of world v2's objects)")
                    raise UnknownWordError(f"unknown word {t!r} in the question{hint}")
            rows.append([index[t] for t in toks])
        out = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, :len(r)] = torch.tensor(r)
        return out

    def answer_index(self, answer: str) -> int:
        """The index of ``answer`` (case-insensitive) in the answer set."""
        a = " ".join(tokenize(answer)) if answer.strip() else answer
        if a in self.answers:
            return self.answers.index(a)
        near = nearest(a, self.answers)
        hint = (f"; nearest: {', '.join(near)}" if near
                else f"; the answers are {', '.join(self.answers)}")
        raise UnknownWordError(f"unknown answer {answer!r}{hint}")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"words": list(self.words),
                                          "answers": list(self.answers)}, indent=1) + "\n",
                              encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(tuple(d["words"]), tuple(d["answers"]))


class VQANet(nn.Module):
    """Deeper LSTM Q + norm I (module doc). ``forward(image (B, 3, 112, 112), question (B, T)
    long) -> (B, n_answers)`` logits."""

    def __init__(self, n_words: int, n_answers: int, *, embed: int = 64, hidden: int = 96,
                 common: int = 192) -> None:
        super().__init__()
        self.cnn = VGGNet().features  # conv blocks + pool5 (features.19)
        self.image_fc = nn.Linear(128 * 7 * 7, common)
        self.embed = nn.Embedding(n_words, embed, padding_idx=0)
        self.lstm = nn.LSTM(embed, hidden, num_layers=2, batch_first=True)
        self.question_fc = nn.Linear(4 * hidden, common)
        self.classifier = nn.Sequential(nn.Linear(common, common), nn.Tanh(),
                                        nn.Linear(common, n_answers))

    def image_features(self, image: torch.Tensor) -> torch.Tensor:
        """pool5 (B, 128 * 7 * 7), L2-normalised per image."""
        f = torch.flatten(self.cnn((image - INPUT_MEAN) / INPUT_STD), 1)
        return f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def answer_scores(self, feats: torch.Tensor, question: torch.Tensor,
                      rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, N) from normalised image features (S, 6272) and word ids (B, T);
        question b is about image ``rows[b]`` (default: image b, S = B)."""
        lengths = (question != 0).sum(1).clamp_min(1).cpu()
        e = torch.tanh(self.embed(question))
        packed = pack_padded_sequence(e, lengths, batch_first=True, enforce_sorted=False)
        _, (h, c) = self.lstm(packed)  # (2, B, H) each
        q = torch.cat([h[0], c[0], h[1], c[1]], dim=1)
        v = torch.tanh(self.image_fc(feats))
        fused = (v if rows is None else v[rows]) * torch.tanh(self.question_fc(q))
        return self.classifier(fused)

    def forward(self, image: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        return self.answer_scores(self.image_features(image), question)


def load_bundled(folder: str | Path | None = None) -> tuple[VQANet, Vocabulary]:
    """The trained VQA net (float32, eval mode, CNN frozen) and its vocabulary, from ``folder``
    (default :data:`BUNDLED_DIR`: ``vqa.pt``, ``vocab.json``)."""
    folder = Path(folder or BUNDLED_DIR)
    for name in ("vqa.pt", "vocab.json"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} is missing: train the VQA net with "
                                    f"`python -m camlens.vqa.train --out {folder}`")
    vocab = Vocabulary.load(folder / "vocab.json")
    state = torch.load(folder / "vqa.pt", map_location="cpu", weights_only=True)
    cfg = {k: int(v) for k, v in state.pop("_config").items()} if "_config" in state else {}
    model = VQANet(len(vocab.words), len(vocab.answers), **cfg)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), vocab
