"""The tabs' views, drawn in one event per user action.

Every Gradio event is a round trip (a queue join, a server-sent result, then the browser applying it), so
what one action shows is computed by one event, not a chain:
- an analysis (`Board.analyzed`) returns the panel's outputs and the first tab (the Overview), fitted to the
  model and drawn, when it is on screen. Every other tab is marked stale (`STALE`: its content hidden), so
  no view of an earlier image shows in a tab opened later. The analysis does not carry the other tabs'
  sixty controls and views: each output of an event costs the server and the page on every status change,
  while the model runs on the same cores. Another tab on screen is drawn by a second event that follows
  (`Board.followed`);
- opening a tab (`Board.opened`) fits it to the model (once per model) and draws it, its views of an
  earlier analysis emptied first;
- a change of the overlay style, the target or the language (`Board.redraw_shown`) redraws the views on
  screen that read it.

Fitting happens only when a tab is drawn: Gradio keeps the values of controls in a tab that was never
opened on the page, so a hidden slider whose range changed would send its old value. The fitted values
are drawn with directly, in the same event.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable
from typing import Any

import gradio as gr

from app.session import NoAnalysis, analysis_of
from app.tabs.base import Shared, Tab, empty_line_shown, write_pictures
from vit_core.errors import VitCoreError


def unique(components) -> list:
    """Components in order, each once."""
    return list({id(c): c for c in components}.values())


def call(fn: Callable, args: list, request: gr.Request | None):
    """`fn(*args)`, with the page's request where `fn` takes one (its language, its session)."""
    if "request" in inspect.signature(fn).parameters:
        return fn(*args, request=request)
    return fn(*args)


def run(step: dict, values: dict[int, Any], request: gr.Request | None) -> dict[int, Any]:
    """One redraw (`fn`, `inputs`, `outputs`) on the values by component id: its outputs by component id."""
    result = call(step["fn"], [values[id(c)] for c in step["inputs"]], request)
    outputs = step["outputs"]
    return dict(zip(map(id, outputs), (result,) if len(outputs) == 1 else tuple(result), strict=True))


def fitted_value(update: Any, current: Any) -> Any:
    """The value a control has after `update` (a `gr.update` dict); `current` where it sets none."""
    return update.get("value", current) if isinstance(update, dict) else current


def empty(component) -> Any:
    """A view emptied: a table shows placeholder headers when empty, so it is hidden until drawn again."""
    return gr.update(value=None, visible=False) if isinstance(component, gr.Dataframe) else None


# A tab whose views are of an earlier analysis: its content is hidden (`STALE_CSS`) until it is drawn again.
STALE = "stale-views"
STALE_CSS = f".tabitem.{STALE} > * {{ visibility: hidden; }}"


def staleness(stale: bool) -> dict:
    """The update that marks a tab stale, or drawn."""
    return gr.update(elem_classes=[STALE] if stale else [])


class Board:
    """Every tab's fitting and drawing, for the events that cross tabs."""

    def __init__(self, tabs: dict[str, Tab], shared: Shared) -> None:
        self.tabs, self.shared = tabs, shared
        self.first = next(iter(tabs))  # the tab on screen when the page opens, drawn by an analysis itself
        self.fitted = {tab_id: gr.State(None) for tab_id in tabs}  # the model each tab is fitted to
        self.drawn = {tab_id: gr.State(None) for tab_id in tabs}  # the analysis each tab's views show
        self.pending = gr.State(None)  # another tab on screen after an analysis: drawn by `followed`
        self.nonce = itertools.count()  # each pending draw differs, so the same tab and image draw again
        # what the tabs' drawings read: the session, the target, the style, their own controls
        self.inputs = unique([c for tab_id in tabs for c in self.reads(tab_id)])

    def reads(self, tab_id: str) -> list:
        """What drawing the tab reads: the session, what it is fitted to and shows, its redraws' inputs."""
        redraws = self.tabs[tab_id].redraws
        return unique(
            [self.shared.session, self.fitted[tab_id], self.drawn[tab_id]] + [c for a in redraws for c in a["inputs"]]
        )

    # ---- what a tab is made of ------------------------------------------------------------------------

    def views(self, tab_id: str) -> list:
        tab = self.tabs[tab_id]
        return unique([c for args in tab.redraws for c in args["outputs"]] + tab.outputs)

    def outputs(self, tab_id: str) -> list:
        tab = self.tabs[tab_id]
        states = [self.fitted[tab_id], self.drawn[tab_id]]
        return unique([tab.ui, tab.empty, *tab.controls, *tab.resets, *states, *self.views(tab_id)])

    def every_output(self) -> list:
        return unique([c for tab_id in self.tabs for c in self.outputs(tab_id)])

    # ---- drawing --------------------------------------------------------------------------------------

    def draw(self, tab_id: str, values: dict[int, Any], request: gr.Request | None) -> dict[int, Any]:
        """The tab's outputs (by component id): its views of another analysis emptied, fitted if its model
        changed, then drawn with the fitted values. Before any analysis: its empty line, inactive controls,
        empty views."""
        tab = self.tabs[tab_id]
        session = values[id(self.shared.session)]
        key = session.get("key") if session else None
        model = session.get("model") if key else None
        fitted = self.fitted[tab_id]
        out: dict[int, Any] = {id(tab.ui): staleness(False)}
        if values[id(self.drawn[tab_id])] != key:  # an earlier image's views (a faithfulness curve, a file) go
            out.update({id(c): empty(c) for c in self.views(tab_id)})
            out[id(self.drawn[tab_id])] = key
        if model is None:
            out[id(tab.empty)] = empty_line_shown(True)
            out.update({id(c): gr.update(interactive=False) for c in tab.controls})
            out.update({id(c): None for c in tab.resets})
            out[id(fitted)] = None
            return out
        if model != values[id(fitted)]:
            try:
                updates = tab.fit(analysis_of(session)) if tab.fit else ()
            except (NoAnalysis, VitCoreError):  # the analysis is gone and cannot be rebuilt: nothing to fit
                return out
            out[id(tab.empty)] = empty_line_shown(False)
            for control, update in zip(tab.controls, updates, strict=True):
                out[id(control)] = update
                values[id(control)] = fitted_value(update, values.get(id(control)))
            for state in tab.resets:
                out[id(state)] = values[id(state)] = None
            out[id(fitted)] = model
        for step in tab.redraws:
            out.update(run(step, values, request))
        return out

    @staticmethod
    def ordered(outputs: list, drawn: dict[int, Any], default=gr.skip) -> tuple:
        return tuple(drawn[id(c)] if id(c) in drawn else default() for c in outputs)

    # ---- the events -------------------------------------------------------------------------------------

    def opened(self, tab_id: str) -> dict:
        """Event arguments for opening tab `tab_id`: it becomes the tab on screen, fitted and drawn."""
        inputs = self.reads(tab_id)
        outputs = [self.shared.shown, *self.outputs(tab_id)]

        def open_tab(request: gr.Request, *args):
            drawn = self.draw(tab_id, dict(zip(map(id, inputs), args, strict=True)), request)
            return (tab_id, *self.ordered(outputs[1:], write_pictures(drawn, outputs)))

        return dict(fn=open_tab, inputs=inputs, outputs=outputs)

    def analyzed(self, analyze: Callable, panel_inputs: list, panel_outputs: list) -> dict:
        """Event arguments for an analysis: `analyze(*panel_inputs, progress, request)` gives the panel's
        `Outcome` and whether the views follow it; then every tab is marked stale, and the first tab, when it
        is on screen, is fitted and drawn from the new session (with the new target class). Another tab on
        screen becomes `pending`, drawn by `followed`."""
        first = self.first
        reads = self.reads(first)
        inputs = [*panel_inputs, self.shared.shown, *reads]
        outputs = unique([*panel_outputs, *self.outputs(first), *(t.ui for t in self.tabs.values()), self.pending])
        count = len(panel_inputs)

        def analyze_and_draw(request: gr.Request, progress=gr.Progress(), *args):  # noqa: B008 - Gradio's marker
            outcome, follow = analyze(*args[:count], progress=progress, request=request)
            panel = outcome.values()
            if not follow:  # a repeated request, or a model that could not be loaded: the views stay
                return (*panel, *(gr.skip() for _ in outputs[len(panel) :]))
            shown, rest = args[count], args[count + 1 :]
            values = dict(zip(map(id, reads), rest, strict=True))
            values[id(self.shared.session)] = outcome.session
            values[id(self.shared.target)] = outcome.chosen
            drawn = {id(tab.ui): staleness(True) for tab in self.tabs.values()}
            if shown == first:
                drawn.update(self.draw(first, values, request))
            elif shown in self.tabs:
                drawn[id(self.pending)] = {"tab": shown, "nonce": next(self.nonce)}
            return (*panel, *self.ordered(outputs[len(panel) :], write_pictures(drawn, outputs)))

        return dict(fn=analyze_and_draw, inputs=inputs, outputs=outputs)

    def followed(self) -> dict:
        """Event arguments for drawing the tab on screen after an analysis, when it is not the first tab (the
        `pending` state's change)."""
        inputs = [self.pending, *self.inputs]
        outputs = self.every_output()

        def draw_pending(request: gr.Request, pending: dict | None, *args):
            tab_id = (pending or {}).get("tab")
            if tab_id not in self.tabs:
                return tuple(gr.skip() for _ in outputs)
            drawn = self.draw(tab_id, dict(zip(map(id, self.inputs), args, strict=True)), request)
            return self.ordered(outputs, write_pictures(drawn, outputs))

        return dict(fn=draw_pending, inputs=inputs, outputs=outputs)

    def redraw_shown(
        self, reads=None, first: Callable | None = None, first_inputs: list = (), selection: bool = False
    ) -> dict:
        """Event arguments that redraw the views on screen reading `reads` (every view where None). With
        `first`, `first(*first_inputs)` gives `reads`' new value first (it is an output too); with
        `selection`, a select event's `gr.SelectData` is its last argument."""
        chosen = {
            tab_id: [a for a in tab.redraws if reads is None or reads in a["inputs"]]
            for tab_id, tab in self.tabs.items()
        }
        views = unique([c for redraws in chosen.values() for a in redraws for c in a["outputs"]])
        outputs = ([reads] if first else []) + views
        inputs = [*first_inputs, self.shared.shown, *self.inputs]
        count = len(first_inputs)

        def redraw(request: gr.Request, *args, selected: gr.SelectData | None = None):
            shown, values = args[count], dict(zip(map(id, self.inputs), args[count + 1 :], strict=True))
            head = []
            if first is not None:
                values[id(reads)] = call(first, [*args[:count], *([selected] if selection else [])], request)
                head = [values[id(reads)]]
            drawn = {}
            for step in chosen.get(shown, ()):
                drawn.update(run(step, values, request))
            return (*head, *self.ordered(views, write_pictures(drawn, views)))

        def redraw_selected(request: gr.Request, selected: gr.SelectData, *args):
            return redraw(request, *args, selected=selected)

        return dict(fn=redraw_selected if selection else redraw, inputs=inputs, outputs=outputs)
