"""A public server (`VIT_PUBLIC=1`, as on a Space): only the catalog's and the operator's models, through the API."""

import pytest
from gradio.media import get_image
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from vit_core.zoo import BUNDLED_PATH

pytestmark = pytest.mark.api


@pytest.fixture(scope="module")
def public_server(tmp_path_factory, timm_tiny_file):
    from tests.live import start, stop

    server = start(tmp_path_factory.mktemp("public") / "server.log", VIT_PUBLIC="1", VIT_MODELS=timm_tiny_file)
    yield server
    stop(server)


def test_only_offered_models_run_and_every_other_name_gets_the_same_sentence(public_server, timm_tiny_file, tmp_path):
    client = Client(public_server.url, verbose=False)
    photo = handle_file(get_image("lion.jpg"))
    refused = [
        str(BUNDLED_PATH),  # an existing file, by absolute path
        str(tmp_path / "missing.safetensors"),
        "hf:/etc",
        "hf:/nonexistent",
        "timm:vit_huge_patch14_224",
    ]
    messages = set()
    for name in refused:
        with pytest.raises(AppError) as error:
            client.predict(photo, name, api_name="/analyze")
        messages.add(str(error.value))
    assert messages == {"This page runs only the models in its model menu; choose one of those."}
    assert public_server.alive()

    listed = client.predict(photo, timm_tiny_file, api_name="/analyze")  # the operator's model
    assert listed["layers"] == 12 and len(listed["top5"]) == 5
    bundled = client.predict(photo, "bundled", api_name="/analyze")
    assert bundled["layers"] == 6 and len(bundled["top5"]) == 5
    curves = client.predict(photo, "bundled", "", 4, api_name="/faithfulness")  # a gradient run too, pickled
    assert all(len(c["deletion"]["probs"]) == 5 for c in curves.values())
    log = public_server.log.read_text()
    assert log.count("Traceback") == log.count("Error: 'This page runs only the models") == len(refused), log[-3000:]
