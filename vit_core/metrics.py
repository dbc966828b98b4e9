"""Scores for maps against a ground-truth mask (ShapeScenes): does the evidence sit on the object?

- pointing game (Zhang et al. 2016): the map's peak patch overlaps the mask (patch-level tolerance,
  like the original's 15-pixel tolerance: one 8-pixel patch of a 96-pixel scene);
- IoU of the map thresholded at its mean, upsampled to pixels, with the mask;
- the fraction of the map's (non-negative) mass that falls inside the mask.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Localization:
    pointing: float  # 1.0 hit, 0.0 miss (averaged over scenes in `mean_localization`)
    iou: float
    mass_inside: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def upsample(grid_map: np.ndarray, size: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """`[rows, cols]` -> `[height, width]` with torch's interpolation (bilinear or nearest)."""
    tensor = torch.from_numpy(np.ascontiguousarray(grid_map, dtype=np.float32))[None, None]
    align = False if mode == "bilinear" else None
    return F.interpolate(tensor, size=size, mode=mode, align_corners=align)[0, 0].numpy()


def patch_coverage(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Fraction of each patch's pixels inside the mask, `[rows, cols]`."""
    rows, cols = grid
    height, width = mask.shape
    return mask.reshape(rows, height // rows, cols, width // cols).mean(axis=(1, 3))


def localization(grid_map: np.ndarray, mask: np.ndarray) -> Localization:
    """Score one `[rows, cols]` map against one boolean `[H, W]` mask."""
    peak = np.unravel_index(int(np.argmax(grid_map)), grid_map.shape)
    pointing = float(patch_coverage(mask, grid_map.shape)[peak] > 0)
    pixels = upsample(grid_map, mask.shape)
    chosen = pixels > pixels.mean()
    union = np.logical_or(chosen, mask).sum()
    iou = float(np.logical_and(chosen, mask).sum() / union) if union else 0.0
    mass = np.clip(upsample(grid_map, mask.shape, mode="nearest"), 0, None)
    total = float(mass.sum())
    mass_inside = float(mass[mask].sum() / total) if total > 0 else 0.0
    return Localization(pointing=pointing, iou=iou, mass_inside=mass_inside)


def mean_localization(scores: list[Localization]) -> dict[str, float]:
    return {key: float(np.mean([getattr(s, key) for s in scores])) for key in ("pointing", "iou", "mass_inside")}
