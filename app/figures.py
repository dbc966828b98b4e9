"""Plotly figures for the Layers, Tokens and Faithfulness views, titled in the request's language. No gradio here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from app.i18n import DEFAULT, text
from vit_core.faithfulness import Curve

# A plain template with light grid lines: a named template ("plotly_white") is deep-copied into every
# figure, which costs ~10 ms per figure and triples the JSON sent to the browser.
LAYOUT = dict(
    template="none",
    plot_bgcolor="white",
    paper_bgcolor="white",
    font=dict(family="sans-serif", size=12),
    xaxis=dict(gridcolor="#e8e8e8", zeroline=False),
    yaxis=dict(gridcolor="#e8e8e8", zeroline=False),
    margin=dict(l=60, r=20, t=50, b=50),
    height=380,
)


def layer_heatmap(probs: np.ndarray, labels: Sequence[str], classes: Sequence[int], lang: str = DEFAULT) -> go.Figure:
    """Logit lens as a heatmap: layers (rows) x `classes` (columns), probability in each cell."""
    figure = go.Figure(
        go.Heatmap(
            z=probs[:, classes],
            x=[labels[c] for c in classes],
            y=[text("figure.block_n", lang, n=i) for i in range(probs.shape[0])],
            colorscale="Viridis",
            zmin=0,
            zmax=1,
            colorbar=dict(title="p"),
            hovertemplate="%{y}<br>%{x}: %{z:.3f}<extra></extra>",
        )
    )
    figure.update_layout(
        title=text("figure.lens_title", lang),
        xaxis_title=text("figure.class", lang),
        yaxis_title=text("figure.after", lang),
        **LAYOUT,
    )
    return figure


def class_line(probability: np.ndarray, label: str, lang: str = DEFAULT) -> go.Figure:
    """The probability of one class after each block."""
    figure = go.Figure(go.Scatter(x=list(range(len(probability))), y=probability, mode="lines+markers", name=label))
    figure.update_layout(
        title=text("figure.line_title", lang, label=label),
        xaxis_title=text("figure.block", lang),
        yaxis_title=text("figure.probability", lang),
        yaxis_range=[0, 1],
        **LAYOUT,
    )
    return figure


def head_scatter(distance: np.ndarray, entropy: np.ndarray, lang: str = DEFAULT) -> go.Figure:
    """Mean attention distance of every head against its layer, coloured by entropy (ViT paper, Fig. 7)."""
    layers, heads = distance.shape
    layer_index, head_index = np.meshgrid(np.arange(layers), np.arange(heads), indexing="ij")
    figure = go.Figure(
        go.Scatter(
            x=layer_index.ravel(),
            y=distance.ravel(),
            mode="markers",
            marker=dict(
                color=entropy.ravel(), colorscale="Viridis", size=9, colorbar=dict(title=text("figure.entropy", lang))
            ),
            customdata=np.stack([head_index.ravel(), entropy.ravel()], axis=1),
            hovertemplate="block %{x}, head %{customdata[0]}<br>%{y:.1f} px<br>H %{customdata[1]:.2f}<extra></extra>",
        )
    )
    figure.update_layout(
        title=text("figure.distance_title", lang),
        xaxis_title=text("figure.block", lang),
        yaxis_title=text("figure.distance", lang),
        **LAYOUT,
    )
    return figure


def token_norm_bars(
    norms: np.ndarray, outliers: np.ndarray, threshold: float, prefix: int, lang: str = DEFAULT
) -> go.Figure:
    """Every token's norm; high-norm outliers (Darcet et al. 2024) in red, prefix tokens in grey."""
    colours = np.where(outliers, "crimson", "steelblue").astype(object)
    colours[:prefix] = "grey"
    figure = go.Figure(go.Bar(x=list(range(len(norms))), y=norms, marker_color=list(colours)))
    figure.add_hline(y=threshold, line_dash="dash", annotation_text=text("figure.fence", lang))
    figure.update_layout(
        title=text("figure.norms_title", lang, count=int(outliers[prefix:].sum())),
        xaxis_title=text("figure.token_axis", lang),
        yaxis_title=text("figure.norm", lang),
        **LAYOUT,
    )
    return figure


def faithfulness_curves(curves: Mapping[str, tuple[Curve, Curve]], lang: str = DEFAULT) -> go.Figure:
    """Deletion (solid) and insertion (dashed) curves per method, AUC in the legend (Petsiuk et al. 2018)."""
    figure = go.Figure()
    for method, (deletion, insertion) in curves.items():
        figure.add_scatter(
            x=deletion.fractions, y=deletion.probs, name=text("figure.deletion", lang, method=method, auc=deletion.auc)
        )
        figure.add_scatter(
            x=insertion.fractions,
            y=insertion.probs,
            name=text("figure.insertion", lang, method=method, auc=insertion.auc),
            line=dict(dash="dash"),
        )
    figure.update_layout(
        title=text("figure.faithfulness_title", lang),
        xaxis_title=text("figure.fraction", lang),
        yaxis_title=text("figure.p_target", lang),
        **LAYOUT,
    )
    return figure


def head_importance_bars(drop: np.ndarray, layer: int, lang: str = DEFAULT) -> go.Figure:
    """The drop in the target probability when each head of `layer` alone is zeroed."""
    figure = go.Figure(go.Bar(x=[text("figure.head_n", lang, n=h) for h in range(len(drop))], y=drop))
    figure.update_layout(
        title=text("figure.importance_title", lang, layer=layer), yaxis_title=text("figure.drop", lang), **LAYOUT
    )
    return figure
