"""Fully-connected CRF, exact mean-field inference (Kraehenbuehl & Koltun, NIPS 2011), in torch.

Energy of a labelling x over pixels i (positions p_i, colours I_i):

    E(x) = sum_i psi_u(x_i) + sum_{i<j} mu(x_i, x_j) k(f_i, f_j),
    k    = w_app  exp(-|p_i - p_j|^2 / 2 theta_alpha^2 - |I_i - I_j|^2 / 2 theta_beta^2)
         + w_smooth exp(-|p_i - p_j|^2 / 2 theta_gamma^2),

with the Potts compatibility mu(l, l') = [l != l']. One mean-field step updates every pixel in
parallel from the previous Q:

    Q_i(l) = exp(-psi_u,i(l) - sum_{l'} mu(l, l') sum_{j != i} k_ij Q_j(l')) / Z_i.

With Potts, sum_{l' != l} Q_j(l') = 1 - Q_j(l), so the message is (sum_j k_ij) - (K Q)_i(l); the
first term does not depend on l and cancels in Z_i, leaving Q_i = softmax(-psi_u,i + (K Q)_i).

**Exact, not approximated**: K is the dense (N, N) kernel matrix on the grid (N = h w pixels),
no permutohedral lattice (pydensecrf's approximation). At SEC's working resolution (28x28 for
world v2's 112 px images, N = 784) K is 2.4 MB per image, and 56x56 (N = 3136, 39 MB) is still
affordable for test-time post-processing. Why our own code: the only dense-CRF package on the
index, ``pydensecrf2``, is a fork of the unmaintained pydensecrf that needs a C++ build, and its
lattice filter is approximate.

Positions are measured in *image* pixels (a grid cell of a 28x28 grid on a 112 px image is 4
pixels wide), colours in 0-255 units, so one set of parameters serves every grid size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["CRFParams", "kernel_matrix", "image_kernels", "mean_field", "crf_probabilities"]


@dataclass(frozen=True)
class CRFParams:
    """Kernel weights and widths. ``theta_alpha``, ``theta_gamma`` in image pixels,
    ``theta_beta`` in colour units (0-255). Defaults sized for 112 px images (SEC used 80 px and
    13 colour units at ~500 px, with a 3 px smoothness kernel) with the kernel left unnormalised:
    the weights are per neighbour, so they are small."""

    w_app: float = 0.2
    theta_alpha: float = 16.0
    theta_beta: float = 13.0
    w_smooth: float = 0.1
    theta_gamma: float = 4.0
    iterations: int = 10

    def __post_init__(self) -> None:
        for name in ("theta_alpha", "theta_beta", "theta_gamma"):
            if not getattr(self, name) > 0:
                raise ValueError(f"CRFParams.{name} must be > 0, got {getattr(self, name)}")
        if self.w_app < 0 or self.w_smooth < 0:
            raise ValueError(f"CRF kernel weights must be >= 0, got w_app={self.w_app}, "
                             f"w_smooth={self.w_smooth}")
        if self.iterations < 0:
            raise ValueError(f"CRFParams.iterations must be >= 0, got {self.iterations}")


def _position_terms(h: int, w: int, params: CRFParams, cell: float, dtype: torch.dtype
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(appearance position factor exp(-|p_i-p_j|^2 / 2 theta_alpha^2), smoothness kernel
    w_smooth exp(-|p_i-p_j|^2 / 2 theta_gamma^2)), both (N, N), shared by every image."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=dtype), torch.arange(w, dtype=dtype),
                            indexing="ij")
    pos = (torch.stack([ys, xs], dim=-1).reshape(-1, 2) + 0.5) * cell      # (N, 2)
    d_pos = torch.cdist(pos, pos).square()                                  # (N, N)
    return (torch.exp(-d_pos / (2 * params.theta_alpha ** 2)),
            params.w_smooth * torch.exp(-d_pos / (2 * params.theta_gamma ** 2)))


def kernel_matrix(image: torch.Tensor, params: CRFParams, cell: float) -> torch.Tensor:
    """Dense pairwise kernel K (B, N, N) with zero diagonal (j != i).

    ``image``: (B, 3, h, w) colours in [0, 1] on the CRF grid; ``cell``: the width of one grid
    cell in image pixels (positions are cell centres, (index + 0.5) * cell)."""
    b, _, h, w = image.shape
    app_pos, smooth = _position_terms(h, w, params, cell, image.dtype)
    col = image.reshape(b, 3, h * w).transpose(1, 2) * 255.0                # (B, N, 3)
    sq = col.square().sum(-1)                                               # (B, N)
    d_col = (sq[:, :, None] + sq[:, None, :] - 2 * torch.bmm(col, col.transpose(1, 2)))
    k = torch.exp(d_col.clamp_(min=0).mul_(-1.0 / (2 * params.theta_beta ** 2)))
    k = k.mul_(params.w_app * app_pos).add_(smooth)
    return k.mul_(1.0 - torch.eye(h * w, dtype=image.dtype))


def image_kernels(images: torch.Tensor, grid: int, params: CRFParams, batch: int = 32,
                  dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """K (N_images, grid^2, grid^2) for images (N, 3, H, W) in [0, 1] (square), area-averaged
    to ``grid`` x ``grid``, stored in ``dtype`` (float16 by default: 1.2 MB per image at grid
    28), so that training computes each image's kernel once rather than once per visit."""
    cell = images.shape[-1] / grid
    parts = [kernel_matrix(F.adaptive_avg_pool2d(images[i:i + batch].float(), (grid, grid)),
                           params, cell).to(dtype)
             for i in range(0, images.shape[0], batch)]
    return torch.cat(parts)


def mean_field(unary: torch.Tensor, image: torch.Tensor, params: CRFParams,
               cell: float = 1.0, kernel: torch.Tensor | None = None) -> torch.Tensor:
    """Q (B, L, h, w) after ``params.iterations`` parallel mean-field steps (module docstring).

    ``unary``: psi_u (B, L, h, w), energies (e.g. -log p); +inf forbids a label at a pixel.
    ``image``: (B, 3, h, w) in [0, 1], the same grid. Q starts at softmax(-psi_u), so zero
    iterations (or zero kernel weights) return exactly that. ``kernel``: K (B, N, N) when
    already computed by :func:`kernel_matrix` (any float dtype; used in ``unary``'s)."""
    if unary.dim() != 4 or image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"mean_field wants unary (B, L, h, w) and image (B, 3, h, w), got "
                         f"{tuple(unary.shape)} and {tuple(image.shape)}")
    if unary.shape[0] != image.shape[0] or unary.shape[2:] != image.shape[2:]:
        raise ValueError(f"unary {tuple(unary.shape)} and image {tuple(image.shape)} must share "
                         "batch size and grid")
    b, n_labels, h, w = unary.shape
    logits = -unary.reshape(b, n_labels, h * w).transpose(1, 2)             # (B, N, L)
    q = torch.softmax(logits, dim=-1)
    if params.iterations and (params.w_app or params.w_smooth):
        k = (kernel_matrix(image.to(unary.dtype), params, cell) if kernel is None
             else kernel.to(unary.dtype))
        for _ in range(params.iterations):
            q = torch.softmax(logits + torch.bmm(k, q), dim=-1)
    return q.transpose(1, 2).reshape(b, n_labels, h, w)


def crf_probabilities(probs: torch.Tensor, image: torch.Tensor, params: CRFParams,
                      allowed: torch.Tensor | None = None, kernel: torch.Tensor | None = None,
                      eps: float = 1e-8) -> torch.Tensor:
    """CRF(X, f) as SEC uses it: unaries -log f from probabilities ``probs`` (B, L, h, w), the
    ``image`` (B, 3, H, W) in [0, 1] area-averaged to the grid, positions in image pixels
    (square images). ``allowed`` (B, L) bool restricts the labels (SEC: background and the
    image's classes); the others get probability 0, and inference runs on the allowed labels
    only (padded to the most any image allows). ``kernel``: precomputed K (B, N, N) for this
    grid. Returns Q (B, L, h, w), detached."""
    with torch.no_grad():
        b, n_labels, h, w = probs.shape
        small = F.adaptive_avg_pool2d(image.to(probs.dtype), (h, w))
        unary = -torch.log(probs.clamp(min=eps))
        cell = image.shape[-1] / w
        if allowed is None:
            return mean_field(unary, small, params, cell=cell, kernel=kernel)
        if allowed.shape != (b, n_labels) or not bool(allowed.any(1).all()):
            raise ValueError(f"allowed must be (B, L) = {(b, n_labels)} bool with at least one "
                             f"label per image, got {tuple(allowed.shape)}")
        k_max = int(allowed.sum(1).max())
        # allowed labels first (stable: in label order), then padding that is forbidden
        index = torch.argsort((~allowed).to(torch.int8), dim=1, stable=True)[:, :k_max]
        keep = allowed.gather(1, index)                                      # (B, k_max)
        sub = unary.gather(1, index[:, :, None, None].expand(-1, -1, h, w))
        sub = sub.masked_fill(~keep[:, :, None, None], float("inf"))
        q_sub = mean_field(sub, small, params, cell=cell, kernel=kernel)
        q = torch.zeros_like(probs)
        return q.scatter_add_(1, index[:, :, None, None].expand(-1, -1, h, w),
                              q_sub * keep[:, :, None, None])
