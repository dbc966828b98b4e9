"""Real models for the page's handlers: the bundled model and a small random timm ViT in our file format."""

import pytest

from app import service
from vit_core.weights import save_vit
from vit_core.zoo import load_model


@pytest.fixture(autouse=True)
def fresh_cache():
    """Each test starts with nothing analysed, so model-run counts are its own."""
    service.CACHE.clear()


@pytest.fixture(scope="session")
def timm_tiny_file(tmp_path_factory) -> str:
    """timm's ViT-Ti/16 built without weights (random), converted and saved as a vit_core .safetensors."""
    loaded = load_model("timm:vit_tiny_patch16_224", random_weights=True)
    path = tmp_path_factory.mktemp("models") / "vit_tiny_random.safetensors"
    save_vit(path, loaded.model, loaded.data_config, loaded.labels)
    return str(path)


class FakeSelect:
    """What Gradio passes to a .select handler on an image: `index` = [x, y] in the image's pixels."""

    def __init__(self, index):
        self.index = index
