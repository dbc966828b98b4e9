"""One entry point for every map: `explain(capture, method, options) -> [rows, cols]`.

Class-agnostic methods read the attention weights; class-specific ones also read the gradients of a
capture made with a target class. All return float32 maps on the patch grid; `upsample` and
`normalise` turn them into images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from vit_core.capture import Capture
from vit_core.errors import VitCoreError
from vit_core.maps import HeadChoice, attention_map
from vit_core.relevance import chefer, grad_rollout, gradcam
from vit_core.rollout import HeadFusion, rollout
from vit_core.validate import check_choice

Method = Literal["attention", "rollout", "grad_rollout", "chefer", "transformer_attribution", "gradcam", "flow"]
METHODS: tuple[str, ...] = get_args(Method)
CLASS_SPECIFIC = frozenset({"grad_rollout", "chefer", "transformer_attribution", "gradcam"})
# method -> the implemented method to use instead. Chefer et al.'s CVPR 2021 LRP attribution needs
# relevance rules for every layer (their ICCV 2021 method, "chefer", needs none); attention flow needs a
# max-flow through every layer.
NOT_IMPLEMENTED = {"transformer_attribution": "chefer", "flow": "rollout"}


@dataclass(frozen=True)
class ExplainOptions:
    """Knobs of the maps; each method reads the ones it has. Defaults are the papers'."""

    layer: int | None = None  # raw attention: which layer (default: the last)
    head: HeadChoice = "mean"  # raw attention: a head index, "mean" or "max"
    query_patch: tuple[int, int] | None = None  # raw attention: a patch's row instead of the class token's
    head_fusion: HeadFusion = "mean"  # rollout
    discard_ratio: float = 0.0  # rollout and gradient rollout
    start_layer: int = 0  # rollout, gradient rollout, Chefer


def explain(capture: Capture, method: Method, options: ExplainOptions = ExplainOptions()) -> np.ndarray:
    """The `[rows, cols]` map of `method` for `capture`."""
    check_choice(method, METHODS, "method")
    if method in NOT_IMPLEMENTED:
        raise VitCoreError("method_not_implemented", method=method, instead=NOT_IMPLEMENTED[method])
    if method == "attention":
        layer = capture.num_layers - 1 if options.layer is None else options.layer
        return attention_map(capture, layer, options.head, options.query_patch)
    if method == "rollout":
        return rollout(capture, options.head_fusion, options.discard_ratio, options.start_layer)
    if method == "grad_rollout":
        return grad_rollout(capture, options.discard_ratio, options.start_layer)
    if method == "chefer":
        return chefer(capture, options.start_layer)
    return gradcam(capture)


def normalise(grid_map: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] as float32; a constant map becomes zeros."""
    low, high = float(grid_map.min()), float(grid_map.max())
    scaled = (grid_map - low) / (high - low) if high > low else np.zeros_like(grid_map)
    return scaled.astype(np.float32)
