"""The page's handlers on a real (small, random) model file: analyze once, redraw from the state."""

import gradio as gr
import numpy as np
import pytest
from gradio.media import get_image

from app import ui
from tests.reference import perturb
from vit_core import ViT, ViTConfig
from vit_core.config import DataConfig
from vit_core.weights import save_vit


@pytest.fixture
def model_file(tmp_path):
    cfg = ViTConfig(image_size=(64, 64), patch_size=8, embed_dim=32, depth=3, num_heads=4, mlp_dim=64, num_classes=3)
    path = tmp_path / "small.safetensors"
    save_vit(path, perturb(ViT(cfg), std=0.3), DataConfig(input_size=(3, 64, 64), crop_pct=1.0), ["a", "b", "c"])
    return str(path)


def test_analyze_then_redraw_without_running_the_model(model_file, monkeypatch):
    state, top5, picture, slider = ui.analyze(get_image("cheetah1.jpg"), model_file)
    assert set(top5) == {"a", "b", "c"} and abs(sum(top5.values()) - 1) < 1e-5
    assert picture.size == (64, 64) and slider.maximum == 3
    monkeypatch.setattr(ui, "capture", lambda *a, **k: pytest.fail("a redraw must not run the model"))
    first, last = np.asarray(ui.draw(state, 1)), np.asarray(ui.draw(state, 3))
    assert first.shape == last.shape == (64, 64, 3) and not np.array_equal(first, last)


def test_bad_inputs_become_one_sentence_gradio_errors(model_file, tmp_path):
    with pytest.raises(gr.Error, match="Upload an image first"):
        ui.analyze(None, model_file)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(gr.Error, match="is not an image file"):
        ui.analyze(str(bad), model_file)
    with pytest.raises(gr.Error, match="unknown model"):
        ui.analyze(get_image("lion.jpg"), "no-such-model")


def test_the_demo_builds_without_launching():
    assert isinstance(ui.build_demo(), gr.Blocks)


def test_examples_hold_real_photos_and_bundled_scenes():
    examples = [row[0] for row in ui.example_images()]
    assert any(path.endswith("cheetah1.jpg") for path in examples)
    scenes = [path for path in examples if "assets/scenes" in path]
    assert len(scenes) >= 6 and not any(path.endswith("_mask.png") for path in scenes)
