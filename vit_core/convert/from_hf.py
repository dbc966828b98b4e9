"""Hugging Face transformers ViT / DeiT / DINOv2 / CLIP -> vit_core.

Covers `ViTModel`, `ViTForImageClassification`, `DeiTModel`, `DeiTForImageClassification`,
`DeiTForImageClassificationWithTeacher`, `Dinov2Model`, `Dinov2WithRegistersModel` (Oquab et al. 2023;
Darcet et al. 2024), and CLIP's image tower from `CLIPModel` or `CLIPVisionModel` (Radford et al. 2021),
under both key spellings that exist: the one stored in hub checkpoints (transformers 4:
`encoder.layer.0.attention.attention.query`) and the one transformers 5 modules use in memory
(`layers.0.attention.q_proj`). HF keeps q, k and v apart; we fuse them into one qkv projection in that
order, as timm does.

- DINOv2 with registers adds the class token's position embedding before it inserts the registers, which
  have none; we fold that embedding into the class token and keep the patches' (`pos_embed_prefix=False`).
  `Dinov2Model` resizes position embeddings without antialiasing, `Dinov2WithRegistersModel` with it.
- CLIP's patch convolution has no bias (ours is zero); `pre_layrnorm` is our `norm_pre`, `post_layernorm`
  our final norm, `visual_projection` our bias-free image projection. The text tower stays in HF's model.
- SigLIP's image tower from `SiglipModel` or `SiglipVisionModel` (Zhai et al. 2023; the fixed-resolution
  SigLIP 2 checkpoints are `SiglipModel`s too): no class token, `post_layernorm` our final norm, and its
  `head` (`SiglipMultiheadAttentionPoolingHead`: a probe query, `nn.MultiheadAttention` whose fused
  in-projection splits into our pool's q and kv, a LayerNorm and an MLP) our attention pool, whose output
  is the image embedding (no projection). `Siglip2Model` is NaFlex only (patches fed with their
  `spatial_shapes` and a mask, position embeddings resized per image) and is refused with a sentence.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vit_core.config import DataConfig, ViTConfig
from vit_core.convert.common import StateDict, check_keys, check_state_dict, rename
from vit_core.errors import VitCoreError
from vit_core.loaded import WEIGHT_FILES, LoadedModel, timm_transform
from vit_core.text import TextEncoder

_PREFIX = r"(?:vit\.|deit\.|dinov2\.|dinov2_with_registers\.)?"
_CLIP = r"(?:vision_model\.)?"
_CLIP_LAYER = _CLIP + r"encoder\.layers\.(\d+)\."
_LAYER = _PREFIX + r"(?:encoder\.layer|layers)\.(\d+)\."
_PARAM = r"(weight|bias)"
RULES = [
    (_PREFIX + r"embeddings\.cls_token", "cls_token"),
    (_PREFIX + r"embeddings\.distillation_token", "dist_token"),
    (_PREFIX + r"embeddings\.position_embeddings", "pos_embed"),
    (_PREFIX + r"embeddings\.patch_embeddings\.projection\." + _PARAM, r"patch_embed.proj.\1"),
    (_LAYER + r"layernorm_before\." + _PARAM, r"blocks.\1.norm1.\2"),
    (_LAYER + r"layernorm_after\." + _PARAM, r"blocks.\1.norm2.\2"),
    # transformers 4 / hub checkpoints
    (_LAYER + r"attention\.attention\.(query|key|value)\." + _PARAM, r"blocks.\1.attn.\2.\3"),
    (_LAYER + r"attention\.output\.dense\." + _PARAM, r"blocks.\1.attn.proj.\2"),
    (_LAYER + r"intermediate\.dense\." + _PARAM, r"blocks.\1.mlp.fc1.\2"),
    (_LAYER + r"output\.dense\." + _PARAM, r"blocks.\1.mlp.fc2.\2"),
    # transformers 5 modules
    (_LAYER + r"attention\.(q|k|v)_proj\." + _PARAM, r"blocks.\1.attn.\2.\3"),
    (_LAYER + r"attention\.o_proj\." + _PARAM, r"blocks.\1.attn.proj.\2"),
    (_LAYER + r"mlp\.(fc1|fc2)\." + _PARAM, r"blocks.\1.mlp.\2.\3"),
    (_PREFIX + r"layernorm\." + _PARAM, r"norm.\1"),
    # DINOv2 (with registers)
    (_PREFIX + r"embeddings\.register_tokens", "reg_token"),
    (_LAYER + r"(norm1|norm2)\." + _PARAM, r"blocks.\1.\2.\3"),
    (_LAYER + r"layer_scale(1|2)\.lambda1", r"blocks.\1.ls\2.gamma"),
    # CLIP's image tower (CLIPModel: vision_model.*; CLIPVisionModel: with or without that prefix)
    (_CLIP + r"embeddings\.class_embedding", "cls_token"),
    (_CLIP + r"embeddings\.position_embedding\.weight", "pos_embed"),
    (_CLIP + r"embeddings\.patch_embedding\.weight", "patch_embed.proj.weight"),
    (_CLIP + r"pre_layrnorm\." + _PARAM, r"norm_pre.\1"),
    (_CLIP_LAYER + r"self_attn\.(q|k|v)_proj\." + _PARAM, r"blocks.\1.attn.\2.\3"),
    (_CLIP_LAYER + r"self_attn\.out_proj\." + _PARAM, r"blocks.\1.attn.proj.\2"),
    (_CLIP_LAYER + r"layer_norm(1|2)\." + _PARAM, r"blocks.\1.norm\2.\3"),
    (_CLIP_LAYER + r"mlp\.(fc1|fc2)\." + _PARAM, r"blocks.\1.mlp.\2.\3"),
    (_CLIP + r"post_layernorm\." + _PARAM, r"norm.\1"),
    (r"visual_projection\.weight", "proj.weight"),
    # SigLIP's image tower: the CLIP names above, a patch bias, and the attention-pooling head
    (_CLIP + r"embeddings\.patch_embedding\.bias", "patch_embed.proj.bias"),
    (_CLIP + r"head\.probe", "attn_pool.latent"),
    (_CLIP + r"head\.attention\.in_proj_(weight|bias)", r"attn_pool.in_proj.\1"),
    (_CLIP + r"head\.attention\.out_proj\." + _PARAM, r"attn_pool.proj.\1"),
    (_CLIP + r"head\.layernorm\." + _PARAM, r"attn_pool.norm.\1"),
    (_CLIP + r"head\.mlp\.(fc1|fc2)\." + _PARAM, r"attn_pool.mlp.\1.\2"),
    (r"(?:classifier|cls_classifier)\." + _PARAM, r"head.\1"),
    (r"distillation_classifier\." + _PARAM, r"head_dist.\1"),
]
# Not part of classification: the masked-image-modelling token and ViTModel's tanh pooler.
IGNORE = [
    _PREFIX + r"embeddings\.mask_token",
    _PREFIX + r"pooler\.dense\." + _PARAM,
    # CLIP: the text tower and the temperature stay with HF's model; position ids are a buffer
    r"text_model\..*",
    r"text_projection\.weight",
    r"logit_scale",
    r"logit_bias",  # SigLIP's
    _CLIP + r"embeddings\.position_ids",
]
MODEL_TYPES = (
    "vit",
    "deit",
    "dinov2",
    "dinov2_with_registers",
    "clip",
    "clip_vision_model",
    "siglip",
    "siglip_vision_model",
)
IMAGE_TEXT_TYPES = ("clip", "siglip")  # a config with a vision_config and a text tower
NAFLEX_TYPES = ("siglip2", "siglip2_vision_model")
_QKV_NAMES = {"query": "q", "key": "k", "value": "v"}
_ACTIVATIONS = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "quick_gelu": "quick_gelu"}


def _fuse_qkv(renamed: StateDict) -> StateDict:
    out: StateDict = {}
    parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in renamed.items():
        match = re.fullmatch(r"(blocks\.\d+\.attn)\.(query|key|value|q|k|v)\.(weight|bias)", key)
        if match:
            block, which, param = match.groups()
            parts.setdefault((block, param), {})[_QKV_NAMES.get(which, which)] = value
        else:
            out[key] = value
    for (block, param), qkv in parts.items():
        if set(qkv) != {"q", "k", "v"}:
            raise VitCoreError("hf_qkv_incomplete", block=block, found=", ".join(sorted(qkv)), param=param)
        out[f"{block}.qkv.{param}"] = torch.cat([qkv["q"], qkv["k"], qkv["v"]], dim=0)
    return out


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _split_in_proj(renamed: StateDict) -> StateDict:
    """SigLIP's pooling head keeps q, k, v in one `in_proj` `[3D, ...]`; our pool has q `[D, ...]`, kv `[2D, ...]`."""
    out = dict(renamed)
    for param in ("weight", "bias"):
        fused = out.pop(f"attn_pool.in_proj.{param}", None)
        if fused is not None:
            width = fused.shape[0] // 3
            out[f"attn_pool.q.{param}"], out[f"attn_pool.kv.{param}"] = fused[:width], fused[width:]
    return out


def vision_config(hf_config: Any) -> Any:
    """The image tower's config: `CLIPConfig.vision_config` (or SigLIP's), else the config itself."""
    return hf_config.vision_config if getattr(hf_config, "model_type", None) in IMAGE_TEXT_TYPES else hf_config


def config_from_hf(hf_config: Any, state_dict: Mapping[str, torch.Tensor]) -> ViTConfig:
    """Our config from a transformers ViT/DeiT/DINOv2/CLIP config and the keys of its checkpoint."""
    model_type = getattr(hf_config, "model_type", None)
    check_model_type(model_type)
    vision = vision_config(hf_config)
    act = _ACTIVATIONS.get(vision.hidden_act)
    if act is None:
        raise VitCoreError(
            "hf_activation_unsupported", name=str(vision.hidden_act), choices=", ".join(sorted(_ACTIVATIONS))
        )
    keys = set(state_dict)
    common = dict(
        image_size=_pair(vision.image_size),
        patch_size=_pair(vision.patch_size)[0],
        in_chans=vision.num_channels,
        embed_dim=vision.hidden_size,
        depth=vision.num_hidden_layers,
        num_heads=vision.num_attention_heads,
        norm_eps=vision.layer_norm_eps,
        act=act,
    )
    if model_type in ("clip", "clip_vision_model"):
        projection = "visual_projection.weight" in keys
        return ViTConfig(
            **common,
            mlp_dim=vision.intermediate_size,
            pre_norm=True,
            num_classes=0,
            image_embed_dim=int(state_dict["visual_projection.weight"].shape[0]) if projection else 0,
            pos_embed_antialias=False,  # CLIPVisionEmbeddings.interpolate_pos_encoding: bicubic, no antialias
        )
    if model_type in ("siglip", "siglip_vision_model"):
        pooled = bool(getattr(vision, "vision_use_head", True))
        return ViTConfig(
            **common,
            mlp_dim=vision.intermediate_size,
            class_token=False,
            global_pool="map" if pooled else "avg",  # without its head HF returns tokens only; we average them
            num_classes=0,
            image_embed_dim=vision.hidden_size if pooled else 0,  # the pooled vector is the image embedding
            image_proj=False,
            pos_embed_antialias=False,  # SiglipVisionEmbeddings.interpolate_pos_encoding: bicubic, no antialias
        )
    if model_type in ("dinov2", "dinov2_with_registers"):
        if getattr(vision, "use_swiglu_ffn", False):
            raise VitCoreError("hf_swiglu_unsupported", model_type=model_type)
        registers = int(getattr(vision, "num_register_tokens", 0)) if model_type == "dinov2_with_registers" else 0
        return ViTConfig(
            **common,
            mlp_dim=int(vision.hidden_size * vision.mlp_ratio),
            qkv_bias=bool(vision.qkv_bias),
            num_register_tokens=registers,
            pos_embed_prefix=not registers,  # registers have no position embedding (folded into the class token)
            layer_scale=True,
            num_classes=0,
            pos_embed_antialias=model_type == "dinov2_with_registers",
        )
    has_head = "classifier.weight" in keys or "cls_classifier.weight" in keys
    return ViTConfig(
        **common,
        mlp_dim=hf_config.intermediate_size,
        qkv_bias=bool(getattr(hf_config, "qkv_bias", True)),
        class_token=True,
        distill_token=model_type == "deit",
        distill_head="distillation_classifier.weight" in keys,
        num_classes=len(hf_config.id2label) if has_head else 0,
    )


def convert_hf(state_dict: Mapping[str, torch.Tensor], cfg: ViTConfig) -> StateDict:
    """HF ViT/DeiT/DINOv2/CLIP state_dict -> vit_core state_dict. Checked key by key against `cfg`."""
    renamed = _split_in_proj(_fuse_qkv(rename(state_dict, RULES, IGNORE, source="HF")))
    if "cls_token" in renamed and renamed["cls_token"].ndim == 1:  # CLIP's class_embedding [D]
        renamed["cls_token"] = renamed["cls_token"].reshape(1, 1, -1)
    if "attn_pool.latent" in renamed:  # SigLIP's probe [1, 1, D]; an older one may be [1, D]
        renamed["attn_pool.latent"] = renamed["attn_pool.latent"].reshape(1, 1, -1)
    if "pos_embed" in renamed and renamed["pos_embed"].ndim == 2:  # CLIP's nn.Embedding [N, D]
        renamed["pos_embed"] = renamed["pos_embed"][None]
    weight = renamed.get("patch_embed.proj.weight")
    if weight is not None and "patch_embed.proj.bias" not in renamed:  # CLIP's patch convolution has no bias
        renamed["patch_embed.proj.bias"] = weight.new_zeros(weight.shape[0])
    pos = renamed.get("pos_embed")
    if cfg.num_register_tokens and not cfg.pos_embed_prefix and pos is not None and "cls_token" in renamed:
        if pos.shape[1] == cfg.grid[0] * cfg.grid[1] + 1:  # DINOv2 with registers: fold the class position
            renamed["cls_token"] = renamed["cls_token"] + pos[:, :1]
            renamed["pos_embed"] = pos[:, 1:]
    return check_state_dict(renamed, cfg, "HF")


# ---- loading -----------------------------------------------------------------------------------------
_PIL_INTERPOLATION = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
# A tokenizer's files, fetched beside the config from the hub: CLIP's vocab + merges (or one tokenizer.json);
# SigLIP's sentencepiece model (spiece.model) or SigLIP 2's Gemma tokenizer (tokenizer.json / tokenizer.model).
TOKENIZER_FILES = {
    "clip": ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"),
    "siglip": ("tokenizer_config.json", "special_tokens_map.json", "tokenizer.json", "spiece.model", "tokenizer.model"),
}


def hf_files(ref: str, weights: str | Path | None, random_weights: bool) -> tuple[Path, Path | None, Path | None]:
    """(config.json, weights file or None, preprocessor_config.json or None) from a directory or the hub."""
    from vit_core.hub import hf_file

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
    if not looks_like_repo_id(ref):
        raise VitCoreError("hf_ref_invalid", ref=ref)
    config = hf_file(ref, ["config.json"], f"hf:{ref}", "config")
    needs_weights = weights is None and not random_weights
    weight_file = hf_file(ref, WEIGHT_FILES, f"hf:{ref}", "weights") if needs_weights else None
    processor = hf_file(ref, ["preprocessor_config.json"], f"hf:{ref}", "preprocessing", required=False)
    return config, weight_file, processor


def looks_like_repo_id(ref: str) -> bool:
    """`name` or `namespace/name`, as the hub spells repository ids (a path is not one)."""
    return bool(re.fullmatch(r"[\w.-]+(/[\w.-]+)?", ref)) and not ref.startswith((".", "-")) and ".." not in ref


def hf_config_from_file(path: Path):
    """The plain transformers config class for the file's model type: never remote code."""
    from transformers import (
        CLIPConfig,
        CLIPVisionConfig,
        DeiTConfig,
        Dinov2Config,
        Dinov2WithRegistersConfig,
        SiglipConfig,
        SiglipVisionConfig,
    )
    from transformers import ViTConfig as HFViTConfig

    data = json.loads(path.read_text())
    classes = {
        "vit": HFViTConfig,
        "deit": DeiTConfig,
        "dinov2": Dinov2Config,
        "dinov2_with_registers": Dinov2WithRegistersConfig,
        "clip": CLIPConfig,
        "clip_vision_model": CLIPVisionConfig,
        "siglip": SiglipConfig,
        "siglip_vision_model": SiglipVisionConfig,
    }
    model_type = data.get("model_type")
    check_model_type(model_type)
    return classes[model_type].from_dict(data)


def check_model_type(model_type: object) -> None:
    """One sentence for a model type we do not load (NaFlex SigLIP 2 gets its own: what to load instead)."""
    if model_type in NAFLEX_TYPES:
        raise VitCoreError("hf_naflex_unsupported", model_type=str(model_type))
    if model_type not in MODEL_TYPES:
        raise VitCoreError("hf_model_type_unsupported", model_type=str(model_type), supported=", ".join(MODEL_TYPES))


def hf_model_class(hf_config: Any, with_head: bool = True):
    """The transformers factory for these weights (a classifier when `with_head` and there is one), with
    `from_config` and `from_pretrained`: CLIP models load through AutoModel as CLIPModel / CLIPVisionModel."""
    import transformers

    if hf_config.model_type in ("vit", "deit") and with_head:
        return transformers.AutoModelForImageClassification
    return transformers.AutoModel


def hf_data_config(path: Path | None, cfg: ViTConfig) -> DataConfig:
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


def _tokenizer(ref: str, config_path: Path, model_type: str):
    """The model's tokenizer from its folder or (cached) repository, or None when it has none: CLIP's BPE
    tokenizer, or for SigLIP the class its tokenizer_config.json names (SiglipTokenizer, GemmaTokenizer),
    through AutoTokenizer without remote code."""
    from transformers import AutoTokenizer, CLIPTokenizer

    from vit_core.hub import hf_file

    folder = config_path.parent
    names = TOKENIZER_FILES[model_type]
    if not Path(ref).is_dir():  # hub files of one revision share the snapshot folder of config.json
        for name in names:
            hf_file(ref, [name], f"hf:{ref}", "config", required=False)
    if model_type == "siglip":
        if not (folder / "tokenizer_config.json").is_file() or not any((folder / n).is_file() for n in names[2:]):
            return None
        return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    if not ((folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file()):
        return None
    return CLIPTokenizer.from_pretrained(str(folder))


def hf_text_encoder(model: nn.Module, tokenizer) -> TextEncoder:
    """HF CLIPModel's or SiglipModel's own `get_text_features` and tokenizer behind a `TextEncoder`.

    SigLIP reads the last position of a text padded to its full context (64 tokens) with no attention mask,
    as it was trained and as HF's own examples call it (`padding="max_length"`); its zero-shot logit has
    a learnt bias and each label's probability is a sigmoid.
    """
    context = int(model.config.text_config.max_position_embeddings)
    siglip = model.config.model_type == "siglip"

    def embed(prompts: list[str]) -> torch.Tensor:
        if siglip:
            tokens = tokenizer(prompts, padding="max_length", max_length=context, return_tensors="pt")
            features = model.get_text_features(input_ids=tokens["input_ids"])
        else:
            tokens = tokenizer(prompts, padding=True, return_tensors="pt")
            features = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return features if isinstance(features, torch.Tensor) else features.pooler_output  # [P, E]

    def token_count(prompt: str) -> int:
        return len(tokenizer(prompt)["input_ids"])  # special tokens included (CLIP: start and end; SigLIP: </s>)

    scale = float(model.logit_scale.detach().exp())
    bias = float(model.logit_bias.detach()) if siglip else 0.0
    size = sum(p.numel() for p in model.parameters())
    return TextEncoder(
        embed,
        token_count,
        context_length=context,
        logit_scale=scale,
        logit_bias=bias,
        activation="sigmoid" if siglip else "softmax",
        num_parameters=size,
    )


def load_hf(ref: str, weights: str | Path | None, random_weights: bool) -> LoadedModel:
    """`hf:<repo id or save_pretrained dir>`: transformers' plain config classes, our converter, the image
    processor's config as preprocessing, `id2label` as labels; a CLIPModel or SiglipModel keeps HF's text tower."""
    from vit_core.model import vit_from_state_dict
    from vit_core.weights import read_state_dict

    config_path, weight_path, processor_path = hf_files(ref, weights, random_weights)
    hf_config = hf_config_from_file(config_path)
    if random_weights:
        source = hf_model_class(hf_config).from_config(hf_config)
        state, origin = source.state_dict(), "random"
    else:
        origin = str(weights or weight_path)
        state = read_state_dict(origin)
    cfg = config_from_hf(hf_config, state)
    model = vit_from_state_dict(cfg, convert_hf(state, cfg))
    data_config = hf_data_config(processor_path, cfg)
    labels = [hf_config.id2label[i] for i in range(cfg.num_classes)] if cfg.num_classes else None
    text = None
    if hf_config.model_type in IMAGE_TEXT_TYPES:
        if not random_weights:
            source = hf_model_class(hf_config).from_config(hf_config)
            text_state = {k: v for k, v in state.items() if not k.startswith(("vision_model.", "visual_projection."))}
            _load_text_tower(source, text_state)
        source.vision_model = None  # the image tower is ours now; the text tower stays
        if hasattr(source, "visual_projection"):
            source.visual_projection = None
        tokenizer = _tokenizer(ref, config_path, hf_config.model_type)
        text = hf_text_encoder(source.eval(), tokenizer) if tokenizer is not None else None
    del state

    def reference() -> nn.Module:
        factory = hf_model_class(hf_config, with_head=bool(cfg.num_classes))
        if origin == "random" or weights is not None:
            return factory.from_config(hf_config, attn_implementation="sdpa").eval()
        return factory.from_pretrained(str(config_path.parent), attn_implementation="sdpa").eval()

    return LoadedModel(ref, model, data_config, timm_transform(data_config), labels, origin, reference, text)


def _load_text_tower(source: nn.Module, text_state: Mapping[str, torch.Tensor]) -> None:
    """A CLIPModel's (SiglipModel's) text tower and logit scale (and bias) into HF's model, checked key by key."""
    expected = {
        k: v for k, v in source.state_dict().items() if not k.startswith(("vision_model.", "visual_projection."))
    }
    text_state = {k: v for k, v in text_state.items() if not k.endswith("position_ids")}
    check_keys(text_state, {key: tuple(value.shape) for key, value in expected.items()}, "HF")
    source.load_state_dict(text_state, strict=False)
