"""The streaming statistics path: a batch's attention reduced while the model runs, never stacked.

When only reductions are wanted, `capture_stats` returns them for a batch `[B, C, H, W]` without the
`[L, B, H, N, N]` stack a capture holds: per-head entropy and mean attention distance, the class
token's row of every head, the attention rollout row, the top-k and the logit lens. At most one
layer's attention exists at a time, and on CUDA not even that: a FlashAttention-style Triton kernel
(`vit_core.kernels.attention_stats`) computes each layer's output and its statistics in the same
tiled pass. On the CPU the explicit softmax path runs, with the reductions inside its capture points:
a few passes over each layer's weights, and besides the attention itself no temporary larger than
the `[B, H, P, P]` product of the mean distance (see `_explicit_hooks`).

Every number equals the full capture's (`vit_core.analysis`, `vit_core.maps`, `vit_core.rollout`),
tested to 1e-5:
- entropy: `attention_entropy`, the mean over queries of each row's entropy (nats);
- distance: `mean_attention_distance` (pixels, patch queries to patch keys);
- class rows: `maps.class_rows`, the class token's row, or the mean row for a model without one;
- pool rows: an attention-pool readout's weights over the last block's output tokens (SigLIP);
- rollout: `rollout_vector` with its defaults (Abnar & Zuidema 2020: mean head fusion, no discard,
  from the first layer), from the readout's row (the attention pool's for SigLIP). The product has to
  start at the last layer for a row vector, so the stream carries the joint attention J ← Â·J,
  Â = ½(Ā + I) with rows renormalised: one `[B, N, N]` matrix;
- the logit lens: `layer_predictions` (the model's own final norm and head after every block).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch

from vit_core.analysis import mean_patch_distance, patch_distance_matrix
from vit_core.capture import _autocast, _row_entropy, host_arrays
from vit_core.errors import VitCoreError
from vit_core.maps import class_rows
from vit_core.model import ViT
from vit_core.rollout import fuse_heads, pool_query, query_vector, vector_matrix
from vit_core.validate import check_choice, check_range

StatsKernel = Literal["auto", "triton", "explicit"]
Array = torch.Tensor | np.ndarray


@dataclass(frozen=True)
class Stats:
    """A batch's attention statistics. Tensors on the model's device; `to_numpy()` copies them to the host."""

    entropy: Array  # [batch, layer, head], nats: each row's entropy, averaged over the queries
    distance: Array  # [batch, layer, head], pixels: mean attention distance over the patch queries
    class_rows: Array  # [batch, layer, head, key]: the class token's row (the mean row without one)
    rollout: Array  # [batch, key]: the rollout row over all tokens (mean fusion, no discard)
    pool_rows: Array | None  # [batch, head, key]: an attention pool's weights (prefix columns 0); None without one
    logits: Array | None  # [batch, classes]; None without a head
    top_indices: Array | None  # [batch, k], best first (ties: the lower class first)
    top_probs: Array | None  # [batch, k]
    layer_top_indices: Array | None  # [batch, layer, k]: the logit lens's top-k after every block; None without it
    layer_top_probs: Array | None  # [batch, layer, k]
    layer_logits: Array | None  # [batch, layer, classes]; only with layer_logits=True
    num_prefix_tokens: int
    grid: tuple[int, int]  # patches (rows, cols)
    patch_size: int
    has_class_token: bool
    kernel: str  # the path that ran: "triton" or "explicit"

    def to_numpy(self) -> Stats:
        """The same statistics as numpy arrays (float32, indices int64), in one host copy."""
        names = [f.name for f in dataclasses.fields(self) if isinstance(getattr(self, f.name), torch.Tensor)]
        return dataclasses.replace(self, **host_arrays({name: getattr(self, name) for name in names}))

    def rollout_maps(self) -> Array:
        """`[batch, rows, cols]`: the rollout row over the patch tokens."""
        return self.rollout[:, self.num_prefix_tokens :].reshape(-1, *self.grid)

    def readout_rows(self) -> Array:
        """`[batch, key]`: the readout's attention, head mean (`maps.readout_attention_map` for each image): the
        attention pool's weights, else the last layer's class-token row (the mean row without one)."""
        rows = self.pool_rows if self.pool_rows is not None else self.class_rows[:, -1]
        return rows.mean(axis=1) if isinstance(rows, np.ndarray) else rows.mean(dim=1)


def triton_available(device: torch.device) -> bool:
    """Whether the fused kernel can run on `device`: CUDA with Triton, or Triton's CPU interpreter."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    if device.type == "cuda":
        return True
    from triton import knobs

    return device.type == "cpu" and bool(knobs.runtime.interpret)


class _Reductions:
    """Per-layer reductions, filled layer by layer from either path."""

    def __init__(self, model: ViT, grid: tuple[int, int], k: int) -> None:
        cfg = model.cfg
        self.model, self.grid, self.k = model, grid, k
        self.prefix, self.class_token, self.patch_size = cfg.num_prefix_tokens, cfg.class_token, cfg.patch_size
        self.entropy: list[torch.Tensor] = []  # each [B, H]
        self.distance: list[torch.Tensor] = []  # each [B, H]
        self.rows: list[torch.Tensor] = []  # each [B, H, N]
        self.lens: list[torch.Tensor] = []  # each [B, C]
        self.joint: torch.Tensor | None = None  # [B, N, N], the rollout product so far
        self.pool: torch.Tensor | None = None  # [B, H, N], an attention pool's weights

    def attention(self, entropy: torch.Tensor, distance: torch.Tensor, rows: torch.Tensor, head_mean: torch.Tensor):
        """One layer: entropy and distance `[B, H]`, query rows `[B, H, N]`, head-mean attention `[B, N, N]`.

        `head_mean` is used up: in float32 it becomes the layer's rollout factor in place.
        """
        self.entropy.append(entropy.float())
        self.distance.append(distance.float())
        self.rows.append(rows.float())
        # rollout's rule (vit_core.rollout.rollout_row): Â = diag(1 / (s + 1)) · (Ā + I), s the row sums
        mixed = head_mean.float()  # [B, N, N]
        mixed.diagonal(dim1=-2, dim2=-1).add_(1.0)  # + I
        mixed /= mixed.sum(dim=-1, keepdim=True)
        with torch.autocast(mixed.device.type, enabled=False):  # the product stays float32 under autocast
            self.joint = mixed if self.joint is None else torch.bmm(mixed, self.joint)  # the later layer on the left

    def pool_weights(self, pattern: torch.Tensor) -> None:
        """An attention pool's weights `[B, H, 1, patches]` -> `[B, H, N]`, prefix columns 0."""
        weights = pattern[:, :, 0].float()  # [B, H, patches]
        self.pool = torch.cat([weights.new_zeros((*weights.shape[:2], self.prefix)), weights], dim=-1)

    def residual(self, tokens: torch.Tensor) -> None:
        """The logit lens on one block's output `[B, N, D]`."""
        if self.model.head is not None:
            self.lens.append(self.model.head_logits(tokens).float())  # [B, C]

    def result(self, logits: torch.Tensor | None, layer_logits: bool, kernel: str) -> Stats:
        tokens = self.joint.shape[-1]
        pool = None if self.pool is None else pool_query(self.pool)  # [B, N]
        query = query_vector(tokens, self.class_token, self.joint.dtype, self.joint.device, pool)  # [N] or [B, N]
        tops: list[torch.Tensor | None] = [None] * 4
        lens = None
        if logits is not None:
            k = min(self.k, logits.shape[-1])
            # stable sort, as vit_core.analysis.layer_predictions: ties keep the lower class first
            top_probs, top = logits.float().softmax(-1).sort(dim=-1, descending=True, stable=True)
            tops[:2] = [top[..., :k], top_probs[..., :k]]
        if logits is not None and self.lens:
            lens = torch.stack(self.lens, dim=1)  # [B, L, C]
            layer_probs, layer_top = lens.softmax(-1).sort(dim=-1, descending=True, stable=True)
            tops[2:] = [layer_top[..., :k], layer_probs[..., :k]]
        return Stats(
            entropy=torch.stack(self.entropy, dim=1),
            distance=torch.stack(self.distance, dim=1),
            class_rows=torch.stack(self.rows, dim=1),
            rollout=vector_matrix(query, self.joint),  # [B, N]
            pool_rows=self.pool,
            logits=None if logits is None else logits.float(),
            top_indices=tops[0],
            top_probs=tops[1],
            layer_top_indices=tops[2],
            layer_top_probs=tops[3],
            layer_logits=lens if layer_logits else None,
            num_prefix_tokens=self.prefix,
            grid=self.grid,
            patch_size=self.patch_size,
            has_class_token=self.class_token,
            kernel=kernel,
        )


def capture_stats(
    model: ViT,
    pixels: torch.Tensor,
    *,
    k: int = 5,
    layer_logits: bool = False,
    logit_lens: bool = True,
    autocast: torch.dtype | None = None,
    kernel: StatsKernel = "auto",
) -> Stats:
    """Run `pixels` `[B, C, H, W]` once and return the attention statistics of the batch (see the module).

    `k` sets the top-k of the prediction and of the logit lens; `layer_logits=True` also keeps the full
    logit lens `[B, L, C]`. `logit_lens=False` skips the lens (the model's norm and head after every
    block; the `layer_*` fields are then None) for a caller that wants only the final prediction, unless
    `layer_logits` asks for it. `kernel`: "auto" runs the fused Triton kernel on CUDA and the explicit
    path elsewhere; "triton" insists on the kernel (on the CPU only under `TRITON_INTERPRET=1`);
    "explicit" always takes the explicit softmax path with reductions in the capture points.
    """
    check_choice(kernel, get_args(StatsKernel), "statistics kernel")
    k = int(check_range(k, 1, None, "top-k"))
    weight = next(model.parameters())
    device = weight.device
    if pixels.ndim != 4:
        raise VitCoreError("not_a_batch", shape=str(list(pixels.shape)))
    pixels = pixels.to(device, weight.dtype)
    if kernel == "auto":
        fused = device.type == "cuda" and triton_available(device)
    else:
        fused = kernel == "triton"
        if fused and not triton_available(device):
            raise VitCoreError("stats_kernel_unavailable", device=str(device))
    cfg = model.cfg
    grid = (pixels.shape[-2] // cfg.patch_size, pixels.shape[-1] // cfg.patch_size)
    reductions = _Reductions(model, grid, k)
    lens = lambda tokens, _name: reductions.residual(tokens)  # noqa: E731
    hooks = {f"blocks.{i}.hook_resid_post": lens for i in range(cfg.depth)} if logit_lens or layer_logits else {}
    if model.attn_pool is not None:
        hooks["attn_pool.hook_pattern"] = lambda pattern, _name: reductions.pool_weights(pattern)
    if fused:
        context = model.attention_functions(_fused_attention(reductions))
    else:
        hooks.update(_explicit_hooks(reductions, cfg.depth, device))
        context = contextlib.nullcontext()
    with torch.inference_mode():
        with _autocast(device, autocast), model.hooks(hooks), context:
            final = model.forward_tokens(pixels)  # [B, N, D]
            logits = model.head_logits(final) if model.head is not None else None  # [B, C]
            if logits is None and model.attn_pool is not None:
                model.pool(final)  # the attention pool's weights are the readout's row
        return reductions.result(logits, layer_logits, "triton" if fused else "explicit")  # float32, no autocast


def _explicit_hooks(reductions: _Reductions, depth: int, device: torch.device) -> dict:
    """The explicit path: each layer's scores and weights are reduced in the capture points, then freed.

    Per layer, besides the attention: the scores are shifted in place for the entropy (log Z - Σ p·s
    as a batched dot product, `_row_entropy`), the mean distance multiplies the patch-to-patch weights
    by a distance matrix made once, and rollout takes the head mean and one `[B, N, N]` product.
    """
    latest_scores: list[torch.Tensor] = []
    prefix = reductions.prefix
    distances = patch_distance_matrix(reductions.grid, reductions.patch_size, device)  # [P, P]

    def keep_scores(scores: torch.Tensor, _name: str) -> None:
        latest_scores[:] = [scores]  # [B, H, N, N], dropped once this layer's pattern is reduced

    def reduce(pattern: torch.Tensor, _name: str) -> None:
        weights = pattern.float()  # [B, H, N, N]; the same tensor in float32
        # The softmax is done and nothing else reads the scores, so the entropy may shift them in place.
        entropy = _row_entropy(latest_scores[0].float(), weights, overwrite_scores=True).mean(-1)  # [B, H]
        latest_scores.clear()
        distance = mean_patch_distance(weights[..., prefix:, prefix:], distances)  # [B, H]
        rows = class_rows(weights, reductions.class_token)  # [B, H, N]
        reductions.attention(entropy, distance, rows, fuse_heads(weights, "mean"))

    hooks = {}
    for i in range(depth):
        hooks[f"blocks.{i}.attn.hook_attn_scores"] = keep_scores
        hooks[f"blocks.{i}.attn.hook_pattern"] = reduce
    return hooks


def _fused_attention(reductions: _Reductions):
    """The fused path: the Triton kernel computes each layer's output and its statistics together."""
    from vit_core.kernels import attention_stats  # imports triton, only when the kernel runs

    def attention(_layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        result = attention_stats.attention_with_stats(
            q,
            k,
            v,
            scale,
            num_prefix_tokens=reductions.prefix,
            grid=reductions.grid,
            patch_size=reductions.patch_size,
            has_class_token=reductions.class_token,
        )
        distance = result.row_distance[..., reductions.prefix :].mean(-1)  # [B, H], over the patch queries
        reductions.attention(result.row_entropy.mean(-1), distance, result.query_rows, result.head_mean)
        return result.output

    return attention
