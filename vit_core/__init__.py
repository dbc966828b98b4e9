"""vit_core: a hookable Vision Transformer, weight converters, and the maths behind the explorer.

Computation only: torch and numpy, never gradio or plotly.

    from vit_core import load_model, capture, explain, ExplainOptions
    loaded = load_model("bundled")
    result = capture(loaded.model, loaded.preprocess(image), target="top")
    grid_map = explain(result, "chefer", ExplainOptions(start_layer=2))
"""

# Import order matters: zoo imports vit_core.capture, so the capture module comes first.
from vit_core.capture import Capture, DeviceCapture, capture, capture_batch, predict, resolve_device
from vit_core.config import DataConfig, ViTConfig, split_tokens
from vit_core.errors import VitCoreError
from vit_core.explain import ExplainOptions, explain
from vit_core.model import ViT
from vit_core.stats import Stats, capture_stats
from vit_core.zoo import LoadedModel, load_model

__all__ = [
    "Capture",
    "DataConfig",
    "DeviceCapture",
    "ExplainOptions",
    "LoadedModel",
    "Stats",
    "ViT",
    "ViTConfig",
    "VitCoreError",
    "capture",
    "capture_batch",
    "capture_stats",
    "explain",
    "load_model",
    "predict",
    "resolve_device",
    "split_tokens",
]
