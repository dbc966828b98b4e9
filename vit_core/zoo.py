"""Model names as users know them -> a `vit_core.ViT` with its source's own preprocessing and labels.

    bundled                      the ShapeScenes ViT this project trains (assets/), always offline
    timm:<name>[.<tag>]          timm VisionTransformer / VisionTransformerDistilled
    hf:<repo id or local dir>    transformers ViT / DeiT (a save_pretrained directory works offline)
    torchvision:<name>           vit_b_16, vit_b_32, vit_l_16, vit_l_32, vit_h_14 with DEFAULT weights
    path/to/model.safetensors    our own format (config, preprocessing and labels in its metadata)

Preprocessing is the source's own: timm's `create_transform(**resolve_data_config(...))`, the HF
image processor's config, torchvision's `weights.transforms()`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from vit_core.capture import resolve_device
from vit_core.config import DataConfig, ViTConfig
from vit_core.convert import (
    config_from_hf,
    config_from_timm,
    config_from_torchvision,
    convert_hf,
    convert_timm,
    convert_torchvision,
)
from vit_core.errors import VitCoreError
from vit_core.hub import hf_cached_file, hf_endpoint, hf_file, start_probe, torch_hub_file
from vit_core.model import ViT, vit_from_state_dict
from vit_core.weights import load_vit, read_state_dict

BUNDLED_PATH = Path(__file__).resolve().parent.parent / "assets" / "bundled" / "model.safetensors"
WEIGHT_FILES = ["model.safetensors", "pytorch_model.bin"]


@dataclass
class LoadedModel:
    """A model ready to run: the network, how to turn an image into its input, and its labels."""

    name: str
    model: ViT
    data_config: DataConfig
    transform: Callable[[Image.Image], torch.Tensor]  # PIL RGB -> [C, H, W] float32, normalised
    labels: list[str] | None
    weights: str  # where the weights came from: a file, a cache path, or "random"
    make_reference: Callable[[], nn.Module]  # the source library's own model, same weights (benchmarks)

    @property
    def cfg(self) -> ViTConfig:
        return self.model.cfg

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """PIL RGB image -> the exact input tensor `[C, H, W]` the source library would feed."""
        return self.transform(image)


def load_model(
    name: str, weights: str | Path | None = None, device: str | None = None, random_weights: bool = False
) -> LoadedModel:
    """Load `name` (see module docstring). `weights` is a state_dict file in the source's own format.

    `random_weights` skips the pretrained weights (for benchmarks: speed does not depend on them).
    """
    target = resolve_device(device)
    kind, _, ref = name.partition(":")
    if weights is None and not random_weights and kind in ("timm", "hf", "torchvision") and not available_offline(name):
        _probe_source_early(kind, ref)
    if name == "bundled" or name.endswith(".safetensors"):
        if weights is not None:
            raise VitCoreError("weights_for_own_model")
        loaded = _load_own(name)
    elif kind == "timm" and ref:
        loaded = _load_timm(ref, weights, random_weights)
    elif kind == "hf" and ref:
        loaded = _load_hf(ref, weights, random_weights)
    elif kind == "torchvision" and ref:
        loaded = _load_torchvision(ref, weights, random_weights)
    else:
        raise VitCoreError("unknown_model", name=name)
    loaded.name = name
    loaded.model.to(target).eval()
    return loaded


def _probe_source_early(kind: str, ref: str) -> None:
    """Start the reachability probe now, so its wait overlaps building the architecture."""
    if kind == "torchvision" and ref in TORCHVISION_VITS:
        import torchvision

        start_probe(torchvision.models.get_model_weights(ref).DEFAULT.url)
    elif kind in ("timm", "hf") and not Path(ref).is_dir():
        start_probe(hf_endpoint())


def timm_transform(data_config: DataConfig) -> Callable[[Image.Image], torch.Tensor]:
    from timm.data import create_transform

    return create_transform(**data_config.to_dict(), is_training=False)


# ---- vit_core's own files ------------------------------------------------------------------------
def _load_own(name: str) -> LoadedModel:
    path = BUNDLED_PATH if name == "bundled" else Path(name)
    if name == "bundled" and not path.is_file():
        raise VitCoreError("bundled_missing", path=str(path))
    model, data_config, labels = load_vit(path)

    def reference() -> nn.Module:
        from vit_core.convert.from_timm import timm_model_for_config

        source = timm_model_for_config(model.cfg)
        source.load_state_dict(model.state_dict())
        return source.eval()

    return LoadedModel(name, model, data_config, timm_transform(data_config), labels, str(path), reference)


# ---- timm ------------------------------------------------------------------------------------------
def _create_timm(ref: str) -> nn.Module:
    import timm

    try:
        return timm.create_model(ref, pretrained=False)
    except RuntimeError as error:
        if "Unknown model" in str(error) or "Invalid pretrained tag" in str(error):
            raise VitCoreError("unknown_timm_model", name=ref) from error
        raise


def _load_timm(ref: str, weights: str | Path | None, random_weights: bool) -> LoadedModel:
    from timm.data import resolve_data_config

    source = _create_timm(ref)
    cfg = config_from_timm(source)
    if weights is not None:
        state, origin = read_state_dict(weights), str(weights)
    elif random_weights:
        state, origin = source.state_dict(), "random"
    else:
        hub_id = source.pretrained_cfg.get("hf_hub_id")
        if not hub_id:
            raise VitCoreError("timm_no_hub_weights", name=ref)
        path = hf_file(hub_id, WEIGHT_FILES, f"timm:{ref}", "weights")
        state, origin = read_state_dict(path), str(path)
    model = vit_from_state_dict(cfg, convert_timm(state, cfg))
    data_config = DataConfig.from_dict(resolve_data_config({}, model=source))
    labels = _timm_labels(source, cfg.num_classes)
    del source, state

    def reference() -> nn.Module:
        built = _create_timm(ref)
        built.load_state_dict(model.state_dict())  # our names are timm's names
        return built.eval()

    return LoadedModel(ref, model, data_config, timm_transform(data_config), labels, origin, reference)


def _timm_labels(source: nn.Module, num_classes: int) -> list[str] | None:
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(source) if num_classes else None
    if not subset:
        return None
    info = ImageNetInfo(subset)
    return [info.index_to_description(i) for i in range(num_classes)]


# ---- Hugging Face transformers ----------------------------------------------------------------------
_PIL_INTERPOLATION = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def _hf_files(ref: str, weights: str | Path | None, random_weights: bool) -> tuple[Path, Path | None, Path | None]:
    """(config.json, weights file or None, preprocessor_config.json or None) from a directory or the hub."""
    local = Path(ref)
    if local.is_dir():
        config = local / "config.json"
        if not config.is_file():
            raise VitCoreError("hf_dir_without_config", path=ref)
        found = [local / f for f in WEIGHT_FILES if (local / f).is_file()]
        if not found and weights is None and not random_weights:
            raise VitCoreError("hf_dir_without_weights", path=ref)
        processor = local / "preprocessor_config.json"
        return config, (found[0] if found else None), (processor if processor.is_file() else None)
    if not _looks_like_repo_id(ref):
        raise VitCoreError("hf_ref_invalid", ref=ref)
    config = hf_file(ref, ["config.json"], f"hf:{ref}", "config")
    needs_weights = weights is None and not random_weights
    weight_file = hf_file(ref, WEIGHT_FILES, f"hf:{ref}", "weights") if needs_weights else None
    processor = hf_file(ref, ["preprocessor_config.json"], f"hf:{ref}", "preprocessing", required=False)
    return config, weight_file, processor


def _looks_like_repo_id(ref: str) -> bool:
    """`name` or `namespace/name`, as the hub spells repository ids (a path is not one)."""
    return bool(re.fullmatch(r"[\w.-]+(/[\w.-]+)?", ref)) and not ref.startswith((".", "-")) and ".." not in ref


def _hf_config(path: Path):
    from transformers import DeiTConfig
    from transformers import ViTConfig as HFViTConfig

    data = json.loads(path.read_text())
    classes = {"vit": HFViTConfig, "deit": DeiTConfig}
    if data.get("model_type") not in classes:
        raise VitCoreError("hf_model_type_unsupported", model_type=str(data.get("model_type")))
    return classes[data["model_type"]].from_dict(data)  # plain config classes: never remote code


def _hf_data_config(path: Path | None, cfg: ViTConfig) -> DataConfig:
    """The image processor's resize/crop/normalise as a timm data config (crop_mode "squash")."""
    spec = json.loads(path.read_text()) if path else {}
    size = spec.get("size", {"height": cfg.image_size[0], "width": cfg.image_size[1]})
    size = {"height": size, "width": size} if isinstance(size, int) else size
    if "shortest_edge" in size:
        height = width = size["shortest_edge"]
        mode = "center"
    else:
        height, width, mode = size["height"], size["width"], "squash"
    crop_pct = 1.0
    if spec.get("do_center_crop"):
        crop = spec.get("crop_size", {"height": height, "width": width})
        crop = {"height": crop, "width": crop} if isinstance(crop, int) else crop
        crop_pct = crop["height"] / height
        height, width = crop["height"], crop["width"]
    return DataConfig(
        input_size=(cfg.in_chans, height, width),
        interpolation=_PIL_INTERPOLATION.get(spec.get("resample", 2), "bilinear"),
        mean=tuple(spec.get("image_mean", (0.5, 0.5, 0.5))),
        std=tuple(spec.get("image_std", (0.5, 0.5, 0.5))),
        crop_pct=crop_pct,
        crop_mode=mode,
    )


def _load_hf(ref: str, weights: str | Path | None, random_weights: bool) -> LoadedModel:
    config_path, weight_path, processor_path = _hf_files(ref, weights, random_weights)
    hf_config = _hf_config(config_path)
    if random_weights:
        from transformers import AutoModelForImageClassification

        state = AutoModelForImageClassification.from_config(hf_config).state_dict()
        origin = "random"
    else:
        origin = str(weights or weight_path)
        state = read_state_dict(origin)
    cfg = config_from_hf(hf_config, state)
    model = vit_from_state_dict(cfg, convert_hf(state, cfg))
    data_config = _hf_data_config(processor_path, cfg)
    labels = [hf_config.id2label[i] for i in range(cfg.num_classes)] if cfg.num_classes else None
    del state

    def reference() -> nn.Module:
        from transformers import AutoModel, AutoModelForImageClassification

        factory = AutoModelForImageClassification if cfg.num_classes else AutoModel
        if origin == "random" or weights is not None:
            return factory.from_config(hf_config, attn_implementation="sdpa").eval()
        return factory.from_pretrained(str(config_path.parent), attn_implementation="sdpa").eval()

    return LoadedModel(ref, model, data_config, timm_transform(data_config), labels, origin, reference)


# ---- torchvision ----------------------------------------------------------------------------------
TORCHVISION_VITS = ("vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14")


def _load_torchvision(ref: str, weights: str | Path | None, random_weights: bool) -> LoadedModel:
    import torchvision

    if ref not in TORCHVISION_VITS:
        raise VitCoreError("unknown_torchvision_model", name=ref, choices=", ".join(TORCHVISION_VITS))
    default = torchvision.models.get_model_weights(ref).DEFAULT

    def build() -> nn.Module:
        return torchvision.models.get_model(ref, weights=None, image_size=default.meta["min_size"][0])

    source = build()
    cfg = config_from_torchvision(source)
    if weights is not None:
        origin = str(weights)
    elif random_weights:
        origin = "random"
    else:
        origin = str(torch_hub_file(default.url, f"torchvision:{ref} ({default})", "weights"))
    state = source.state_dict() if origin == "random" else read_state_dict(origin)
    model = vit_from_state_dict(cfg, convert_torchvision(state, cfg))
    transform = default.transforms()
    data_config = DataConfig(
        input_size=(3, transform.crop_size[0], transform.crop_size[0]),
        interpolation=transform.interpolation.value,
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        crop_pct=transform.crop_size[0] / transform.resize_size[0],
        crop_mode="center",
    )

    def reference() -> nn.Module:
        built = source if origin == "random" else build()
        if origin != "random":
            built.load_state_dict(read_state_dict(origin))
        return built.eval()

    return LoadedModel(ref, model, data_config, transform, list(default.meta["categories"]), origin, reference)


# ---- the catalog ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CatalogEntry:
    name: str
    description: str
    params: int  # parameters of the architecture (tests/core/test_catalog.py builds each one and counts)
    download_mb: float  # size of the weights file a first use downloads, in MB (10^6 bytes); 0 = ships here


CATALOG = (
    CatalogEntry(
        "bundled", "ShapeScenes ViT trained by this project; ships in assets/, always offline", 1_554_778, 0.0
    ),
    CatalogEntry("timm:vit_small_patch16_224.augreg_in21k_ft_in1k", "ViT-S/16 AugReg, ImageNet-1k", 22_050_664, 88.2),
    CatalogEntry("timm:vit_base_patch16_224.augreg2_in21k_ft_in1k", "ViT-B/16 AugReg, ImageNet-1k", 86_567_656, 346.3),
    CatalogEntry("timm:deit_small_patch16_224.fb_in1k", "DeiT-S/16, ImageNet-1k", 22_050_664, 88.2),
    CatalogEntry("timm:vit_small_patch16_224.dino", "DINO ViT-S/16 backbone (no head)", 21_665_664, 86.7),
    CatalogEntry(
        "timm:vit_small_patch14_reg4_dinov2.lvd142m",
        "DINOv2 ViT-S/14 with 4 registers (no head)",
        22_057_344,
        88.2,
    ),
    CatalogEntry("hf:google/vit-base-patch16-224", "Google ViT-B/16, ImageNet-1k (transformers)", 86_567_656, 346.3),
    # torchvision lists this .pth as 330.3: MiB, the same 346.3 MB
    CatalogEntry("torchvision:vit_b_16", "torchvision ViT-B/16 IMAGENET1K_V1", 86_567_656, 346.3),
)


def catalog_entry(name: str) -> CatalogEntry | None:
    return next((entry for entry in CATALOG if entry.name == name), None)


def count_parameters(name: str) -> int:
    """Parameters of `name`'s architecture, counted without reading or downloading its weights.

    Our own files: from the tensor shapes in the safetensors header. timm, transformers and
    torchvision: the source's model built on the `meta` device (no memory, no initialisation); an `hf:`
    repository id needs only its config.json.
    """
    kind, _, ref = name.partition(":")
    if name == "bundled" or name.endswith(".safetensors"):
        counted = _count_own(BUNDLED_PATH if name == "bundled" else Path(name))
        if counted is not None:
            return counted
    elif kind == "timm" and ref:
        with torch.device("meta"):
            return _numel(_create_timm(ref))
    elif kind == "hf" and ref:
        from transformers import AutoModelForImageClassification

        config_path, _, _ = _hf_files(ref, None, random_weights=True)  # the config only
        hf_config = _hf_config(config_path)
        with torch.device("meta"):
            return _numel(AutoModelForImageClassification.from_config(hf_config))
    elif kind == "torchvision" and ref in TORCHVISION_VITS:
        import torchvision

        size = torchvision.models.get_model_weights(ref).DEFAULT.meta["min_size"][0]
        with torch.device("meta"):
            return _numel(torchvision.models.get_model(ref, weights=None, image_size=size))
    # an unknown name or a file that is not ours: load_model says what is wrong with it
    return _numel(load_model(name, random_weights=True, device="cpu").model)


def _count_own(path: Path) -> int | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())
    except (SafetensorError, OSError, ValueError):
        return None


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def available_offline(name: str) -> bool:
    """True when `name` loads without the network: its weights are in a local cache (or assets/)."""
    kind, _, ref = name.partition(":")
    if name == "bundled":
        return BUNDLED_PATH.is_file()
    if kind == "timm":
        import timm

        hub_id = getattr(timm.models.get_pretrained_cfg(ref), "hf_hub_id", None) if ref else None
        return bool(hub_id) and hf_cached_file(hub_id, WEIGHT_FILES) is not None
    if kind == "hf":
        if Path(ref).is_dir():
            return True
        if not _looks_like_repo_id(ref):
            return False
        return hf_cached_file(ref, ["config.json"]) is not None and hf_cached_file(ref, WEIGHT_FILES) is not None
    if kind == "torchvision" and ref in TORCHVISION_VITS:
        import torchvision

        url = torchvision.models.get_model_weights(ref).DEFAULT.url
        return (Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name).is_file()
    return name.endswith(".safetensors") and Path(name).is_file()
