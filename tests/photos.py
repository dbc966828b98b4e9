"""Sample photos for the core tests, without importing gradio.

Gradio ships a few real photos (`gradio/media_assets/images/`); the core tests read them from that
folder, found with `importlib.util.find_spec` (which locates a package without importing it). Where
gradio is not installed, a synthetic photo of the same name and kind is written instead, so the core
tests run with torch and numpy alone.
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

_SYNTHETIC = Path(tempfile.gettempdir()) / "vit_core_test_photos"


def _gradio_images() -> Path | None:
    spec = importlib.util.find_spec("gradio")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "media_assets" / "images"
    return folder if folder.is_dir() else None


def _synthetic(name: str) -> Path:
    """A 320x240 photo-like image (smooth gradients, a bright disc, noise), seeded by the name."""
    path = _SYNTHETIC / name
    if not path.exists():
        rng = np.random.default_rng(sum(name.encode()))
        y, x = np.mgrid[0:240, 0:320].astype(np.float32)
        base = rng.uniform(40, 200, size=3)
        image = base + 0.2 * x[..., None] * rng.uniform(-1, 1, size=3) + 0.2 * y[..., None] * rng.uniform(-1, 1, size=3)
        disc = (x - rng.uniform(80, 240)) ** 2 + (y - rng.uniform(60, 180)) ** 2 < rng.uniform(30, 70) ** 2
        image[disc] = rng.uniform(150, 255, size=3)
        image += rng.normal(0, 6, size=image.shape)
        _SYNTHETIC.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
    return path


def photo(name: str) -> str:
    """The path of a sample photo ("lion.jpg", "bus.png", "cheetah1.jpg", "tower.jpg")."""
    folder = _gradio_images()
    if folder is not None and (folder / name).is_file():
        return str(folder / name)
    return str(_synthetic(name))
