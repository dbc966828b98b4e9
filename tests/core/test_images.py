"""The bad-image corpus: each file is converted properly or refused with one sentence."""

import numpy as np
import pytest
from PIL import Image

from tests.corpus import encode, png_claiming
from vit_core import VitCoreError
from vit_core.images import load_image


@pytest.mark.parametrize(
    "data,match",
    [
        (b"", "is empty"),
        (b"hello, I am text", "is not an image file"),
        (encode(Image.new("RGB", (64, 64), "red"), "PNG")[:60], "truncated or corrupt"),
        (encode(Image.new("RGB", (300, 300), "red"), "JPEG")[:400], "truncated or corrupt"),
        (png_claiming(100_000, 100_000), "too large|MP"),
        (encode(Image.new("RGB", (1000, 10)), "PNG"), "aspect ratio"),
    ],
)
def test_refused_with_one_sentence(data, match):
    with pytest.raises(VitCoreError, match=match) as error:
        load_image(data, name="upload.bin")
    assert "\n" not in str(error.value) and str(error.value).endswith(".")


def test_missing_file(tmp_path):
    with pytest.raises(VitCoreError, match="does not exist"):
        load_image(tmp_path / "nope.png")


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits():
    values = np.full((8, 8), 65535 // 2, dtype=np.uint16)
    image = load_image(encode(Image.fromarray(values), "PNG"))
    assert image.mode == "RGB" and abs(int(np.asarray(image)[0, 0, 0]) - 127) <= 1


def test_cmyk_palette_alpha_and_gray_become_rgb():
    cmyk = load_image(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"))
    assert np.asarray(cmyk)[0, 0, 0] > 200 and np.asarray(cmyk)[0, 0, 1] < 60  # red
    transparent = Image.new("P", (8, 8), 0)
    transparent.putpalette([0, 0, 0] * 256)
    transparent.info["transparency"] = 0
    assert np.asarray(load_image(encode(transparent, "PNG"))).min() == 255  # fully transparent -> white
    rgba = load_image(encode(Image.new("RGBA", (8, 8), (0, 0, 255, 128)), "PNG"))
    assert tuple(np.asarray(rgba)[0, 0]) == pytest.approx((127, 127, 255), abs=1)
    assert load_image(encode(Image.new("L", (8, 8), 90), "PNG")).mode == "RGB"


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "blue")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert tuple(np.asarray(load_image(data))[0, 0]) == (255, 0, 0)


def test_exif_rotation_is_applied():
    image = Image.new("RGB", (40, 20), "green")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    assert load_image(encode(image, "JPEG", exif=exif)).size == (20, 40)


def test_one_pixel_image_is_accepted():
    assert load_image(encode(Image.new("RGB", (1, 1), "white"), "PNG")).size == (1, 1)
