"""What the page does, without the page: load models once, run each (model, image) once, keep the result.

Everything here raises `VitCoreError` with one sentence on bad input; `app.ui` turns that into a
`gr.Error`. Model runs go through `on_gpu`, which is `spaces.GPU` on a ZeroGPU Space and a no-op
elsewhere.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from app.cache import Analysis, AnalysisCache
from vit_core.capture import Capture, capture
from vit_core.errors import VitCoreError, What
from vit_core.images import load_image
from vit_core.validate import check_index
from vit_core.zoo import CATALOG, LoadedModel, available_offline, load_model

F = TypeVar("F", bound=Callable)
SPACE_DEFAULT_MODEL = "timm:vit_base_patch16_224.augreg2_in21k_ft_in1k"


def _gpu_decorator() -> Callable[[F], F]:
    try:
        import spaces  # ZeroGPU Spaces only
    except ImportError:
        return lambda fn: fn
    return spaces.GPU


on_gpu = _gpu_decorator()


def default_model() -> str:
    """`VIT_MODEL` if set; on a Space (`SPACE_ID`) an ImageNet ViT from the catalog; else the bundled model."""
    if os.environ.get("VIT_MODEL"):
        return os.environ["VIT_MODEL"]
    return SPACE_DEFAULT_MODEL if os.environ.get("SPACE_ID") else "bundled"


def model_choices() -> list[tuple[str, str]]:
    """The catalog for the dropdown, each marked usable here or not (offline: bundled and cached models)."""
    on_space = bool(os.environ.get("SPACE_ID"))
    choices = []
    for entry in CATALOG:
        usable = on_space or available_offline(entry.name)
        choices.append((f"{entry.name} — {entry.description}{'' if usable else ' (needs download)'}", entry.name))
    return choices


_model_lock = threading.Lock()


@lru_cache(maxsize=3)
def _load(name: str) -> LoadedModel:
    return load_model(name)


def shared_model(name: str) -> LoadedModel:
    """Models are loaded once per process and shared by every session (at most three stay loaded)."""
    if not name or not name.strip():
        raise VitCoreError("choose_model")
    with _model_lock:  # two sessions asking for a new model at once load it once
        return _load(name.strip())


def device_description() -> str:
    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)}"
    return f"CPU ({torch.get_num_threads()} threads)"


CACHE = AnalysisCache(
    max_bytes=int(float(os.environ.get("VIT_CACHE_MB", "1536")) * 2**20),
    ttl_s=float(os.environ.get("VIT_CACHE_TTL_S", "1800")),
)


def image_digest(path: str | Path) -> str:
    """Content hash of an uploaded file: the same picture uploaded twice is analysed once."""
    try:
        return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:16]
    except OSError as error:
        raise VitCoreError("image_unreadable", name=Path(path).name, reason=str(error.strerror or error)) from error


@on_gpu
def _run(loaded: LoadedModel, pixels: torch.Tensor, target: int | None = None) -> Capture:
    return capture(loaded.model, pixels, target=target)


def analyze(image_path: str | None, model_name: str) -> Analysis:
    """The analysis of (model, image): from the cache, or one model run."""
    if image_path is None:
        raise VitCoreError("upload_image")
    loaded = shared_model(model_name)
    key = f"{model_name.strip()}|{image_digest(image_path)}"
    cached = CACHE.get(key)
    if cached is not None:
        return cached
    pixels = loaded.preprocess(load_image(image_path, name=Path(image_path).name))
    return CACHE.put(Analysis(key, model_name.strip(), str(image_path), _run(loaded, pixels)))


def by_key(key: str | None, image_path: str | None, model_name: str | None) -> Analysis:
    """The session's analysis; if the cache has dropped it, the image is analysed again."""
    found = CACHE.get(key)
    if found is not None:
        return found
    if image_path is None or model_name is None:
        raise VitCoreError("upload_image")
    return analyze(image_path, model_name)


def target_class(analysis: Analysis, choice: int | str | None, what: What = "class-specific maps") -> int:
    """The class a request means: an index, a label, or None for the top prediction; checked against the head."""
    probs = analysis.capture.probs
    if probs is None:
        raise VitCoreError("no_head", what=what)
    target = class_index(analysis, choice)
    return int(np.argmax(probs)) if target is None else check_index(target, len(probs), "class")


def class_capture(analysis: Analysis, choice: int | str | None) -> Capture:
    """The capture with gradients for the chosen class (default: the top class): one forward + backward
    per class, then kept with the analysis."""
    target = target_class(analysis, choice)
    with analysis.lock:
        if target not in analysis.by_target:
            pixels = torch.from_numpy(analysis.capture.input.copy())
            analysis.by_target[target] = _run(shared_model(analysis.model_name), pixels, target)
    CACHE.grew(analysis)
    return analysis.by_target[target]


def labels_of(analysis: Analysis) -> list[str]:
    probs = analysis.capture.probs
    count = 0 if probs is None else len(probs)
    labels = shared_model(analysis.model_name).labels
    return list(labels) if labels and len(labels) == count else [f"class {i}" for i in range(count)]


def class_index(analysis: Analysis, choice: int | str | None) -> int | None:
    """A class from the UI or API: an index, a label (exact, case-insensitive) or None for the top class."""
    if choice is None or choice == "":
        return None
    if isinstance(choice, int | np.integer) or (isinstance(choice, str) and choice.strip().lstrip("-").isdigit()):
        return int(choice)
    labels = labels_of(analysis)
    wanted = str(choice).strip().lower()
    for index, label in enumerate(labels):
        if label.lower() == wanted:
            return index
    raise VitCoreError("unknown_class", value=str(choice))
