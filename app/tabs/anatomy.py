"""Anatomy: how a ViT sees, step by step, on the user's image with the chosen model (Dosovitskiy et al.
2021; Vaswani et al. 2017 for scaled dot-product attention; Hendrycks & Gimpel 2016 for GELU).

Every figure is drawn from the analysis's capture and the model's own weights (`vit_core.anatomy`);
the explanations are static texts in the locale files, the numbers are written here in the request's
language.
"""

from __future__ import annotations

import math

import gradio as gr
import numpy as np
import plotly.graph_objects as go
from PIL import Image

from app import figures, service
from app.cache import Analysis
from app.i18n import counted, text
from app.render import DIVERGING, OverlayStyle, alone, overlay
from app.session import analysis_of, handler, lang, select_patch, view_of
from app.tabs.base import ALWAYS_LAST, PRIVATE, Shared, T, Tab, empty_line, lazy, picture, redraw
from vit_core.analysis import layer_predictions, mean_attention_distance, position_similarity
from vit_core.anatomy import AttentionRow, attention_row, block_internals, entropy_by_scale, gelu, patch_token
from vit_core.config import split_tokens
from vit_core.errors import VitCoreError
from vit_core.validate import check_index

HEIGHT = 320
NEAR_ZERO = 0.1  # |GELU(x)| below this counts as "near zero"


def _internals(analysis: Analysis, layer: int):
    model = service.shared_model(analysis.model_name).model
    return analysis.remember(("block internals", layer), lambda: block_internals(model, analysis.capture, layer))


def query_index(analysis: Analysis, query: str, patch: tuple[int, int]) -> int:
    """The token whose attention row is shown: the class token, or the chosen patch."""
    result = analysis.capture
    if query == "class" and result.has_class_token:
        return 0
    return result.num_prefix_tokens + patch[0] * result.grid[1] + patch[1]


def patches_step(analysis: Analysis, view: Image.Image, patch: tuple[int, int], lang: str):
    """Step 1: the image's patch grid with the chosen patch, its pixels, its flattened vector, its token."""
    result = analysis.capture
    model = service.shared_model(analysis.model_name).model
    token = patch_token(model, result, patch)
    grid_view = overlay(view, np.zeros(result.grid), OverlayStyle(opacity=0.0, grid=True, colorbar=False), mark=patch)
    data_config = service.shared_model(analysis.model_name).data_config
    shown = (token.pixels * np.array(data_config.std) + np.array(data_config.mean)).clip(0, 1)
    pixels = Image.fromarray((shown * 255).round().astype(np.uint8), "RGB").resize((160, 160), Image.NEAREST)
    size, channels = result.patch_size, token.pixels.shape[2]
    vector = go.Figure(go.Scatter(y=token.vector, mode="lines", line=dict(width=1)))
    vector = figures.finish(
        vector,
        text("anatomy.vector_title", lang, n=token.vector.size, p=size, c=channels),
        x=text("anatomy.vector_axis", lang),
        y=text("anatomy.value_axis", lang),
        height=HEIGHT,
        width=30,
    )
    strip = go.Figure(go.Heatmap(z=token.embedding[None, :], colorscale=DIVERGING, zmid=0, colorbar=dict(thickness=12)))
    strip = figures.finish(
        strip,
        text("anatomy.embedding_title", lang, d=token.embedding.size),
        yaxis=dict(visible=False),
        height=220,
        width=26,
    )
    patches = result.grid[0] * result.grid[1]
    facts = text(
        "anatomy.patch_facts",
        lang,
        row=patch[0],
        col=patch[1],
        p=size,
        c=channels,
        n=token.vector.size,
        d=token.embedding.size,
        patches=patches,
        rows=result.grid[0],
        cols=result.grid[1],
        prefix=counted("summary.prefix", result.num_prefix_tokens, lang),
        tokens=patches + result.num_prefix_tokens,
    )
    return grid_view, pixels, vector, strip, facts


def position_step(analysis: Analysis, view: Image.Image, patch: tuple[int, int]):
    """Step 2: how similar the chosen patch's position embedding is to every other patch's."""
    model = service.shared_model(analysis.model_name).model
    similarity = analysis.remember("positions", lambda: position_similarity(model))
    if similarity.shape[:2] != analysis.capture.grid:
        return None
    # nearest upsampling with the grid: each patch's own similarity, as in the ViT paper's Fig. 7 (centre);
    # the model's own (no pixel enters it), so drawn without the photo
    return alone(similarity[patch], view.size, OverlayStyle(upsample="nearest", grid=True), mark=patch)


def saturation_note(scaled_row: AttentionRow, unscaled_row: AttentionRow, d_k: int, lang: str) -> str:
    """The sentence under the saturation table, saying what its numbers show: the unscaled row saturated
    (its softmax Jacobian smaller, as Vaswani et al.'s argument predicts), or sharper but not saturated yet
    (its Jacobian larger: a nearly uniform row's is small too, about 1/√N for N keys)."""
    n = len(scaled_row.weights)
    saturated = unscaled_row.jacobian_norm < scaled_row.jacobian_norm
    return text(
        "anatomy.saturation_saturated" if saturated else "anatomy.saturation_not_yet",
        lang,
        **_saturation_numbers(scaled_row, unscaled_row, d_k),
        n=n,
        flat=1 / math.sqrt(n),  # the uniform row's ‖diag(p) − ppᵀ‖ = √(1/N − 1/N²), about 1/√N
    )


def _saturation_numbers(scaled_row: AttentionRow, unscaled_row: AttentionRow, d_k: int) -> dict:
    """The figures of a row with and without 1/√d_k that the saturation table and its sentence both quote."""
    return dict(
        dk=d_k,
        sqrt=math.sqrt(d_k),
        max_s=scaled_row.max_weight,
        max_u=unscaled_row.max_weight,
        ent_s=scaled_row.entropy,
        ent_u=unscaled_row.entropy,
        jac_s=scaled_row.jacobian_norm,
        jac_u=unscaled_row.jacobian_norm,
    )


def attention_step(analysis, view, layer: int, head: int, query_index: int, scaled: bool, lang: str):
    """Step 3: one query's row of QKᵀ/√d_k from the real q and k, its softmax, and the saturation figures."""
    result = analysis.capture
    internals = _internals(analysis, layer)
    shown = attention_row(internals.queries, internals.keys, head, query_index, scaled=scaled)
    other = attention_row(internals.queries, internals.keys, head, query_index, scaled=not scaled)
    scaled_row, unscaled_row = (shown, other) if scaled else (other, shown)
    keys = np.arange(len(shown.scores))
    row = go.Figure()
    row.add_bar(x=keys, y=shown.scores, name=text("anatomy.scores", lang), marker_color="steelblue")
    row.add_scatter(x=keys, y=shown.weights, name=text("anatomy.weights", lang), yaxis="y2", line=dict(color="crimson"))
    score_range, weight_range = figures.zero_aligned(shown.scores, [0.0, 1.0])
    row = figures.finish(
        row,
        text(
            "anatomy.row_title_scaled" if scaled else "anatomy.row_title_unscaled", lang, dk=internals.queries.shape[-1]
        ),
        x=text("anatomy.key_axis", lang),
        y=text("anatomy.scores", lang),
        yaxis=dict(range=score_range),
        y2=dict(range=weight_range, tickvals=figures.UNIT_TICKS, title=text("anatomy.weights", lang)),
        height=HEIGHT,
        width=36,
    )
    _, patch_weights = split_tokens(shown.weights[:, None], result.num_prefix_tokens)
    weights_view = overlay(view, patch_weights[:, 0].reshape(result.grid), OverlayStyle(colorbar=True))
    d_k = internals.queries.shape[-1]
    table = text(
        "anatomy.saturation",
        lang,
        **_saturation_numbers(scaled_row, unscaled_row, d_k),
        uniform=math.log(len(shown.weights)),
    )
    table += "\n\n" + saturation_note(scaled_row, unscaled_row, d_k, lang)
    factors = np.linspace(0, 1.5, 61)
    curve = go.Figure(
        go.Scatter(x=factors, y=entropy_by_scale(internals.queries, internals.keys, head, query_index, factors))
    )
    marks = [
        figures.line_mark(text(key, lang, dk=d_k), x=factor)
        for factor, key in ((1 / math.sqrt(d_k), "anatomy.scale_mark"), (1.0, "anatomy.no_scale_mark"))
    ]
    curve = figures.finish(
        curve,
        text("anatomy.entropy_title", lang),
        x=text("anatomy.factor_axis", lang),
        y=text("anatomy.entropy_axis", lang),
        height=HEIGHT,
        width=60,
        shapes=[shape for shape, _ in marks],
        annotations=[note for _, note in marks],
    )
    return row, weights_view, table, curve


def heads_step(analysis, view, layer: int, query_index: int, lang: str):
    """Step 4: every head of the block for the same query, each with its mean attention distance."""
    result = analysis.capture
    distances = analysis.remember("distances", lambda: mean_attention_distance(result))
    small = view.resize((160, round(160 * view.height / view.width)))
    pictures = []
    for head in range(result.num_heads):
        _, weights = split_tokens(result.attentions[layer, head, query_index][:, None], result.num_prefix_tokens)
        caption = text("anatomy.head_caption", lang, head=head, distance=distances[layer, head])
        pictures.append((overlay(small, weights[:, 0].reshape(result.grid), OverlayStyle(colorbar=False)), caption))
    return pictures


def mlp_step(analysis, layer: int, lang: str):
    """Step 5: GELU with this block's pre-activations under it, and how many end up negative or near zero."""
    pre = _internals(analysis, layer).mlp_pre.ravel()
    approximate = service.shared_model(analysis.model_name).cfg.act == "gelu_tanh"
    low, high = min(-4.0, float(pre.min())), max(4.0, float(pre.max()))
    density, edges = np.histogram(pre, bins=80, range=(low, high), density=True)  # 80 bars, not every value
    x = np.linspace(low, high, 400)
    figure = go.Figure()
    figure.add_bar(
        x=(edges[:-1] + edges[1:]) / 2,
        y=density,
        width=edges[1] - edges[0],
        name=text("anatomy.pre_hist", lang),
        opacity=0.5,
    )
    curve = gelu(x, approximate)
    figure.add_scatter(x=x, y=curve, name="GELU(x)", yaxis="y2", line=dict(color="crimson"))
    density_range, gelu_range = figures.zero_aligned(density, curve)
    figure = figures.finish(
        figure,
        text("anatomy.mlp_title", lang, layer=layer),
        x=text("anatomy.pre_axis", lang),
        y=text("anatomy.density", lang),
        yaxis=dict(range=density_range),
        y2=dict(range=gelu_range, title="GELU(x)"),
        height=HEIGHT,
        width=60,
    )
    activated = gelu(pre.astype(np.float64), approximate)
    facts = text(
        "anatomy.mlp_facts",
        lang,
        negative=float(np.mean(pre < 0)),
        near_zero=float(np.mean(np.abs(activated) < NEAR_ZERO)),
        threshold=NEAR_ZERO,
        count=pre.size,
        hidden=_internals(analysis, layer).mlp_pre.shape[-1],
    )
    return figure, facts


def head_step(analysis, lang: str):
    """Step 6: the class token's route through the blocks and the final logits -> softmax -> top-5."""
    result = analysis.capture
    if result.probs is None or result.layer_logits is None:
        return None, None, text("anatomy.no_head", lang)
    labels = service.labels_of(analysis)
    top = np.argsort(-result.probs, kind="stable")[:5]
    lens = layer_predictions(result, k=1).probs  # [L, C]
    route = go.Figure()
    for index in top[:3]:
        route.add_scatter(x=list(range(result.num_layers)), y=lens[:, index], mode="lines+markers", name=labels[index])
    route = figures.finish(
        route,
        text("anatomy.route_title", lang),
        x=text("anatomy.block_axis", lang),
        y="p",
        xaxis=dict(dtick=1),
        yaxis=dict(range=[0, 1]),
        height=HEIGHT,
        width=36,
    )
    bars = go.Figure()
    bars.add_bar(
        x=[labels[i] for i in top],
        y=result.logits[top],
        name=text("anatomy.logit_legend", lang),
        marker_color="grey",
        offsetgroup=0,
    )
    bars.add_bar(
        x=[labels[i] for i in top],
        y=result.probs[top],
        # softmax, or a sigmoid per label (SigLIP): an identifier, as in the texts of every language
        name=text("anatomy.probability_legend", lang, activation=result.activation),
        yaxis="y2",
        marker_color="darkorange",
        offsetgroup=1,
    )
    logit_range, p_range = figures.zero_aligned(result.logits[top], [0.0, 1.0])
    bars = figures.finish(
        bars,
        text("anatomy.logits_title", lang),
        y="logit",
        yaxis=dict(range=logit_range),
        y2=dict(range=p_range, tickvals=figures.UNIT_TICKS, title="p"),
        legend=True,  # grey and orange bars
        barmode="group",
        height=HEIGHT,
        width=36,
    )
    facts = text("anatomy.head_facts", lang, label=labels[top[0]], p=float(result.probs[top[0]]), classes=len(labels))
    return route, bars, facts


def check_head(analysis: Analysis, head: int | str) -> int:
    try:
        head = int(head)
    except (TypeError, ValueError):
        raise VitCoreError("not_an_index", what="head", value=str(head)) from None
    return check_index(head, analysis.capture.num_heads, "head")


def _patch(analysis: Analysis, patch) -> tuple[int, int]:
    grid = analysis.capture.grid
    return tuple(patch) if patch else (grid[0] // 2, grid[1] // 2)


@handler(outputs=9)
def draw_patch(session, patch, request: gr.Request = None):
    """Steps 1, 2 and 6: the chosen patch's pixels, vector, token and position; the head (once per image)."""
    analysis = analysis_of(session)
    language = lang(request)
    patch = _patch(analysis, patch)
    view = view_of(analysis)
    return (
        *patches_step(analysis, view, patch, language),
        position_step(analysis, view, patch),
        *analysis.remember(("anatomy head", language), lambda: head_step(analysis, language)),
    )


@handler(outputs=5)
def draw_attention(session, patch, layer, head, query, scaled, request: gr.Request = None):
    """Steps 3 and 4: one query's attention row with the scaling on or off, and every head of the block."""
    analysis = analysis_of(session)
    language = lang(request)
    layer = int(layer)  # vit_core.anatomy.block_internals checks the range
    head = check_head(analysis, head)
    view = view_of(analysis)
    index = query_index(analysis, query, _patch(analysis, patch))
    return (
        *attention_step(analysis, view, layer, head, index, bool(scaled), language),
        heads_step(analysis, view, layer, index, language),
    )


@handler(outputs=2)
def draw_mlp(session, layer, request: gr.Request = None):
    """Step 5: GELU over this block's real pre-activations."""
    return mlp_step(analysis_of(session), int(layer), lang(request))


def fit(analysis):
    """The first block, head 0, the centre patch."""
    layers, heads = analysis.capture.num_layers, analysis.capture.num_heads
    return (
        gr.update(minimum=0, maximum=layers - 1, value=0, step=1, interactive=True),
        gr.update(choices=[str(h) for h in range(heads)], value="0", interactive=True),
        gr.update(interactive=True),
        gr.update(interactive=True),
    )


def build(shared: Shared) -> Tab:
    empty = empty_line("anatomy")
    patch = gr.State(None)
    gr.Markdown(T("anatomy.intro"))
    with gr.Row():
        layer = gr.Slider(0, 11, value=0, step=1, label=T("label.block"), elem_id="anatomy-layer", interactive=False)
        head = gr.Dropdown(["0"], value="0", label=T("label.head"), elem_id="anatomy-head", interactive=False)
        query = gr.Radio(
            [(T("anatomy.query_class"), "class"), (T("anatomy.query_patch"), "patch")],
            value="class",
            label=T("anatomy.query"),
            elem_id="anatomy-query",
            interactive=False,
        )
        scaled = gr.Checkbox(True, label=T("anatomy.scaled"), elem_id="anatomy-scaled", interactive=False)
    gr.Markdown(T("anatomy.step1"))
    with gr.Row():
        grid = picture(T("anatomy.grid_label"), "anatomy-grid")
        pixels = picture(T("anatomy.pixels_label"), "anatomy-pixels", exact=True)  # the pixels are the lesson
        with gr.Column():
            vector = gr.Plot(show_label=False, label=T("anatomy.vector_label"), elem_id="anatomy-vector")
            embedding = gr.Plot(show_label=False, label=T("anatomy.embedding_label"), elem_id="anatomy-embedding")
    patch_facts = gr.Markdown(elem_id="anatomy-patch-facts")
    gr.Markdown(T("anatomy.step2"))
    position = picture(T("label.positions"), "anatomy-position", exact=True)
    gr.Markdown(T("anatomy.step3"))
    with gr.Row():
        row = gr.Plot(show_label=False, label=T("anatomy.row_label"), elem_id="anatomy-row")
        weights = picture(T("anatomy.weights_label"), "anatomy-weights", exact=True)
    saturation = gr.Markdown(elem_id="anatomy-saturation")
    entropy = gr.Plot(show_label=False, label=T("anatomy.entropy_label"), elem_id="anatomy-entropy")
    gr.Markdown(T("anatomy.step4"))
    heads = gr.Gallery(label=T("label.heads_gallery"), columns=6, height=260, format="png", elem_id="anatomy-heads")
    gr.Markdown(T("anatomy.step5"))
    mlp = gr.Plot(show_label=False, label=T("anatomy.mlp_label"), elem_id="anatomy-mlp")
    mlp_facts = gr.Markdown(elem_id="anatomy-mlp-facts")
    gr.Markdown(T("anatomy.step6"))
    with gr.Row():
        route = gr.Plot(show_label=False, label=T("anatomy.route_label"), elem_id="anatomy-route")
        logits = gr.Plot(show_label=False, label=T("anatomy.logits_label"), elem_id="anatomy-logits")
    head_facts = gr.Markdown(elem_id="anatomy-head-facts")

    patch_outputs = [grid, pixels, vector, embedding, patch_facts, position, route, logits, head_facts]
    drawn_patch = redraw(draw_patch, [shared.session, patch], patch_outputs)
    drawn_attention = redraw(
        draw_attention,
        [shared.session, patch, layer, head, query, scaled],
        [row, weights, saturation, entropy, heads],
    )
    drawn_mlp = redraw(draw_mlp, [shared.session, layer], [mlp, mlp_facts])
    gr.on([patch.change], **lazy(shared, "anatomy", drawn_patch), **ALWAYS_LAST)
    gr.on(
        [layer.input, head.input, query.input, scaled.input, patch.change],
        **lazy(shared, "anatomy", drawn_attention),
        **ALWAYS_LAST,
    )
    gr.on([layer.input], **lazy(shared, "anatomy", drawn_mlp), **ALWAYS_LAST)
    grid.select(select_patch, [shared.session], [patch], **PRIVATE)
    return Tab([drawn_patch, drawn_attention, drawn_mlp], empty, [layer, head, query, scaled], fit, resets=[patch])
