"""Parity with Hugging Face transformers (eager attention, output_attentions=True) on random weights."""

import pytest
import torch
from transformers import (
    DeiTConfig,
    DeiTForImageClassificationWithTeacher,
    ViTConfig,
    ViTForImageClassification,
    ViTModel,
)

from tests.reference import hf_reference, load_converted, max_differences, perturb
from vit_core import VitCoreError, capture_batch
from vit_core.convert import config_from_hf, convert_hf

TOL = 1e-4
SMALL = dict(
    hidden_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=128,
    image_size=64,
    patch_size=16,
    num_labels=10,
)


def converted(hf_model):
    state = hf_model.state_dict()
    cfg = config_from_hf(hf_model.config, state)
    return cfg, load_converted(cfg, convert_hf(state, cfg))


@pytest.mark.parametrize(
    "model_class,config_class",
    [(ViTForImageClassification, ViTConfig), (DeiTForImageClassificationWithTeacher, DeiTConfig)],
)
def test_classification_parity(model_class, config_class):
    hf_model = perturb(model_class(config_class(**SMALL, attn_implementation="eager")))
    cfg, ours = converted(hf_model)
    pixels = torch.randn(2, 3, 64, 64)
    diff = max_differences(capture_batch(ours, pixels), hf_reference(hf_model, pixels))
    assert max(diff.values()) <= TOL, diff


def test_deit_with_teacher_has_two_prefix_tokens_and_two_heads():
    hf_model = DeiTForImageClassificationWithTeacher(DeiTConfig(**SMALL))
    cfg, _ = converted(hf_model)
    assert cfg.num_prefix_tokens == 2 and cfg.distill_head and cfg.norm_eps == 1e-12


def test_vit_model_backbone_parity_and_pooler_is_ignored():
    hf_model = perturb(ViTModel(ViTConfig(**SMALL, attn_implementation="eager")))
    cfg, ours = converted(hf_model)
    assert cfg.num_classes == 0
    pixels = torch.randn(1, 3, 64, 64)
    _, attentions, hidden = hf_reference(hf_model, pixels)
    ours_capture = capture_batch(ours, pixels)[0]
    for i, attn in enumerate(attentions):
        assert torch.allclose(torch.from_numpy(ours_capture.attentions[i]), attn[0], atol=TOL)
    for i, state in enumerate(hidden):
        assert torch.allclose(torch.from_numpy(ours_capture.tokens[i]), state[0], atol=TOL)


def test_hub_checkpoint_key_spelling_converts_the_same():
    """Hub checkpoints store transformers-4 names; both spellings give identical weights."""
    hf_model = ViTForImageClassification(ViTConfig(**SMALL))
    new = hf_model.state_dict()
    old = {}
    for key, value in new.items():
        key = key.replace("vit.layers.", "vit.encoder.layer.")
        for a, b in [
            ("attention.q_proj", "attention.attention.query"),
            ("attention.k_proj", "attention.attention.key"),
            ("attention.v_proj", "attention.attention.value"),
            ("attention.o_proj", "attention.output.dense"),
            ("mlp.fc1", "intermediate.dense"),
            ("mlp.fc2", "output.dense"),
        ]:
            key = key.replace(a, b)
        old[key] = value
    cfg = config_from_hf(hf_model.config, new)
    converted_new, converted_old = convert_hf(new, cfg), convert_hf(old, cfg)
    assert converted_new.keys() == converted_old.keys()
    assert all(torch.equal(converted_new[k], converted_old[k]) for k in converted_new)


def test_unsupported_model_type_is_one_sentence():
    from transformers import BeitConfig

    with pytest.raises(VitCoreError, match="HF model type 'beit' is not supported"):
        config_from_hf(BeitConfig(), {})
