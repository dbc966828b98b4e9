"""Heads: one head (or the mean / max over heads) enlarged, where a clicked patch looks, DINO's mass
threshold, the block's heads as small multiples and the blocks x heads matrix (bertviz's model view)."""

from __future__ import annotations

import gradio as gr
import numpy as np

from app.i18n import text
from app.render import OverlayStyle, cell_at, matrix_cell, overlay, thumbnail_matrix
from app.session import analysis_of, handler, head_value, lang, select_patch, style_of, thumbnail_view, view_of
from app.tabs.base import ALWAYS_LAST, PRIVATE, Shared, T, Tab, empty_line, lazy, picture, redraw
from vit_core.maps import attention_map, mass_threshold

THUMB_VIEW = 160  # pixels per small multiple in the heads gallery


def head_choices(heads: int) -> list:
    return [(T("choice.mean"), "mean"), (T("choice.max"), "max"), *[(str(h), str(h)) for h in range(heads)]]


def head_label(head, language: str) -> str:
    return text(f"choice.{head}", language) if head in ("mean", "max") else str(head)


@handler(outputs=4)
def draw(session, layer, head, query, mass, style, request: gr.Request = None):
    """The chosen head enlarged, the block's heads as small multiples, the blocks x heads matrix."""
    analysis = analysis_of(session)
    result = analysis.capture
    language = lang(request)
    style = style_of(style)
    layer, head = int(layer), head_value(head)
    query = tuple(query) if query else None
    grid_map = attention_map(result, layer, head, query)
    keep = mass_threshold(grid_map, float(mass)) if float(mass) < 1.0 else None
    main = overlay(view_of(analysis), grid_map, style, mark=query, keep=keep)
    small = OverlayStyle(style.opacity, style.cmap, style.upsample, False, False)
    thumb = thumbnail_view(analysis, THUMB_VIEW)
    gallery = [
        (
            overlay(thumb, attention_map(result, layer, h, query), small, mark=query),
            text("figure.head_n", language, n=h),
        )
        for h in range(result.num_heads)
    ]
    every = analysis.remember(
        ("all heads", query),
        lambda: np.stack(
            [
                np.stack([attention_map(result, block, h, query) for h in range(result.num_heads)])
                for block in range(result.num_layers)
            ]
        ),
    )
    selected = (layer, head) if isinstance(head, int) else (layer, None)
    matrix = thumbnail_matrix(every, matrix_cell(result.num_heads), style.cmap, selected=selected)
    who = (
        text("heads.class_token", language)
        if query is None
        else text("heads.patch", language, row=query[0], col=query[1])
    )
    caption = text("heads.caption", language, layer=layer, head=head_label(head, language), who=who)
    if keep is not None:
        caption += " " + text("heads.mass", language, mass=float(mass))
    return main, gallery, matrix, caption


def select_cell(session, evt: gr.SelectData):
    """A click on the blocks x heads matrix selects that block and head."""
    try:
        result = analysis_of(session).capture
    except Exception:
        return gr.skip(), gr.skip()
    chosen = cell_at(tuple(evt.index), (result.num_layers, result.num_heads), matrix_cell(result.num_heads))
    if chosen is None:
        return gr.skip(), gr.skip()
    return chosen[0], str(chosen[1])


def select_gallery_head(evt: gr.SelectData):
    """A click on a small multiple selects that head."""
    return str(evt.index)


def fit(analysis):
    """Block slider to the last block, head choices, query back to the class token."""
    layers, heads = analysis.capture.num_layers, analysis.capture.num_heads
    return (
        gr.update(minimum=0, maximum=layers - 1, value=layers - 1, step=1, interactive=True),
        gr.update(choices=head_choices(heads), value="mean", interactive=True),
        gr.update(interactive=True),
        gr.update(interactive=True),
    )


def build(shared: Shared) -> Tab:
    empty = empty_line("heads")
    query = gr.State(None)
    with gr.Row():
        layer = gr.Slider(0, 11, value=11, step=1, label=T("label.block"), elem_id="layer", interactive=False)
        head = gr.Dropdown(head_choices(12), value="mean", label=T("label.head"), elem_id="head", interactive=False)
        mass = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label=T("label.mass"), elem_id="mass", interactive=False)
        # the page's ordinary secondary button, as Faithfulness's beside its slider (a small one reads as inactive)
        reset = gr.Button(T("button.reset_query"), variant="secondary", elem_id="reset-query", interactive=False)
    with gr.Row():
        with gr.Column(scale=1):
            head_view = picture(T("label.head_view"), "head-view")
            caption = gr.Markdown(elem_id="head-caption")
        with gr.Column(scale=1):
            matrix = picture(T("label.matrix"), "matrix", exact=True)
    gallery = gr.Gallery(
        label=T("label.heads_gallery"),
        columns=6,
        height=260,
        format="png",
        elem_id="heads-gallery",
        allow_preview=False,  # a click selects that head
    )
    drawn = redraw(
        draw, [shared.session, layer, head, query, mass, shared.style], [head_view, gallery, matrix, caption]
    )
    shown = lazy(shared, "heads", drawn)
    gr.on([layer.input, head.input, mass.input, query.change], **shown, **ALWAYS_LAST)
    head_view.select(select_patch, [shared.session], [query], **PRIVATE)
    reset.click(lambda: None, None, [query], **PRIVATE)
    matrix.select(select_cell, [shared.session], [layer, head], **PRIVATE).success(**shown)
    gallery.select(select_gallery_head, None, [head], **PRIVATE).success(**shown)
    return Tab([drawn], empty, [layer, head, mass, reset], fit, resets=[query])
