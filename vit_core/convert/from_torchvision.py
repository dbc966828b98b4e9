"""torchvision `VisionTransformer` (vit_b_16, vit_b_32, vit_l_16, vit_l_32, vit_h_14) -> vit_core.

torchvision's `nn.MultiheadAttention` already stores q, k, v as one `in_proj` in that order.
The MLP is stored as `mlp.0`/`mlp.3` (older checkpoints: `mlp.linear_1`/`mlp.linear_2`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from vit_core.config import DataConfig, ViTConfig
from vit_core.convert.common import StateDict, check_state_dict, rename
from vit_core.errors import VitCoreError
from vit_core.loaded import LoadedModel

_LAYER = r"encoder\.layers\.encoder_layer_(\d+)\."
_PARAM = r"(weight|bias)"
RULES = [
    (r"class_token", "cls_token"),
    (r"conv_proj\." + _PARAM, r"patch_embed.proj.\1"),
    (r"encoder\.pos_embedding", "pos_embed"),
    (_LAYER + r"ln_1\." + _PARAM, r"blocks.\1.norm1.\2"),
    (_LAYER + r"ln_2\." + _PARAM, r"blocks.\1.norm2.\2"),
    (_LAYER + r"self_attention\.in_proj_(weight|bias)", r"blocks.\1.attn.qkv.\2"),
    (_LAYER + r"self_attention\.out_proj\." + _PARAM, r"blocks.\1.attn.proj.\2"),
    (_LAYER + r"mlp\.(?:0|linear_1)\." + _PARAM, r"blocks.\1.mlp.fc1.\2"),
    (_LAYER + r"mlp\.(?:3|linear_2)\." + _PARAM, r"blocks.\1.mlp.fc2.\2"),
    (r"encoder\.ln\." + _PARAM, r"norm.\1"),
    (r"heads\.head\." + _PARAM, r"head.\1"),
]


def config_from_torchvision(model: nn.Module) -> ViTConfig:
    """Our config from a torchvision `VisionTransformer` instance."""
    if type(model).__name__ != "VisionTransformer":
        raise VitCoreError("torchvision_not_a_vit", kind=type(model).__name__)
    if getattr(model, "representation_size", None) is not None:
        raise VitCoreError("torchvision_representation")
    if not isinstance(model.conv_proj, nn.Conv2d):
        raise VitCoreError("torchvision_conv_stem")
    first = model.encoder.layers[0]
    image_size = int(model.image_size)
    return ViTConfig(
        image_size=(image_size, image_size),
        patch_size=int(model.patch_size),
        in_chans=int(model.conv_proj.in_channels),
        embed_dim=int(model.hidden_dim),
        depth=len(model.encoder.layers),
        num_heads=int(first.self_attention.num_heads),
        mlp_dim=int(model.mlp_dim),
        qkv_bias=first.self_attention.in_proj_bias is not None,
        norm_eps=float(first.ln_1.eps),
        num_classes=int(model.num_classes),
    )


def convert_torchvision(state_dict: Mapping[str, torch.Tensor], cfg: ViTConfig) -> StateDict:
    """torchvision state_dict -> vit_core state_dict. Checked key by key against `cfg`."""
    return check_state_dict(rename(state_dict, RULES, ignore=(), source="torchvision"), cfg, "torchvision")


# ---- loading -----------------------------------------------------------------------------------------
TORCHVISION_VITS = ("vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14")


def load_torchvision(ref: str, weights: str | Path | None, random_weights: bool) -> LoadedModel:
    """`torchvision:<name>` with its DEFAULT weights; preprocessing and labels from `weights.transforms()` and
    `meta["categories"]`."""
    import torchvision

    from vit_core.hub import torch_hub_file
    from vit_core.model import vit_from_state_dict
    from vit_core.weights import read_state_dict

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
