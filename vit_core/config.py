"""Architecture and preprocessing configs: plain frozen dataclasses that round-trip through JSON.

One `ViTConfig` describes every model the project can represent: ViT (Dosovitskiy et al. 2021),
DeiT with its distillation token (Touvron et al. 2021), DINO/DINOv2 backbones with registers and
layer scale (Caron et al. 2021; Oquab et al. 2023; Darcet et al. 2024), and the image towers of
image–text models whose output is an embedding in the joint space (CLIP, Radford et al. 2021; SigLIP,
Zhai et al. 2023, read out by multi-head attention pooling, "map").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch

from vit_core.errors import VitCoreError

# token: the class token; avg: the mean of the patch tokens (GAP); map: multi-head attention pooling, a learnt
# query attending over the patch tokens (Lee et al. 2019, "Set Transformer"; used by SigLIP, Zhai et al. 2023)
GlobalPool = Literal["token", "avg", "map"]
Activation = Literal["gelu", "gelu_tanh", "quick_gelu"]


@dataclass(frozen=True)
class ViTConfig:
    """Everything needed to build a `vit_core.model.ViT`.

    Prefix tokens come in a fixed order: class token, distillation token, then register tokens.
    """

    image_size: tuple[int, int] = (224, 224)  # (height, width) the position embedding was trained at
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    qkv_bias: bool = True
    class_token: bool = True
    distill_token: bool = False  # DeiT: a second prefix token after the class token
    distill_head: bool = False  # DeiT distilled: a second head on it, averaged with the first
    num_register_tokens: int = 0
    pos_embed_prefix: bool = True  # the position embedding also covers the prefix tokens
    pre_norm: bool = False  # LayerNorm right after the embedding (CLIP-style)
    global_pool: GlobalPool = "token"
    final_norm: bool = True  # LayerNorm on all tokens before pooling
    fc_norm: bool = False  # LayerNorm after pooling instead (timm, global_pool="avg")
    layer_scale: bool = False  # per-channel scales on both residual branches (CaiT, DINOv2)
    norm_eps: float = 1e-6
    act: Activation = "gelu"  # quick_gelu: x·σ(1.702x), OpenAI CLIP's approximation
    num_classes: int = 1000  # 0: no head, the model returns pooled features
    # CLIP: a linear projection of the pooled token into the image–text space; the model's output is then
    # this image embedding (0: none). OpenAI CLIP's has no bias; timm's CLIP towers keep one (zeros).
    image_embed_dim: int = 0
    proj_bias: bool = False
    # False: the pooled readout itself is the image embedding, no projection (SigLIP: image_embed_dim = embed_dim)
    image_proj: bool = True
    # Position embeddings resized to another grid: bicubic with antialiasing (timm, HF Dinov2WithRegisters)
    # or without it (HF Dinov2Model, HF CLIP).
    pos_embed_antialias: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        if self.embed_dim % self.num_heads:
            raise VitCoreError("embed_dim_not_divisible", embed_dim=self.embed_dim, num_heads=self.num_heads)
        if self.global_pool == "token" and not self.class_token:
            raise VitCoreError("token_pool_without_class_token")
        if self.global_pool not in ("token", "avg", "map"):
            raise VitCoreError("global_pool_unsupported", value=str(self.global_pool))
        if self.distill_token and not self.class_token:
            raise VitCoreError("distill_token_without_class_token")
        if self.distill_head and not (self.distill_token and self.num_classes):
            raise VitCoreError("distill_head_without_token")
        if self.final_norm and self.fc_norm:
            raise VitCoreError("norms_exclusive")
        if self.image_embed_dim and self.num_classes:
            raise VitCoreError("projection_and_head")
        if not self.image_proj and self.image_embed_dim not in (0, self.embed_dim):
            raise VitCoreError(
                "embedding_width_without_projection", image_embed_dim=self.image_embed_dim, embed_dim=self.embed_dim
            )

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def num_prefix_tokens(self) -> int:
        """Class, distillation and register tokens: the tokens that are not image patches."""
        return int(self.class_token) + int(self.distill_token) + self.num_register_tokens

    @property
    def image_text(self) -> bool:
        """An image tower of an image–text model: the output is an image embedding, not class logits."""
        return self.image_embed_dim > 0

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (rows, cols) at the checkpoint's own image size."""
        return (self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size)

    @property
    def pos_embed_len(self) -> int:
        rows, cols = self.grid
        return rows * cols + (self.num_prefix_tokens if self.pos_embed_prefix else 0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ViTConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise VitCoreError("unknown_config_fields", fields=", ".join(unknown), known=", ".join(sorted(known)))
        return cls(**data)


@dataclass(frozen=True)
class DataConfig:
    """How an image becomes the model's input tensor, in timm's vocabulary (`resolve_data_config`)."""

    input_size: tuple[int, int, int] = (3, 224, 224)  # (channels, height, width)
    interpolation: str = "bicubic"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    crop_pct: float = 0.875
    crop_mode: str = "center"  # timm: "center" (resize short side), "squash" (resize both sides)

    def __post_init__(self) -> None:
        for name in ("input_size", "mean", "std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def split_tokens(tokens: torch.Tensor, num_prefix_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split `[..., N, D]` tokens into prefix tokens `[..., P, D]` and patch tokens `[..., N-P, D]`.

    Every consumer uses this instead of assuming one class token at position 0.
    """
    return tokens[..., :num_prefix_tokens, :], tokens[..., num_prefix_tokens:, :]
