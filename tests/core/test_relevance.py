"""Class-specific maps: hand-computed cases, loop reimplementations, and they follow the target class."""

import numpy as np
import pytest
import torch

from tests.reference import perturb, synthetic_capture
from vit_core import ViT, ViTConfig, VitCoreError, capture
from vit_core.relevance import chefer, grad_rollout, gradcam

TINY = ViTConfig(image_size=(32, 32), patch_size=8, embed_dim=32, depth=3, num_heads=4, mlp_dim=64, num_classes=6)


def test_chefer_hand_computed_one_layer():
    a = np.array([[[0.2, 0.3, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])[None]  # 1 layer, 1 head
    g = np.array([[[1.0, 2.0, -1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])[None]
    # cam = relu(g * a) = [[.2, .6, 0], 0, 0]; R = I + cam @ I -> row 0 = [1.2, .6, 0]
    assert chefer(synthetic_capture(a, grads=g)) == pytest.approx(np.array([[0.6, 0.0]]))


def test_grad_rollout_hand_computed_one_layer():
    a = np.array([[[0.2, 0.3, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])[None]
    g = np.ones_like(a)
    # weighted = a; (a + I)/2 row 0 = [.6, .15, .25] (already sums to 1)
    assert grad_rollout(synthetic_capture(a, grads=g)) == pytest.approx(np.array([[0.15, 0.25]]))


def test_gradcam_hand_computed():
    tokens = np.zeros((2, 3, 2))
    tokens[0] = [[9.0, 9.0], [1.0, 2.0], [3.0, -1.0]]  # tokens entering the last (only) block
    token_grads = np.array([[5.0, 5.0], [1.0, 0.0], [1.0, 2.0]])  # prefix grads are ignored
    eye = np.broadcast_to(np.eye(3), (1, 1, 3, 3))
    # w = mean over patches = [1, 1]; cam = relu([1+2, 3-1]) = [3, 2]
    assert gradcam(
        synthetic_capture(eye, grads=np.zeros_like(eye), tokens=tokens, token_grads=token_grads)
    ) == pytest.approx(np.array([[3.0, 2.0]]))


def loop_chefer(attentions, grads, prefix):
    layers, heads, n, _ = attentions.shape
    relevance = [[1.0 if i == j else 0.0 for j in range(n)] for i in range(n)]
    for layer in range(layers):
        cam = [
            [
                sum(max(grads[layer, h, i, j] * attentions[layer, h, i, j], 0.0) for h in range(heads)) / heads
                for j in range(n)
            ]
            for i in range(n)
        ]
        update = [[sum(cam[i][k] * relevance[k][j] for k in range(n)) for j in range(n)] for i in range(n)]
        relevance = [[relevance[i][j] + update[i][j] for j in range(n)] for i in range(n)]
    return np.array(relevance[0][prefix:])


def test_chefer_matches_loops_on_a_real_capture():
    model = perturb(ViT(TINY), std=0.2)
    result = capture(model, torch.randn(3, 32, 32), target=3)
    expected = loop_chefer(result.attentions.astype(float), result.attention_grads.astype(float), 1).reshape(4, 4)
    assert np.allclose(chefer(result), expected, atol=1e-5)


def test_gradcam_matches_an_independent_autograd_computation():
    model = perturb(ViT(TINY), std=0.2)
    pixels = torch.randn(1, 3, 32, 32)
    result = capture(model, pixels[0], target=2)
    kept = {}

    def keep(tensor, _name):
        tensor.retain_grad()
        kept["x"] = tensor

    with model.hooks({f"blocks.{TINY.depth - 1}.hook_resid_pre": keep}):
        model(pixels)[0, 2].backward()
    activations, grads = kept["x"][0, 1:].detach(), kept["x"].grad[0, 1:]
    expected = torch.relu(activations @ grads.mean(0)).reshape(4, 4).numpy()
    assert np.allclose(gradcam(result), expected, atol=1e-5)


@pytest.mark.parametrize("method", [grad_rollout, chefer, gradcam])
def test_class_specific_maps_change_with_the_target(method):
    model = perturb(ViT(TINY), std=0.3)
    pixels = torch.randn(3, 32, 32)
    maps = [method(capture(model, pixels, target=t)) for t in range(TINY.num_classes)]
    assert any(not np.allclose(maps[0], other, atol=1e-4) for other in maps[1:])


def test_class_specific_maps_need_gradients():
    result = capture(perturb(ViT(TINY)), torch.randn(3, 32, 32))
    with pytest.raises(VitCoreError, match="need a capture made with a target class"):
        chefer(result)


def loop_grad_rollout(attentions, grads, prefix):
    layers, heads, n, _ = attentions.shape
    joint = [[1.0 if i == j else 0.0 for j in range(n)] for i in range(n)]
    for layer in range(layers):
        fused = [
            [
                max(sum(grads[layer, h, i, j] * attentions[layer, h, i, j] for h in range(heads)) / heads, 0.0)
                for j in range(n)
            ]
            for i in range(n)
        ]
        for i in range(n):
            fused[i] = [fused[i][j] / 2 + (0.5 if i == j else 0.0) for j in range(n)]
            total = sum(fused[i])
            fused[i] = [v / total for v in fused[i]]
        joint = [[sum(fused[i][k] * joint[k][j] for k in range(n)) for j in range(n)] for i in range(n)]
    return np.array(joint[0][prefix:])


def test_grad_rollout_matches_loops_on_a_real_capture():
    model = perturb(ViT(TINY), std=0.2)
    result = capture(model, torch.randn(3, 32, 32), target=1)
    expected = loop_grad_rollout(result.attentions.astype(float), result.attention_grads.astype(float), 1)
    assert np.allclose(grad_rollout(result), expected.reshape(4, 4), atol=1e-6)


@pytest.mark.parametrize(
    "variant",
    [
        dict(class_token=False, num_register_tokens=2, global_pool="avg", final_norm=False, fc_norm=True),
        dict(distill_token=True, distill_head=True),
        dict(num_register_tokens=4),
    ],
)
def test_every_method_handles_prefix_tokens_and_missing_class_token(variant):
    from vit_core.explain import METHODS, explain

    cfg = ViTConfig(**{**TINY.__dict__, **variant})
    model = perturb(ViT(cfg), std=0.2)
    result = capture(model, torch.randn(3, 32, 32), target=0)
    for method in METHODS:
        grid_map = explain(result, method, model=model)
        assert grid_map.shape == (4, 4) and np.isfinite(grid_map).all(), method
