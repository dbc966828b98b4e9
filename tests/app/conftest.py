"""Real models for the page's handlers: the bundled model and a small random timm ViT in our file format."""

import functools

import pytest

from app import service


@pytest.fixture(autouse=True)
def fresh_cache():
    """Each test starts with nothing analysed, so model-run counts are its own."""
    service.CACHE.clear()


@pytest.fixture(autouse=True)
def pickled_model_runs(monkeypatch):
    """Every model run crosses a pickle round trip, as on a ZeroGPU Space (a forked worker fed through a
    queue): arguments, results and errors must pickle, hold no model and stay small. Yields the
    (what, bytes) of each crossing."""
    crossings = []
    monkeypatch.setattr(service, "GPU_WRAPPER", functools.partial(service.pickled, record=crossings))
    return crossings


class FakeSelect:
    """What Gradio passes to a .select handler on an image: `index` = [x, y] in the image's pixels."""

    def __init__(self, index):
        self.index = index
