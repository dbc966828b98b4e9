"""The catalog's declared sizes are the architectures' real sizes, and models are counted without weights."""

import json

import pytest
import torch

from vit_core.zoo import CATALOG, WEIGHT_FILES, count_parameters, load_model


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# The hub configs of the catalog's transformers models, as transformers' config classes with these overrides.
HF_CONFIGS = {
    "hf:google/vit-base-patch16-224": ("ViTConfig", dict(num_labels=1000)),
    "hf:facebook/dinov2-with-registers-small": (
        "Dinov2WithRegistersConfig",
        dict(hidden_size=384, num_attention_heads=6, image_size=518, patch_size=14, num_register_tokens=4),
    ),
    "hf:facebook/dinov2-with-registers-base": (
        "Dinov2WithRegistersConfig",
        dict(hidden_size=768, num_attention_heads=12, image_size=518, patch_size=14, num_register_tokens=4),
    ),
}


def built_with_random_weights(name: str, tmp_path) -> int:
    """Parameters of the catalog entry's architecture built offline with random weights, its text tower
    included (the bundled model is its own file). open_clip models are built on the meta device: ViT-L/14
    with its text tower is 428 M parameters (`test_openclip_counts_...` checks that count against a load)."""
    if name.startswith("openclip:"):
        return count_parameters(name)
    if name in HF_CONFIGS:
        from vit_core.hub import hf_cached_file

        if hf_cached_file(name[3:], ["config.json"]) is None:
            import transformers

            config_class, overrides = HF_CONFIGS[name]
            config = getattr(transformers, config_class)(**overrides)
            (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
            name = f"hf:{tmp_path}"
    loaded = load_model(name, random_weights=True, device="cpu")
    return parameters(loaded.model) + (loaded.text.num_parameters if loaded.text else 0)


@pytest.mark.parametrize("entry", CATALOG, ids=[entry.name for entry in CATALOG])
def test_declared_parameters_match_the_architecture(entry, tmp_path):
    built = built_with_random_weights(entry.name, tmp_path)
    assert abs(entry.params - built) <= 0.01 * built, (entry.name, entry.params, built)
    assert entry.download_mb == 0 or abs(entry.download_mb - 4 * built / 1e6) < 0.01 * entry.download_mb  # float32
    if entry.name.startswith(("timm:", "torchvision:", "bundled")):
        assert count_parameters(entry.name) == built  # counted without weights: meta device / file header


def test_counting_reads_no_weights(tmp_path, timm_tiny_file):
    assert count_parameters(timm_tiny_file) == parameters(load_model(timm_tiny_file).model)
    from transformers import ViTConfig

    config = ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    assert not any((tmp_path / f).exists() for f in WEIGHT_FILES)  # a config alone is enough
    assert count_parameters(f"hf:{tmp_path}") == parameters(load_model(f"hf:{tmp_path}", random_weights=True).model)
    assert 630e6 < count_parameters("timm:vit_huge_patch14_224") < 633e6  # no download: HF_HUB_OFFLINE
    assert 633e6 < count_parameters("torchvision:vit_h_14") < 634e6  # its DEFAULT weights: 518 px


def test_openclip_counts_the_image_and_text_towers_without_weights(tmp_path):
    from tests.clip_models import register_tiny_openclip

    arch = register_tiny_openclip(tmp_path)
    loaded = load_model(f"openclip:{arch}", random_weights=True)
    ours = parameters(loaded.model) + loaded.text.num_parameters
    patch_bias = loaded.cfg.embed_dim  # open_clip's patch convolution has no bias; ours is zero
    assert count_parameters(f"openclip:{arch}") == ours - patch_bias
