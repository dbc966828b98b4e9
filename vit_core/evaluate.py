"""Accuracy and localization of a ShapeScenes model on a fixed, seeded split of full-difficulty scenes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from vit_core.capture import Capture, capture_batch
from vit_core.errors import VitCoreError
from vit_core.maps import attention_map
from vit_core.metrics import Localization, localization, mean_localization, patch_coverage
from vit_core.rollout import rollout
from vit_core.scenes import CLASSES, scene_batch
from vit_core.zoo import LoadedModel

# Class-agnostic maps scored here; each takes a capture and returns a [rows, cols] map.
METHODS: dict[str, Callable[[Capture], np.ndarray]] = {
    "attention": lambda c: attention_map(c, c.num_layers - 1, "mean"),
    "rollout": rollout,
}


def evaluate(loaded: LoadedModel, n: int = 2000, seed: int = 20_000, batch: int = 100) -> dict:
    """Top-1 accuracy and, per method, pointing game / IoU / mass inside the target mask."""
    if loaded.labels != list(CLASSES):
        raise VitCoreError(
            f"model {loaded.name!r} does not predict the ShapeScenes classes ({', '.join(CLASSES)}); "
            "evaluate needs --model bundled or another ShapeScenes model."
        )
    if n < 1:
        raise VitCoreError("--n must be at least 1.")
    correct = 0
    scores: dict[str, list[Localization]] = {name: [] for name in METHODS}
    random_hits = []
    for start in range(0, n, batch):
        scenes = scene_batch(seed, start, min(batch, n - start))
        pixels = torch.stack([loaded.preprocess(Image.fromarray(s.image)) for s in scenes])
        captures = capture_batch(loaded.model, pixels)
        for scene, result in zip(scenes, captures, strict=True):
            correct += int(np.argmax(result.logits) == scene.label)
            for name, method in METHODS.items():
                scores[name].append(localization(method(result), scene.mask))
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
