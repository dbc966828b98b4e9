"""The streaming statistics path equals the full capture's computations; the fused kernel equals the explicit path.

The Triton kernel runs here in Triton's interpreter, on the CPU, on small shapes. The interpreter must be
on before triton is first imported (triton's own `tl.sum` and friends are decorated then), so the
`test_interpreted_*` tests run in a second pytest process started with `TRITON_INTERPRET=1`
(`test_the_kernel_runs_under_the_interpreter`). Where CUDA exists the same checks run compiled on the GPU.
"""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.reference import perturb
from vit_core import Stats, ViT, ViTConfig, VitCoreError, capture_batch, capture_stats
from vit_core.analysis import attention_entropy, entropy_per_head, layer_predictions, mean_attention_distance
from vit_core.capture import _row_entropy, tensor_view
from vit_core.explain import explain
from vit_core.maps import class_rows
from vit_core.rollout import rollout, rollout_vector

TINY = ViTConfig(image_size=(32, 32), patch_size=8, embed_dim=32, depth=3, num_heads=4, mlp_dim=64, num_classes=7)
MODELS = {
    "class token": TINY,
    "class token and registers": dataclasses.replace(TINY, num_register_tokens=2),
    "registers only": dataclasses.replace(TINY, class_token=False, num_register_tokens=2, global_pool="avg"),
    "distilled": dataclasses.replace(TINY, distill_token=True, distill_head=True),
    "no head": dataclasses.replace(TINY, num_classes=0),
    "attention pool": dataclasses.replace(TINY, class_token=False, global_pool="map"),
    "attention pool, no head": dataclasses.replace(
        TINY, class_token=False, global_pool="map", num_classes=0, image_embed_dim=32, image_proj=False
    ),
}
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
ROOT = Path(__file__).resolve().parents[2]


def tiny(cfg: ViTConfig, device: str = "cpu") -> ViT:
    return perturb(ViT(cfg), std=0.3).to(device)


def assert_stats_equal_the_full_capture(stats: Stats, model: ViT, pixels: torch.Tensor, k: int, atol: float) -> None:
    """Every statistic against the numpy analyses of a full capture of the same batch."""
    stats = stats.to_numpy()
    full = capture_batch(model, pixels.cpu())
    layers, heads = model.cfg.depth, model.cfg.num_heads
    assert stats.entropy.shape == stats.distance.shape == (len(full), layers, heads)
    for b, image in enumerate(full):
        attentions = tensor_view(image.attentions)
        assert np.allclose(stats.entropy[b], attention_entropy(image), atol=atol)
        assert np.allclose(stats.distance[b], mean_attention_distance(image), atol=atol)
        assert np.allclose(stats.class_rows[b], class_rows(attentions, image.has_class_token).numpy(), atol=atol)
        pool = None if image.pool_attention is None else tensor_view(image.pool_attention)
        assert (stats.pool_rows is None) == (pool is None)
        if pool is not None:
            assert np.allclose(stats.pool_rows[b], image.pool_attention, atol=atol)
        rollout_row = rollout_vector(attentions, image.num_prefix_tokens, image.has_class_token, pool_attention=pool)
        assert np.allclose(stats.rollout[b], rollout_row.numpy(), atol=atol)
        assert np.allclose(stats.rollout_maps()[b], rollout(image), atol=atol)
        assert np.allclose(stats.readout_rows()[b, image.num_prefix_tokens :], explain(image, "attention").ravel())
        if image.logits is None:
            assert stats.logits is None and stats.top_indices is None and stats.layer_top_indices is None
            continue
        assert np.allclose(stats.logits[b], image.logits, atol=atol)
        assert stats.top_indices[b].tolist() == np.argsort(-image.probs, kind="stable")[:k].tolist()
        assert np.allclose(stats.top_probs[b], np.sort(image.probs)[::-1][:k], atol=atol)
        lens = layer_predictions(image, k)
        assert np.array_equal(stats.layer_top_indices[b], lens.top_indices)
        assert np.allclose(stats.layer_top_probs[b], lens.top_probs, atol=atol)
        if stats.layer_logits is not None:
            assert np.allclose(stats.layer_logits[b], image.layer_logits, atol=atol)


@pytest.mark.parametrize("name", list(MODELS))
def test_streaming_statistics_equal_the_full_capture(name):
    model, pixels = tiny(MODELS[name]), torch.randn(3, 3, 32, 32)
    stats = capture_stats(model, pixels, k=3, layer_logits=True)
    assert stats.kernel == "explicit" and isinstance(stats.entropy, torch.Tensor)
    assert stats.class_rows.shape == (3, 3, 4, 16 + model.cfg.num_prefix_tokens)
    assert_stats_equal_the_full_capture(stats, model, pixels, k=3, atol=1e-5)


def test_a_grid_that_is_not_square_and_the_lens_top_k_only():
    model, pixels = tiny(TINY), torch.randn(2, 3, 32, 48)  # 4 x 6 patches
    stats = capture_stats(model, pixels, k=2)
    assert stats.grid == (4, 6) and stats.layer_logits is None and stats.layer_top_indices.shape == (2, 3, 2)
    assert_stats_equal_the_full_capture(stats, model, pixels, k=2, atol=1e-5)


def test_without_the_logit_lens_everything_else_is_the_same():
    model, pixels = tiny(TINY), torch.randn(2, 3, 32, 32)
    full, bare = capture_stats(model, pixels, k=3), capture_stats(model, pixels, k=3, logit_lens=False)
    assert bare.layer_top_indices is None and bare.layer_top_probs is None and bare.layer_logits is None
    for name in ("entropy", "distance", "class_rows", "rollout", "logits", "top_indices", "top_probs"):
        assert torch.equal(getattr(bare, name), getattr(full, name)), name
    assert capture_stats(model, pixels, logit_lens=False, layer_logits=True).layer_logits.shape == (2, 3, 7)


def test_saturated_attention_keeps_its_entropy_and_leaves_the_model_as_it_was():
    # std 3.0 gives scores up to ~10⁴ and near one-hot rows: the streaming entropy (log Z - Σ p·s, the
    # scores shifted in place) must still equal -Σ p log p of the captured weights, a formula without scores.
    model, pixels = perturb(ViT(TINY), std=3.0), torch.randn(2, 3, 32, 32)
    stats = capture_stats(model, pixels).to_numpy()
    full = capture_batch(model, pixels, scores=True)
    assert np.abs(np.stack([image.scores for image in full])).max() > 1e3
    for b, image in enumerate(full):
        assert np.allclose(stats.entropy[b], entropy_per_head(tensor_view(image.attentions)).numpy(), atol=2e-5)
        assert np.allclose(stats.distance[b], mean_attention_distance(image), atol=1e-4)
    assert not any(point.active for point in model.hook_points.values())
    assert torch.equal(capture_stats(model, pixels).entropy, torch.from_numpy(stats.entropy))  # nothing drifted


def test_bad_options_are_refused():
    model = tiny(TINY)
    with pytest.raises(VitCoreError, match="unknown statistics kernel 'cuda'"):
        capture_stats(model, torch.randn(1, 3, 32, 32), kernel="cuda")
    with pytest.raises(VitCoreError) as error:
        capture_stats(model, torch.randn(3, 32, 32))
    assert error.value.key == "not_a_batch"
    with pytest.raises(VitCoreError) as error:
        capture_stats(model, torch.randn(1, 3, 32, 32), k=0)
    assert error.value.key == "value_too_small"


@pytest.mark.skipif(INTERPRETED, reason="the interpreter runs the kernel on the CPU")
def test_the_fused_kernel_on_a_cpu_without_the_interpreter_is_one_sentence():
    with pytest.raises(VitCoreError) as error:
        capture_stats(tiny(TINY), torch.randn(1, 3, 32, 32), kernel="triton")
    assert error.value.key == "stats_kernel_unavailable" and "explicit" in str(error.value)


# ---- the fused kernel -------------------------------------------------------------------------------


@pytest.mark.skipif(INTERPRETED, reason="this is the process that runs them")
def test_the_kernel_runs_under_the_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "interpreted"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]


interpreted = pytest.mark.skipif(
    not INTERPRETED, reason="runs in a process with TRITON_INTERPRET=1 (test_the_kernel_runs_under_the_interpreter)"
)


def explicit(q, k, v, scale, prefix, grid, patch_size, has_class_token):
    """The explicit softmax path and the same statistics from the full weights."""
    from vit_core.analysis import distances_from_indices

    scores = (q * scale) @ k.transpose(-2, -1)  # [B, H, N, N]
    weights = scores.softmax(-1)
    patch_weights = weights[..., prefix:]  # keys: patches only
    distances = distances_from_indices(grid, patch_size, q.device)  # [P, P]
    rows = torch.zeros(weights.shape[:-1])  # [B, H, N]; prefix queries have no distance
    rows[..., prefix:] = (patch_weights[..., prefix:, :] * distances).sum(-1) / patch_weights[..., prefix:, :].sum(-1)
    return {
        "output": weights @ v,
        "log_sum_exp": scores.logsumexp(-1),
        "row_entropy": _row_entropy(scores, weights),
        "row_distance": rows,
        "head_mean": weights.mean(1),
        "query_rows": class_rows(weights, has_class_token),
    }


SHAPES = [  # (prefix, grid, class token, head_dim, tile)
    (1, (4, 4), True, 8, 16),  # N = 17: one token past the tile
    (1, (6, 6), True, 24, 16),  # N = 37, head_dim not a power of two
    (5, (4, 4), True, 16, 16),  # class token and 4 registers
    (2, (4, 4), False, 16, 16),  # registers only: the mean query row
    (0, (4, 4), False, 16, 16),  # N = 16: exactly one tile, no prefix
    (2, (6, 8), True, 32, 32),  # N = 50, a grid that is not square
]


@interpreted
@pytest.mark.parametrize("prefix,grid,has_class_token,head_dim,tile", SHAPES)
def test_interpreted_kernel_equals_the_explicit_path(prefix, grid, has_class_token, head_dim, tile):
    from vit_core.kernels import attention_stats

    batch, heads, tokens = 2, 3, prefix + grid[0] * grid[1]
    # q, k, v strided as the model makes them: one qkv projection, permuted
    qkv = torch.randn(batch, tokens, 3, heads, head_dim) * 1.5
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, N, Dh], not contiguous
    scale = head_dim**-0.5
    ours = attention_stats.attention_with_stats(
        q,
        k,
        v,
        scale,
        num_prefix_tokens=prefix,
        grid=grid,
        patch_size=8,
        has_class_token=has_class_token,
        block_m=tile,
        block_n=tile,
    )
    expected = explicit(q, k, v, scale, prefix, grid, 8, has_class_token)
    for name, value in expected.items():
        got = getattr(ours, name)
        assert got.shape == value.shape, name
        assert torch.allclose(got, value, atol=1e-5), (name, (got - value).abs().max())


@interpreted
@pytest.mark.parametrize("name", ["class token and registers", "registers only", "no head"])
def test_interpreted_statistics_path_with_the_kernel_equals_the_full_capture(name):
    model, pixels = tiny(MODELS[name]), torch.randn(2, 3, 32, 32)
    fused = capture_stats(model, pixels, k=3, layer_logits=True, kernel="triton")
    assert fused.kernel == "triton"
    assert_stats_equal_the_full_capture(fused, model, pixels, k=3, atol=1e-5)
    assert all(block.attn.attention_fn is None for block in model.blocks)


@CUDA
@pytest.mark.parametrize("name", list(MODELS))
def test_on_cuda_the_fused_statistics_equal_the_full_capture(name):
    model, pixels = tiny(MODELS[name], "cuda"), torch.randn(4, 3, 32, 32)
    stats = capture_stats(model, pixels, k=3, layer_logits=True)  # auto: the kernel on CUDA
    assert stats.kernel == "triton" and stats.entropy.is_cuda
    assert_stats_equal_the_full_capture(stats, model.cpu(), pixels, k=3, atol=1e-4)


@CUDA
def test_on_cuda_the_kernel_equals_the_explicit_path_in_fp32_and_bf16():
    from vit_core.kernels.attention_stats import attention_with_stats

    for prefix, grid, has_class_token, head_dim, _ in SHAPES:
        tokens = prefix + grid[0] * grid[1]
        q, k, v = (torch.randn(2, 3, tokens, head_dim, device="cuda") for _ in range(3))
        expected = explicit(q.cpu(), k.cpu(), v.cpu(), head_dim**-0.5, prefix, grid, 8, has_class_token)
        for dtype, atol in [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)]:
            ours = attention_with_stats(
                q.to(dtype),
                k.to(dtype),
                v.to(dtype),
                head_dim**-0.5,
                num_prefix_tokens=prefix,
                grid=grid,
                patch_size=8,
                has_class_token=has_class_token,
            )
            for name, value in expected.items():
                got = getattr(ours, name).float().cpu()
                assert torch.allclose(got, value, atol=atol * max(1.0, value.abs().max().item())), (name, dtype)


def test_under_bf16_autocast_the_reductions_still_run_in_float32():
    # The attention itself is computed in bf16, but the rollout product and the statistics must not lose
    # more: they equal the analyses of a capture made under the same autocast.
    model, pixels = tiny(MODELS["class token and registers"]), torch.randn(2, 3, 32, 32)
    stats = capture_stats(model, pixels, autocast=torch.bfloat16).to_numpy()
    for b, image in enumerate(capture_batch(model, pixels, autocast=torch.bfloat16)):
        attentions = tensor_view(image.attentions)
        expected = rollout_vector(attentions, image.num_prefix_tokens, image.has_class_token).numpy()
        assert np.allclose(stats.rollout[b], expected, atol=1e-5), np.abs(stats.rollout[b] - expected).max()
        assert np.allclose(stats.entropy[b], attention_entropy(image), atol=1e-5)
        assert np.allclose(stats.distance[b], mean_attention_distance(image), atol=1e-4)
