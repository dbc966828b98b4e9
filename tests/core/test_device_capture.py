"""Captures that stay on the device: the same numbers as the numpy capture, and torch maps batched over images."""

import dataclasses

import numpy as np
import pytest
import torch

from tests.reference import perturb
from vit_core import Capture, DeviceCapture, ViT, ViTConfig, VitCoreError, capture, capture_batch
from vit_core.analysis import (
    attention_entropy,
    distances_from_indices,
    entropy_per_head,
    mean_attention_distance,
    mean_distance_per_head,
    patch_distances,
)
from vit_core.capture import FIELDS, host_arrays
from vit_core.maps import attention_map, class_rows, patch_map
from vit_core.relevance import chefer, chefer_vector, grad_rollout, grad_rollout_vector
from vit_core.rollout import rollout, rollout_vector

TINY = ViTConfig(image_size=(32, 32), patch_size=8, embed_dim=32, depth=3, num_heads=4, mlp_dim=64, num_classes=5)
# two registers and no class token: the mean query everywhere, four prefix tokens to skip
REGISTERS = dataclasses.replace(TINY, class_token=False, num_register_tokens=2, global_pool="avg")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
BF16 = 2.0**-8  # bf16 keeps 8 significant bits: relative rounding error at most 2^-9, twice for safety


def tiny(cfg: ViTConfig = TINY, device: str = "cpu") -> ViT:
    return perturb(ViT(cfg), std=0.2).to(device)


def assert_same_captures(ours: list[Capture], expected: list[Capture], atol: float, rtol: float = 0.0) -> None:
    assert len(ours) == len(expected)
    for a, b in zip(ours, expected, strict=True):
        for name in FIELDS:
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None) == (y is None), name
            if x is not None:
                assert x.dtype == np.float32 and x.shape == y.shape, name
                assert np.allclose(x, y, atol=atol, rtol=rtol), (name, np.abs(x - y).max())
        assert (a.target, a.grid, a.num_prefix_tokens, a.has_class_token) == (
            b.target,
            b.grid,
            b.num_prefix_tokens,
            b.has_class_token,
        )


@pytest.mark.parametrize("cfg", [TINY, REGISTERS], ids=["class token", "registers"])
def test_a_device_capture_holds_the_batch_and_equals_the_numpy_capture(cfg):
    model, pixels = tiny(cfg), torch.randn(3, 3, 32, 32)
    kept = capture_batch(model, pixels, scores=True, qk=True, target="top", keep_on_device=True)
    assert isinstance(kept, DeviceCapture) and len(kept) == 3
    assert kept.attentions.shape == (3, 3, 4, 16 + cfg.num_prefix_tokens, 16 + cfg.num_prefix_tokens)
    assert kept.tokens.shape[:2] == (3, 4) and kept.layer_logits.shape == (3, 3, 5)
    assert kept.row_entropy.shape == (3, 3, 4, 16 + cfg.num_prefix_tokens)
    assert kept.device.type == "cpu" and kept.nbytes > kept.attentions.numel() * 4
    expected = capture_batch(model, pixels, scores=True, qk=True, target="top")
    assert_same_captures(kept.to_numpy(), expected, atol=1e-6)
    assert_same_captures(kept.numpy, expected, atol=1e-6)


def test_to_numpy_copies_only_the_fields_asked_for():
    kept = capture(tiny(), torch.randn(3, 32, 32), keep_on_device=True)
    assert isinstance(kept, DeviceCapture) and len(kept) == 1
    (result,) = kept.to_numpy(fields=["attentions", "logits"])
    assert result.attentions.shape == (3, 4, 17, 17) and result.logits.shape == (5,)
    assert result.tokens is None and result.input is None and result.row_entropy is None
    assert result.num_layers == 3 and result.num_heads == 4
    (lens,) = kept.to_numpy(fields=["row_entropy", "layer_logits"])
    assert lens.num_layers == 3 and lens.num_heads == 4
    with pytest.raises(VitCoreError, match="unknown capture field 'attention'") as error:
        kept.to_numpy(fields=["attention"])
    assert error.value.key == "unknown_choice"


def test_the_staged_host_copy_gives_the_same_arrays():
    # The copy from an accelerator goes through one staging buffer; pin=False runs that path on the CPU.
    tensors = {
        "a": torch.randn(2, 3, 5),
        "b": torch.randn(7).to(torch.bfloat16),
        "c": torch.arange(6).reshape(2, 3),  # indices stay integers
        "d": torch.randn(4, 3).t(),  # not contiguous
        "e": torch.randn(3, dtype=torch.float64),
    }
    direct, staged = host_arrays(tensors), host_arrays(tensors, pin=False)
    assert list(staged) == list(tensors)
    for name, tensor in tensors.items():
        expected = tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy()
        assert staged[name].dtype == direct[name].dtype == expected.dtype, name
        assert np.array_equal(staged[name], expected) and np.array_equal(direct[name], expected), name
    assert staged["c"].dtype == np.int64 and staged["a"].dtype == np.float32


def test_bf16_autocast_keeps_the_big_fields_in_bf16_within_its_rounding():
    model, pixels = tiny(), torch.randn(2, 3, 32, 32)
    kept = capture_batch(model, pixels, autocast=torch.bfloat16, keep_on_device=True, scores=True)
    assert kept.attentions.dtype == kept.tokens.dtype == kept.scores.dtype == torch.bfloat16
    assert kept.row_entropy.dtype == kept.logits.dtype == torch.float32
    expected = capture_batch(model, pixels, autocast=torch.bfloat16, scores=True)
    ours = kept.to_numpy()
    for a, b in zip(ours, expected, strict=True):
        for name in ("attentions", "tokens", "scores"):
            # rounding to bf16 moves a value by at most 2^-9 of itself
            assert np.allclose(getattr(a, name), getattr(b, name), rtol=BF16, atol=1e-7), name
        assert np.array_equal(a.row_entropy, b.row_entropy) and np.array_equal(a.logits, b.logits)
        assert np.allclose(a.layer_logits, b.layer_logits, atol=0.05)  # the lens reads the bf16 tokens


@pytest.mark.parametrize("cfg", [TINY, REGISTERS], ids=["class token", "registers"])
def test_the_torch_maps_run_batched_on_the_device_capture_and_equal_the_numpy_maps(cfg):
    model, pixels = tiny(cfg), torch.randn(3, 3, 32, 32)
    kept = capture_batch(model, pixels, target=[0, 2, 4], keep_on_device=True)
    images = kept.to_numpy()
    prefix, has_class = kept.num_prefix_tokens, kept.has_class_token
    for fusion, ratio, start in [("mean", 0.0, 0), ("max", 0.5, 1), ("min", 0.2, 2)]:
        rows = rollout_vector(kept.attentions, prefix, has_class, fusion, ratio, start)  # [B, N]
        assert rows.shape == (3, 16 + prefix)
        for b, image in enumerate(images):
            assert np.allclose(patch_map(rows[b].numpy(), image), rollout(image, fusion, ratio, start), atol=1e-6)
    distances = mean_distance_per_head(kept.attentions, prefix, kept.grid, kept.patch_size)  # [B, L, H]
    entropies = entropy_per_head(kept.attentions)  # [B, L, H]
    queries = class_rows(kept.attentions, has_class)  # [B, L, H, N]
    grad_rows = grad_rollout_vector(kept.attentions, kept.attention_grads, prefix, has_class, 0.3, 1)
    chefer_rows = chefer_vector(kept.attentions, kept.attention_grads, has_class, 1)
    assert distances.shape == entropies.shape == (3, 3, 4) and queries.shape == (3, 3, 4, 16 + prefix)
    for b, image in enumerate(images):
        assert np.allclose(distances[b].numpy(), mean_attention_distance(image), atol=1e-5)
        assert np.allclose(entropies[b].numpy(), attention_entropy(image), atol=2e-5)
        assert np.allclose(kept.row_entropy[b].mean(-1).numpy(), attention_entropy(image), atol=1e-6)
        for layer in range(3):
            mean_row = patch_map(queries[b, layer].mean(0).numpy(), image)
            assert np.allclose(mean_row, attention_map(image, layer), atol=1e-6)
        assert np.allclose(patch_map(grad_rows[b].numpy(), image), grad_rollout(image, 0.3, 1), atol=1e-6)
        assert np.allclose(patch_map(chefer_rows[b].numpy(), image), chefer(image, 1), atol=1e-6)


def test_one_image_tensors_give_the_same_as_a_batch_of_one():
    kept = capture(tiny(), torch.randn(3, 32, 32), keep_on_device=True)
    one = kept.attentions[0]  # [L, H, N, N]
    assert torch.allclose(rollout_vector(one, 1), rollout_vector(kept.attentions, 1)[0])
    assert torch.allclose(entropy_per_head(one), entropy_per_head(kept.attentions)[0])
    assert torch.allclose(
        mean_distance_per_head(one, 1, (4, 4), 8), mean_distance_per_head(kept.attentions, 1, (4, 4), 8)[0]
    )


def test_distances_computed_on_a_device_from_the_indices_equal_the_cached_table():
    for grid in [(4, 4), (9, 12), (1, 3)]:
        on_device = distances_from_indices(grid, 16, torch.device("cpu"))
        assert np.allclose(on_device.numpy(), patch_distances(grid, 16), atol=1e-4)


@CUDA
def test_on_cuda_the_device_capture_stays_there_and_equals_the_numpy_capture():
    model, pixels = tiny(device="cuda"), torch.randn(4, 3, 32, 32)
    kept = capture_batch(model, pixels, scores=True, qk=True, target="top", keep_on_device=True)
    assert kept.attentions.is_cuda and kept.attention_grads.is_cuda and kept.logits.is_cuda
    expected = capture_batch(model, pixels, scores=True, qk=True, target="top")
    assert_same_captures(kept.to_numpy(), expected, atol=1e-6)
    # the maps run on the GPU and agree with the numpy maps of the host copy
    rows = rollout_vector(kept.attentions, 1)
    assert rows.is_cuda
    for b, image in enumerate(expected):
        assert np.allclose(patch_map(rows[b].cpu().numpy(), image), rollout(image), atol=1e-5)
        assert np.allclose(
            mean_distance_per_head(kept.attentions, 1, kept.grid, 8)[b].cpu().numpy(),
            mean_attention_distance(image),
            atol=1e-4,
        )


@CUDA
def test_on_cuda_under_bf16_the_device_capture_is_bf16_within_its_rounding():
    model, pixels = tiny(device="cuda"), torch.randn(4, 3, 32, 32)
    kept = capture_batch(model, pixels, autocast=torch.bfloat16, keep_on_device=True)
    assert kept.attentions.dtype == torch.bfloat16 and kept.attentions.is_cuda
    expected = capture_batch(model, pixels, autocast=torch.bfloat16)
    for a, b in zip(kept.to_numpy(fields=["attentions", "tokens"]), expected, strict=True):
        assert np.allclose(a.attentions, b.attentions, rtol=BF16, atol=1e-7)
        assert np.allclose(a.tokens, b.tokens, rtol=BF16, atol=1e-7)
