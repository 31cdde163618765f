"""ToMe's bipartite soft matching (the paper's section 3) and size-weighted merging.

Tokens alternate into two sets, A (even positions) and B (odd). Each token of A draws an edge to its most
similar token of B (cosine similarity of the tokens' attention keys, averaged over heads); the ``r`` most
similar edges are kept and their A tokens merged into their B partners, by an average weighted by the tokens'
sizes (how many patches each already stands for). Protected tokens (the class token, first; a distillation
token, second) are never merged: the class token is in A with no edge kept, the distillation token in B never
receives one. The surviving A tokens keep their order, then B's: the class token stays first.
"""
from __future__ import annotations

import torch


def bipartite_soft_matching(metric: torch.Tensor, r: int, class_token: bool = True, distill_token: bool = False):
    """The merge ToMe's matching decides on ``metric`` (batch, tokens, channels): a function that maps any
    (batch, tokens, c) tensor to (batch, tokens - r, c) by summing each merged A token into its B partner."""
    r = min(r, (metric.shape[1] - int(class_token) - int(distill_token)) // 2)
    if r <= 0:
        return lambda x: x
    metric = metric.detach()  # the matching chooses; only the merged tokens carry gradients
    metric = metric / metric.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    a, b = metric[:, ::2], metric[:, 1::2]
    scores = a @ b.transpose(-1, -2)  # (batch, |A|, |B|)
    # the class token (A's first) draws no edge; the distillation token (B's first) takes none. Written as a
    # concatenation (no tensor-and-bool mask), so the graph traces and exports (ONNX, OpenVINO) as it runs.
    if class_token:
        scores = torch.cat([torch.full_like(scores[:, :1], float("-inf")), scores[:, 1:]], dim=1)
    if distill_token:
        scores = torch.cat([torch.full_like(scores[:, :, :1], float("-inf")), scores[:, :, 1:]], dim=2)
    node_max, node_idx = scores.max(dim=-1)
    edge_idx = node_max.argsort(dim=-1, descending=True).unsqueeze(-1)
    unm_idx = edge_idx[:, r:].sort(dim=1).values  # A's survivors, in their order (the class token first)
    src_idx = edge_idx[:, :r]
    dst_idx = node_idx.unsqueeze(-1).gather(1, src_idx)

    def merge(x: torch.Tensor) -> torch.Tensor:
        src, dst = x[:, ::2], x[:, 1::2]
        c = x.shape[-1]
        unm = src.gather(1, unm_idx.expand(-1, -1, c))
        moved = src.gather(1, src_idx.expand(-1, -1, c))
        dst = dst.scatter_add(1, dst_idx.expand(-1, -1, c), moved)
        return torch.cat([unm, dst], dim=1)

    return merge


def merge_wavg(merge, x: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``merge`` as a size-weighted average: merged tokens are the mean of their patches; sizes add."""
    x = merge(x * size)
    size = merge(size)
    return x / size, size


def block_rs(r: int, depth: int, shape: str = "constant") -> list[int]:
    """Tokens each of ``depth`` blocks merges: ``constant``, r in every block (the paper's default); ``decreasing``,
    from 2r in the first block linearly down to 0 in the last (the paper's decreasing schedule: about as many in
    all, more of them early, where tokens are most redundant and blocks cost most)."""
    if shape == "constant":
        return [int(r)] * depth
    if shape != "decreasing":
        raise ValueError(f"schedule = {shape!r}: use constant or decreasing")
    return [int(2 * r - 2 * r * i / max(1, depth - 1)) for i in range(depth)]


def schedule(tokens: int, depth: int, r: int | list[int], protected: int = 1) -> list[int]:
    """Tokens entering each block and after the last (length depth + 1) when block i merges up to ``r`` (or
    ``r[i]``) tokens."""
    rs = r if isinstance(r, list) else [r] * depth
    out = [tokens]
    for ri in rs[:depth]:
        tokens -= max(0, min(ri, (tokens - protected) // 2))
        out.append(tokens)
    return out
