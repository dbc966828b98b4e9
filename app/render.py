"""Arrays -> pictures: overlays of patch-grid maps on the model's own input view. No gradio here."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cache
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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


DIVERGING = "RdBu_r"  # a signed map: blue below zero, white at zero, red above (how LRP maps are drawn)


def signed_bound(grid_map: np.ndarray) -> float | None:
    """For a map of both signs (LRP relevance, a cosine similarity), the bound m of its symmetric scale
    [-m, m], so that zero is one colour in every map; None for a map of one sign, scaled min-max. Values of
    the other sign under 1 % of the largest are rounding, not a sign."""
    low, high = float(np.min(grid_map)), float(np.max(grid_map))
    top = max(-low, high)
    if low >= -0.01 * top or high <= 0.01 * top:
        return None
    return top


def heat(grid_map: np.ndarray, size: tuple[int, int], cmap: str, upsample: str) -> Image.Image:
    """A `[rows, cols]` map coloured and resized to `size` (width, height): min-max normalised in `cmap`, or,
    with both signs, on [-m, m] in the diverging `DIVERGING` (`signed_bound`)."""
    bound = signed_bound(grid_map)
    scaled = normalise(grid_map) if bound is None else (grid_map / (2 * bound) + 0.5).clip(0, 1)
    values = (scaled * 255).round().astype(np.uint8)
    resample = Image.Resampling.NEAREST if upsample == "nearest" else Image.Resampling.BILINEAR
    lut = colormap(cmap if bound is None else DIVERGING)
    return Image.fromarray(lut[np.asarray(Image.fromarray(values, "L").resize(size, resample))], "RGB")


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
    if not style.colorbar:
        return picture
    bound = signed_bound(grid_map)
    if bound is not None:
        return with_colorbar(picture, DIVERGING, -bound, bound)
    return with_colorbar(picture, style.cmap, float(np.min(grid_map)), float(np.max(grid_map)))


def alone(
    grid_map: np.ndarray,
    size: tuple[int, int],
    style: OverlayStyle = OverlayStyle(),
    mark: tuple[int, int] | None = None,
) -> Image.Image:
    """A map that does not depend on the image (position-embedding similarity), drawn without it: its colours
    alone at `size` (width, height), as `overlay` draws them at full opacity, with the style's grid, the
    marked patch and the colorbar. Over the photo it would look as if it came from the picture."""
    return overlay(Image.new("RGB", size), grid_map, replace(style, opacity=1.0), mark=mark)


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


@cache
def font(size: int) -> ImageFont.ImageFont:
    """Pillow's bundled sans-serif at `size` pixels (no system font needed)."""
    return ImageFont.load_default(size=size)


def tick_labels(values: tuple[float, ...]) -> list[str]:
    """Short numbers for a colorbar's ticks, in one format: fixed-point with three significant digits of the
    largest where it lies in [1e-4, 1000) (0.000817, 0.00163, 0.0457, 2.50), so maps side by side read alike;
    scientific beyond (1.20e-05, 2.50e+03). A value a million times smaller than the largest, or one that
    rounds to zero at those digits, is 0 (a softmax's 1.3e-30 beside 0.05)."""
    scale = max(abs(v) for v in values)
    if scale == 0:
        return ["0" for _ in values]
    values = tuple(0.0 if abs(v) < scale * 1e-6 else v for v in values)
    if 1e-4 <= scale < 1000:
        decimals = max(0, 2 - math.floor(math.log10(scale)))
        return [f"{v:.{decimals}f}" if round(v, decimals) else "0" for v in values]
    return [f"{v:.2e}" if v else "0" for v in values]


def with_colorbar(picture: Image.Image, cmap: str, low: float = 0.0, high: float = 1.0) -> Image.Image:
    """The picture with a horizontal colour scale below it, low on the left, labelled with the map's own
    values at both ends and the middle (min-max, or -m, 0 and m for a signed map). Below the picture, where the
    page lays nothing over it; a click there is outside the image (`patch_at`)."""
    width, height = picture.size
    gap, bar_height = max(3, height // 96), max(8, height // 40)
    size = max(10, min(14, width // 24))
    labels = tick_labels((low, (low + high) / 2, high))
    text_height = font(size).getbbox("0.9")[3] + 4
    lut = colormap(cmap)  # left = low
    row = lut[np.linspace(0, 255, width).round().astype(int)]  # [W, 3]
    bar = Image.fromarray(np.repeat(row[None, :, :], bar_height, axis=0), "RGB")
    canvas = Image.new("RGB", (width, height + gap + bar_height + text_height), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    canvas.paste(bar, (0, height + gap))
    draw = ImageDraw.Draw(canvas)
    y = height + gap + bar_height + 2
    for label, x, anchor in zip(labels, (0, width / 2, width), ("la", "ma", "ra"), strict=True):
        draw.text((x, y), label, fill=(40, 40, 40), font=font(size), anchor=anchor)
    return canvas


def patch_at(xy: tuple[float, float], size: tuple[int, int], grid: tuple[int, int]) -> tuple[int, int] | None:
    """The (row, col) of the patch under pixel `xy` = (x, y) of a picture of `size` (width, height) showing
    a grid of `grid` patches; None outside it (e.g. on the colorbar)."""
    x, y = xy
    width, height = size
    if not (0 <= x < width and 0 <= y < height):
        return None
    return int(y * grid[0] // height), int(x * grid[1] // width)


MATRIX_GAP = 2
MATRIX_MARGIN = 22  # room for the block numbers on the left
MATRIX_TOP = 40  # room for the head numbers on top, below the picture's label


def matrix_cell(heads: int) -> int:
    """Thumbnail size of the blocks x heads matrix: about 480 pixels wide, 36 to 72 pixels a cell."""
    return max(36, min(72, 480 // max(heads, 1) - MATRIX_GAP))


def thumbnail_matrix(
    maps: np.ndarray, cell: int, cmap: str, selected: tuple[int, int | None] | None = None, gap: int = MATRIX_GAP
) -> Image.Image:
    """`[layers, heads, rows, cols]` maps as one picture of layers x heads thumbnails (bertviz's model view),
    with block numbers on the left, head numbers on top, and the selected (block, head) outlined (the
    whole row when the head is None: the mean or max over heads)."""
    layers, heads = maps.shape[:2]
    left, top = MATRIX_MARGIN, MATRIX_TOP
    # 3 pixels to spare on the right and at the bottom, so the selected cell's outline is whole
    canvas = Image.new("RGB", (left + heads * (cell + gap) - gap + 3, top + layers * (cell + gap) - gap + 3), "white")
    draw = ImageDraw.Draw(canvas)
    for layer in range(layers):
        y = top + layer * (cell + gap)
        draw.text((left - 4, y + cell / 2), str(layer), fill=(60, 60, 60), font=font(12), anchor="rm")
        for head in range(heads):
            canvas.paste(heat(maps[layer, head], (cell, cell), cmap, "nearest"), (left + head * (cell + gap), y))
    for head in range(heads):
        x = left + head * (cell + gap) + cell / 2
        draw.text((x, top - 4), str(head), fill=(60, 60, 60), font=font(12), anchor="mb")
    if selected is not None:
        layer, head = selected
        first, last = (0, heads - 1) if head is None else (head, head)
        box = [
            left + first * (cell + gap) - 2,
            top + layer * (cell + gap) - 2,
            left + last * (cell + gap) + cell + 1,
            top + layer * (cell + gap) + cell + 1,
        ]
        draw.rectangle(box, outline=(255, 40, 40), width=2)
    return canvas


def cell_at(
    xy: tuple[float, float], shape: tuple[int, int], cell: int, gap: int = MATRIX_GAP
) -> tuple[int, int] | None:
    """The (layer, head) thumbnail under pixel `xy` of a `thumbnail_matrix`; None in a gap, on the
    numbers or outside."""
    x, y = int(xy[0]) - MATRIX_MARGIN, int(xy[1]) - MATRIX_TOP
    if x < 0 or y < 0:
        return None
    layer, head = y // (cell + gap), x // (cell + gap)
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
