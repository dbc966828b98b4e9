"""A ViT taken apart on one image, for teaching: every number comes from the model's own tensors.

- patch -> token: the P·P·C pixel values of one patch, flattened, times the patch-embedding matrix
  (Dosovitskiy et al. 2021, Eq. 1);
- scaled dot-product attention (Vaswani et al. 2017, Eq. 1): one query's row of QKᵀ/√d_k from the
  real q and k of a layer, its softmax with and without the 1/√d_k, and how saturated it is
  (maximum weight, entropy, size of the softmax Jacobian);
- the MLP's pre-activations of one block, for the GELU (Hendrycks & Gimpel 2016).

q, k and the MLP input are recomputed by running the one block of interest on its captured input
(`Capture.tokens[layer]`), not the whole model: exact, and 1/depth of a forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from vit_core.capture import Capture, tensor_view
from vit_core.model import ViT
from vit_core.validate import check_index, check_patch


@dataclass(frozen=True)
class PatchToken:
    pixels: np.ndarray  # [P, P, C], the patch of the model's input (normalised values)
    vector: np.ndarray  # [P·P·C], flattened channel-first, as the projection reads it
    embedding: np.ndarray  # [D], W · vector + b, before the position embedding


def patch_token(model: ViT, capture: Capture, patch: tuple[int, int]) -> PatchToken:
    """One patch of the input, flattened, and its linear projection (the conv weight as a D x P·P·C matrix)."""
    row, col = check_patch(patch, capture.grid)
    size = capture.patch_size
    pixels = capture.input[:, row * size : (row + 1) * size, col * size : (col + 1) * size]  # [C, P, P]
    vector = pixels.reshape(-1).astype(np.float32)  # C·P·P, the order of the conv weight's last three axes
    proj = model.patch_embed.proj
    weight = proj.weight.detach().float().cpu().reshape(proj.weight.shape[0], -1)  # [D, C·P·P]
    bias = proj.bias.detach().float().cpu() if proj.bias is not None else torch.zeros(weight.shape[0])
    embedding = (weight @ torch.from_numpy(vector) + bias).numpy()
    return PatchToken(pixels.transpose(1, 2, 0).copy(), vector, embedding)


@dataclass(frozen=True)
class BlockInternals:
    queries: np.ndarray  # [H, N, d_k]
    keys: np.ndarray  # [H, N, d_k]
    mlp_pre: np.ndarray  # [N, d_mlp], the first linear layer's output, before GELU


def block_internals(model: ViT, capture: Capture, layer: int) -> BlockInternals:
    """Run block `layer` on its captured input and read its q, k and MLP pre-activations."""
    layer = check_index(layer, capture.num_layers, "layer")
    seen: dict[str, torch.Tensor] = {}

    def keep(kind: str):
        def hook(tensor: torch.Tensor, _name: str) -> None:
            seen[kind] = tensor.detach().float().cpu()[0]

        return hook

    device = next(model.parameters()).device
    tokens = tensor_view(capture.tokens[layer])[None].to(device, next(model.parameters()).dtype)  # [1, N, D]
    hooks = {f"blocks.{layer}.attn.hook_{kind}": keep(kind) for kind in ("q", "k")}
    hooks[f"blocks.{layer}.mlp.hook_pre"] = keep("mlp_pre")
    with torch.inference_mode(), model.hooks(hooks):
        model.blocks[layer](tokens)
    return BlockInternals(seen["q"].numpy(), seen["k"].numpy(), seen["mlp_pre"].numpy())


@dataclass(frozen=True)
class AttentionRow:
    scores: np.ndarray  # [N], q·k (times 1/√d_k when scaled)
    weights: np.ndarray  # [N], softmax of the scores
    max_weight: float
    entropy: float  # nats
    jacobian_norm: float  # Frobenius norm of d softmax / d scores = diag(p) - p pᵀ


def softmax_jacobian_norm(weights: np.ndarray) -> float:
    """‖diag(p) − p pᵀ‖_F in closed form: sqrt(Σ p_i² − 2 Σ p_i³ + (Σ p_i²)²).

    It goes to 0 as the softmax saturates on one key: the gradient that reaches the scores vanishes.
    """
    p = weights.astype(np.float64)
    squares = float(np.sum(p**2))
    return math.sqrt(max(squares - 2 * float(np.sum(p**3)) + squares**2, 0.0))


def attention_row(queries: np.ndarray, keys: np.ndarray, head: int, query: int, scaled: bool = True) -> AttentionRow:
    """Query `query`'s scores over every key in `head`, with or without the 1/√d_k scaling."""
    head = check_index(head, queries.shape[0], "head")
    query = check_index(query, queries.shape[1], "token")
    q = queries[head, query].astype(np.float64)  # [d_k]
    k = keys[head].astype(np.float64)  # [N, d_k]
    scores = k @ q / (math.sqrt(q.shape[0]) if scaled else 1.0)
    weights = np.exp(scores - scores.max())
    weights /= weights.sum()
    entropy = float(-np.sum(weights * np.log(np.clip(weights, 1e-300, None))))
    return AttentionRow(scores, weights, float(weights.max()), entropy, softmax_jacobian_norm(weights))


def entropy_by_scale(queries: np.ndarray, keys: np.ndarray, head: int, query: int, factors: np.ndarray) -> np.ndarray:
    """Entropy (nats) of softmax(c · q·k) for each factor c: 1/√d_k is the transformer's, 1 is no scaling."""
    q = queries[head, query].astype(np.float64)
    dots = keys[head].astype(np.float64) @ q  # [N]
    logits = np.outer(np.asarray(factors, dtype=np.float64), dots)  # [F, N]
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return -np.sum(p * np.log(np.clip(p, 1e-300, None)), axis=1)


def gelu(x: np.ndarray, approximate: bool = False) -> np.ndarray:
    """GELU as the model's MLP applies it (torch's exact erf form, or the tanh approximation)."""
    return torch.nn.functional.gelu(
        torch.as_tensor(x, dtype=torch.float64), approximate="tanh" if approximate else "none"
    ).numpy()
