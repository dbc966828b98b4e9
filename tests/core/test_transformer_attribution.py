"""Transformer Attribution (Chefer et al. CVPR 2021): a hand-computed combination, and the whole method against a
loop-by-loop reimplementation of the paper's relevance equations on a 2-layer model, in float64."""

import math

import numpy as np
import pytest
import torch

from tests.reference import perturb
from vit_core.capture import capture_batch
from vit_core.config import ViTConfig
from vit_core.lrp import attention_relevance_and_gradients
from vit_core.model import ViT
from vit_core.relevance import transformer_attribution, transformer_attribution_batch


def test_one_block_by_hand():
    # 3 tokens (class + 2 patches), 2 heads. Class-token row of ∇A ⊙ R: head 0 (1·0.5, 2·0.5, −1·1) = (0.5, 1, −1),
    # head 1 (0, 1, 3); clamped at 0 and averaged: (0.25, 1, 1.5). Row 0 of I + Ā: (1.25, 1, 1.5); patches (1, 1.5).
    grads = torch.zeros(1, 2, 3, 3, dtype=torch.float64)
    relevances = torch.zeros(1, 2, 3, 3, dtype=torch.float64)
    grads[0, 0, 0] = torch.tensor([1.0, 2.0, -1.0])
    relevances[0, 0, 0] = torch.tensor([0.5, 0.5, 1.0])
    grads[0, 1, 0] = torch.tensor([0.0, 1.0, 3.0])
    relevances[0, 1, 0] = torch.tensor([1.0, 1.0, 1.0])
    got = transformer_attribution(relevances, grads, (1, 2), num_prefix_tokens=1)
    assert got.ravel().tolist() == pytest.approx([1.0, 1.5]) and got.shape == (1, 2)


def test_two_blocks_by_hand_no_renormalisation():
    # Ā_0 row 1 = (0, 0, 2) (patch 1 -> patch 2), Ā_1 row 0 = (0, 1, 0) (class -> patch 1); rows of (I + Ā) are not
    # renormalised: row 0 of (I + Ā_1)(I + Ā_0) = (1, 1, 0)(I + Ā_0) = (1, 1, 2).
    grads = torch.zeros(2, 1, 3, 3, dtype=torch.float64)
    relevances = torch.ones(2, 1, 3, 3, dtype=torch.float64)
    grads[0, 0, 1, 2] = 2.0
    grads[1, 0, 0, 1] = 1.0
    assert transformer_attribution(relevances, grads, (1, 2), 1).ravel().tolist() == pytest.approx([1.0, 2.0])
    assert transformer_attribution(relevances, grads, (1, 2), 1, start_layer=1).ravel().tolist() == pytest.approx(
        [1.0, 0.0]
    )


# ---- the paper's equations, one loop per sum ----------------------------------------------------------


def _pos(x: float, w: float) -> float:
    """The positive part of a contribution in α1β0: x⁺w⁺ + x⁻w⁻."""
    return max(x, 0) * max(w, 0) + min(x, 0) * min(w, 0)


def _div(a: float, b: float) -> float:
    return 0.0 if b == 0 else a / (b + (1e-9 if b >= 0 else -1e-9))


def linear_alpha1_beta0(x: np.ndarray, weight: np.ndarray, relevance: np.ndarray) -> np.ndarray:
    """x [n, in], weight [out, in], relevance [n, out] -> [n, in]."""
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(weight.shape[0]):
            z = sum(_pos(x[t, i], weight[j, i]) for i in range(x.shape[1]))
            for i in range(x.shape[1]):
                out[t, i] += _div(_pos(x[t, i], weight[j, i]) * relevance[t, j], z)
    return out


def matmul_relevance(a: np.ndarray, b: np.ndarray, relevance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Z = a [n, m] @ b [m, p]: R_a[i, k] = Σⱼ a_ik b_kj R_ij / (2 Z_ij), R_b[k, j] = Σᵢ the same."""
    z = a @ b
    r_a, r_b = np.zeros_like(a), np.zeros_like(b)
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            for k in range(a.shape[1]):
                share = _div(a[i, k] * b[k, j] * relevance[i, j], z[i, j]) / 2
                r_a[i, k] += share
                r_b[k, j] += share
    return r_a, r_b


def add_relevance(a: np.ndarray, b: np.ndarray, relevance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = a + b
    r_a = np.array([[_div(a[t, d] * relevance[t, d], z[t, d]) for d in range(a.shape[1])] for t in range(len(a))])
    r_b = np.array([[_div(b[t, d] * relevance[t, d], z[t, d]) for d in range(a.shape[1])] for t in range(len(a))])
    sum_a, sum_b, total = r_a.sum(), r_b.sum(), relevance.sum()
    share_a = _div(abs(sum_a), abs(sum_a) + abs(sum_b))
    return r_a * _div(share_a * total, sum_a), r_b * _div((1 - share_a) * total, sum_b)


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps) * weight + bias


def gelu(x: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))(x)


def loop_relevances(model: ViT, pixels: torch.Tensor, target: int) -> list[np.ndarray]:
    """R at every block's attention weights `[H, N, N]` for one image, the paper's equations with loops."""
    cfg = model.cfg
    p = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    with torch.no_grad():
        x = model.embed(pixels[None])[0].numpy()  # [N, D]
    heads, head_dim, eps = cfg.num_heads, cfg.head_dim, cfg.norm_eps
    saved = []
    for i in range(cfg.depth):
        b = f"blocks.{i}."
        n1 = layer_norm(x, p[b + "norm1.weight"], p[b + "norm1.bias"], eps)
        qkv = n1 @ p[b + "attn.qkv.weight"].T + p[b + "attn.qkv.bias"]  # [N, 3D]
        q, k, v = (qkv[:, s * cfg.embed_dim : (s + 1) * cfg.embed_dim] for s in range(3))
        per_head = []
        for h in range(heads):
            cols = slice(h * head_dim, (h + 1) * head_dim)
            qs = q[:, cols] * head_dim**-0.5
            scores = qs @ k[:, cols].T
            attention = np.exp(scores - scores.max(-1, keepdims=True))
            attention /= attention.sum(-1, keepdims=True)
            per_head.append((qs, k[:, cols], v[:, cols], attention))
        context = np.concatenate([a @ vv for _, _, vv, a in per_head], axis=1)  # [N, D]
        attn_out = context @ p[b + "attn.proj.weight"].T + p[b + "attn.proj.bias"]
        mid = x + attn_out
        n2 = layer_norm(mid, p[b + "norm2.weight"], p[b + "norm2.bias"], eps)
        hidden = n2 @ p[b + "mlp.fc1.weight"].T + p[b + "mlp.fc1.bias"]
        activated = gelu(hidden)
        mlp_out = activated @ p[b + "mlp.fc2.weight"].T + p[b + "mlp.fc2.bias"]
        saved.append((x, n1, per_head, context, attn_out, mid, n2, activated, mlp_out))
        x = mid + mlp_out
    pooled = layer_norm(x, p["norm.weight"], p["norm.bias"], eps)[:1]  # [1, D], the class token
    one_hot = np.zeros((1, cfg.num_classes))
    one_hot[0, target] = 1.0
    relevance = np.zeros_like(x)
    relevance[:1] = linear_alpha1_beta0(pooled, p["head.weight"], one_hot)  # final norm: identity
    found = [None] * cfg.depth
    for i in reversed(range(cfg.depth)):
        b = f"blocks.{i}."
        x_in, n1, per_head, context, attn_out, mid, n2, activated, mlp_out = saved[i]
        r_mid, r_mlp = add_relevance(mid, mlp_out, relevance)
        r_hidden = linear_alpha1_beta0(activated, p[b + "mlp.fc2.weight"], r_mlp)  # GELU: identity
        r_n2 = linear_alpha1_beta0(n2, p[b + "mlp.fc1.weight"], r_hidden)  # norm2: identity
        r_x, r_attn = add_relevance(x_in, attn_out, r_mid + r_n2)
        r_context = linear_alpha1_beta0(context, p[b + "attn.proj.weight"], r_attn)
        r_q, r_k, r_v, per_layer = [], [], [], []
        for h, (qs, kk, vv, attention) in enumerate(per_head):
            r_a, r_vh = matmul_relevance(attention, vv, r_context[:, h * head_dim : (h + 1) * head_dim])
            per_layer.append(r_a)
            r_qh, r_kt = matmul_relevance(qs, kk.T, r_a)  # softmax: identity
            r_q.append(r_qh)
            r_k.append(r_kt.T)
            r_v.append(r_vh)
        found[i] = np.stack(per_layer)
        r_qkv = np.concatenate([np.concatenate(r, axis=1) for r in (r_q, r_k, r_v)], axis=1)
        relevance = r_x + linear_alpha1_beta0(n1, p[b + "attn.qkv.weight"], r_qkv)  # norm1: identity
    return found


def tiny_model() -> ViT:
    cfg = ViTConfig(image_size=(2, 4), patch_size=2, embed_dim=4, depth=2, num_heads=2, mlp_dim=8, num_classes=3)
    return perturb(ViT(cfg), std=0.5, seed=1).double()


def test_against_the_papers_equations_in_loops():
    model = tiny_model()
    pixels = torch.randn(2, 3, 2, 4, dtype=torch.float64)
    relevances, grads, targets = attention_relevance_and_gradients(model, pixels, [2, 0])
    captures = capture_batch(model, pixels, target=[2, 0])
    maps = transformer_attribution_batch(model, pixels, [2, 0])
    for b, (target, result) in enumerate(zip([2, 0], captures, strict=True)):
        expected = loop_relevances(model, pixels[b], target)
        for layer in range(2):
            assert np.allclose(relevances[layer, b].numpy(), expected[layer], atol=1e-9), layer
        assert np.allclose(grads[:, b].numpy(), result.attention_grads, atol=1e-6)
        # the combination, by loops: C = Π (I + mean_h (∇A ⊙ R)⁺), class-token row over the patches
        joint = np.eye(3)
        for layer in range(2):
            cam = np.zeros((3, 3))
            for h in range(2):
                for i in range(3):
                    for j in range(3):
                        cam[i, j] += max(result.attention_grads[layer, h, i, j] * expected[layer][h, i, j], 0) / 2
            joint = (np.eye(3) + cam) @ joint
        assert maps[b].ravel() == pytest.approx(joint[0, 1:], rel=1e-5, abs=1e-9)
    assert [t.key for t in targets] == [2, 0]


def test_relevance_through_the_model_keeps_its_total():
    # α1β0 on the head hands on R = 1; the residual rule and the halving keep it across blocks, in float64.
    model = tiny_model()
    relevances, _, _ = attention_relevance_and_gradients(model, torch.randn(1, 3, 2, 4, dtype=torch.float64), 1)
    assert relevances.shape == (2, 1, 2, 3, 3)
    assert torch.isfinite(relevances).all()
