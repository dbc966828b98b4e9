"""Parity of SigLIP and SigLIP 2 image towers on random weights, fp32: the image embedding, every layer's attention
weights, the attention pool's weights and every hidden state within 1e-4.

timm's SigLIP towers (`vit_*_siglip_*`: no class token, attention pooling; the `_gap_` variants average),
open_clip's SigLIP and SigLIP 2 (`ViT-B-16-SigLIP`, `ViT-B-16-SigLIP2`: a timm trunk, open_clip's text tower)
and HF `SiglipModel` / `SiglipVisionModel` (the fixed-resolution SigLIP 2 checkpoints are `SiglipModel`s too),
including HF's position embeddings resized to another grid. HF's `Siglip2Model` is NaFlex only: refused.
"""

import dataclasses

import numpy as np
import open_clip
import pytest
import timm
import torch
from transformers import SiglipConfig, SiglipModel, SiglipVisionConfig, SiglipVisionModel

from tests.clip_models import SIGLIP_VISION, register_tiny_openclip_siglip
from tests.reference import (
    hf_siglip_reference,
    load_converted,
    max_differences,
    perturb,
    timm_pool_attention,
    timm_reference,
)
from vit_core import VitCoreError, capture_batch, load_model
from vit_core.convert import config_from_hf, config_from_timm, convert_hf, convert_timm
from vit_core.convert.from_openclip import config_from_openclip, convert_openclip

TOL = 1e-4
SMALL = dict(embed_dim=64, depth=2, num_heads=4, img_size=64)
TEXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=99)


def pool_difference(ours, weights: torch.Tensor) -> float:
    """Our captured attention-pool weights `[B, H, N]` against a reference's over the patches `[B, H, P]` (the pool
    reads no prefix token: those columns are 0)."""
    captured = np.stack([c.pool_attention for c in ours])  # [B, H, N]
    prefix = captured.shape[-1] - weights.shape[-1]
    assert np.all(captured[..., :prefix] == 0)
    return float(np.abs(captured[..., prefix:] - weights.numpy()).max())


def timm_parity(source: torch.nn.Module, size: int, batch: int = 2) -> dict[str, float]:
    cfg = config_from_timm(source)
    ours = load_converted(cfg, convert_timm(source.state_dict(), cfg))
    pixels = torch.randn(batch, 3, size, size)
    captures = capture_batch(ours, pixels)
    with torch.no_grad():
        diff = max_differences(captures, timm_reference(source, pixels), ours(pixels))
    diff["pool"] = pool_difference(captures, timm_pool_attention(source, pixels))
    return diff


@pytest.mark.parametrize("name", ["vit_base_patch16_siglip_224", "vit_base_patch32_siglip_256"])
def test_timm_siglip_tower_parity(name):
    """The attention pool (one latent query, its norm and MLP) and no class token; the pooled vector is the image
    embedding. The patch-32 variant's MLPs use timm's GELUTanh."""
    source = perturb(timm.create_model(name, pretrained=False, **SMALL))
    cfg = config_from_timm(source)
    assert cfg.global_pool == "map" and not cfg.class_token and cfg.num_prefix_tokens == 0
    assert cfg.image_text and cfg.image_embed_dim == 64 and not cfg.image_proj and cfg.num_classes == 0
    assert cfg.act == ("gelu_tanh" if "patch32" in name else "gelu")
    diff = timm_parity(source, 64)
    assert max(diff.values()) <= TOL, diff


def test_timm_siglip_gap_variant_is_a_mean_pooled_backbone():
    source = perturb(timm.create_model("vit_base_patch16_siglip_gap_224", pretrained=False, **SMALL))
    cfg = config_from_timm(source)
    assert cfg.global_pool == "avg" and not cfg.image_text and cfg.num_classes == 0
    ours = load_converted(cfg, convert_timm(source.state_dict(), cfg))
    pixels = torch.randn(2, 3, 64, 64)
    captures = capture_batch(ours, pixels)
    assert captures[0].pool_attention is None
    with torch.no_grad():
        diff = max_differences(captures, timm_reference(source, pixels), ours(pixels))
    assert max(diff.values()) <= TOL, diff


def test_timm_attention_pool_after_registers_reads_the_patches_only():
    """timm's `_reg4_map_` kind: registers, then an attention pool over the patch tokens (prefix left out)."""
    source = perturb(
        timm.create_model("vit_base_patch16_siglip_224", pretrained=False, reg_tokens=2, no_embed_class=True, **SMALL)
    )
    cfg = config_from_timm(source)
    assert cfg.num_register_tokens == 2 and cfg.global_pool == "map"
    ours = load_converted(cfg, convert_timm(source.state_dict(), cfg))
    pixels = torch.randn(2, 3, 64, 64)
    captures = capture_batch(ours, pixels)
    with torch.no_grad():
        diff = max_differences(captures, timm_reference(source, pixels), ours(pixels))
    diff["pool"] = pool_difference(captures, timm_pool_attention(source, pixels))  # registers' columns: 0
    assert max(diff.values()) <= TOL, diff


@pytest.fixture(scope="module")
def tiny_openclip_siglip(tmp_path_factory):
    return register_tiny_openclip_siglip(tmp_path_factory.mktemp("openclip_siglip"))


def test_openclip_siglip_image_tower_parity(tiny_openclip_siglip):
    source = perturb(open_clip.create_model(tiny_openclip_siglip, pretrained=None).eval())
    cfg = config_from_openclip(source.visual, tiny_openclip_siglip)
    assert cfg.global_pool == "map" and cfg.image_embed_dim == 32 and not cfg.image_proj and cfg.act == "gelu_tanh"
    ours = load_converted(cfg, convert_openclip(source.state_dict(), cfg))
    pixels = torch.randn(2, 3, 64, 64)
    captures = capture_batch(ours, pixels)
    with torch.no_grad():
        embedding = ours(pixels)
        diff = max_differences(captures, timm_reference(source.visual.trunk, pixels), embedding)
        diff["encode_image"] = float((embedding - source.encode_image(pixels)).abs().max())
    diff["pool"] = pool_difference(captures, timm_pool_attention(source.visual.trunk, pixels))
    assert max(diff.values()) <= TOL, diff


@pytest.mark.parametrize("arch", ["ViT-B-16-SigLIP", "ViT-B-16-SigLIP2", "ViT-B-16-SigLIP2-256"])
def test_openclip_siglip_and_siglip2_architectures_convert(arch):
    """open_clip's own SigLIP and SigLIP 2 configs (built on the meta device): a ViT-B/16 with an attention pool
    whose pooled 768-d vector is the image embedding; the converter's keys are exactly our architecture's."""
    with torch.device("meta"):
        source = open_clip.create_model(arch, pretrained=None, device="meta")
    cfg = config_from_openclip(source.visual, arch)
    size = 256 if arch.endswith("256") else 224
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.image_size) == (768, 12, 12, (size, size))
    assert cfg.global_pool == "map" and cfg.image_embed_dim == 768 and not cfg.image_proj
    assert source.logit_bias is not None  # SigLIP: a learnt bias, a sigmoid per label
    converted = convert_openclip(source.state_dict(), cfg)  # check_state_dict: every key and shape
    assert "attn_pool.latent" in converted and "proj.weight" not in converted


@pytest.mark.parametrize("size", [64, 48])  # 64: the checkpoint's grid; 48: position embeddings resized
def test_hf_siglip_model_image_tower_parity(size):
    config = SiglipConfig(text_config=TEXT, vision_config=dict(SIGLIP_VISION, hidden_size=64, intermediate_size=128))
    config.vision_config._attn_implementation = "eager"
    source = perturb(SiglipModel(config)).eval()
    state = source.state_dict()
    cfg = config_from_hf(source.config, state)
    assert cfg.global_pool == "map" and cfg.image_embed_dim == 64 and not cfg.image_proj
    assert cfg.act == "gelu_tanh" and not cfg.class_token and not cfg.pos_embed_antialias
    ours = load_converted(cfg, convert_hf(state, cfg))
    pixels = torch.randn(2, 3, size, size)
    reference, pool = hf_siglip_reference(source.vision_model, pixels, interpolate_pos_encoding=size != 64)
    captures = capture_batch(ours, pixels)
    with torch.no_grad():
        embedding = ours(pixels)
        diff = max_differences(captures, reference, embedding)
        features = source.get_image_features(pixel_values=pixels, interpolate_pos_encoding=size != 64)
        diff["get_image_features"] = float((embedding - features.pooler_output).abs().max())
    diff["pool"] = pool_difference(captures, pool)
    assert max(diff.values()) <= TOL, diff


def test_hf_siglip_vision_model_parity_and_hub_prefix():
    """`SiglipVisionModel`: the image tower alone (its pooled vector is the embedding); transformers 4 checkpoints
    prefix its keys with vision_model, which converts the same."""
    source = perturb(SiglipVisionModel(SiglipVisionConfig(**SIGLIP_VISION))).eval()
    source.config._attn_implementation = "eager"
    state = source.state_dict()
    cfg = config_from_hf(source.config, state)
    assert cfg.image_embed_dim == 32 and cfg.global_pool == "map"
    ours = load_converted(cfg, convert_hf(state, cfg))
    pixels = torch.randn(2, 3, 64, 64)
    reference, pool = hf_siglip_reference(source, pixels)
    captures = capture_batch(ours, pixels)
    with torch.no_grad():
        diff = max_differences(captures, reference, ours(pixels))
    diff["pool"] = pool_difference(captures, pool)
    assert max(diff.values()) <= TOL, diff
    prefixed = {("vision_model." + k if not k.startswith("vision_model.") else k): v for k, v in state.items()}
    a, b = convert_hf(state, cfg), convert_hf(prefixed, cfg)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_hf_siglip_vision_model_without_head_averages_its_tokens():
    """`vision_use_head=False` (a VLM's encoder): HF returns tokens only; we read them out by their mean."""
    source = SiglipVisionModel(SiglipVisionConfig(**SIGLIP_VISION, vision_use_head=False)).eval()
    cfg = config_from_hf(source.config, source.state_dict())
    assert cfg.global_pool == "avg" and not cfg.image_text
    ours = load_converted(cfg, convert_hf(source.state_dict(), cfg))
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        last = source(pixel_values=pixels).last_hidden_state
        assert float((ours.norm(ours.forward_tokens(pixels)) - last).abs().max()) <= TOL


def test_hf_siglip2_naflex_is_refused_with_what_to_load_instead(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "siglip2"}')
    with pytest.raises(VitCoreError) as error:
        load_model(f"hf:{tmp_path}", random_weights=True)
    assert error.value.key == "hf_naflex_unsupported"
    assert "NaFlex" in str(error.value) and "openclip:ViT-B-16-SigLIP2" in str(error.value)


def test_attention_pool_on_a_class_token_model_keeps_the_class_token_out():
    """Our pool reads the patch tokens (timm's `pool_include_prefix=False`), whatever the prefix."""
    source = perturb(timm.create_model("vit_base_patch16_siglip_224", pretrained=False, class_token=True, **SMALL))
    cfg = config_from_timm(source)
    assert cfg.class_token and cfg.global_pool == "map"
    diff = timm_parity(source, 64)
    assert max(diff.values()) <= TOL, diff


@pytest.mark.slow
def test_full_size_siglip_vit_b_per_source_parity():
    """One full-size ViT-B/16 at 224 px per source: timm's SigLIP tower, open_clip's ViT-B-16-SigLIP image tower
    (its trunk is that timm model, built by open_clip's own config) and HF's default SiglipVisionModel."""
    pixels = torch.randn(1, 3, 224, 224)
    source = perturb(timm.create_model("vit_base_patch16_siglip_224", pretrained=False), std=0.01)
    diff = timm_parity(source, 224, batch=1)
    assert max(diff.values()) <= TOL, ("timm", diff)

    visual = perturb(open_clip.create_model("ViT-B-16-SigLIP", pretrained=None).visual, std=0.01)
    cfg = config_from_openclip(visual, "ViT-B-16-SigLIP")
    ours = load_converted(cfg, convert_openclip({f"visual.{k}": v for k, v in visual.state_dict().items()}, cfg))
    captures = capture_batch(ours, pixels)
    with torch.no_grad():
        diff = max_differences(captures, timm_reference(visual.trunk, pixels), ours(pixels))
        diff["visual"] = float((ours(pixels) - visual(pixels)).abs().max())
    diff["pool"] = pool_difference(captures, timm_pool_attention(visual.trunk, pixels))
    assert max(diff.values()) <= TOL, ("open_clip", diff)

    config = SiglipVisionConfig()
    config._attn_implementation = "eager"
    source = perturb(SiglipVisionModel(config), std=0.01).eval()
    state = source.state_dict()
    cfg = config_from_hf(source.config, state)
    assert (cfg.embed_dim, cfg.depth, cfg.image_size) == (768, 12, (224, 224))
    ours = load_converted(cfg, convert_hf(state, cfg))
    reference, pool = hf_siglip_reference(source, pixels)
    captures = capture_batch(ours, pixels)
    with torch.no_grad():
        diff = max_differences(captures, reference, ours(pixels))
    diff["pool"] = pool_difference(captures, pool)
    assert max(diff.values()) <= TOL, ("HF", diff)


def test_config_checks_of_the_attention_pool():
    from vit_core import ViTConfig

    cfg = ViTConfig(image_size=(32, 32), patch_size=16, embed_dim=16, depth=1, num_heads=2, mlp_dim=32)
    siglip = dataclasses.replace(cfg, class_token=False, global_pool="map", num_classes=0, image_embed_dim=16)
    assert dataclasses.replace(siglip, image_proj=False).image_text
    with pytest.raises(VitCoreError) as error:
        dataclasses.replace(siglip, image_proj=False, image_embed_dim=8)
    assert error.value.key == "embedding_width_without_projection"
    assert ViTConfig.from_dict(dataclasses.replace(siglip, image_proj=False).to_dict()).global_pool == "map"
