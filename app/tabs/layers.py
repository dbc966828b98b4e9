"""Layers: the logit lens as a heatmap, the target's probability across blocks, and mean attention
distance against block coloured by entropy (Dosovitskiy et al. 2021, Fig. 7)."""

from __future__ import annotations

import gradio as gr
import numpy as np

from app import figures, service
from app.session import analysis_of, handler, lang
from app.tabs.base import Shared, T, Tab, empty_line, redraw
from vit_core.analysis import attention_entropy, layer_predictions, mean_attention_distance


@handler(outputs=3)
def draw(session, target, request: gr.Request = None):
    """Per-layer predictions (heatmap and one class's line) and the per-head statistics scatter."""
    analysis = analysis_of(session)
    result = analysis.capture
    language = lang(request)
    statistics = analysis.remember(
        "head statistics", lambda: (mean_attention_distance(result), attention_entropy(result))
    )
    scatter = figures.head_scatter(*statistics, language)
    if result.layer_logits is None:
        return None, None, scatter
    predictions = analysis.remember("layer predictions", lambda: layer_predictions(result, k=5))
    labels = service.labels_of(analysis)
    classes = list(dict.fromkeys([*predictions.top_indices[-1], *np.argsort(-predictions.probs.max(0))[:10]]))[:10]
    target = service.target_class(analysis, target)
    line = figures.class_line(predictions.probs[:, target], labels[target], language)
    return figures.layer_heatmap(predictions.probs, labels, [int(c) for c in classes], language), line, scatter


def build(shared: Shared) -> Tab:
    empty = empty_line("layers")
    gr.Markdown(T("layers.about"), elem_id="layers-about")  # what the logit lens is, what the colours encode
    with gr.Row():
        heatmap = gr.Plot(show_label=False, label=T("label.layer_heatmap"), elem_id="layer-heatmap")
        line = gr.Plot(show_label=False, label=T("label.class_line"), elem_id="class-line")
    scatter = gr.Plot(show_label=False, label=T("label.head_scatter"), elem_id="head-scatter")
    return Tab([redraw(draw, [shared.session, shared.target], [heatmap, line, scatter])], empty)
