"""Attention rollout and the localization metrics: hand-computed cases and a loop reimplementation."""

import numpy as np
import pytest
import torch

from tests.reference import synthetic_capture
from vit_core import VitCoreError
from vit_core.metrics import localization, patch_coverage
from vit_core.rollout import discard_lowest, rollout, rollout_matrix


def test_hand_computed_two_layers_three_tokens():
    a1 = np.array([[0.5, 0.25, 0.25], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    a2 = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    # (A + I) / 2, rows already sum to 1: r1 = [[.75,.125,.125],[0,1,0],[0,0,1]], r2 = [[.5,.5,0],[0,1,0],[0,0,1]]
    # r2 @ r1, row 0 = .5*[.75,.125,.125] + .5*[0,1,0] = [.375, .5625, .0625]
    joint = rollout_matrix(np.stack([a1[None], a2[None]]), num_prefix_tokens=1)
    assert joint[0] == pytest.approx([0.375, 0.5625, 0.0625], abs=1e-12)
    assert rollout(synthetic_capture(np.stack([a1[None], a2[None]]))) == pytest.approx(np.array([[0.5625, 0.0625]]))


def test_identity_attention_gives_a_uniform_map():
    eye = np.broadcast_to(np.eye(5), (3, 2, 5, 5))
    assert np.allclose(rollout(synthetic_capture(eye, grid=(2, 2))), 0.0)


def reference_rollout(attentions, prefix, fusion, ratio, start):
    """Straightforward loops, no vectorisation: the independent reimplementation."""
    layers, heads, n, _ = attentions.shape
    joint = [[1.0 if i == j else 0.0 for j in range(n)] for i in range(n)]
    for layer in range(start, layers):
        fused = [[0.0] * n for _ in range(n)]
        for i in range(n):
            for j in range(n):
                values = [attentions[layer, h, i, j] for h in range(heads)]
                fused[i][j] = {"mean": sum(values) / heads, "max": max(values), "min": min(values)}[fusion]
        for i in range(n):
            patch_columns = sorted(range(prefix, n), key=lambda j: fused[i][j])
            for j in patch_columns[: int((n - prefix) * ratio)]:
                fused[i][j] = 0.0
            for j in range(n):
                fused[i][j] = (fused[i][j] + (1.0 if i == j else 0.0)) / 2
            total = sum(fused[i])
            fused[i] = [v / total for v in fused[i]]
        joint = [[sum(fused[i][k] * joint[k][j] for k in range(n)) for j in range(n)] for i in range(n)]
    return np.array(joint)


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("ratio", [0.0, 0.5])
def test_matches_the_loop_reimplementation_and_rows_sum_to_one(fusion, ratio):
    rng = np.random.default_rng(1)
    raw = rng.random((3, 4, 7, 7)) ** 3
    attentions = raw / raw.sum(-1, keepdims=True)
    ours = rollout_matrix(attentions, num_prefix_tokens=2, head_fusion=fusion, discard_ratio=ratio, start_layer=1)
    assert np.allclose(ours, reference_rollout(attentions, 2, fusion, ratio, 1), atol=1e-6)
    assert np.allclose(ours.sum(-1), 1.0)


def test_discard_never_touches_prefix_columns():
    row = torch.tensor([[0.001, 0.002, 0.5, 0.3, 0.197]], dtype=torch.float64)
    kept = discard_lowest(row, 0.34, num_prefix_tokens=2)
    assert kept[0, :2].tolist() == [0.001, 0.002] and kept[0, 4] == 0.0 and kept[0, 2] == 0.5


def test_model_without_class_token_uses_the_mean_query():
    a = np.array([[[0.5, 0.5], [1.0, 0.0]]])[None]  # 1 layer, 1 head, 2 patch tokens, no prefix
    # (A+I)/2 = [[.75,.25],[.5,.5]]; mean over rows = [.625, .375]
    assert rollout(synthetic_capture(a, prefix=0, grid=(1, 2), has_class_token=False)) == pytest.approx(
        np.array([[0.625, 0.375]])
    )


def test_bad_knobs_are_one_sentence():
    eye = np.broadcast_to(np.eye(3), (2, 1, 3, 3))
    with pytest.raises(VitCoreError, match="unknown head fusion"):
        rollout(synthetic_capture(eye), head_fusion="median")
    with pytest.raises(VitCoreError, match="start layer 5 is out of range"):
        rollout(synthetic_capture(eye), start_layer=5)
    with pytest.raises(VitCoreError, match="discard ratio"):
        rollout(synthetic_capture(eye), discard_ratio=1.0)


def test_localization_hand_computed():
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True  # the top-left patch of a 2x2 grid of 2-pixel patches
    hit = localization(np.array([[1.0, 0.0], [0.0, 0.0]]), mask)
    assert hit.pointing == 1.0 and hit.mass_inside == 1.0
    miss = localization(np.array([[0.0, 0.0], [0.0, 1.0]]), mask)
    assert miss.pointing == 0.0 and miss.mass_inside == 0.0
    half = localization(np.array([[1.0, 1.0], [0.0, 0.0]]), mask)
    assert half.mass_inside == pytest.approx(0.5)
    assert patch_coverage(mask, (2, 2)).tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_iou_at_the_mean_threshold_hand_computed():
    # One pixel per patch, so upsampling is the identity: the map above its mean is the top-left pixel.
    peak = np.array([[1.0, 0.0], [0.0, 0.0]])
    assert localization(peak, np.array([[True, False], [False, False]])).iou == pytest.approx(1.0)
    assert localization(peak, np.array([[True, True], [False, False]])).iou == pytest.approx(0.5)
    assert localization(np.ones((2, 2)), np.array([[True, True], [False, False]])).iou == 0.0  # nothing above mean
