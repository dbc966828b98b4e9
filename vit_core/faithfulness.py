"""Deletion and insertion curves (Petsiuk, Das & Saenko 2018, RISE) for any patch-grid map.

Patches are ranked by the map, most relevant first. Deletion replaces them, step by step, with a
baseline and records the target probability (a faithful map makes it fall fast: low AUC is good).
Insertion starts from a blurred image and restores them (a faithful map makes it rise fast: high AUC
is good). All steps run as batched forward passes on the fast path, nothing captured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.functional import gaussian_blur

from vit_core.capture import predict
from vit_core.errors import VitCoreError
from vit_core.model import ViT
from vit_core.validate import check_index, check_range

BLUR_SIGMA = 5.0  # insertion's start: a Gaussian blur of the model's input, sigma in its pixels (RISE)


@dataclass(frozen=True)
class Curve:
    fractions: np.ndarray  # [steps + 1], fraction of patches deleted / inserted, 0 .. 1
    probs: np.ndarray  # [steps + 1], target probability at each step
    auc: float  # trapezoidal area under probs over fractions


def _patch_masks(grid_map: np.ndarray, steps: int, patch_size: int) -> torch.Tensor:
    """`[steps + 1, 1, H, W]` masks, 1 where the top-ranked patches are (0 .. all patches)."""
    rows, cols = grid_map.shape
    order = np.argsort(-grid_map.ravel(), kind="stable")
    counts = np.round(np.linspace(0, rows * cols, steps + 1)).astype(int)
    masks = np.zeros((steps + 1, rows * cols), dtype=np.float32)
    for step, count in enumerate(counts):
        masks[step, order[:count]] = 1.0
    masks = torch.from_numpy(masks.reshape(steps + 1, 1, rows, cols))
    return masks.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)


def deletion_insertion(
    model: ViT,
    pixels: torch.Tensor,
    grid_map: np.ndarray,
    target: int,
    steps: int = 16,
    blur_sigma: float = BLUR_SIGMA,
) -> tuple[Curve, Curve]:
    """(deletion, insertion) curves for one image `[C, H, W]` and its `[rows, cols]` map.

    Deletion's baseline is 0 in the normalised input (the dataset mean colour); insertion starts from
    a Gaussian blur of the image (sigma in pixels), as in RISE.
    """
    return curves_for_maps(model, pixels, [grid_map], target, steps, blur_sigma)[0]


def curves_for_maps(
    model: ViT,
    pixels: torch.Tensor,
    grid_maps: list[np.ndarray],
    target: int,
    steps: int = 16,
    blur_sigma: float = BLUR_SIGMA,
    batch: int = 128,
) -> list[tuple[Curve, Curve]]:
    """`deletion_insertion` for several maps of one image, all steps of all maps in shared batches."""
    check_range(steps, 2, 256, "steps")
    patch = model.cfg.patch_size
    grid = (pixels.shape[-2] // patch, pixels.shape[-1] // patch)
    for grid_map in grid_maps:
        if grid_map.shape != grid:
            raise VitCoreError(
                "map_grid_mismatch",
                map_rows=grid_map.shape[0],
                map_cols=grid_map.shape[-1],
                rows=grid[0],
                cols=grid[1],
            )
    if model.head is None:
        raise VitCoreError("no_head", what="faithfulness curves")
    target = check_index(target, model.cfg.num_classes, "target class")
    pixels = pixels.float().cpu()
    kernel = int(2 * round(3 * blur_sigma) + 1)
    blurred = gaussian_blur(pixels[None], [kernel, kernel], [blur_sigma, blur_sigma])[0]
    images = []
    for grid_map in grid_maps:
        masks = _patch_masks(grid_map.astype(np.float64), steps, patch)  # [S+1, 1, H, W]
        images.append(pixels[None] * (1 - masks))  # deletion: top patches -> baseline 0
        images.append(blurred[None] * (1 - masks) + pixels[None] * masks)  # insertion: restored on the blur
    stacked = torch.cat(images)  # [2 * maps * (S+1), C, H, W]
    probs = torch.cat(
        [predict(model, stacked[i : i + batch]).softmax(-1)[:, target] for i in range(0, len(stacked), batch)]
    )
    probs = probs.float().cpu().numpy().reshape(len(grid_maps), 2, steps + 1)
    fractions = np.linspace(0.0, 1.0, steps + 1)

    def curve(values: np.ndarray) -> Curve:
        return Curve(fractions=fractions, probs=values, auc=float(np.trapezoid(values, fractions)))

    return [(curve(per_map[0]), curve(per_map[1])) for per_map in probs]
