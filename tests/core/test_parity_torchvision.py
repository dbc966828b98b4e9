"""Parity with torchvision's VisionTransformer; reference attention via need_weights=True per head."""

import torchvision

from tests.reference import assert_parity as shared_assert_parity
from tests.reference import torchvision_reference
from vit_core.convert import config_from_torchvision, convert_torchvision

TOL = 1e-4


def assert_parity(reference_model, size: int, batch: int) -> None:
    shared_assert_parity(
        reference_model, config_from_torchvision, convert_torchvision, torchvision_reference, size, batch
    )


def test_vit_b_16_full_size():
    assert_parity(torchvision.models.vit_b_16(weights=None), 224, batch=1)


def test_small_vision_transformer():
    model = torchvision.models.VisionTransformer(
        image_size=64, patch_size=16, num_layers=3, num_heads=4, hidden_dim=64, mlp_dim=128, num_classes=10
    )
    assert_parity(model, 64, batch=2)
