"""The API's typed functions (`app.api`) called directly: the same numbers as the library, one sentence for
bad input, and no file outside Gradio's upload folder is read."""

import shutil

import gradio as gr
import numpy as np
import pytest
from gradio.media import get_image
from gradio.processing_utils import get_upload_folder
from PIL import Image

from app import api, service
from app.maps import FAITHFULNESS
from vit_core.explain import ExplainOptions, explain


@pytest.fixture(scope="module")
def upload():
    """A photo as Gradio hands an upload to `gr.api` functions: a FileData dict inside its upload folder."""
    folder = __import__("pathlib").Path(get_upload_folder()) / "test-api-functions"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "lion.jpg"
    shutil.copy(get_image("lion.jpg"), path)
    yield {"path": str(path), "meta": {"_type": "gradio.FileData"}}
    shutil.rmtree(folder, ignore_errors=True)


def test_api_functions_match_the_library(upload):
    summary = api.analyze(upload, "bundled")
    assert len(summary["top5"]) == 5 and len(summary["layer_top5"]) == 6
    picture, payload = api.explain(upload, "bundled", "rollout", "", "mean", "", "", "max", 0.5, 0)
    analysis = service.analyze(upload["path"], "bundled")
    expected = explain(analysis.capture, "rollout", ExplainOptions(head_fusion="max", discard_ratio=0.5))
    assert np.allclose(payload["map"], expected, atol=1e-6)
    assert Image.open(picture.path).format == "PNG"
    _, query = api.explain(upload, "bundled", "attention", "3", "2", "4,5")
    expected = explain(analysis.capture, "attention", ExplainOptions(layer=3, head=2, query_patch=(4, 5)))
    assert np.allclose(query["map"], expected, atol=1e-6)
    layers = api.layer_predictions_(upload, "bundled", 3)["layers"]
    assert len(layers) == 6 and len(layers[0]) == 3
    curves = api.faithfulness(upload, "bundled", "", 4)
    assert set(curves) == set(FAITHFULNESS) and len(curves["rollout"]["deletion"]["probs"]) == 5
    _, lrp = api.explain(upload, "bundled", "attnlrp", target="3")
    expected = explain(analysis.capture, "attnlrp", model=service.shared_model("bundled").model, target=3)
    assert np.allclose(lrp["map"], expected, atol=1e-5)  # signed relevance, not normalised
    for method, match in [("flow", "max-flow per token"), ("nope", "Unknown method")]:
        with pytest.raises(gr.Error, match=match):
            api.explain(upload, "bundled", method)
    with pytest.raises(gr.Error, match="ROW,COL"):
        api.explain(upload, "bundled", "attention", "", "mean", "x")


@pytest.mark.parametrize("path", ["/etc/passwd", "/nonexistent/file.png", __file__])
def test_no_file_outside_the_upload_folder_is_read(path):
    with pytest.raises(gr.Error) as refused:
        api.analyze({"path": path}, "bundled")
    assert "upload" in refused.value.message.lower() and path not in refused.value.message
