"""ShapeScenes: deterministic, label-independent nuisances, an exact answer key."""

import colorsys

import numpy as np
import pytest
from PIL import Image

from vit_core.scenes import AREA_RANGE, CLASSES, MAX_RADIUS, SIZE, _unit_area, scene, scene_batch


@pytest.fixture(scope="module")
def scenes():
    return scene_batch(seed=123, start=0, count=600)


def test_same_seed_same_bytes_other_seed_other_bytes():
    a, b = scene(7, 42), scene(7, 42)
    assert a.image.tobytes() == b.image.tobytes() and a.label == b.label and np.array_equal(a.mask, b.mask)
    assert scene(8, 42).image.tobytes() != a.image.tobytes()
    assert scene(7, 43).image.tobytes() != a.image.tobytes()


def test_scene_format(scenes):
    first = scenes[0]
    assert first.image.shape == (SIZE, SIZE, 3) and first.image.dtype == np.uint8
    assert first.mask.shape == (SIZE, SIZE) and first.mask.dtype == bool
    assert len(CLASSES) >= 8 and set(s.label for s in scenes) == set(range(len(CLASSES)))


def test_target_covers_5_to_30_percent_and_always_fits(scenes):
    fractions = np.array([s.mask.mean() for s in scenes])
    assert fractions.min() >= 0.05 and fractions.max() <= 0.30
    for name in CLASSES:  # every class reaches the top of the range without leaving the image
        assert (AREA_RANGE[1] / _unit_area(name)) ** 0.5 <= MAX_RADIUS / 1.05


def _target_stats(s):
    ys, xs = np.nonzero(s.mask)
    mean_rgb = s.image[s.mask].mean(axis=0) / 255
    hue = colorsys.rgb_to_hsv(*mean_rgb)[0]
    return s.mask.mean(), xs.mean() / SIZE, ys.mean() / SIZE, hue


def test_area_position_and_hue_carry_no_label_information(scenes):
    stats = np.array([_target_stats(s) for s in scenes])  # [n, 4]
    labels = np.array([s.label for s in scenes])
    overall_mean, overall_std = stats.mean(axis=0), stats.std(axis=0)
    for label in range(len(CLASSES)):
        group = stats[labels == label]
        # each class's mean within 4 standard errors of the overall mean, for every nuisance
        standard_error = overall_std / np.sqrt(len(group))
        assert np.all(np.abs(group.mean(axis=0) - overall_mean) < 4 * standard_error), CLASSES[label]


def test_target_is_brighter_than_the_background_around_it(scenes):
    luma = np.array([0.299, 0.587, 0.114])
    for s in scenes[:100]:
        grown = np.asarray(Image.fromarray(s.mask).filter(__import__("PIL.ImageFilter").ImageFilter.MaxFilter(7)))
        ring = grown & ~s.mask
        assert (s.image[s.mask] @ luma).mean() > (s.image[ring] @ luma).mean()


def test_clutter_is_present_outside_the_target(scenes):
    # Gradient backgrounds are smooth; clutter leaves sharp edges outside the target.
    for s in scenes[:100]:
        gray = s.image.astype(float).mean(axis=2)
        edges = np.abs(np.diff(gray, axis=1))[:, :] > 25
        outside = ~s.mask[:, 1:] & ~s.mask[:, :-1]
        assert (edges & outside).sum() > 5
