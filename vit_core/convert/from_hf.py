"""Hugging Face transformers ViT / DeiT -> vit_core.

Covers `ViTModel`, `ViTForImageClassification`, `DeiTModel`, `DeiTForImageClassification` and
`DeiTForImageClassificationWithTeacher`, under both key spellings that exist: the one stored in hub
checkpoints (transformers 4: `encoder.layer.0.attention.attention.query`) and the one transformers 5
modules use in memory (`layers.0.attention.q_proj`). HF keeps q, k and v apart; we fuse them into
one qkv projection in that order, as timm does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from vit_core.config import ViTConfig
from vit_core.convert.common import StateDict, check_state_dict, rename
from vit_core.errors import VitCoreError

_PREFIX = r"(?:vit\.|deit\.)?"
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
    (r"(?:classifier|cls_classifier)\." + _PARAM, r"head.\1"),
    (r"distillation_classifier\." + _PARAM, r"head_dist.\1"),
]
# Not part of classification: the masked-image-modelling token and ViTModel's tanh pooler.
IGNORE = [_PREFIX + r"embeddings\.mask_token", _PREFIX + r"pooler\.dense\." + _PARAM]
_QKV_NAMES = {"query": "q", "key": "k", "value": "v"}
_ACTIVATIONS = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh"}


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


def config_from_hf(hf_config: Any, state_dict: Mapping[str, torch.Tensor]) -> ViTConfig:
    """Our config from a transformers `ViTConfig`/`DeiTConfig` and the keys of its checkpoint."""
    model_type = getattr(hf_config, "model_type", None)
    if model_type not in ("vit", "deit"):
        raise VitCoreError("hf_model_type_unsupported", model_type=str(model_type))
    act = _ACTIVATIONS.get(hf_config.hidden_act)
    if act is None:
        raise VitCoreError(
            "hf_activation_unsupported", name=str(hf_config.hidden_act), choices=", ".join(sorted(_ACTIVATIONS))
        )
    keys = set(state_dict)
    has_head = "classifier.weight" in keys or "cls_classifier.weight" in keys
    image_size = hf_config.image_size
    image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    patch_size = hf_config.patch_size
    patch_size = patch_size if isinstance(patch_size, int) else patch_size[0]
    return ViTConfig(
        image_size=image_size,
        patch_size=patch_size,
        in_chans=hf_config.num_channels,
        embed_dim=hf_config.hidden_size,
        depth=hf_config.num_hidden_layers,
        num_heads=hf_config.num_attention_heads,
        mlp_dim=hf_config.intermediate_size,
        qkv_bias=bool(getattr(hf_config, "qkv_bias", True)),
        class_token=True,
        distill_token=model_type == "deit",
        distill_head="distillation_classifier.weight" in keys,
        norm_eps=hf_config.layer_norm_eps,
        act=act,
        num_classes=len(hf_config.id2label) if has_head else 0,
    )


def convert_hf(state_dict: Mapping[str, torch.Tensor], cfg: ViTConfig) -> StateDict:
    """HF ViT/DeiT state_dict -> vit_core state_dict. Checked key by key against `cfg`."""
    renamed = rename(state_dict, RULES, IGNORE, source="HF")
    return check_state_dict(_fuse_qkv(renamed), cfg, "HF")
