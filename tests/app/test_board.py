"""One event per user action (`app.board`), on the real tabs and the bundled model: an analysis draws the
tab on screen fitted to the model and empties the others; opening a tab fits it once per model and draws
it with the fitted values; a style change redraws only the tab on screen."""

import gradio as gr
import pytest
from gradio.media import get_image

from app import panel
from app.board import Board
from app.render import OverlayStyle
from app.tabs.base import Shared, T
from app.ui import TABS
from tests.app.helpers import NO_PROGRESS, is_picture


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
        analyzed = board.analyzed(panel.outcome, top.analysis_inputs(session), top.analysis_outputs(session))
        restyled = board.redraw_shown(style, panel.set_style, top.style_controls)
    return board, tabs, top, analyzed, restyled


def by_component(event: dict, result: tuple) -> dict:
    assert len(result) == len(event["outputs"])
    return {id(c): value for c, value in zip(event["outputs"], result, strict=True)}


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
    # the block slider is fitted to the bundled model (6 blocks, not the layout's 12) and drawn with it
    assert out[id(layer)]["maximum"] == 5 and out[id(layer)]["value"] == 5
    assert out[id(board.fitted["heads"])] == "bundled"
    head_view, gallery, matrix, caption = heads.redraws[0]["outputs"]
    assert is_picture(out[id(head_view)]) and len(out[id(gallery)]) == 6
    assert "5" in out[id(caption)]  # the caption names the fitted block
    assert out[id(heads.empty)] == gr.update(visible=False)
    # every other tab's views are emptied (an earlier image's maps never wait there)
    for tab_id in ("overview", "layers", "tokens", "anatomy"):
        for component in board.views(tab_id):
            assert out[id(component)] is None, (tab_id, component)
    # tabs that are not on screen are not fitted
    assert out[id(board.fitted["tokens"])] == gr.skip()


def test_a_new_image_empties_what_the_tab_on_screen_drew_on_demand(page):
    board, tabs, top, analyzed, _ = page
    args = [get_image("lion.jpg"), "bundled", None, "", "", "faithfulness", *start_values(board)]
    out = by_component(analyzed, analyzed["fn"](None, NO_PROGRESS, *args))
    curves, table, result, bars, about, hint, start = tabs["faithfulness"].redraws[0]["outputs"]
    assert out[id(curves)] is None and out[id(table)] == gr.update(value=None, visible=False)
    assert out[id(result)] is None and out[id(bars)] is None
    # one line says the curves are computed on demand, and what they start from stays
    assert out[id(hint)]["visible"] is True and "computed on demand" in out[id(hint)]["value"]
    assert out[id(start)] == gr.update(value=None, visible=False) and "blurred copy" in out[id(about)]


def test_opening_a_tab_fits_it_once_per_model(page):
    board, tabs, top, analyzed, _ = page
    args = [get_image("bus.png"), "bundled", None, "", "", "overview", *start_values(board)]
    out = by_component(analyzed, analyzed["fn"](None, NO_PROGRESS, *args))
    assert all(is_picture(out[id(c)]["value"]) for c in tabs["overview"].redraws[0]["outputs"])
    values = {id(c): v for c, v in zip(board.inputs, start_values(board), strict=True)}
    values[id(board.shared.session)] = out[id(board.shared.session)]
    opened = board.opened("tokens")
    first = by_component(opened, opened["fn"](None, *[values[id(c)] for c in board.inputs]))
    assert first[id(board.shared.shown)] == "tokens"
    token_layer = tabs["tokens"].controls[0]
    assert first[id(token_layer)]["value"] == 6 and first[id(board.fitted["tokens"])] == "bundled"
    # opened again with the model it was fitted to: the user's block stays, nothing is refitted
    values[id(board.fitted["tokens"])], values[id(token_layer)] = "bundled", 2
    again = by_component(opened, opened["fn"](None, *[values[id(c)] for c in board.inputs]))
    assert again[id(token_layer)] == gr.skip() and again[id(board.fitted["tokens"])] == gr.skip()
    pca = tabs["tokens"].redraws[0]["outputs"][0]
    assert is_picture(again[id(pca)])


def test_before_any_image_an_opened_tab_shows_its_line_and_inactive_controls(page):
    board, tabs, *_ = page
    opened = board.opened("heads")
    out = by_component(opened, opened["fn"](None, *start_values(board)))
    line = out[id(tabs["heads"].empty)]
    # its text comes again as a key the browser translates, not as the text the browser shows (app.tabs.base)
    assert line["visible"] is True and str(line["value"]) == str(T("empty.pick"))
    assert all(out[id(c)] == gr.update(interactive=False) for c in tabs["heads"].controls)
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
            assert all(is_picture(p["value"]) for p in pictures)
        else:
            assert all(p == gr.skip() for p in pictures)


def test_a_class_clicked_in_the_top5_redraws_the_class_specific_maps_for_it(page):
    board, tabs, top, analyzed, _ = page
    args = [get_image("lion.jpg"), "bundled", None, "", "", "overview", *start_values(board)]
    out = by_component(analyzed, analyzed["fn"](None, NO_PROGRESS, *args))
    session, top5 = out[id(board.shared.session)], list(out[id(top.predictions)])
    values = {id(c): v for c, v in zip(board.inputs, start_values(board), strict=True)}
    values[id(board.shared.session)] = session
    chefer = tabs["overview"].redraws[0]["outputs"][2]  # the overview's third place: Chefer et al. 2021

    def click(row: int) -> dict:
        selected = gr.SelectData(None, {"index": row, "value": top5[row], "selected": True})
        target = out[id(board.shared.target)].value
        event = board.redraw_shown(top.target, panel.pick_prediction, [board.shared.session, top.target], True)
        return by_component(event, event["fn"](None, selected, session, target, "overview", *values.values()))

    second, first = click(1), click(0)
    assert second[id(board.shared.target)] == int(top5[1].rsplit("(", 1)[1].rstrip(")"))
    assert first[id(board.shared.target)] == int(top5[0].rsplit("(", 1)[1].rstrip(")"))
    assert is_picture(second[id(chefer)]["value"]) and is_picture(first[id(chefer)]["value"])
    assert second[id(chefer)] != first[id(chefer)]  # another class, another map


def test_the_heads_query_reset_is_an_ordinary_button_inactive_only_before_an_analysis(page):
    """A small secondary button reads as inactive: it looks like Faithfulness's beside its slider."""
    board, tabs, top, analyzed, _ = page
    reset = next(c for c in tabs["heads"].controls if isinstance(c, gr.Button))
    run = next(c for c in tabs["faithfulness"].controls if isinstance(c, gr.Button))
    assert (reset.variant, reset.size) == (run.variant, run.size) == ("secondary", "lg")
    assert reset.interactive is False  # inactive before any analysis, as every control
    args = [get_image("lion.jpg"), "bundled", None, "", "", "heads", *start_values(board)]
    out = by_component(analyzed, analyzed["fn"](None, NO_PROGRESS, *args))
    assert out[id(reset)] == gr.update(interactive=True)
