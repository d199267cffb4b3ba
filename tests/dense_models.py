"""Small detector- and segmenter-shaped models with fixed weights, whose explained scores are
known functions of the layer ``features`` (B, 4, 4, 4), so Grad-CAM's weights can be derived
by hand."""

from __future__ import annotations

import torch
from torch import nn

SIDE = 4  # features are (B, 4, SIDE, SIDE) for an 8x8 image (stride 2)


def _features() -> nn.Conv2d:
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.5)
        conv.bias.copy_(torch.randn(4, generator=g) * 0.1)
    return conv


class TorchvisionStyleDetector(nn.Module):
    """Three anchors with fixed labels; score_j = W_j . GAP(A) + b_j, box_j = anchor_j +
    0.1 * (V_j . GAP(A)) on every coordinate. Predictions with score <= -10 are dropped (a
    non-differentiable selection, as NMS is). Returns [{boxes, labels, scores}] per image."""

    ANCHORS = torch.tensor([[0.0, 0.0, 4.0, 4.0], [4.0, 4.0, 8.0, 8.0], [1.0, 1.0, 7.0, 7.0]])
    LABELS = torch.tensor([1, 2, 1])

    def __init__(self) -> None:
        super().__init__()
        self.features = _features()
        self.score = nn.Linear(4, 3)
        self.shift = nn.Linear(4, 3, bias=False)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            self.score.weight.copy_(torch.randn(3, 4, generator=g))
            self.score.bias.copy_(torch.tensor([0.5, -0.2, 0.1]))
            self.shift.weight.copy_(torch.randn(3, 4, generator=g))

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        pooled = self.features(x).mean(dim=(2, 3))  # (B, 4)
        scores = self.score(pooled)  # (B, 3)
        boxes = self.ANCHORS.to(x.dtype) + 0.1 * self.shift(pooled)[:, :, None]  # (B, 3, 4)
        out = []
        for b in range(x.shape[0]):
            keep = scores[b].detach() > -10
            out.append({"boxes": boxes[b][keep], "labels": self.LABELS[keep],
                        "scores": scores[b][keep]})
        return out


class YoloStyleDetector(nn.Module):
    """One prediction per feature cell (N = 16): a fixed 2x2 box centred on the cell (cx, cy,
    w, h), objectness p_o = W_o . A_n + b_o and class scores p = W_c A_n + b_c (linear, so
    d(p_c p_o)/dA_n = p_c W_o + p_o W_c,c). Returns (raw (B, 16, 4 + 1 + 3), features)."""

    CLASSES = 3

    def __init__(self) -> None:
        super().__init__()
        self.features = _features()
        self.head = nn.Conv2d(4, 1 + self.CLASSES, 1)
        g = torch.Generator().manual_seed(2)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=g))
            self.head.bias.copy_(torch.tensor([1.0, 0.3, -0.2, 0.4]))

    @staticmethod
    def grid_boxes() -> torch.Tensor:
        """(16, 4) cx, cy, w, h: cell (i, j) of the 4x4 grid at (2j + 1, 2i + 1), size 2."""
        i, j = torch.meshgrid(torch.arange(SIDE), torch.arange(SIDE), indexing="ij")
        centre = torch.stack([2.0 * j + 1, 2.0 * i + 1], dim=-1).reshape(-1, 2)
        return torch.cat([centre, torch.full((SIDE * SIDE, 2), 2.0)], dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.features(x)
        head = self.head(a).flatten(2).transpose(1, 2)  # (B, 16, 1 + C)
        boxes = self.grid_boxes().to(x.dtype).expand(x.shape[0], -1, -1)
        return torch.cat([boxes, head], dim=2), a


class Segmenter(nn.Module):
    """Logits z = W A + b per pixel of the (B, 4, 4, 4) features (a 1x1 convolution), returned
    as torchvision's segmentation models do: {"out": z, "aux": z / 2}."""

    CLASSES = 3

    def __init__(self) -> None:
        super().__init__()
        self.features = _features()
        self.classifier = nn.Conv2d(4, self.CLASSES, 1)
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.randn(self.classifier.weight.shape, generator=g))
            self.classifier.bias.copy_(torch.tensor([0.2, -0.1, 0.0]))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.classifier(self.features(x))
        return {"out": z, "aux": z / 2}
