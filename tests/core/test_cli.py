"""The CLI contract: `models`, `run IMAGE --out OUT.npz`, `bench --json`, exit 2 on bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from tests.photos import photo
from tests.reference import perturb
from vit_core import capture
from vit_core.images import load_image
from vit_core.zoo import load_model

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "vit_core", *args], capture_output=True, text=True, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> str:
    model = perturb(timm.create_model("vit_tiny_patch16_224", pretrained=False))
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def test_models_lists_the_catalog_with_offline_status():
    result = cli("models", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    names = {row["name"] for row in rows}
    assert {"bundled", "hf:google/vit-base-patch16-224", "torchvision:vit_b_16"} <= names
    assert all(isinstance(row["offline"], bool) for row in rows)


def test_run_writes_the_contracted_npz(tmp_path, tiny_weights):
    out = tmp_path / "cap.npz"
    image = photo("lion.jpg")
    result = cli("run", image, "--model", "timm:vit_tiny_patch16_224", "--weights", tiny_weights, "--out", str(out))
    assert result.returncode == 0, result.stderr
    data = np.load(out)
    assert data["input"].shape == (3, 224, 224) and data["input"].dtype == np.float32
    assert data["attentions"].shape == (12, 3, 197, 197) and data["attentions"].dtype == np.float32
    assert np.allclose(data["attentions"].sum(-1), 1.0, atol=1e-5)
    assert data["tokens"].shape == (13, 197, 192)
    assert data["logits"].shape == (1000,) and data["layer_logits"].shape == (12, 1000)
    assert int(data["num_prefix_tokens"]) == 1 and data["grid"].tolist() == [14, 14]
    assert len(data["labels"]) == 1000
    # the same numbers as the library gives in-process
    loaded = load_model("timm:vit_tiny_patch16_224", weights=tiny_weights)
    expected = capture(loaded.model, loaded.preprocess(load_image(image)))
    assert np.abs(data["logits"] - expected.logits).max() < 1e-4


def test_run_on_a_model_without_head_omits_layer_logits(tmp_path):
    from vit_core import ViT, ViTConfig
    from vit_core.config import DataConfig
    from vit_core.weights import save_vit

    model_path = tmp_path / "backbone.safetensors"
    cfg = ViTConfig(image_size=(32, 32), patch_size=16, embed_dim=16, depth=1, num_heads=2, mlp_dim=32, num_classes=0)
    save_vit(model_path, ViT(cfg), DataConfig(input_size=(3, 32, 32)), None)
    out = tmp_path / "b.npz"
    result = cli("run", photo("bus.png"), "--model", str(model_path), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "layer_logits" not in np.load(out) and "logits" not in np.load(out)


@pytest.mark.parametrize(
    "args,match",
    [
        (["run", "missing.jpg", "--out", "x.npz"], "missing.jpg does not exist"),
        (["run", "pyproject.toml", "--model", "timm:vit_tiny_patch16_224", "--out", "x.npz"], "is not an image file"),
        (["run", "{lion}", "--model", "timm:no_such_vit", "--out", "x.npz"], "unknown timm model"),
        (
            ["run", "{lion}", "--model", "timm:vit_small_patch16_224", "--weights", "{tiny}", "--out", "x.npz"],
            r"in the weights but \[1, 1, 384\] in the model",
        ),
        (["bench", "--model", "whatever"], "unknown model 'whatever'"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(args, match, tiny_weights, tmp_path):
    args = [a.format(lion=photo("lion.jpg"), tiny=tiny_weights) for a in args]
    args = [str(tmp_path / a) if a == "x.npz" else a for a in args]
    result = cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert __import__("re").search(match, lines[0]), lines[0]


def test_bench_prints_json_with_reference_fast_capture(tiny_weights):
    result = cli("bench", "--model", "timm:vit_tiny_patch16_224", "--weights", tiny_weights, "--repeats", "2", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report["median_ms"]) == {"reference", "fast", "capture", "explain_all", "analyses"}
    assert set(report["ratio"]) == {"fast/reference", "capture/reference", "explain_all/reference", "analyses/fast"}
    assert all(v > 0 for v in report["median_ms"].values())
    assert report["weights"] == tiny_weights and report["threads"] == 2


def test_bench_falls_back_to_random_weights_when_none_are_cached():
    result = cli("bench", "--model", "timm:vit_tiny_patch16_224", "--repeats", "1", "--stats")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["weights"] == "random" and report["ratio"]["stats/reference"] > 0
    torch.manual_seed(0)


def explain_cli(weights: str, image: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m vit_core explain` on the tiny timm model with its local weights."""
    return cli("explain", photo(image), "--model", "timm:vit_tiny_patch16_224", "--weights", weights, *args)


@pytest.mark.parametrize(
    "method",
    ["attention", "rollout", "grad_rollout", "chefer", "gradcam"]
    + ["attnlrp", "cp_lrp", "transformer_attribution", "legrad"],
)
def test_explain_writes_a_normalised_patch_grid_map(method, tmp_path, tiny_weights):
    out = tmp_path / f"{method}.npy"
    result = explain_cli(
        tiny_weights,
        "cheetah1.jpg",
        "--method",
        method,
        "--target",
        "3",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    grid_map = np.load(out)
    assert grid_map.shape == (14, 14) and grid_map.dtype == np.float32
    assert grid_map.min() == 0.0 and grid_map.max() == 1.0


def test_explain_png_overlay_and_attention_options(tmp_path, tiny_weights):
    out = tmp_path / "query.png"
    result = explain_cli(
        tiny_weights,
        "lion.jpg",
        "--method",
        "attention",
        "--layer",
        "2",
        "--head",
        "1",
        "--query-patch",
        "3,4",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    from PIL import Image

    assert Image.open(out).size == (224, 224)


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--method", "nope"], "unknown method 'nope'"),
        (["--method", "attention", "--layer", "40"], "layer 40 is out of range"),
        (["--method", "attention", "--head", "9"], "head 9 is out of range"),
        (["--method", "attention", "--query-patch", "14,0"], "outside the 14x14 patch grid"),
        (["--method", "chefer", "--target", "5000"], "target class 5000 is out of range"),
        (["--method", "chefer", "--target", "not a label"], "unknown class 'not a label'"),
        (["--method", "flow"], "over its limit of 55 tokens"),
    ],
)
def test_explain_bad_options_are_one_sentence_and_exit_2(extra, match, tmp_path, tiny_weights):
    result = explain_cli(
        tiny_weights,
        "lion.jpg",
        *extra,
        "--out",
        str(tmp_path / "x.npy"),
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and match in result.stderr, result.stderr


def test_explain_raw_writes_the_signed_relevance(tmp_path, tiny_weights):
    from vit_core.lrp import lrp_batch

    out = tmp_path / "raw.npy"
    result = explain_cli(tiny_weights, "lion.jpg", "--method", "attnlrp", "--target", "7", "--raw", "--out", str(out))
    assert result.returncode == 0, result.stderr
    loaded = load_model("timm:vit_tiny_patch16_224", weights=tiny_weights)
    pixels = loaded.preprocess(load_image(photo("lion.jpg")))
    (expected,) = lrp_batch(loaded.model, pixels[None], 7)
    raw = np.load(out)
    assert raw.min() < 0 < raw.max() and np.allclose(raw, expected.patches, atol=1e-4)
    refused = explain_cli(tiny_weights, "lion.jpg", "--method", "attnlrp", "--raw", "--out", str(tmp_path / "x.png"))
    assert refused.returncode == 2 and refused.stderr.strip().endswith("only a .npy file holds; got 'x.png'.")


def test_an_unknown_timm_model_on_the_command_line_says_how_to_list_the_names(tmp_path, capsys):
    from vit_core.cli import main

    code = main(["run", photo("lion.jpg"), "--model", "timm:no_such_vit", "--out", str(tmp_path / "x.npz")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.startswith("error: unknown timm model 'no_such_vit'; check the spelling")
    assert error.endswith("`timm.list_models('vit*')` names every timm ViT.")


def test_the_cli_adds_its_own_flag_hint_to_a_core_sentence(tmp_path, capsys):
    from vit_core.cli import main

    out = str(tmp_path / "x.npz")
    code = main(["run", photo("lion.jpg"), "--model", "bundled", "--weights", "w.safetensors", "--out", out])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error == (
        "error: a separate weights file applies to timm:, hf: and torchvision: models, not to vit_core files. "
        "Leave out --weights."
    )
