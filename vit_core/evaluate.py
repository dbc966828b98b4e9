"""Accuracy and localization of a ShapeScenes model on a fixed, seeded split of full-difficulty scenes."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from vit_core.capture import capture_batch
from vit_core.errors import VitCoreError
from vit_core.explain import METHODS, NOT_IMPLEMENTED, explain
from vit_core.metrics import Localization, localization, mean_localization, patch_coverage
from vit_core.scenes import CLASSES, scene_batch
from vit_core.zoo import LoadedModel

SCORED = [method for method in METHODS if method not in NOT_IMPLEMENTED]


def evaluate(loaded: LoadedModel, n: int = 2000, seed: int = 20_000, batch: int = 100) -> dict:
    """Top-1 accuracy and, per method (default options), pointing game / IoU / mass inside the mask.

    Class-specific maps explain the true class; one forward and one backward pass per batch serve all.
    """
    if loaded.labels != list(CLASSES):
        raise VitCoreError(
            f"model {loaded.name!r} does not predict the ShapeScenes classes ({', '.join(CLASSES)}); "
            "evaluate needs --model bundled or another ShapeScenes model."
        )
    if n < 1:
        raise VitCoreError("--n must be at least 1.")
    correct = 0
    scores: dict[str, list[Localization]] = {name: [] for name in SCORED}
    random_hits = []
    for start in range(0, n, batch):
        scenes = scene_batch(seed, start, min(batch, n - start))
        pixels = torch.stack([loaded.preprocess(Image.fromarray(s.image)) for s in scenes])
        captures = capture_batch(loaded.model, pixels, target=[s.label for s in scenes])
        for scene, result in zip(scenes, captures, strict=True):
            correct += int(np.argmax(result.logits) == scene.label)
            for name in SCORED:
                scores[name].append(localization(explain(result, name), scene.mask))
            random_hits.append(float((patch_coverage(scene.mask, result.grid) > 0).mean()))
    report = {name: mean_localization(values) for name, values in scores.items()}
    return {
        "model": loaded.name,
        "n": n,
        "seed": seed,
        "accuracy": correct / n,
        "localization": report,
        "random_pointing": float(np.mean(random_hits)),  # a uniformly random patch's hit rate
    }
