"""The Anatomy tab: how a ViT sees, step by step, on the user's image with the chosen model.

Every figure is drawn from the analysis's capture and the model's own weights (`vit_core.anatomy`);
the explanations are static texts in the locale files, the numbers are written here in the request's
language.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from app import figures, service
from app.cache import Analysis
from app.i18n import text
from app.render import OverlayStyle, overlay
from vit_core.analysis import layer_predictions, mean_attention_distance, position_similarity
from vit_core.anatomy import attention_row, block_internals, entropy_by_scale, gelu, patch_token
from vit_core.config import split_tokens
from vit_core.errors import VitCoreError
from vit_core.validate import check_index

_LAYOUT = {**figures.LAYOUT, "margin": dict(l=50, r=20, t=45, b=40), "height": 300}
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
    vector.update_layout(
        title=text("anatomy.vector_title", lang, n=token.vector.size, p=size, c=channels),
        xaxis_title=text("anatomy.vector_axis", lang),
        **_LAYOUT,
    )
    strip = go.Figure(go.Heatmap(z=token.embedding[None, :], colorscale="RdBu", zmid=0, showscale=True))
    strip.update_layout(
        title=text("anatomy.embedding_title", lang, d=token.embedding.size),
        **{**_LAYOUT, "height": 200, "yaxis": dict(visible=False)},
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
        prefix=result.num_prefix_tokens,
        tokens=patches + result.num_prefix_tokens,
    )
    return grid_view, pixels, vector, strip, facts


def position_step(analysis: Analysis, view: Image.Image, patch: tuple[int, int]):
    """Step 2: how similar the chosen patch's position embedding is to every other patch's."""
    model = service.shared_model(analysis.model_name).model
    similarity = analysis.remember("positions", lambda: position_similarity(model))
    if similarity.shape[:2] != analysis.capture.grid:
        return None
    # nearest upsampling with the grid: each patch's own similarity, as in the ViT paper's Fig. 7 (centre)
    return overlay(view, similarity[patch], OverlayStyle(upsample="nearest", grid=True), mark=patch)


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
    row.update_layout(
        title=text(
            "anatomy.row_title_scaled" if scaled else "anatomy.row_title_unscaled", lang, dk=internals.queries.shape[-1]
        ),
        xaxis_title=text("anatomy.key_axis", lang),
        yaxis2=dict(overlaying="y", side="right", range=[0, 1], title=text("anatomy.weights", lang)),
        legend=dict(orientation="h", y=-0.25),
        **_LAYOUT,
    )
    _, patch_weights = split_tokens(shown.weights[:, None], result.num_prefix_tokens)
    weights_view = overlay(view, patch_weights[:, 0].reshape(result.grid), OverlayStyle(colorbar=True))
    d_k = internals.queries.shape[-1]
    table = text(
        "anatomy.saturation",
        lang,
        dk=d_k,
        sqrt=math.sqrt(d_k),
        max_s=scaled_row.max_weight,
        max_u=unscaled_row.max_weight,
        ent_s=scaled_row.entropy,
        ent_u=unscaled_row.entropy,
        jac_s=scaled_row.jacobian_norm,
        jac_u=unscaled_row.jacobian_norm,
        uniform=math.log(len(shown.weights)),
    )
    factors = np.linspace(0, 1.5, 61)
    curve = go.Figure(
        go.Scatter(x=factors, y=entropy_by_scale(internals.queries, internals.keys, head, query_index, factors))
    )
    for factor, key in ((1 / math.sqrt(d_k), "anatomy.scale_mark"), (1.0, "anatomy.no_scale_mark")):
        curve.add_vline(x=factor, line_dash="dash", annotation_text=text(key, lang, dk=d_k))
    curve.update_layout(
        title=text("anatomy.entropy_title", lang),
        xaxis_title=text("anatomy.factor_axis", lang),
        yaxis_title=text("anatomy.entropy_axis", lang),
        **_LAYOUT,
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
    figure.add_scatter(x=x, y=gelu(x, approximate), name="GELU(x)", yaxis="y2", line=dict(color="crimson"))
    figure.update_layout(
        title=text("anatomy.mlp_title", lang, layer=layer),
        xaxis_title=text("anatomy.pre_axis", lang),
        yaxis2=dict(overlaying="y", side="right", title="GELU(x)"),
        legend=dict(orientation="h", y=-0.25),
        **_LAYOUT,
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
    route.update_layout(
        title=text("anatomy.route_title", lang),
        xaxis_title=text("anatomy.block_axis", lang),
        yaxis_range=[0, 1],
        **_LAYOUT,
    )
    bars = go.Figure()
    bars.add_bar(x=[labels[i] for i in top], y=result.logits[top], name="logit", marker_color="grey")
    bars.add_bar(x=[labels[i] for i in top], y=result.probs[top], name="softmax", yaxis="y2", marker_color="darkorange")
    bars.update_layout(
        title=text("anatomy.logits_title", lang),
        yaxis_title="logit",
        yaxis2=dict(overlaying="y", side="right", range=[0, 1], title="p"),
        barmode="group",
        **_LAYOUT,
    )
    facts = text("anatomy.head_facts", lang, label=labels[top[0]], p=float(result.probs[top[0]]), classes=len(labels))
    return route, bars, facts


def check_head(analysis: Analysis, head: int | str) -> int:
    try:
        head = int(head)
    except (TypeError, ValueError):
        raise VitCoreError("not_an_index", what="head", value=str(head)) from None
    return check_index(head, analysis.capture.num_heads, "head")
