"""Class-specific maps from one backward pass: gradient-weighted rollout, Chefer et al. 2021, Grad-CAM;
and Chefer et al.'s CVPR 2021 Transformer Attribution, which runs the model again with LRP rules.

Each reads a capture made with a `target` (`capture(..., target=c)`), which holds the gradient of
that class's logit with respect to every layer's attention weights and to the tokens entering the
last block. Each layer's attention is paired with *its own* gradient (vit-explain pairs them with the
wrong layer, its issue #6). For an attention-pool readout (SigLIP) the pool is one more attention with a
single query and no residual branch: the readout's row over the last block's output tokens is the
pool's weights weighted by their gradients the same way (`pool_row`), where a class-token model starts
from the class token's one-hot row. `grad_rollout_vector` and `chefer_vector` run in torch on the device of a
`DeviceCapture`'s tensors, for one image `[L, H, N, N]` or a batch `[B, L, H, N, N]`.
"""

from __future__ import annotations

import numpy as np
import torch

from vit_core.capture import Capture, tensor_view
from vit_core.config import split_tokens
from vit_core.errors import VitCoreError
from vit_core.lrp import attention_relevance
from vit_core.maps import patch_map
from vit_core.rollout import chain_dtype, discard_lowest, pool_weights, query_vector, rollout_row, vector_matrix
from vit_core.targets import TargetLike
from vit_core.validate import check_index


def _require_gradients(capture: Capture) -> tuple[torch.Tensor, torch.Tensor]:
    """The attentions and their gradients as float32 tensors over the capture's arrays (no copy)."""
    if capture.attention_grads is None or capture.token_grads is None:
        raise VitCoreError("capture_without_target")
    return tensor_view(capture.attentions), tensor_view(capture.attention_grads)


def _pool_of(capture: Capture) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """An attention-pool readout's weights and their gradients `[head, N]` (None, None for other readouts)."""
    weights = pool_weights(capture)
    if weights is None:
        return None, None
    if capture.pool_attention_grads is None:
        raise VitCoreError("capture_without_pool")
    return weights, tensor_view(capture.pool_attention_grads)


def pool_row(weights: torch.Tensor, grads: torch.Tensor, clamp_first: bool = False) -> torch.Tensor:
    """The readout's row `[..., N]` from an attention pool's weights and gradients `[..., head, N]`: the head mean
    of ∇P ⊙ P with negatives set to 0 after the mean (gradient rollout) or before it (`clamp_first`, Chefer
    et al.), the rule each method applies to a layer's attention."""
    product = grads.float() * weights.float()  # [..., H, N]
    return product.clamp_min(0).mean(dim=-2) if clamp_first else product.mean(dim=-2).clamp_min(0)


def _grad_weighted_mean(attentions: torch.Tensor, grads: torch.Tensor, clamp_first: bool = False) -> torch.Tensor:
    """`[..., L, H, N, N]` x2 -> `[..., L, N, N]` in `chain_dtype`: the head mean of ∇A ⊙ A, negatives set to 0
    after the mean (gradient rollout) or before it (`clamp_first`, Chefer et al.).

    The product and the head mean run in float32, layer by layer so the arrays stay in cache; the
    chains that follow run in float64 on the CPU.
    """
    per_layer = []
    for a, g in zip(attentions.unbind(-4), grads.unbind(-4), strict=True):  # each [..., H, N, N]
        product = g.float() * a.float()  # [..., H, N, N]; .float() is free for float32
        per_layer.append(product.clamp_min_(0).mean(dim=-3) if clamp_first else product.mean(dim=-3).clamp_min_(0))
    return torch.stack(per_layer, dim=-3).to(chain_dtype(attentions.device))


def grad_rollout_vector(
    attentions: torch.Tensor,
    grads: torch.Tensor,
    num_prefix_tokens: int,
    has_class_token: bool = True,
    discard_ratio: float = 0.0,
    start_layer: int = 0,
    pool_attention: torch.Tensor | None = None,
    pool_grads: torch.Tensor | None = None,
) -> torch.Tensor:
    """Gradient rollout's row over all tokens `[..., N]` from attentions and their gradients `[..., L, H, N, N]`
    (and an attention pool's weights and gradients `[..., H, N]`, which then give the query row)."""
    layers, tokens = attentions.shape[-4], attentions.shape[-1]
    start_layer = check_index(start_layer, layers, "start layer")
    weighted = _grad_weighted_mean(attentions[..., start_layer:, :, :, :], grads[..., start_layer:, :, :, :])
    weighted = discard_lowest(weighted, discard_ratio, num_prefix_tokens)  # [..., L', N, N]
    pool = None if pool_attention is None else pool_row(pool_attention, pool_grads)
    return rollout_row(weighted, query_vector(tokens, has_class_token, weighted.dtype, weighted.device, pool))


def grad_rollout(capture: Capture, discard_ratio: float = 0.0, start_layer: int = 0) -> np.ndarray:
    """Gradient-weighted attention rollout (vit-explain's `grad_rollout`, corrected).

    Per layer: the head mean of (dlogit/dA ⊙ A), negatives set to 0; optional per-row discard; then
    rollout's (A + I) / 2 with rows renormalised, multiplied from `start_layer` to the last layer.
    """
    attentions, grads = _require_gradients(capture)
    pool, pool_grads = _pool_of(capture)
    row = grad_rollout_vector(
        attentions,
        grads,
        capture.num_prefix_tokens,
        capture.has_class_token,
        discard_ratio,
        start_layer,
        pool,
        pool_grads,
    )
    return patch_map(row.numpy(), capture)


def chefer_vector(
    attentions: torch.Tensor,
    grads: torch.Tensor,
    has_class_token: bool = True,
    start_layer: int = 0,
    pool_attention: torch.Tensor | None = None,
    pool_grads: torch.Tensor | None = None,
) -> torch.Tensor:
    """Chefer et al.'s relevance row over all tokens `[..., N]` from attentions and gradients `[..., L, H, N, N]`
    (and an attention pool's `[..., H, N]`: its Ā, (∇P ⊙ P)⁺ averaged over heads, is the readout's row)."""
    layers, tokens = attentions.shape[-4], attentions.shape[-1]
    start_layer = check_index(start_layer, layers, "start layer")
    cams = _grad_weighted_mean(
        attentions[..., start_layer:, :, :, :], grads[..., start_layer:, :, :, :], clamp_first=True
    )  # [..., L', N, N]
    # The query's row of R = Π (I + Ā_l), last layer on the left: r <- r + r · Ā_l, from the last layer down.
    pool = None if pool_attention is None else pool_row(pool_attention, pool_grads, clamp_first=True)
    row = query_vector(tokens, has_class_token, cams.dtype, cams.device, pool)
    for cam in reversed(cams.unbind(-3)):  # [..., N, N] per layer
        row = row + vector_matrix(row, cam)
    return row


def chefer(capture: Capture, start_layer: int = 0) -> np.ndarray:
    """Chefer, Gur & Wolf, ICCV 2021, "Generic Attention-model Explainability".

    Ā_l = mean over heads of (∇A_l ⊙ A_l)⁺; R ← R + Ā_l · R from R₀ = I, for l from `start_layer` to
    the last layer; the map is the class token's row of R over the patches. An attention-pool readout
    (SigLIP) adds the pool as a last attention whose query has no residual: the map is Ā_pool · R.
    """
    attentions, grads = _require_gradients(capture)
    pool, pool_grads = _pool_of(capture)
    row = chefer_vector(attentions, grads, capture.has_class_token, start_layer, pool, pool_grads)
    return patch_map(row.numpy(), capture)


def gradcam(capture: Capture) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) on the patch tokens entering the last block.

    Channel weights are the patch-mean of dlogit/dtokens; the map is ReLU(Σ_d w_d · token_d) per patch.
    That is the layer pytorch-grad-cam uses for ViTs (`blocks[-1].norm1`, here before the norm): the
    tokens *after* the last block never reach a class-token head, so their gradient is zero.
    """
    _require_gradients(capture)
    activations = capture.tokens[capture.num_layers - 1].astype(np.float64)  # [N, D]
    _, patch_activations = split_tokens(activations, capture.num_prefix_tokens)
    _, patch_grads = split_tokens(capture.token_grads.astype(np.float64), capture.num_prefix_tokens)
    weights = patch_grads.mean(axis=0)  # [D]
    cam = np.clip(patch_activations @ weights, 0, None)  # [patches]
    return cam.reshape(capture.grid).astype(np.float32)


def transformer_attribution(
    relevances: torch.Tensor,
    grads: torch.Tensor,
    grid: tuple[int, int],
    num_prefix_tokens: int,
    has_class_token: bool = True,
    start_layer: int = 0,
    pool: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> np.ndarray:
    """Chefer et al. CVPR 2021's combination for one image: relevances and gradients at the attention weights
    `[L, H, N, N]` -> Ā_l = mean over heads of (∇A_l ⊙ R_l)⁺; C = (I + Ā_L) ⋯ (I + Ā_start) with no
    renormalisation; the class token's row of C (the mean row without one) over the patches, `[rows, cols]`.
    `pool`: an attention pool's (relevances, gradients) `[H, N]`, whose Ā is then the readout's row."""
    start_layer = check_index(start_layer, relevances.shape[0], "start layer")
    cams = _grad_weighted_mean(relevances[start_layer:], grads[start_layer:], clamp_first=True)  # [L', N, N]
    pool_readout = None if pool is None else pool_row(pool[0], pool[1], clamp_first=True)
    row = query_vector(relevances.shape[-1], has_class_token, pool=pool_readout).to(cams)
    for cam in cams.flip(0):  # the query's row of the product, last layer on the left
        row = row + row @ cam
    return row[num_prefix_tokens:].reshape(grid).float().cpu().numpy()


def transformer_attribution_batch(model, pixels: torch.Tensor, target: TargetLike = "top", start_layer: int = 0):
    """Chefer, Gur & Wolf, CVPR 2021, "Transformer Interpretability Beyond Attention Visualization", for
    `pixels` `[B, C, H, W]` -> `[B, rows, cols]` float32.

    LRP relevance R_l at every block's attention weights with the rules of their code (α1β0 on linear
    layers, the bilinear rule on both matrix products, identity through LayerNorm, GELU and softmax, the
    normalised rule on residual additions; `vit_core.lrp` with rules="chefer"), starting from the target's
    gradient at the output (the one-hot vector of a class), combined with the attention gradients by
    `transformer_attribution`.
    """
    cfg = model.cfg
    start_layer = check_index(start_layer, cfg.depth, "start layer")
    result = attention_relevance(model, pixels, target)  # [L, B, H, N, N] each
    grid = (pixels.shape[-2] // cfg.patch_size, pixels.shape[-1] // cfg.patch_size)
    relevances, grads = result.relevances, result.gradients
    return np.stack(
        [
            transformer_attribution(
                relevances[:, b],
                grads[:, b],
                grid,
                cfg.num_prefix_tokens,
                cfg.class_token,
                start_layer,
                None if result.pool_relevances is None else (result.pool_relevances[b], result.pool_gradients[b]),
            )
            for b in range(relevances.shape[1])
        ]
    )
