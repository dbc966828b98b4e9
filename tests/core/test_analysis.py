"""Analyses: mean attention distance, entropy, token views, model views, ablation, faithfulness."""

import dataclasses

import numpy as np
import pytest
import torch

from tests.reference import perturb, synthetic_capture
from vit_core import Capture, ViT, ViTConfig, VitCoreError, capture
from vit_core.analysis import (
    ablate_heads,
    attention_entropy,
    class_probability_by_layer,
    head_importance,
    layer_predictions,
    mean_attention_distance,
    patch_distances,
    patch_embedding_components,
    patch_similarity,
    position_similarity,
    token_norms,
    token_pca_rgb,
)
from vit_core.capture import _row_entropy
from vit_core.faithfulness import curves_for_maps, deletion_insertion
from vit_core.maps import attention_map, mass_threshold

TINY = ViTConfig(image_size=(32, 32), patch_size=8, embed_dim=32, depth=3, num_heads=4, mlp_dim=64, num_classes=6)


@pytest.mark.parametrize("std", [0.2, 3.0], ids=["soft", "saturated"])
def test_row_entropy_from_the_forward_pass_matches_a_plain_loop(std):
    # std 3.0 makes large scores and near one-hot rows, where one-log-per-row could lose precision
    result = capture(perturb(ViT(TINY), std=std), torch.randn(3, 32, 32))
    attentions = result.attentions.astype(np.float64)
    layers, heads, queries, _ = attentions.shape
    expected = np.zeros((layers, heads, queries))
    for layer in range(layers):
        for head in range(heads):
            for query in range(queries):
                row = attentions[layer, head, query]
                expected[layer, head, query] = -sum(p * np.log(p) for p in row if p > 0)
    assert np.allclose(result.row_entropy, expected, atol=2e-5)
    assert np.allclose(attention_entropy(result), expected.mean(-1), atol=2e-5)
    # the hand-made path (no row_entropy) agrees too
    stripped = Capture(**{**result.__dict__, "row_entropy": None})
    assert np.allclose(attention_entropy(stripped), expected.mean(-1), atol=2e-5)


def test_self_attention_has_distance_zero():
    n = 1 + 9
    assert np.allclose(mean_attention_distance(synthetic_capture(np.broadcast_to(np.eye(n), (2, 3, n, n)), (3, 3))), 0)


def test_uniform_attention_matches_the_closed_form_average_distance():
    # 1 x 2 grid of 16-pixel patches, uniform over the CLS and both patches: each patch query gives
    # weight 1/2 to itself (0 px) and 1/2 to the other (16 px) after renormalising over patches -> 8 px.
    uniform = np.full((1, 1, 3, 3), 1 / 3)
    assert mean_attention_distance(synthetic_capture(uniform, (1, 2), patch_size=16)) == pytest.approx(
        np.array([[8.0]])
    )
    # 3 x 3 grid: the closed form is the mean of all pairwise centre distances.
    uniform = np.full((1, 1, 10, 10), 0.1)
    expected = patch_distances((3, 3), 16).mean()
    assert mean_attention_distance(synthetic_capture(uniform, (3, 3), patch_size=16))[0, 0] == pytest.approx(expected)


def test_entropy_hand_computed():
    n = 4
    assert attention_entropy(synthetic_capture(np.full((1, 1, n, n), 1 / n), (1, 3)))[0, 0] == pytest.approx(np.log(n))
    assert attention_entropy(synthetic_capture(np.broadcast_to(np.eye(n), (1, 1, n, n)), (1, 3)))[0, 0] == 0.0


def test_row_entropy_of_a_two_key_row_by_hand():
    # scores (0, log 3): p = (1/4, 3/4), log Z = log 4, Σ p·s = 3/4 log 3, so H = log 4 - 3/4 log 3 nats
    scores = torch.tensor([[0.0, np.log(3)]], dtype=torch.float32)  # [query, key]
    assert _row_entropy(scores, scores.softmax(dim=-1)).item() == pytest.approx(np.log(4) - 0.75 * np.log(3), abs=1e-6)
    # The same row shifted: the entropy of p = (1, e^d) / (1 + e^d), d the gap float32 kept between the scores.
    # At 10⁴, log Z - Σ p·s computed unshifted in float32 is 2e-4 nats off (cancellation).
    for offset in (-7.5, 1e4):
        scores = torch.tensor([[offset, offset + np.log(3)]], dtype=torch.float32)
        p = np.array([1.0, np.exp(float(scores[0, 1]) - float(scores[0, 0]))])
        p /= p.sum()
        expected = -(p * np.log(p)).sum()
        pattern = scores.softmax(dim=-1)
        assert _row_entropy(scores, pattern).item() == pytest.approx(expected, abs=1e-6)
        kept = scores.clone()
        assert _row_entropy(scores, pattern, overwrite_scores=True).item() == pytest.approx(expected, abs=1e-6)
        assert torch.equal(scores, kept - kept.amax())  # shifted by the row maximum, in place


def test_mass_threshold_keeps_the_smallest_set_holding_the_fraction():
    grid = np.array([[0.5, 0.3], [0.15, 0.05]])
    assert mass_threshold(grid, 0.5).tolist() == [[True, False], [False, False]]
    assert mass_threshold(grid, 0.6).tolist() == [[True, True], [False, False]]
    assert mass_threshold(grid, 1.0).all()


def test_attention_map_for_a_chosen_query_patch():
    model = perturb(ViT(TINY), std=0.2)
    result = capture(model, torch.randn(3, 32, 32))
    row = attention_map(result, 1, head=2, query_patch=(1, 3))
    assert np.allclose(row.ravel(), result.attentions[1, 2, 1 + 1 * 4 + 3, 1:])
    with pytest.raises(VitCoreError, match="outside the 4x4 patch grid"):
        attention_map(result, 1, query_patch=(4, 0))
    with pytest.raises(VitCoreError, match="head 7 is out of range"):
        attention_map(result, 1, head=7)


def test_layer_predictions_and_class_probability():
    result = capture(perturb(ViT(TINY), std=0.2), torch.randn(3, 32, 32))
    predictions = layer_predictions(result, k=3)
    assert predictions.top_indices.shape == (3, 3)
    assert predictions.top_indices[-1, 0] == int(np.argmax(result.logits))
    assert np.allclose(predictions.probs[-1], result.probs, atol=1e-6)
    assert class_probability_by_layer(result, 2).shape == (3,)


def test_token_views():
    result = capture(perturb(ViT(TINY), std=0.2), torch.randn(3, 32, 32))
    rgb = token_pca_rgb(result, 2)
    assert rgb.shape == (4, 4, 3) and rgb.min() >= 0 and rgb.max() <= 1
    similarity = patch_similarity(result, 2, (0, 1))
    assert similarity[0, 1] == pytest.approx(1.0, abs=1e-6) and similarity.max() <= 1 + 1e-6
    norms = token_norms(result, 3)
    assert norms.norms.shape == (17,) and not norms.outliers[1:].all()


def test_token_norm_outliers_are_flagged():
    tokens = np.ones((2, 11, 4))
    tokens[1, 5] *= 50  # one high-norm patch token
    fake = synthetic_capture(np.full((1, 1, 11, 11), 1 / 11), (2, 5))
    fake = Capture(**{**fake.__dict__, "tokens": tokens})
    assert np.flatnonzero(token_norms(fake, 1).outliers).tolist() == [5]


def test_model_views():
    model = perturb(ViT(TINY), std=0.2)
    similarity = position_similarity(model)
    assert similarity.shape == (4, 4, 4, 4) and similarity[2, 1, 2, 1] == pytest.approx(1.0, abs=1e-6)
    components, variance = patch_embedding_components(model, 5)
    assert components.shape == (5, 3, 8, 8) and np.all(np.diff(variance) <= 1e-7)


def test_head_ablation_and_importance_agree():
    model = perturb(ViT(TINY), std=0.3)
    pixels = torch.randn(3, 32, 32)
    importance = head_importance(model, pixels, layer=1, target=4)
    for head in range(TINY.num_heads):
        base, ablated = ablate_heads(model, pixels, [(1, head)], target=4)
        assert importance[head] == pytest.approx(base - ablated, abs=1e-5)
    with pytest.raises(VitCoreError, match="layer 9 is out of range") as error:
        ablate_heads(model, pixels, [(9, 0)], target=0)
    assert error.value.params == {"what": "layer", "value": 9, "size": 3, "last": 2}


def test_deletion_and_insertion_curves():
    model = perturb(ViT(TINY), std=0.3)
    pixels = torch.randn(3, 32, 32)
    grid_map = np.arange(16, dtype=float).reshape(4, 4)
    deletion, insertion = deletion_insertion(model, pixels, grid_map, target=1, steps=4)
    probs = torch.softmax(model(pixels[None]), -1)[0, 1].item()
    assert deletion.probs[0] == pytest.approx(probs, abs=1e-5)  # nothing deleted yet
    assert insertion.probs[-1] == pytest.approx(probs, abs=1e-5)  # everything restored
    # the step-2 deletion image is the input with the 8 top patches (the bottom half) set to 0
    half = pixels.clone()
    half[:, 16:, :] = 0
    assert deletion.probs[2] == pytest.approx(torch.softmax(model(half[None]), -1)[0, 1].item(), abs=1e-5)
    assert deletion.auc == pytest.approx(np.trapezoid(deletion.probs, np.linspace(0, 1, 5)))
    # several maps at once give the same curves as one at a time
    other = np.flip(grid_map).copy()
    together = curves_for_maps(model, pixels, [grid_map, other], target=1, steps=4)
    alone = deletion_insertion(model, pixels, other, target=1, steps=4)
    assert np.allclose(together[0][0].probs, deletion.probs, atol=1e-6)
    assert np.allclose(together[1][1].probs, alone[1].probs, atol=1e-6)


@pytest.mark.parametrize("embed_dim", [32, 8], ids=["gram (P <= D)", "covariance (P > D)"])
def test_token_pca_matches_a_plain_svd_up_to_sign(embed_dim):
    config = dataclasses.replace(TINY, embed_dim=embed_dim, mlp_dim=2 * embed_dim)  # 16 patches
    result = capture(perturb(ViT(config), std=0.2), torch.randn(3, 32, 32))
    tokens = result.tokens[2, 1:].astype(np.float64)
    centred = tokens - tokens.mean(0)
    u, singular, _ = np.linalg.svd(centred, full_matrices=False)
    expected = u[:, :3] * singular[:3]
    expected = (expected - expected.min(0)) / (expected.max(0) - expected.min(0))
    ours = token_pca_rgb(result, 2).reshape(-1, 3)
    for k in range(3):
        assert np.allclose(ours[:, k], expected[:, k], atol=1e-4) or np.allclose(
            ours[:, k], 1 - expected[:, k], atol=1e-4
        )


def test_class_token_attention_hand_computed():
    attentions = np.zeros((1, 2, 3, 3))
    attentions[0, 0, 0] = [0.2, 0.3, 0.5]
    attentions[0, 1, 0] = [0.4, 0.5, 0.1]
    result = synthetic_capture(attentions, (1, 2))
    assert attention_map(result, 0, "mean") == pytest.approx(np.array([[0.4, 0.3]]))
    assert attention_map(result, 0, "max") == pytest.approx(np.array([[0.5, 0.5]]))
    assert attention_map(result, 0, 1) == pytest.approx(np.array([[0.5, 0.1]]))
