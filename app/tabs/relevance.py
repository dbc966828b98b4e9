"""Rollout & relevance: one method with its knobs (head fusion, discard ratio, start block)."""

from __future__ import annotations

import gradio as gr

from app.i18n import text
from app.maps import METHODS, grid_map, refusals, refused
from app.render import overlay
from app.session import analysis_of, handler, lang, style_of, unless_refused, view_of
from app.tabs.base import ALWAYS_LAST, PRIVATE, Shared, T, Tab, empty_line, lazy, picture, redraw
from vit_core.explain import ExplainOptions


def method_choices(unavailable: frozenset[str] = frozenset(), leave_out: frozenset[str] = frozenset()) -> list:
    """Each method's translated name beside its id (the id is what the CLI and the API take); those in
    `unavailable` (refused on the model) say so in their name, so a choice that cannot run is never a surprise;
    those in `leave_out` are not offered."""
    return [(T(f"method.{m}" + ("_refused" if m in unavailable else "")), m) for m in METHODS if m not in leave_out]


@handler(outputs=1)
def draw(session, method, head_fusion, discard_ratio, start_layer, target, style, request: gr.Request = None):
    """One method with its knobs, titled with the method's readable name (as the Overview's captions)."""
    analysis = analysis_of(session)
    # a start block only where its slider is active: LeGrad keeps its reference code's (the last two blocks)
    start = int(start_layer) if method in KNOBS["start_layer"] else None
    options = ExplainOptions(head_fusion=head_fusion, discard_ratio=float(discard_ratio), start_layer=start)
    found = unless_refused(lambda: grid_map(analysis, method, target, options), request)
    shown = None if found is None else overlay(view_of(analysis), found, style_of(style))
    return gr.update(value=shown, label=text(f"overview.{method}", lang(request)))


@handler(outputs=1)
def left_out(session, request: gr.Request = None):
    """The line under the methods: which method this model cannot run and why, with its numbers (attention
    flow: the model's tokens and blocks, and the limit at that depth); hidden when every method runs."""
    reasons = refusals(analysis_of(session))
    if not reasons:
        return gr.update(value="", visible=False)
    language = lang(request)
    lines = [text(f"relevance.left_out_{method}", language, **error.params) for method, error in reasons.items()]
    return gr.update(value="\n\n".join(lines), visible=True)


# which knobs change which method's map (the others are inactive, not silently ignored)
KNOBS = {
    "head_fusion": {"rollout"},
    "discard_ratio": {"rollout", "grad_rollout"},
    "start_layer": {"rollout", "grad_rollout", "chefer"},
}


def knobs(method: str) -> tuple:
    """The head fusion, discard ratio and start block controls, active where they act on `method`."""
    return tuple(gr.update(interactive=method in methods) for methods in KNOBS.values())


def fit(analysis):
    """The methods this model can run (a refused one is left out: choosing it would show nothing), rollout
    chosen; the start block over the model's blocks."""
    layers = analysis.capture.num_layers
    return (
        gr.update(choices=method_choices(leave_out=refused(analysis)), value="rollout", interactive=True),
        *knobs("rollout")[:2],
        gr.update(minimum=0, maximum=layers - 1, value=0, step=1, interactive=True),
    )


def build(shared: Shared) -> Tab:
    empty = empty_line("relevance")
    with gr.Row():
        method = gr.Radio(
            method_choices(), value="rollout", label=T("label.method"), elem_id="method", interactive=False
        )
        head_fusion = gr.Radio(
            [(T(f"choice.{f}"), f) for f in ("mean", "max", "min")],
            value="mean",
            label=T("label.head_fusion"),
            interactive=False,
        )
        discard = gr.Slider(0, 0.95, value=0.0, step=0.05, label=T("label.discard"), interactive=False)
        start_layer = gr.Slider(0, 11, value=0, step=1, label=T("label.start_block"), interactive=False)
    note = gr.Markdown(visible=False, elem_id="relevance-left-out", elem_classes=["empty-state"])
    view = picture(T("label.map"), "method-view")
    gr.Markdown(T("relevance.not_here"))
    drawn = redraw(
        draw, [shared.session, method, head_fusion, discard, start_layer, shared.target, shared.style], [view]
    )
    method.input(knobs, [method], [head_fusion, discard, start_layer], **PRIVATE)
    gr.on(
        [method.input, head_fusion.input, discard.input, start_layer.input],
        **lazy(shared, "relevance", drawn),
        **ALWAYS_LAST,
    )
    return Tab(
        [drawn, redraw(left_out, [shared.session], [note])], empty, [method, head_fusion, discard, start_layer], fit
    )
