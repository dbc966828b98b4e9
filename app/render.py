"""Arrays -> pictures: overlays of patch-grid maps on the model's own input view. No gradio here."""

from __future__ import annotations

from functools import cache
from typing import Literal

import numpy as np
from PIL import Image

from vit_core.capture import Capture
from vit_core.config import DataConfig
from vit_core.explain import normalise


@cache
def colormap(name: str = "Viridis") -> np.ndarray:
    """A 256-entry RGB lookup table `[256, 3]` uint8 sampled from a plotly colorscale."""
    from plotly.colors import get_colorscale, sample_colorscale, unlabel_rgb

    colours = sample_colorscale(get_colorscale(name), np.linspace(0, 1, 256), colortype="rgb")
    return np.array([unlabel_rgb(c) for c in colours], dtype=np.float64).round().astype(np.uint8)


def input_view(capture: Capture, data_config: DataConfig) -> Image.Image:
    """The model's input tensor, de-normalised: exactly the pixels the maps refer to."""
    mean = np.array(data_config.mean, dtype=np.float32)[:, None, None]
    std = np.array(data_config.std, dtype=np.float32)[:, None, None]
    pixels = (capture.input * std + mean).clip(0, 1)  # [3, H, W]
    return Image.fromarray((pixels.transpose(1, 2, 0) * 255).round().astype(np.uint8), "RGB")


def overlay(
    image: Image.Image,
    grid_map: np.ndarray,
    opacity: float = 0.55,
    cmap: str = "Viridis",
    upsample: Literal["nearest", "bilinear"] = "bilinear",
) -> Image.Image:
    """Blend a `[rows, cols]` map, upsampled to the image, over the image."""
    values = (normalise(grid_map) * 255).round().astype(np.uint8)
    resample = Image.Resampling.NEAREST if upsample == "nearest" else Image.Resampling.BILINEAR
    heat = Image.fromarray(values, "L").resize(image.size, resample)
    coloured = Image.fromarray(colormap(cmap)[np.asarray(heat)], "RGB")
    return Image.blend(image.convert("RGB"), coloured, opacity)
