"""Parity of image–text and DINOv2 sources on random weights, fp32: the image embedding (or last hidden
state), every layer's attention weights and every hidden state within 1e-4.

open_clip (`openclip:<arch>`, QuickGELU or GELU), HF `CLIPModel`/`CLIPVisionModel`, timm's CLIP towers
(whose head is CLIP's projection) and HF `Dinov2Model`/`Dinov2WithRegistersModel`, including their
position embeddings resized to another grid (without antialiasing for Dinov2Model, with it for the
registers model).
"""

import open_clip
import pytest
import timm
import torch
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
)

from tests.reference import (
    hf_clip_reference,
    hf_reference,
    load_converted,
    max_differences,
    openclip_reference,
    perturb,
    timm_reference,
)
from vit_core import capture_batch
from vit_core.convert import config_from_hf, config_from_timm, convert_hf, convert_timm
from vit_core.convert.from_openclip import config_from_openclip, convert_openclip

TOL = 1e-4
VISION = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128)
TEXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=99)


def openclip_small(quick_gelu: bool, patch: int) -> torch.nn.Module:
    return open_clip.model.CLIP(
        embed_dim=24,
        quick_gelu=quick_gelu,
        vision_cfg=dict(image_size=64, layers=3, width=64, head_width=16, patch_size=patch),
        text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=4, layers=2),
    ).eval()


@pytest.mark.parametrize("quick_gelu,patch", [(True, 16), (False, 16), (True, 32), (False, 8)])
def test_openclip_image_tower_parity(quick_gelu, patch):
    source = perturb(openclip_small(quick_gelu, patch))
    cfg = config_from_openclip(source.visual, "small")
    assert cfg.act == ("quick_gelu" if quick_gelu else "gelu") and cfg.pre_norm and cfg.image_embed_dim == 24
    ours = load_converted(cfg, convert_openclip(source.state_dict(), cfg))
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        embedding = ours(pixels)
        diff = max_differences(capture_batch(ours, pixels), openclip_reference(source.visual, pixels), embedding)
        diff["encode_image"] = float((embedding - source.encode_image(pixels)).abs().max())
    assert max(diff.values()) <= TOL, diff


@pytest.mark.slow
def test_openclip_vit_b_16_full_size_parity():
    """One full-size ViT-B per source (open_clip's own ViT-B-16 config, QuickGELU as OpenAI's weights)."""
    source = perturb(open_clip.create_model("ViT-B-16-quickgelu", pretrained=None).eval(), std=0.01)
    cfg = config_from_openclip(source.visual, "ViT-B-16-quickgelu")
    ours = load_converted(cfg, convert_openclip(source.state_dict(), cfg))
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        diff = max_differences(capture_batch(ours, pixels), openclip_reference(source.visual, pixels), ours(pixels))
    assert max(diff.values()) <= TOL, diff


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_hf_clip_model_image_tower_parity(act):
    config = CLIPConfig(
        text_config=TEXT,
        vision_config=dict(**VISION, image_size=64, patch_size=16, hidden_act=act),
        projection_dim=24,
        attn_implementation="eager",
    )
    source = perturb(CLIPModel(config))
    state = source.state_dict()
    cfg = config_from_hf(source.config, state)
    assert cfg.image_embed_dim == 24 and cfg.pre_norm and not cfg.pos_embed_antialias
    ours = load_converted(cfg, convert_hf(state, cfg))
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        diff = max_differences(capture_batch(ours, pixels), hf_clip_reference(source, pixels), ours(pixels))
    assert max(diff.values()) <= TOL, diff


def test_hf_clip_vision_model_parity_without_projection():
    source = perturb(CLIPVisionModel(CLIPVisionConfig(**VISION, image_size=64, patch_size=16)))
    source.config._attn_implementation = "eager"
    state = source.state_dict()
    cfg = config_from_hf(source.config, state)
    assert cfg.image_embed_dim == 0 and cfg.num_classes == 0
    ours = load_converted(cfg, convert_hf(state, cfg))
    pixels = torch.randn(1, 3, 64, 64)
    _, attentions, hidden = hf_reference(source, pixels)
    result = capture_batch(ours, pixels)[0]
    assert (
        max(float((torch.from_numpy(result.attentions[i]) - a[0]).abs().max()) for i, a in enumerate(attentions)) <= TOL
    )
    assert max(float((torch.from_numpy(result.tokens[i]) - h[0]).abs().max()) for i, h in enumerate(hidden)) <= TOL


def test_hf_clip_checkpoint_prefix_converts_the_same():
    """Hub CLIPVisionModel checkpoints (transformers 4) prefix every key with vision_model."""
    source = CLIPVisionModel(CLIPVisionConfig(**VISION, image_size=64, patch_size=16))
    state = source.state_dict()
    cfg = config_from_hf(source.config, state)
    prefixed = {("vision_model." + k if not k.startswith("vision_model.") else k): v for k, v in state.items()}
    a, b = convert_hf(state, cfg), convert_hf(prefixed, cfg)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["vit_base_patch16_clip_224.openai", "vit_base_patch16_clip_quickgelu_224.openai"])
def test_timm_clip_tower_head_is_the_image_projection(name):
    source = perturb(timm.create_model(name, pretrained=False, embed_dim=64, depth=2, num_heads=4, img_size=64))
    cfg = config_from_timm(source)
    assert cfg.num_classes == 0 and cfg.image_embed_dim == 512 and cfg.proj_bias and cfg.pre_norm
    assert cfg.act == ("quick_gelu" if "quickgelu" in name else "gelu")
    ours = load_converted(cfg, convert_timm(source.state_dict(), cfg))
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        diff = max_differences(capture_batch(ours, pixels), timm_reference(source, pixels), ours(pixels))
    assert max(diff.values()) <= TOL, diff


def test_timm_clip_fine_tuned_classifier_keeps_its_head():
    with torch.device("meta"):
        source = timm.create_model("vit_base_patch16_clip_224.openai_ft_in1k", pretrained=False)
    cfg = config_from_timm(source)
    assert cfg.num_classes == 1000 and cfg.image_embed_dim == 0


@torch.no_grad()
def dinov2_last_hidden(model, pixels):
    out = model(pixel_values=pixels, output_attentions=True, output_hidden_states=True)
    return out.last_hidden_state, list(out.attentions), list(out.hidden_states)


@pytest.mark.parametrize("registers", [0, 4])
@pytest.mark.parametrize("size", [56, 42])  # 56: the checkpoint's grid; 42: position embeddings resized
def test_hf_dinov2_parity(registers, size):
    common = dict(**{k: v for k, v in VISION.items() if k != "intermediate_size"}, image_size=56, patch_size=14)
    if registers:
        config = Dinov2WithRegistersConfig(**common, num_register_tokens=registers, attn_implementation="eager")
        source = Dinov2WithRegistersModel(config)
    else:
        source = Dinov2Model(Dinov2Config(**common, attn_implementation="eager"))
    source = perturb(source)
    state = source.state_dict()
    cfg = config_from_hf(source.config, state)
    assert cfg.num_register_tokens == registers and cfg.layer_scale and cfg.num_classes == 0
    assert cfg.pos_embed_antialias == bool(registers)
    ours = load_converted(cfg, convert_hf(state, cfg))
    pixels = torch.randn(2, 3, size, size)
    captures = capture_batch(ours, pixels)
    last, attentions, hidden = dinov2_last_hidden(source, pixels)
    with torch.no_grad():
        final = ours.norm(ours.forward_tokens(pixels))
    diff = {"last_hidden": float((final - last).abs().max())}
    for c in captures:
        assert c.logits is None
    import numpy as np

    diff["attentions"] = max(
        float(np.abs(np.stack([c.attentions[i] for c in captures]) - a.numpy()).max()) for i, a in enumerate(attentions)
    )
    diff["hidden"] = max(
        float(np.abs(np.stack([c.tokens[i] for c in captures]) - h.numpy()).max()) for i, h in enumerate(hidden)
    )
    assert max(diff.values()) <= TOL, diff


def test_dinov2_antialias_setting_matters_when_resizing():
    """The per-model setting is what gives parity: the other choice misses by far more than 1e-4."""
    import dataclasses

    source = perturb(
        Dinov2Model(
            Dinov2Config(
                **{k: v for k, v in VISION.items() if k != "intermediate_size"},
                image_size=56,
                patch_size=14,
                attn_implementation="eager",
            )
        )
    )
    state = source.state_dict()
    cfg = dataclasses.replace(config_from_hf(source.config, state), pos_embed_antialias=True)
    wrong = load_converted(cfg, convert_hf(state, cfg))
    pixels = torch.randn(1, 3, 42, 42)
    last, _, _ = dinov2_last_hidden(source, pixels)
    with torch.no_grad():
        assert float((wrong.norm(wrong.forward_tokens(pixels)) - last).abs().max()) > 1e-3


@pytest.mark.slow
def test_full_size_vit_b_per_source_parity():
    """HF CLIPModel (transformers' default CLIP config: ViT-B/32), timm's ViT-B/16 CLIP tower and HF
    Dinov2WithRegisters ViT-B/14 at its 518-px checkpoint grid fed 224 px (position embeddings resized)."""
    source = perturb(CLIPModel(CLIPConfig(projection_dim=512, attn_implementation="eager")), std=0.01)
    state = source.state_dict()
    cfg = config_from_hf(source.config, state)
    ours = load_converted(cfg, convert_hf(state, cfg))
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        diff = max_differences(capture_batch(ours, pixels), hf_clip_reference(source, pixels), ours(pixels))
    assert max(diff.values()) <= TOL, ("HF CLIP", diff)

    source = perturb(timm.create_model("vit_base_patch16_clip_224.openai", pretrained=False), std=0.01)
    cfg = config_from_timm(source)
    ours = load_converted(cfg, convert_timm(source.state_dict(), cfg))
    with torch.no_grad():
        diff = max_differences(capture_batch(ours, pixels), timm_reference(source, pixels), ours(pixels))
    assert max(diff.values()) <= TOL, ("timm CLIP", diff)

    config = Dinov2WithRegistersConfig(
        hidden_size=768, num_attention_heads=12, image_size=518, patch_size=14, num_register_tokens=4
    )
    config._attn_implementation = "eager"
    source = perturb(Dinov2WithRegistersModel(config), std=0.01)
    state = source.state_dict()
    cfg = config_from_hf(source.config, state)
    ours = load_converted(cfg, convert_hf(state, cfg))
    last, attentions, hidden = dinov2_last_hidden(source, pixels)
    result = capture_batch(ours, pixels)[0]
    with torch.no_grad():
        assert float((ours.norm(ours.forward_tokens(pixels)) - last).abs().max()) <= TOL
    for i, attention in enumerate(attentions):
        assert float((torch.from_numpy(result.attentions[i]) - attention[0]).abs().max()) <= TOL
    for i, state in enumerate(hidden):
        assert float((torch.from_numpy(result.tokens[i]) - state[0]).abs().max()) <= TOL
