"""Real models for the page's handlers: the bundled model and a small random timm ViT in our file format."""

import pytest

from app import service


@pytest.fixture(autouse=True)
def fresh_cache():
    """Each test starts with nothing analysed, so model-run counts are its own."""
    service.CACHE.clear()


class FakeSelect:
    """What Gradio passes to a .select handler on an image: `index` = [x, y] in the image's pixels."""

    def __init__(self, index):
        self.index = index
