"""Pretrained models load from a local Hugging Face cache, offline, exactly as on a machine with a hub.

The cache is laid out the way huggingface_hub writes it (models--org--name/refs/main + snapshots/REV),
with random weights under the real repository ids; nothing is downloaded.
"""

import json

import numpy as np
import pytest
import timm
import torch
from huggingface_hub import constants
from safetensors.torch import save_file
from transformers import ViTConfig as HFViTConfig
from transformers import ViTForImageClassification

from tests.reference import perturb
from vit_core import capture
from vit_core.zoo import available_offline, load_model

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))

    def add(repo_id: str, files: dict[str, bytes]) -> None:
        repo = tmp_path / f"models--{repo_id.replace('/', '--')}"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(REVISION)
        snapshot = repo / "snapshots" / REVISION
        snapshot.mkdir(parents=True)
        for name, data in files.items():
            (snapshot / name).write_bytes(data)

    return add


def safetensors_bytes(model: torch.nn.Module, tmp_path) -> bytes:
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path.read_bytes()


def test_timm_model_loads_from_the_cache_offline(hub_cache, tmp_path):
    name = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    source = perturb(timm.create_model(name, pretrained=False))
    assert not available_offline(f"timm:{name}")
    hub_cache(f"timm/{name}", {"model.safetensors": safetensors_bytes(source, tmp_path)})
    assert available_offline(f"timm:{name}")
    loaded = load_model(f"timm:{name}")
    assert loaded.weights.startswith(constants.HF_HUB_CACHE)
    pixels = torch.randn(3, 224, 224)
    with torch.no_grad():
        expected = source(pixels[None])[0].numpy()
    assert np.abs(capture(loaded.model, pixels).logits - expected).max() <= 1e-4


def test_hf_repo_id_loads_from_the_cache_offline(hub_cache, tmp_path):
    config = HFViTConfig(
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=96,
        image_size=32,
        patch_size=16,
        num_labels=2,
        id2label={0: "no", 1: "yes"},
        label2id={"no": 0, "yes": 1},
    )
    source = perturb(ViTForImageClassification(config))
    processor = {
        "do_resize": True,
        "size": {"height": 32, "width": 32},
        "resample": 2,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_rescale": True,
    }
    hub_cache(
        "google/vit-base-patch16-224",
        {
            "config.json": config.to_json_string().encode(),
            "model.safetensors": safetensors_bytes(source, tmp_path),
            "preprocessor_config.json": json.dumps(processor).encode(),
        },
    )
    assert available_offline("hf:google/vit-base-patch16-224")
    loaded = load_model("hf:google/vit-base-patch16-224")
    assert loaded.labels == ["no", "yes"] and loaded.data_config.input_size == (3, 32, 32)
    pixels = torch.randn(3, 32, 32)
    with torch.no_grad():
        expected = source(pixel_values=pixels[None]).logits[0].numpy()
    assert np.abs(capture(loaded.model, pixels).logits - expected).max() <= 1e-4
