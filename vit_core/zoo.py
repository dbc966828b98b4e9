"""Model names as users know them -> a `vit_core.ViT` with its source's own preprocessing and labels.

    bundled                      the ShapeScenes ViT this project trains (assets/), always offline
    timm:<name>[.<tag>]          timm VisionTransformer / VisionTransformerDistilled (CLIP towers image-only)
    hf:<repo id or local dir>    transformers ViT / DeiT / DINOv2 / CLIP / SigLIP (a save_pretrained directory works
                                 offline)
    openclip:<arch>[/<tag>]      open_clip CLIP ViTs (ViT-B-32, ViT-B-16, ViT-L-14, -quickgelu), SigLIP and SigLIP 2
    torchvision:<name>           vit_b_16, vit_b_32, vit_l_16, vit_l_32, vit_h_14 with DEFAULT weights
    path/to/model.safetensors    our own format (config, preprocessing and labels in its metadata)

Each source's loader, config translation, converter and preprocessing live in one module,
`vit_core/convert/from_<source>.py`; this module dispatches a name to it and holds the catalog.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vit_core.capture import resolve_device
from vit_core.convert.from_hf import hf_config_from_file, hf_files, hf_model_class, load_hf, looks_like_repo_id
from vit_core.convert.from_openclip import load_openclip
from vit_core.convert.from_timm import create_timm, load_timm
from vit_core.convert.from_torchvision import TORCHVISION_VITS, load_torchvision
from vit_core.errors import VitCoreError
from vit_core.hub import hf_cached_file, hf_endpoint, start_probe
from vit_core.loaded import WEIGHT_FILES, LoadedModel, timm_transform
from vit_core.weights import load_vit

BUNDLED_PATH = Path(__file__).resolve().parent.parent / "assets" / "bundled" / "model.safetensors"
SOURCES = ("timm", "hf", "openclip", "torchvision")
__all__ = ["CATALOG", "LoadedModel", "WEIGHT_FILES", "available_offline", "count_parameters", "load_model"]


def load_model(
    name: str, weights: str | Path | None = None, device: str | None = None, random_weights: bool = False
) -> LoadedModel:
    """Load `name` (see module docstring). `weights` is a state_dict file in the source's own format.

    `random_weights` skips the pretrained weights (for benchmarks: speed does not depend on them).
    """
    target = resolve_device(device)
    kind, _, ref = name.partition(":")
    if weights is None and not random_weights and kind in SOURCES and not available_offline(name):
        _probe_source_early(kind, ref)
    if name == "bundled" or name.endswith(".safetensors"):
        if weights is not None:
            raise VitCoreError("weights_for_own_model")
        loaded = _load_own(name)
    elif kind == "timm" and ref:
        loaded = load_timm(ref, weights, random_weights)
    elif kind == "hf" and ref:
        loaded = load_hf(ref, weights, random_weights)
    elif kind == "openclip" and ref:
        loaded = load_openclip(ref, weights, random_weights)
    elif kind == "torchvision" and ref:
        loaded = load_torchvision(ref, weights, random_weights)
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
    elif kind in ("timm", "hf", "openclip") and not Path(ref).is_dir():
        start_probe(hf_endpoint())


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


# ---- the catalog ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CatalogEntry:
    name: str
    description: str
    params: int  # parameters of the architecture, text tower included (tests/core/test_catalog.py counts them)
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
    CatalogEntry(
        "hf:facebook/dinov2-with-registers-small",
        "DINOv2 ViT-S/14 with 4 registers (transformers, no head)",
        22_058_112,
        88.2,
    ),
    CatalogEntry(
        "hf:facebook/dinov2-with-registers-base",
        "DINOv2 ViT-B/14 with 4 registers (transformers, no head)",
        86_583_552,
        346.3,
    ),
    # image–text models: parameters and download include the text tower
    CatalogEntry(
        "openclip:ViT-B-16/openai",
        "OpenAI CLIP ViT-B/16 (open_clip): zero-shot labels, maps for any phrase",
        149_620_737,
        598.5,
    ),
    CatalogEntry(
        "openclip:ViT-B-16/laion2b_s34b_b88k",
        "LAION-2B CLIP ViT-B/16 (open_clip): zero-shot labels, any phrase",
        149_620_737,
        598.5,
    ),
    CatalogEntry(
        "openclip:ViT-L-14/openai",
        "OpenAI CLIP ViT-L/14 (open_clip): zero-shot labels, maps for any phrase",
        427_616_513,
        1710.5,
    ),
    # 203,155,970 parameters (the architecture built by open_clip, counted in tests/core/test_catalog.py); the hub
    # lists open_clip_model.safetensors (float32) as 813 MB = 4 bytes x parameters; its tokenizer.json adds 2.4 MB
    CatalogEntry(
        "openclip:ViT-B-16-SigLIP/webli",
        "SigLIP ViT-B/16 224 (open_clip): attention-pool readout, a sigmoid per label, any phrase",
        203_155_970,
        812.6,
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
            return _numel(create_timm(ref))
    elif kind == "hf" and ref:
        config_path, _, _ = hf_files(ref, None, random_weights=True)  # the config only
        hf_config = hf_config_from_file(config_path)
        with torch.device("meta"):
            return _numel(hf_model_class(hf_config).from_config(hf_config))
    elif kind == "openclip" and ref:
        import open_clip

        from vit_core.convert.from_openclip import parse_openclip_name

        arch, _ = parse_openclip_name(ref)
        with torch.device("meta"):
            return _numel(open_clip.create_model(arch, pretrained=None, device="meta"))
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
        if not looks_like_repo_id(ref):
            return False
        return hf_cached_file(ref, ["config.json"]) is not None and hf_cached_file(ref, WEIGHT_FILES) is not None
    if kind == "openclip":
        return _openclip_cached(ref)
    if kind == "torchvision" and ref in TORCHVISION_VITS:
        import torchvision

        url = torchvision.models.get_model_weights(ref).DEFAULT.url
        return (Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name).is_file()
    return name.endswith(".safetensors") and Path(name).is_file()


def _openclip_cached(ref: str) -> bool:
    import open_clip

    from vit_core.convert.from_openclip import WEIGHT_FILES as OPENCLIP_FILES

    arch, _, tag = ref.partition("/")
    if not tag or tag not in open_clip.list_pretrained_tags_by_model(arch):
        return False
    repo = open_clip.get_pretrained_cfg(arch, tag).get("hf_hub", "").strip("/")
    return bool(repo) and hf_cached_file(repo, OPENCLIP_FILES) is not None
