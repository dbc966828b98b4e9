"""Parity with torchvision's VisionTransformer; reference attention via need_weights=True per head."""

import torch
import torchvision

from tests.reference import load_converted, max_differences, perturb, torchvision_reference
from vit_core import capture_batch
from vit_core.convert import config_from_torchvision, convert_torchvision

TOL = 1e-4


def assert_parity(reference_model, size: int, batch: int) -> None:
    reference_model = perturb(reference_model)
    cfg = config_from_torchvision(reference_model)
    ours = load_converted(cfg, convert_torchvision(reference_model.state_dict(), cfg))
    pixels = torch.randn(batch, 3, size, size)
    diff = max_differences(capture_batch(ours, pixels), torchvision_reference(reference_model, pixels))
    assert max(diff.values()) <= TOL, diff


def test_vit_b_16_full_size():
    assert_parity(torchvision.models.vit_b_16(weights=None), 224, batch=1)


def test_small_vision_transformer():
    model = torchvision.models.VisionTransformer(
        image_size=64, patch_size=16, num_layers=3, num_heads=4, hidden_dim=64, mlp_dim=128, num_classes=10
    )
    assert_parity(model, 64, batch=2)
