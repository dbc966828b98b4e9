"""timm `VisionTransformer` / `VisionTransformerDistilled` -> vit_core (ViT, DeiT, DINO, DINOv2, CLIP and SigLIP
towers).

Our parameter names follow timm's, so the mapping is the identity on every name it knows; it is
still spelled out so that a checkpoint with anything else (BEiT's q/v biases, qk-norm, SwiGLU MLPs,
other attention pools) fails loudly instead of loading half its weights.

timm's CLIP image towers (`vit_*_clip_*` with their CLIP tags: pre-norm, QuickGELU in the `_quickgelu`
variants) end in a `head` that is CLIP's image projection (512-d for ViT-B, no labels); it loads as our
image projection, so the model's output is the image embedding. timm has no text tower: such a model is
image-only here (the open_clip or HF checkpoint it came from has the text tower).

timm's SigLIP towers (`vit_*_siglip_*`, Zhai et al. 2023) have no class token and pool with attention
(`global_pool='map'`, an `AttentionPoolLatent` with one learnt query): our attention pool, same names.
With no head, the pooled vector is SigLIP's image embedding (image-only here too: open_clip's
`ViT-B-16-SigLIP` and HF's `SiglipModel` carry the text tower). The `_siglip_gap_` variants drop the pool
for the mean of the tokens: plain backbones.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vit_core.config import DataConfig, ViTConfig
from vit_core.convert.common import StateDict, check_state_dict, rename
from vit_core.errors import VitCoreError
from vit_core.loaded import WEIGHT_FILES, LoadedModel, timm_transform

_BLOCK = r"blocks\.(\d+)\."
RULES = [
    (r"(cls_token|dist_token|reg_token|pos_embed)", r"\1"),
    (r"patch_embed\.proj\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"(norm_pre|norm|fc_norm|head|head_dist)\.(weight|bias)", r"\1.\2"),
    (_BLOCK + r"(norm1|norm2)\.(weight|bias)", r"blocks.\1.\2.\3"),
    (_BLOCK + r"attn\.(qkv|proj)\.(weight|bias)", r"blocks.\1.attn.\2.\3"),
    (_BLOCK + r"(ls1|ls2)\.gamma", r"blocks.\1.\2.gamma"),
    (_BLOCK + r"mlp\.(fc1|fc2)\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
    (r"attn_pool\.latent", "attn_pool.latent"),
    (r"attn_pool\.(q|kv|proj|norm)\.(weight|bias)", r"attn_pool.\1.\2"),
    (r"attn_pool\.mlp\.(fc1|fc2)\.(weight|bias)", r"attn_pool.mlp.\1.\2"),
]


def config_from_timm(model: nn.Module) -> ViTConfig:
    """Read our config off a timm ViT instance (built with or without weights)."""
    name = getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__)
    kind = type(model).__name__
    if kind not in ("VisionTransformer", "VisionTransformerDistilled"):
        raise VitCoreError("timm_not_a_vit", name=name, kind=kind)
    block = model.blocks[0]
    attn, mlp = block.attn, block.mlp
    check_attention_pool(model, name)
    if model.pos_embed is None:
        raise VitCoreError("timm_no_pos_embed", name=name)
    if type(attn).__name__ != "Attention" or not isinstance(getattr(attn, "qkv", None), nn.Linear):
        raise VitCoreError("timm_attention_class", name=name, kind=type(attn).__name__)
    if not all(isinstance(getattr(attn, n, nn.Identity()), nn.Identity) for n in ("q_norm", "k_norm", "norm")):
        raise VitCoreError("timm_qk_norm", name=name)
    if getattr(attn, "gate", None) is not None:
        raise VitCoreError("timm_gated_attention", name=name)
    if type(mlp).__name__ != "Mlp" or not isinstance(getattr(mlp, "norm", nn.Identity()), nn.Identity):
        raise VitCoreError("timm_mlp_class", name=name, kind=type(mlp).__name__)
    if not isinstance(model.patch_embed.norm, nn.Identity):
        raise VitCoreError("timm_patch_norm", name=name)
    if attn.proj.bias is None or mlp.fc1.bias is None:
        raise VitCoreError("timm_no_bias", name=name)
    act = mlp.act
    if type(act).__name__ == "QuickGELU":
        activation = "quick_gelu"
    elif type(act).__name__ == "GELUTanh":  # timm's act_layer="gelu_tanh" (SigLIP): F.gelu(x, approximate="tanh")
        activation = "gelu_tanh"
    elif isinstance(act, nn.GELU):
        activation = "gelu_tanh" if act.approximate == "tanh" else "gelu"
    else:
        raise VitCoreError("timm_activation", name=name, kind=type(act).__name__)
    global_pool = model.global_pool
    if global_pool not in ("token", "avg", "map") or getattr(model, "pool_include_prefix", False):
        raise VitCoreError("timm_global_pool", name=name, pool=str(global_pool))
    if global_pool == "map" and model.attn_pool.mlp.fc1.out_features != mlp.fc1.out_features:
        raise VitCoreError("timm_attention_pool", name=name, feature="an MLP wider or narrower than the blocks'")
    distilled = kind == "VisionTransformerDistilled"
    head = model.head if isinstance(model.head, nn.Linear) else None
    projection = head is not None and is_clip_tower(model)
    siglip = head is None and is_siglip_tower(model)  # the pooled vector is the image embedding
    return ViTConfig(
        image_size=tuple(model.patch_embed.img_size),
        patch_size=int(model.patch_embed.patch_size[0]),
        in_chans=int(model.patch_embed.proj.in_channels),
        embed_dim=int(model.embed_dim),
        depth=len(model.blocks),
        num_heads=int(attn.num_heads),
        mlp_dim=int(mlp.fc1.out_features),
        qkv_bias=attn.qkv.bias is not None,
        class_token=model.cls_token is not None,
        distill_token=distilled,
        distill_head=distilled and head is not None,
        num_register_tokens=int(getattr(model, "num_reg_tokens", 0)),
        pos_embed_prefix=not model.no_embed_class,
        pre_norm=not isinstance(model.norm_pre, nn.Identity),
        global_pool="token" if distilled else global_pool,
        final_norm=not isinstance(model.norm, nn.Identity),
        fc_norm=not isinstance(model.fc_norm, nn.Identity),
        layer_scale=not isinstance(block.ls1, nn.Identity),
        norm_eps=float(block.norm1.eps),
        act=activation,
        num_classes=int(head.out_features) if head is not None and not projection else 0,
        image_embed_dim=int(head.out_features) if projection else int(model.embed_dim) if siglip else 0,
        proj_bias=projection and head.bias is not None,
        image_proj=not siglip,
    )


def check_attention_pool(model: nn.Module, name: str) -> None:
    """timm's `AttentionPoolLatent` as SigLIP uses it (one latent query projected by `q`, no qk-norm, no position
    embedding of its own, its norm and MLP, the blocks' widths) is our attention pool; anything else is refused."""
    from timm.layers import AttentionPoolLatent

    pool = getattr(model, "attn_pool", None)
    if pool is None:
        return
    if not isinstance(pool, AttentionPoolLatent):
        raise VitCoreError("timm_attention_pool", name=name, feature=f"type {type(pool).__name__}")
    heads = model.blocks[0].attn.num_heads
    unsupported = {
        "more than one latent query": pool.latent_len != 1 or pool.pool != "token",
        "no query projection": not isinstance(pool.q, nn.Linear),
        "qk-norm": not isinstance(pool.q_norm, nn.Identity),
        "a position embedding of its own": pool.pos_embed is not None,
        "no MLP": pool.mlp is None or not isinstance(pool.norm, nn.LayerNorm),
        "another width than the blocks'": pool.latent_dim != model.embed_dim or pool.num_heads != heads,
        "a projection without bias": pool.proj.bias is None,
    }
    for feature, present in unsupported.items():
        if present:
            raise VitCoreError("timm_attention_pool", name=name, feature=feature)


def is_siglip_tower(model: nn.Module) -> bool:
    """A timm SigLIP image tower: a `_siglip_` architecture read out by its attention pool, with no head."""
    name = getattr(model, "pretrained_cfg", {}).get("architecture", "")
    return "_siglip_" in f"{name}_" and getattr(model, "attn_pool", None) is not None


def is_clip_tower(model: nn.Module) -> bool:
    """A timm CLIP image tower whose head is CLIP's projection: a `_clip_` architecture whose pretrained
    config has no ImageNet labels (the `.openai`, `.laion2b`, ... tags; `_ft_in1k` tags are classifiers)."""
    from timm.data import infer_imagenet_subset

    name = getattr(model, "pretrained_cfg", {}).get("architecture", "")
    return "_clip_" in f"{name}_" and not infer_imagenet_subset(model)


def convert_timm(state_dict: Mapping[str, torch.Tensor], cfg: ViTConfig) -> StateDict:
    """timm state_dict -> vit_core state_dict (a CLIP tower's head -> our image projection). Checked against `cfg`."""
    renamed = rename(state_dict, RULES, ignore=(), source="timm")
    if cfg.image_embed_dim:
        renamed = {("proj" + key[4:] if key.startswith("head.") else key): value for key, value in renamed.items()}
    weight = renamed.get("patch_embed.proj.weight")
    if weight is not None and "patch_embed.proj.bias" not in renamed:  # CLIP towers: a bias-free patch embedding
        renamed["patch_embed.proj.bias"] = weight.new_zeros(weight.shape[0])
    return check_state_dict(renamed, cfg, "timm")


def data_config_from_timm(model: nn.Module) -> dict[str, Any]:
    """timm's own resolved data config (input size, interpolation, mean/std, crop) for the model."""
    from timm.data import resolve_data_config

    return resolve_data_config({}, model=model)


def timm_model_for_config(cfg: ViTConfig) -> nn.Module:
    """The timm model with exactly our architecture; its state_dict keys equal ours."""
    from functools import partial

    from timm.models.deit import VisionTransformerDistilled
    from timm.models.vision_transformer import VisionTransformer

    if cfg.distill_token and not cfg.distill_head:
        raise VitCoreError("timm_distill_token_without_head")
    model_class = VisionTransformerDistilled if cfg.distill_token else VisionTransformer
    model = model_class(
        img_size=cfg.image_size,
        patch_size=cfg.patch_size,
        in_chans=cfg.in_chans,
        num_classes=cfg.num_classes,
        global_pool=cfg.global_pool,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_dim / cfg.embed_dim,
        qkv_bias=cfg.qkv_bias,
        init_values=1e-5 if cfg.layer_scale else None,
        class_token=cfg.class_token,
        reg_tokens=cfg.num_register_tokens,
        no_embed_class=not cfg.pos_embed_prefix,
        pre_norm=cfg.pre_norm,
        final_norm=cfg.final_norm or cfg.fc_norm,
        fc_norm=cfg.fc_norm,
        act_layer=partial(nn.GELU, approximate="tanh" if cfg.act == "gelu_tanh" else "none"),
        norm_layer=partial(nn.LayerNorm, eps=cfg.norm_eps),
    )
    if model.blocks[0].mlp.fc1.out_features != cfg.mlp_dim:
        raise VitCoreError("timm_mlp_width", mlp_dim=cfg.mlp_dim, embed_dim=cfg.embed_dim)
    return model


# ---- loading -----------------------------------------------------------------------------------------
def create_timm(ref: str) -> nn.Module:
    """timm's model `ref` (`name[.tag]`) built without weights."""
    import timm

    try:
        return timm.create_model(ref, pretrained=False)
    except RuntimeError as error:
        if "Unknown model" in str(error) or "Invalid pretrained tag" in str(error):
            raise VitCoreError("unknown_timm_model", name=ref) from error
        raise


def load_timm(ref: str, weights: str | Path | None, random_weights: bool) -> LoadedModel:
    """`timm:<name>[.<tag>]`: timm builds the model, its weights come from the hub cache or `weights`;
    preprocessing is timm's `create_transform(**resolve_data_config(...))`."""
    from timm.data import resolve_data_config

    from vit_core.hub import hf_file
    from vit_core.model import vit_from_state_dict
    from vit_core.weights import read_state_dict

    source = create_timm(ref)
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
    labels = timm_labels(source, cfg.num_classes)
    del source, state

    def reference() -> nn.Module:
        built = create_timm(ref)
        state = model.state_dict()
        if cfg.image_embed_dim:  # timm's CLIP towers call the projection `head`, with no patch bias
            state = {("head" + k[4:] if k.startswith("proj.") else k): v for k, v in state.items()}
            if built.patch_embed.proj.bias is None:
                state.pop("patch_embed.proj.bias")
        built.load_state_dict(state)  # otherwise our names are timm's names
        return built.eval()

    return LoadedModel(ref, model, data_config, timm_transform(data_config), labels, origin, reference)


def timm_labels(source: nn.Module, num_classes: int) -> list[str] | None:
    """ImageNet class descriptions for a timm classifier, from the label lists timm ships (offline)."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(source) if num_classes else None
    if not subset:
        return None
    info = ImageNetInfo(subset)
    return [info.index_to_description(i) for i in range(num_classes)]
