"""Every tab's handlers on real models: analyse once, then redraw from the cache without a model run."""

import json

import gradio as gr
import numpy as np
import pytest
from gradio.media import get_image
from PIL import Image

from app import handlers, service, ui
from tests.app.conftest import FakeSelect
from tests.corpus import write
from vit_core.explain import explain

STYLE = (0.55, "Viridis", "bilinear", False, True)
NO_PROGRESS = lambda *args, **kwargs: None  # noqa: E731


def analyzed(image, model):
    outputs = handlers.on_analyze(image, model, progress=NO_PROGRESS)
    return outputs[0], outputs


@pytest.fixture
def runs(monkeypatch):
    """Counts model runs (forward, or forward + backward) through the service."""
    calls = []
    real = service.run_capture

    def counted(model_name, pixels, target=None):
        calls.append(target)
        return real(model_name, pixels, target)

    monkeypatch.setattr(service, "run_capture", counted)
    return calls


@pytest.mark.parametrize("model", ["bundled", "timm-tiny"])
def test_every_view_redraws_from_the_cache(model, timm_tiny_file, runs):
    name = timm_tiny_file if model == "timm-tiny" else "bundled"
    image = get_image("lion.jpg")
    session, outputs = analyzed(image, name)
    analysis = service.CACHE.get(session["key"])
    layers, heads = analysis.capture.num_layers, analysis.capture.num_heads
    top5 = outputs[1]
    assert len(top5) == 5 and abs(sum(top5.values()) - sum(sorted(analysis.capture.probs)[-5:])) < 1e-5
    assert (
        handlers.setup_heads(session)[0].maximum == layers - 1 and handlers.setup_tokens(session)[0].maximum == layers
    )
    assert handlers.setup_anatomy(session)[1].choices[-1][1] == str(heads - 1)
    assert runs == [None]  # one forward pass

    overview = handlers.draw_overview(session, None, *STYLE)
    assert len(overview) == 4 and all(isinstance(p, Image.Image) for p in overview)
    assert runs == [None, int(np.argmax(analysis.capture.probs))]  # one backward for the top class, lazily

    heads_view = handlers.draw_heads(session, layers - 1, "mean", None, 1.0, *STYLE)
    assert len(heads_view[1]) == heads and heads_view[2].size[1] >= layers * handlers.THUMB
    other_layer = handlers.draw_heads(session, 0, "mean", None, 1.0, *STYLE)
    assert not np.array_equal(np.asarray(heads_view[0]), np.asarray(other_layer[0]))
    queried = handlers.draw_heads(session, layers - 1, "0", (1, 2), 0.5, *STYLE)
    assert "row 1, col 2" in queried[3] and not np.array_equal(np.asarray(queried[0]), np.asarray(heads_view[0]))

    for method in handlers.MAP_METHODS:
        assert isinstance(handlers.draw_method(session, method, "max", 0.5, 1, None, *STYLE), Image.Image)
    heatmap, line, scatter = handlers.draw_layers(session, None)
    assert len(heatmap.data[0].y) == layers and len(scatter.data[0].x) == layers * heads
    pca, norms, similarity, positions = handlers.draw_tokens(session, 2, (1, 1), *STYLE)
    assert pca.size[1] == similarity.size[1] == positions.size[1] == handlers._view(analysis).size[1]
    assert len(norms.data[0].y) == analysis.capture.tokens.shape[1]
    assert runs == [None, int(np.argmax(analysis.capture.probs))]  # still no further model run

    # the same image again (another session, or the same one) reuses the analysis
    again, _ = analyzed(image, name)
    assert again["key"] == session["key"] and len(runs) == 2


def test_class_specific_maps_follow_the_target_and_each_target_runs_once(runs):
    session, _ = analyzed(get_image("bus.png"), "bundled")
    analysis = service.CACHE.get(session["key"])
    first, second = np.argsort(-analysis.capture.probs)[:2]
    chefer_top = handlers.draw_method(session, "chefer", "mean", 0.0, 0, int(first), *STYLE)
    chefer_second = handlers.draw_method(session, "chefer", "mean", 0.0, 0, int(second), *STYLE)
    assert not np.array_equal(np.asarray(chefer_top), np.asarray(chefer_second))
    handlers.draw_overview(session, int(second), *STYLE)
    handlers.draw_layers(session, int(second))
    assert runs == [None, int(first), int(second)]
    by_name = service.class_index(analysis, service.labels_of(analysis)[int(second)].upper())
    assert by_name == int(second)
    with pytest.raises(gr.Error, match="out of range"):
        handlers.draw_method(session, "chefer", "mean", 0.0, 0, 999, *STYLE)


def test_clicks_select_patches_and_heads():
    session, _ = analyzed(get_image("cheetah1.jpg"), "bundled")
    analysis = service.CACHE.get(session["key"])
    width, height = handlers._view(analysis).size
    rows, cols = analysis.capture.grid
    # the last patch's centre; a click on the colorbar (right of the image) changes nothing
    assert handlers.select_query(session, FakeSelect([width - 1, height - 1])) == (rows - 1, cols - 1)
    assert handlers.select_query(session, FakeSelect([width + 3, 5])) == gr.skip()
    cell = handlers.THUMB + 2
    assert handlers.select_thumbnail(session, FakeSelect([2 * cell + 5, 3 * cell + 5])) == (3, "2")
    assert handlers.select_gallery_head(FakeSelect(4)) == "4"
    assert handlers.select_token_patch(session, FakeSelect([0, 0])) == (0, 0)


def test_faithfulness_ablation_and_downloads(tmp_path):
    session, _ = analyzed(get_image("tower.jpg"), "bundled")
    plot, table = handlers.run_faithfulness(session, None, 6, progress=NO_PROGRESS)
    assert set(table) == set(handlers.MAP_METHODS) and len(plot.data) == 2 * len(handlers.MAP_METHODS)
    assert all(0 <= v["deletion_auc"] <= 1 and 0 <= v["insertion_auc"] <= 1 for v in table.values())
    text = handlers.run_ablation(session, 2, ["0", "3"], None)
    assert "heads 0, 3 zeroed" in text
    bars = handlers.run_importance(session, 2, None)
    assert len(bars.data[0].y) == 6
    with pytest.raises(gr.Error, match="at least one head"):
        handlers.run_ablation(session, 2, [], None)

    files = handlers.prepare_downloads(session, None, *STYLE)
    names = sorted(p.split("/")[-1] for p in files)
    assert names == ["attention.png", "capture.npz", "chefer.png", "gradcam.png", "results.json", "rollout.png"]
    saved = np.load(next(p for p in files if p.endswith(".npz")))
    analysis = service.CACHE.get(session["key"])
    assert np.array_equal(saved["attentions"], analysis.capture.attentions)
    results = json.loads(open(next(p for p in files if p.endswith(".json"))).read())
    assert results["top5"][0]["index"] == int(np.argmax(analysis.capture.probs))
    assert np.asarray(results["mean_attention_distance_px"]).shape == (6, 6)


def test_api_functions_match_the_library():
    image = get_image("lion.jpg")
    summary = handlers.api_analyze(image, "bundled")
    assert len(summary["top5"]) == 5 and len(summary["layer_top5"]) == 6
    picture, payload = handlers.api_explain(image, "bundled", "rollout", "", "mean", "", "", "max", 0.5, 0)
    analysis = service.analyze(image, "bundled")
    from vit_core.explain import ExplainOptions

    expected = explain(analysis.capture, "rollout", ExplainOptions(head_fusion="max", discard_ratio=0.5))
    assert np.allclose(payload["map"], expected, atol=1e-6) and isinstance(picture, Image.Image)
    _, query = handlers.api_explain(image, "bundled", "attention", "3", "2", "4,5", "", "", 0, 0)
    expected = explain(analysis.capture, "attention", ExplainOptions(layer=3, head=2, query_patch=(4, 5)))
    assert np.allclose(query["map"], expected, atol=1e-6)
    layers = handlers.api_layer_predictions(image, "bundled", 3)["layers"]
    assert len(layers) == 6 and len(layers[0]) == 3
    curves = handlers.api_faithfulness(image, "bundled", "", 4)
    assert set(curves) == set(handlers.MAP_METHODS) and len(curves["rollout"]["deletion"]["probs"]) == 5
    for method, match in [("flow", "not implemented"), ("nope", "Unknown method")]:
        with pytest.raises(gr.Error, match=match):
            handlers.api_explain(image, "bundled", method, "", "mean", "", "", "", 0, 0)
    with pytest.raises(gr.Error, match="ROW,COL"):
        handlers.api_explain(image, "bundled", "attention", "", "mean", "x", "", "", 0, 0)


def test_bad_inputs_become_one_sentence_errors_and_odd_images_are_analysed(tmp_path):
    for name, (path, expect) in write(tmp_path).items():
        if expect is None:
            session, outputs = analyzed(str(path), "bundled")
            assert len(outputs[1]) == 5, name
        else:
            with pytest.raises(gr.Error, match=expect) as error:
                analyzed(str(path), "bundled")
            message = error.value.message
            assert "\n" not in message and message.endswith("."), (name, message)
    with pytest.raises(gr.Error, match="Upload an image first"):
        analyzed(None, "bundled")
    with pytest.raises(gr.Error, match="[Uu]nknown model"):
        analyzed(get_image("lion.jpg"), "no-such-model")
    with pytest.raises(gr.Error, match="Upload an image first"):
        handlers.draw_overview(None, None, *STYLE)


def test_an_evicted_analysis_is_rebuilt_from_the_session(runs):
    session, _ = analyzed(get_image("cheetah1.jpg"), "bundled")
    service.CACHE.clear()  # as if the TTL had passed
    assert len(handlers.draw_overview(session, None, *STYLE)) == 4
    assert runs.count(None) == 2


def test_the_demo_builds_without_launching_and_names_its_api():
    demo = ui.build_demo()
    names = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"}
    assert {"analyze", "explain", "layer_predictions", "faithfulness"} <= names


def test_examples_hold_real_photos_and_bundled_scenes():
    examples = [row[0] for row in ui.example_images()]
    assert any(path.endswith("cheetah1.jpg") for path in examples)
    scenes = [path for path in examples if "assets/scenes" in path]
    assert len(scenes) >= 6 and not any(path.endswith("_mask.png") for path in scenes)


def test_spaces_gpu_wraps_model_runs_only_when_the_package_is_there(monkeypatch):
    import sys
    import types

    monkeypatch.delitem(sys.modules, "spaces", raising=False)
    monkeypatch.setattr("builtins.__import__", _refuse("spaces", __import__))
    plain = service._gpu_decorator(20)
    assert plain(len) is len  # a no-op off Spaces
    monkeypatch.undo()
    fake = types.ModuleType("spaces")
    fake.GPU = lambda fn=None, duration=None: (lambda f: ("wrapped", f, duration)) if fn is None else ("wrapped", fn)
    monkeypatch.setitem(sys.modules, "spaces", fake)
    assert service._gpu_decorator(20)(len) == ("wrapped", len, 20)  # spaces.GPU(duration=20)
    assert service._gpu_decorator()(len) == ("wrapped", len)
    # every model run states the seconds it reserves on ZeroGPU
    runs = [service.run_capture, service.faithfulness_curves, service.ablate, service.importance]
    assert all(0 < fn.duration <= 60 for fn in runs)


def _refuse(name, real_import):
    def guarded(module, *args, **kwargs):
        if module == name:
            raise ImportError(module)
        return real_import(module, *args, **kwargs)

    return guarded


def test_default_model_follows_vit_model_then_space_id(monkeypatch):
    monkeypatch.delenv("VIT_MODEL", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert service.default_model() == "bundled"
    monkeypatch.setenv("SPACE_ID", "someone/vit-explorer")
    assert service.default_model() == service.SPACE_DEFAULT_MODEL
    assert service.SPACE_DEFAULT_MODEL in {entry.name for entry in service.CATALOG}
    on_space = {value: label for label, value in service.model_choices()}
    assert on_space[service.SPACE_DEFAULT_MODEL].endswith("86.6 M params · 346 MB download")  # a Space has a hub
    monkeypatch.setenv("VIT_MODEL", "timm:deit_small_patch16_224.fb_in1k")
    assert service.default_model() == "timm:deit_small_patch16_224.fb_in1k"
    monkeypatch.delenv("SPACE_ID")
    offline = {value: label for label, value in service.model_choices()}
    assert "download" not in offline["bundled"] and "1.6 M params" in offline["bundled"]


def test_hidden_tabs_draw_only_when_shown():
    session, _ = analyzed(get_image("lion.jpg"), "bundled")
    lazy = handlers.when_shown("layers", handlers.draw_layers, 3)
    assert lazy("overview", session, None) == (gr.skip(),) * 3
    heatmap, _, _ = lazy("layers", session, None)
    assert heatmap.data[0].type == "heatmap"
    import inspect

    assert list(inspect.signature(lazy).parameters)[:2] == ["shown", "session"]  # Gradio injects by signature
    assert "request" in inspect.signature(lazy).parameters
