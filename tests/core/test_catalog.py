"""The catalog's declared sizes are the architectures' real sizes, and models are counted without weights."""

import json

import pytest
import torch

from vit_core.zoo import CATALOG, WEIGHT_FILES, count_parameters, load_model


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def built_with_random_weights(name: str, tmp_path) -> torch.nn.Module:
    """The catalog entry's architecture, offline: random weights (the bundled model is its own file)."""
    if name == "hf:google/vit-base-patch16-224":
        from vit_core.hub import hf_cached_file

        if hf_cached_file(name[3:], ["config.json"]) is None:
            # its config.json is transformers' ViTConfig defaults with the 1000 ImageNet labels
            from transformers import ViTConfig

            (tmp_path / "config.json").write_text(json.dumps(ViTConfig(num_labels=1000).to_dict()))
            name = f"hf:{tmp_path}"
    return load_model(name, random_weights=True, device="cpu").model


@pytest.mark.parametrize("entry", CATALOG, ids=[entry.name for entry in CATALOG])
def test_declared_parameters_match_the_architecture(entry, tmp_path):
    built = parameters(built_with_random_weights(entry.name, tmp_path))
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
