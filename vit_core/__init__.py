"""vit_core: a hookable Vision Transformer, weight converters, and the maths behind the explorer.

Computation only: torch and numpy, never gradio or plotly.
"""

from vit_core.capture import Capture, capture, capture_batch, predict, resolve_device
from vit_core.config import DataConfig, ViTConfig, split_tokens
from vit_core.errors import VitCoreError
from vit_core.model import ViT

__all__ = [
    "Capture",
    "DataConfig",
    "ViT",
    "ViTConfig",
    "VitCoreError",
    "capture",
    "capture_batch",
    "predict",
    "resolve_device",
    "split_tokens",
]
