"""Every tab's handlers on real models: analyse once, then redraw from the cache without a model run;
before any analysis every handler is quietly empty."""

import inspect
import json
import re
import unicodedata
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from gradio.media import get_image
from PIL import Image

from app import figures, service
from app.maps import FAITHFULNESS, METHODS, grid_map
from app.render import MATRIX_MARGIN, MATRIX_TOP, OverlayStyle, matrix_cell, overlay
from app.session import select_patch, view_of, when_shown
from app.tabs import anatomy, downloads, faithfulness, heads, layers, overview, relevance, tokens
from tests.app.conftest import FakeSelect
from tests.app.helpers import STYLE, analyzed
from vit_core.explain import ExplainOptions


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
    n_layers, n_heads = analysis.capture.num_layers, analysis.capture.num_heads
    top5 = outputs[1]
    assert len(top5) == 5 and abs(sum(top5.values()) - sum(sorted(analysis.capture.probs)[-5:])) < 1e-5
    assert heads.fit(analysis)[0]["maximum"] == n_layers - 1 and tokens.fit(analysis)[0]["maximum"] == n_layers
    assert anatomy.fit(analysis)[1]["choices"][-1] == str(n_heads - 1)
    assert runs == ["top"]  # one forward and one backward pass, for the top class

    pictures = overview.draw(session, None, STYLE)
    assert len(pictures) == 4 and all(isinstance(p["value"], Image.Image) for p in pictures)
    assert [p["label"] for p in pictures][1] == "Attention rollout"
    assert runs == ["top"]  # the top class's gradients came with the analysis

    main, gallery, matrix, _ = heads.draw(session, n_layers - 1, "mean", None, 1.0, STYLE)
    cell = matrix_cell(n_heads)
    assert len(gallery) == n_heads and matrix.size[1] >= n_layers * cell + MATRIX_TOP
    other_layer = heads.draw(session, 0, "mean", None, 1.0, STYLE)
    assert not np.array_equal(np.asarray(main), np.asarray(other_layer[0]))
    queried = heads.draw(session, n_layers - 1, "0", (1, 2), 0.5, STYLE)
    assert "row 1, col 2" in queried[3] and not np.array_equal(np.asarray(queried[0]), np.asarray(main))

    for method in METHODS:
        if method == "flow":  # 145 tokens: over attention flow's limit, one sentence
            with pytest.warns(UserWarning, match="max-flow per token"):  # said, and the map stays empty
                assert relevance.draw(session, method, "max", 0.5, 1, None, STYLE)["value"] is None
            continue
        assert isinstance(relevance.draw(session, method, "max", 0.5, 1, None, STYLE)["value"], Image.Image)
    heatmap, line, scatter = layers.draw(session, None)
    assert len(heatmap.data[0].y) == n_layers and len(scatter.data[0].x) == n_layers * n_heads
    pca, norms, similarity, positions = tokens.draw(session, 2, (1, 1), STYLE)
    assert pca.size == view_of(analysis).size  # no scale: RGB components
    assert similarity.size[0] == positions.size[0] == view_of(analysis).size[0]  # the scale goes below
    assert len(norms.data[0].y) == analysis.capture.tokens.shape[1]
    assert runs == ["top"]  # still no further model run: the overview's maps explain the top class

    # the same image again (another session, or the same one) reuses the analysis, and says so
    again, outputs = analyzed(image, name)
    assert again["key"] == session["key"] and len(runs) == 1
    assert "from cache" in outputs[3] and " ms" not in outputs[3]


def test_before_any_image_every_handler_is_quietly_empty():
    """The likeliest first click: a tab before any upload. No error, every output cleared."""
    assert overview.draw(None, None, STYLE) == (None,) * 4
    assert heads.draw(None, 11, "mean", None, 1.0, STYLE) == (None,) * 4
    assert relevance.draw(None, "rollout", "mean", 0, 0, None, STYLE) is None
    assert relevance.left_out(None) is None
    assert layers.draw(None, None) == (None,) * 3
    assert tokens.draw(None, 12, None, STYLE) == (None,) * 4
    assert anatomy.draw_patch(None, None) == (None,) * 9
    assert anatomy.draw_attention(None, None, 0, "0", "class", True) == (None,) * 5
    assert anatomy.draw_mlp(None, 0) == (None,) * 2
    assert faithfulness.run(None, None, 16, progress=lambda *a, **k: None) == (None,) * 4
    assert faithfulness.show(None, None) == (None,) * 7
    assert faithfulness.ablate(None, 0, ["0"], None) is None
    assert faithfulness.importance(None, 0, None) is None
    assert downloads.prepare(None, None, STYLE) is None
    assert select_patch(None, FakeSelect([1, 1])) == gr.skip()
    assert heads.select_cell(None, FakeSelect([1, 1])) == (gr.skip(), gr.skip())


def test_class_specific_maps_follow_the_target_and_each_target_runs_once(runs):
    session, _ = analyzed(get_image("bus.png"), "bundled")
    analysis = service.CACHE.get(session["key"])
    first, second = np.argsort(-analysis.capture.probs)[:2]
    chefer_top = relevance.draw(session, "chefer", "mean", 0.0, 0, int(first), STYLE)["value"]
    chefer_second = relevance.draw(session, "chefer", "mean", 0.0, 0, int(second), STYLE)["value"]
    assert not np.array_equal(np.asarray(chefer_top), np.asarray(chefer_second))
    overview.draw(session, int(second), STYLE)
    layers.draw(session, int(second))
    assert runs == ["top", int(second)]
    # the top class's gradients came with the analysis: the same as a run for that class alone
    alone = service.run_capture("bundled", analysis.pixels, int(first))
    np.testing.assert_allclose(analysis.by_target[int(first)].attention_grads, alone.attention_grads, atol=1e-6)
    assert analysis.capture.attention_grads is None  # the class-agnostic capture stays so
    by_name = service.class_index(analysis, service.labels_of(analysis)[int(second)].upper())
    assert by_name == int(second)
    with pytest.raises(gr.Error, match="out of range"):
        relevance.draw(session, "chefer", "mean", 0.0, 0, 999, STYLE)


def test_clicks_select_patches_and_heads():
    session, _ = analyzed(get_image("cheetah1.jpg"), "bundled")
    analysis = service.CACHE.get(session["key"])
    width, height = view_of(analysis).size
    rows, cols = analysis.capture.grid
    # the last patch's centre; a click on the colour scale (below the image) changes nothing
    assert select_patch(session, FakeSelect([width - 1, height - 1])) == (rows - 1, cols - 1)
    assert select_patch(session, FakeSelect([5, height + 3])) == gr.skip()
    assert select_patch(session, FakeSelect([0, 0])) == (0, 0)
    step = matrix_cell(analysis.capture.num_heads) + 2
    x, y = MATRIX_MARGIN + 2 * step + 5, MATRIX_TOP + 3 * step + 5
    assert heads.select_cell(session, FakeSelect([x, y])) == (3, "2")
    assert heads.select_cell(session, FakeSelect([5, 5])) == (gr.skip(), gr.skip())  # on the numbers
    assert heads.select_gallery_head(FakeSelect(4)) == "4"


def test_the_matrix_marks_the_selected_cell():
    session, _ = analyzed(get_image("cheetah1.jpg"), "bundled")
    cell = matrix_cell(6)
    plain = np.asarray(heads.draw(session, 2, "mean", None, 1.0, STYLE)[2]).astype(int)
    chosen = np.asarray(heads.draw(session, 2, "3", None, 1.0, STYLE)[2]).astype(int)
    step = cell + 2
    left, top = MATRIX_MARGIN + 3 * step - 2, MATRIX_TOP + 2 * step - 2  # the outline's top-left corner
    assert tuple(chosen[top, left + 5]) == (255, 40, 40)
    assert tuple(plain[top, left + 5]) == (255, 40, 40)  # mean: the whole block's row is outlined
    assert tuple(plain[top + 3 * step, left + 5]) != (255, 40, 40)


def test_what_a_page_computes_on_demand_is_its_own_and_shows_under_its_own_target():
    """Two pages on the same picture share its analysis, not each other's curves, ablation or head importance;
    a result shows under the target it was computed for, and again when that target comes back."""

    def page(name):
        request = gr.Request(headers={"accept-language": "en"})
        request.session_hash = name
        return request

    first, second = page("first-page"), page("second-page")
    session, _ = analyzed(get_image("cheetah1.jpg"), "bundled", request=first)
    top = service.target_class(service.CACHE.get(session["key"]), None)
    other_class = (top + 1) % 10
    faithfulness.run(session, other_class, 4, progress=lambda *a, **k: None, request=first)
    faithfulness.ablate(session, 1, ["0"], other_class, request=first)
    faithfulness.importance(session, 1, other_class, request=first)
    shown = faithfulness.show(session, other_class, request=first)
    assert shown[0] is not None and isinstance(shown[1], gr.Dataframe) and shown[2] and shown[3] is not None
    assert all(v is None for i, v in enumerate(faithfulness.show(session, top, request=first)[:4]) if i != 1)
    their_session, _ = analyzed(get_image("cheetah1.jpg"), "bundled", request=second)
    assert their_session["key"] == session["key"]  # the same analysis, shared
    for target in (other_class, top):
        curves, table, result, bars, _, hint, start = faithfulness.show(their_session, target, request=second)
        assert curves is None and table["visible"] is False and result is None and bars is None
        assert hint["visible"] is True and start["visible"] is False
    again = faithfulness.show(session, other_class, request=first)  # the first page's target comes back
    assert again[0] is not None and again[2] == shown[2]


def test_faithfulness_ablation_and_downloads():
    session, _ = analyzed(get_image("tower.jpg"), "bundled")
    plot, table, hint, start = faithfulness.run(session, None, 6, progress=lambda *a, **k: None)
    assert hint["visible"] is False and start["visible"] is True
    rows = table.value["data"]
    assert [row[0] for row in rows] == [f"{name} ({m})" for m, name in zip(FAITHFULNESS, _names(), strict=True)]
    assert all(0 <= float(row[1]) <= 1 and 0 <= float(row[2]) <= 1 for row in rows)
    assert all(re.fullmatch(r"[01]\.\d{3}", auc) for row in rows for auc in row[1:]), rows  # 3 decimals each
    assert len(plot.data) == 2 * len(FAITHFULNESS)
    for solid, dashed in zip(plot.data[::2], plot.data[1::2], strict=True):  # one colour per method
        assert solid.line.color == dashed.line.color and dashed.line.dash == "dash" and solid.line.dash is None
        assert solid.xaxis in (None, "x") and dashed.xaxis == "x2" and dashed.yaxis == "y2"  # two panels
    assert len({trace.line.color for trace in plot.data}) == len(FAITHFULNESS)
    legend = [trace.name for trace in plot.data if trace.showlegend is not False]  # readable names, not ids
    assert [name.replace("<br>", " ") for name in legend] == [overview.title(m, "en") for m in FAITHFULNESS]
    text = faithfulness.ablate(session, 2, ["0", "3"], None)
    assert "with heads 0 and 3 of block 2 zeroed (" in text
    bars = faithfulness.importance(session, 2, None)
    assert len(bars.data[0].y) == 6
    with pytest.raises(gr.Error, match="at least one head"):
        faithfulness.ablate(session, 2, [], None)
    assert faithfulness.heads_chosen([]) == gr.update(interactive=False)
    # what was computed stays with the analysis and follows the page's language, with no model run
    chinese = gr.Request(headers={"accept-language": "zh-CN,zh;q=0.9"})
    curves, table, result, bars_again, *_ = faithfulness.show(session, None, request=chinese)
    assert curves.layout.title.text != plot.layout.title.text and table.value["data"][0][1] == rows[0][1]
    chinese_legend = [trace.name for trace in curves.data if trace.showlegend is not False]
    assert chinese_legend[0] == overview.title(FAITHFULNESS[0], "zh-CN")
    lines = [line for name in legend + chinese_legend for line in name.split("<br>")]
    assert max(columns(line) for line in lines) <= figures.LEGEND_COLUMNS  # every entry fits beside the plot
    assert "将第 2 块的头 0 和 3 置零后为" in result and result != text and len(bars_again.data[0].y) == 6
    other, _ = analyzed(get_image("lion.jpg"), "bundled")  # a new image: nothing computed for it yet
    assert faithfulness.show(other, None)[0] is None and faithfulness.show(other, None)[2] is None

    files = downloads.prepare(session, None, STYLE)
    names = sorted(p.split("/")[-1] for p in files)
    assert names == ["attention.png", "capture.npz", "chefer.png", "gradcam.png", "results.json", "rollout.png"]
    saved = np.load(next(p for p in files if p.endswith(".npz")))
    analysis = service.CACHE.get(session["key"])
    assert np.array_equal(saved["attentions"], analysis.capture.attentions)
    results = json.loads(open(next(p for p in files if p.endswith(".json"))).read())
    assert results["top5"][0]["index"] == int(np.argmax(analysis.capture.probs))
    assert np.asarray(results["mean_attention_distance_px"]).shape == (6, 6)


def test_the_faithfulness_tab_says_where_its_curves_start():
    """Deletion starts from the image, insertion from a blurred copy: the tab says so with this model's baseline
    colour and blur, and beside the table p(target) on both starts, read off the real curves. With the star the
    blurred copy alone keeps nearly all of the image's p, and the tab says insertion can hardly tell the
    methods apart there; with the crescent it does not."""
    from torchvision.transforms.functional import gaussian_blur

    from app.panel import SCENES
    from vit_core.capture import predict
    from vit_core.faithfulness import BLUR_SIGMA

    session, _ = analyzed(str(SCENES / "03_star.png"), "bundled")
    analysis = service.CACHE.get(session["key"])
    target = service.target_class(analysis, None)
    about = faithfulness.show(session, None)[4]
    assert "RGB 128, 128, 128" in about  # the bundled model normalises with mean 0.5: deletion's grey
    assert f"σ = {BLUR_SIGMA:g} px on the model's 96×96 input" in about
    _, _, _, start = faithfulness.run(session, None, 4, progress=lambda *a, **k: None)
    # insertion's first point is the model on the blurred image, as a forward pass of its own gives it
    kernel = int(2 * round(3 * BLUR_SIGMA) + 1)
    blurred = gaussian_blur(analysis.pixels[None].float(), [kernel, kernel], [BLUR_SIGMA, BLUR_SIGMA])
    p_blurred = float(predict(service.shared_model("bundled").model, blurred).softmax(-1)[0, target])
    p_image = float(analysis.capture.probs[target])
    assert p_blurred > 0.5 * p_image  # the star survives the blur
    said = start["value"]
    assert said.startswith(f"p(star) on the image: **{p_image:.3f}** · on the blurred copy, where insertion starts:")
    assert f"**{p_blurred:.3f}**" in said
    assert f"The blurred image alone already gives p = {p_blurred:.3f}, so insertion can hardly tell" in said
    chinese = gr.Request(headers={"accept-language": "zh-CN"})
    *_, about_zh, _, start_zh = faithfulness.show(session, None, request=chinese)
    assert "RGB 128, 128, 128" in about_zh and f"仅模糊图像就已得到 p = {p_blurred:.3f}" in start_zh["value"]

    session, _ = analyzed(str(SCENES / "00_crescent.png"), "bundled")
    report = faithfulness.faithfulness_report(service.CACHE.get(session["key"]), None, 2)
    first = next(iter(report.values()))
    assert first["insertion"].probs[0] < 0.5 * first["deletion"].probs[0]  # the blur loses the crescent
    said = faithfulness.run(session, None, 2, progress=lambda *a, **k: None)[3]["value"]
    assert "on the blurred copy" in said and "already gives" not in said


def test_the_faithfulness_tab_says_its_curves_are_computed_on_demand():
    """No curves for this image and target: one line says the button computes them; with curves it is hidden,
    and a new image (or another target) brings it back."""
    session, _ = analyzed(get_image("tower.jpg"), "bundled")
    curves, table, _, _, _, hint, start = faithfulness.show(session, None)
    assert curves is None and table["visible"] is False and start["visible"] is False
    assert hint["visible"] is True and "computed on demand with **Run deletion / insertion**" in hint["value"]
    chinese = gr.Request(headers={"accept-language": "zh-CN"})
    hint_zh = faithfulness.show(session, None, request=chinese)[5]["value"]
    assert "按需计算" in hint_zh and "**运行删除 / 插入**" in hint_zh
    faithfulness.run(session, None, 2, progress=lambda *a, **k: None)
    curves, table, _, _, _, hint, start = faithfulness.show(session, None)
    assert curves is not None and hint["visible"] is False and start["visible"] is True
    other = (service.target_class(service.CACHE.get(session["key"]), None) + 1) % 10
    assert faithfulness.show(session, other)[5]["visible"] is True  # another target: nothing computed for it
    new, _ = analyzed(get_image("lion.jpg"), "bundled")
    curves, _, _, _, _, hint, _ = faithfulness.show(new, None)
    assert curves is None and hint["visible"] is True


def test_the_layers_tab_explains_the_logit_lens_and_titles_its_axes():
    """The heatmap's rows are numbered on an axis titled "after block" (not a bare "after"); the tab says what
    the logit lens reads and what the scatter's colour is."""
    from app.i18n import text
    from app.tabs.base import Shared

    session, _ = analyzed(get_image("tower.jpg"), "bundled")
    blocks = service.CACHE.get(session["key"]).capture.num_layers
    heatmap, line, _ = layers.draw(session, None)
    assert heatmap.layout.yaxis.title.text == "after block" and list(heatmap.data[0].y) == list(range(blocks))
    assert heatmap.data[0].hovertemplate.startswith("block %{y}<br>")
    assert line.layout.xaxis.title.text == "after block"  # the line reads the same block outputs as the heatmap
    chinese = gr.Request(headers={"accept-language": "zh-CN"})
    assert layers.draw(session, None, request=chinese)[0].layout.yaxis.title.text == "第几块之后"
    about = text("layers.about", "en")
    assert "nostalgebraist 2020" in about and "final norm and head" in about and "colour is the entropy" not in about
    assert "heatmap's colour is the probability" in about and "coloured by the entropy of its attention" in about
    assert "nostalgebraist 2020" in text("layers.about", "zh-CN") and "熵" in text("layers.about", "zh-CN")
    with gr.Blocks() as demo:
        layers.build(Shared(gr.State(), gr.State(), gr.Dropdown(), gr.State()))
    shown = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "layers-about"]
    assert len(shown) == 1 and '"key": "layers.about"' in shown[0].value  # translated by the browser (gr.I18n)


def test_the_downloads_export_the_maps_the_overview_shows():
    """The PNGs follow the Overview's "Maps shown", each named by its method; attention flow, refused on this
    model (its place in the Overview empty), has no file."""
    session, _ = analyzed(get_image("lion.jpg"), "bundled")
    analysis = service.CACHE.get(session["key"])
    files = downloads.prepare(session, None, STYLE, ["attnlrp", "flow", "grad_rollout"])
    pictures = {p.split("/")[-1]: p for p in files if p.endswith(".png")}
    assert list(pictures) == ["attnlrp.png", "grad_rollout.png"]
    for method in ("attnlrp", "grad_rollout"):
        expected = overlay(view_of(analysis), grid_map(analysis, method, None), STYLE)
        assert np.array_equal(np.asarray(Image.open(pictures[f"{method}.png"])), np.asarray(expected))
    assert [p.split("/")[-1] for p in downloads.prepare(session, None, STYLE, [])] == ["capture.npz", "results.json"]
    # the Overview never touched: its four default maps, as the page sends them
    default = downloads.prepare(session, None, STYLE, list(overview.DEFAULT))
    assert [p.split("/")[-1] for p in default if p.endswith(".png")] == [f"{m}.png" for m in overview.DEFAULT]


@pytest.mark.parametrize(
    "language, heads, change, said",
    [
        ("en", ["2"], -2e-5, "with head 2 of block 5 zeroed (-2.0e-05)."),  # below the 4 decimals
        ("en", ["3", "1"], 0.0, "with heads 1 and 3 of block 5 zeroed (0)."),
        ("en", ["0", "4", "2"], -0.123456, "with heads 0, 2 and 4 of block 5 zeroed (-0.1235)."),
        ("zh-CN", ["2"], -0.0, "将第 5 块的头 2 置零后为 0.5000（0）。"),
        ("zh-CN", ["0", "4", "2"], 0.00123456, "将第 5 块的头 0、2 和 4 置零后为 0.5000（+0.0012）。"),
    ],
)
def test_the_ablation_sentence_names_the_heads_and_a_readable_change(language, heads, change, said):
    analysis = dict(label="ring", base=0.5 - change, ablated=0.5, layer=5, heads=sorted(heads, key=int), change=change)
    sentence = faithfulness.ablation_text(analysis, language)
    assert sentence.endswith(said), sentence
    assert "-0.0000" not in sentence and "-0）" not in sentence and "(-0)" not in sentence


def columns(line: str) -> int:
    """The width of a line of text in columns, a CJK character two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)


def _names():
    from app.i18n import text

    return [text(f"method.{m}").rsplit(" (", 1)[0] for m in FAITHFULNESS]


def test_an_evicted_analysis_is_rebuilt_from_the_session(runs):
    session, _ = analyzed(get_image("cheetah1.jpg"), "bundled")
    service.CACHE.clear()  # as if the TTL had passed
    assert len(overview.draw(session, None, STYLE)) == 4
    assert runs.count("top") == 2


def test_hidden_tabs_draw_only_when_shown():
    session, _ = analyzed(get_image("lion.jpg"), "bundled")
    lazy = when_shown("layers", layers.draw, 3)
    assert lazy("overview", session, None) == (gr.skip(),) * 3
    heatmap, _, _ = lazy("layers", session, None)
    assert heatmap.data[0].type == "heatmap"
    assert list(inspect.signature(lazy).parameters)[:2] == ["shown", "session"]  # Gradio injects by signature
    assert "request" in inspect.signature(lazy).parameters


@pytest.mark.parametrize(
    "outliers,english,chinese",
    [
        (0, "Token norms (no outlier patches)", "令牌范数（无离群图块）"),
        (1, "Token norms (1 outlier patch)", "令牌范数（1 个离群图块）"),
        (3, "Token norms (3 outlier patches)", "令牌范数（3 个离群图块）"),
    ],
)
def test_the_token_norm_title_counts_its_outliers_in_words(outliers, english, chinese):
    prefix = 1
    norms = np.ones(prefix + 8)
    flagged = np.zeros(prefix + 8, dtype=bool)
    flagged[0] = True  # a prefix token above the fence is not an outlier patch
    flagged[prefix : prefix + outliers] = True
    titles = [figures.token_norm_bars(norms, flagged, 2.0, prefix, lang).layout.title.text for lang in ("en", "zh-CN")]
    assert titles == [english, chinese]


def test_the_overview_shows_the_maps_chosen_and_a_refused_one_stays_empty():
    session, _ = analyzed(get_image("lion.jpg"), "bundled")
    chosen = overview.draw(session, None, STYLE, ["legrad", "attnlrp"])
    assert [p["label"] for p in chosen[:2]] == ["LeGrad", "AttnLRP"]  # captions name methods as the defaults do
    analysis = service.CACHE.get(session["key"])
    view = view_of(analysis)
    expected = overlay(view, grid_map(analysis, "legrad", None), STYLE)
    assert np.array_equal(np.asarray(chosen[0]["value"]), np.asarray(expected))
    assert chosen[2] == chosen[3] == gr.update(value=None, visible=False)  # two places left: hidden
    # attention flow is refused on 145 tokens: its place is empty, the other map is drawn
    mixed = overview.draw(session, None, STYLE, ["flow", "rollout"])
    assert mixed[0]["value"] is None and isinstance(mixed[1]["value"], Image.Image)
    assert mixed[0]["label"] == "Attention flow (flow): too large for this model"  # its caption says why
    # none chosen: no map stays, and the line asking for one shows
    assert overview.draw(session, None, STYLE, []) == (gr.update(value=None, visible=False),) * 4
    assert overview.none_chosen([]) == gr.update(visible=True)
    assert overview.none_chosen(["rollout"]) == gr.update(visible=False)


def test_a_method_the_model_cannot_run_says_so_where_it_is_chosen():
    from app.maps import refused

    session, _ = analyzed(get_image("lion.jpg"), "bundled")
    analysis = service.CACHE.get(session["key"])
    assert refused(analysis) == {"flow"}  # 145 tokens in 6 blocks: over attention flow's limit
    # the Overview names it as refused (its place stays empty, captioned); Rollout & relevance does not offer it
    labels = {value: label.key for label, value in overview.fit(analysis)[0]["choices"]}
    assert labels["flow"] == "method.flow_refused" and labels["rollout"] == "method.rollout"
    offered = relevance.fit(analysis)[0]["choices"]
    assert [value for _, value in offered] == [m for m in METHODS if m != "flow"]
    assert all(not label.key.endswith("_refused") for label, _ in offered)
    # the line under the methods says why, with the model's numbers, in the page's language
    note = relevance.left_out(session)
    assert note["visible"] is True
    assert note["value"] == (
        "Attention flow (flow) is left out: this model reads 145 tokens in 6 blocks, over the 69 tokens it can "
        "take at that depth."
    )
    chinese = gr.Request(headers={"accept-language": "zh-CN"})
    assert "145 个令牌" in relevance.left_out(session, request=chinese)["value"]
    small = SimpleNamespace(capture=SimpleNamespace(attentions=np.zeros((2, 1, 17, 17)), num_layers=2))  # 17 tokens
    assert refused(small) == set()
    assert relevance.fit(small)[0]["choices"][-1][1] == "flow"  # offered where it runs


def test_position_similarity_is_the_same_picture_for_any_image():
    """Position embeddings are the model's: their similarity map is not drawn over the photo (over it, it looked
    as if it came from the image), in the Tokens tab and in Anatomy's step 2 alike."""
    first, _ = analyzed(get_image("lion.jpg"), "bundled")
    second, _ = analyzed(get_image("bus.png"), "bundled")
    views = [view_of(service.CACHE.get(session["key"])) for session in (first, second)]
    assert views[0].size == views[1].size and not np.array_equal(np.asarray(views[0]), np.asarray(views[1]))
    for draw in (lambda s: tokens.draw(s, 2, (3, 4), STYLE)[3], lambda s: anatomy.draw_patch(s, (3, 4))[5]):
        pictures = [np.asarray(draw(session)) for session in (first, second)]
        assert pictures[0].shape[1] == views[0].width  # the same width as the input view, its scale below
        assert np.array_equal(pictures[0], pictures[1])
    # the maps that do come from the image still differ between the two
    assert not np.array_equal(
        np.asarray(tokens.draw(first, 2, (3, 4), STYLE)[2]), np.asarray(tokens.draw(second, 2, (3, 4), STYLE)[2])
    )


def test_the_relevance_map_is_titled_with_its_method():
    session, _ = analyzed(get_image("lion.jpg"), "bundled")
    for method, title in (("rollout", "Attention rollout"), ("attnlrp", "AttnLRP"), ("chefer", "Chefer et al. 2021")):
        assert relevance.draw(session, method, "mean", 0.0, 0, None, STYLE)["label"] == title
    chinese = gr.Request(headers={"accept-language": "zh-CN"})
    assert relevance.draw(session, "rollout", "mean", 0.0, 0, None, STYLE, request=chinese)["label"] == "注意力展开"


def test_legrad_in_the_relevance_tab_starts_where_its_reference_code_does():
    session, _ = analyzed(get_image("lion.jpg"), "bundled")
    analysis = service.CACHE.get(session["key"])
    shown = relevance.draw(session, "legrad", "mean", 0.0, 0, None, STYLE)["value"]  # the inactive start slider at 0
    expected = overlay(view_of(analysis), grid_map(analysis, "legrad", None), STYLE)  # the default: last two
    assert np.array_equal(np.asarray(shown), np.asarray(expected))
    every_block = grid_map(analysis, "legrad", None, ExplainOptions(start_layer=0))
    assert not np.allclose(every_block, grid_map(analysis, "legrad", None))


def test_the_overlay_style_is_one_value():
    from app.panel import set_style

    assert set_style(0.3, "Magma", "nearest", True, False) == OverlayStyle(0.3, "Magma", "nearest", True, False)
