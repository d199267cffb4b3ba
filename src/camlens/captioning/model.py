"""A Show-and-Tell / neuraltalk2-style captioner for world v2: CNN features -> LSTM -> words.

:class:`Captioner` reads an image (B, 3, 112, 112) in [0, 1] with world v2's VGG-like CNN
(``features``; Grad-CAM's layer ``features.18``, the last rectified conv, 14 x 14 x 128), takes
pool5 (B, 128, 7, 7), reduces it with a 1 x 1 convolution to 32 channels and a linear layer to
the image embedding v (B, E). The LSTM reads, at every step t, [v; embed(w_t)] (the image with
each word, as in m-RNN; Show and Tell feeds v once, before ``<start>``: that variant stayed at
the loss of a language model that ignores the image, 1.08 nats a word after 13 epochs here,
where this one reached 0.88 after 4). The hidden state h_t gives logits W h_t + b over the
vocabulary, (B, T, V):

    forward(image, tokens)[:, t] scores the word after tokens[:, t]

(teacher forcing; :class:`camlens.CaptionTarget`'s default ``shift=1``). pool5 keeps where the
objects are, which the captions need (objects are named left to right); a global average would
not. The CNN is the shipped ``vgg`` net; training fine-tunes its last conv block
(:data:`TOP_BLOCK`, ``features.13`` to ``features.18``) with the decoder once the decoder has
learnt on the frozen net (see :mod:`camlens.captioning.train`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from camlens.synthetic.v2 import load_pretrained
from camlens.synthetic.v2.nets import INPUT_MEAN, INPUT_STD, VGGNet

__all__ = ["Captioner", "LAYER", "TOP_BLOCK", "WEIGHTS_DIR", "load_captioner", "shipped_cnn"]

#: Grad-CAM's layer of the captioner: the CNN's last rectified convolution (14 x 14).
LAYER = "features.18"
#: Index in ``features`` where the last conv block (VGG's conv5: three 3x3 convolutions at
#: 14 x 14 and pool5) starts; training fine-tunes ``features[TOP_BLOCK:]``.
TOP_BLOCK = 13
#: Where the trained decoder (``captioner.pt``), ``vocab.json`` and ``accuracy.json`` ship.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


class Captioner(nn.Module):
    """CNN ``features`` (world v2 VGG-like) + ``reduce`` (1x1 conv 128 -> 32, ReLU) +
    ``project`` (linear 32*7*7 -> E), the image embedding v; ``embed`` (V -> E); ``lstm``
    (2E -> H, one layer) reading [v; word] at each step; ``head`` (H -> V).
    ``forward(image, tokens)`` -> logits (B, T, V)."""

    def __init__(self, vocab_size: int, embed: int = 128, hidden: int = 128,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.features = VGGNet().features
        self.reduce = nn.Sequential(nn.Conv2d(128, 32, 1), nn.ReLU())
        self.project = nn.Linear(32 * 7 * 7, embed)
        self.embed = nn.Embedding(vocab_size, embed)
        self.lstm = nn.LSTM(2 * embed, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab_size)

    def pool5(self, image: torch.Tensor) -> torch.Tensor:
        """The CNN's pool5 maps (B, 128, 7, 7) of images (B, 3, 112, 112) in [0, 1]."""
        return self.features((image - INPUT_MEAN) / INPUT_STD)

    def pool4(self, image: torch.Tensor) -> torch.Tensor:
        """The input of the last conv block, pool4 (B, 64, 14, 14), of images in [0, 1]:
        ``pool5(x) == features[TOP_BLOCK:](pool4(x))``."""
        return self.features[:TOP_BLOCK]((image - INPUT_MEAN) / INPUT_STD)

    def image_embedding(self, pool5: torch.Tensor) -> torch.Tensor:
        """v (B, E) from pool5 (B, 128, 7, 7)."""
        return self.project(torch.flatten(self.reduce(pool5), 1))

    def decode(self, pool5: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) of the decoder given pool5 and tokens (B, T) (teacher forcing)."""
        v = self.image_embedding(pool5)[:, None].expand(-1, tokens.shape[1], -1)
        h, _ = self.lstm(self.drop(torch.cat([v, self.embed(tokens)], dim=-1)))
        return self.head(self.drop(h))

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.decode(self.pool5(image), tokens)

    def begin(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The decoding state (h, c, v): zero LSTM state (1, B, H) and the image embedding
        (1, B, E)."""
        v = self.image_embedding(self.pool5(image))[None]
        h = v.new_zeros(1, image.shape[0], self.lstm.hidden_size)
        return h, h.clone(), v

    def step(self, token: torch.Tensor, state: tuple[torch.Tensor, ...]
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Read one token per sequence, (N,): log-probabilities (N, V) of the next word and
        the new state."""
        h, c, v = state
        x = torch.cat([v[0], self.embed(token)], dim=-1)[:, None]
        out, (h, c) = self.lstm(x, (h, c))
        return self.head(out[:, 0]).log_softmax(-1), (h, c, v)


def shipped_cnn() -> dict[str, torch.Tensor]:
    """The state of world v2's shipped ``vgg`` net's ``features`` (the captioner's CNN before
    fine-tuning)."""
    net = load_pretrained("vgg")
    if not isinstance(net, VGGNet):  # pragma: no cover - the registry's vgg is a VGGNet
        raise TypeError(f"world v2's vgg is a {type(net).__name__}, not a VGGNet")
    return net.features.state_dict()


def load_captioner(folder: str | Path | None = None) -> Captioner:
    """The trained captioner from ``folder`` (default :data:`WEIGHTS_DIR`): the decoder and
    the fine-tuned CNN layers from ``captioner.pt`` (sizes in ``accuracy.json``), the CNN's
    other layers from world v2's shipped ``vgg`` net; float32, eval mode."""
    import json

    folder = Path(folder or WEIGHTS_DIR)
    path = folder / "captioner.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: train it with `python -m "
                                f"camlens.captioning.train --out {folder}`")
    meta = json.loads((folder / "accuracy.json").read_text(encoding="utf-8"))["model"]
    model = Captioner(meta["vocab_size"], meta["embed"], meta["hidden"])
    model.features.load_state_dict(shipped_cnn())
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    missing = set(model.state_dict()) - set(state) - {k for k in model.state_dict()
                                                      if k.startswith("features.")}
    if missing:
        raise ValueError(f"{path} lacks {sorted(missing)[:3]}")
    return model.eval()
