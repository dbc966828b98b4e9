"""The page with an image–text model (a tiny random CLIP saved with a tiny tokenizer): the labels and prompt
boxes, zero-shot labels in the top-5 without another model run, prompt maps in the Overview, the label set
in the analysis key, and the API's `labels` and `text` parameters."""

import shutil
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from gradio.processing_utils import get_upload_folder
from PIL import Image

from app import api, panel, service
from app.maps import grid_map
from app.tabs import downloads, overview
from tests.app.helpers import NO_PROGRESS, STYLE
from tests.clip_models import tiny_hf_clip
from vit_core import capture, explain
from vit_core.images import load_image


@pytest.fixture(scope="module")
def clip_model(tmp_path_factory) -> str:
    return f"hf:{tiny_hf_clip(tmp_path_factory.mktemp('clip'))}"


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    folder = Path(get_upload_folder()) / "test-clip-app"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "scene.png"
    Image.fromarray((np.random.default_rng(1).random((72, 90, 3)) * 255).astype(np.uint8)).save(path)
    yield str(path)
    shutil.rmtree(folder, ignore_errors=True)


def count_runs(monkeypatch) -> list:
    runs = []
    original = service.run_capture

    def counted(*args, **kwargs):
        runs.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(service, "run_capture", counted)
    return runs


def outcome(image, model, labels="", prompt="", session=None):
    return panel.outcome(image, model, session, labels, prompt, progress=NO_PROGRESS)[0].values()


def test_labels_and_prompt_boxes_appear_with_an_image_text_model(clip_model, image):
    values = outcome(image, clip_model)
    labels_box, prompt_box = values[8:10]  # after the session, top-5, target, summary, model, note, seen, image
    assert labels_box.visible is True and prompt_box.visible is True
    assert "type labels" in next(iter(values[1]))  # no labels yet: the top-5 says what to do
    values = outcome(image, "bundled")
    assert values[8].visible is False and values[9].visible is False


def test_zero_shot_labels_fill_the_top5_and_a_new_label_set_runs_no_model(monkeypatch, clip_model, image):
    runs = count_runs(monkeypatch)
    session, predictions, target = outcome(image, clip_model, "a dog, a cat, a red bus")[:3]
    assert len(runs) == 1 and session["labels"] == "a dog, a cat, a red bus"
    assert {name.rsplit(" (", 1)[0] for name in predictions} == {"a dog", "a cat", "a red bus"}
    assert sum(predictions.values()) == pytest.approx(1.0, abs=1e-5)
    loaded = service.shared_model(clip_model)
    head = loaded.text.head("a dog, a cat, a red bus")
    expected = capture(loaded.model, loaded.preprocess(load_image(image)), zero_shot=head).probs
    shown = {name.rsplit(" (", 1)[0]: p for name, p in predictions.items()}
    assert shown == pytest.approx(dict(zip(head.labels, expected.tolist(), strict=True)), abs=1e-5)
    other, predictions, _ = outcome(image, clip_model, "a tree, a house")[:3]
    assert len(runs) == 1  # the image embedding was captured already: only the new labels were embedded
    assert other["key"] != session["key"] and other["key"].startswith(session["key"].rsplit("|labels:", 1)[0])
    assert len(predictions) == 2
    analysis = panel.analysis_of(other)
    assert analysis.capture.layer_logits.shape == (2, 2)  # the logit lens reads the labels too


def test_a_prompt_becomes_the_target_and_the_overview_shows_its_maps(monkeypatch, clip_model, image):
    session, _, target = outcome(image, clip_model, "", "a red bus")[:3]
    assert target.value == "a red bus"
    pictures = overview.draw(session, "a red bus", STYLE)
    assert all(picture["value"] is not None for picture in pictures)  # chefer and gradcam explain the phrase
    analysis = panel.analysis_of(session)
    loaded = service.shared_model(clip_model)
    expected = explain(capture(loaded.model, analysis.pixels, target=loaded.text.target("a red bus")), "chefer")
    assert np.allclose(grid_map(analysis, "chefer", "a red bus"), expected, atol=1e-6)
    other = grid_map(analysis, "chefer", "a green tree")
    assert not np.allclose(other, expected)  # the map changes with the prompt
    assert panel.use_prompt("a green tree", session) == "a green tree"
    without = overview.draw(session, None, STYLE)  # no labels, no prompt: the class-specific maps stay empty
    assert without[0]["value"] is not None and without[2]["value"] is None and without[3]["value"] is None
    # the Downloads leave out what the Overview leaves empty: a class-specific map with nothing to explain
    names = lambda files: [path.rsplit("/", 1)[-1] for path in files if path.endswith(".png")]  # noqa: E731
    assert names(downloads.prepare(session, None, STYLE, ["chefer", "rollout"])) == ["rollout.png"]
    assert names(downloads.prepare(session, "a red bus", STYLE, ["chefer", "rollout"])) == ["chefer.png", "rollout.png"]


def test_bad_labels_and_prompts_are_one_sentence(clip_model, image):
    summary = outcome(image, clip_model, "a dog,,a cat")[3]
    assert "label 2 is empty" in summary.lower()
    summary = outcome(image, clip_model, "", "word " * 40)[3]
    assert "at most 24 tokens" in summary
    with pytest.raises(gr.Error, match="prompt is empty|at most 24"):
        panel.use_prompt("word " * 40, {"model": clip_model})
    # a model without a text tower hides the boxes, so what they still hold is not read
    assert "⚠️" not in outcome(image, "bundled", "a dog, a cat", "a red bus")[3]


def test_the_api_takes_labels_and_text(clip_model, image):
    upload = {"path": image, "meta": {"_type": "gradio.FileData"}}
    summary = api.analyze(upload, clip_model, "a dog, a cat")
    assert {row["label"] for row in summary["top5"]} == {"a dog", "a cat"}
    _, payload = api.explain(upload, clip_model, "chefer", "", "mean", "", "", "mean", 0.0, 0, "a red bus")
    loaded = service.shared_model(clip_model)
    pixels = loaded.preprocess(load_image(image))
    expected = explain(capture(loaded.model, pixels, target=loaded.text.target("a red bus")), "chefer")
    assert payload["text"] == "a red bus" and np.allclose(payload["map"], expected, atol=1e-6)
    with pytest.raises(gr.Error, match="no text tower"):
        api.explain(upload, "bundled", "chefer", text="a red bus")
    with pytest.raises(gr.Error, match="no text tower"):
        api.analyze(upload, "bundled", "a dog, a cat")


@pytest.fixture(scope="module")
def siglip_model(tmp_path_factory) -> str:
    from tests.clip_models import tiny_hf_siglip

    return f"hf:{tiny_hf_siglip(tmp_path_factory.mktemp('siglip'))}"


def test_a_siglip_model_gets_the_boxes_sigmoid_labels_and_prompt_maps(monkeypatch, siglip_model, image):
    """SigLIP: each label's probability is its own sigmoid (they need not add up to 1), in the top-5 and the
    logit lens; the raw attention of the Overview is the attention pool's; a prompt's maps start from it."""
    values = outcome(image, siglip_model)
    assert values[8].visible is True and values[9].visible is True
    runs = count_runs(monkeypatch)  # the image was captured above: labels only meet its embedding
    session, predictions = outcome(image, siglip_model, "a dog, a cat, a red bus")[:2]
    loaded = service.shared_model(siglip_model)
    head = loaded.text.head("a dog, a cat, a red bus")
    result = capture(loaded.model, loaded.preprocess(load_image(image)), zero_shot=head)
    assert result.activation == "sigmoid"
    shown = {name.rsplit(" (", 1)[0]: p for name, p in predictions.items()}
    assert shown == pytest.approx(dict(zip(head.labels, result.probs.tolist(), strict=True)), abs=1e-5)
    outcome(image, siglip_model, "a tree, a house")
    assert runs == []  # label sets read the captured image embedding: no model run
    analysis = panel.analysis_of(session)
    assert analysis.capture.activation == "sigmoid"
    session, _, target = outcome(image, siglip_model, "", "a red bus")[:3]
    pictures = overview.draw(session, "a red bus", STYLE)
    assert all(picture is not None for picture in pictures)
    analysis = panel.analysis_of(session)
    assert np.allclose(grid_map(analysis, "attention", None), explain(analysis.capture, "attention"))
    expected = explain(capture(loaded.model, analysis.pixels, target=loaded.text.target("a red bus")), "chefer")
    assert np.allclose(grid_map(analysis, "chefer", "a red bus"), expected, atol=1e-6)
