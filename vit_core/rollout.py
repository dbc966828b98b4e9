"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").

Per layer: fuse the heads (mean, max or min), optionally discard the lowest attentions of each row
(never the prefix-token columns), add the residual connection as A <- (A + I) / 2 and renormalise the
rows; then multiply from the start layer to the last, the later layer on the left. The readout's row
of the product is the map over patches: the class token's, or for an attention-pool readout (SigLIP)
the pool's weights over the last block's output tokens (heads fused the same way), or the mean over
rows for a model that averages its tokens (GAP).

Unlike vit-explain, rows are renormalised with `keepdims` (its issue #16) and the discard works per
row instead of over the flattened matrix.

`rollout_vector` runs in torch on whatever device the attentions are on, for one image `[L, H, N, N]`
or a batch `[B, L, H, N, N]`; `rollout` is the numpy API over a `Capture`.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch

from vit_core.capture import Capture, tensor_view
from vit_core.errors import VitCoreError
from vit_core.maps import patch_map
from vit_core.validate import check_choice, check_index, check_range

HeadFusion = Literal["mean", "max", "min"]


def chain_dtype(device: torch.device) -> torch.dtype:
    """The dtype of the products over layers: float64 on the CPU; float32 on accelerators, where float64 is
    slow (the product of row-stochastic matrices stays well conditioned, so float32 is enough there)."""
    return torch.float64 if device.type == "cpu" else torch.float32


def fuse_heads(attentions: torch.Tensor, head_fusion: HeadFusion = "mean") -> torch.Tensor:
    """`[..., head, query, key]` -> `[..., query, key]`. Rows of max/min fusions are renormalised later."""
    check_choice(head_fusion, get_args(HeadFusion), "head fusion")
    if head_fusion == "mean":
        # bf16 and fp16 captures are averaged in float32
        return attentions.mean(dim=-3, dtype=torch.promote_types(attentions.dtype, torch.float32))
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

    `per_layer` is `[..., layer, N, N]`, `query` `[N]` or `[..., N]`; returns `[..., N]`.
    One vector-matrix product per layer (O(L·N²)) instead of the full N x N chain (O(L·N³)), and no
    N x N temporary: with row sums s, row-renormalised (A + I)/2 is diag(1/(s+1)) · (A + I), so
    r · that = w · A + w with w = r / (s + 1).
    """
    row = query.to(per_layer.dtype)
    for attention in reversed(per_layer.unbind(-3)):  # [..., N, N]; the last layer is the leftmost factor
        weighted = row / (attention.sum(dim=-1) + 1)  # [..., N]
        row = vector_matrix(weighted, attention) + weighted
    return row


def vector_matrix(row: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """`[..., N]` · `[..., N, N]` -> `[..., N]`, batch dimensions broadcast (one image: a plain vector product)."""
    return row @ matrix if matrix.ndim == 2 else (row.unsqueeze(-2) @ matrix).squeeze(-2)


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


def rollout_vector(
    attentions: torch.Tensor,
    num_prefix_tokens: int,
    has_class_token: bool = True,
    head_fusion: HeadFusion = "mean",
    discard_ratio: float = 0.0,
    start_layer: int = 0,
    pool_attention: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention rollout's row over all tokens, `[..., N]`, from attentions `[..., layer, head, N, N]`.

    Runs where the attentions are (float64 on the CPU, float32 elsewhere: `chain_dtype`); a batch
    `[B, L, H, N, N]` gives `[B, N]`. `patch_map` turns an image's row into the map over patches.
    With `pool_attention` `[..., head, N]` (an attention-pool readout) the query is the pool's row, its
    heads fused as the layers' are (`pool_query`).
    """
    layers, tokens = attentions.shape[-4], attentions.shape[-1]
    start_layer = check_index(start_layer, layers, "start layer")
    stack = attentions[..., start_layer:, :, :, :]  # [..., L', H, N, N]
    fused = discard_lowest(fuse_heads(stack, head_fusion), discard_ratio, num_prefix_tokens)  # [..., L', N, N]
    dtype = chain_dtype(attentions.device)
    pool = None if pool_attention is None else pool_query(pool_attention, head_fusion)
    return rollout_row(fused.to(dtype), query_vector(tokens, has_class_token, dtype, attentions.device, pool))


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
    row = rollout_vector(
        tensor_view(capture.attentions),  # [L, H, N, N], no copy
        capture.num_prefix_tokens,
        capture.has_class_token,
        head_fusion,
        discard_ratio,
        start_layer,
        pool_attention=pool_weights(capture),
    )
    return patch_map(row.numpy(), capture)


def pool_weights(capture: Capture) -> torch.Tensor | None:
    """The attention pool's weights `[head, N]` of a model read out by one (None for other readouts); a capture of
    such a model without them (a `to_numpy` subset) is refused rather than read out by the mean row."""
    if not capture.has_attention_pool:
        return None
    if capture.pool_attention is None:
        raise VitCoreError("capture_without_pool")
    return tensor_view(capture.pool_attention)


def pool_query(pool_attention: torch.Tensor, head_fusion: HeadFusion = "mean") -> torch.Tensor:
    """An attention pool's weights `[..., head, N]` -> the readout's row `[..., N]`: heads fused, row sum 1.

    The pool has no residual branch (its query is a parameter), so its row enters rollout as it is,
    without the ½(A + I) of the layers below it.
    """
    fused = fuse_heads(pool_attention.unsqueeze(-2), head_fusion)[..., 0, :]  # [..., N]
    return fused / fused.sum(dim=-1, keepdim=True)


def query_vector(
    tokens: int,
    has_class_token: bool,
    dtype: torch.dtype = torch.float64,
    device: torch.device | None = None,
    pool: torch.Tensor | None = None,
) -> torch.Tensor:
    """The readout's row selector `[N]` (or `[..., N]`): `pool`, an attention pool's row over the tokens, when
    given; else the class token's one-hot row, or the mean over all rows for a model without one (GAP)."""
    if pool is not None:
        return pool.to(device=device, dtype=dtype)
    if has_class_token:
        return torch.nn.functional.one_hot(torch.tensor(0, device=device), tokens).to(dtype)
    return torch.full((tokens,), 1.0 / tokens, dtype=dtype, device=device)
