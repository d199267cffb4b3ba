"""Small vision-language models for the caption and VQA tests: seeded, eval mode, float64.

- :class:`TableCaptioner`: logits[:, t] = table[tokens[:, t]] + GAP(A) U, with A a conv layer's
  output; on a zero image (zero conv bias) the logits are the table's rows, so caption scores
  are sums of hand-computable log-softmax values, and d log p / dA is known in closed form.
- :class:`LSTMCaptioner`: Show-and-Tell style, a CNN, its pooled features as the LSTM's first
  input, then the caption tokens; logits[:, t] predict tokens[:, t + 1].
- :class:`TinyVQA`: Lu et al. style, CNN features times an LSTM question encoding, an MLP over
  a fixed answer set.
- :func:`hf_captioner`: a ``transformers`` VisionEncoderDecoderModel (ViT + GPT-2) from
  configs with random weights (no download).

``out`` selects how a model returns its scores: ``"tensor"``, ``"object"`` (an object with
``.logits``, as Hugging Face models return) or ``"dict"`` (``{"logits": ..., ...}``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

DTYPE = torch.float64


@dataclass
class Output:
    """A Hugging Face style output: scores in ``.logits``, other fields beside them."""

    logits: torch.Tensor
    features: torch.Tensor


def wrap(logits: torch.Tensor, features: torch.Tensor, out: str) -> Any:
    if out == "object":
        return Output(logits, features)
    if out == "dict":
        return {"features": features, "logits": logits}
    return logits


class TableCaptioner(nn.Module):
    """logits (B, T, V) = table[tokens] + GAP(conv(image)) @ U; ``LAYER`` is the conv."""

    LAYER = "conv"

    def __init__(self, table: torch.Tensor, channels: int = 4, out: str = "tensor") -> None:
        super().__init__()
        self.out = out
        vocab = table.shape[1]
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.table = nn.Parameter(table.clone())
        self.u = nn.Parameter(torch.randn(channels, vocab))

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> Any:
        a = self.conv(image)
        logits = self.table[tokens] + (a.mean((2, 3)) @ self.u)[:, None, :]
        return wrap(logits, a, self.out)


class LSTMCaptioner(nn.Module):
    """CNN (with BatchNorm) -> GAP -> linear as step 0 of an LSTM, then the embedded tokens;
    dropout, then the logits of steps 1..T, so logits[:, t] predict tokens[:, t + 1]
    (``shift=1``)."""

    LAYER = "features.5"

    def __init__(self, vocab: int = 12, hidden: int = 16, out: str = "tensor") -> None:
        super().__init__()
        self.out = out
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
            nn.MaxPool2d(2), nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(0.2)
        self.project = nn.Linear(12, hidden)
        self.embed = nn.Embedding(vocab, hidden)
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> Any:
        a = self.features(image)
        steps = torch.cat([self.project(a.mean((2, 3)))[:, None], self.embed(tokens)], dim=1)
        h, _ = self.lstm(steps)
        return wrap(self.head(self.dropout(h[:, 1:])), a, self.out)


class TinyVQA(nn.Module):
    """Image (B, 3, H, W) and question ids (B, L) -> answer scores (B, N): an MLP on the
    pointwise product of the projected GAP features and the question LSTM's last state."""

    LAYER = "features.4"

    def __init__(self, words: int = 10, answers: int = 6, hidden: int = 16,
                 out: str = "tensor") -> None:
        super().__init__()
        self.out = out
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.project = nn.Linear(12, hidden)
        self.embed = nn.Embedding(words, hidden)
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, answers))

    def forward(self, image: torch.Tensor, question: torch.Tensor) -> Any:
        a = self.features(image)
        _, (h, _) = self.lstm(self.embed(question))
        fused = torch.tanh(self.project(a.mean((2, 3)))) * torch.tanh(h[-1])
        return wrap(self.mlp(fused), a, self.out)


def build(cls: type[nn.Module], seed: int = 0, **kw: Any) -> Any:
    """``cls(**kw)`` built under ``seed``, in eval mode and float64."""
    torch.manual_seed(seed)
    return cls(**kw).to(DTYPE).eval()


def hf_captioner(seed: int = 0, vocab: int = 20) -> nn.Module:
    """A tiny VisionEncoderDecoderModel (ViT encoder: 16 x 16 images, 4 x 4 patches, one block;
    GPT-2 decoder: one block) with random weights, float64, eval mode. Its ViT layers (and
    :data:`HF_LAYER`) output (B, 1 + 16, C) tokens: explain them with ``reshape="tokens"``."""
    from transformers import (
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
    )

    enc = ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32, image_size=16, patch_size=4, num_channels=3)
    dec = GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=vocab, n_positions=16,
                     bos_token_id=0, eos_token_id=1)
    torch.manual_seed(seed)
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    return VisionEncoderDecoderModel(config=cfg).to(DTYPE).eval()


HF_LAYER = "encoder.layernorm"  # the ViT's last output (B, 1 + 16, C), which the decoder reads
