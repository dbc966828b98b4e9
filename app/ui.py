"""The page: `build_demo()` composes the tabs. Handlers are short: inputs -> core -> render -> outputs."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import gradio as gr
import numpy as np

from app.render import input_view, overlay
from vit_core.capture import Capture, capture
from vit_core.errors import VitCoreError
from vit_core.images import load_image
from vit_core.maps import attention_map
from vit_core.zoo import CATALOG, LoadedModel, available_offline, load_model


def default_model() -> str:
    return os.environ.get("VIT_MODEL", "bundled")


@lru_cache(maxsize=2)
def shared_model(name: str) -> LoadedModel:
    """Models are loaded once per process and shared by every session."""
    return load_model(name)


def analyze(image, model_name: str):
    """Run the model once; return the capture (kept per session) and the first views."""
    if image is None:
        raise gr.Error("Upload an image first.")
    try:
        loaded = shared_model(model_name)
        result = capture(loaded.model, loaded.preprocess(load_image(image)))
    except VitCoreError as error:
        raise gr.Error(str(error)) from error
    state = (model_name, result)
    last = result.num_layers
    return state, top_predictions(result, loaded), draw(state, last), gr.Slider(1, last, value=last, step=1)


def top_predictions(result: Capture, loaded: LoadedModel) -> dict[str, float]:
    if result.probs is None:
        return {"(this model has no classification head)": 1.0}
    order = np.argsort(result.probs)[::-1][:5]
    labels = loaded.labels or [str(i) for i in range(len(result.probs))]
    return {labels[i]: float(result.probs[i]) for i in order}


def draw(state, layer: int):
    """Redraw from the cached capture: no model run."""
    if state is None:
        return None
    model_name, result = state
    view = input_view(result, shared_model(model_name).data_config)
    return overlay(view, attention_map(result, int(layer) - 1, "mean"))


SCENES = Path(__file__).resolve().parent.parent / "assets" / "scenes"


def example_images() -> list[list[str]]:
    """Gradio's own photos and the first bundled scenes (their masks stay out of the gallery)."""
    photos = [gr.media.get_image(name) for name in ("cheetah1.jpg", "lion.jpg", "bus.png", "tower.jpg")]
    scenes = sorted(str(p) for p in SCENES.glob("*.png") if not p.stem.endswith("_mask"))[:8]
    return [[path] for path in photos + scenes]


def build_demo() -> gr.Blocks:
    choices = [(f"{e.name}{'' if available_offline(e.name) else ' (needs download)'}", e.name) for e in CATALOG]
    with gr.Blocks(title="ViT attention explorer") as demo:
        gr.Markdown("# ViT attention explorer\nUpload an image: see where the class token looks, layer by layer.")
        with gr.Row():
            image = gr.Image(type="filepath", label="Image", sources=["upload", "clipboard", "webcam"])
            with gr.Column():
                model = gr.Dropdown(choices, value=default_model(), allow_custom_value=True, label="Model")
                run = gr.Button("Analyze", variant="primary")
                predictions = gr.Label(num_top_classes=5, label="Top-5")
        layer = gr.Slider(1, 12, value=12, step=1, label="Layer")
        attention = gr.Image(label="Class-token attention (head mean)", format="png", interactive=False)
        state = gr.State()
        run.click(analyze, [image, model], [state, predictions, attention, layer], api_name="analyze")
        layer.change(draw, [state, layer], attention, api_visibility="private")
        gr.Examples(example_images(), [image], label="Examples: real photos and ShapeScenes (the bundled model's task)")
    return demo
