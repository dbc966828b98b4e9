"""A method's map for an analysis, computed once per (method, target, options) and kept with the analysis."""

from __future__ import annotations

import numpy as np

from app import service
from app.cache import Analysis
from vit_core.errors import VitCoreError
from vit_core.explain import CLASS_SPECIFIC, MODEL_RUN, NOT_IMPLEMENTED, OPT_IN, ExplainOptions, explain
from vit_core.flow import check_flow_size

METHODS = tuple(
    m
    for m in (
        "rollout",
        "grad_rollout",
        "chefer",
        "gradcam",
        "attention",
        "attnlrp",
        "cp_lrp",
        "transformer_attribution",
        "legrad",
        "flow",
    )
    if m not in NOT_IMPLEMENTED
)
FAITHFULNESS = tuple(m for m in METHODS if m not in OPT_IN)  # attention flow is refused on most models


def refusals(analysis: Analysis) -> dict[str, VitCoreError]:
    """The methods that cannot run on this analysis's model, each with the error that says why (its parameters
    give the numbers): attention flow above its token limit."""
    layers, _, tokens, _ = analysis.capture.attentions.shape
    try:
        check_flow_size(layers, tokens)
    except VitCoreError as error:
        return {"flow": error}
    return {}


def refused(analysis: Analysis) -> frozenset[str]:
    """The methods that cannot run on this analysis's model: attention flow above its token limit."""
    return frozenset(refusals(analysis))


def grid_map(
    analysis: Analysis,
    method: str,
    target: int | str | tuple[str, str] | None,
    options: ExplainOptions = ExplainOptions(),
) -> np.ndarray:
    """`[rows, cols]` map of `method`; class-specific methods explain `target` (default: the top class; an
    image–text model's label, or ("text", phrase) and any other text: that phrase)."""
    if method in MODEL_RUN:  # AttnLRP, CP-LRP, Transformer Attribution, LeGrad: a model run of their own
        chosen = service.target_class(analysis, target)
        return analysis.remember(
            ("map", method, chosen, options),
            lambda: service.model_map(analysis.model_name, analysis.pixels, method, chosen, options),
        )
    if method not in CLASS_SPECIFIC:
        return analysis.remember(("map", method, None, options), lambda: explain(analysis.capture, method, options))
    source = service.class_capture(analysis, target)
    return analysis.remember(("map", method, source.target, options), lambda: explain(source, method, options))
