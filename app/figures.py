"""Plotly figures for the Layers, Tokens and Faithfulness views, titled in the request's language. No gradio here."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from app.i18n import DEFAULT, counted, text
from vit_core.faithfulness import Curve

# A plain template with light grid lines: a named template ("plotly_white") is deep-copied into every
# figure, which costs ~10 ms per figure and triples the JSON sent to the browser.
LAYOUT = dict(
    template="none",
    plot_bgcolor="white",
    paper_bgcolor="white",
    font=dict(family="sans-serif", size=12),
    title_font=dict(size=15),
    margin=dict(l=20, r=20, t=20, b=20, autoexpand=True),  # automargin grows these to fit every text
    height=380,
)
# tick labels stand off their axis, so the first x label and the lowest y label never meet in the corner
AXIS = dict(gridcolor="#e8e8e8", zeroline=False, automargin=True, ticklabelstandoff=6)


def wrap(label: str, width: int = 42) -> str:
    """Break a long title into lines of at most `width` columns (a CJK character counts two), at spaces
    where there are any: plotly never wraps text, and a long title is clipped at the figure's edge."""
    lines, line, used = [], "", 0
    for word in re.split(r"(?<=\s)", label) if " " in label else list(label):
        size = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in word)
        if line and used + size > width:
            lines.append(line.rstrip())
            line, used = "", 0
        line, used = line + word, used + size
    lines.append(line.rstrip())
    return "<br>".join(lines)


def finish(
    figure: go.Figure,
    title: str,
    x: str | None = None,
    y: str | None = None,
    y2: dict | None = None,
    width: int = 42,
    legend: bool | None = None,
    xaxis: dict | None = None,
    yaxis: dict | None = None,
    **layout,
) -> go.Figure:
    """The figure in the house layout: a wrapped title above the plot, wrapped axis titles, every margin
    grown to fit its text (automargin), and any legend on the right, outside the data. A figure with a
    second y axis names its two traces by its axis titles and shows no legend. `xaxis`, `yaxis` and
    `layout` add to it (`shapes` and `annotations`: see `line_mark`).

    Returns a new figure built from one layout dict: updating a figure's layout in place walks plotly's
    property tree and costs ~10x more than building it."""
    heading = wrap(title, width + 8)
    lines = heading.count("<br>") + 1
    # room for the title: plotly's title automargin is not reliable here, so the top margin is set
    show = (y2 is None and len(figure.data) > 1) if legend is None else legend
    # beside a second y axis the legend goes above the plot, right-aligned, with room for it
    above = show and y2 is not None
    margin = {**LAYOUT["margin"], "t": 18 * lines + 30 + (22 if above else 0), **layout.pop("margin", {})}
    place = (
        dict(orientation="h", x=1, xanchor="right", y=1.02, yanchor="bottom")
        if above
        else dict(x=1.02, xanchor="left", y=1, yanchor="top")
    )
    merged = {
        **LAYOUT,
        **layout,
        "margin": margin,
        "title": dict(text=heading, x=0.01, xanchor="left", yref="container", y=1, yanchor="top", pad=dict(t=16)),
        "legend": place,
        "showlegend": show,
        "xaxis": {**AXIS, "title": dict(text=wrap(x, width) if x else None), **(xaxis or {})},
        "yaxis": {**AXIS, "title": dict(text=wrap(y, width // 2) if y else None), **(yaxis or {})},
    }
    if y2 is not None:
        title2 = y2.pop("title", None)
        merged["yaxis2"] = dict(
            overlaying="y",
            side="right",
            automargin=True,
            showgrid=False,
            title=dict(text=wrap(title2, width // 2) if title2 else None),
            **y2,
        )
    return go.Figure(data=figure.data, layout=merged)


UNIT_TICKS = [0, 0.25, 0.5, 0.75, 1]  # an axis of probabilities or weights, without ticks below its zero


def zero_aligned(left: Sequence[float], right: Sequence[float], pad: float = 0.05) -> tuple[list[float], list[float]]:
    """Ranges for two y axes over one plot (values on the left axis, values on the right) that put both zeros
    at the same height, so bars and lines read from one baseline: each axis keeps its own scale, and the
    share of the height below zero is the larger of the two."""
    spans = []
    for values in (left, right):
        low, high = min(0.0, float(np.min(values))), max(0.0, float(np.max(values)))
        high = high if high > low else 1.0  # all zero
        extra = pad * ((high - low) or 1.0)
        spans.append((low - extra if low < 0 else 0.0, high + extra if high > 0 else 0.0))
    below = max(-low / (high - low) if high > low else 0.0 for low, high in spans)
    below = min(below, 0.5)  # an axis mostly below zero (SigLIP's logits) leaves the other half the height
    ranges = []
    for low, high in spans:
        height = max(-low / below if below > 0 else 0.0, high / (1 - below), 1e-12)
        ranges.append([-below * height, (1 - below) * height])
    return ranges[0], ranges[1]


def line_mark(label: str, x: float | None = None, y: float | None = None) -> tuple[dict, dict]:
    """A dashed line across the plot at `x` (vertical) or `y` (horizontal), labelled at its top right end:
    a (shape, annotation) pair for `finish(shapes=..., annotations=...)`, as plotly's add_vline/add_hline
    draw it, without their cost (each updates the figure in place)."""
    if x is not None:
        shape = dict(type="line", x0=x, x1=x, xref="x", y0=0, y1=1, yref="y domain", line=dict(dash="dash"))
        note = dict(text=label, x=x, xref="x", y=1, yref="y domain", xanchor="left", yanchor="top", showarrow=False)
    else:
        shape = dict(type="line", x0=0, x1=1, xref="x domain", y0=y, y1=y, yref="y", line=dict(dash="dash"))
        note = dict(text=label, x=1, xref="x domain", y=y, yref="y", xanchor="right", yanchor="bottom", showarrow=False)
    return shape, note


COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


def layer_heatmap(probs: np.ndarray, labels: Sequence[str], classes: Sequence[int], lang: str = DEFAULT) -> go.Figure:
    """Logit lens (nostalgebraist 2020) as a heatmap: one row after each block (its number on the axis titled
    "after block", as the class line's x axis) x `classes` (columns), probability in each cell."""
    block = text("figure.block_n", lang, n="%{y}")
    figure = go.Figure(
        go.Heatmap(
            z=probs[:, classes],
            x=[labels[c] for c in classes],
            y=list(range(probs.shape[0])),
            colorscale="Viridis",
            zmin=0,
            zmax=1,
            colorbar=dict(title=dict(text="p", side="top"), thickness=14),
            hovertemplate=block + "<br>%{x}: %{z:.3f}<extra></extra>",
        )
    )
    return finish(
        figure,
        text("figure.lens_title", lang),
        x=text("figure.class", lang),
        y=text("figure.after_block", lang),
        xaxis=dict(tickangle=-40),
        yaxis=dict(dtick=1),
    )


def class_line(probability: np.ndarray, label: str, lang: str = DEFAULT) -> go.Figure:
    """The probability of one class after each block."""
    figure = go.Figure(go.Scatter(x=list(range(len(probability))), y=probability, mode="lines+markers", name=label))
    return finish(
        figure,
        text("figure.line_title", lang, label=label),
        x=text("figure.after_block", lang),  # the logit lens reads each block's output, as the heatmap
        y=text("figure.probability", lang),
        xaxis=dict(dtick=1),
        yaxis=dict(range=[0, 1]),
    )


def head_scatter(distance: np.ndarray, entropy: np.ndarray, lang: str = DEFAULT) -> go.Figure:
    """Mean attention distance of every head against its layer, coloured by entropy (Dosovitskiy et al. 2021,
    Fig. 7)."""
    layers, heads = distance.shape
    layer_index, head_index = np.meshgrid(np.arange(layers), np.arange(heads), indexing="ij")
    figure = go.Figure(
        go.Scatter(
            x=layer_index.ravel(),
            y=distance.ravel(),
            mode="markers",
            marker=dict(
                color=entropy.ravel(),
                colorscale="Viridis",
                size=9,
                colorbar=dict(title=dict(text=wrap(text("figure.entropy", lang), 10), side="top"), thickness=14),
            ),
            customdata=np.stack([head_index.ravel(), entropy.ravel()], axis=1),
            hovertemplate="%{x} · %{customdata[0]}<br>%{y:.1f} px<br>H %{customdata[1]:.2f}<extra></extra>",
        )
    )
    return finish(
        figure,
        text("figure.distance_title", lang),
        x=text("figure.block", lang),
        y=text("figure.distance", lang),
        xaxis=dict(dtick=1),
    )


def norms_title(count: int, lang: str = DEFAULT) -> str:
    """The token-norm plot's title: no outlier, one outlier or `count` of them (`counted`: one key each, so
    every language words each case in full)."""
    return counted("figure.norms_title", count, lang)


def token_norm_bars(
    norms: np.ndarray, outliers: np.ndarray, threshold: float, prefix: int, lang: str = DEFAULT
) -> go.Figure:
    """Every token's norm; high-norm outliers (Darcet et al. 2024) in red, prefix tokens in grey."""
    colours = np.where(outliers, "crimson", "steelblue").astype(object)
    colours[:prefix] = "grey"
    figure = go.Figure(go.Bar(x=list(range(len(norms))), y=norms, marker_color=list(colours)))
    fence, label = line_mark(text("figure.fence", lang), y=threshold)
    return finish(
        figure,
        norms_title(int(outliers[prefix:].sum()), lang),
        x=text("figure.token_axis", lang),
        y=text("figure.norm", lang),
        width=60,
        shapes=[fence],
        annotations=[label],
    )


LEGEND_COLUMNS = 26  # the longest line of a legend entry (a CJK character counts two)


def faithfulness_curves(
    curves: Mapping[str, tuple[Curve, Curve]], lang: str = DEFAULT, names: Mapping[str, str] | None = None
) -> go.Figure:
    """Deletion curves (left, solid) and insertion curves (right, dashed) side by side on one p(target) scale,
    one colour and one legend entry per method (Petsiuk et al. 2018); the AUCs are in the table under it.
    Two panels: nine methods' eighteen lines in one plot cross too often to follow. `names`: each method's
    readable name (default its id), broken into lines of at most `LEGEND_COLUMNS` in the legend so that
    every entry fits beside the plot in any language."""
    figure = go.Figure()
    for index, (key, (deletion, insertion)) in enumerate(curves.items()):
        colour = COLOURS[index % len(COLOURS)]
        method = (names or {}).get(key, key)
        figure.add_scatter(
            x=deletion.fractions,
            y=deletion.probs,
            name=wrap(method, LEGEND_COLUMNS),
            legendgroup=key,
            line=dict(color=colour),
            hovertemplate=text("figure.deletion_short", lang, method=method) + ": %{y:.3f}<extra></extra>",
        )
        figure.add_scatter(
            x=insertion.fractions,
            y=insertion.probs,
            name=wrap(method, LEGEND_COLUMNS),
            legendgroup=key,
            showlegend=False,  # the method's one entry stands for both its lines
            line=dict(color=colour, dash="dash"),
            xaxis="x2",
            yaxis="y2",
            hovertemplate=text("figure.insertion_short", lang, method=method) + ": %{y:.3f}<extra></extra>",
        )
    return finish(
        figure,
        text("figure.faithfulness_title", lang),
        x=text("figure.deletion_axis", lang),
        y=text("figure.p_target", lang),
        width=44,
        height=max(500, 40 * len(curves) + 160),  # every legend entry (two lines at most) without a scrollbar
        legend=True,
        xaxis=dict(domain=[0, 0.46]),
        xaxis2={
            **AXIS,
            "domain": [0.54, 1],
            "anchor": "y2",
            "title": dict(text=wrap(text("figure.insertion_axis", lang), 44)),
        },
        yaxis2={**AXIS, "anchor": "x2", "matches": "y"},
    )


def head_importance_bars(drop: np.ndarray, layer: int, lang: str = DEFAULT) -> go.Figure:
    """The drop in the target probability when each head of `layer` alone is zeroed (Michel et al. 2019)."""
    figure = go.Figure(go.Bar(x=[text("figure.head_n", lang, n=h) for h in range(len(drop))], y=drop))
    return finish(figure, text("figure.importance_title", lang, layer=layer), y=text("figure.drop", lang))
