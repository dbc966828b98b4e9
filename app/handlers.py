"""The page's handlers: what each event does, without the layout (`app.ui` lays out and wires them).

Handlers are short: inputs -> `app.service` (model runs, cached) -> `vit_core` (maps, analyses) ->
`app.render` / `app.figures` -> outputs. Only `analyze`, the first request for a target class and the
faithfulness and ablation runs touch the model; every other handler redraws from the cached analysis.
"""

from __future__ import annotations

import functools
import inspect
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image

from app import anatomy_tab, figures, service
from app.cache import Analysis
from app.i18n import error_text, language_of, language_of_request, text
from app.render import (
    OverlayStyle,
    cell_at,
    input_view,
    overlay,
    patch_at,
    thumbnail_matrix,
)
from vit_core.analysis import (
    ablate_heads,
    attention_entropy,
    head_importance,
    layer_predictions,
    mean_attention_distance,
    patch_similarity,
    position_similarity,
    token_norms,
    token_pca_rgb,
)
from vit_core.errors import VitCoreError
from vit_core.explain import CLASS_SPECIFIC, NOT_IMPLEMENTED, ExplainOptions, explain
from vit_core.faithfulness import curves_for_maps
from vit_core.maps import attention_map, mass_threshold
from vit_core.validate import check_range

OVERVIEW_METHODS = ("attention", "rollout", "chefer", "gradcam")
MAP_METHODS = tuple(
    m for m in ("rollout", "grad_rollout", "chefer", "gradcam", "attention") if m not in NOT_IMPLEMENTED
)
THUMB = 40  # pixels per thumbnail in the layers x heads matrix
THUMB_VIEW = 160  # pixels per small multiple in the heads gallery


def sentence(message: str) -> str:
    """Capitalise the first word, unless it is a file or model name ("cut.png is truncated ...")."""
    first = message.split(" ", 1)[0]
    return message if any(c in first for c in "./:_0123456789") else message[:1].upper() + message[1:]


def errors_as_messages(fn):
    """`VitCoreError` -> `gr.Error` with the same sentence, in the request's language."""

    @functools.wraps(fn)  # Gradio reads the signature (gr.Progress, gr.SelectData, gr.Request) through __wrapped__
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except VitCoreError as error:
            request = kwargs.get("request") or next((a for a in args if isinstance(a, gr.Request)), None)
            raise gr.Error(sentence(error_text(error, _lang(request)))) from None

    return wrapped


def _lang(request: gr.Request | None) -> str:
    """The language of the request's browser (`Accept-Language`), English without one."""
    if request is None:
        return language_of(None)
    return language_of_request(request.headers.get("cookie"), request.headers.get("accept-language"))


# ---- session state ---------------------------------------------------------------------------------


def _analysis(session: dict | None) -> Analysis:
    if not session:
        raise VitCoreError("upload_image")
    return service.by_key(session.get("key"), session.get("image"), session.get("model"))


def _style(opacity: float, cmap: str, upsample: str, grid: bool, colorbar: bool) -> OverlayStyle:
    return OverlayStyle(float(opacity), cmap or "Viridis", upsample or "bilinear", bool(grid), bool(colorbar))


DISPLAY = 384  # the input view is shown at least this large; the model's input may be 96 pixels


def _view(analysis: Analysis):
    """The model's input de-normalised and enlarged for display (the maps are upsampled onto it)."""

    def make():
        view = input_view(analysis.capture, service.shared_model(analysis.model_name).data_config)
        scale = max(1.0, DISPLAY / min(view.size))
        return view.resize((round(view.width * scale), round(view.height * scale)), Image.Resampling.LANCZOS)

    return analysis.remember("input_view", make)


def _head(head: str | int | None) -> str | int:
    if head in (None, "", "mean", "max"):
        return head or "mean"
    try:
        return int(head)
    except (TypeError, ValueError):
        raise VitCoreError("bad_head_choice", value=str(head)) from None


# ---- analyze -----------------------------------------------------------------------------------------


@errors_as_messages
def on_analyze(image: str | None, model_name: str, progress=gr.Progress(), request: gr.Request = None):
    """Run the model once for (image, model): the session key, top-5, the target choices, a summary."""
    start = time.perf_counter()
    progress(0.1, desc=text("progress.loading", _lang(request)))
    service.shared_model(model_name)
    progress(0.4, desc=text("progress.running", _lang(request)))
    analysis = service.analyze(image, model_name)
    result = analysis.capture
    layers, heads = result.num_layers, result.num_heads
    session = {"key": analysis.key, "image": analysis.image_path, "model": analysis.model_name}
    labels = service.labels_of(analysis)
    top = [] if result.probs is None else [int(i) for i in np.argsort(-result.probs, kind="stable")[:5]]
    order = top + [i for i in range(len(labels)) if i not in top]
    targets = [(f"{labels[i]} ({i})", i) for i in order]
    summary = text(
        "summary.done",
        _lang(request),
        model=analysis.model_name,
        layers=layers,
        heads=heads,
        rows=result.grid[0],
        cols=result.grid[1],
        patch=result.patch_size,
        prefix=result.num_prefix_tokens,
        device=service.device_description(),
        ms=(time.perf_counter() - start) * 1000,
    )
    target = gr.Dropdown(choices=targets, value=top[0] if top else None, interactive=bool(top))
    return session, top_predictions(analysis), target, summary


# ---- each tab's controls, fitted to the model after an upload (a new model may have fewer blocks) ------


def _shape(session) -> tuple[int, int]:
    result = _analysis(session).capture
    return result.num_layers, result.num_heads


def setup_heads(session):
    """Block slider to the last block, head choices, query back to the class token."""
    layers, heads = _shape(session)
    head_choices = ["mean", "max", *[str(h) for h in range(heads)]]
    return gr.Slider(0, layers - 1, value=layers - 1, step=1), gr.Dropdown(choices=head_choices, value="mean"), None


def setup_relevance(session):
    layers, _ = _shape(session)
    return gr.Slider(0, layers - 1, value=0, step=1)


def setup_tokens(session):
    """Tokens after the last block; the patch back to the centre."""
    layers, _ = _shape(session)
    return gr.Slider(0, layers, value=layers, step=1), None


def setup_faithfulness(session):
    layers, heads = _shape(session)
    return gr.Slider(0, layers - 1, value=layers - 1, step=1), gr.CheckboxGroup(
        choices=[str(h) for h in range(heads)], value=[]
    )


def setup_anatomy(session):
    """The first block, head 0, the centre patch."""
    layers, heads = _shape(session)
    return (
        gr.Slider(0, layers - 1, value=0, step=1),
        gr.Dropdown(choices=[str(h) for h in range(heads)], value="0"),
        None,
    )


def on_new_input(image: str | None, model_name: str, progress=gr.Progress(), request: gr.Request = None):
    """A new image or model: analyse it; a cleared image changes nothing (and the chain stops quietly)."""
    if image is None:
        raise gr.Error("no image", visible=False)
    return on_analyze(image, model_name, progress, request)


def top_predictions(analysis: Analysis) -> dict[str, float]:
    probs = analysis.capture.probs
    if probs is None:
        return {"(this model has no classification head)": 1.0}
    labels = service.labels_of(analysis)
    return {f"{labels[i]} ({i})": float(probs[i]) for i in np.argsort(-probs, kind="stable")[:5]}


def _map(
    analysis: Analysis, method: str, target: int | str | None, options: ExplainOptions = ExplainOptions()
) -> np.ndarray:
    """A method's map, computed once per (method, target, options) and kept with the analysis."""
    if method not in CLASS_SPECIFIC:
        return analysis.remember(("map", method, None, options), lambda: explain(analysis.capture, method, options))
    source = service.class_capture(analysis, target)
    return analysis.remember(("map", method, source.target, options), lambda: explain(source, method, options))


# ---- overview ----------------------------------------------------------------------------------------


@errors_as_messages
def draw_overview(session, target, opacity, cmap, upsample, grid, colorbar, request: gr.Request = None):
    """The main maps side by side: raw attention (last block, head mean), rollout, Chefer, Grad-CAM."""
    analysis = _analysis(session)
    style = _style(opacity, cmap, upsample, grid, colorbar)
    pictures = []
    for method in OVERVIEW_METHODS:
        if method in CLASS_SPECIFIC and analysis.capture.probs is None:
            pictures.append(None)  # no head, no class-specific map
            continue
        pictures.append(overlay(_view(analysis), _map(analysis, method, target), style))
    return tuple(pictures)


# ---- heads -------------------------------------------------------------------------------------------


@errors_as_messages
def draw_heads(session, layer, head, query, mass, opacity, cmap, upsample, grid, colorbar, request: gr.Request = None):
    """The chosen head (or mean/max) enlarged, the layer's heads as small multiples, the layers x heads matrix."""
    analysis = _analysis(session)
    result = analysis.capture
    lang = _lang(request)
    style = _style(opacity, cmap, upsample, grid, colorbar)
    layer = int(layer)
    query = tuple(query) if query else None
    grid_map = attention_map(result, layer, _head(head), query)
    keep = mass_threshold(grid_map, float(mass)) if float(mass) < 1.0 else None
    main = overlay(_view(analysis), grid_map, style, mark=query, keep=keep)
    small = OverlayStyle(style.opacity, style.cmap, style.upsample, False, False)
    view = _view(analysis)
    thumb_view = analysis.remember(
        "thumbnail_view", lambda: view.resize((THUMB_VIEW, round(THUMB_VIEW * view.height / view.width)))
    )
    gallery = [
        (
            overlay(thumb_view, attention_map(result, layer, h, query), small, mark=query),
            text("figure.head_n", lang, n=h),
        )
        for h in range(result.num_heads)
    ]
    maps = analysis.remember(
        ("all heads", query),
        lambda: np.stack(
            [
                np.stack([attention_map(result, layer_, h, query) for h in range(result.num_heads)])
                for layer_ in range(result.num_layers)
            ]
        ),
    )
    who = text("heads.class_token", lang) if query is None else text("heads.patch", lang, row=query[0], col=query[1])
    caption = text("heads.caption", lang, layer=layer, head=head, who=who)
    if keep is not None:
        caption += " " + text("heads.mass", lang, mass=float(mass))
    return main, gallery, thumbnail_matrix(maps, THUMB, style.cmap), caption


@errors_as_messages
def select_query(session, evt: gr.SelectData, request: gr.Request = None):
    """A click on the enlarged head view: that patch becomes the query ("where does this patch look?")."""
    result = _analysis(session).capture
    patch = patch_at(tuple(evt.index), _view(_analysis(session)).size, result.grid)
    return gr.skip() if patch is None else patch


@errors_as_messages
def select_thumbnail(session, evt: gr.SelectData, request: gr.Request = None):
    """A click on the layers x heads matrix selects that block and head."""
    result = _analysis(session).capture
    chosen = cell_at(tuple(evt.index), (result.num_layers, result.num_heads), THUMB)
    if chosen is None:
        return gr.skip(), gr.skip()
    return chosen[0], str(chosen[1])


def select_gallery_head(evt: gr.SelectData):
    """A click on a small multiple selects that head."""
    return str(evt.index)


# ---- rollout & relevance -----------------------------------------------------------------------------


@errors_as_messages
def draw_method(
    session,
    method,
    head_fusion,
    discard_ratio,
    start_layer,
    target,
    opacity,
    cmap,
    upsample,
    grid,
    colorbar,
    request: gr.Request = None,
):
    """One method with its knobs."""
    analysis = _analysis(session)
    options = ExplainOptions(head_fusion=head_fusion, discard_ratio=float(discard_ratio), start_layer=int(start_layer))
    grid_map = _map(analysis, method, target, options)
    return overlay(_view(analysis), grid_map, _style(opacity, cmap, upsample, grid, colorbar))


# ---- layers ------------------------------------------------------------------------------------------


@errors_as_messages
def draw_layers(session, target, request: gr.Request = None):
    """Per-layer predictions (heatmap and one class's line) and the per-head statistics scatter."""
    analysis = _analysis(session)
    result = analysis.capture
    lang = _lang(request)
    scatter = figures.head_scatter(mean_attention_distance(result), attention_entropy(result), lang)
    if result.layer_logits is None:
        return None, None, scatter
    predictions = layer_predictions(result, k=5)
    labels = service.labels_of(analysis)
    classes = list(dict.fromkeys([*predictions.top_indices[-1], *np.argsort(-predictions.probs.max(0))[:10]]))[:10]
    target = service.target_class(analysis, target, "per-layer predictions")
    line = figures.class_line(predictions.probs[:, target], labels[target], lang)
    return figures.layer_heatmap(predictions.probs, labels, [int(c) for c in classes], lang), line, scatter


# ---- tokens ------------------------------------------------------------------------------------------


@errors_as_messages
def draw_tokens(session, token_layer, patch, opacity, cmap, upsample, grid, colorbar, request: gr.Request = None):
    """PCA of the patch tokens as RGB, token norms, similarity of a patch to all others, position similarity."""
    analysis = _analysis(session)
    result = analysis.capture
    style = _style(opacity, cmap, upsample, grid, colorbar)
    layer = int(token_layer)
    patch = tuple(patch) if patch else (result.grid[0] // 2, result.grid[1] // 2)
    view = _view(analysis)
    rgb = token_pca_rgb(result, layer)
    pca = overlay_rgb(view, rgb, style.opacity)
    norms = token_norms(result, layer)
    bars = figures.token_norm_bars(
        norms.norms, norms.outliers, norms.threshold, result.num_prefix_tokens, _lang(request)
    )
    similarity = overlay(view, patch_similarity(result, layer, patch), style, mark=patch)
    model = service.shared_model(analysis.model_name).model
    positions = analysis.remember("positions", lambda: position_similarity(model))
    if positions.shape[:2] == result.grid:
        position = overlay(view, positions[patch], style, mark=patch)
    else:
        position = None  # the input size differs from the embedding grid
    return pca, bars, similarity, position


def overlay_rgb(view, rgb: np.ndarray, opacity: float):
    picture = Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB").resize(view.size, Image.NEAREST)
    return Image.blend(view, picture, max(float(opacity), 0.5))


@errors_as_messages
def select_token_patch(session, evt: gr.SelectData, request: gr.Request = None):
    analysis = _analysis(session)
    patch = patch_at(tuple(evt.index), _view(analysis).size, analysis.capture.grid)
    return gr.skip() if patch is None else patch


# ---- faithfulness and ablation -----------------------------------------------------------------------


@errors_as_messages
def run_faithfulness(session, target, steps, progress=gr.Progress(), request: gr.Request = None):
    """Deletion and insertion curves (Petsiuk et al. 2018) for every map, in batched forward passes."""
    analysis = _analysis(session)
    report = faithfulness_report(analysis, target, int(steps), progress, _lang(request))
    curves = {m: (r["deletion"], r["insertion"]) for m, r in report.items()}
    table = {
        m: {"deletion_auc": round(r["deletion"].auc, 4), "insertion_auc": round(r["insertion"].auc, 4)}
        for m, r in report.items()
    }
    return figures.faithfulness_curves(curves, _lang(request)), table


def faithfulness_report(
    analysis: Analysis, target: int | str | None, steps: int, progress=None, lang: str = "en"
) -> dict:
    """Deletion and insertion curves for every map of `MAP_METHODS`, batched, on the model's own input."""
    check_range(steps, 2, 50, "steps")
    model, pixels, target = _rerun_inputs(analysis, target, "faithfulness curves")
    if progress is not None:
        progress(0.1, desc=text("progress.maps", lang))
    maps = {m: _map(analysis, m, target) for m in MAP_METHODS}
    if progress is not None:
        progress(0.3, desc=text("progress.faithfulness", lang, steps=steps, maps=len(maps)))
    curves = service.on_gpu(curves_for_maps)(model, pixels, list(maps.values()), target=target, steps=steps)
    return {m: {"deletion": d, "insertion": i} for m, (d, i) in zip(maps, curves, strict=True)}


def _rerun_inputs(analysis: Analysis, target, what: str) -> tuple:
    """(model, the exact input tensor, the target class) for analyses that re-run the model."""
    target = service.target_class(analysis, target, what)
    model = service.shared_model(analysis.model_name).model
    return model, torch.from_numpy(analysis.capture.input.copy()), target


@errors_as_messages
def run_ablation(session, layer, heads, target, request: gr.Request = None):
    """Zero the chosen heads of one block and report the target probability before and after."""
    analysis = _analysis(session)
    if not heads:
        raise VitCoreError("choose_heads")
    model, pixels, target = _rerun_inputs(analysis, target, "head ablations")
    base, ablated = service.on_gpu(ablate_heads)(model, pixels, [(int(layer), int(h)) for h in heads], target)
    return text(
        "ablation.result",
        _lang(request),
        label=service.labels_of(analysis)[target],
        base=base,
        ablated=ablated,
        layer=int(layer),
        heads=", ".join(heads),
        change=ablated - base,
    )


@errors_as_messages
def run_importance(session, layer, target, request: gr.Request = None):
    """Zero each head of one block alone (one batched pass) and plot the drop in the target probability."""
    model, pixels, target = _rerun_inputs(_analysis(session), target, "head ablations")
    drop = service.on_gpu(head_importance)(model, pixels, int(layer), target)
    return figures.head_importance_bars(drop, int(layer), _lang(request))


# ---- anatomy -----------------------------------------------------------------------------------------


def _anatomy_patch(analysis: Analysis, patch) -> tuple[int, int]:
    grid = analysis.capture.grid
    return tuple(patch) if patch else (grid[0] // 2, grid[1] // 2)


@errors_as_messages
def draw_anatomy_patch(session, patch, request: gr.Request = None):
    """Steps 1, 2 and 6: the chosen patch's pixels, vector, token and position; the head (once per image)."""
    analysis = _analysis(session)
    lang = _lang(request)
    patch = _anatomy_patch(analysis, patch)
    view = _view(analysis)
    return (
        *anatomy_tab.patches_step(analysis, view, patch, lang),
        anatomy_tab.position_step(analysis, view, patch),
        *analysis.remember(("anatomy head", lang), lambda: anatomy_tab.head_step(analysis, lang)),
    )


@errors_as_messages
def draw_anatomy_attention(session, patch, layer, head, query, scaled, request: gr.Request = None):
    """Steps 3 and 4: one query's attention row with the scaling on or off, and every head of the block."""
    analysis = _analysis(session)
    lang = _lang(request)
    layer = int(layer)  # vit_core.anatomy.block_internals checks the range
    head = anatomy_tab.check_head(analysis, head)
    view = _view(analysis)
    query_index = anatomy_tab.query_index(analysis, query, _anatomy_patch(analysis, patch))
    return (
        *anatomy_tab.attention_step(analysis, view, layer, head, query_index, bool(scaled), lang),
        anatomy_tab.heads_step(analysis, view, layer, query_index, lang),
    )


@errors_as_messages
def draw_anatomy_mlp(session, layer, request: gr.Request = None):
    """Step 5: GELU over this block's real pre-activations."""
    analysis = _analysis(session)
    return anatomy_tab.mlp_step(analysis, int(layer), _lang(request))


@errors_as_messages
def select_anatomy_patch(session, evt: gr.SelectData, request: gr.Request = None):
    """A click on the patch grid picks the patch the walk-through follows."""
    analysis = _analysis(session)
    patch = patch_at(tuple(evt.index), _view(analysis).size, analysis.capture.grid)
    return gr.skip() if patch is None else patch


# ---- downloads ---------------------------------------------------------------------------------------


@errors_as_messages
def prepare_downloads(session, target, opacity, cmap, upsample, grid, colorbar, request: gr.Request = None):
    """The overlays as PNG, the capture as NPZ, predictions and per-head statistics as JSON."""
    analysis = _analysis(session)
    result = analysis.capture
    style = _style(opacity, cmap, upsample, grid, colorbar)
    folder = Path(tempfile.mkdtemp(prefix="vit-explorer-"))
    files = []
    for method in OVERVIEW_METHODS:
        if method in CLASS_SPECIFIC and result.probs is None:
            continue
        path = folder / f"{method}.png"
        overlay(_view(analysis), _map(analysis, method, target), style).save(path)
        files.append(str(path))
    arrays = {name: value for name, value in asdict(result).items() if isinstance(value, np.ndarray)}
    np.savez_compressed(folder / "capture.npz", **arrays)
    files.append(str(folder / "capture.npz"))
    (folder / "results.json").write_text(json.dumps(results_json(analysis), indent=1))
    files.append(str(folder / "results.json"))
    return files


def results_json(analysis: Analysis) -> dict:
    result = analysis.capture
    summary = {
        "model": analysis.model_name,
        "grid": list(result.grid),
        "patch_size": result.patch_size,
        "num_prefix_tokens": result.num_prefix_tokens,
        "layers": result.num_layers,
        "heads": result.num_heads,
        "mean_attention_distance_px": mean_attention_distance(result).round(3).tolist(),
        "attention_entropy_nats": attention_entropy(result).round(4).tolist(),
    }
    if result.probs is not None:
        labels = service.labels_of(analysis)
        predictions = layer_predictions(result, k=5)
        summary["top5"] = [
            {"index": int(i), "label": labels[i], "probability": float(result.probs[i])}
            for i in predictions.top_indices[-1]
        ]
        summary["layer_top5"] = [
            [{"index": int(i), "label": labels[i], "probability": float(p)} for i, p in zip(row, probs, strict=True)]
            for row, probs in zip(predictions.top_indices, predictions.top_probs, strict=True)
        ]
    return summary


# ---- API (named endpoints; each takes the image, so a client needs no session) -------------------------


@errors_as_messages
def api_analyze(image, model_name):
    """Run (or reuse) the analysis; returns predictions, per-layer top-5 and per-head statistics."""
    return results_json(service.analyze(image, model_name))


@errors_as_messages
def api_explain(image, model_name, method, layer, head, query_patch, target, head_fusion, discard_ratio, start_layer):
    """One map: the overlay PNG and the patch-grid map as a nested list (float32, not normalised)."""
    analysis = service.analyze(image, model_name)
    query = None
    if query_patch and str(query_patch).strip():
        try:
            query = tuple(int(v) for v in str(query_patch).split(","))
        except ValueError:
            raise VitCoreError("bad_query_patch", value=str(query_patch)) from None
    options = ExplainOptions(
        layer=None if layer in (None, "") else int(layer),
        head=_head(head),
        query_patch=query,
        head_fusion=head_fusion or "mean",
        discard_ratio=float(discard_ratio or 0),
        start_layer=int(start_layer or 0),
    )
    grid_map = _map(analysis, method, target, options)
    return overlay(_view(analysis), grid_map), {"method": method, "map": grid_map.round(6).tolist()}


@errors_as_messages
def api_layer_predictions(image, model_name, k):
    """Top-k after every block (the logit lens)."""
    analysis = service.analyze(image, model_name)
    result = analysis.capture
    if result.layer_logits is None:
        raise VitCoreError("no_head", what="per-layer predictions")
    predictions = layer_predictions(result, k=int(k or 5))
    labels = service.labels_of(analysis)
    return {
        "layers": [
            [
                {"index": int(i), "label": labels[i], "probability": round(float(p), 6)}
                for i, p in zip(row, probs, strict=True)
            ]
            for row, probs in zip(predictions.top_indices, predictions.top_probs, strict=True)
        ]
    }


@errors_as_messages
def api_faithfulness(image, model_name, target, steps):
    """Deletion and insertion curves with AUC for every map."""
    analysis = service.analyze(image, model_name)
    report = faithfulness_report(analysis, target, int(steps or 16))
    return {
        method: {kind: {"auc": round(c.auc, 6), "probs": c.probs.round(6).tolist()} for kind, c in r.items()}
        for method, r in report.items()
    }


def when_shown(tab: str, handler, outputs: int):
    """`handler` with a leading `shown` input: it draws only when its tab is the one on screen, so an
    upload computes the visible views first and the other tabs draw when they are opened."""

    @functools.wraps(handler)
    def wrapped(shown, *args, **kwargs):
        if shown != tab:
            return gr.skip() if outputs == 1 else tuple(gr.skip() for _ in range(outputs))
        return handler(*args, **kwargs)

    signature = inspect.signature(handler)
    shown_parameter = inspect.Parameter("shown", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    wrapped.__signature__ = signature.replace(parameters=[shown_parameter, *signature.parameters.values()])
    return wrapped
