"""One event per user action (`app.board`), on the real tabs and the bundled model: an analysis draws the
Overview fitted to the model when it is on screen and marks every other tab stale; another tab on screen is
drawn by the event that follows; opening a tab empties its views of an earlier analysis, fits it once per
model and draws it with the fitted values; a style change redraws only the tab on screen."""

import gradio as gr
import pytest
from gradio.media import get_image

from app import panel
from app.board import STALE, Board
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
                with gr.Tab(tab_id) as ui:
                    tabs[tab_id] = module.build(shared)
                tabs[tab_id].ui = ui
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


def analysis_args(board: Board, analyzed: dict, image, shown: str) -> list:
    """The analysis event's arguments on a fresh page: the image, the bundled model, the tab on screen."""
    start = {id(c): c.value for c in analyzed["inputs"]}
    return [image, "bundled", None, "", "", shown, *(start[id(c)] for c in analyzed["inputs"][6:])]


def stale(update) -> bool:
    return update["elem_classes"] == [STALE]


def follow(board: Board, pending, session) -> dict:
    """The event that draws another tab on screen after an analysis, on a fresh page's values."""
    event = board.followed()
    values = {id(c): v for c, v in zip(board.inputs, start_values(board), strict=True)}
    values[id(board.shared.session)] = session
    return by_component(event, event["fn"](None, pending, *values.values()))


def test_an_analysis_draws_the_overview_on_screen_and_marks_the_other_tabs_stale(page):
    board, tabs, top, analyzed, _ = page
    assert len(analyzed["outputs"]) < 40  # not every tab's sixty controls and views
    out = by_component(
        analyzed, analyzed["fn"](None, NO_PROGRESS, *analysis_args(board, analyzed, get_image("lion.jpg"), "overview"))
    )
    assert out[id(board.shared.session)]["model"] == "bundled"
    overview = tabs["overview"]
    assert all(is_picture(out[id(c)]["value"]) for c in overview.redraws[0]["outputs"])
    assert out[id(board.fitted["overview"])] == "bundled"
    assert out[id(board.drawn["overview"])] == out[id(board.shared.session)]["key"]
    assert out[id(overview.ui)] == gr.update(elem_classes=[])
    # every other tab is hidden as stale until it is drawn again; nothing else is drawn
    assert all(stale(out[id(tab.ui)]) for tab_id, tab in tabs.items() if tab_id != "overview")
    assert out[id(board.pending)] == gr.skip()


def test_another_tab_on_screen_is_drawn_fitted_by_the_event_that_follows(page):
    board, tabs, top, analyzed, _ = page
    out = by_component(
        analyzed, analyzed["fn"](None, NO_PROGRESS, *analysis_args(board, analyzed, get_image("lion.jpg"), "heads"))
    )
    session = out[id(board.shared.session)]
    assert all(stale(out[id(tab.ui)]) for tab in tabs.values())  # the Overview too: it is not on screen
    assert out[id(tabs["overview"].redraws[0]["outputs"][0])] == gr.skip()
    pending = out[id(board.pending)]
    assert pending["tab"] == "heads"
    again = by_component(
        analyzed, analyzed["fn"](None, NO_PROGRESS, *analysis_args(board, analyzed, get_image("lion.jpg"), "heads"))
    )
    assert again[id(board.pending)] != pending  # the same image again on the same tab: drawn again

    drawn = follow(board, pending, session)
    heads = tabs["heads"]
    layer, head = heads.controls[:2]
    # the block slider is fitted to the bundled model (6 blocks, not the layout's 12) and drawn with it
    assert drawn[id(layer)]["maximum"] == 5 and drawn[id(layer)]["value"] == 5
    assert drawn[id(board.fitted["heads"])] == "bundled" and drawn[id(board.drawn["heads"])] == session["key"]
    head_view, gallery, matrix, caption = heads.redraws[0]["outputs"]
    assert is_picture(drawn[id(head_view)]) and len(drawn[id(gallery)]) == 6
    assert "5" in drawn[id(caption)]  # the caption names the fitted block
    assert drawn[id(heads.empty)] == gr.update(visible=False)
    assert drawn[id(heads.ui)] == gr.update(elem_classes=[])
    # the other tabs are left as they are (stale), not fitted
    assert drawn[id(board.fitted["tokens"])] == gr.skip() and drawn[id(tabs["tokens"].ui)] == gr.skip()
    assert follow(board, None, session)[id(heads.ui)] == gr.skip()  # nothing pending: nothing drawn


def test_a_new_image_empties_what_a_tab_drew_on_demand(page):
    board, tabs, top, analyzed, _ = page
    out = by_component(
        analyzed,
        analyzed["fn"](None, NO_PROGRESS, *analysis_args(board, analyzed, get_image("lion.jpg"), "faithfulness")),
    )
    values = {id(c): v for c, v in zip(board.inputs, start_values(board), strict=True)}
    values[id(board.shared.session)] = out[id(board.shared.session)]
    values[id(board.drawn["faithfulness"])] = "an earlier image"  # its curves were drawn for another analysis
    opened = board.opened("faithfulness")
    drawn = by_component(opened, opened["fn"](None, *[values[id(c)] for c in opened["inputs"]]))
    curves, table, result, bars, about, hint, start = tabs["faithfulness"].redraws[0]["outputs"]
    assert drawn[id(curves)] is None and drawn[id(table)] == gr.update(value=None, visible=False)
    assert drawn[id(result)] is None and drawn[id(bars)] is None
    # one line says the curves are computed on demand, and what they start from stays
    assert drawn[id(hint)]["visible"] is True and "computed on demand" in drawn[id(hint)]["value"]
    assert drawn[id(start)] == gr.update(value=None, visible=False) and "blurred copy" in drawn[id(about)]
    # drawn on demand before, for this analysis: opening the tab again keeps them
    for component in tabs["faithfulness"].outputs:
        values[id(component)] = "kept"
    values[id(board.drawn["faithfulness"])] = out[id(board.shared.session)]["key"]
    again = by_component(opened, opened["fn"](None, *[values[id(c)] for c in opened["inputs"]]))
    assert all(again[id(c)] == gr.skip() for c in tabs["faithfulness"].outputs)


def test_opening_a_tab_fits_it_once_per_model(page):
    board, tabs, top, analyzed, _ = page
    out = by_component(
        analyzed, analyzed["fn"](None, NO_PROGRESS, *analysis_args(board, analyzed, get_image("bus.png"), "overview"))
    )
    assert all(is_picture(out[id(c)]["value"]) for c in tabs["overview"].redraws[0]["outputs"])
    values = {id(c): v for c, v in zip(board.inputs, start_values(board), strict=True)}
    values[id(board.shared.session)] = out[id(board.shared.session)]
    opened = board.opened("tokens")
    first = by_component(opened, opened["fn"](None, *[values[id(c)] for c in opened["inputs"]]))
    assert first[id(board.shared.shown)] == "tokens" and first[id(tabs["tokens"].ui)] == gr.update(elem_classes=[])
    token_layer = tabs["tokens"].controls[0]
    assert first[id(token_layer)]["value"] == 6 and first[id(board.fitted["tokens"])] == "bundled"
    # opened again with the model it was fitted to: the user's block stays, nothing is refitted
    values[id(board.fitted["tokens"])], values[id(token_layer)] = "bundled", 2
    values[id(board.drawn["tokens"])] = first[id(board.drawn["tokens"])]
    again = by_component(opened, opened["fn"](None, *[values[id(c)] for c in opened["inputs"]]))
    assert again[id(token_layer)] == gr.skip() and again[id(board.fitted["tokens"])] == gr.skip()
    pca = tabs["tokens"].redraws[0]["outputs"][0]
    assert is_picture(again[id(pca)])


def test_before_any_image_an_opened_tab_shows_its_line_and_inactive_controls(page):
    board, tabs, *_ = page
    opened = board.opened("heads")
    out = by_component(opened, opened["fn"](None, *[c.value for c in opened["inputs"]]))
    line = out[id(tabs["heads"].empty)]
    # its text comes again as a key the browser translates, not as the text the browser shows (app.tabs.base)
    assert line["visible"] is True and str(line["value"]) == str(T("empty.pick"))
    assert all(out[id(c)] == gr.update(interactive=False) for c in tabs["heads"].controls)
    assert all(out[id(c)] == gr.skip() for c in board.views("heads"))  # never drawn: nothing to empty
    # drawn for an analysis that is gone (the image removed): its views are emptied
    values = {id(c): c.value for c in opened["inputs"]}
    values[id(board.drawn["heads"])] = "an earlier image"
    out = by_component(opened, opened["fn"](None, *values.values()))
    assert all(out[id(c)] is None for c in board.views("heads")) and out[id(board.drawn["heads"])] is None


def test_a_style_change_redraws_the_tab_on_screen_only(page):
    board, tabs, top, analyzed, restyled = page
    args = analysis_args(board, analyzed, get_image("lion.jpg"), "overview")
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
    args = analysis_args(board, analyzed, get_image("lion.jpg"), "overview")
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
    out = by_component(
        analyzed, analyzed["fn"](None, NO_PROGRESS, *analysis_args(board, analyzed, get_image("lion.jpg"), "heads"))
    )
    drawn = follow(board, out[id(board.pending)], out[id(board.shared.session)])
    assert drawn[id(reset)] == gr.update(interactive=True)
