"""Tokens: PCA of the patch tokens as RGB, token norms with high-norm outliers (Darcet et al. 2024),
cosine similarity to a clicked patch, and position-embedding similarity."""

from __future__ import annotations

import gradio as gr
import numpy as np
from PIL import Image

from app import figures, service
from app.render import alone, overlay
from app.session import analysis_of, handler, lang, select_patch, style_of, view_of
from app.tabs.base import ALWAYS_LAST, PRIVATE, Shared, T, Tab, empty_line, lazy, picture, redraw
from vit_core.analysis import patch_similarity, position_similarity, token_norms, token_pca_rgb


def overlay_rgb(view: Image.Image, rgb: np.ndarray, opacity: float) -> Image.Image:
    """A `[rows, cols, 3]` picture in [0, 1] blended over the view, patch by patch."""
    pixels = Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB").resize(view.size, Image.NEAREST)
    return Image.blend(view, pixels, max(float(opacity), 0.5))


@handler(outputs=4)
def draw(session, token_layer, patch, style, request: gr.Request = None):
    """PCA of the patch tokens as RGB, token norms, similarity of a patch to all others (over the image), and
    position-embedding similarity (the model's, the same for every image: drawn without it)."""
    analysis = analysis_of(session)
    result = analysis.capture
    style = style_of(style)
    layer = int(token_layer)
    patch = tuple(patch) if patch else (result.grid[0] // 2, result.grid[1] // 2)
    view = view_of(analysis)
    pca = overlay_rgb(view, analysis.remember(("pca", layer), lambda: token_pca_rgb(result, layer)), style.opacity)
    norms = analysis.remember(("norms", layer), lambda: token_norms(result, layer))
    bars = figures.token_norm_bars(
        norms.norms, norms.outliers, norms.threshold, result.num_prefix_tokens, lang(request)
    )
    similarity = overlay(view, patch_similarity(result, layer, patch), style, mark=patch)
    model = service.shared_model(analysis.model_name).model
    positions = analysis.remember("positions", lambda: position_similarity(model))
    # the model's own (no pixel enters it): drawn without the photo, which would make it look image-dependent
    position = alone(positions[patch], view.size, style, mark=patch) if positions.shape[:2] == result.grid else None
    return pca, bars, similarity, position


def fit(analysis):
    """Tokens after the last block; the patch back to the centre."""
    layers = analysis.capture.num_layers
    return (gr.update(minimum=0, maximum=layers, value=layers, step=1, interactive=True),)


def build(shared: Shared) -> Tab:
    empty = empty_line("tokens")
    patch = gr.State(None)
    token_layer = gr.Slider(
        0, 12, value=12, step=1, label=T("label.token_layer"), elem_id="token-layer", interactive=False
    )
    with gr.Row():
        pca = picture(T("label.pca"), "pca")
        similarity = picture(T("label.similarity"), "similarity")
        positions = picture(T("label.positions"), "positions", exact=True)  # drawn alone, not over the photo
    norms = gr.Plot(show_label=False, label=T("label.token_norms"), elem_id="token-norms")
    drawn = redraw(draw, [shared.session, token_layer, patch, shared.style], [pca, norms, similarity, positions])
    gr.on([token_layer.input, patch.change], **lazy(shared, "tokens", drawn), **ALWAYS_LAST)
    similarity.select(select_patch, [shared.session], [patch], **PRIVATE)
    return Tab([drawn], empty, [token_layer], fit, resets=[patch])
