"""Open any image a user may throw at us as 8-bit RGB, or refuse it with one clear sentence.

Handles EXIF rotation, animated files (first frame), 16-bit and float images, CMYK, palettes and
alpha (composited on white). Refuses empty, truncated and non-image files, decompression bombs and
extreme aspect ratios before decoding a single pixel.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vit_core.errors import VitCoreError

MAX_PIXELS = 40_000_000  # 40 MP: more than any phone photo, far below what would exhaust memory
MAX_ASPECT = 50  # a 50:1 strip still resizes to a sane size; beyond that the crop holds nothing useful


def load_image(source: str | Path | bytes | Image.Image, name: str | None = None) -> Image.Image:
    """Open `source` (a path, raw bytes or a PIL image) as an RGB image."""
    label = name or (Path(source).name if isinstance(source, str | Path) else "the image")
    if isinstance(source, Image.Image):
        image = source
    else:
        data = _read_bytes(source, label)
        try:
            image = Image.open(io.BytesIO(data))  # reads the header only; pixels are decoded below
        except Image.DecompressionBombError as error:
            raise VitCoreError("image_bomb", name=label, limit=MAX_PIXELS // 1_000_000) from error
        except UnidentifiedImageError as error:
            raise VitCoreError("image_not_an_image", name=label) from error
        except (OSError, ValueError, SyntaxError) as error:
            raise VitCoreError("image_corrupt", name=label) from error
    _check_size(image, label)
    try:
        image.seek(0)  # animated GIF/WebP/APNG: the first frame
        image.load()
    except (OSError, ValueError, SyntaxError) as error:
        raise VitCoreError("image_corrupt", name=label) from error
    try:
        image = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError):
        pass  # a broken EXIF block must not lose an otherwise good image
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited on white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float64)
        if mode == "F":
            low, high = float(values.min()), float(values.max())
            values = (values - low) / (high - low or 1.0) * 255.0
        elif values.max() > 255:
            values = values / 65535.0 * 255.0  # 16-bit range to 8 bits
        return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _read_bytes(source: str | Path | bytes, label: str) -> bytes:
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source)
        if not path.exists():
            raise VitCoreError("image_missing", name=label)
        if not path.is_file():
            raise VitCoreError("image_not_a_file", name=label)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise VitCoreError("image_unreadable", name=label, reason=str(error.strerror or error)) from error
    if not data:
        raise VitCoreError("image_empty", name=label)
    return data


def _check_size(image: Image.Image, label: str) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise VitCoreError("image_no_pixels", name=label)
    if width * height > MAX_PIXELS:
        raise VitCoreError(
            "image_too_many_pixels",
            name=label,
            width=width,
            height=height,
            megapixels=round(width * height / 1e6),
            limit=MAX_PIXELS // 1_000_000,
        )
    if max(width, height) / min(width, height) > MAX_ASPECT:
        raise VitCoreError("image_aspect", name=label, width=width, height=height, limit=MAX_ASPECT)
