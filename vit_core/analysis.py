"""Analyses of a capture and of a model: the logit lens, head statistics, token and model views.

- per-layer predictions: the logit lens (nostalgebraist 2020) read off `Capture.layer_logits`;
- mean attention distance (Dosovitskiy et al. 2021, Fig. 7/11) and attention entropy per head;
- PCA of patch tokens to RGB, token norms with high-norm outliers (Darcet et al. 2024), cosine
  similarity of one patch to all others;
- position-embedding similarity and principal components of the patch-embedding filters (Fig. 7);
- head ablation: zero heads' outputs and measure the target probability.

The head statistics have torch forms (`mean_distance_per_head`, `entropy_per_head`) that run on the
device of the attentions, for one image `[L, H, N, N]`, one layer of a batch `[B, H, N, N]` or a whole
batch `[B, L, H, N, N]`; the numpy functions over a `Capture` call them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from vit_core.capture import Capture, tensor_view
from vit_core.config import split_tokens
from vit_core.errors import VitCoreError
from vit_core.model import ViT
from vit_core.validate import check_index, check_patch, check_range


@dataclass(frozen=True)
class LayerPredictions:
    probs: np.ndarray  # [layer, classes], softmax of the logit lens (a sigmoid per label for SigLIP's labels)
    top_indices: np.ndarray  # [layer, k], best first
    top_probs: np.ndarray  # [layer, k]


def layer_predictions(capture: Capture, k: int = 5) -> LayerPredictions:
    """Top-k classes after every block, from the model's own final norm and head (and the capture's activation:
    SigLIP's zero-shot labels are each a sigmoid, as its final probabilities)."""
    if capture.layer_logits is None:
        raise VitCoreError("no_head", what="per-layer predictions")
    logits = tensor_view(capture.layer_logits).double()  # torch: 15x faster than numpy's argsort here
    probs = logits.sigmoid() if capture.activation == "sigmoid" else logits.softmax(dim=-1)
    k = min(int(check_range(k, 1, None, "top-k")), probs.shape[-1])
    top_probs, top = probs.sort(dim=-1, descending=True, stable=True)  # ties: the lower class first
    return LayerPredictions(probs.float().numpy(), top[:, :k].numpy(), top_probs[:, :k].float().numpy())


def class_probability_by_layer(capture: Capture, target: int) -> np.ndarray:
    """`[layer]`: the probability of `target` after each block."""
    probs = layer_predictions(capture, k=1).probs
    return probs[:, check_index(target, probs.shape[-1], "class")]


@functools.lru_cache(maxsize=16)
def patch_distances(grid: tuple[int, int], patch_size: int) -> np.ndarray:
    """Euclidean distances in pixels between patch centres, `[patches, patches]` (cached, read-only)."""
    rows, cols = np.divmod(np.arange(grid[0] * grid[1]), grid[1])
    centres = np.stack([rows, cols], axis=1).astype(np.float64) * patch_size
    distances = np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=-1)
    distances.flags.writeable = False
    return distances


def patch_distance_matrix(grid: tuple[int, int], patch_size: int, device: torch.device) -> torch.Tensor:
    """`patch_distances` as a float32 tensor on `device` (computed there from the patch indices)."""
    if device.type == "cpu":
        return tensor_view(patch_distances(grid, patch_size)).float()
    return distances_from_indices(grid, patch_size, device)


def distances_from_indices(grid: tuple[int, int], patch_size: int, device: torch.device) -> torch.Tensor:
    """`[P, P]` float32 pixel distances between patch centres, computed on `device` from the indices."""
    index = torch.arange(grid[0] * grid[1], device=device)
    centres = torch.stack([index // grid[1], index % grid[1]], dim=1).float() * patch_size  # [P, 2] (row, col)
    return (centres[:, None, :] - centres[None, :, :]).norm(dim=-1)  # exact differences (cdist may use a matmul)


def _each_layer(attentions: torch.Tensor, reduce) -> torch.Tensor:
    """Apply `reduce` (`[..., H, N, N]` -> `[..., H]`) layer by layer over dim -4 if there is one, so the
    temporaries of one layer stay in cache (and on a GPU, one layer's worth of memory)."""
    if attentions.ndim <= 3:
        return reduce(attentions)
    return torch.stack([reduce(layer) for layer in attentions.unbind(-4)], dim=-2)  # [..., L, H]


def mean_distance_per_head(
    attentions: torch.Tensor, num_prefix_tokens: int, grid: tuple[int, int], patch_size: int
) -> torch.Tensor:
    """Mean attention distance in pixels, `[..., head, query, key]` -> `[..., head]`, on their device.

    Patch queries to patch keys only, each row renormalised over the patch keys (prefix tokens have no
    position), averaged over the patch queries.
    """
    distances = patch_distance_matrix(grid, patch_size, attentions.device)  # [P, P]
    prefix = num_prefix_tokens

    def reduce(layer: torch.Tensor) -> torch.Tensor:  # [..., H, N, N] -> [..., H]
        return mean_patch_distance(layer[..., prefix:, prefix:], distances)

    return _each_layer(attentions, reduce)


def mean_patch_distance(patch_to_patch: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """`[..., H, P, P]` attention from patches to patches and `[P, P]` distances -> `[..., H]` pixels:
    each row renormalised over the patch keys, its distance-weighted sum averaged over the patch queries."""
    if patch_to_patch.dtype in (torch.bfloat16, torch.float16):
        patch_to_patch = patch_to_patch.float()
    weighted = (patch_to_patch * distances).sum(-1) / patch_to_patch.sum(-1).clamp_min(1e-12)  # [..., H, P]
    return weighted.mean(-1)


def entropy_per_head(attentions: torch.Tensor) -> torch.Tensor:
    """`[..., head, query, key]` -> `[..., head]` in nats: -Σ p log p of each row, averaged over the queries.

    (A capture's `row_entropy`, computed in the forward pass, gives the same as `row_entropy.mean(-1)`.)
    """

    def reduce(layer: torch.Tensor) -> torch.Tensor:  # [..., H, N, N] -> [..., H]
        if layer.dtype in (torch.bfloat16, torch.float16):
            layer = layer.float()
        tiny = torch.finfo(layer.dtype).tiny  # clamp: 0·log 0 = 0
        # in-place ops allocate one temporary instead of three
        return layer.clamp_min(tiny).log_().mul_(layer).sum(-1).mean(-1).neg_()

    return _each_layer(attentions, reduce)


def mean_attention_distance(capture: Capture) -> np.ndarray:
    """`[layer, head]` in pixels: attention-weighted query-key patch distance, averaged over patch queries.

    Attention from patches to patches only, renormalised over the patch keys (prefix tokens have no
    position), as in the ViT paper's Fig. 7 (right) and Fig. 11.
    """
    attentions = tensor_view(capture.attentions)  # [L, H, N, N], no copy
    distance = mean_distance_per_head(attentions, capture.num_prefix_tokens, capture.grid, capture.patch_size)
    return distance.numpy().astype(np.float32)


def attention_entropy(capture: Capture) -> np.ndarray:
    """`[layer, head]` in nats: the entropy of each query's attention row, averaged over all queries.

    A capture made by `capture_batch` carries the row entropies, computed in the forward pass from the
    scores (one log per row); a hand-made one is read as -Σ p log p.
    """
    if capture.row_entropy is not None:
        return capture.row_entropy.mean(axis=-1, dtype=np.float64).astype(np.float32)
    return entropy_per_head(tensor_view(capture.attentions)).numpy().astype(np.float32)


def _patch_tokens(capture: Capture, layer: int) -> np.ndarray:
    layer = check_index(layer, capture.num_layers + 1, "token layer")  # 0: the embeddings
    _, patches = split_tokens(capture.tokens[layer], capture.num_prefix_tokens)
    return patches  # [P, D], float32


def token_pca_rgb(capture: Capture, layer: int) -> np.ndarray:
    """The first three principal components of the patch tokens at `layer` as RGB, `[rows, cols, 3]` in [0, 1].

    `layer` 0 is the embedding, `layer` i the output of block i (as in `Capture.tokens`).
    """
    tokens = tensor_view(_patch_tokens(capture, layer))  # [P, D]
    centred = tokens - tokens.mean(dim=0)
    # The principal projections from the smaller eigenproblem: the P x P Gram matrix's top eigenvectors
    # scaled by sqrt(eigenvalue), or the D x D covariance's top eigenvectors projected on.
    if centred.shape[0] <= centred.shape[1]:
        eigenvalues, eigenvectors = torch.linalg.eigh(centred @ centred.T)  # ascending
        top = eigenvectors[:, -3:].flip(-1) * eigenvalues[-3:].flip(-1).clamp_min(0).sqrt()  # [P, <=3]
    else:
        top = centred @ torch.linalg.eigh(centred.T @ centred)[1][:, -3:].flip(-1)  # [P, <=3]
    signs = torch.sign(top.gather(0, top.abs().argmax(0, keepdim=True)))  # largest projection positive
    projected = (top * torch.where(signs == 0, 1.0, signs)).numpy()
    if projected.shape[1] < 3:
        projected = np.pad(projected, ((0, 0), (0, 3 - projected.shape[1])))
    low, high = projected.min(axis=0), projected.max(axis=0)
    rgb = (projected - low) / np.where(high > low, high - low, 1.0)
    return rgb.reshape(*capture.grid, 3).astype(np.float32)


@dataclass(frozen=True)
class TokenNorms:
    norms: np.ndarray  # [pos], L2 norm of every token (prefix tokens first)
    outliers: np.ndarray  # [pos] bool: high-norm tokens
    threshold: float


def token_norms(capture: Capture, layer: int) -> TokenNorms:
    """Token norms at `layer`; outliers lie above Q3 + 3·IQR of the patch-token norms.

    Darcet et al. 2024 ("Vision Transformers Need Registers") find a few patch tokens with norms far
    above the rest in large models: a robust fence flags them without a model-specific constant.
    """
    layer = check_index(layer, capture.num_layers + 1, "token layer")  # 0: the embeddings
    norms = np.linalg.norm(capture.tokens[layer].astype(np.float64), axis=-1)
    _, patch_norms = split_tokens(norms[:, None], capture.num_prefix_tokens)
    q1, q3 = np.percentile(patch_norms[:, 0], [25, 75])
    threshold = float(q3 + 3 * (q3 - q1))
    return TokenNorms(norms.astype(np.float32), norms > threshold, threshold)


def _cosine_to(vectors: np.ndarray, index: int) -> np.ndarray:
    unit = vectors / np.clip(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12, None)
    return unit @ unit[index]


def patch_similarity(capture: Capture, layer: int, patch: tuple[int, int]) -> np.ndarray:
    """Cosine similarity of the patch token at (row, col) to every patch token at `layer`, `[rows, cols]`."""
    rows, cols = capture.grid
    row, col = check_patch(patch, capture.grid)
    similarity = _cosine_to(_patch_tokens(capture, layer).astype(np.float64), row * cols + col)
    return similarity.reshape(rows, cols).astype(np.float32)


def position_similarity(model: ViT) -> np.ndarray:
    """`[rows, cols, rows, cols]`: cosine similarity of each patch's position embedding to all others."""
    cfg = model.cfg
    embedding = model.pos_embed.detach().float().cpu().numpy()[0].astype(np.float64)  # [E, D]
    prefix = cfg.num_prefix_tokens if cfg.pos_embed_prefix else 0
    patches = embedding[prefix:]
    unit = patches / np.clip(np.linalg.norm(patches, axis=-1, keepdims=True), 1e-12, None)
    rows, cols = cfg.grid
    return (unit @ unit.T).reshape(rows, cols, rows, cols).astype(np.float32)


def patch_embedding_components(model: ViT, count: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Principal components of the patch-embedding filters (ViT paper, Fig. 7 left).

    Returns (components `[count, channels, P, P]`, explained variance ratio `[count]`).
    """
    weight = model.patch_embed.proj.weight.detach().float().cpu().numpy().astype(np.float64)  # [D, C, P, P]
    flat = torch.from_numpy(weight.reshape(weight.shape[0], -1))
    centred = flat - flat.mean(dim=0)
    singular, components = (t.numpy() for t in torch.linalg.svd(centred, full_matrices=False)[1:])
    count = min(count, components.shape[0])
    variance = singular**2 / np.sum(singular**2)
    return components[:count].reshape(count, *weight.shape[1:]).astype(np.float32), variance[:count].astype(np.float32)


def ablate_heads(
    model: ViT, pixels: torch.Tensor, heads: Iterable[tuple[int, int]], target: int
) -> tuple[float, float]:
    """(probability of `target` with all heads, with the given (layer, head) pairs zeroed).

    A head is ablated by zeroing its output (`hook_z`) before the output projection.
    """
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        layer, head = check_index(layer, model.cfg.depth, "layer"), check_index(head, model.cfg.num_heads, "head")
        by_layer.setdefault(layer, []).append(head)

    def zero(selected: list[int]):
        def hook(z: torch.Tensor, _name: str) -> torch.Tensor:
            z = z.clone()
            z[:, selected] = 0
            return z

        return hook

    pixels = pixels.unsqueeze(0) if pixels.ndim == 3 else pixels
    device = next(model.parameters()).device
    with torch.inference_mode():
        base = model(pixels.to(device)).softmax(-1)[0, target].item()
        with model.hooks({f"blocks.{layer}.attn.hook_z": zero(h) for layer, h in by_layer.items()}):
            ablated = model(pixels.to(device)).softmax(-1)[0, target].item()
    return base, ablated


def head_importance(model: ViT, pixels: torch.Tensor, layer: int, target: int) -> np.ndarray:
    """`[head]`: drop in the target probability when each head of `layer` alone is zeroed.

    One batched forward pass: copy h of the image has head h zeroed; the last copy is intact.
    """
    heads = model.cfg.num_heads
    layer = check_index(layer, model.cfg.depth, "layer")
    pixels = pixels.unsqueeze(0) if pixels.ndim == 3 else pixels
    batch = pixels.expand(heads + 1, *pixels.shape[1:])

    def zero_one_head_per_copy(z: torch.Tensor, _name: str) -> torch.Tensor:
        z = z.clone()  # [heads + 1, H, N, Dh]
        index = torch.arange(heads, device=z.device)
        z[index, index] = 0
        return z

    device = next(model.parameters()).device
    with torch.inference_mode(), model.hooks({f"blocks.{layer}.attn.hook_z": zero_one_head_per_copy}):
        probs = model(batch.to(device)).softmax(-1)[:, target].float().cpu().numpy()
    return (probs[-1] - probs[:-1]).astype(np.float32)
