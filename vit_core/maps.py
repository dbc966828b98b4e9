"""Raw attention maps on the patch grid, read straight off a capture.

The query is the class token, or the mean over all tokens for a model without one, or any chosen
patch ("where does this patch look?"). A model read out by an attention pool (SigLIP) has one more
attention map after the last block: the pool's learnt query over the tokens (`pool_attention_map`).
Prefix tokens (class, distillation, registers) are split off with `split_tokens`, never by assuming
one class token at position 0. `class_rows` reads the query's row in torch, on whatever device and for
whatever batch the attentions have.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from vit_core.capture import Capture, tensor_view
from vit_core.config import split_tokens
from vit_core.errors import VitCoreError
from vit_core.validate import check_index, check_patch, check_range

HeadChoice = int | Literal["mean", "max"]


def class_rows(attentions: torch.Tensor, has_class_token: bool = True) -> torch.Tensor:
    """`[..., head, query, key]` -> `[..., head, key]`: the class token's row, or the mean over all queries
    for a model without a class token (the query every map of this module uses by default)."""
    return attentions[..., 0, :] if has_class_token else attentions.mean(dim=-2)


def select_heads(attentions: np.ndarray, head: HeadChoice) -> np.ndarray:
    """`[head, ...]` -> `[...]`: one head, the head mean or the head max (`[head, query, key]` or `[head, key]`)."""
    if head == "mean":
        return attentions.mean(axis=0)
    if head == "max":
        return attentions.max(axis=0)
    if isinstance(head, str):
        raise VitCoreError("bad_head_choice", value=head)
    return attentions[check_index(head, attentions.shape[0], "head")]


def patch_map(row: np.ndarray, capture: Capture) -> np.ndarray:
    """A row over all tokens `[N]` -> the `[rows, cols]` float32 map over the patch tokens."""
    _, patches = split_tokens(row[:, None], capture.num_prefix_tokens)
    return patches[:, 0].reshape(capture.grid).astype(np.float32)


def attention_map(
    capture: Capture, layer: int, head: HeadChoice = "mean", query_patch: tuple[int, int] | None = None
) -> np.ndarray:
    """Attention from the query to every patch at `layer`, as a `[rows, cols]` grid (not renormalised)."""
    layer = check_index(layer, capture.num_layers, "layer")
    weights = tensor_view(capture.attentions[layer])  # [head, query, key]
    if query_patch is not None:
        row, col = check_patch(query_patch, capture.grid)
        rows = weights[:, capture.num_prefix_tokens + row * capture.grid[1] + col]  # [head, key]
    else:
        rows = class_rows(weights, capture.has_class_token)  # [head, key]
    # The heads are fused after the row is chosen: the same numbers as fusing first, N times less work.
    return patch_map(select_heads(rows.numpy(), head), capture)


def pool_attention_map(capture: Capture, head: HeadChoice = "mean") -> np.ndarray:
    """The attention pool's weights over the patches (SigLIP's readout: what the image embedding is made of),
    as a `[rows, cols]` grid; one head, the head mean or the head max."""
    if not capture.has_attention_pool:
        raise VitCoreError("no_attention_pool")
    if capture.pool_attention is None:
        raise VitCoreError("capture_without_pool")
    return patch_map(select_heads(np.asarray(capture.pool_attention, dtype=np.float32), head), capture)


def readout_attention_map(capture: Capture, head: HeadChoice = "mean") -> np.ndarray:
    """The readout's own attention: the attention pool's weights (SigLIP), else the last layer's class-token
    row (the mean row for a model without a class token)."""
    if capture.has_attention_pool:
        return pool_attention_map(capture, head)
    return attention_map(capture, capture.num_layers - 1, head)


def mass_threshold(grid_map: np.ndarray, fraction: float = 0.6) -> np.ndarray:
    """DINO's visualisation (Caron et al. 2021): keep the top patches that hold `fraction` of the mass.

    Returns a boolean `[rows, cols]` mask; the map is clipped at 0 and normalised to sum 1 first.
    """
    check_range(fraction, 0, 1, "mass fraction", low_open=True)
    values = np.clip(grid_map.astype(np.float64).ravel(), 0, None)
    total = values.sum()
    if total <= 0:
        return np.zeros(grid_map.shape, dtype=bool)
    order = np.argsort(values)[::-1]  # largest first
    cumulative = np.cumsum(values[order]) / total
    keep = np.zeros(values.size, dtype=bool)
    # the smallest prefix whose mass reaches the fraction (the patch that crosses it is kept)
    keep[order[: int(np.searchsorted(cumulative, fraction - 1e-12)) + 1]] = True
    return keep.reshape(grid_map.shape)
