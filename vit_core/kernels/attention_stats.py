"""Attention and its statistics in one tiled pass: a FlashAttention-style Triton kernel.

FlashAttention (Dao, Fu, Ermon, Rudra & Ré 2022, "FlashAttention: Fast and Memory-Efficient Exact
Attention with IO-Awareness") computes softmax(QKᵀ·scale)·V tile by tile with an online softmax: per
query row it keeps the running maximum m, the running sum l = Σ exp(s - m) and the output accumulator,
and rescales them by α = exp(m_old - m_new) whenever the maximum grows. The N x N weights never exist.

The kernel here keeps three more running sums per row, rescaled by the same α, so the statistics the
explorer needs come out of the same pass:
- entropy: with t = Σ exp(s - m)·(s - m), H = -Σ p log p = log l - t / l (both from the log-sum-exp
  and Σ p·s, no log per weight); on a new maximum, t ← α·(t + (m_old - m_new)·l) + Σ exp(s - m_new)(s - m_new);
- mean attention distance: u = Σ exp(s - m)·d(q, k) and w = Σ exp(s - m) over the patch keys, with
  d(q, k) the pixel distance between the patch centres, computed from the token indices (prefix tokens
  have no position and are left out); the row's distance is u / w, as `vit_core.analysis` renormalises
  each row over the patch keys;
- the log-sum-exp m + log l of every row, saved for a second pass.

A second pass over the tiles recomputes the scores and, from the saved log-sum-exp, the exact weights
p = exp(s - lse) of every head, and writes their head mean Ā `[B, N, N]` (rollout's head fusion: the
statistics path carries the joint attention J ← ½(Ā + I)·J with rows renormalised, as
`vit_core.rollout` does) and the class token's row of every head (or, for a model without a class
token, the mean over the queries).

Everything is tested on the CPU with Triton's interpreter (`TRITON_INTERPRET=1`, set before this module
is imported) against the explicit softmax path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl


@dataclass(frozen=True)
class AttentionStats:
    """One attention layer's output and statistics, on the device of its inputs."""

    output: torch.Tensor  # [batch, head, query, d_head], softmax(q kᵀ · scale) v, in q's dtype
    log_sum_exp: torch.Tensor  # [batch, head, query] float32, log Σ_k exp(s_qk)
    row_entropy: torch.Tensor  # [batch, head, query] float32, nats
    row_distance: torch.Tensor  # [batch, head, query] float32, pixels; 0 for prefix queries
    query_rows: torch.Tensor | None  # [batch, head, key] float32: the class token's row, or the mean row
    head_mean: torch.Tensor | None  # [batch, query, key] float32: the attention averaged over heads


@triton.jit
def _forward_with_stats(
    Q, K, V, Out, LogSumExp, Entropy, Distance,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    heads, tokens, head_dim, scale, prefix, grid_cols, patch_size,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    # One program: BLOCK_M query rows of one (image, head), looping over all keys in BLOCK_N tiles.
    batch_head = tl.program_id(1)
    b = batch_head // heads
    h = batch_head % heads
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # [BM] query indices
    dims = tl.arange(0, BLOCK_D)  # [BD], head_dim padded to a power of two
    row_ok = rows < tokens
    dim_ok = dims < head_dim
    q = tl.load(
        Q + b * stride_qb + h * stride_qh + rows[:, None] * stride_qn + dims[None, :] * stride_qd,
        mask=row_ok[:, None] & dim_ok[None, :],
        other=0.0,
    )  # [BM, BD]
    query_patch = rows - prefix  # patch index of each query; negative for prefix tokens
    query_y = (query_patch // grid_cols).to(tl.float32)
    query_x = (query_patch % grid_cols).to(tl.float32)

    running_max = tl.full([BLOCK_M], -1.0e30, tl.float32)  # finite: (m_old - m_new)·0 stays 0
    total = tl.zeros([BLOCK_M], tl.float32)  # l = Σ exp(s - m)
    shifted_sum = tl.zeros([BLOCK_M], tl.float32)  # t = Σ exp(s - m)·(s - m)
    distance_sum = tl.zeros([BLOCK_M], tl.float32)  # u = Σ_patch keys exp(s - m)·d
    patch_total = tl.zeros([BLOCK_M], tl.float32)  # w = Σ_patch keys exp(s - m)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)  # Σ exp(s - m)·v
    for start in range(0, tokens, BLOCK_N):
        keys = start + tl.arange(0, BLOCK_N)  # [BN]
        key_ok = keys < tokens
        k = tl.load(
            K + b * stride_kb + h * stride_kh + keys[None, :] * stride_kn + dims[:, None] * stride_kd,
            mask=dim_ok[:, None] & key_ok[None, :],
            other=0.0,
        )  # [BD, BN]
        scores = tl.dot(q, k, input_precision=PRECISION) * scale  # [BM, BN]
        scores = tl.where(key_ok[None, :], scores, -1.0e30)
        new_max = tl.maximum(running_max, tl.max(scores, axis=1))
        alpha = tl.exp(running_max - new_max)  # [BM], rescales everything summed so far
        shifted = tl.where(key_ok[None, :], scores - new_max[:, None], 0.0)  # s - m_new
        weights = tl.where(key_ok[None, :], tl.exp(shifted), 0.0)  # [BM, BN], exp(s - m_new)
        shifted_sum = alpha * (shifted_sum + (running_max - new_max) * total) + tl.sum(weights * shifted, axis=1)
        total = alpha * total + tl.sum(weights, axis=1)

        key_patch = keys - prefix
        key_y = (key_patch // grid_cols).to(tl.float32)
        key_x = (key_patch % grid_cols).to(tl.float32)
        dy = query_y[:, None] - key_y[None, :]
        dx = query_x[:, None] - key_x[None, :]
        distance = tl.sqrt(dy * dy + dx * dx) * patch_size  # [BM, BN] pixels between patch centres
        patch_weights = tl.where((key_ok & (key_patch >= 0))[None, :], weights, 0.0)
        distance_sum = alpha * distance_sum + tl.sum(patch_weights * distance, axis=1)
        patch_total = alpha * patch_total + tl.sum(patch_weights, axis=1)

        v = tl.load(
            V + b * stride_vb + h * stride_vh + keys[:, None] * stride_vn + dims[None, :] * stride_vd,
            mask=key_ok[:, None] & dim_ok[None, :],
            other=0.0,
        )  # [BN, BD]
        acc = acc * alpha[:, None] + tl.dot(weights.to(v.dtype), v, input_precision=PRECISION)
        running_max = new_max

    out = acc / total[:, None]
    tl.store(
        Out + b * stride_ob + h * stride_oh + rows[:, None] * stride_on + dims[None, :] * stride_od,
        out.to(Out.dtype.element_ty),
        mask=row_ok[:, None] & dim_ok[None, :],
    )
    stats = (b * heads + h) * tokens + rows  # the [B, H, N] statistics are contiguous
    log_total = tl.log(total)
    tl.store(LogSumExp + stats, running_max + log_total, mask=row_ok)
    tl.store(Entropy + stats, log_total - shifted_sum / total, mask=row_ok)
    row_distance = tl.where(query_patch >= 0, distance_sum / tl.maximum(patch_total, 1.0e-30), 0.0)
    tl.store(Distance + stats, row_distance, mask=row_ok)


@triton.jit
def _weights_second_pass(
    Q, K, LogSumExp, HeadMean, QueryRows,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    heads, tokens, head_dim, scale,
    CLASS_TOKEN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    # One program: a BLOCK_M x BLOCK_N tile of one image's weights, every head in turn.
    block_m = tl.program_id(0)
    b = tl.program_id(2)
    rows = block_m * BLOCK_M + tl.arange(0, BLOCK_M)
    keys = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < tokens
    key_ok = keys < tokens
    dim_ok = dims < head_dim
    inside = row_ok[:, None] & key_ok[None, :]
    head_sum = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for h in range(heads):
        q = tl.load(
            Q + b * stride_qb + h * stride_qh + rows[:, None] * stride_qn + dims[None, :] * stride_qd,
            mask=row_ok[:, None] & dim_ok[None, :],
            other=0.0,
        )  # [BM, BD]
        k = tl.load(
            K + b * stride_kb + h * stride_kh + keys[None, :] * stride_kn + dims[:, None] * stride_kd,
            mask=dim_ok[:, None] & key_ok[None, :],
            other=0.0,
        )  # [BD, BN]
        scores = tl.dot(q, k, input_precision=PRECISION) * scale
        log_sum_exp = tl.load(LogSumExp + (b * heads + h) * tokens + rows, mask=row_ok, other=0.0)
        weights = tl.where(inside, tl.exp(scores - log_sum_exp[:, None]), 0.0)  # [BM, BN], exact softmax
        head_sum += weights
        row_out = QueryRows + (b * heads + h) * tokens + keys
        if CLASS_TOKEN:  # query 0's row, written by the programs of the first row tile
            first = tl.sum(tl.where(rows[:, None] == 0, weights, 0.0), axis=0)
            tl.store(row_out, first, mask=key_ok & (block_m == 0))
        else:  # the mean over all queries, summed over the row tiles
            tl.atomic_add(row_out, tl.sum(weights, axis=0) / tokens, mask=key_ok)
    tl.store(HeadMean + (b * tokens + rows[:, None]) * tokens + keys[None, :], head_sum / heads, mask=inside)


def attention_with_stats(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    *,
    num_prefix_tokens: int,
    grid: tuple[int, int],
    patch_size: int,
    has_class_token: bool = True,
    second_pass: bool = True,
    block_m: int = 64,
    block_n: int = 64,
) -> AttentionStats:
    """softmax(q kᵀ · scale) v and its statistics for q, k, v `[B, H, N, d_head]` (any strides).

    `second_pass=False` skips the head mean and the query rows. Tiles of `block_m` queries by `block_n`
    keys (powers of two, at least 16); float32 inputs use exact float32 products (no TF32), bf16 and
    fp16 inputs multiply in their dtype and accumulate in float32, as FlashAttention does.
    """
    batch, heads, tokens, head_dim = q.shape
    block_d = max(16, triton.next_power_of_2(head_dim))
    precision = "ieee" if q.dtype == torch.float32 else None  # None: the backend's default for bf16/fp16
    out = torch.empty((batch, heads, tokens, head_dim), dtype=q.dtype, device=q.device)
    log_sum_exp, entropy, distance = (
        torch.empty((batch, heads, tokens), dtype=torch.float32, device=q.device) for _ in range(3)
    )
    _forward_with_stats[(triton.cdiv(tokens, block_m), batch * heads)](
        q, k, v, out, log_sum_exp, entropy, distance,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        heads, tokens, head_dim, float(scale), num_prefix_tokens, grid[1], float(patch_size),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, PRECISION=precision,
    )  # fmt: skip
    head_mean = query_rows = None
    if second_pass:
        head_mean = torch.empty((batch, tokens, tokens), dtype=torch.float32, device=q.device)
        query_rows = torch.zeros((batch, heads, tokens), dtype=torch.float32, device=q.device)
        _weights_second_pass[(triton.cdiv(tokens, block_m), triton.cdiv(tokens, block_n), batch)](
            q, k, log_sum_exp, head_mean, query_rows,
            *q.stride(), *k.stride(),
            heads, tokens, head_dim, float(scale),
            CLASS_TOKEN=has_class_token, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, PRECISION=precision,
        )  # fmt: skip
    return AttentionStats(out, log_sum_exp, entropy, distance, query_rows, head_mean)
