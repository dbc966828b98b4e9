"""The bad-input corpus of the app issue, as real files: each is converted properly or refused with one sentence."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

OK = None  # analysed normally


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header claims another size: a decompression bomb's signature."""
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _exif_rotated() -> bytes:
    image = Image.new("RGB", (64, 32), "navy")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    return encode(image, "JPEG", exif=exif)


def _animated_gif() -> bytes:
    frames = [Image.new("P", (48, 48), i) for i in (10, 200)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def _palette_with_transparency() -> bytes:
    image = Image.new("P", (40, 40), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (10, 10, 30, 30))
    return encode(image, "PNG", transparency=0)


def cases() -> dict[str, tuple[str, bytes, str | None]]:
    """name -> (file name, bytes, None if it must be analysed or a regex of the one-sentence refusal)."""
    gradient = np.linspace(0, 65535, 64 * 64, dtype=np.uint16).reshape(64, 64)
    return {
        "not an image": ("notes.png", b"hello, I am text, not pixels", "not an image file"),
        "truncated": ("cut.png", encode(Image.new("RGB", (64, 64), "red"), "PNG")[:60], "truncated or corrupt"),
        "zero bytes": ("empty.png", b"", "empty|no pixels|could not be read"),
        "decompression bomb": ("bomb.png", png_claiming(100_000, 100_000), "too large|MP"),
        "extreme aspect": ("strip.png", encode(Image.new("RGB", (2000, 10), "gray"), "PNG"), "aspect ratio"),
        "16-bit": ("deep.png", encode(Image.fromarray(gradient), "PNG"), OK),
        "cmyk": ("print.jpg", encode(Image.new("CMYK", (50, 40), (0, 255, 255, 0)), "JPEG"), OK),
        "palette + transparency": ("palette.png", _palette_with_transparency(), OK),
        "rgba": ("alpha.png", encode(Image.new("RGBA", (40, 30), (0, 128, 0, 100)), "PNG"), OK),
        "grayscale": ("gray.png", encode(Image.new("L", (30, 40), 90), "PNG"), OK),
        "animated gif": ("anim.gif", _animated_gif(), OK),
        "exif rotated": ("rotated.jpg", _exif_rotated(), OK),
        "1x1": ("dot.png", encode(Image.new("RGB", (1, 1), "white"), "PNG"), OK),
    }


def write(folder: Path) -> dict[str, tuple[Path, str | None]]:
    """Write every case into `folder`; name -> (path, expectation)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, (file_name, data, expect) in cases().items():
        path = folder / file_name
        path.write_bytes(data)
        written[name] = (path, expect)
    return written
