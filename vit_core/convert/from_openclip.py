"""open_clip CLIP and SigLIP models (Ilharco et al. 2021; Radford et al. 2021; Zhai et al. 2023) -> vit_core, the
text tower kept as is.

`openclip:<arch>[/<pretrained tag>]` names one of open_clip's own architectures (`ViT-B-32`, `ViT-B-16`,
`ViT-L-14`, their `-quickgelu` variants, ...) and optionally its weights (`openclip:ViT-B-16/openai`).
The image tower (`model.visual`, open_clip's `VisionTransformer`) converts to our ViT: the class
embedding, position embedding, bias-free patch convolution (our bias is zero), `ln_pre` (our `norm_pre`),
`nn.MultiheadAttention`'s fused in-projection (our qkv, same q, k, v order), `ln_post` (our final norm)
and `proj` `[width, embed]` (our bias-free image projection, transposed). The text tower, the logit
scale (and SigLIP's bias) stay in open_clip's own model, which embeds prompts. Preprocessing is
open_clip's own `image_transform_v2` for the model's preprocess config.

SigLIP and SigLIP 2 (`ViT-B-16-SigLIP`, `ViT-B-16-SigLIP2`, ...) have a timm image tower (`visual.trunk`, a
timm SigLIP ViT read out by its attention pool, `timm_proj: none`): it converts with `from_timm`'s rules
and its pooled vector is the image embedding. Their tokenizer is a Hugging Face one named in the model's
config (`hf_tokenizer_name`); its files are fetched with the weights (or read from a local folder).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from vit_core.config import DataConfig, ViTConfig
from vit_core.convert.common import StateDict, check_keys, check_state_dict, rename
from vit_core.errors import VitCoreError
from vit_core.loaded import LoadedModel
from vit_core.model import vit_from_state_dict
from vit_core.text import TextEncoder

_BLOCK = r"visual\.transformer\.resblocks\.(\d+)\."
RULES = [
    (r"visual\.class_embedding", "cls_token"),
    (r"visual\.positional_embedding", "pos_embed"),
    (r"visual\.conv1\.weight", "patch_embed.proj.weight"),
    (r"visual\.ln_pre\.(weight|bias)", r"norm_pre.\1"),
    (_BLOCK + r"ln_1\.(weight|bias)", r"blocks.\1.norm1.\2"),
    (_BLOCK + r"attn\.in_proj_(weight|bias)", r"blocks.\1.attn.qkv.\2"),
    (_BLOCK + r"attn\.out_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (_BLOCK + r"ls_(1|2)\.gamma", r"blocks.\1.ls\2.gamma"),
    (_BLOCK + r"ln_2\.(weight|bias)", r"blocks.\1.norm2.\2"),
    (_BLOCK + r"mlp\.c_fc\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (_BLOCK + r"mlp\.c_proj\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    (r"visual\.ln_post\.(weight|bias)", r"norm.\1"),
    (r"visual\.proj", "proj.weight"),
]
# Everything outside the image tower (text tower, logit scale and bias) stays with open_clip's model.
IGNORE = [r"(?!visual\.).*"]
WEIGHT_FILES = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
SUPPORTED = (
    "ViT-B-32, ViT-B-16, ViT-L-14 and their -quickgelu variants, and the SigLIP and SigLIP 2 ViTs "
    "(ViT-B-16-SigLIP, ViT-B-16-SigLIP2, ...)"
)
TRUNK = "visual.trunk."  # a timm image tower's keys (open_clip's TimmModel)
# A Hugging Face tokenizer's files, fetched from the repository the config names (SigLIP's tokenizer.json).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def config_from_openclip(visual: nn.Module, name: str) -> ViTConfig:
    """Our config from an open_clip image tower; anything we cannot represent is refused by name."""
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import LayerScale, QuickGELU, ResidualAttentionBlock, VisionTransformer

    if isinstance(visual, TimmModel):
        return _config_from_timm_tower(visual, name)
    if not isinstance(visual, VisionTransformer):
        raise VitCoreError("openclip_not_a_vit", name=name, kind=type(visual).__name__, supported=SUPPORTED)
    block = visual.transformer.resblocks[0]
    if not isinstance(block, ResidualAttentionBlock) or hasattr(block, "ln_1_kv"):
        raise VitCoreError("openclip_unsupported", name=name, feature=f"{type(block).__name__} blocks")
    if visual.attn_pool is not None:
        raise VitCoreError("openclip_unsupported", name=name, feature="attention pooling")
    if visual.pool_type not in ("tok", "avg") or (visual.pool_type == "avg" and visual.final_ln_after_pool):
        raise VitCoreError("openclip_unsupported", name=name, feature=f"pool_type={visual.pool_type!r}")
    if visual.proj is None:
        raise VitCoreError("openclip_unsupported", name=name, feature="no image projection")
    act = block.mlp.gelu
    if isinstance(act, QuickGELU):
        activation = "quick_gelu"
    elif isinstance(act, nn.GELU):
        activation = "gelu_tanh" if act.approximate == "tanh" else "gelu"
    else:
        raise VitCoreError("openclip_unsupported", name=name, feature=f"{type(act).__name__} activation")
    width = int(visual.conv1.out_channels)
    heads = int(block.attn.num_heads)
    return ViTConfig(
        image_size=tuple(visual.image_size),
        patch_size=int(visual.patch_size[0]),
        in_chans=int(visual.conv1.in_channels),
        embed_dim=width,
        depth=len(visual.transformer.resblocks),
        num_heads=heads,
        mlp_dim=int(block.mlp.c_fc.out_features),
        qkv_bias=block.attn.in_proj_bias is not None,
        class_token=True,
        pre_norm=not isinstance(visual.ln_pre, nn.Identity),
        global_pool="token" if visual.pool_type == "tok" else "avg",
        final_norm=True,
        layer_scale=isinstance(block.ls_1, LayerScale),
        norm_eps=float(block.ln_1.eps),
        act=activation,
        num_classes=0,
        image_embed_dim=int(visual.proj.shape[1]),
        pos_embed_antialias=False,  # open_clip's resize_pos_embed: bicubic, no antialiasing
    )


def _config_from_timm_tower(visual: nn.Module, name: str) -> ViTConfig:
    """A timm trunk with nothing after it (SigLIP, `timm_proj: none`): the pooled vector is the image embedding;
    a trunk whose `head` is a linear layer (`timm_proj: ""`) has that layer as its image projection."""
    from vit_core.convert.from_timm import config_from_timm

    if len(visual.head) or type(visual.trunk).__name__ != "VisionTransformer":
        raise VitCoreError("openclip_unsupported", name=name, feature="a timm tower other than a plain ViT trunk")
    cfg = config_from_timm(visual.trunk)
    head = visual.trunk.head
    if cfg.global_pool == "avg":  # SigLIP's _gap_ trunks: no attention pool to align with the text tower
        raise VitCoreError("openclip_unsupported", name=name, feature="a mean-pooled timm trunk")
    if isinstance(head, nn.Linear):
        return replace(cfg, num_classes=0, image_embed_dim=int(head.out_features), proj_bias=head.bias is not None)
    return replace(cfg, num_classes=0, image_embed_dim=cfg.embed_dim, image_proj=False, proj_bias=False)


def convert_openclip(state_dict: Mapping[str, torch.Tensor], cfg: ViTConfig) -> StateDict:
    """open_clip state_dict (`visual.*`; the text keys are left out) -> vit_core. Checked against `cfg`."""
    state = {key.removeprefix("module."): value for key, value in state_dict.items()}
    if any(key.startswith(TRUNK) for key in state):  # a timm image tower: timm's own names after the prefix
        from vit_core.convert.from_timm import convert_timm

        visual = {key: value for key, value in state.items() if key.startswith("visual.")}
        stray = next((key for key in visual if not key.startswith(TRUNK)), None)
        if stray is not None:
            raise VitCoreError("weights_unmappable", source="open_clip", key=stray)
        return convert_timm({key.removeprefix(TRUNK): value for key, value in visual.items()}, cfg)
    renamed = rename(state, RULES, IGNORE, source="open_clip")
    for key, shape in (("cls_token", (1, 1, -1)), ("pos_embed", (1, *renamed.get("pos_embed", torch.zeros(0)).shape))):
        if key in renamed:
            renamed[key] = renamed[key].reshape(shape)
    if "proj.weight" in renamed:
        renamed["proj.weight"] = renamed["proj.weight"].T.contiguous()  # [width, E] -> Linear's [E, width]
    if "patch_embed.proj.weight" in renamed:
        weight = renamed["patch_embed.proj.weight"]
        renamed["patch_embed.proj.bias"] = weight.new_zeros(weight.shape[0])  # open_clip's conv1 has no bias
    return check_state_dict(renamed, cfg, "open_clip")


def openclip_visual_state(state_dict: Mapping[str, torch.Tensor], built: nn.Module) -> StateDict:
    """Our weights back under open_clip's `visual.*` names for the model `built`: `convert_openclip` inverted."""
    out: StateDict = {}
    for key, value in built.state_dict().items():
        if key.startswith(TRUNK):  # timm's names; a linear trunk head is our projection
            name = key.removeprefix(TRUNK)
            out[key] = state_dict["proj" + name[4:] if name.startswith("head.") else name]
        elif key.startswith("visual."):
            (name,) = rename({key: value}, RULES, IGNORE, source="open_clip")
            ours = state_dict[name]
            out[key] = (ours.T if name == "proj.weight" else ours).reshape(value.shape)
    return out


# ---- loading -----------------------------------------------------------------------------------------
def parse_openclip_name(ref: str) -> tuple[str, str | None]:
    """`ViT-B-16/openai` -> ("ViT-B-16", "openai"); open_clip's own schemas are refused as ambiguous."""
    import open_clip

    if ref.startswith(("hf-hub:", "local-dir:")):
        raise VitCoreError("openclip_ambiguous_name", name=f"openclip:{ref}")
    arch, _, tag = ref.partition("/")
    if arch not in open_clip.list_models():
        raise VitCoreError("unknown_openclip_model", name=arch, supported=SUPPORTED)
    if tag and tag not in open_clip.list_pretrained_tags_by_model(arch):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise VitCoreError("unknown_openclip_tag", name=arch, tag=tag, tags=tags)
    return arch, tag or None


def _weights_file(arch: str, tag: str, ref: str) -> Path:
    import open_clip

    from vit_core.hub import hf_file

    repo = open_clip.get_pretrained_cfg(arch, tag).get("hf_hub", "").strip("/")
    if not repo:
        raise VitCoreError("openclip_no_hub_weights", name=ref)
    return hf_file(repo, WEIGHT_FILES, f"openclip:{ref}", "weights")


class _Unweighted(logging.Filter):
    """open_clip warns on the root logger that a model built without `pretrained` has random weights; ours
    arrive right after (from the cache or `--weights`), so the warning would only mislead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


def _create(arch: str, tag: str | None) -> nn.Module:
    import open_clip

    quick_gelu = bool(tag and open_clip.get_pretrained_cfg(arch, tag).get("quick_gelu"))
    quiet = _Unweighted()
    logging.getLogger().addFilter(quiet)
    try:
        model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=quick_gelu, pretrained_text=False)
    finally:
        logging.getLogger().removeFilter(quiet)
    if tag:  # the tag's own preprocessing (mean, std, resize mode)
        from open_clip.factory import merge_preprocess_dict

        cfg = open_clip.get_pretrained_cfg(arch, tag)
        model.visual.preprocess_cfg = merge_preprocess_dict(model.visual.preprocess_cfg, cfg)
    return model.eval()


def openclip_data_config(visual: nn.Module) -> tuple[DataConfig, object]:
    """open_clip's own eval transform and the same preprocessing in timm's vocabulary."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    pp = PreprocessCfg(**visual.preprocess_cfg)
    size = pp.size if isinstance(pp.size, tuple | list) else (pp.size, pp.size)
    data_config = DataConfig(
        input_size=(3, int(size[0]), int(size[1])),
        interpolation=pp.interpolation,
        mean=tuple(pp.mean),
        std=tuple(pp.std),
        crop_pct=1.0,
        crop_mode="squash" if pp.resize_mode == "squash" else "center",
    )
    return data_config, image_transform_v2(pp, is_train=False)


def openclip_tokenizer(arch: str, ref: str):
    """open_clip's tokenizer for `arch`: its own BPE (shipped in the package), or the Hugging Face tokenizer its
    config names (SigLIP) from a local folder or the hub's cache; None when that cannot be had offline."""
    import open_clip
    from open_clip.tokenizer import HFTokenizer

    from vit_core.hub import hf_file

    text_cfg = open_clip.get_model_config(arch).get("text_cfg", {})
    source = text_cfg.get("hf_tokenizer_name", "")
    if not source:
        return open_clip.get_tokenizer(arch)
    folder = Path(source)
    if not folder.is_dir():
        found = [hf_file(source, [name], f"openclip:{ref}", "config", required=False) for name in TOKENIZER_FILES]
        if found[0] is None:
            return None
        folder = found[0].parent  # the files of one revision share its snapshot folder
    return HFTokenizer(
        str(folder), context_length=text_cfg.get("context_length"), **text_cfg.get("tokenizer_kwargs", {})
    )


def openclip_text_encoder(model: nn.Module, tokenizer) -> TextEncoder:
    """open_clip's own `encode_text` and tokenizer behind a `TextEncoder`; SigLIP's sigmoid, scale and bias."""
    from open_clip.tokenizer import HFTokenizer

    bias = getattr(model, "logit_bias", None)

    def embed(prompts: list[str]) -> torch.Tensor:
        return model.encode_text(tokenizer(prompts))  # [P, E]

    def token_count(prompt: str) -> int:
        if isinstance(tokenizer, HFTokenizer):  # the HF tokenizer adds its own special tokens (SigLIP: </s>)
            return len(tokenizer.tokenizer(tokenizer.clean_fn(prompt))["input_ids"])
        return len(tokenizer.encode(prompt)) + 2  # start and end of text

    return TextEncoder(
        embed,
        token_count,
        context_length=int(tokenizer.context_length),
        logit_scale=float(model.logit_scale.detach().exp()),
        logit_bias=0.0 if bias is None else float(bias.detach()),
        activation="softmax" if bias is None else "sigmoid",
        num_parameters=sum(p.numel() for p in model.parameters()),
    )


def _load_text_tower(source: nn.Module, text_state: Mapping[str, torch.Tensor]) -> None:
    """The checkpoint's text tower, logit scale (and bias) into open_clip's model, checked key by key."""
    expected = {key: value for key, value in source.state_dict().items() if not key.startswith("visual.")}
    check_keys(text_state, {key: tuple(value.shape) for key, value in expected.items()}, "open_clip")
    source.load_state_dict(text_state, strict=False)


def load_openclip(ref: str, weights: str | Path | None, random_weights: bool) -> LoadedModel:
    """`openclip:<arch>[/<tag>]`: open_clip builds the model; its image tower becomes our ViT."""
    import open_clip

    from vit_core.weights import read_state_dict

    arch, tag = parse_openclip_name(ref)
    if weights is None and not random_weights and tag is None:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise VitCoreError("openclip_tag_needed", name=arch, tags=tags)
    source = _create(arch, tag)
    cfg = config_from_openclip(source.visual, f"openclip:{ref}")
    if weights is not None:
        origin = str(weights)
    elif random_weights:
        origin = "random"
    else:
        origin = str(_weights_file(arch, tag, ref))
    if origin != "random":
        state = {key.removeprefix("module."): value for key, value in read_state_dict(origin).items()}
        text_state = {key: value for key, value in state.items() if not key.startswith("visual.")}
        _load_text_tower(source, text_state)
    else:
        state = source.state_dict()
    model = vit_from_state_dict(cfg, convert_openclip(state, cfg))
    data_config, transform = openclip_data_config(source.visual)
    del state
    source.visual = None  # the image tower is ours now; open_clip's text tower stays
    tokenizer = openclip_tokenizer(arch, ref)
    text = openclip_text_encoder(source, tokenizer) if tokenizer is not None else None

    def reference() -> nn.Module:
        built = _create(arch, tag)
        built.load_state_dict({**openclip_visual_state(model.state_dict(), built), **source.state_dict()})
        return built.eval()

    return LoadedModel(ref, model, data_config, transform, None, origin, reference, text)
