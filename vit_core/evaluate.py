"""Accuracy and localization of a ShapeScenes model on a fixed, seeded split of full-difficulty scenes."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from vit_core.capture import predict
from vit_core.errors import VitCoreError
from vit_core.explain import METHODS, NOT_IMPLEMENTED, OPT_IN, maps_for_batch
from vit_core.faithfulness import curves_for_maps
from vit_core.metrics import Localization, localization, mean_localization, patch_coverage
from vit_core.scenes import CLASSES, scene_batch
from vit_core.validate import check_range
from vit_core.zoo import LoadedModel

# every method but the opt-in ones (attention flow: seconds per image, refused on most models)
SCORED = [method for method in METHODS if method not in NOT_IMPLEMENTED and method not in OPT_IN]


def evaluate(
    loaded: LoadedModel,
    n: int = 2000,
    seed: int = 20_000,
    batch: int = 100,
    faithfulness_n: int = 0,
    methods: list[str] | None = None,
) -> dict:
    """Top-1 accuracy and, per method (default options; default `SCORED`), pointing game / IoU / mass inside
    the mask, plus deletion and insertion AUC (Petsiuk et al. 2018) on the first `faithfulness_n` scenes.

    Class-specific maps explain the true class; one forward and one backward pass per batch serve all the
    capture-based maps, and each LRP-family method runs once per batch.
    """
    if loaded.labels != list(CLASSES):
        raise VitCoreError("not_shapescenes", name=loaded.name, classes=", ".join(CLASSES))
    check_range(n, 1, None, "number of scenes")
    methods = list(SCORED if methods is None else methods)
    correct = 0
    scores: dict[str, list[Localization]] = {name: [] for name in methods}
    random_hits = []
    auc: dict[str, dict[str, list[float]]] = {name: {"deletion": [], "insertion": []} for name in methods}
    for start in range(0, n, batch):
        scenes = scene_batch(seed, start, min(batch, n - start))
        pixels = torch.stack([loaded.preprocess(Image.fromarray(s.image)) for s in scenes])
        labels = [s.label for s in scenes]
        batch_maps = maps_for_batch(loaded.model, pixels, methods, labels)  # {method: [B, rows, cols]}
        logits = predict(loaded.model, pixels)  # [B, C]
        for offset, (scene, image) in enumerate(zip(scenes, pixels, strict=True)):
            correct += int(int(logits[offset].argmax()) == scene.label)
            maps = {name: batch_maps[name][offset] for name in methods}
            for name, grid_map in maps.items():
                scores[name].append(localization(grid_map, scene.mask))
            if start + offset < faithfulness_n:
                curves = curves_for_maps(loaded.model, image, list(maps.values()), scene.label)
                for name, (deletion, insertion) in zip(maps, curves, strict=True):
                    auc[name]["deletion"].append(deletion.auc)
                    auc[name]["insertion"].append(insertion.auc)
            grid = next(iter(maps.values())).shape if maps else loaded.cfg.grid
            random_hits.append(float((patch_coverage(scene.mask, grid) > 0).mean()))
    report = {name: mean_localization(values) for name, values in scores.items()}
    for name, curves in auc.items():
        if curves["deletion"]:
            report[name]["deletion_auc"] = float(np.mean(curves["deletion"]))
            report[name]["insertion_auc"] = float(np.mean(curves["insertion"]))
    return {
        "model": loaded.name,
        "n": n,
        "seed": seed,
        "accuracy": correct / n,
        "localization": report,
        "random_pointing": float(np.mean(random_hits)),  # a uniformly random patch's hit rate
        "faithfulness_n": min(n, faithfulness_n),
    }
