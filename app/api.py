"""The HTTP API: typed functions registered with `gr.api` (no hidden components). Each takes the image,
so a client needs no session; they share the page's analysis cache and its model queue.

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860")
    client.predict(handle_file("cat.jpg"), "bundled", api_name="/analyze")

Parameters added later go last and have defaults, so older clients keep working.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
from gradio.data_classes import FileData
from gradio.processing_utils import get_upload_folder
from gradio.utils import is_in_or_equal

from app import service
from app.i18n import error_text
from app.maps import grid_map
from app.render import overlay
from app.session import head_value, sentence, view_of
from app.tabs.base import MODEL_RUN, save_picture
from app.tabs.downloads import results_json
from app.tabs.faithfulness import faithfulness_report
from vit_core.analysis import layer_predictions
from vit_core.errors import VitCoreError
from vit_core.explain import ExplainOptions

OUTPUTS = Path(get_upload_folder()) / "vit-explorer-api"


def _image(image: FileData | dict | str | None) -> str:
    """The uploaded file's path. Only files Gradio received from this client (its upload folder) are
    read: a path anywhere else on the server's disk is refused, whether or not it exists."""
    path = image.get("path") if isinstance(image, dict) else getattr(image, "path", image)
    if not path:
        raise VitCoreError("upload_image")
    if not is_in_or_equal(str(path), get_upload_folder()):
        raise VitCoreError("not_uploaded")
    return str(path)


def _errors(fn):
    """A `VitCoreError` becomes one `gr.Error` sentence (English; the API has no page language), the page's
    rendering: no place on the server's disk (`app.i18n.SERVER_PLACES`)."""
    import functools

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except VitCoreError as error:
            raise gr.Error(sentence(error_text(error))) from None

    return wrapped


@_errors
def analyze(image: FileData, model: str = "bundled", labels: str = "") -> dict[str, Any]:
    """Run (or reuse) the analysis; returns predictions, per-layer top-5 and per-head statistics. An
    image–text model (CLIP) takes zero-shot `labels` ("a dog, a cat"): its predictions are those labels."""
    return results_json(service.analyze(_image(image), model, labels or None))


@_errors
def explain(
    image: FileData,
    model: str = "bundled",
    method: str = "rollout",
    layer: str = "",
    head: str = "mean",
    query_patch: str = "",
    target: str = "",
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    start_layer: int = 0,
    text: str = "",
) -> tuple[FileData, dict[str, Any]]:
    """One map: the overlay PNG and the patch-grid map as a nested list (float32, not normalised). An
    image–text model's class-specific maps explain `text` ("a red bus"), the phrase's similarity to the image."""
    analysis = service.analyze(_image(image), model)
    query = None
    if query_patch and str(query_patch).strip():
        try:
            query = tuple(int(v) for v in str(query_patch).split(","))
        except ValueError:
            raise VitCoreError("bad_query_patch", value=str(query_patch)) from None
    options = ExplainOptions(
        layer=None if layer in (None, "") else int(layer),
        head=head_value(head),
        query_patch=query,
        head_fusion=head_fusion or "mean",
        discard_ratio=float(discard_ratio or 0),
        start_layer=int(start_layer or 0),
    )
    chosen = ("text", text) if text else (target or None)
    values = grid_map(analysis, method, chosen, options)
    path = save_picture(overlay(view_of(analysis), values), OUTPUTS, exact=True)  # an API client gets a PNG
    report = {"method": method, "map": values.round(6).tolist()}
    if text:
        report["text"] = text.strip()
    return FileData(path=path, mime_type="image/png"), report


@_errors
def layer_predictions_(image: FileData, model: str = "bundled", k: int = 5) -> dict[str, Any]:
    """Top-k after every block (the logit lens)."""
    analysis = service.analyze(_image(image), model)
    if analysis.capture.layer_logits is None:
        raise VitCoreError("no_head", what="per-layer predictions")
    predictions = layer_predictions(analysis.capture, k=int(k or 5))
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


@_errors
def faithfulness(image: FileData, model: str = "bundled", target: str = "", steps: int = 16) -> dict[str, Any]:
    """Deletion and insertion curves with AUC for every map (Petsiuk et al. 2018)."""
    analysis = service.analyze(_image(image), model)
    report = faithfulness_report(analysis, target or None, int(steps or 16))
    return {
        method: {kind: {"auc": round(c.auc, 6), "probs": c.probs.round(6).tolist()} for kind, c in r.items()}
        for method, r in report.items()
    }


def register() -> None:
    """The four named endpoints (documented in the README), in the model queue."""
    gr.api(analyze, api_name="analyze", **MODEL_RUN)
    gr.api(explain, api_name="explain", **MODEL_RUN)
    gr.api(layer_predictions_, api_name="layer_predictions", **MODEL_RUN)
    gr.api(faithfulness, api_name="faithfulness", **MODEL_RUN)
