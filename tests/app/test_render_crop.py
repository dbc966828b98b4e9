"""Marking the part of a picture the model sees: inside untouched, outside dimmed, the box outlined."""

import numpy as np
import pytest
from PIL import Image

from app.render import mark_crop
from vit_core import DataConfig
from vit_core.images import model_view


@pytest.fixture
def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(60, 256, (90, 160, 3), dtype=np.uint8), "RGB")  # 16:9


def test_inside_is_untouched_outside_is_dimmed_and_the_box_is_outlined(photo):
    marked = np.asarray(mark_crop(photo, (35, 0, 125, 90)))
    original = np.asarray(photo).astype(int)
    assert marked.shape == original.shape
    assert np.array_equal(marked[:, 35:125], original[:, 35:125])  # exactly the pixels the model gets
    assert np.allclose(marked[:, :30], original[:, :30] * 0.4, atol=1)  # dimmed by 60%
    assert np.allclose(marked[:, 130:], original[:, 130:] * 0.4, atol=1)
    assert (marked[:, 33] == 255).all() and (marked[:, 125] == 255).all()  # a white line just outside each cut side


def test_a_thumbnail_takes_the_original_box(photo):
    original_size = (1600, 900)  # `photo` stands for a 10x smaller thumbnail of this picture
    view = model_view(original_size, DataConfig(input_size=(3, 96, 96), crop_pct=1.0))
    assert view.box == pytest.approx((350, 0, 1250, 900), abs=2)  # the resize truncates 170.7 to 170
    marked = np.asarray(mark_crop(photo, view.box, source_size=original_size))
    assert np.array_equal(marked[:, 35:125], np.asarray(photo)[:, 35:125])
    assert marked[:, :30].mean() < 0.5 * np.asarray(photo)[:, :30].mean()


def test_any_mode_comes_back_rgb_of_the_same_size():
    gray = Image.new("L", (40, 30), 200)
    marked = mark_crop(gray, (10, 0, 30, 30))
    assert marked.mode == "RGB" and marked.size == (40, 30)
