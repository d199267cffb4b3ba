"""SEC's three losses (Kolesnikov & Lampert, ECCV 2016), on a segmentation net's output.

Notation: f (B, L, h, w) the net's per-pixel class probabilities (softmax over L labels; label 0
is the background, label c + 1 the world's class c); an image's cues S (B, L, h, w) bool; its
present labels ``present`` (B, L) bool (background always present).

- seeding:    L_seed = -1 / sum_c |S_c| * sum_c sum_{u in S_c} log f_{u,c}
- expansion:  L_expand = -1/|T| sum_{c in T} log G_c(f; d+)
                         - 1/|C'\\T| sum_{c in C'\\T} log(1 - G_c(f; d-))
                         - log G_bg(f; d_bg)
              with T the present foreground classes, C' all foreground classes, and Global
              Weighted Rank Pooling G_c(f; d) = sum_j d^(j-1) f_{i_j,c} / sum_j d^(j-1) over the
              pixels sorted by f_{.,c} in decreasing order (d = 0: the maximum).
- constrain:  L_constrain = 1/n sum_u sum_c Q_{u,c} log(Q_{u,c} / f_{u,c}), Q = CRF(X, f)
              (a constant: no gradient flows through the CRF).

Each loss is computed per image and averaged over the batch.
"""

from __future__ import annotations

import torch

__all__ = ["D_PLUS", "D_MINUS", "D_BG", "gwrp", "seeding_loss", "expansion_loss",
           "constrain_loss"]

#: SEC's GWRP decays: present foreground classes, absent ones (0: max pooling), background.
D_PLUS, D_MINUS, D_BG = 0.996, 0.0, 0.999

_EPS = 1e-7


def gwrp(scores: torch.Tensor, decay: float) -> torch.Tensor:
    """Global Weighted Rank Pooling over the last dimension: (..., n) -> (...).

    G = sum_j d^(j-1) s_(j) / sum_j d^(j-1), s_(1) >= s_(2) >= ... (d = 0 gives max, d = 1 the
    mean)."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"GWRP decay must be in [0, 1], got {decay}")
    if decay == 0.0:
        return scores.amax(-1)
    n = scores.shape[-1]
    ranked = scores.sort(dim=-1, descending=True).values
    weights = torch.pow(torch.tensor(decay, dtype=scores.dtype, device=scores.device),
                        torch.arange(n, dtype=scores.dtype, device=scores.device))
    return (ranked * weights).sum(-1) / weights.sum()


def seeding_loss(log_probs: torch.Tensor, cues: torch.Tensor) -> torch.Tensor:
    """L_seed from log f (B, L, h, w) and cues (B, L, h, w) bool; an image without cues adds 0."""
    cues = cues.to(log_probs.dtype)
    total = -(log_probs * cues).flatten(1).sum(1)
    count = cues.flatten(1).sum(1)
    return (total / count.clamp(min=1)).mean()


def expansion_loss(probs: torch.Tensor, present: torch.Tensor, d_plus: float = D_PLUS,
                   d_minus: float = D_MINUS, d_bg: float = D_BG) -> torch.Tensor:
    """L_expand from f (B, L, h, w) and ``present`` (B, L) bool (label 0 = background)."""
    flat = probs.flatten(2)                                                  # (B, L, n)
    fg_present = present[:, 1:].to(probs.dtype)
    fg_absent = 1.0 - fg_present
    # GWRP with d+ only where it is used (present classes): sorting every class is the cost
    g_plus = torch.ones_like(fg_present)
    g_plus[present[:, 1:]] = gwrp(flat[:, 1:][present[:, 1:]], d_plus)
    g_minus = gwrp(flat[:, 1:], d_minus)                                     # (B, L-1)
    g_bg = gwrp(flat[:, 0], d_bg)                                            # (B,)
    term_present = -(torch.log(g_plus.clamp(min=_EPS)) * fg_present).sum(1) \
        / fg_present.sum(1).clamp(min=1)
    term_absent = -(torch.log((1.0 - g_minus).clamp(min=_EPS)) * fg_absent).sum(1) \
        / fg_absent.sum(1).clamp(min=1)
    term_bg = -torch.log(g_bg.clamp(min=_EPS))
    return (term_present + term_absent + term_bg).mean()


def constrain_loss(probs: torch.Tensor, crf_q: torch.Tensor) -> torch.Tensor:
    """Mean over images and pixels of KL(Q || f) = sum_c Q log(Q / f); ``crf_q`` (B, L, h, w) is
    detached (0 log 0 = 0)."""
    q = crf_q.detach()
    kl = torch.xlogy(q, q) - q * torch.log(probs.clamp(min=_EPS))
    return kl.sum(1).mean()
