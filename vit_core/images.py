"""Open any image a user may throw at us as 8-bit RGB, or refuse it with one clear sentence; and say
which part of it the model's preprocessing actually shows.

Handles EXIF rotation, animated files (first frame), 16-bit and float images, CMYK, palettes and
alpha (composited on white). Refuses empty, truncated and non-image files, decompression bombs and
extreme aspect ratios before decoding a single pixel. Camera photos up to 120 MP are accepted; a JPEG
above 12 MP decodes in draft mode (libjpeg's DCT scaling) when the caller says what size it needs.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vit_core.config import DataConfig
from vit_core.errors import VitCoreError

MAX_PIXELS = 120_000_000  # 120 MP: 108-MP phone photos pass; decoded, at most 480 MB (Pillow: 4 bytes a pixel)
DRAFT_ABOVE = 12_000_000  # above 12 MP a JPEG may decode in draft mode (see `load_image`)
BOMB_CHECK_ABOVE = 16_000_000  # the compression-ratio test applies only above 16 MP (see `open_image`)
MAX_PIXELS_PER_BYTE = 1000  # a noisy photo holds 3-10 pixels per byte, a flat RGB PNG at most ~344
MAX_ASPECT = 50  # a 50:1 strip still resizes to a sane size; beyond that the crop holds nothing useful

# Pillow's own guard agrees with ours: it warns above MAX_PIXELS and refuses above twice that while reading
# the header (its defaults, 89 and 179 MP, would warn about every 108-MP photo).
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

_DECODE_ERRORS = (OSError, ValueError, SyntaxError)


def load_image(
    source: str | Path | bytes | Image.Image, name: str | None = None, min_size: int | None = None
) -> Image.Image:
    """Open `source` (a path, raw bytes or a PIL image) as an RGB image.

    `min_size` is the model's input side in pixels (the larger of its input height and width). When it
    is given and the file is a JPEG over 12 MP, libjpeg decodes it in draft mode, scaled by 1/2, 1/4 or
    1/8, to the smallest size whose shortest side is still at least `2 * min_size`: a 108-MP photo then
    costs tens of MB instead of 430, and the model's resize, which would average hundreds of source
    pixels into each input pixel anyway, starts from a smaller picture. Up to 12 MP, for other formats,
    or without `min_size`, every pixel is decoded and the model sees exactly the source library's tensor.
    """
    label = name or (Path(source).name if isinstance(source, str | Path) else "the image")
    image = source if isinstance(source, Image.Image) else open_image(source, label)
    _check_size(image, label)
    ours = bool(getattr(image, "tile", None))  # not decoded yet: nobody else holds these pixels
    try:
        image.seek(0)  # animated GIF/WebP/APNG: the first frame
        width, height = image.size
        if min_size and width * height > DRAFT_ABOVE and image.format in ("JPEG", "MPO"):
            image.draft(None, (2 * min_size, 2 * min_size))  # largest 1/n scale keeping both sides >= that
        image.load()
    except Image.DecompressionBombError as error:  # a later frame of an animation claims a bomb's size
        raise VitCoreError("image_bomb", name=label, limit=MAX_PIXELS // 1_000_000) from error
    except _DECODE_ERRORS as error:
        raise VitCoreError("image_corrupt", name=label) from error
    try:
        if ours:  # no second copy of a 120-MP picture
            ImageOps.exif_transpose(image, in_place=True)
        else:  # a caller's decoded image stays as it was
            image = ImageOps.exif_transpose(image)
    except _DECODE_ERRORS:
        pass  # a broken EXIF block must not lose an otherwise good image
    return to_rgb(image)


def open_image(source: str | Path | bytes, name: str | None = None) -> Image.Image:
    """Read `source` and parse its header only; refuse it before decoding a pixel if it cannot be analysed.

    Refused: a missing, empty or unreadable file; not an image; over 120 MP; an aspect ratio beyond
    50:1; and a decompression bomb: above 16 MP, more than 1,000 pixels per byte of file. A noisy photo
    holds 3-10 pixels per byte, and deflate cannot compress beyond about 1,032:1, so an RGB PNG holds at
    most ~344 pixels per byte even when it is one flat colour (a flat JPEG: under 200). What gets past
    1,000 is a header claiming pixels the file does not hold, or one flat colour at one bit a pixel.
    Screenshots and diagrams up to 16 MP are never put to the ratio test at all.
    """
    label = name or (Path(source).name if isinstance(source, str | Path) else "the image")
    data = _read_bytes(source, label)
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only; pixels are decoded in load_image
    except Image.DecompressionBombError as error:  # over twice MAX_PIXELS: Pillow does not tell the size
        raise VitCoreError("image_bomb", name=label, limit=MAX_PIXELS // 1_000_000) from error
    except UnidentifiedImageError as error:
        raise VitCoreError("image_not_an_image", name=label) from error
    except _DECODE_ERRORS as error:
        raise VitCoreError("image_corrupt", name=label) from error
    _check_size(image, label)
    width, height = image.size
    if width * height > BOMB_CHECK_ABOVE and width * height > MAX_PIXELS_PER_BYTE * len(data):
        raise VitCoreError(
            "image_too_compressed", name=label, width=width, height=height, kilobytes=math.ceil(len(data) / 1000)
        )
    return image


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


# ---- what the model sees ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelView:
    """Which part of an image the model's preprocessing keeps, in the original image's pixels."""

    box: tuple[float, float, float, float] | None  # (left, top, right, bottom) shown; None: nothing cut
    squashed: bool  # the resize changed the aspect ratio by more than 1% (HF processors, timm "squash")
    fraction_shown: float  # area of the shown part / area of the image, 1.0 when nothing is cut


def model_view(image_size: tuple[int, int], data_config: DataConfig) -> ModelView:
    """What `data_config`'s eval transform keeps of an image of `image_size` (width, height).

    Mirrors timm's `transforms_imagenet_eval` (which every zoo source but torchvision uses) step by
    step: `scale = floor(input / crop_pct)`; "center" resizes the shortest side to `scale` (torchvision's
    `int()` for the long side, or timm's `ResizeKeepRatio` rounding for a non-square input), "squash"
    resizes both sides to `scale`, "border" fits the longest side and pads; then a centre crop of the
    input size (`round((resized - input) / 2)` from the top left). torchvision's own transform resizes
    to its `resize_size`, which `crop / (crop / resize)` gives back exactly for its ViTs. "Nothing cut"
    allows one resized pixel per side, the rounding of the resize rather than a choice of the transform.
    """
    width, height = image_size
    input_height, input_width = data_config.input_size[-2:]
    resized_width, resized_height = resized_size(image_size, data_config)
    left, right = _centre_crop(resized_width, input_width)
    top, bottom = _centre_crop(resized_height, input_height)
    step_x, step_y = width / resized_width, height / resized_height  # original pixels per resized pixel
    box = (left * step_x, top * step_y, right * step_x, bottom * step_y)
    fraction = (right - left) * (bottom - top) / (resized_width * resized_height)
    cut = left > 1 or top > 1 or resized_width - right > 1 or resized_height - bottom > 1
    aspect_change = (resized_width / resized_height) / (width / height)
    return ModelView(box if cut else None, abs(aspect_change - 1) > 0.01, fraction)


def resized_size(image_size: tuple[int, int], data_config: DataConfig) -> tuple[int, int]:
    """(width, height) that `data_config`'s eval transform resizes an image of `image_size` to, before its
    centre crop (the resize step of `model_view`)."""
    width, height = image_size
    input_height, input_width = data_config.input_size[-2:]
    crop_pct = data_config.crop_pct or 0.875  # timm's default when a config leaves it out
    scale_height, scale_width = math.floor(input_height / crop_pct), math.floor(input_width / crop_pct)
    if data_config.crop_mode == "squash":
        return scale_width, scale_height
    if data_config.crop_mode == "border" or scale_height != scale_width:
        ratio_height, ratio_width = height / scale_height, width / scale_width
        longest = data_config.crop_mode == "border"  # fit the longest side (pad) or the shortest (crop)
        ratio = max(ratio_height, ratio_width) if longest else min(ratio_height, ratio_width)
        return round(width / ratio), round(height / ratio)
    # torchvision's Resize(int): the shortest side to `scale`, the long side truncated
    short, long = min(width, height), max(width, height)
    new_short, new_long = scale_height, int(scale_height * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def _centre_crop(resized: int, crop: int) -> tuple[int, int]:
    """The span `[start, end)` of a resized side that torchvision's `center_crop` keeps (padding if short)."""
    if resized <= crop:
        return 0, resized
    start = int(round((resized - crop) / 2.0))
    return start, start + crop
