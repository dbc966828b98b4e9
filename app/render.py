"""Arrays -> pictures: overlays of patch-grid maps on the model's own input view. No gradio here."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

from vit_core.capture import Capture
from vit_core.config import DataConfig
from vit_core.explain import normalise

COLORMAPS = ("Viridis", "Inferno", "Magma", "Plasma", "Turbo", "Jet", "Hot", "Greys")


@dataclass(frozen=True)
class OverlayStyle:
    """The overlay controls shared by every view."""

    opacity: float = 0.55
    cmap: str = "Viridis"
    upsample: Literal["nearest", "bilinear"] = "bilinear"
    grid: bool = False
    colorbar: bool = True


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


def heat(grid_map: np.ndarray, size: tuple[int, int], cmap: str, upsample: str) -> Image.Image:
    """A `[rows, cols]` map, min-max normalised, coloured and resized to `size` (width, height)."""
    values = (normalise(grid_map) * 255).round().astype(np.uint8)
    resample = Image.Resampling.NEAREST if upsample == "nearest" else Image.Resampling.BILINEAR
    return Image.fromarray(colormap(cmap)[np.asarray(Image.fromarray(values, "L").resize(size, resample))], "RGB")


def overlay(
    image: Image.Image,
    grid_map: np.ndarray,
    style: OverlayStyle = OverlayStyle(),
    mark: tuple[int, int] | None = None,
    keep: np.ndarray | None = None,
) -> Image.Image:
    """Blend a `[rows, cols]` map over the image; optionally the patch grid, a marked patch (row, col),
    a boolean `keep` mask (patches outside it are dimmed, as in DINO's mass threshold) and a colorbar."""
    picture = Image.blend(image.convert("RGB"), heat(grid_map, image.size, style.cmap, style.upsample), style.opacity)
    rows, cols = grid_map.shape
    if keep is not None:
        dim = np.asarray(Image.fromarray((~keep).astype(np.uint8) * 255, "L").resize(image.size, Image.NEAREST)) > 0
        pixels = np.asarray(picture).copy()
        pixels[dim] = (pixels[dim] * 0.25).astype(np.uint8)
        picture = Image.fromarray(pixels, "RGB")
    if style.grid:
        draw_grid(picture, rows, cols)
    if mark is not None:
        mark_patch(picture, rows, cols, mark)
    return with_colorbar(picture, style.cmap) if style.colorbar else picture


def draw_grid(picture: Image.Image, rows: int, cols: int) -> None:
    """Thin white lines between patches, in place."""
    draw = ImageDraw.Draw(picture)
    width, height = picture.size
    for c in range(1, cols):
        x = round(c * width / cols)
        draw.line([(x, 0), (x, height)], fill=(255, 255, 255), width=1)
    for r in range(1, rows):
        y = round(r * height / rows)
        draw.line([(0, y), (width, y)], fill=(255, 255, 255), width=1)


def mark_patch(picture: Image.Image, rows: int, cols: int, patch: tuple[int, int]) -> None:
    """A red box around patch (row, col), in place."""
    width, height = picture.size
    row, col = patch
    box = [col * width / cols, row * height / rows, (col + 1) * width / cols - 1, (row + 1) * height / rows - 1]
    ImageDraw.Draw(picture).rectangle(box, outline=(255, 40, 40), width=max(2, width // 112))


def with_colorbar(picture: Image.Image, cmap: str) -> Image.Image:
    """The picture with a vertical colour scale on its right: high at the top, low at the bottom."""
    width, height = picture.size
    bar_width, margin = max(8, width // 28), max(4, width // 56)
    lut = colormap(cmap)[::-1]  # top = high
    column = lut[np.linspace(0, 255, height).round().astype(int)]  # [H, 3]
    bar = Image.fromarray(np.repeat(column[:, None, :], bar_width, axis=1), "RGB")
    canvas = Image.new("RGB", (width + margin + bar_width, height), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    canvas.paste(bar, (width + margin, 0))
    return canvas


def patch_at(xy: tuple[float, float], size: tuple[int, int], grid: tuple[int, int]) -> tuple[int, int] | None:
    """The (row, col) of the patch under pixel `xy` = (x, y) of a picture of `size` (width, height) showing
    a grid of `grid` patches; None outside it (e.g. on the colorbar)."""
    x, y = xy
    width, height = size
    if not (0 <= x < width and 0 <= y < height):
        return None
    return int(y * grid[0] // height), int(x * grid[1] // width)


def thumbnail_matrix(maps: np.ndarray, cell: int, cmap: str, gap: int = 2) -> Image.Image:
    """`[layers, heads, rows, cols]` maps as one picture of layers x heads thumbnails (bertviz's model view)."""
    layers, heads = maps.shape[:2]
    canvas = Image.new("RGB", (heads * (cell + gap) - gap, layers * (cell + gap) - gap), (255, 255, 255))
    for layer in range(layers):
        for head in range(heads):
            canvas.paste(
                heat(maps[layer, head], (cell, cell), cmap, "nearest"), (head * (cell + gap), layer * (cell + gap))
            )
    return canvas


def cell_at(xy: tuple[float, float], shape: tuple[int, int], cell: int, gap: int = 2) -> tuple[int, int] | None:
    """The (layer, head) thumbnail under pixel `xy` of a `thumbnail_matrix`; None in a gap or outside."""
    x, y = int(xy[0]), int(xy[1])
    layer, head = divmod(y, cell + gap)[0], divmod(x, cell + gap)[0]
    if y % (cell + gap) >= cell or x % (cell + gap) >= cell or not (0 <= layer < shape[0] and 0 <= head < shape[1]):
        return None
    return layer, head


def mark_crop(
    image: Image.Image,
    box: tuple[float, float, float, float],
    source_size: tuple[int, int] | None = None,
    dim: float = 0.6,
) -> Image.Image:
    """`image` with what the model does not see dimmed and what it sees outlined (`vit_core.images.model_view`).

    `box` is (left, top, right, bottom) in the pixels of an image of `source_size` (width, height), by default
    `image.size`, so a thumbnail of a large photo takes the original's box. Pixels inside the box are left
    exactly as they are; outside, they are darkened by `dim`, and a white line runs just outside the box.
    """
    picture = image.convert("RGB")
    width, height = picture.size
    source_width, source_height = source_size or picture.size
    scale_x, scale_y = width / source_width, height / source_height
    left, right = round(box[0] * scale_x), round(box[2] * scale_x)
    top, bottom = round(box[1] * scale_y), round(box[3] * scale_y)
    pixels = np.asarray(picture)  # [H, W, 3]
    shown = pixels[top:bottom, left:right].copy()
    out = (pixels * (1.0 - dim)).round().astype(np.uint8)
    out[top:bottom, left:right] = shown
    marked = Image.fromarray(out, "RGB")
    line = max(2, round(min(width, height) / 150))
    ImageDraw.Draw(marked).rectangle(
        [left - line, top - line, right + line - 1, bottom + line - 1], outline=(255, 255, 255), width=line
    )
    return marked
