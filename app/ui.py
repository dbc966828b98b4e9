"""The page: `build_demo()` lays out the tabs and wires events to the handlers below.

Handlers are short: inputs -> `app.service` (model runs, cached) -> `vit_core` (maps, analyses) ->
`app.render` / `app.figures` -> outputs. Only `analyze`, the first request for a target class and the
faithfulness and ablation runs touch the model; every other handler redraws from the cached analysis.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import io
import json
import os
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
from app.i18n import gradio_translations, language_of, language_of_request, text, translate_error
from app.render import (
    COLORMAPS,
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

OVERVIEW_METHODS = ("attention", "rollout", "chefer", "gradcam")
MAP_METHODS = tuple(
    m for m in ("rollout", "grad_rollout", "chefer", "gradcam", "attention") if m not in NOT_IMPLEMENTED
)
THUMB = 40  # pixels per thumbnail in the layers x heads matrix
THUMB_VIEW = 160  # pixels per small multiple in the heads gallery
SCENES = Path(__file__).resolve().parent.parent / "assets" / "scenes"


class UploadedImage(gr.Image):
    """gr.Image that hands the uploaded file's path over unopened, so `vit_core.images.load_image` gives
    the one-sentence message for a broken, empty or enormous file instead of a Pillow traceback."""

    is_template = True  # the frontend is gr.Image's

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except Exception:
            if payload is not None and payload.path:
                return payload.path
            raise gr.Error("The uploaded file could not be read as an image.") from None


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
            raise gr.Error(sentence(translate_error(str(error), _lang(request)))) from None

    return wrapped


def _lang(request: gr.Request | None) -> str:
    """The language of the request's browser (`Accept-Language`), English without one."""
    if request is None:
        return language_of(None)
    return language_of_request(request.headers.get("cookie"), request.headers.get("accept-language"))


I18N = gr.I18n(**gradio_translations())


def T(key: str):  # noqa: N802 - the conventional name of a translation marker
    """A label the browser translates (gr.I18n)."""
    return I18N(key)


# ---- session state ---------------------------------------------------------------------------------


def _analysis(session: dict | None) -> Analysis:
    if not session:
        raise VitCoreError("upload an image first.")
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
        raise VitCoreError(f"head {head!r} is not a head index, mean or max.") from None


# ---- analyze -----------------------------------------------------------------------------------------


@errors_as_messages
def on_analyze(image: str | None, model_name: str, progress=gr.Progress(), request: gr.Request = None):
    """Run the model once for (image, model) and set up every control for this model's shape."""
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
    head_choices = ["mean", "max", *[str(h) for h in range(heads)]]
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
    return (
        session,
        None,  # the query patch: back to the class token
        None,  # the token-view patch
        top_predictions(analysis),
        gr.Dropdown(choices=targets, value=top[0] if top else None, interactive=bool(top)),
        gr.Slider(0, layers - 1, value=layers - 1, step=1),
        gr.Dropdown(choices=head_choices, value="mean"),
        gr.Slider(0, layers - 1, value=0, step=1),
        gr.Slider(0, layers, value=layers, step=1),
        gr.Slider(0, layers - 1, value=layers - 1, step=1),
        gr.CheckboxGroup(choices=[str(h) for h in range(heads)], value=[]),
        summary,
        gr.Slider(0, layers - 1, value=0, step=1),  # the Anatomy tab's block
        gr.Dropdown(choices=[str(h) for h in range(heads)], value="0"),  # and head
        None,  # and patch
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
    if not 2 <= steps <= 50:
        raise VitCoreError(f"steps must be between 2 and 50, got {steps}.")
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
        raise VitCoreError("choose at least one head to ablate.")
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
            raise VitCoreError(f"query patch {query_patch!r} must be ROW,COL.") from None
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
        raise VitCoreError("this model has no classification head, so there are no per-layer predictions.")
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


# ---- layout ------------------------------------------------------------------------------------------


def example_images() -> list[list[str]]:
    """Gradio's own photos and the first bundled scenes (their masks stay out of the gallery)."""
    photos = [gr.media.get_image(name) for name in ("cheetah1.jpg", "lion.jpg", "bus.png", "tower.jpg")]
    scenes = sorted(str(p) for p in SCENES.glob("*.png") if not p.stem.endswith("_mask"))[:8]
    return [[path] for path in photos + scenes]


class OutputImage(gr.Image):
    """gr.Image whose pictures are written once and atomically, named by content.

    Gradio rewrites a cached picture in place each time an event returns the same image; two views
    that show the same picture (the overview's raw attention and the default head view) could then
    truncate the file while the browser reads it (net::ERR_CONTENT_LENGTH_MISMATCH).
    """

    is_template = True  # the frontend is gr.Image's

    def postprocess(self, value):
        if isinstance(value, Image.Image):
            value = save_png_once(value, Path(self.GRADIO_CACHE))
        return super().postprocess(value)


def save_png_once(picture: Image.Image, cache_dir: Path) -> str:
    """PNG bytes under cache_dir/<sha256>/image.png, written to a temporary name and renamed."""
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    data = buffer.getvalue()
    path = cache_dir / hashlib.sha256(data).hexdigest()[:32] / "image.png"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
            handle.write(data)
        os.replace(handle.name, path)
    return str(path)


def _picture(label: str, elem_id: str | None = None) -> gr.Image:
    """An output image: PNG (not webp), not editable, with download and fullscreen buttons."""
    return OutputImage(
        label=label, format="png", interactive=False, buttons=["download", "fullscreen"], elem_id=elem_id
    )


def build_demo() -> gr.Blocks:
    """The whole page. Importable without launching (Spaces imports `app.demo`)."""
    private = dict(api_visibility="private")
    with gr.Blocks(title="ViT attention explorer") as demo:
        session = gr.State(None, time_to_live=3600)
        query = gr.State(None)
        token_patch = gr.State(None)
        anatomy_patch = gr.State(None)
        shown = gr.State("overview")  # the tab on screen
        with gr.Row(equal_height=True):
            gr.Markdown(T("intro"))
            # Gradio's own language switch lives in its Settings panel: this button opens it.
            gr.Markdown(T("language.code"), elem_id="language-code")  # read by LANGUAGE_JS
            language = gr.Button("🌐 English · 中文", size="sm", scale=0, min_width=140, elem_id="language")
        with gr.Row():
            with gr.Column(scale=1):
                image = UploadedImage(
                    type="filepath",
                    label=T("label.image"),
                    sources=["upload", "clipboard", "webcam"],
                    elem_id="input-image",
                )
                model = gr.Dropdown(
                    service.model_choices(),
                    value=service.default_model(),
                    allow_custom_value=True,
                    label=T("label.model"),
                    elem_id="model",
                )
                run = gr.Button(T("button.analyze"), variant="primary", elem_id="analyze")
                summary = gr.Markdown(T("summary.start"), elem_id="summary")
            with gr.Column(scale=1):
                predictions = gr.Label(num_top_classes=5, label=T("label.top5"), elem_id="top5")
                target = gr.Dropdown(
                    [],
                    label=T("label.target"),
                    allow_custom_value=False,
                    elem_id="target",
                )
        with gr.Accordion(T("accordion.overlay"), open=False):
            with gr.Row():
                opacity = gr.Slider(0, 1, value=0.55, step=0.05, label=T("label.opacity"))
                cmap = gr.Dropdown(list(COLORMAPS), value="Viridis", label=T("label.colormap"))
                upsample = gr.Radio(
                    [(T("choice.bilinear"), "bilinear"), (T("choice.nearest"), "nearest")],
                    value="bilinear",
                    label=T("label.upsampling"),
                )
                grid = gr.Checkbox(False, label=T("label.patch_grid"))
                colorbar = gr.Checkbox(True, label=T("label.colorbar"))
        style = [opacity, cmap, upsample, grid, colorbar]

        with gr.Tabs():
            with gr.Tab(T("tab.overview"), id="overview") as overview_tab:
                with gr.Row():
                    overview = [
                        _picture(title, f"overview-{method}")
                        for method, title in zip(
                            OVERVIEW_METHODS,
                            (
                                T("overview.attention"),
                                T("overview.rollout"),
                                T("overview.chefer"),
                                T("overview.gradcam"),
                            ),
                            strict=True,
                        )
                    ]
            with gr.Tab(T("tab.heads"), id="heads") as heads_tab:
                with gr.Row():
                    layer = gr.Slider(0, 11, value=11, step=1, label=T("label.block"), elem_id="layer")
                    head = gr.Dropdown(["mean", "max"], value="mean", label=T("label.head"), elem_id="head")
                    mass = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label=T("label.mass"), elem_id="mass")
                    reset = gr.Button(T("button.reset_query"), size="sm")
                with gr.Row():
                    with gr.Column(scale=1):
                        head_view = _picture(T("label.head_view"), "head-view")
                        head_caption = gr.Markdown()
                    with gr.Column(scale=1):
                        matrix = _picture(T("label.matrix"), "matrix")
                gallery = gr.Gallery(
                    label=T("label.heads_gallery"), columns=6, height=260, format="png", elem_id="heads-gallery"
                )
            with gr.Tab(T("tab.relevance"), id="relevance") as relevance_tab:
                with gr.Row():
                    method = gr.Radio(list(MAP_METHODS), value="rollout", label=T("label.method"), elem_id="method")
                    head_fusion = gr.Radio(
                        [(T(f"choice.{f}"), f) for f in ("mean", "max", "min")],
                        value="mean",
                        label=T("label.head_fusion"),
                    )
                    discard = gr.Slider(0, 0.95, value=0.0, step=0.05, label=T("label.discard"))
                    start_layer = gr.Slider(0, 11, value=0, step=1, label=T("label.start_block"))
                method_view = _picture(T("label.map"), "method-view")
                gr.Markdown(T("relevance.not_here"))
            with gr.Tab(T("tab.layers"), id="layers") as layers_tab:
                with gr.Row():
                    heatmap = gr.Plot(label=T("label.layer_heatmap"), elem_id="layer-heatmap")
                    line = gr.Plot(label=T("label.class_line"), elem_id="class-line")
                scatter = gr.Plot(label=T("label.head_scatter"), elem_id="head-scatter")
            with gr.Tab(T("tab.tokens"), id="tokens") as tokens_tab:
                token_layer = gr.Slider(0, 12, value=12, step=1, label=T("label.token_layer"), elem_id="token-layer")
                with gr.Row():
                    pca = _picture(T("label.pca"))
                    similarity = _picture(T("label.similarity"), "similarity")
                    positions = _picture(T("label.positions"))
                norms = gr.Plot(label=T("label.token_norms"))
            with gr.Tab(T("tab.faithfulness"), id="faithfulness") as faithfulness_tab:
                with gr.Row():
                    steps = gr.Slider(2, 30, value=16, step=1, label=T("label.steps"))
                    run_faith = gr.Button(T("button.run_faithfulness"), elem_id="run-faithfulness")
                faith_plot = gr.Plot(label=T("label.curves"), elem_id="faithfulness-plot")
                faith_table = gr.JSON(label=T("label.auc"), elem_id="faithfulness-table")
                with gr.Row():
                    ablate_layer = gr.Slider(0, 11, value=11, step=1, label=T("label.ablate_block"))
                    ablate_heads = gr.CheckboxGroup([], label=T("label.ablate_heads"))
                    ablate = gr.Button(T("button.ablate"))
                    sweep = gr.Button(T("button.importance"))
                ablation_text = gr.Markdown()
                importance = gr.Plot(label=T("label.importance"))
            with gr.Tab(T("tab.anatomy"), id="anatomy") as anatomy_tab_:
                gr.Markdown(T("anatomy.intro"))
                with gr.Row():
                    anatomy_layer = gr.Slider(0, 11, value=0, step=1, label=T("label.block"), elem_id="anatomy-layer")
                    anatomy_head = gr.Dropdown(["0"], value="0", label=T("label.head"), elem_id="anatomy-head")
                    anatomy_query = gr.Radio(
                        [(T("anatomy.query_class"), "class"), (T("anatomy.query_patch"), "patch")],
                        value="class",
                        label=T("anatomy.query"),
                        elem_id="anatomy-query",
                    )
                    anatomy_scaled = gr.Checkbox(True, label=T("anatomy.scaled"), elem_id="anatomy-scaled")
                gr.Markdown(T("anatomy.step1"))
                with gr.Row():
                    anatomy_grid = _picture(T("anatomy.grid_label"), "anatomy-grid")
                    anatomy_pixels = _picture(T("anatomy.pixels_label"), "anatomy-pixels")
                    with gr.Column():
                        anatomy_vector = gr.Plot(label=T("anatomy.vector_label"), elem_id="anatomy-vector")
                        anatomy_embedding = gr.Plot(label=T("anatomy.embedding_label"), elem_id="anatomy-embedding")
                anatomy_patch_facts = gr.Markdown(elem_id="anatomy-patch-facts")
                gr.Markdown(T("anatomy.step2"))
                anatomy_position = _picture(T("label.positions"), "anatomy-position")
                gr.Markdown(T("anatomy.step3"))
                with gr.Row():
                    anatomy_row = gr.Plot(label=T("anatomy.row_label"), elem_id="anatomy-row")
                    anatomy_weights = _picture(T("anatomy.weights_label"), "anatomy-weights")
                anatomy_saturation = gr.Markdown(elem_id="anatomy-saturation")
                anatomy_entropy = gr.Plot(label=T("anatomy.entropy_label"), elem_id="anatomy-entropy")
                gr.Markdown(T("anatomy.step4"))
                anatomy_heads = gr.Gallery(
                    label=T("label.heads_gallery"), columns=6, height=260, format="png", elem_id="anatomy-heads"
                )
                gr.Markdown(T("anatomy.step5"))
                anatomy_mlp = gr.Plot(label=T("anatomy.mlp_label"), elem_id="anatomy-mlp")
                anatomy_mlp_facts = gr.Markdown(elem_id="anatomy-mlp-facts")
                gr.Markdown(T("anatomy.step6"))
                with gr.Row():
                    anatomy_route = gr.Plot(label=T("anatomy.route_label"), elem_id="anatomy-route")
                    anatomy_logits = gr.Plot(label=T("anatomy.logits_label"), elem_id="anatomy-logits")
                anatomy_head_facts = gr.Markdown(elem_id="anatomy-head-facts")
            with gr.Tab(T("tab.downloads"), id="downloads") as downloads_tab:
                prepare = gr.Button(T("button.prepare"), elem_id="prepare-downloads")
                files = gr.File(
                    label=T("label.downloads"),
                    file_count="multiple",
                    interactive=False,
                    elem_id="downloads",
                )

        gr.Examples(example_images(), [image], label=T("label.examples"))

        # ---- events ----
        analyzed = dict(
            fn=on_analyze,
            inputs=[image, model],
            outputs=[
                session,
                query,
                token_patch,
                predictions,
                target,
                layer,
                head,
                start_layer,
                token_layer,
                ablate_layer,
                ablate_heads,
                summary,
                anatomy_layer,
                anatomy_head,
                anatomy_patch,
            ],
            concurrency_id="model",
            concurrency_limit=1,
            **private,
        )
        overview_args = dict(fn=draw_overview, inputs=[session, target, *style], outputs=overview, **private)
        heads_args = dict(
            fn=draw_heads,
            inputs=[session, layer, head, query, mass, *style],
            outputs=[head_view, gallery, matrix, head_caption],
            **private,
        )
        method_args = dict(
            fn=draw_method,
            inputs=[session, method, head_fusion, discard, start_layer, target, *style],
            outputs=method_view,
            **private,
        )
        layers_args = dict(fn=draw_layers, inputs=[session, target], outputs=[heatmap, line, scatter], **private)
        tokens_args = dict(
            fn=draw_tokens,
            inputs=[session, token_layer, token_patch, *style],
            outputs=[pca, norms, similarity, positions],
            **private,
        )

        anatomy_patch_args = dict(
            fn=draw_anatomy_patch,
            inputs=[session, anatomy_patch],
            outputs=[
                anatomy_grid,
                anatomy_pixels,
                anatomy_vector,
                anatomy_embedding,
                anatomy_patch_facts,
                anatomy_position,
                anatomy_route,
                anatomy_logits,
                anatomy_head_facts,
            ],
            **private,
        )
        anatomy_attention_args = dict(
            fn=draw_anatomy_attention,
            inputs=[session, anatomy_patch, anatomy_layer, anatomy_head, anatomy_query, anatomy_scaled],
            outputs=[anatomy_row, anatomy_weights, anatomy_saturation, anatomy_entropy, anatomy_heads],
            **private,
        )
        anatomy_mlp_args = dict(
            fn=draw_anatomy_mlp, inputs=[session, anatomy_layer], outputs=[anatomy_mlp, anatomy_mlp_facts], **private
        )

        def lazy(tab: str, args: dict) -> dict:
            """The same redraw, drawn only while `tab` is on screen."""
            outputs = args["outputs"] if isinstance(args["outputs"], list) else [args["outputs"]]
            return {**args, "fn": when_shown(tab, args["fn"], len(outputs)), "inputs": [shown, *args["inputs"]]}

        lazy_layers = lazy("layers", layers_args)
        lazy_tokens = lazy("tokens", tokens_args)
        lazy_anatomy = [lazy("anatomy", a) for a in (anatomy_patch_args, anatomy_attention_args, anatomy_mlp_args)]
        for tab_id, tab in [
            ("overview", overview_tab),
            ("heads", heads_tab),
            ("relevance", relevance_tab),
            ("layers", layers_tab),
            ("tokens", tokens_tab),
            ("faithfulness", faithfulness_tab),
            ("anatomy", anatomy_tab_),
            ("downloads", downloads_tab),
        ]:
            tab.select(lambda tab_id=tab_id: tab_id, None, shown, **private)
        layers_tab.select(**layers_args)
        tokens_tab.select(**tokens_args)
        anatomy_tab_.select(**anatomy_patch_args).success(**anatomy_attention_args).success(**anatomy_mlp_args)

        for trigger in (run.click, image.change, model.input):
            (
                trigger(**{**analyzed, "fn": on_analyze if trigger == run.click else on_new_input})
                .success(**overview_args)
                .success(**heads_args)
                .success(**method_args)
                .success(**lazy_layers)
                .success(**lazy_tokens)
                .success(**lazy_anatomy[0])
                .success(**lazy_anatomy[1])
                .success(**lazy_anatomy[2])
            )
        gr.on([target.input], **overview_args).success(**method_args).success(**lazy_layers)
        gr.on([layer.input, head.input, mass.input, query.change], **heads_args, trigger_mode="always_last")
        gr.on(
            [method.input, head_fusion.input, discard.input, start_layer.input],
            **method_args,
            trigger_mode="always_last",
        )
        gr.on([token_layer.input, token_patch.change], **lazy_tokens, trigger_mode="always_last")
        gr.on([s.input for s in style], **overview_args).success(**heads_args).success(**method_args).success(
            **lazy_tokens
        )
        head_view.select(select_query, [session], [query], **private)
        reset.click(lambda: None, None, [query], **private)
        matrix.select(select_thumbnail, [session], [layer, head], **private).success(**heads_args)
        gallery.select(select_gallery_head, None, [head], **private).success(**heads_args)
        similarity.select(select_token_patch, [session], [token_patch], **private)
        run_faith.click(
            run_faithfulness,
            [session, target, steps],
            [faith_plot, faith_table],
            concurrency_id="model",
            concurrency_limit=1,
            **private,
        )
        ablate.click(
            run_ablation,
            [session, ablate_layer, ablate_heads, target],
            ablation_text,
            concurrency_id="model",
            concurrency_limit=1,
            **private,
        )
        sweep.click(
            run_importance,
            [session, ablate_layer, target],
            importance,
            concurrency_id="model",
            concurrency_limit=1,
            **private,
        )
        always_last = dict(trigger_mode="always_last")
        gr.on([anatomy_patch.change], **lazy_anatomy[0], **always_last)
        gr.on(
            [anatomy_layer.input, anatomy_head.input, anatomy_query.input, anatomy_scaled.input, anatomy_patch.change],
            **lazy_anatomy[1],
            **always_last,
        )
        gr.on([anatomy_layer.input], **lazy_anatomy[2], **always_last)
        anatomy_grid.select(select_anatomy_patch, [session], [anatomy_patch], **private)
        language.click(None, js="() => { document.querySelector('footer button.settings')?.click(); }", **private)
        prepare.click(prepare_downloads, [session, target, *style], files, **private)

        # ---- named API endpoints (documented in the README) ----
        with gr.Column(visible=False):
            api_image = UploadedImage(type="filepath", label="image")
            api_model = gr.Textbox(label="model")
            api_method = gr.Textbox(label="method")
            api_layer = gr.Textbox(label="layer")
            api_head = gr.Textbox(label="head")
            api_query = gr.Textbox(label="query_patch")
            api_target = gr.Textbox(label="target")
            api_fusion = gr.Textbox(label="head_fusion")
            api_discard = gr.Number(label="discard_ratio")
            api_start = gr.Number(label="start_layer")
            api_k = gr.Number(label="k")
            api_steps = gr.Number(label="steps")
            api_json = gr.JSON()
            api_overlay = gr.Image(format="png")
            api_buttons = [gr.Button() for _ in range(4)]
        model_api = dict(concurrency_id="model", concurrency_limit=1)
        api_buttons[0].click(api_analyze, [api_image, api_model], api_json, api_name="analyze", **model_api)
        api_buttons[1].click(
            api_explain,
            [
                api_image,
                api_model,
                api_method,
                api_layer,
                api_head,
                api_query,
                api_target,
                api_fusion,
                api_discard,
                api_start,
            ],
            [api_overlay, api_json],
            api_name="explain",
            **model_api,
        )
        api_buttons[2].click(
            api_layer_predictions, [api_image, api_model, api_k], api_json, api_name="layer_predictions", **model_api
        )
        api_buttons[3].click(
            api_faithfulness,
            [api_image, api_model, api_target, api_steps],
            api_json,
            api_name="faithfulness",
            **model_api,
        )
    return demo
