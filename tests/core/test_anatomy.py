"""The walk-through's numbers: from the model's real q, k and weights, against plain reimplementations."""

import math

import numpy as np
import pytest
import torch

from tests.reference import perturb
from vit_core import ViT, ViTConfig, capture
from vit_core.anatomy import (
    attention_row,
    block_internals,
    entropy_by_scale,
    gelu,
    patch_token,
    softmax_jacobian_norm,
)

TINY = ViTConfig(image_size=(32, 32), patch_size=8, embed_dim=32, depth=3, num_heads=4, mlp_dim=64, num_classes=6)


@pytest.fixture(scope="module")
def model_and_capture():
    model = perturb(ViT(TINY), std=0.3)
    return model, capture(model, torch.randn(3, 32, 32), qk=True)


def test_patch_vector_has_p_p_c_values_and_projects_like_the_model(model_and_capture):
    model, result = model_and_capture
    token = patch_token(model, result, (1, 2))
    assert token.vector.shape == (8 * 8 * 3,) and token.pixels.shape == (8, 8, 3)
    assert token.embedding.shape == (32,)
    seen = {}
    with torch.inference_mode(), model.hooks({"hook_embed": lambda t, _n: seen.setdefault("e", t)}):
        model(torch.from_numpy(result.input)[None])
    assert np.allclose(token.embedding, seen["e"][0, 1 * 4 + 2].numpy(), atol=1e-5)
    # a plain loop over the pixels, channel-first as the conv weight is laid out
    weight = model.patch_embed.proj.weight.detach().numpy()
    expected = model.patch_embed.proj.bias.detach().numpy().astype(np.float64).copy()
    for c in range(3):
        for i in range(8):
            for j in range(8):
                expected += weight[:, c, i, j] * result.input[c, 8 + i, 16 + j]
    assert np.allclose(token.embedding, expected, atol=1e-5)


def test_block_internals_match_the_capture(model_and_capture):
    model, result = model_and_capture
    for layer in range(TINY.depth):
        internals = block_internals(model, result, layer)
        assert np.allclose(internals.queries, result.queries[layer], atol=1e-5)
        assert np.allclose(internals.keys, result.keys[layer], atol=1e-5)
        assert internals.mlp_pre.shape == (17, 64)


def test_scaled_row_is_the_models_attention_and_unscaled_is_sharper(model_and_capture):
    model, result = model_and_capture
    internals = block_internals(model, result, 2)
    for head in range(4):
        for query in (0, 5, 16):
            scaled = attention_row(internals.queries, internals.keys, head, query, scaled=True)
            assert np.allclose(scaled.weights, result.attentions[2, head, query], atol=1e-5)
            unscaled = attention_row(internals.queries, internals.keys, head, query, scaled=False)
            assert np.allclose(unscaled.scores, scaled.scores * math.sqrt(8), atol=1e-9)
            # a plain reimplementation of the figures
            p = np.exp(unscaled.scores - unscaled.scores.max())
            p /= p.sum()
            assert unscaled.entropy == pytest.approx(-sum(x * math.log(x) for x in p if x > 0), abs=1e-9)
            jacobian = np.diag(p) - np.outer(p, p)
            assert unscaled.jacobian_norm == pytest.approx(np.linalg.norm(jacobian), abs=1e-9)
            assert unscaled.max_weight >= scaled.max_weight - 1e-12  # 8x larger logits: never flatter


def test_softmax_jacobian_hand_computed():
    assert softmax_jacobian_norm(np.array([1.0, 0.0, 0.0])) == pytest.approx(0.0)  # saturated: no gradient
    # uniform over 2: J = [[1/4, -1/4], [-1/4, 1/4]], Frobenius norm 1/2
    assert softmax_jacobian_norm(np.array([0.5, 0.5])) == pytest.approx(0.5)


def test_entropy_by_scale(model_and_capture):
    model, result = model_and_capture
    internals = block_internals(model, result, 1)
    factors = np.array([0.0, 1 / math.sqrt(8), 1.0])
    entropies = entropy_by_scale(internals.queries, internals.keys, 1, 3, factors)
    assert entropies[0] == pytest.approx(math.log(17))  # factor 0: uniform over 17 tokens
    assert entropies[1] == pytest.approx(attention_row(internals.queries, internals.keys, 1, 3).entropy)
    assert entropies[2] == pytest.approx(attention_row(internals.queries, internals.keys, 1, 3, scaled=False).entropy)


def test_gelu_matches_the_formula():
    x = np.linspace(-4, 4, 9)
    expected = 0.5 * x * (1 + np.array([math.erf(v / math.sqrt(2)) for v in x]))
    assert np.allclose(gelu(x), expected, atol=1e-12)
