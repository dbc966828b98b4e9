"""The bad-image corpus: each file is converted properly or refused with one sentence."""

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from tests.corpus import encode, png_claiming
from vit_core import DataConfig, ViTConfig, VitCoreError, zoo
from vit_core.convert.from_hf import hf_data_config as processor_data_config
from vit_core.images import ModelView, load_image, model_view


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


# ---- large photos, draft decoding and decompression bombs -----------------------------------------
ROOT = Path(__file__).resolve().parents[2]


def noisy_photo(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """A JPEG (quality 85) of a colour ramp plus uniform noise: 4-5 pixels per byte, like a real noisy photo.

    Built in an RGBX buffer that Pillow shares rather than copies: the 108-MP one costs 430 MB for a moment."""
    rng = np.random.default_rng(seed)
    pixels = np.empty((height, width, 4), np.uint8)  # [H, W, RGBX]
    ramp = (np.arange(width) * 160 // width).astype(np.uint8)[None, :, None] + np.array([0, 40, 80, 0], np.uint8)
    for top in range(0, height, 1000):
        rows = pixels[top : top + 1000]
        rows[:] = rng.integers(0, 32, rows.shape, dtype=np.uint8)
        rows += ramp
    Image.frombuffer("RGBX", (width, height), pixels, "raw", "RGBX", 0, 1).save(path, "JPEG", quality=85)
    return path


def jpeg_claiming(width: int, height: int) -> bytes:
    """A valid 16x16 JPEG whose frame header claims another size."""
    data = bytearray(encode(Image.new("RGB", (16, 16), "gray"), "JPEG"))
    at = data.index(b"\xff\xc0") + 5  # SOF0: length (2), precision (1), then height and width
    data[at : at + 4] = struct.pack(">HH", height, width)
    return bytes(data)


def flat_bilevel_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of one colour, deflated row by row (the raw rows never sit in memory at once)."""
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.fixture
def no_decoding(monkeypatch):
    """Any attempt to decode pixels fails the test: refusals must come from the header alone."""

    def refuse(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow warns above 120 MP too
@pytest.mark.parametrize(
    "data,key",
    [
        (png_claiming(13_000, 10_000), "image_too_many_pixels"),  # 130 MP
        (jpeg_claiming(20_000, 20_000), "image_bomb"),  # 400 MP: Pillow itself refuses the header
        (png_claiming(20_000, 20_000), "image_bomb"),
        (flat_bilevel_png(10_000, 10_000), "image_too_compressed"),  # 100 MP in ~32 KB
        (jpeg_claiming(8_000, 6_000), "image_too_compressed"),  # 48 MP in 600 bytes
    ],
)
def test_bombs_are_refused_from_the_header(data, key, no_decoding):
    started = time.perf_counter()
    with pytest.raises(VitCoreError) as error:
        load_image(data, name="bomb.png")
    assert error.value.key == key and str(error.value).startswith("bomb.png ") and "\n" not in str(error.value)
    assert time.perf_counter() - started < 0.5


def test_flat_pictures_are_not_bombs():
    """Deflate stops at ~1032:1, so even a one-colour RGB PNG holds at most ~344 pixels per byte."""
    flat = encode(Image.new("RGB", (6_000, 4_000), (30, 90, 200)), "PNG")  # 24 MP, ~300 pixels per byte
    assert load_image(flat).size == (6_000, 4_000)
    screenshot = encode(Image.new("1", (4_000, 4_000), 1), "PNG")  # 16 MP, far past 1,000 px/byte: no ratio test
    assert load_image(screenshot).size == (4_000, 4_000)


def test_up_to_twelve_megapixels_decodes_exactly_as_pillow_does(tmp_path):
    path = noisy_photo(tmp_path / "12mp.jpg", 4_000, 3_000)  # exactly 12 MP: not above the draft threshold
    loaded = load_image(path, min_size=224)
    assert np.array_equal(np.asarray(loaded), np.asarray(Image.open(path).convert("RGB")))


CHILD = r"""
import json, resource, sys
from pathlib import Path
import torch
from vit_core.images import load_image
from vit_core.zoo import load_model

def rss():  # the resident set now, in bytes
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()

def peak():  # the most the process has held since the last reset (VmHWM), in bytes
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) * 1024

loaded = load_model("bundled")
side = max(loaded.data_config.input_size[1:])
idle = rss()
Path("/proc/self/clear_refs").write_text("5")  # the peak starts again from now (imports may have peaked)
image = load_image(sys.argv[1], min_size=side)
drafted = loaded.preprocess(image)
used = peak() - idle
full = loaded.preprocess(load_image(sys.argv[1]))  # after the measurement: every pixel decoded
print(json.dumps({"idle": idle, "used": used, "size": image.size, "mode": image.mode, "side": side,
                  "diff_mean": float((drafted - full).abs().mean()), "diff_max": float((drafted - full).abs().max())}))
"""


@pytest.mark.slow
def test_a_108_megapixel_photo_decodes_in_draft_mode_within_memory(tmp_path):
    path = noisy_photo(tmp_path / "108mp.jpg", 12_000, 9_000)
    assert 3 < 12_000 * 9_000 / path.stat().st_size < 10  # pixels per byte of a real noisy photo
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    child = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, env=env, cwd=ROOT)
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout)
    width, height = report["size"]
    assert report["mode"] == "RGB" and min(width, height) >= 2 * report["side"]
    assert abs(width / height - 12_000 / 9_000) < 0.01 and width < 12_000  # drafted, not fully decoded
    print(f"peak above idle: {report['used'] / 2**20:.0f} MiB")
    assert report["used"] < 2**30, f"peak {report['used'] / 2**20:.0f} MiB above idle"
    assert report["diff_mean"] < 0.02  # the model's input barely changes (normalised units; 1/255 = 0.008)


# ---- what the model sees of an image ----------------------------------------------------------------
def coordinate_image(width: int, height: int) -> Image.Image:
    """Red = x and green = y of each pixel (exact up to 256 pixels): a tensor's pixel says where it came from."""
    red = np.broadcast_to(np.arange(width, dtype=np.uint8)[None, :], (height, width))
    green = np.broadcast_to(np.arange(height, dtype=np.uint8)[:, None], (height, width))
    return Image.fromarray(np.stack([red, green, np.zeros_like(red)], axis=-1), "RGB")


def hf_data_config(tmp_path: Path, processor: dict) -> DataConfig:
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps(processor))
    return processor_data_config(path, ViTConfig())


def torchvision_view(name: str):
    """torchvision's own transform and the data config the zoo derives from it (no weights needed)."""
    import torchvision

    transform = torchvision.models.get_model_weights(name).DEFAULT.transforms()
    crop, resize = transform.crop_size[0], transform.resize_size[0]
    return DataConfig(input_size=(3, crop, crop), crop_pct=crop / resize, crop_mode="center"), transform


@pytest.fixture(scope="module")
def transforms(tmp_path_factory):
    """name -> (data config, transform) for every kind of preprocessing the zoo produces."""
    folder = tmp_path_factory.mktemp("processors")
    found = {}
    for name in ("bundled", "timm:vit_tiny_patch16_224"):
        loaded = zoo.load_model(name, random_weights=name != "bundled")
        found[name] = (loaded.data_config, loaded.transform)
    processors = {
        "hf squash": {"size": {"height": 224, "width": 224}},  # google/vit-base-patch16-224
        "hf squash + crop": {"size": {"height": 256, "width": 256}, "do_center_crop": True, "crop_size": 224},
        "hf shortest edge + crop": {"size": {"shortest_edge": 256}, "do_center_crop": True, "crop_size": 224},
    }
    for name, processor in processors.items():
        (folder / name).mkdir()
        data_config = hf_data_config(folder / name, processor)
        found[name] = (data_config, zoo.timm_transform(data_config))
    for name in ("vit_b_16", "vit_l_16"):  # resize 256 / 242, crop 224
        found[f"torchvision:{name}"] = torchvision_view(name)
    timm_border = DataConfig(input_size=(3, 224, 224), crop_pct=0.9, crop_mode="border")
    found["timm border"] = (timm_border, zoo.timm_transform(timm_border))
    return found


@pytest.mark.parametrize(
    "name",
    [
        "bundled",
        "timm:vit_tiny_patch16_224",
        "hf squash",
        "hf squash + crop",
        "hf shortest edge + crop",
        "torchvision:vit_b_16",
        "torchvision:vit_l_16",
        "timm border",
    ],
)
@pytest.mark.parametrize("size", [(256, 128), (100, 250), (200, 200), (256, 250), (256, 64)])
def test_model_view_matches_the_real_transform(transforms, name, size):
    data_config, transform = transforms[name]
    width, height = size
    view = model_view(size, data_config)
    pixels = transform(coordinate_image(width, height))  # [3, h, w], normalised
    std, mean = torch.tensor(data_config.std)[:, None, None], torch.tensor(data_config.mean)[:, None, None]
    seen = (pixels * std + mean) * 255  # red = source x, green = source y
    _, rows, cols = seen.shape
    left, top, right, bottom = view.box or (0, 0, width, height)
    step_x, step_y = (right - left) / cols, (bottom - top) / rows  # source pixels per input pixel
    # the centre of the input's first and last pixel along the middle row and column, in source pixels
    predicted_x = (left + step_x / 2 - 0.5, right - step_x / 2 - 0.5)
    predicted_y = (top + step_y / 2 - 0.5, bottom - step_y / 2 - 0.5)
    measured_x = (float(seen[0, rows // 2, 0]), float(seen[0, rows // 2, -1]))
    measured_y = (float(seen[1, 0, cols // 2]), float(seen[1, -1, cols // 2]))
    padded = name == "timm border" and width != height  # the short side is padded with the mean, not an image
    tolerance_x, tolerance_y = max(1.5, step_x), max(1.5, step_y)  # one input pixel, or the edge's blur
    if not (padded and width < height):
        assert measured_x == pytest.approx(predicted_x, abs=tolerance_x), (view, measured_x)
    if not (padded and height < width):
        assert measured_y == pytest.approx(predicted_y, abs=tolerance_y), (view, measured_y)
    shown = (right - left) * (bottom - top) / (width * height)
    if view.box is None:  # "nothing cut" allows the resize's rounding: one resized pixel per side
        assert view.fraction_shown == pytest.approx(1, abs=0.03)
    else:
        assert view.fraction_shown == pytest.approx(shown) and view.fraction_shown < 1
    assert view.squashed == (data_config.crop_mode == "squash" and abs(width / height - 1) > 0.01)  # square inputs


def test_model_view_says_what_is_cut_and_what_is_squashed(transforms):
    wide = (1600, 900)
    bundled, _ = transforms["bundled"]
    view = model_view(wide, bundled)  # shortest side to 96, centre crop 96x96
    assert view.box == pytest.approx((350, 0, 1250, 900), abs=10) and not view.squashed
    assert view.fraction_shown == pytest.approx(900 / 1600, abs=0.01)
    squash, _ = transforms["hf squash"]
    assert model_view(wide, squash) == ModelView(None, True, 1.0)  # everything, but squeezed to a square
    assert model_view((500, 500), squash) == ModelView(None, False, 1.0)
    tiny, _ = transforms["timm:vit_tiny_patch16_224"]
    square = model_view((500, 500), tiny)  # crop_pct 0.9 trims a 5% frame even from a square
    assert square.box == pytest.approx((25, 25, 475, 475), abs=2) and square.fraction_shown == pytest.approx(0.81, 0.01)
