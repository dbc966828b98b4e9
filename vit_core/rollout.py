"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").

Per layer: fuse the heads (mean, max or min), optionally discard the lowest attentions of each row
(never the prefix-token columns), add the residual connection as A <- (A + I) / 2 and renormalise the
rows; then multiply from the start layer to the last, the later layer on the left. The class token's
row of the product (or the mean over rows for a model without one) is the map over patches.

Unlike vit-explain, rows are renormalised with `keepdims` (its issue #16) and the discard works per
row instead of over the flattened matrix.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from vit_core.capture import Capture
from vit_core.config import split_tokens
from vit_core.errors import VitCoreError

HeadFusion = Literal["mean", "max", "min"]


def fuse_heads(attentions: np.ndarray, head_fusion: HeadFusion = "mean") -> np.ndarray:
    """`[head, query, key]` -> `[query, key]`. Mean keeps rows summing to 1; max/min are renormalised later."""
    if head_fusion == "mean":
        return attentions.mean(axis=0)
    if head_fusion == "max":
        return attentions.max(axis=0)
    if head_fusion == "min":
        return attentions.min(axis=0)
    raise VitCoreError(f"unknown head fusion {head_fusion!r}; use mean, max or min.")


def discard_lowest(attention: np.ndarray, ratio: float, num_prefix_tokens: int) -> np.ndarray:
    """Zero the lowest `ratio` of each row's patch columns; prefix-token columns are always kept."""
    if not 0.0 <= ratio < 1.0:
        raise VitCoreError(f"discard ratio {ratio} must be in [0, 1).")
    patches = attention[:, num_prefix_tokens:]  # [query, patches]
    drop = int(patches.shape[1] * ratio)
    if drop == 0:
        return attention
    lowest = np.argpartition(patches, drop - 1, axis=1)[:, :drop]  # [query, drop]
    kept = patches.copy()
    np.put_along_axis(kept, lowest, 0.0, axis=1)
    return np.concatenate([attention[:, :num_prefix_tokens], kept], axis=1)


def rollout_matrix(
    attentions: np.ndarray,
    num_prefix_tokens: int,
    head_fusion: HeadFusion = "mean",
    discard_ratio: float = 0.0,
    start_layer: int = 0,
) -> np.ndarray:
    """The joint attention `[N, N]` from the input of `start_layer` to the output of the last layer."""
    layers, _, tokens, _ = attentions.shape
    if not 0 <= start_layer < layers:
        raise VitCoreError(f"start layer {start_layer} is out of range; this model has layers 0..{layers - 1}.")
    fused = [
        discard_lowest(fuse_heads(attentions[layer].astype(np.float64), head_fusion), discard_ratio, num_prefix_tokens)
        for layer in range(start_layer, layers)
    ]
    return chain_with_residual(fused)


def chain_with_residual(per_layer: list[np.ndarray]) -> np.ndarray:
    """Π over layers (last on the left) of rows-renormalised (A + I) / 2, each A `[N, N]`.

    The products run in torch: numpy's BLAS threads can stall for orders of magnitude on a busy CPU.
    """
    tokens = per_layer[0].shape[-1]
    identity = torch.eye(tokens, dtype=torch.float64)
    joint = identity
    for attention in per_layer:
        attention = (torch.from_numpy(attention) + identity) / 2
        attention = attention / attention.sum(dim=-1, keepdim=True)
        joint = attention @ joint
    return joint.numpy()


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
    joint = rollout_matrix(capture.attentions, capture.num_prefix_tokens, head_fusion, discard_ratio, start_layer)
    row = joint[0] if capture.has_class_token else joint.mean(axis=0)  # [N]
    _, patches = split_tokens(row[:, None], capture.num_prefix_tokens)
    return patches[:, 0].reshape(capture.grid).astype(np.float32)
