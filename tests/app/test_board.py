"""One event per user action (`app.board`), on the real tabs and the bundled model: an analysis draws the
tab on screen with the values its controls take for the model and empties the others; opening a tab fits
it once per model and draws it with the fitted values; a tab's controls follow its fitted model in an event
of their own; a style change redraws only the tab on screen."""

import gradio as gr
import pytest
from gradio.media import get_image
from PIL import Image

from app import panel
from app.board import Board
from app.render import OverlayStyle
from app.tabs.base import Shared
from app.ui import TABS
from tests.app.helpers import NO_PROGRESS


@pytest.fixture(scope="module")
def page():
    """The panel, the tabs and the board, laid out as the page lays them out (not launched)."""
    with gr.Blocks():
        top = panel.build()
        session, shown, style = gr.State(None), gr.State("overview"), gr.State(OverlayStyle())
        shared = Shared(session, shown, top.target, style)
        tabs = {}
        with gr.Tabs():
            for tab_id, module in TABS.items():
                with gr.Tab(tab_id):
                    tabs[tab_id] = module.build(shared)
        board = Board(tabs, shared)
        panel_inputs = [top.image, top.model, session, top.labels, top.prompt]
        panel_outputs = [session, top.predictions, top.target, top.summary, top.model, top.note, top.seen]
        panel_outputs += [top.image, top.labels, top.prompt]
        analyzed = board.analyzed(panel.outcome, panel_inputs, panel_outputs)
        restyled = board.redraw_shown(style, panel.set_style, top.style_controls)
    return board, tabs, top, analyzed, restyled


def by_component(event: dict, result) -> dict:
    if len(event["outputs"]) == 1:  # Gradio's convention: one output, one value
        result = (result,)
    assert len(result) == len(event["outputs"])
    return {id(c): value for c, value in zip(event["outputs"], result, strict=True)}


def picture(value) -> Image.Image:
    """A view's picture: the events hand Gradio pictures already written as PNG files (`app.tabs.base.written`)."""
    assert isinstance(value, str) and value.endswith(".png"), value
    with Image.open(value) as image:
        return image.convert("RGB")


def start_values(board: Board) -> list:
    """What the page sends before anything is touched: every input's initial value."""
    return [c.value for c in board.inputs]


def test_an_analysis_draws_the_tab_on_screen_fitted_and_empties_the_others(page):
    board, tabs, top, analyzed, _ = page
    image = get_image("lion.jpg")
    args = [image, "bundled", None, "", "", "heads", *start_values(board)]
    out = by_component(analyzed, analyzed["fn"](None, NO_PROGRESS, *args))
    session = out[id(board.shared.session)]
    assert session["model"] == "bundled"
    heads = tabs["heads"]
    layer, head = heads.controls[:2]
    # drawn with the block slider fitted to the bundled model (6 blocks, not the layout's 12)
    assert out[id(board.fitted["heads"])] == "bundled"
    head_view, gallery, matrix, caption = heads.redraws[0]["outputs"]
    assert picture(out[id(head_view)]).size[0] > 0 and len(out[id(gallery)]) == 6
    assert "5" in out[id(caption)]  # the caption names the fitted block
    # the controls are not outputs of the analysis: they follow the fitted model (below)
    assert id(layer) not in out and id(heads.empty) not in out
    follow = board.follow("heads")
    fitted = by_component(follow, follow["fn"](session, "bundled"))
    assert fitted[id(layer)]["maximum"] == 5 and fitted[id(layer)]["value"] == 5
    assert fitted[id(heads.empty)] == gr.update(visible=False)
    assert all(fitted[id(state)] is None for state in heads.resets)
    # every other tab's views are emptied (an earlier image's maps never wait there)
    for tab_id in ("overview", "layers", "tokens", "anatomy"):
        for component in board.views(tab_id):
            assert out[id(component)] is None, (tab_id, component)
    # tabs that are not on screen are not fitted
    assert out[id(board.fitted["tokens"])] == gr.skip()


def test_without_a_model_a_tab_s_controls_are_inactive_beside_its_line(page):
    board, tabs, *_ = page
    for tab_id in TABS:  # one with only its empty line too
        follow = board.follow(tab_id)
        out = by_component(follow, follow["fn"](None, None))
        assert out[id(tabs[tab_id].empty)] == gr.update(visible=True)
        assert all(out[id(c)] == gr.update(interactive=False) for c in tabs[tab_id].controls)
        if tabs[tab_id].fit is not None:  # a session whose analysis cannot be found any more: the same
            gone = by_component(follow, follow["fn"]({"key": "bundled|nothing", "model": "bundled"}, "bundled"))
            assert gone[id(tabs[tab_id].empty)] == gr.update(visible=True)


def test_a_new_image_empties_what_the_tab_on_screen_drew_on_demand(page):
    board, tabs, top, analyzed, _ = page
    args = [get_image("lion.jpg"), "bundled", None, "", "", "faithfulness", *start_values(board)]
    out = by_component(analyzed, analyzed["fn"](None, NO_PROGRESS, *args))
    curves, table, result, bars = tabs["faithfulness"].redraws[0]["outputs"]
    assert out[id(curves)] is None and out[id(table)] == gr.update(value=None, visible=False)
    assert out[id(result)] is None and out[id(bars)] is None


def test_opening_a_tab_fits_it_once_per_model(page):
    board, tabs, top, analyzed, _ = page
    args = [get_image("bus.png"), "bundled", None, "", "", "overview", *start_values(board)]
    out = by_component(analyzed, analyzed["fn"](None, NO_PROGRESS, *args))
    assert all(picture(out[id(c)]["value"]) for c in tabs["overview"].redraws[0]["outputs"])
    values = {id(c): v for c, v in zip(board.inputs, start_values(board), strict=True)}
    values[id(board.shared.session)] = out[id(board.shared.session)]
    opened = board.opened("tokens")
    first = by_component(opened, opened["fn"](None, *[values[id(c)] for c in board.inputs]))
    assert first[id(board.shared.shown)] == "tokens"
    token_layer = tabs["tokens"].controls[0]
    assert first[id(board.fitted["tokens"])] == "bundled" and id(token_layer) not in first
    follow = board.follow("tokens")
    assert (
        by_component(follow, follow["fn"](values[id(board.shared.session)], "bundled"))[id(token_layer)]["value"] == 6
    )
    # opened again with the model it was fitted to: drawn with the user's block, nothing is refitted
    pca = tabs["tokens"].redraws[0]["outputs"][0]
    values[id(board.fitted["tokens"])], values[id(token_layer)] = "bundled", 2
    again = by_component(opened, opened["fn"](None, *[values[id(c)] for c in board.inputs]))
    assert again[id(board.fitted["tokens"])] == gr.skip()
    assert picture(again[id(pca)]).tobytes() != picture(first[id(pca)]).tobytes()


def test_before_any_image_an_opened_tab_draws_nothing(page):
    board, tabs, *_ = page
    opened = board.opened("heads")
    out = by_component(opened, opened["fn"](None, *start_values(board)))
    assert out[id(board.fitted["heads"])] is None
    assert all(out[id(c)] is None for c in board.views("heads"))


def test_a_style_change_redraws_the_tab_on_screen_only(page):
    board, tabs, top, analyzed, restyled = page
    args = [get_image("lion.jpg"), "bundled", None, "", "", "overview", *start_values(board)]
    session = by_component(analyzed, analyzed["fn"](None, NO_PROGRESS, *args))[id(board.shared.session)]
    values = {id(c): v for c, v in zip(board.inputs, start_values(board), strict=True)}
    values[id(board.shared.session)] = session
    controls = [0.3, "Magma", "nearest", True, False]
    for shown, drawn in (("overview", True), ("faithfulness", False)):
        result = restyled["fn"](None, *controls, shown, *[values[id(c)] for c in board.inputs])
        out = by_component(restyled, result)
        assert out[id(board.shared.style)] == OverlayStyle(0.3, "Magma", "nearest", True, False)
        pictures = [out[id(c)] for c in tabs["overview"].redraws[0]["outputs"]]
        if drawn:
            assert all(picture(p["value"]) for p in pictures)
        else:
            assert all(p == gr.skip() for p in pictures)


def test_pictures_are_written_at_once_and_the_rest_passes_through():
    from app.tabs.base import picture as output_picture
    from app.tabs.base import written

    with gr.Blocks():
        views = [output_picture("a"), output_picture("b"), gr.Markdown()]
    red, blue = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))
    out = written(views, (red, gr.update(value=blue, label="b", visible=True), "text"))
    assert picture(out[0]).getpixel((0, 0)) == (255, 0, 0)
    assert out[1]["label"] == "b" and out[1]["visible"] and picture(out[1]["value"]).getpixel((0, 0)) == (0, 0, 255)
    assert out[2] == "text"
    assert written(views, (None, gr.skip(), None)) == (None, gr.skip(), None)


def test_the_heads_query_reset_is_an_ordinary_button_inactive_only_before_an_analysis(page):
    """A small secondary button reads as inactive: it looks like Faithfulness's beside its slider."""
    board, tabs, top, analyzed, _ = page
    reset = next(c for c in tabs["heads"].controls if isinstance(c, gr.Button))
    run = next(c for c in tabs["faithfulness"].controls if isinstance(c, gr.Button))
    assert (reset.variant, reset.size) == (run.variant, run.size) == ("secondary", "lg")
    assert reset.interactive is False  # inactive before any analysis, as every control
    args = [get_image("lion.jpg"), "bundled", None, "", "", "heads", *start_values(board)]
    session = by_component(analyzed, analyzed["fn"](None, NO_PROGRESS, *args))[id(board.shared.session)]
    follow = board.follow("heads")  # the controls follow the model the tab was drawn with
    assert by_component(follow, follow["fn"](session, "bundled"))[id(reset)] == gr.update(interactive=True)
