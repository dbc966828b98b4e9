"""Downloads: the overlays as PNG, the capture as NPZ, predictions and per-head statistics as JSON."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import gradio as gr
import numpy as np

from app import service
from app.cache import Analysis
from app.maps import grid_map
from app.render import overlay
from app.session import analysis_of, handler, style_of, view_of
from app.tabs import overview
from app.tabs.base import MODEL_RUN, PRIVATE, Shared, T, Tab, empty_line
from vit_core.analysis import attention_entropy, layer_predictions, mean_attention_distance


@handler(outputs=1)
def prepare(session, target, style, methods=overview.DEFAULT, request: gr.Request = None):
    """The Overview's chosen maps as PNG overlays named by method (`attnlrp.png`), the capture as NPZ,
    predictions and per-head statistics as JSON. A map the Overview leaves empty (a method refused on the
    model, a class-specific one with nothing to explain) has no file."""
    analysis = analysis_of(session)
    result = analysis.capture
    folder = Path(tempfile.mkdtemp(prefix="vit-explorer-"))
    files = []
    for method in overview.chosen(methods):
        if not overview.explainable(analysis, method, target):
            continue
        path = folder / f"{method}.png"
        overlay(view_of(analysis), grid_map(analysis, method, target), style_of(style)).save(path)
        files.append(str(path))
    arrays = {name: value for name, value in asdict(result).items() if isinstance(value, np.ndarray)}
    np.savez_compressed(folder / "capture.npz", **arrays)
    files.append(str(folder / "capture.npz"))
    (folder / "results.json").write_text(json.dumps(results_json(analysis), indent=1))
    files.append(str(folder / "results.json"))
    return files


def results_json(analysis: Analysis) -> dict:
    """Predictions, per-layer top-5 and per-head statistics of one analysis, as plain JSON."""
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


def fit(analysis):
    return (gr.update(interactive=True),)


def build(shared: Shared) -> Tab:
    empty = empty_line("downloads")
    start = gr.Button(T("button.prepare"), elem_id="prepare-downloads", interactive=False)
    files = gr.File(label=T("label.downloads"), file_count="multiple", interactive=False, elem_id="downloads")
    if shared.maps is None:
        raise RuntimeError("the Overview is built before the Downloads: they export the maps chosen there")
    # the maps shown may include methods that run the model again (AttnLRP, LeGrad, ...): one run at a time
    start.click(prepare, [shared.session, shared.target, shared.style, shared.maps], files, **MODEL_RUN, **PRIVATE)
    return Tab([], empty, [start], fit, outputs=[files])
