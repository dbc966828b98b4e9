"""Plotly figures for the Layers, Tokens and Faithfulness views. Inputs are numpy arrays; no gradio here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from vit_core.faithfulness import Curve

_LAYOUT = dict(margin=dict(l=60, r=20, t=50, b=50), height=380, template="plotly_white")


def layer_heatmap(probs: np.ndarray, labels: Sequence[str], classes: Sequence[int]) -> go.Figure:
    """Logit lens as a heatmap: layers (rows) x `classes` (columns), probability in each cell."""
    figure = go.Figure(
        go.Heatmap(
            z=probs[:, classes],
            x=[labels[c] for c in classes],
            y=[f"block {i}" for i in range(probs.shape[0])],
            colorscale="Viridis",
            zmin=0,
            zmax=1,
            colorbar=dict(title="p"),
            hovertemplate="%{y}<br>%{x}: %{z:.3f}<extra></extra>",
        )
    )
    figure.update_layout(
        title="Per-layer predictions (logit lens)", xaxis_title="class", yaxis_title="after", **_LAYOUT
    )
    return figure


def class_line(probability: np.ndarray, label: str) -> go.Figure:
    """The probability of one class after each block."""
    figure = go.Figure(go.Scatter(x=list(range(len(probability))), y=probability, mode="lines+markers", name=label))
    figure.update_layout(
        title=f"p({label}) across layers", xaxis_title="block", yaxis_title="probability", yaxis_range=[0, 1], **_LAYOUT
    )
    return figure


def head_scatter(distance: np.ndarray, entropy: np.ndarray) -> go.Figure:
    """Mean attention distance of every head against its layer, coloured by entropy (ViT paper, Fig. 7)."""
    layers, heads = distance.shape
    layer_index, head_index = np.meshgrid(np.arange(layers), np.arange(heads), indexing="ij")
    figure = go.Figure(
        go.Scatter(
            x=layer_index.ravel(),
            y=distance.ravel(),
            mode="markers",
            marker=dict(color=entropy.ravel(), colorscale="Viridis", size=9, colorbar=dict(title="entropy (nats)")),
            customdata=np.stack([head_index.ravel(), entropy.ravel()], axis=1),
            hovertemplate="block %{x}, head %{customdata[0]}<br>distance %{y:.1f} px<br>"
            "entropy %{customdata[1]:.2f}<extra></extra>",
        )
    )
    figure.update_layout(
        title="Mean attention distance per head", xaxis_title="block", yaxis_title="distance (pixels)", **_LAYOUT
    )
    return figure


def token_norm_bars(norms: np.ndarray, outliers: np.ndarray, threshold: float, prefix: int) -> go.Figure:
    """Every token's norm; high-norm outliers (Darcet et al. 2024) in red, prefix tokens in grey."""
    colours = np.where(outliers, "crimson", "steelblue").astype(object)
    colours[:prefix] = "grey"
    figure = go.Figure(go.Bar(x=list(range(len(norms))), y=norms, marker_color=list(colours)))
    figure.add_hline(y=threshold, line_dash="dash", annotation_text="outlier fence (Q3 + 3 IQR)")
    figure.update_layout(
        title=f"Token norms ({int(outliers[prefix:].sum())} outlier patches)",
        xaxis_title="token (prefix first, then patches row by row)",
        yaxis_title="L2 norm",
        **_LAYOUT,
    )
    return figure


def faithfulness_curves(curves: Mapping[str, tuple[Curve, Curve]]) -> go.Figure:
    """Deletion (solid) and insertion (dashed) curves per method, AUC in the legend (Petsiuk et al. 2018)."""
    figure = go.Figure()
    for method, (deletion, insertion) in curves.items():
        fraction = np.linspace(0, 1, len(deletion.probs))
        figure.add_scatter(
            x=fraction, y=deletion.probs, name=f"{method} deletion (AUC {deletion.auc:.3f}, lower is better)"
        )
        figure.add_scatter(
            x=fraction,
            y=insertion.probs,
            name=f"{method} insertion (AUC {insertion.auc:.3f}, higher is better)",
            line=dict(dash="dash"),
        )
    figure.update_layout(
        title="Deletion and insertion", xaxis_title="fraction of patches", yaxis_title="p(target)", **_LAYOUT
    )
    return figure


def head_importance_bars(drop: np.ndarray, layer: int) -> go.Figure:
    """The drop in the target probability when each head of `layer` alone is zeroed."""
    figure = go.Figure(go.Bar(x=[f"head {h}" for h in range(len(drop))], y=drop))
    figure.update_layout(title=f"Head importance in block {layer}", yaxis_title="drop in p(target)", **_LAYOUT)
    return figure
