"""Loading by name: each source's own preprocessing, labels and weights, offline, safely."""

import time

import numpy as np
import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from timm.data import create_transform, resolve_data_config
from transformers import ViTConfig as HFViTConfig
from transformers import ViTForImageClassification, ViTImageProcessor

from tests.photos import photo as sample_photo  # real photos without importing gradio
from tests.reference import perturb
from vit_core import VitCoreError, capture
from vit_core.images import load_image
from vit_core.weights import save_vit
from vit_core.zoo import CATALOG, available_offline, load_model


@pytest.fixture(scope="module")
def photo():
    return load_image(sample_photo("cheetah1.jpg"))


def save_safetensors(model: torch.nn.Module, path) -> str:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def test_timm_with_local_weights_sees_timms_own_input_and_matches_its_logits(tmp_path, photo):
    source = perturb(timm.create_model("vit_tiny_patch16_224", pretrained=False))
    weights = save_safetensors(source, tmp_path / "w.safetensors")
    loaded = load_model("timm:vit_tiny_patch16_224", weights=weights)
    expected_input = create_transform(**resolve_data_config({}, model=source))(photo)
    pixels = loaded.preprocess(photo)
    assert torch.equal(pixels, expected_input)
    with torch.no_grad():
        reference = source(pixels[None])[0]
    assert np.abs(capture(loaded.model, pixels).logits - reference.numpy()).max() <= 1e-4
    assert loaded.labels[1].startswith("goldfish") and len(loaded.labels) == 1000


def test_torchvision_with_local_pth_uses_weights_transforms(tmp_path, photo):
    source = perturb(torchvision.models.vit_b_32(weights=None))
    path = tmp_path / "vit_b_32.pth"
    torch.save(source.state_dict(), path)
    loaded = load_model("torchvision:vit_b_32", weights=str(path))
    default = torchvision.models.ViT_B_32_Weights.DEFAULT
    pixels = loaded.preprocess(photo)
    assert torch.equal(pixels, default.transforms()(photo))
    with torch.no_grad():
        reference = source(pixels[None])[0]
    assert np.abs(capture(loaded.model, pixels).logits - reference.numpy()).max() <= 1e-4
    assert loaded.labels == list(default.meta["categories"])


def test_hf_save_pretrained_directory_loads_offline(tmp_path, photo):
    config = HFViTConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        image_size=64,
        patch_size=16,
        num_labels=3,
        id2label={0: "cat", 1: "dog", 2: "fox"},
        label2id={"cat": 0, "dog": 1, "fox": 2},
    )
    source = perturb(ViTForImageClassification(config))
    source.save_pretrained(tmp_path)
    processor = ViTImageProcessor(size={"height": 64, "width": 64})
    processor.save_pretrained(tmp_path)
    loaded = load_model(f"hf:{tmp_path}")
    assert loaded.labels == ["cat", "dog", "fox"]
    pixels = loaded.preprocess(photo)
    expected = processor(images=photo, return_tensors="pt")["pixel_values"][0]
    assert pixels.shape == expected.shape == (3, 64, 64)
    assert (pixels - expected).abs().max() < 1e-5  # same resize (PIL bilinear), rescale and normalise
    with torch.no_grad():
        reference = source(pixel_values=pixels[None]).logits[0]
    assert np.abs(capture(loaded.model, pixels).logits - reference.numpy()).max() <= 1e-4


def test_own_format_round_trip_and_timm_reference(tmp_path, photo):
    from vit_core import ViT, ViTConfig
    from vit_core.config import DataConfig

    cfg = ViTConfig(
        image_size=(64, 64),
        patch_size=8,
        embed_dim=48,
        depth=2,
        num_heads=3,
        mlp_dim=96,
        num_classes=4,
        num_register_tokens=2,
        layer_scale=True,
    )
    model = perturb(ViT(cfg))
    path = tmp_path / "mine.safetensors"
    save_vit(path, model, DataConfig(input_size=(3, 64, 64), crop_pct=1.0), ["a", "b", "c", "d"])
    loaded = load_model(str(path))
    assert loaded.cfg == cfg and loaded.labels == ["a", "b", "c", "d"]
    pixels = loaded.preprocess(photo)
    assert pixels.shape == (3, 64, 64)
    with torch.no_grad():
        ours, theirs = model(pixels[None]), loaded.make_reference()(pixels[None])
    assert torch.allclose(ours, theirs, atol=1e-4)  # timm rebuilt from our config agrees
    assert available_offline(str(path))


def test_uncached_pretrained_models_fail_fast_with_one_sentence():
    for entry in CATALOG:
        if entry.name == "bundled" or available_offline(entry.name):
            continue
        start = time.monotonic()
        with pytest.raises(VitCoreError) as error:
            load_model(entry.name)
        assert time.monotonic() - start < 5.0, entry.name
        message = str(error.value)
        assert "\n" not in message and "cannot be reached" in message, message


@pytest.mark.parametrize(
    "name,match",
    [
        ("timm:not_a_model", "unknown timm model 'not_a_model'"),
        ("timm:resnet18", "it is a ResNet"),
        ("torchvision:resnet50", "unknown torchvision ViT 'resnet50'"),
        ("nonsense", "unknown model 'nonsense'"),
        ("hf:/no/such/dir", "neither a local directory nor a Hugging Face repository id"),
        ("missing.safetensors", "does not exist"),
    ],
)
def test_bad_model_names(name, match):
    with pytest.raises(VitCoreError, match=match):
        load_model(name)


def test_mismatched_weights_name_the_first_key_and_both_shapes(tmp_path):
    tiny = save_safetensors(timm.create_model("vit_tiny_patch16_224", pretrained=False), tmp_path / "tiny.safetensors")
    with pytest.raises(VitCoreError, match=r"'cls_token' has shape \[1, 1, 192\] in the weights but \[1, 1, 384\]"):
        load_model("timm:vit_small_patch16_224", weights=tiny)


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_code_is_never_executed(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": Payload()}}, path)
    with pytest.raises(VitCoreError, match="cannot be loaded with weights_only=True"):
        load_model("timm:vit_tiny_patch16_224", weights=str(path))
    assert "this must never run" not in capsys.readouterr().out
