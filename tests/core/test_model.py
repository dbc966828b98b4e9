"""Behaviour of the model and the capture: paths agree, hooks are scoped, gradients are right."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.reference import perturb
from vit_core import Capture, ViT, ViTConfig, VitCoreError, capture, capture_batch, predict, resolve_device

TINY = ViTConfig(image_size=(32, 32), patch_size=8, embed_dim=32, depth=3, num_heads=4, mlp_dim=64, num_classes=5)


@pytest.fixture
def tiny() -> ViT:
    return perturb(ViT(TINY), std=0.2)


def test_fused_and_explicit_paths_give_the_same_numbers(tiny):
    pixels = torch.randn(3, 3, 32, 32)
    fused = predict(tiny, pixels)
    tiny.set_fused_attention(False)
    explicit = predict(tiny, pixels)
    captured = np.stack([c.logits for c in capture_batch(tiny, pixels)])
    assert torch.allclose(fused, explicit, atol=1e-5)
    assert np.allclose(captured, fused.numpy(), atol=1e-5)


def test_fast_path_is_taken_only_without_pattern_hooks(tiny, monkeypatch):
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(
        torch.nn.functional, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    predict(tiny, torch.randn(1, 3, 32, 32))
    assert len(calls) == TINY.depth
    capture(tiny, torch.randn(3, 32, 32))
    assert len(calls) == TINY.depth  # the capture took the explicit path in every layer


def test_capture_shapes_and_invariants(tiny):
    result = capture(tiny, torch.randn(3, 32, 32), scores=True, qk=True)
    n = 1 + 16
    assert result.attentions.shape == (3, 4, n, n) and result.attentions.dtype == np.float32
    assert np.allclose(result.attentions.sum(-1), 1.0, atol=1e-5)
    assert result.tokens.shape == (4, n, 32)
    assert result.layer_logits.shape == (3, 5) and result.logits.shape == (5,)
    assert result.grid == (4, 4) and result.num_prefix_tokens == 1
    # scores are the pre-softmax values; q and k reproduce them with the 1/sqrt(d_k) scale.
    assert np.allclose(torch.from_numpy(result.scores).softmax(-1).numpy(), result.attentions, atol=1e-6)
    scaled = result.queries @ result.keys.transpose(0, 1, 3, 2) / np.sqrt(TINY.head_dim)
    assert np.allclose(scaled, result.scores, atol=1e-4)


def test_logit_lens_at_the_last_layer_equals_the_logits(tiny):
    result = capture(tiny, torch.randn(3, 32, 32))
    assert np.allclose(result.layer_logits[-1], result.logits, atol=1e-6)
    assert np.allclose(result.probs, np.exp(result.logits) / np.exp(result.logits).sum(), atol=1e-6)


def test_batch_capture_equals_one_image_at_a_time(tiny):
    pixels = torch.randn(3, 3, 32, 32)
    batch = capture_batch(tiny, pixels, target=[0, 1, 2])
    for i, one in enumerate(batch):
        single = capture(tiny, pixels[i], target=i)
        for field in ("attentions", "tokens", "logits", "layer_logits", "attention_grads"):
            assert np.allclose(getattr(one, field), getattr(single, field), atol=1e-5), field


def test_hand_computable_uniform_attention():
    """Zero query/key weights make every score 0, so every head attends uniformly: 1/N."""
    model = ViT(TINY).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight[: 2 * TINY.embed_dim].zero_()
            block.attn.qkv.bias[: 2 * TINY.embed_dim].zero_()
    result = capture(model, torch.randn(3, 32, 32), scores=True)
    assert np.allclose(result.scores, 0.0)
    assert np.allclose(result.attentions, 1.0 / 17, atol=1e-7)


def logit_with_nudged_attention(model, pixels, target, layer, index, delta) -> float:
    """The target logit after adding `delta` to one attention weight (head, query, key) of `layer`."""

    def nudge(pattern: torch.Tensor, _name: str) -> torch.Tensor:
        pattern = pattern.clone()
        pattern[(0, *index)] += delta
        return pattern

    with torch.no_grad(), model.hooks({f"blocks.{layer}.attn.hook_pattern": nudge}):
        return float(model(pixels)[0, target])


def test_attention_gradient_matches_finite_differences():
    model = perturb(ViT(TINY), std=0.2).double()
    pixels = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    target = 2
    result = capture_batch(model, pixels, target=target)[0]
    assert result.target == target
    rng = np.random.default_rng(0)
    eps = 1e-6
    for layer in range(TINY.depth):
        for _ in range(3):
            index = (int(rng.integers(4)), int(rng.integers(17)), int(rng.integers(17)))  # head, query, key
            plus = logit_with_nudged_attention(model, pixels, target, layer, index, eps)
            minus = logit_with_nudged_attention(model, pixels, target, layer, index, -eps)
            numeric = (plus - minus) / (2 * eps)
            assert result.attention_grads[(layer, *index)] == pytest.approx(numeric, rel=1e-4, abs=1e-6)


def test_top_target_is_the_argmax(tiny):
    result = capture(tiny, torch.randn(3, 32, 32), target="top")
    assert result.target == int(np.argmax(result.logits))
    with pytest.raises(VitCoreError, match="target class 9 is out of range"):
        capture(tiny, torch.randn(3, 32, 32), target=9)


def test_hooks_are_removed_after_the_block_and_on_error(tiny):
    seen = []
    with tiny.hooks({"blocks.0.attn.hook_pattern": lambda t, name: seen.append(name)}):
        predict(tiny, torch.randn(1, 3, 32, 32))
    assert seen == ["blocks.0.attn.hook_pattern"]
    with pytest.raises(RuntimeError, match="boom"), tiny.hooks({"hook_embed": lambda t, n: seen.append(n)}):
        raise RuntimeError("boom")
    capture(tiny, torch.randn(3, 32, 32))  # the library's own capture must also clean up
    assert all(not point._forward_hooks for point in tiny.hook_points.values())


def test_unknown_capture_point_lists_the_valid_names(tiny):
    with (
        pytest.raises(
            VitCoreError,
            match=r"unknown capture point 'blocks.0.attn.pattern'; valid names .*"
            r"blocks.\{0..2\}.attn.hook_pattern",
        ),
        tiny.hooks({"blocks.0.attn.pattern": print}),
    ):
        pass


def test_scores_hook_is_named_as_in_transformer_lens_and_the_old_name_still_works(tiny):
    pixels = torch.randn(1, 3, 32, 32)
    seen: dict[str, torch.Tensor] = {}

    def keep(tensor, name):
        seen[name] = tensor

    assert "blocks.0.attn.hook_attn_scores" in tiny.hook_points and "attn.hook_attn_scores" in tiny.hook_names()
    with tiny.hooks({"blocks.1.attn.hook_attn_scores": keep, "blocks.1.attn.hook_scores": keep}), torch.no_grad():
        tiny(pixels)
    assert set(seen) == {"blocks.1.attn.hook_attn_scores", "blocks.1.attn.hook_scores"}  # each gets its own name
    assert torch.equal(seen["blocks.1.attn.hook_attn_scores"], seen["blocks.1.attn.hook_scores"])
    assert tiny.canonical_hook_name("blocks.1.attn.hook_scores") == "blocks.1.attn.hook_attn_scores"
    assert all(not point._forward_hooks for point in tiny.hook_points.values())
    with pytest.raises(VitCoreError, match="unknown capture point"), tiny.hooks({"blocks.9.attn.hook_scores": keep}):
        pass


def test_an_attention_function_replaces_the_computation_inside_its_block_only(tiny):
    pixels = torch.randn(2, 3, 32, 32)
    layers = []

    def sdpa(layer, q, k, v, scale):
        layers.append(layer)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale)

    expected = predict(tiny, pixels)
    with tiny.attention_functions(sdpa):
        assert torch.allclose(predict(tiny, pixels), expected, atol=1e-6)
        capture(tiny, pixels[:1])  # capture points on the pattern still take the explicit path
    assert layers == list(range(TINY.depth))
    assert all(block.attn.attention_fn is None for block in tiny.blocks)


def test_prefix_tokens_registers_and_distillation_in_order():
    cfg = ViTConfig(
        image_size=(32, 32),
        patch_size=8,
        embed_dim=16,
        depth=1,
        num_heads=2,
        mlp_dim=32,
        num_classes=3,
        distill_token=True,
        distill_head=True,
        num_register_tokens=2,
    )
    result = capture(ViT(cfg).eval(), torch.randn(3, 32, 32))
    assert cfg.num_prefix_tokens == 4 and result.attentions.shape[-1] == 4 + 16


def test_other_input_sizes_interpolate_and_bad_sizes_are_refused(tiny):
    assert capture(tiny, torch.randn(3, 48, 64)).grid == (6, 8)
    with pytest.raises(VitCoreError, match="not a multiple of the 8-pixel patch size"):
        capture(tiny, torch.randn(3, 30, 32))


def test_bf16_autocast_returns_float32_close_to_fp32(tiny):
    pixels = torch.randn(3, 32, 32)
    full = capture(tiny, pixels)
    half = capture(tiny, pixels, autocast=torch.bfloat16)
    assert half.attentions.dtype == np.float32
    assert np.abs(half.attentions - full.attentions).max() < 0.05


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(VitCoreError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(VitCoreError, match="unknown device"):
        resolve_device("gpu0")


def test_capture_is_a_frozen_dataclass(tiny):
    result = capture(tiny, torch.randn(3, 32, 32))
    assert isinstance(result, Capture)
    with pytest.raises(AttributeError):
        result.target = 3


def test_importing_vit_core_pulls_in_no_ui_library():
    code = (
        "import sys, vit_core, vit_core.zoo, vit_core.cli, vit_core.bench; "
        "bad = [m for m in ('gradio', 'plotly') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
