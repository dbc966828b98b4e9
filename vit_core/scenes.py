"""ShapeScenes: generated images with an answer key, for training the bundled model and scoring maps.

Each scene holds exactly one target object whose shape alone is the label, on a varied background,
among distractor clutter (strokes, blobs, small fragments) drawn independently of the label. The
target's hue, position, rotation and scale are random and independent of the label; it covers 5-30 %
of the image; it is always brighter than the background (a fixed sign of luminance contrast, which a
small ViT learns quickly, while a random sign keeps it at chance for thousands of steps).
Every sample is a pure function of (seed, index): same seed, same bytes.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "triangle", "square", "pentagon", "hexagon", "star", "cross", "ring", "crescent", "arrow")
SIZE = 96
SUPERSAMPLE = 2  # draw at 2x and downsample: anti-aliased edges
AREA_RANGE = (0.06, 0.26)  # fraction of the image the target covers, the same range for every class
MAX_RADIUS = 0.47  # of the image side; every class reaches AREA_RANGE[1] within it (checked in the tests)


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # [H, W, 3] uint8
    label: int  # index into CLASSES
    mask: np.ndarray  # [H, W] bool, the target's pixels


def _regular(n: int, radius: float, phase: float = 0.0) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(angles), np.sin(angles)], axis=1) * radius  # [n, 2]


def _outline(label: str) -> list[tuple[np.ndarray, int]]:
    """The shape at unit radius as (polygon, fill) layers: 255 adds to the mask, 0 cuts out."""
    if label == "circle":
        return [(_regular(64, 1.0), 255)]
    if label in ("triangle", "square", "pentagon", "hexagon"):
        sides = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}[label]
        return [(_regular(sides, 1.0, -np.pi / 2), 255)]
    if label == "star":
        outer, inner = _regular(5, 1.0, -np.pi / 2), _regular(5, 0.5, -np.pi / 2 + np.pi / 5)
        return [(np.stack([outer, inner], axis=1).reshape(-1, 2), 255)]
    if label == "cross":
        w = 0.33
        points = [
            (-w, -1),
            (w, -1),
            (w, -w),
            (1, -w),
            (1, w),
            (w, w),
            (w, 1),
            (-w, 1),
            (-w, w),
            (-1, w),
            (-1, -w),
            (-w, -w),
        ]
        return [(np.array(points, dtype=float), 255)]
    if label == "ring":
        return [(_regular(64, 1.0), 255), (_regular(64, 0.58), 0)]
    if label == "crescent":
        return [(_regular(64, 1.0), 255), (_regular(64, 0.85) + np.array([0.45, -0.1]), 0)]
    if label == "arrow":
        points = [(-1, -0.3), (0.15, -0.3), (0.15, -0.75), (1, 0), (0.15, 0.75), (0.15, 0.3), (-1, 0.3)]
        return [(np.array(points, dtype=float), 255)]
    raise ValueError(label)


def _draw_mask(label: str, centre: np.ndarray, radius: float, angle: float, size: int) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    for polygon, fill in _outline(label):
        points = polygon @ rotation.T * radius + centre
        draw.polygon([tuple(p) for p in points], fill=fill)
    return mask


@cache
def _unit_area(label: str) -> float:
    """Area of the shape at radius 1 (measured once on a fine raster)."""
    size = 400
    mask = np.asarray(_draw_mask(label, np.array([size / 2, size / 2]), size / 2.2, 0.0, size)) > 127
    return mask.sum() / (size / 2.2) ** 2


def _colour(rng: np.random.Generator, luminance: float, saturation: tuple[float, float]) -> tuple[int, int, int]:
    """A random hue at a given luminance (Rec. 601 luma), by scaling or blending with white."""
    rgb = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(*saturation), 1.0))
    luma = float(rgb @ [0.299, 0.587, 0.114])
    if luma < luminance:
        rgb = rgb + (1 - rgb) * (luminance - luma) / (1 - luma)
    else:
        rgb = rgb * luminance / luma
    return tuple(int(round(c * 255)) for c in np.clip(rgb, 0, 1))


def _background(rng: np.random.Generator, size: int, max_luma: float) -> Image.Image:
    """A two-colour gradient at a random angle with a few soft dark-to-mid patches."""
    a = np.array(_colour(rng, rng.uniform(0.04, max_luma), (0.0, 0.9)), dtype=np.float32)
    b = np.array(_colour(rng, rng.uniform(0.04, max_luma), (0.0, 0.9)), dtype=np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:size, 0:size] / size
    t = np.clip((xs - 0.5) * math.cos(theta) + (ys - 0.5) * math.sin(theta) + 0.5, 0, 1)[..., None]
    pixels = a * (1 - t) + b * t
    pixels += rng.normal(0, 6, size=(1, 1, 3)) + rng.normal(0, 3, size=pixels.shape)  # tint and grain
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _clutter(rng: np.random.Generator, draw: ImageDraw.ImageDraw, size: int, amount: float, max_luma: float) -> None:
    """Strokes, blobs and small fragments, independent of the label, at most mid luminance."""
    scale = size / SIZE

    def colour() -> tuple[int, int, int]:
        return _colour(rng, rng.uniform(0.1, max_luma), (0.0, 1.0))

    for _ in range(1 + rng.poisson(2 * amount)):  # strokes: at least one in every scene
        points = [tuple(rng.uniform(0, size, 2)) for _ in range(rng.integers(2, 4))]
        draw.line(points, fill=colour(), width=max(1, int(rng.uniform(1, 3) * scale)))
    for _ in range(rng.poisson(2.5 * amount)):  # blobs
        centre, radii = rng.uniform(0, size, 2), rng.uniform(2, 8, 2) * scale
        draw.ellipse([*(centre - radii), *(centre + radii)], fill=colour())
    for _ in range(1 + rng.poisson(2 * amount)):  # fragments (small irregular polygons): at least one
        centre, radius = rng.uniform(0, size, 2), rng.uniform(2.5, 6) * scale
        angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 6)))
        radii = radius * rng.uniform(0.5, 1.0, len(angles))
        points = centre + np.stack([np.cos(angles) * radii, np.sin(angles) * radii], axis=1)
        draw.polygon([tuple(p) for p in points], fill=colour())


def render_scene(rng: np.random.Generator, size: int = SIZE, difficulty: float = 1.0) -> Scene:
    """One scene. `difficulty` in [0, 1] scales clutter and narrows the contrast (1 = evaluation)."""
    big = size * SUPERSAMPLE
    label = int(rng.integers(len(CLASSES)))
    name = CLASSES[label]
    # Size is matched by area, so the number of target pixels says nothing about the label.
    area = rng.uniform(*AREA_RANGE) * big * big
    radius = math.sqrt(area / _unit_area(name))
    centre = rng.uniform(radius * 1.05, big - radius * 1.05, 2)
    angle = rng.uniform(0, 2 * np.pi)

    easy = 1.0 - difficulty
    canvas = _background(rng, big, max_luma=0.45 - 0.2 * easy)  # easier: darker backgrounds
    _clutter(rng, ImageDraw.Draw(canvas), big, amount=0.25 + 0.75 * difficulty, max_luma=0.55 + 0.1 * difficulty)
    target_luma = rng.uniform(0.62 + 0.15 * easy, 0.97)  # always brighter than the background
    mask = _draw_mask(name, centre, radius, angle, big)
    canvas.paste(_colour(rng, target_luma, (0.2, 1.0)), mask=mask)

    image = np.asarray(canvas.resize((size, size), Image.Resampling.BOX))
    target = np.asarray(mask.resize((size, size), Image.Resampling.BOX)) > 127
    return Scene(image=image, label=label, mask=target)


def scene(seed: int, index: int, size: int = SIZE, difficulty: float = 1.0) -> Scene:
    """The `index`-th scene of stream `seed`: a pure function of its arguments."""
    return render_scene(np.random.default_rng([seed, index]), size=size, difficulty=difficulty)


def scene_batch(seed: int, start: int, count: int, size: int = SIZE, difficulty: float = 1.0) -> list[Scene]:
    """Scenes `start .. start+count-1` of stream `seed` (training streams, fixed evaluation splits)."""
    return [scene(seed, i, size, difficulty) for i in range(start, start + count)]


def export_examples(out_dir: str, count: int = 30, seed: int = 30_000) -> list[str]:
    """Write `count` full-difficulty scenes and their masks as PNGs: `NN_<class>.png`, `NN_<class>_mask.png`."""
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for index, item in enumerate(scene_batch(seed, 0, count)):
        stem = out / f"{index:02d}_{CLASSES[item.label]}"
        Image.fromarray(item.image).save(f"{stem}.png", optimize=True)
        Image.fromarray(item.mask.astype(np.uint8) * 255).save(f"{stem}_mask.png", optimize=True)
        written.append(f"{stem}.png")
    return written
