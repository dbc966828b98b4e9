"""Overview: up to four maps side by side, of the user's choice among every method (default: raw attention,
rollout, Chefer et al. 2021 and Grad-CAM)."""

from __future__ import annotations

import gradio as gr

from app import service
from app.i18n import text
from app.maps import grid_map, refused
from app.render import overlay
from app.session import analysis_of, handler, lang, style_of, unless_refused, view_of
from app.tabs.base import ALWAYS_LAST, PRIVATE, Shared, T, Tab, empty_line, lazy, picture, redraw
from app.tabs.relevance import method_choices
from vit_core.explain import CLASS_SPECIFIC

DEFAULT = ("attention", "rollout", "chefer", "gradcam")
SLOTS = len(DEFAULT)


def title(method: str, language: str) -> str:
    """A map's caption: the method's readable name as the Rollout & relevance tab shows it, without the id
    in parentheses there (every caption alike); raw attention's says more (which block, which heads)."""
    return text(f"overview.{method}", language)


@handler(outputs=SLOTS)
def draw(session, target, style, methods=DEFAULT, request: gr.Request = None):
    """The chosen maps side by side, each captioned; class-specific ones explain the target (a class, an
    image–text model's label or typed prompt) and are empty for a model without a head (or an image–text
    model with neither). A method that cannot run on this model (attention flow on a large one) leaves its
    place empty, its caption saying so, without stopping the others."""
    analysis = analysis_of(session)
    language = lang(request)
    methods = chosen(methods)
    unavailable = refused(analysis)
    pictures = []
    for method in methods:
        if method in unavailable:  # its caption says why its place is empty
            pictures.append(gr.update(value=None, label=text(f"method.{method}_refused", language), visible=True))
            continue
        found = None
        if explainable(analysis, method, target):
            found = unless_refused(lambda method=method: grid_map(analysis, method, target), request)
        shown = None if found is None else overlay(view_of(analysis), found, style_of(style))
        pictures.append(gr.update(value=shown, label=title(method, language), visible=True))
    pictures += [gr.update(value=None, visible=False)] * (SLOTS - len(methods))
    return tuple(pictures)


def chosen(methods) -> list[str]:
    """The methods of the "Maps shown" selection, at most `SLOTS` of them (none: an empty list)."""
    return list(methods or ())[:SLOTS]


def explainable(analysis, method: str, target) -> bool:
    """Whether `method` gives a map here: not refused on the model, and a class-specific one only where
    there is something to explain (a model with a head, or an image–text model's label or prompt)."""
    if method in refused(analysis):
        return False
    return method not in CLASS_SPECIFIC or service.explains_something(analysis, target)


def none_chosen(methods) -> dict:
    """The line that asks for a map, shown only while none is chosen."""
    return gr.update(visible=not methods)


def fit(analysis):
    """The choice of maps for the model: a method it cannot run says so (the maps chosen stay)."""
    return (gr.update(choices=method_choices(refused(analysis)), interactive=True),)


def build(shared: Shared) -> Tab:
    empty = empty_line("overview")
    methods = gr.Dropdown(
        method_choices(),
        value=list(DEFAULT),
        multiselect=True,
        max_choices=SLOTS,
        label=T("label.overview_maps"),
        elem_id="overview-maps",
        interactive=False,
    )
    none = gr.Markdown(T("overview.none"), visible=False, elem_id="overview-none", elem_classes=["empty-state"])
    with gr.Row():
        pictures = [picture(T(f"overview.{method}"), f"overview-{slot}") for slot, method in enumerate(DEFAULT)]
    drawn = redraw(draw, [shared.session, shared.target, shared.style, methods], pictures)
    # `change`, not `input`: the selector's clear-all × sends no `input` event (Gradio 6.31's multiselect
    # empties its value and dispatches only `change`), so the four maps stayed on screen
    methods.change(**lazy(shared, "overview", drawn), **ALWAYS_LAST)
    methods.change(none_chosen, [methods], [none], **PRIVATE)
    shared.maps = methods  # the Downloads export the maps chosen here
    return Tab([drawn], empty, [methods], fit)
