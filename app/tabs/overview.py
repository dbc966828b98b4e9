"""Overview: four maps side by side (raw attention, rollout, Chefer et al. 2021, Grad-CAM)."""

from __future__ import annotations

import gradio as gr

from app import service
from app.maps import grid_map
from app.render import overlay
from app.session import analysis_of, handler, style_of, view_of
from app.tabs.base import Shared, T, Tab, empty_line, picture, redraw
from vit_core.explain import CLASS_SPECIFIC

METHODS = ("attention", "rollout", "chefer", "gradcam")


@handler(outputs=len(METHODS))
def draw(session, target, style, request: gr.Request = None):
    """The main maps side by side; class-specific ones explain the target (a class, an image–text model's label
    or typed prompt) and are empty for a model without a head (or an image–text model with neither)."""
    analysis = analysis_of(session)
    pictures = []
    for method in METHODS:
        if method in CLASS_SPECIFIC and not service.explains_something(analysis, target):
            pictures.append(None)
            continue
        pictures.append(overlay(view_of(analysis), grid_map(analysis, method, target), style_of(style)))
    return tuple(pictures)


def build(shared: Shared) -> Tab:
    empty = empty_line("overview")
    with gr.Row():
        pictures = [picture(T(f"overview.{method}"), f"overview-{method}") for method in METHODS]
    return Tab([redraw(draw, [shared.session, shared.target, shared.style], pictures)], empty)
