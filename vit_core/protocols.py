"""The published benchmarks of relevance maps, for users who have the data (Chefer, Gur & Wolf, CVPR 2021):

- ImageNet-segmentation (Guillaumin et al. 2014; `gtsegs_ijcv.mat`, 4,276 images with foreground masks,
  MATLAB v7.3 = HDF5): each map, upsampled bilinearly to the input and min-max normalised, is split at
  its mean into foreground and background; pixel accuracy and mean IoU (background and foreground) over
  all pixels of all images, and mean average precision of the map as a foreground score per image;
- perturbation on the ImageNet validation set (synset folders): the input pixels are ranked by the
  upsampled map, the top (positive) or bottom (negative) 10 %, 20 %, ..., 90 % set to black, and the
  top-1 accuracy recorded; the AUC is the trapezoid over the fractions 0, 0.1, ..., 0.9 of the accuracy
  in percent, the unperturbed 0 % point included (90 at most).

Maps explain the top prediction, as in their code. Images are processed in batches; the maps come from
`vit_core.explain.maps_for_batch` (one capture per batch, one run per LRP-family method).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vit_core.capture import predict
from vit_core.errors import VitCoreError
from vit_core.explain import ExplainOptions, maps_for_batch
from vit_core.validate import check_choice
from vit_core.zoo import LoadedModel

Perturbation = Literal["positive", "negative"]
REMOVAL_STEPS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".webp", ".bmp", ".jpe")
SEGMENTATION_LAYOUT = "gtsegs_ijcv.mat (MATLAB v7.3 / HDF5 with /value/img and /value/gt)"
VAL_LAYOUT = "an ImageNet validation folder with one sub-folder per synset (n01440764, ...) holding its images"


# ---- ImageNet-segmentation ---------------------------------------------------------------------------------


def read_segmentation(path: str | Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(image `[H, W, 3]` uint8, mask `[H, W]` bool) for every entry of gtsegs_ijcv.mat.

    The file stores, under /value/img, references to `[3, W, H]` images and, under /value/gt, references to
    a 1x1 cell whose reference points at the `[W, H]` mask (MATLAB's column-major order)."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise VitCoreError("dataset_path_missing", path=str(path))
    try:
        file = h5py.File(path, "r")
    except OSError:
        raise VitCoreError("dataset_layout", name=path.name, expected=SEGMENTATION_LAYOUT) from None
    with file:
        if "value/img" not in file or "value/gt" not in file:
            raise VitCoreError("dataset_layout", name=path.name, expected=SEGMENTATION_LAYOUT)
        images, masks = file["value/img"], file["value/gt"]
        if len(images) != len(masks):
            raise VitCoreError("dataset_layout", name=path.name, expected=SEGMENTATION_LAYOUT)
        for index in range(len(images)):
            try:
                image = np.array(file[images[index, 0]]).transpose(2, 1, 0)  # [H, W, 3]
                mask = np.array(file[file[masks[index, 0]][0, 0]]).transpose(1, 0)  # [H, W]
            except (KeyError, TypeError, ValueError, IndexError):
                raise VitCoreError("dataset_layout", name=path.name, expected=SEGMENTATION_LAYOUT) from None
            if image.ndim != 3 or image.shape[-1] != 3 or mask.shape != image.shape[:2]:
                raise VitCoreError("dataset_layout", name=path.name, expected=SEGMENTATION_LAYOUT)
            yield image.astype(np.uint8), mask > 0


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Σₙ (Rₙ − Rₙ₋₁) Pₙ over the distinct score thresholds, highest first (scikit-learn's definition)."""
    order = np.argsort(-scores, kind="mergesort")
    ranked, positive = scores[order], labels[order].astype(np.float64)
    if positive.sum() == 0:
        return 0.0
    last = np.r_[np.nonzero(np.diff(ranked))[0], ranked.size - 1]  # the last index of every threshold
    true_positives = np.cumsum(positive)[last]
    precision = true_positives / (last + 1)
    recall = true_positives / positive.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


@dataclass
class SegmentationScores:
    """Running totals over images, as Chefer et al.'s evaluation accumulates them."""

    correct: int = 0
    labelled: int = 0
    intersection: np.ndarray | None = None  # [2]: background, foreground
    union: np.ndarray | None = None  # [2]
    precisions: list[float] | None = None

    def add(self, heatmap: np.ndarray, mask: np.ndarray) -> None:
        """One image: a map upsampled to the mask's size `[H, W]` (any scale) and the boolean mask."""
        low, high = float(heatmap.min()), float(heatmap.max())
        scaled = (heatmap - low) / (high - low) if high > low else np.zeros_like(heatmap, dtype=np.float64)
        predicted = scaled > scaled.mean()  # foreground where the normalised map is above its mean
        self.correct += int((predicted == mask).sum())
        self.labelled += mask.size
        inter = np.array([(~predicted & ~mask).sum(), (predicted & mask).sum()])
        union = np.array([(~predicted | ~mask).sum(), (predicted | mask).sum()])
        self.intersection = inter if self.intersection is None else self.intersection + inter
        self.union = union if self.union is None else self.union + union
        # AP over both channels at once: background scored 1 − map, foreground scored map
        scores = np.concatenate([1 - scaled.ravel(), scaled.ravel()])
        labels = np.concatenate([~mask.ravel(), mask.ravel()])
        self.precisions = [*(self.precisions or []), average_precision(scores, labels)]

    def report(self) -> dict[str, float]:
        eps = np.spacing(1.0)
        return {
            "pixel_accuracy": self.correct / (eps + self.labelled),
            "mean_iou": float(np.mean(self.intersection / (eps + self.union))),
            "mean_average_precision": float(np.mean(self.precisions)),
        }


def _model_input(loaded: LoadedModel, image: Image.Image) -> torch.Tensor:
    """Resize to the model's input size (bilinear, no crop, so the mask still fits) and normalise."""
    config = loaded.data_config
    height, width = config.input_size[1:]
    pixels = torch.from_numpy(np.asarray(image.convert("RGB").resize((width, height), Image.BILINEAR)).copy())
    pixels = pixels.permute(2, 0, 1).float() / 255  # [3, H, W] in [0, 1]
    mean, std = torch.tensor(config.mean)[:, None, None], torch.tensor(config.std)[:, None, None]
    return (pixels - mean) / std


def _upsample(maps: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """`[B, rows, cols]` -> `[B, H, W]`, bilinear as their `interpolate(scale_factor=patch)`."""
    grids = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[:, None]
    return F.interpolate(grids, size=size, mode="bilinear", align_corners=False)[:, 0]


def _batches(items: Iterator, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def evaluate_segmentation(
    loaded: LoadedModel,
    path: str | Path,
    methods: Sequence[str],
    n: int | None = None,
    batch: int = 16,
    options: ExplainOptions = ExplainOptions(),
) -> dict:
    """Pixel accuracy, mean IoU and mean AP of every method's map on ImageNet-segmentation (the first `n`)."""
    height, width = loaded.data_config.input_size[1:]
    scores = {method: SegmentationScores() for method in methods}
    count = 0
    entries = read_segmentation(path)
    for chunk in _batches((entry for i, entry in enumerate(entries) if n is None or i < n), batch):
        pixels = torch.stack([_model_input(loaded, Image.fromarray(image)) for image, _ in chunk])
        masks = [np.asarray(Image.fromarray(mask).resize((width, height), Image.NEAREST)) for _, mask in chunk]
        for method, maps in maps_for_batch(loaded.model, pixels, methods, "top", options).items():
            for heatmap, mask in zip(_upsample(maps, (height, width)).numpy(), masks, strict=True):
                scores[method].add(heatmap.astype(np.float64), mask)
        count += len(chunk)
    if count == 0:
        raise VitCoreError("dataset_empty", name=Path(path).name, expected=SEGMENTATION_LAYOUT)
    return {"dataset": "imagenet-seg", "n": count, "scores": {m: s.report() for m, s in scores.items()}}


# ---- perturbation on ImageNet val --------------------------------------------------------------------------


def read_val_folder(path: str | Path, limit: int | None = None) -> list[tuple[Path, int]]:
    """(image, class index) for a folder of synset folders, classes in sorted synset order (torchvision's
    `ImageFolder` order, which is the ImageNet class index)."""
    root = Path(path)
    if not root.exists():
        raise VitCoreError("dataset_path_missing", path=str(root))
    synsets = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    items = [
        (image, label)
        for label, folder in enumerate(synsets)
        for image in sorted(folder.iterdir())
        if image.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not items:
        raise VitCoreError("dataset_layout", name=root.name, expected=VAL_LAYOUT)
    if limit is not None:  # a spread over the classes rather than the first folders
        items = [items[i] for i in np.linspace(0, len(items) - 1, min(limit, len(items))).round().astype(int)]
    return items


def removal_masks(maps: torch.Tensor, mode: Perturbation) -> torch.Tensor:
    """`[B, H, W]` upsampled maps -> `[steps, B, H, W]` booleans: the pixels removed at each of `REMOVAL_STEPS`,
    the highest-ranked first (positive) or the lowest-ranked first (negative)."""
    batch, height, width = maps.shape
    ranked = (-maps if mode == "negative" else maps).reshape(batch, -1)
    order = ranked.argsort(dim=-1, descending=True, stable=True)  # [B, H*W]
    removed = torch.zeros(len(REMOVAL_STEPS), batch, height * width, dtype=torch.bool)
    for step, fraction in enumerate(REMOVAL_STEPS):
        count = int(height * width * fraction)
        removed[step].scatter_(1, order[:, :count], True)
    return removed.reshape(len(REMOVAL_STEPS), batch, height, width)


def perturbation_auc(accuracies: Sequence[float]) -> float:
    """Trapezoid over the fractions 0, 0.1, ..., 0.9 of the accuracy in percent (the 0 % point included)."""
    return float(np.trapezoid(100 * np.asarray(accuracies, dtype=np.float64), REMOVAL_STEPS))


def evaluate_perturbation(
    loaded: LoadedModel,
    path: str | Path,
    methods: Sequence[str],
    mode: str = "positive",
    n: int | None = None,
    batch: int = 16,
    options: ExplainOptions = ExplainOptions(),
) -> dict:
    """Top-1 accuracy after removing 0-90 % of the pixels by each method's map, and its AUC."""
    check_choice(mode, ("positive", "negative"), "perturbation")
    items = read_val_folder(path, n)
    config = loaded.data_config
    black = (-torch.tensor(config.mean) / torch.tensor(config.std))[:, None, None]  # pixel value 0 after normalising
    size = tuple(config.input_size[1:])
    hits = {method: np.zeros(len(REMOVAL_STEPS)) for method in methods}
    for chunk in _batches(iter(items), batch):
        pixels = torch.stack([loaded.preprocess(Image.open(image).convert("RGB")) for image, _ in chunk])
        labels = torch.tensor([label for _, label in chunk])
        for method, maps in maps_for_batch(loaded.model, pixels, methods, "top", options).items():
            removed = removal_masks(_upsample(maps, size), mode)  # [S, B, H, W]
            perturbed = torch.where(removed[:, :, None], black, pixels[None]).flatten(0, 1)  # [S*B, 3, H, W]
            predictions = predict(loaded.model, perturbed).argmax(-1).cpu().reshape(len(REMOVAL_STEPS), -1)
            hits[method] += (predictions == labels[None]).sum(dim=1).numpy()
    curves = {method: (counts / len(items)).tolist() for method, counts in hits.items()}
    return {
        "dataset": "imagenet-val",
        "perturbation": mode,
        "n": len(items),
        "steps": list(REMOVAL_STEPS),
        "accuracy": curves,
        "auc": {method: perturbation_auc(curve) for method, curve in curves.items()},
    }
