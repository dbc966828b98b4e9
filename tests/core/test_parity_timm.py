"""Parity with timm on random weights: logits, every attention map, every hidden state to 1e-4."""

import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from tests.reference import assert_parity as shared_assert_parity
from tests.reference import load_converted, perturb, timm_reference
from vit_core import capture_batch
from vit_core.convert import config_from_timm, convert_timm

TOL = 1e-4


def assert_parity(reference_model, size: int, batch: int = 2) -> None:
    shared_assert_parity(reference_model, config_from_timm, convert_timm, timm_reference, size, batch, TOL)


@pytest.mark.parametrize("patch", [8, 14, 16, 32])
def test_small_config_every_patch_size(patch):
    model = VisionTransformer(img_size=patch * 4, patch_size=patch, embed_dim=64, depth=2, num_heads=4, num_classes=10)
    assert_parity(model, patch * 4)


@pytest.mark.parametrize("name", ["vit_small_patch16_224", "vit_base_patch16_224"])
def test_real_shapes(name):
    assert_parity(timm.create_model(name, pretrained=False), 224, batch=1)


def test_distilled_deit():
    model = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False)
    assert type(model).__name__ == "VisionTransformerDistilled"
    cfg = config_from_timm(model)
    assert cfg.num_prefix_tokens == 2 and cfg.distill_head
    assert_parity(model, 224, batch=1)


def test_no_class_token_with_register_and_avg_pool():
    # timm's test_vit2 kind: no CLS, one register token, global average pooling with fc_norm.
    model = VisionTransformer(
        img_size=64,
        patch_size=16,
        embed_dim=64,
        depth=2,
        num_heads=2,
        class_token=False,
        reg_tokens=1,
        global_pool="avg",
        num_classes=7,
    )
    cfg = config_from_timm(model)
    assert (cfg.class_token, cfg.num_register_tokens, cfg.fc_norm, cfg.final_norm) == (False, 1, True, False)
    assert_parity(model, 64)


def test_dinov2_registers_layer_scale():
    model = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, img_size=224)
    cfg = config_from_timm(model)
    assert (cfg.num_register_tokens, cfg.layer_scale, cfg.pos_embed_prefix, cfg.patch_size) == (4, True, False, 14)
    assert cfg.num_classes == 0  # a backbone: no head, compared on hidden states and attention
    model = perturb(model)
    ours = load_converted(cfg, convert_timm(model.state_dict(), cfg))
    pixels = torch.randn(1, 3, 224, 224)
    ref_features, ref_attn, ref_hidden = timm_reference(model, pixels)
    ours_capture = capture_batch(ours, pixels)[0]
    assert torch.allclose(ours(pixels), ref_features, atol=TOL)
    for i, attn in enumerate(ref_attn):
        assert torch.allclose(torch.from_numpy(ours_capture.attentions[i]), attn[0], atol=TOL)
    for i, hidden in enumerate(ref_hidden):
        assert torch.allclose(torch.from_numpy(ours_capture.tokens[i]), hidden[0], atol=TOL)


def test_384_input_into_224_checkpoint_interpolates_position_embedding():
    model = timm.create_model("vit_small_patch16_224", pretrained=False, dynamic_img_size=True)
    cfg = config_from_timm(model)
    assert cfg.image_size == (224, 224)
    assert_parity(model, 384, batch=1)


def test_unsupported_architecture_is_one_clear_sentence():
    from vit_core import VitCoreError

    # SigLIP's attention pool (global_pool="map") is ours; timm's other attention pool is not
    model = VisionTransformer(img_size=32, patch_size=16, embed_dim=32, depth=1, num_heads=2, global_pool="prr")
    with pytest.raises(VitCoreError, match="cannot be represented: its attention pool has type AttentionPoolPrr"):
        config_from_timm(model)
    swin = timm.create_model("resnet18", pretrained=False)
    with pytest.raises(VitCoreError, match="it is a ResNet"):
        config_from_timm(swin)


def test_mismatched_weights_name_the_key_and_both_shapes():
    from vit_core import VitCoreError

    small = VisionTransformer(img_size=32, patch_size=16, embed_dim=32, depth=1, num_heads=2, num_classes=3)
    other = VisionTransformer(img_size=32, patch_size=16, embed_dim=32, depth=1, num_heads=2, num_classes=5)
    with pytest.raises(VitCoreError, match=r"'head.weight' has shape \[5, 32\] in the weights but \[3, 32\]"):
        convert_timm(other.state_dict(), config_from_timm(small))
    state = dict(small.state_dict())
    state["blocks.0.attn.q_bias"] = torch.zeros(32)
    with pytest.raises(VitCoreError, match="'blocks.0.attn.q_bias', which vit_core cannot map"):
        convert_timm(state, config_from_timm(small))
