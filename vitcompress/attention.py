"""Attention kernels on (..., n, d) tensors: exact softmax attention and its Nyström approximation.

Both the ``nystrom`` method (:mod:`vitcompress.methods.nystrom`, which puts the approximation in a ViT)
and the attention-scaling benchmark (:mod:`vitcompress.scaling`) compute with these.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def segment_means(x: torch.Tensor, m: int) -> torch.Tensor:
    """Means of ``m`` contiguous, near-equal segments along dim -2: (..., n, d) -> (..., m, d)."""
    n = x.shape[-2]
    if not 1 <= m <= n:
        raise ValueError(f"landmarks = {m} must be between 1 and the sequence length {n}")
    bounds = torch.div(torch.arange(m + 1, device=x.device) * n, m, rounding_mode="floor")
    csum = F.pad(x.cumsum(dim=-2), (0, 0, 1, 0))  # csum[..., j, :] = sum of the first j rows
    sums = csum[..., bounds[1:], :] - csum[..., bounds[:-1], :]
    return sums / (bounds[1:] - bounds[:-1]).to(x.dtype).unsqueeze(-1)


def iterative_pinv(a: torch.Tensor, iterations: int = 6) -> torch.Tensor:
    """Moore–Penrose pseudo-inverse of each matrix in ``a`` (..., m, m) by the iterative method."""
    eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
    # Z0 = Aᵀ / (‖A‖₁‖A‖∞) guarantees convergence.
    norm = a.abs().sum(dim=-2).amax(dim=-1) * a.abs().sum(dim=-1).amax(dim=-1)
    z = a.transpose(-1, -2) / norm[..., None, None]
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def nystrom_attention(q, k, v, landmarks: int, iterations: int = 6, scale: float | None = None):
    """Nyström approximation of softmax(q kᵀ · scale) v for q, k, v of shape (..., n, d)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    q = q * scale
    q_l, k_l = segment_means(q, landmarks), segment_means(k, landmarks)
    kernel_1 = torch.softmax(q @ k_l.transpose(-1, -2), dim=-1)
    kernel_2 = torch.softmax(q_l @ k_l.transpose(-1, -2), dim=-1)
    kernel_3 = torch.softmax(q_l @ k.transpose(-1, -2), dim=-1)
    return kernel_1 @ (iterative_pinv(kernel_2, iterations) @ (kernel_3 @ v))


def exact_attention(q, k, v, scale: float | None = None):
    """softmax(q kᵀ · scale) v written out (the n×n matrix is materialised)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return torch.softmax((q * scale) @ k.transpose(-1, -2), dim=-1) @ v
