"""The CLI with image–text models: `zeroshot`, `explain --text`, `run --labels`, and bad input as one sentence
with exit code 2 (in-process through `vit_core.cli.main`, one subprocess for the exit code)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.clip_models import tiny_hf_clip
from vit_core import capture, load_model
from vit_core.cli import main
from vit_core.images import load_image

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> str:
    return str(tiny_hf_clip(tmp_path_factory.mktemp("clip")))


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("images") / "scene.png"
    pixels = (np.random.default_rng(0).random((80, 96, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_zeroshot_prints_each_labels_probability_as_the_library_computes_it(capsys, clip_dir, image):
    code, out, err = run(
        capsys, "zeroshot", image, "--model", f"hf:{clip_dir}", "--labels", "a dog,a cat,a red bus", "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["templates"] == ["a photo of a {}."] and report["activation"] == "softmax"
    rows = report["labels"]
    assert sorted(row["label"] for row in rows) == ["a cat", "a dog", "a red bus"]
    assert sum(row["probability"] for row in rows) == pytest.approx(1.0, abs=1e-5)
    assert rows == sorted(rows, key=lambda row: -row["probability"])
    loaded = load_model(f"hf:{clip_dir}")
    head = loaded.text.head("a dog,a cat,a red bus")
    pixels = loaded.preprocess(load_image(image))
    probs = capture(loaded.model, pixels, zero_shot=head).probs
    assert {row["label"]: row["probability"] for row in rows} == pytest.approx(
        dict(zip(head.labels, probs, strict=True)), abs=1e-6
    )
    code, out, _ = run(capsys, "zeroshot", image, "--model", f"hf:{clip_dir}", "--labels", "a,b,c", "--top-k", "1")
    assert code == 0 and len(out.strip().splitlines()) == 1


def test_explain_text_writes_the_phrase_map_and_it_follows_the_phrase(capsys, tmp_path, clip_dir, image):
    maps = {}
    for phrase in ("a red bus", "a green tree"):
        out = tmp_path / f"{phrase}.npy"
        code, _, err = run(
            capsys,
            "explain",
            image,
            "--model",
            f"hf:{clip_dir}",
            "--method",
            "chefer",
            "--text",
            phrase,
            "--out",
            str(out),
        )
        assert code == 0, err
        maps[phrase] = np.load(out)
    assert maps["a red bus"].shape == (4, 4) and not np.allclose(maps["a red bus"], maps["a green tree"])
    loaded = load_model(f"hf:{clip_dir}")
    pixels = loaded.preprocess(load_image(image))
    from vit_core.explain import explain, normalise

    expected = normalise(explain(capture(loaded.model, pixels, target=loaded.text.target("a red bus")), "chefer"))
    assert np.allclose(maps["a red bus"], expected, atol=1e-5)
    # a label of a label set, by name
    out = tmp_path / "label.npy"
    args = ["explain", image, "--model", f"hf:{clip_dir}", "--method", "gradcam", "--labels", "a dog,a cat"]
    code, _, err = run(capsys, *args, "--target", "a cat", "--out", str(out))
    assert code == 0, err


def test_run_stores_the_image_embedding_and_with_labels_the_zero_shot_logits(capsys, tmp_path, clip_dir, image):
    out = tmp_path / "plain.npz"
    code, _, err = run(capsys, "run", image, "--model", f"hf:{clip_dir}", "--out", str(out))
    assert code == 0, err
    plain = np.load(out)
    assert plain["image_embedding"].shape == (16,) and "logits" not in plain
    loaded = load_model(f"hf:{clip_dir}")
    with torch.no_grad():
        embedding = loaded.model(loaded.preprocess(load_image(image))[None])[0].numpy()
    assert np.abs(plain["image_embedding"] - embedding).max() <= 1e-5
    out = tmp_path / "labels.npz"
    code, _, err = run(
        capsys,
        "run",
        image,
        "--model",
        f"hf:{clip_dir}",
        "--labels",
        "a dog, a cat",
        "--template",
        "{}",
        "--out",
        str(out),
    )
    assert code == 0, err
    data = np.load(out)
    assert data["labels"].tolist() == ["a dog", "a cat"] and data["templates"].tolist() == ["{}"]
    assert data["logits"].shape == (2,) and data["layer_logits"].shape == (2, 2)
    assert np.allclose(data["probs"].sum(), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "args,words",
    [
        (["zeroshot", "{image}", "--model", "hf:{clip}", "--labels", ""], "at least one label"),
        (["zeroshot", "{image}", "--model", "hf:{clip}", "--labels", "a dog,,a cat"], "label 2 is empty"),
        (["zeroshot", "{image}", "--model", "hf:{clip}", "--labels", "a dog,a cat,a dog"], "repeats label 1"),
        (["zeroshot", "{image}", "--model", "hf:{clip}", "--labels", ",".join(map(str, range(1001)))], "limit of 1000"),
        (
            ["explain", "{image}", "--model", "hf:{clip}", "--method", "chefer", "--text", " ", "--out", "x.npy"],
            "empty",
        ),
        (
            ["explain", "{image}", "--model", "hf:{clip}", "--method", "chefer", "--text", "a " * 30, "--out", "x.npy"],
            "at most 24 tokens",
        ),
        (["explain", "{image}", "--model", "hf:{clip}", "--method", "chefer", "--out", "x.npy"], "labels or a prompt"),
        (["zeroshot", "{image}", "--model", "hf:{clip}", "--labels", "a,b", "--template", "a photo"], "braces"),
        (
            ["explain", "{image}", "--model", "bundled", "--method", "chefer", "--text", "a dog", "--out", "x.npy"],
            "no text tower",
        ),
        (["zeroshot", "{image}", "--model", "bundled", "--labels", "a dog,a cat"], "no text tower"),
        (["zeroshot", "{image}", "--model", "openclip:hf-hub:timm/ViT-B-16-SigLIP", "--labels", "a"], "ambiguous"),
        (["zeroshot", "{image}", "--model", "openclip:ViT-Z-1", "--labels", "a"], "unknown open_clip architecture"),
        (["zeroshot", "{image}", "--model", "openclip:ViT-B-32/nope", "--labels", "a"], "no pretrained tag 'nope'"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(capsys, tmp_path, clip_dir, image, args, words):
    args = [arg.format(image=image, clip=clip_dir) for arg in args]
    args = [str(tmp_path / arg) if arg.endswith(".npy") else arg for arg in args]
    code, out, err = run(capsys, *args)
    assert code == 2 and words in err, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_unknown_hf_model_type_exits_2_in_a_subprocess(tmp_path, image):
    (tmp_path / "config.json").write_text('{"model_type": "swin"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    args = ["zeroshot", image, "--model", f"hf:{tmp_path}", "--labels", "a,b"]
    result = subprocess.run([sys.executable, "-m", "vit_core", *args], capture_output=True, text=True, env=env)
    assert result.returncode == 2 and "HF model type 'swin' is not supported" in result.stderr, result.stderr
