"""A patch-grid map over the model's input view as a PNG-ready PIL image: numpy and PIL only.

The page draws richer overlays (`app/render.py`, plotly colour scales, colorbars); dataset runs need a
plain one without plotly, so this module holds viridis as a small table and blends at one opacity.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from vit_core.config import DataConfig
from vit_core.explain import normalise
from vit_core.metrics import upsample

# viridis at 0, 1/8, ..., 1 (matplotlib's values); linear interpolation between them is within 2/255 of it
_VIRIDIS = np.array(
    [
        (68, 1, 84),
        (71, 45, 123),
        (59, 82, 139),
        (44, 114, 142),
        (33, 145, 140),
        (40, 174, 128),
        (94, 201, 98),
        (173, 220, 48),
        (253, 231, 37),
    ],
    dtype=np.float64,
)


def viridis(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] `[...]` -> RGB `[..., 3]` uint8."""
    stops = np.linspace(0.0, 1.0, len(_VIRIDIS))
    clipped = np.clip(values, 0.0, 1.0)
    channels = [np.interp(clipped, stops, _VIRIDIS[:, c]) for c in range(3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def input_view(pixels: torch.Tensor | np.ndarray, data_config: DataConfig) -> Image.Image:
    """The model's input tensor `[3, H, W]`, de-normalised: exactly the pixels the maps refer to."""
    array = pixels.detach().float().cpu().numpy() if isinstance(pixels, torch.Tensor) else np.asarray(pixels)
    mean = np.array(data_config.mean, dtype=np.float32)[:, None, None]
    std = np.array(data_config.std, dtype=np.float32)[:, None, None]
    rgb = (array * std + mean).clip(0, 1).transpose(1, 2, 0)  # [H, W, 3]
    return Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB")


def overlay(image: Image.Image, grid_map: np.ndarray, opacity: float = 0.55) -> Image.Image:
    """Blend a `[rows, cols]` map (min-max normalised, bilinear, viridis) over `image`."""
    width, height = image.size
    heat = viridis(upsample(normalise(grid_map), (height, width)))  # [H, W, 3]
    return Image.blend(image.convert("RGB"), Image.fromarray(heat, "RGB"), opacity)
