"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").

Per layer: fuse the heads (mean, max or min), optionally discard the lowest attentions of each row
(never the prefix-token columns), add the residual connection as A <- (A + I) / 2 and renormalise the
rows; then multiply from the start layer to the last, the later layer on the left. The class token's
row of the product (or the mean over rows for a model without one) is the map over patches.

Unlike vit-explain, rows are renormalised with `keepdims` (its issue #16) and the discard works per
row instead of over the flattened matrix.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch

from vit_core.capture import Capture, tensor_view
from vit_core.maps import patch_map
from vit_core.validate import check_choice, check_index, check_range

HeadFusion = Literal["mean", "max", "min"]


def fuse_heads(attentions: torch.Tensor, head_fusion: HeadFusion = "mean") -> torch.Tensor:
    """`[..., head, query, key]` -> `[..., query, key]`. Rows of max/min fusions are renormalised later."""
    check_choice(head_fusion, get_args(HeadFusion), "head fusion")
    if head_fusion == "mean":
        return attentions.mean(dim=-3)
    if head_fusion == "max":
        return attentions.amax(dim=-3)
    return attentions.amin(dim=-3)


def discard_lowest(attention: torch.Tensor, ratio: float, num_prefix_tokens: int) -> torch.Tensor:
    """Zero the lowest `ratio` of each row's patch columns `[..., query, key]`; prefix columns are kept."""
    check_range(ratio, 0, 1, "discard ratio", high_open=True)
    patches = attention[..., num_prefix_tokens:]  # [..., query, patches]
    drop = int(patches.shape[-1] * ratio)
    if drop == 0:
        return attention
    lowest = patches.topk(drop, dim=-1, largest=False).indices
    kept = patches.scatter(-1, lowest, 0.0)
    return torch.cat([attention[..., :num_prefix_tokens], kept], dim=-1)


def with_residual(per_layer: torch.Tensor) -> torch.Tensor:
    """(A + I) / 2 with rows renormalised (keepdim), for every layer of `[layer, N, N]`."""
    mixed = (per_layer + torch.eye(per_layer.shape[-1], dtype=per_layer.dtype)) / 2
    return mixed / mixed.sum(dim=-1, keepdim=True)


def chain_with_residual(per_layer: torch.Tensor) -> torch.Tensor:
    """Π over layers (last on the left) of `with_residual(A)`, for `[layer, N, N]` float64."""
    joint = torch.eye(per_layer.shape[-1], dtype=per_layer.dtype)
    for attention in with_residual(per_layer):
        joint = attention @ joint
    return joint


def rollout_row(per_layer: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """`query`ᵀ · Π (A + I)/2 (rows renormalised, last layer on the left) without forming the product.

    One vector-matrix product per layer (O(L·N²)) instead of the full N x N chain (O(L·N³)), and no
    N x N temporary: with row sums s, row-renormalised (A + I)/2 is diag(1/(s+1)) · (A + I), so
    r · that = w · A + w with w = r / (s + 1).
    """
    row = query.to(per_layer.dtype)
    for attention in per_layer.flip(0):  # the last layer is the leftmost factor
        weighted = row / (attention.sum(dim=-1) + 1)
        row = weighted @ attention + weighted
    return row


def rollout_matrix(
    attentions: np.ndarray,
    num_prefix_tokens: int,
    head_fusion: HeadFusion = "mean",
    discard_ratio: float = 0.0,
    start_layer: int = 0,
) -> np.ndarray:
    """The joint attention `[N, N]` from the input of `start_layer` to the output of the last layer.

    Runs in torch: numpy's BLAS threads can stall for orders of magnitude on a busy 2-core CPU.
    """
    layers = attentions.shape[0]
    start_layer = check_index(start_layer, layers, "start layer")
    stack = tensor_view(attentions[start_layer:])  # [L', H, N, N], no copy
    fused = fuse_heads(stack, head_fusion).double()  # [L', N, N]; the product runs in float64
    return chain_with_residual(discard_lowest(fused, discard_ratio, num_prefix_tokens)).numpy()


def rollout(
    capture: Capture,
    head_fusion: HeadFusion = "mean",
    discard_ratio: float = 0.0,
    start_layer: int = 0,
) -> np.ndarray:
    """Attention rollout as a `[rows, cols]` map over patches, float32.

    Defaults (mean fusion, no discard, from layer 0) are the paper's; vit-explain's demo uses max
    fusion with discard 0.9, which sharpens the map.
    """
    layers, _, tokens, _ = capture.attentions.shape
    start_layer = check_index(start_layer, layers, "start layer")
    stack = tensor_view(capture.attentions[start_layer:])  # [L', H, N, N]
    fused = discard_lowest(fuse_heads(stack, head_fusion), discard_ratio, capture.num_prefix_tokens).double()
    return patch_map(rollout_row(fused, query_vector(tokens, capture.has_class_token)).numpy(), capture)


def query_vector(tokens: int, has_class_token: bool) -> torch.Tensor:
    """The class token's one-hot row selector, or the mean over all rows for a model without one."""
    if has_class_token:
        return torch.nn.functional.one_hot(torch.tensor(0), tokens).double()
    return torch.full((tokens,), 1.0 / tokens, dtype=torch.float64)
