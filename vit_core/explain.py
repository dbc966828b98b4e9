"""One entry point for every map: `explain(capture, method, options) -> [rows, cols]`.

Class-agnostic methods read the attention weights; class-specific ones also read the gradients of a
capture made with a target class. The methods of `MODEL_RUN` (AttnLRP, CP-LRP, Transformer Attribution,
LeGrad) run the model again on the capture's input with their own rules, so `explain` needs the model for
them too; `explain_batch` makes the maps of any method for a batch of images. All return float32 maps on
the patch grid; `upsample` and `normalise` turn them into images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch

from vit_core.capture import Capture, capture_batch
from vit_core.errors import VitCoreError
from vit_core.flow import attention_flow, check_flow_size
from vit_core.legrad import default_start_layer, legrad_batch
from vit_core.lrp import EPSILON, lrp_batch
from vit_core.maps import HeadChoice, attention_map, readout_attention_map
from vit_core.model import ViT
from vit_core.relevance import chefer, grad_rollout, gradcam, transformer_attribution_batch
from vit_core.rollout import HeadFusion, rollout
from vit_core.targets import TargetLike
from vit_core.validate import check_choice

Method = Literal[
    "attention",
    "rollout",
    "grad_rollout",
    "chefer",
    "transformer_attribution",
    "gradcam",
    "flow",
    "attnlrp",
    "cp_lrp",
    "legrad",
]
METHODS: tuple[str, ...] = get_args(Method)
CLASS_SPECIFIC = frozenset(
    {"grad_rollout", "chefer", "transformer_attribution", "gradcam", "attnlrp", "cp_lrp", "legrad"}
)
# class-specific methods that run the model themselves (their own forward and backward pass with rules)
MODEL_RUN = frozenset({"transformer_attribution", "attnlrp", "cp_lrp", "legrad"})
# methods left out of `evaluate`'s default list: attention flow costs seconds per image and is refused on
# all but the smallest models
OPT_IN = frozenset({"flow"})
# method -> the implemented method to use instead; every method is implemented now
NOT_IMPLEMENTED: dict[str, str] = {}


@dataclass(frozen=True)
class ExplainOptions:
    """Knobs of the maps; each method reads the ones it has. Defaults are the papers'."""

    layer: int | None = None  # raw attention: which layer (default: the readout's, see `explain`)
    head: HeadChoice = "mean"  # raw attention: a head index, "mean" or "max"
    query_patch: tuple[int, int] | None = None  # raw attention: a patch's row instead of the class token's
    head_fusion: HeadFusion = "mean"  # rollout
    discard_ratio: float = 0.0  # rollout and gradient rollout
    start_layer: int | None = None  # rollout, gradient rollout, Chefer, Transformer Attribution (default 0), LeGrad
    epsilon: float = EPSILON  # AttnLRP and CP-LRP: the ε-rule's stabiliser


def start_layer(method: str, options: ExplainOptions, layers: int) -> int:
    """The first layer a method uses: the option, else the method's default (LeGrad: its reference code's)."""
    if options.start_layer is not None:
        return options.start_layer
    return default_start_layer(layers) if method == "legrad" else 0


def explain(
    capture: Capture,
    method: Method,
    options: ExplainOptions = ExplainOptions(),
    model: ViT | None = None,
    target: TargetLike | None = None,
) -> np.ndarray:
    """The `[rows, cols]` map of `method` for `capture`.

    The methods of `MODEL_RUN` run `model` again on the capture's input, for `target` (default: the
    capture's target class, else the top class). Raw attention with no layer and no query patch is the
    readout's own: the last layer's class-token row, the attention pool's weights for a model read out by
    one (SigLIP), or the last layer's mean row (GAP).
    """
    check_choice(method, METHODS, "method")
    if method in NOT_IMPLEMENTED:
        raise VitCoreError("method_not_implemented", method=method, instead=NOT_IMPLEMENTED[method])
    start = start_layer(method, options, capture.num_layers)
    if method in MODEL_RUN:
        if model is None:
            raise VitCoreError("method_needs_model", method=method)
        if target is None:
            target = "top" if capture.target is None else capture.target  # type: ignore[assignment]
        pixels = torch.from_numpy(np.ascontiguousarray(capture.input))[None]
        return model_maps(model, pixels, method, target, options)[0]  # type: ignore[arg-type]
    if method == "attention":
        if options.layer is None and options.query_patch is None:
            return readout_attention_map(capture, options.head)
        layer = capture.num_layers - 1 if options.layer is None else options.layer
        return attention_map(capture, layer, options.head, options.query_patch)
    if method == "rollout":
        return rollout(capture, options.head_fusion, options.discard_ratio, start)
    if method == "grad_rollout":
        return grad_rollout(capture, options.discard_ratio, start)
    if method == "chefer":
        return chefer(capture, start)
    if method == "flow":
        return attention_flow(capture)
    return gradcam(capture)


def model_maps(
    model: ViT,
    pixels: torch.Tensor,
    method: Method,
    target: TargetLike = "top",
    options: ExplainOptions = ExplainOptions(),
) -> np.ndarray:
    """`[B, rows, cols]` maps of a `MODEL_RUN` method for `pixels` `[B, C, H, W]`: one run for the batch."""
    start = start_layer(method, options, model.cfg.depth)
    if method in ("attnlrp", "cp_lrp"):
        return np.stack([r.patches for r in lrp_batch(model, pixels, target, method, options.epsilon)])
    if method == "legrad":
        return legrad_batch(model, pixels, target, start)
    if method == "transformer_attribution":
        return transformer_attribution_batch(model, pixels, target, start)
    raise VitCoreError("unknown_choice", what="method", value=method, choices=", ".join(sorted(MODEL_RUN)))


def explain_batch(
    model: ViT,
    pixels: torch.Tensor,
    method: Method,
    target: TargetLike | None = None,
    options: ExplainOptions = ExplainOptions(),
) -> np.ndarray:
    """`[B, rows, cols]` maps of any method for `pixels` `[B, C, H, W]`; class-specific methods explain
    `target` (default: each image's top class)."""
    check_choice(method, METHODS, "method")
    if method in CLASS_SPECIFIC and target is None:
        target = "top"
    if method in MODEL_RUN:
        return model_maps(model, pixels, method, target, options)  # type: ignore[arg-type]
    captures = capture_batch(model, pixels, target=target if method in CLASS_SPECIFIC else None)
    return np.stack([explain(result, method, options) for result in captures])


def maps_for_batch(
    model: ViT,
    pixels: torch.Tensor,
    methods: Sequence[str],
    target: TargetLike = "top",
    options: ExplainOptions = ExplainOptions(),
) -> dict[str, np.ndarray]:
    """`{method: [B, rows, cols]}` for several methods on one batch `[B, C, H, W]`: one capture serves every
    capture-based method (with one backward pass for `target` when one of them is class-specific), and each
    method of `MODEL_RUN` runs once for the whole batch."""
    for method in methods:
        check_choice(method, METHODS, "method")
    if "flow" in methods:
        grid = (pixels.shape[-2] // model.cfg.patch_size) * (pixels.shape[-1] // model.cfg.patch_size)
        check_flow_size(model.cfg.depth, model.cfg.num_prefix_tokens + grid)  # before any work
    from_capture = [m for m in methods if m not in MODEL_RUN]
    captures: list[Capture] = []
    if from_capture:
        gradients = any(m in CLASS_SPECIFIC for m in from_capture)
        captures = capture_batch(model, pixels, target=target if gradients else None)
    return {
        method: model_maps(model, pixels, method, target, options)  # type: ignore[arg-type]
        if method in MODEL_RUN
        else np.stack([explain(result, method, options) for result in captures])  # type: ignore[arg-type]
        for method in methods
    }


def normalise(grid_map: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] as float32; a constant map becomes zeros."""
    low, high = float(grid_map.min()), float(grid_map.max())
    scaled = (grid_map - low) / (high - low) if high > low else np.zeros_like(grid_map)
    return scaled.astype(np.float32)
