"""What the page does, without the page: which models a visitor may use, load them once, run each
(model, image) once, keep the result.

Everything here raises `VitCoreError` with one sentence on bad input; `app.ui` turns that into a
`gr.Error`. Model runs are the `on_gpu` functions below: `spaces.GPU` on a ZeroGPU Space, plain calls
elsewhere. ZeroGPU runs them in a forked worker and sends their arguments and results through a queue,
pickled, so they take small values (a model name, the input tensor, a target) and find the model in
`MODELS`, which the fork inherits.

Public mode (on a Space, or with `VIT_PUBLIC=1`): only the catalog's models and the operator's
(`VIT_MODELS`, `VIT_MODEL`) can be used, each within a parameter budget (`VIT_MAX_PARAMS`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import logging
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import torch

from app.cache import Analysis, AnalysisCache
from app.i18n import catalogs, text
from app.models import ModelStore
from vit_core.analysis import ablate_heads, head_importance
from vit_core.capture import Capture, capture
from vit_core.errors import VitCoreError, What
from vit_core.explain import ExplainOptions, explain_batch
from vit_core.faithfulness import Curve, curves_for_maps
from vit_core.hub import hf_endpoint, offline, reachable
from vit_core.images import load_image, model_view, resized_size
from vit_core.model import ViT
from vit_core.text import DEFAULT_TEMPLATE
from vit_core.validate import check_index
from vit_core.zeroshot import zero_shot
from vit_core.zoo import (
    CATALOG,
    CatalogEntry,
    LoadedModel,
    available_offline,
    catalog_entry,
    count_parameters,
    load_model,
)

F = TypeVar("F", bound=Callable)
SPACE_DEFAULT_MODEL = "timm:vit_base_patch16_224.augreg2_in21k_ft_in1k"
DEFAULT_MAX_PARAMS = 350_000_000  # admits ViT-L/16 (304 M parameters), not ViT-H/14 (632 M)
log = logging.getLogger(__name__)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def default_model() -> str:
    """`VIT_MODEL` if set; on a Space (`SPACE_ID`) an ImageNet ViT from the catalog; else the bundled model."""
    if os.environ.get("VIT_MODEL"):
        return os.environ["VIT_MODEL"]
    return SPACE_DEFAULT_MODEL if os.environ.get("SPACE_ID") else "bundled"


# ---- which models this server offers ---------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    """Which models can be used here, as the environment says."""

    public: bool  # on a Space (`SPACE_ID`) or with `VIT_PUBLIC=1`
    operator_models: tuple[str, ...]  # `VIT_MODELS` (comma-separated) and `VIT_MODEL`: the operator's choice
    max_params: int  # `VIT_MAX_PARAMS`: bounds every model in public mode, catalog entries included

    @classmethod
    def from_environment(cls) -> Access:
        listed = [*os.environ.get("VIT_MODELS", "").split(","), os.environ.get("VIT_MODEL", "")]
        return cls(
            public=bool(os.environ.get("SPACE_ID")) or _flag("VIT_PUBLIC"),
            operator_models=tuple(dict.fromkeys(name.strip() for name in listed if name.strip())),
            max_params=int(float(os.environ.get("VIT_MAX_PARAMS", DEFAULT_MAX_PARAMS))),
        )

    def offers(self, name: str) -> bool:
        """Whether `name` may be used, by comparing names only: nothing on disk or on the network is looked at."""
        return not self.public or name in self.operator_models or catalog_entry(name) is not None


def check_model(name: str) -> int | None:
    """`name`'s parameter count when it is known before loading (None: local use of a model outside the catalog).

    In public mode a model neither in the catalog nor listed by the operator is refused with one sentence
    that is the same for every such name (whether a path or a repository exists or not), before anything
    on disk or on the network is touched. A model over the parameter budget is refused before its weights
    are downloaded: the catalog declares its count; the operator's models are counted from their config.
    """
    access = Access.from_environment()
    entry = catalog_entry(name)
    if not access.public:
        return entry.params if entry else None
    if not access.offers(name):
        raise VitCoreError("model_not_offered")
    params = entry.params if entry else _counted_parameters(name)
    if params > access.max_params:
        raise VitCoreError(
            "model_too_large",
            name=display_name(name),
            millions=round(params / 1e6, 1),
            limit=round(access.max_params / 1e6, 1),
        )
    return params


@functools.lru_cache(maxsize=64)  # only the operator's models are counted: a short list
def _counted_parameters(name: str) -> int:
    return count_parameters(name)


def display_name(name: str) -> str:
    """A model as the page shows it: a file by its name, anything else as it is named."""
    return Path(name).name if name.endswith(".safetensors") else name


def catalog_description(entry: CatalogEntry, language: str = "en") -> str:
    """The catalog's description of a model in `language` (the note under the model menu shows it)."""
    return catalogs().get(language, {}).get(f"model.{entry.name}", entry.description)


def catalog_label(entry: CatalogEntry, check_cache: bool = True, language: str = "en") -> str:
    """'timm:vit_base_patch16_224.augreg2_in21k_ft_in1k — ViT-B/16, ImageNet-1k · 86.6 M params · 346 MB download'
    in `language`: the name and a few words (`menu.<name>`; the description goes in the note under the menu);
    with `check_cache`, a model already in the local cache shows no download, and one that is not, where
    nothing can be downloaded, says it is not on this machine."""
    words = text(f"menu.{entry.name}", language) if f"menu.{entry.name}" in catalogs()["en"] else entry.description
    parts = [f"{entry.name} — {words}", text("model.params", language, millions=entry.params / 1e6)]
    if entry.download_mb and not (check_cache and available_offline(entry.name)):
        downloadable = not check_cache or hub_reachable()
        parts.append(text("model.download" if downloadable else "model.not_here", language, mb=entry.download_mb))
    return " · ".join(parts)


def hub_reachable() -> bool:
    """Whether models can be downloaded here: not offline (`HF_HUB_OFFLINE`), and the hub answers (on a Space
    it always does)."""
    if offline():
        return False
    return bool(os.environ.get("SPACE_ID")) or reachable(hf_endpoint(), timeout=1.5)


def model_choices(language: str = "en") -> list[tuple[str, str]]:
    """The dropdown in `language`: the catalog with each model's size (in public mode only those within the
    budget), then the operator's models. Locally, a catalog model not in the cache shows its download size."""
    access = Access.from_environment()
    check_cache = not os.environ.get("SPACE_ID")  # a Space downloads on first use
    choices = [
        (catalog_label(entry, check_cache, language), entry.name)
        for entry in CATALOG
        if not access.public or entry.params <= access.max_params
    ]
    choices += [(display_name(name), name) for name in access.operator_models if catalog_entry(name) is None]
    return choices


# ---- loaded models, shared ---------------------------------------------------------------------------


def zero_gpu() -> bool:
    """On a ZeroGPU Space: `SPACES_ZERO_GPU` is set and the `spaces` package is there."""
    if not _flag("SPACES_ZERO_GPU"):
        return False
    try:
        import spaces  # noqa: F401
    except ImportError:
        return False
    return True


def public_mode() -> bool:
    """On a Space, or with VIT_PUBLIC=1: visitors choose only the models on the menu."""
    return Access.from_environment().public


@functools.lru_cache(maxsize=1)
def suggested_model() -> CatalogEntry | None:
    """The ImageNet model to suggest beside the bundled one, when the hub can be reached and the operator
    chose no model (`VIT_MODEL`); None otherwise."""
    if os.environ.get("VIT_MODEL") or not hub_reachable():
        return None
    return catalog_entry(SPACE_DEFAULT_MODEL)


def _load(name: str) -> LoadedModel:
    # On ZeroGPU the page's process keeps its models on the CPU: ZeroGPU offloads the CUDA tensors of
    # this process to disk once the page starts, and the page still reads weights here (positions,
    # anatomy). Each GPU worker moves a model to the GPU once (`_model_here`).
    return load_model(name, device="cpu" if zero_gpu() else None)


MODELS = ModelStore(max_bytes=int(float(os.environ.get("VIT_MODELS_MB", "4096")) * 2**20), load=_load)
os.register_at_fork(after_in_child=MODELS.after_fork)


def shared_model(name: str) -> LoadedModel:
    """Models are loaded once per process and shared by every session (`MODELS`, bounded by
    `VIT_MODELS_MB`); in public mode only the models offered, within the parameter budget."""
    if not name or not name.strip():
        raise VitCoreError("choose_model")
    name = name.strip()
    params = check_model(name)
    return MODELS.get(name, expected_bytes=4 * params if params else 0)  # float32 weights


def start_up() -> None:
    """Once, when the page starts. On a ZeroGPU Space the default model is loaded now, so every GPU
    worker (a fork of this process) inherits it instead of loading it."""
    if not zero_gpu():
        return
    try:
        shared_model(default_model())
    except VitCoreError as error:
        log.warning("the default model did not load at start-up (%s); it loads on first use.", error)


def device_facts() -> dict:
    """Where models run, as values for the summary ({"gpu": name} or {"threads": n})."""
    if torch.cuda.is_available():
        return {"gpu": torch.cuda.get_device_name(0)}
    return {"threads": torch.get_num_threads()}


# ---- model runs: on the GPU worker on ZeroGPU, plain calls elsewhere -------------------------------------


def _gpu_decorator(duration: int | None = None) -> Callable[[F], F]:
    """`spaces.GPU(duration=...)` when the `spaces` package is there (it is a no-op off ZeroGPU); else nothing."""
    try:
        import spaces  # ZeroGPU Spaces only
    except ImportError:
        return lambda fn: fn
    return spaces.GPU(duration=duration) if duration else spaces.GPU


GPU_WRAPPER: Callable[[Callable], Callable] | None = None
"""Test hook, looked up at every call of an `on_gpu` function: `pickled` makes arguments, results and
errors cross a pickle round trip as on ZeroGPU. `VIT_PICKLE_CHECK=1` installs it (tests/live.py does)."""


def on_gpu(duration: int) -> Callable[[F], F]:
    """Run the function through `spaces.GPU(duration=duration)`; `duration` (seconds) is what ZeroGPU
    reserves, and a shorter one queues sooner. Its arguments and result must be small and picklable."""

    def decorate(fn: F) -> F:
        on_device = _gpu_decorator(duration)(fn)  # at import: ZeroGPU looks for its functions at start-up

        @functools.wraps(fn)
        def call(*args, **kwargs):
            run = on_device if GPU_WRAPPER is None else GPU_WRAPPER(on_device)
            return run(*args, **kwargs)

        call.duration = duration
        return call  # type: ignore[return-value]

    return decorate


def _model_here(model_name: str) -> ViT:
    """The model, in the process that runs it. A ZeroGPU worker inherits the models loaded before it was
    forked and loads any other itself; there the model moves to the GPU once."""
    loaded = shared_model(model_name)
    if zero_gpu() and torch.cuda.is_available() and loaded.device.type == "cpu":
        loaded.model.to("cuda")
    return loaded.model


@on_gpu(duration=20)
def run_capture(
    model_name: str,
    pixels: torch.Tensor,
    target: int | Literal["top"] | None = None,
    labels: tuple[str, ...] | None = None,
    templates: tuple[str, ...] = (),
    prompt: str | None = None,
) -> Capture:
    """One run on the input `[C, H, W]` with everything captured; with a target (a class, or "top" for the
    top prediction), also one backward pass.

    An image–text model takes its label set by value (`labels`, `templates`: the text tower embeds them,
    cached) and explains a label index or a `prompt`, the phrase's similarity to the image.
    """
    model = _model_here(model_name)
    text = shared_model(model_name).text if labels or prompt else None
    head = text.head(labels, templates) if labels else None
    chosen = text.target(prompt) if prompt else target
    return capture(model, pixels, target=chosen, zero_shot=head)


@on_gpu(duration=30)
def model_map(model_name: str, pixels: torch.Tensor, method: str, target: int, options: ExplainOptions) -> np.ndarray:
    """`[rows, cols]` map of a method that runs the model itself (AttnLRP, CP-LRP, Transformer Attribution,
    LeGrad) on the input `[C, H, W]`: its own forward and backward pass with the method's rules."""
    return explain_batch(_model_here(model_name), pixels[None], method, target, options)[0]  # type: ignore[arg-type]


@on_gpu(duration=45)
def faithfulness_curves(
    model_name: str, pixels: torch.Tensor, maps: list[np.ndarray], target: int, steps: int
) -> list[tuple[Curve, Curve]]:
    """(deletion, insertion) for each `[rows, cols]` map: 2 x (steps + 1) images per map, batched."""
    return curves_for_maps(_model_here(model_name), pixels, maps, target=target, steps=steps)


@on_gpu(duration=15)
def ablate(model_name: str, pixels: torch.Tensor, pairs: list[tuple[int, int]], target: int) -> tuple[float, float]:
    """(probability of `target`, the same with the (layer, head) pairs zeroed): two forward passes."""
    return ablate_heads(_model_here(model_name), pixels, pairs, target)


@on_gpu(duration=15)
def importance(model_name: str, pixels: torch.Tensor, layer: int, target: int) -> np.ndarray:
    """`[head]` drop in the target probability with each head of `layer` zeroed: one batch of heads + 1."""
    return head_importance(_model_here(model_name), pixels, layer, target)


# ---- the pickle check (tests) ------------------------------------------------------------------------

PICKLE_LIMIT_BYTES = {"bundled": 8 * 2**20}  # its capture with gradients pickles to 6.5 MiB
PICKLE_LIMIT_DEFAULT = 16 * 2**20  # a random ViT-Ti at 224 px (the tests' other model): 13.3 MiB with gradients


class PickleCheckFailed(AssertionError):
    """What crosses to the GPU worker would be too large, or would hold a model."""


class _NoModelPickler(pickle.Pickler):
    def reducer_override(self, obj):
        if isinstance(obj, torch.nn.Module | LoadedModel):
            raise PickleCheckFailed(f"a {type(obj).__name__} would be pickled to the GPU worker; pass its name.")
        return NotImplemented


def _round_trip(value, limit: int, label: str, record: list | None):
    buffer = io.BytesIO()
    _NoModelPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    size = buffer.tell()
    if record is not None:
        record.append((label, size))
    if size > limit:
        raise PickleCheckFailed(f"{label} pickles to {size / 2**20:.1f} MiB, over {limit / 2**20:.0f} MiB.")
    return pickle.loads(buffer.getvalue())


def pickled(fn: F, record: list | None = None) -> F:
    """`fn` as a ZeroGPU worker runs it: its arguments, its result or its error go through pickle, each
    under the model's limit (`PICKLE_LIMIT_BYTES`) and holding no model. `record` collects
    (`"fn arguments"` | `"fn result"` | `"fn error"`, bytes)."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        model_name = args[0] if args else kwargs.get("model_name")
        limit = PICKLE_LIMIT_BYTES.get(model_name, PICKLE_LIMIT_DEFAULT)
        name = getattr(fn, "__name__", "fn")
        args, kwargs = _round_trip((args, kwargs), limit, f"{name} arguments", record)
        try:
            result = fn(*args, **kwargs)
        except Exception as error:
            raise _round_trip(error, limit, f"{name} error", record) from None
        return _round_trip(result, limit, f"{name} result", record)

    return call  # type: ignore[return-value]


if _flag("VIT_PICKLE_CHECK"):
    GPU_WRAPPER = pickled


# ---- analyses ------------------------------------------------------------------------------------------

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


def analyze(image_path: str | None, model_name: str, labels: str | None = None) -> Analysis:
    """The analysis of (model, image): from the cache, or one model run.

    An image–text model with `labels` (comma-separated) gets the labels' zero-shot logits as its
    predictions and logit lens; the analysis key includes the label set. A new label set for an image
    already analysed runs no model: the label embeddings (cached per prompt) meet the captured image
    embedding (`vit_core.zeroshot`).
    """
    if image_path is None:
        raise VitCoreError("upload_image")
    loaded = shared_model(model_name)
    name = model_name.strip()
    head = None
    if labels is not None and labels.strip():
        head = loaded.text_encoder().head(labels, (DEFAULT_TEMPLATE,))
    key = f"{name}|{image_digest(image_path)}"
    base = CACHE.get(key)
    if base is None:
        image = load_image(image_path, name=Path(image_path).name, min_size=max(loaded.data_config.input_size[1:]))
        pixels = loaded.preprocess(image)
        preview = image.copy()
        preview.thumbnail((384, 384))
        # every first view explains the top class: its gradients come from this run (one forward and one
        # backward pass), not from a second forward pass and a backward one when the maps are drawn
        explain_top = loaded.model.head is not None and not loaded.cfg.image_text
        capture = run_capture(name, pixels, "top" if explain_top else None)
        agnostic = dataclasses.replace(capture, attention_grads=None, token_grads=None, target=None)
        base = Analysis(key, name, str(image_path), agnostic, image_size=image.size, preview=preview, pixels=pixels)
        if explain_top:
            base.by_target[int(capture.target)] = capture
        base = CACHE.put(base)
    if head is None:
        return base
    labelled_key = f"{key}|labels:{_digest(repr((head.labels, head.templates)))}"
    cached = CACHE.get(labelled_key)
    if cached is not None:
        return cached
    scored = zero_shot(loaded.model, base.capture, head)
    capture = dataclasses.replace(
        base.capture,
        logits=scored.logits.numpy(),
        probs=scored.probs.numpy(),
        layer_logits=scored.layer_logits.numpy(),
        activation=head.activation,  # SigLIP: a sigmoid per label, in the logit lens too
    )
    labelled = Analysis(
        labelled_key,
        name,
        base.image_path,
        capture,
        image_size=base.image_size,
        preview=base.preview,
        pixels=base.pixels,
        labels=head.labels,
        templates=head.templates,
    )
    return CACHE.put(labelled)


def _digest(value: str) -> str:
    return hashlib.sha1(value.encode()).hexdigest()[:12]


def known_image_text(name: str) -> bool:
    """Whether `name` is an image–text model, from its name or the loaded model, loading nothing."""
    loaded = MODELS.peek(name.strip())
    return loaded.cfg.image_text if loaded is not None else name.strip().startswith("openclip:")


def image_text(analysis: Analysis) -> bool:
    """An image–text model's analysis: its targets are labels or phrases."""
    return shared_model(analysis.model_name).cfg.image_text


def crop_facts(analysis: Analysis) -> dict | None:
    """What of the image the model sees, when its preprocessing cuts or squeezes it; None when it sees all."""
    if analysis.image_size is None:
        return None
    view = model_view(analysis.image_size, shared_model(analysis.model_name).data_config)
    if view.box is not None:
        return {"kind": "crop", "percent": 100 * view.fraction_shown, "box": list(view.box)}
    if view.squashed:
        height, width = shared_model(analysis.model_name).data_config.input_size[1:]
        return {"kind": "squash", "width": width, "height": height}
    return None


def enlargement(analysis: Analysis) -> float | None:
    """How many times the model's preprocessing enlarges an image smaller than its input (on either side):
    resized pixels per original pixel, the larger of the two sides. None for an image at least as large as
    the input."""
    if analysis.image_size is None:
        return None
    config = shared_model(analysis.model_name).data_config
    width, height = analysis.image_size
    input_height, input_width = config.input_size[-2:]
    if width >= input_width and height >= input_height:
        return None
    resized_width, resized_height = resized_size(analysis.image_size, config)
    factor = max(resized_width / width, resized_height / height)
    return factor if factor > 1 else None


def by_key(key: str | None, image_path: str | None, model_name: str | None, labels: str | None = None) -> Analysis:
    """The session's analysis; if the cache has dropped it, the image is analysed again."""
    found = CACHE.get(key)
    if found is not None:
        return found
    if image_path is None or model_name is None:
        raise VitCoreError("upload_image")
    return analyze(image_path, model_name, labels)


def target_class(analysis: Analysis, choice: int | str | None, what: What = "class-specific maps") -> int:
    """The class a request means: an index, a label, or None for the top prediction; checked against the head.
    (A phrase given to an image–text model means its top label here: the per-layer line follows a label.)"""
    probs = analysis.capture.probs
    if probs is None:
        raise VitCoreError("no_head", what=what)
    target = explained(analysis, choice)
    if isinstance(target, tuple):
        return int(np.argmax(probs))
    return int(np.argmax(probs)) if target is None else check_index(target, len(probs), "class")


def explained(analysis: Analysis, choice: int | str | tuple[str, str] | None) -> int | tuple[str, str] | None:
    """What a class-specific map explains: a class index, None for the top class, or ("text", phrase) when an
    image–text model is given a phrase that is none of its labels."""
    phrase = isinstance(choice, tuple)  # ("text", phrase): a phrase, even one that is also a label
    if not image_text(analysis):
        if phrase:
            raise VitCoreError("no_text_tower")
        return class_index(analysis, choice)
    if phrase:
        return ("text", shared_model(analysis.model_name).text_encoder().check_prompt(str(choice[1])))
    try:
        return class_index(analysis, choice)
    except VitCoreError:
        return ("text", shared_model(analysis.model_name).text_encoder().check_prompt(str(choice)))


def explains_something(analysis: Analysis, choice: int | str | None) -> bool:
    """Whether class-specific maps have something to explain: a class (a model with a head or labels) or a
    phrase (an image–text model)."""
    if analysis.capture.probs is not None or isinstance(choice, tuple):
        return True
    return image_text(analysis) and choice not in (None, "") and not str(choice).strip().lstrip("-").isdigit()


def class_capture(analysis: Analysis, choice: int | str | tuple[str, str] | None) -> Capture:
    """The capture with gradients for the chosen class (default: the top class) or phrase: one forward +
    backward per target, then kept with the analysis."""
    target = explained(analysis, choice)
    if isinstance(target, tuple):
        prompt = target[1]
        run = functools.partial(run_capture, analysis.model_name, analysis.pixels, prompt=prompt)
    else:
        target = target_class(analysis, target)
        run = functools.partial(run_capture, analysis.model_name, analysis.pixels, target)
        if analysis.labels:  # an image–text model's label: its label set goes along, by value
            run = functools.partial(run, labels=analysis.labels, templates=analysis.templates)
    with analysis.lock:
        if target not in analysis.by_target:
            analysis.by_target[target] = run()
    CACHE.grew(analysis)
    return analysis.by_target[target]


def labels_of(analysis: Analysis) -> list[str]:
    probs = analysis.capture.probs
    count = 0 if probs is None else len(probs)
    if analysis.labels is not None and len(analysis.labels) == count:
        return list(analysis.labels)
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
