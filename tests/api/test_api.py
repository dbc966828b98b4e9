"""The named endpoints, driven with gradio_client against a live server (the README's example, for real)."""

import json

import numpy as np
import pytest
from gradio.media import get_image
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from tests.corpus import write

pytestmark = pytest.mark.api


@pytest.fixture(scope="module")
def client(live_server):
    return Client(live_server.url, verbose=False)


def test_analyze_explain_layers_and_faithfulness(client):
    photo = handle_file(get_image("cheetah1.jpg"))
    summary = client.predict(photo, "bundled", api_name="/analyze")
    assert len(summary["top5"]) == 5 and abs(sum(p["probability"] for p in summary["top5"]) - 1) < 0.5
    assert summary["layers"] == 6 and np.asarray(summary["attention_entropy_nats"]).shape == (6, 6)

    maps = {}
    for method in ["attention", "rollout", "grad_rollout", "chefer", "gradcam"]:
        picture, payload = client.predict(
            photo, "bundled", method, "", "mean", "", "", "mean", 0, 0, api_name="/explain"
        )
        assert Image.open(picture).size[1] >= 96 and payload["method"] == method
        maps[method] = np.asarray(payload["map"])
        assert maps[method].shape == (12, 12)
    assert not np.allclose(maps["rollout"], maps["gradcam"])
    _, queried = client.predict(photo, "bundled", "attention", "2", "1", "3,4", "", "", 0, 0, api_name="/explain")
    assert not np.allclose(queried["map"], maps["attention"])
    target = summary["top5"][1]["label"]  # a class by name
    _, second = client.predict(photo, "bundled", "chefer", "", "", "", target, "", 0, 0, api_name="/explain")
    assert not np.allclose(second["map"], maps["chefer"])

    layers = client.predict(photo, "bundled", 3, api_name="/layer_predictions")["layers"]
    assert len(layers) == 6 and layers[-1][0]["index"] == summary["top5"][0]["index"]
    curves = client.predict(photo, "bundled", "", 5, api_name="/faithfulness")
    from app.maps import FAITHFULNESS

    assert set(curves) == set(FAITHFULNESS) and all(len(c["deletion"]["probs"]) == 6 for c in curves.values())
    json.dumps(curves)  # plain JSON


def test_bad_inputs_get_one_sentence_and_the_server_keeps_serving(client, live_server, tmp_path):
    good = handle_file(get_image("lion.jpg"))
    for name, (path, expect) in write(tmp_path).items():
        if expect is None:
            summary = client.predict(handle_file(str(path)), "bundled", api_name="/analyze")
            assert len(summary["top5"]) == 5, name
            continue
        with pytest.raises(AppError) as error:
            client.predict(handle_file(str(path)), "bundled", api_name="/analyze")
        message = str(error.value)
        assert __import__("re").search(expect, message), (name, message)
        assert "Traceback" not in message and "\n" not in message.strip(), (name, message)
        assert live_server.alive()
        assert len(client.predict(good, "bundled", api_name="/analyze")["top5"]) == 5  # the next good request
    for args, match in [
        ((good, "no-such-model"), "nknown model"),
        ((good, "bundled", "flow", "", "", "", "", "", 0, 0), "max-flow per token"),  # 145 tokens: over the limit
        ((good, "bundled", "attention", "99", "", "", "", "", 0, 0), "out of range"),
    ]:
        with pytest.raises(AppError, match=match):
            client.predict(*args, api_name="/analyze" if len(args) == 2 else "/explain")
    assert len(client.predict(good, "bundled", api_name="/analyze")["top5"]) == 5


def test_uploads_are_capped_by_max_file_size(live_server, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\0" * (51 * 2**20))  # over the 50 MB cap
    with pytest.raises(Exception, match="(?i)size|large|413"):
        Client(live_server.url, verbose=False).predict(handle_file(str(big)), "bundled", api_name="/analyze")
    assert live_server.alive()
