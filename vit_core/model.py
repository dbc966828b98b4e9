"""A readable Vision Transformer with named capture points.

Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words": patch embedding -> prefix tokens + position
embedding -> L pre-norm encoder blocks (multi-head self-attention softmax(QK^T/sqrt(d_k))V, then an
MLP of two linear layers with GELU, each on a residual branch) -> final norm -> pooling (the class token,
the mean of the patch tokens, or multi-head attention pooling as in SigLIP) -> classification head or image
projection.

Capture points use TransformerLens's names. Each is a `HookPoint` (an identity module); hooks are
attached only inside `ViT.hooks(...)`, which always removes them. Attention takes the fused path
(`F.scaled_dot_product_attention`) unless something hooks its scores or pattern, in which case the
explicit softmax path runs; both give the same numbers. `ViT.attention_functions(...)` swaps in another
computation of the attention output (the fused statistics kernel of `vit_core.kernels`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from vit_core.config import ViTConfig, split_tokens
from vit_core.errors import VitCoreError

HookFn = Callable[[torch.Tensor, str], torch.Tensor | None]
# (layer, q, k, v, scale) -> z: q, k, v `[batch, head, pos, d_head]` -> z `[batch, head, pos, d_head]`
AttentionFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]
# Older names of capture points, still accepted by `ViT.hooks` (the suffix after the block's prefix).
HOOK_ALIASES = {"attn.hook_scores": "attn.hook_attn_scores"}


class HookPoint(nn.Module):
    """An identity with a name: the place where a capture or an intervention attaches."""

    def __init__(self) -> None:
        super().__init__()
        self.name = ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @property
    def active(self) -> bool:
        return bool(self._forward_hooks)


class LayerScale(nn.Module):
    """Per-channel scale on a residual branch (Touvron et al. 2021, CaiT; used by DINOv2)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head self-attention (Vaswani et al. 2017) with one fused qkv projection, as in timm."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        # 1/sqrt(d_k) keeps the dot products at unit variance, so softmax does not saturate.
        self.scale = cfg.head_dim**-0.5
        self.fused = True
        self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim, bias=cfg.qkv_bias)
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.hook_q = HookPoint()  # [batch, head, query, d_head]
        self.hook_k = HookPoint()  # [batch, head, key, d_head]
        self.hook_v = HookPoint()  # [batch, head, key, d_head]
        self.hook_attn_scores = HookPoint()  # [batch, head, query, key], scaled, before softmax
        self.hook_pattern = HookPoint()  # [batch, head, query, key], rows sum to 1
        self.hook_z = HookPoint()  # [batch, head, query, d_head], pattern @ v per head
        # Set only inside `ViT.attention_functions(...)`: computes z from q, k, v instead of the paths below.
        self.attention_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)  # [B, N, 3, H, Dh]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, N, Dh]
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        explicit = self.hook_attn_scores.active or self.hook_pattern.active
        if self.attention_fn is not None and not explicit:
            z = self.attention_fn(q, k, v, self.scale)  # [B, H, N, Dh]
        elif self.fused and not explicit:
            z = F.scaled_dot_product_attention(q, k, v)  # [B, H, N, Dh]
        else:
            # k made contiguous as it is: the product then reads kᵀ as a transposed view, where a strided kᵀ
            # would first be copied transposed (a slower, cache-unfriendly copy); the numbers are the same
            scores = self.hook_attn_scores((q * self.scale) @ k.contiguous().transpose(-2, -1))  # [B, H, N, N]
            pattern = self.hook_pattern(scores.softmax(dim=-1))  # [B, H, N, N]
            z = pattern @ v  # [B, H, N, Dh]
        z = self.hook_z(z)
        return self.proj(z.transpose(1, 2).reshape(batch, tokens, dim))  # [B, N, D]


class QuickGELU(nn.Module):
    """x·σ(1.702x): OpenAI CLIP's sigmoid approximation of GELU (Hendrycks & Gimpel 2016, §2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Mlp(nn.Module):
    """Two linear layers with a GELU between them (Hendrycks & Gimpel 2016)."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.mlp_dim)
        if cfg.act == "quick_gelu":
            self.act: nn.Module = QuickGELU()
        else:
            self.act = nn.GELU(approximate="tanh" if cfg.act == "gelu_tanh" else "none")
        self.fc2 = nn.Linear(cfg.mlp_dim, cfg.embed_dim)
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp], before GELU
        self.hook_post = HookPoint()  # [batch, pos, d_mlp], after GELU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.hook_post(self.act(self.hook_pre(self.fc1(x)))))  # [B, N, D]


class Block(nn.Module):
    """One pre-norm encoder block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ls1 = LayerScale(cfg.embed_dim) if cfg.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.mlp = Mlp(cfg)
        self.ls2 = LayerScale(cfg.embed_dim) if cfg.layer_scale else nn.Identity()
        self.hook_resid_pre = HookPoint()  # [batch, pos, d_model]
        self.hook_attn_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_mid = HookPoint()  # [batch, pos, d_model]
        self.hook_mlp_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_post = HookPoint()  # [batch, pos, d_model]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(x + self.hook_attn_out(self.ls1(self.attn(self.norm1(x)))))
        return self.hook_resid_post(x + self.hook_mlp_out(self.ls2(self.mlp(self.norm2(x)))))


class PatchEmbed(nn.Module):
    """A P x P x C patch, flattened, times a linear map: one strided convolution."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.patch_size = cfg.patch_size
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.proj(pixels)  # [B, D, rows, cols]


def resample_pos_embed(
    pos_embed: torch.Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int], antialias: bool = True
) -> torch.Tensor:
    """Interpolate patch position embeddings `[1, rows*cols, D]` to another grid.

    Bicubic, with antialiasing as timm's `resample_abs_pos_embed` and HF's Dinov2WithRegisters, or without
    it as HF's Dinov2Model and CLIP (`ViTConfig.pos_embed_antialias`), so that each source and we agree.
    """
    dim = pos_embed.shape[-1]
    grid = pos_embed.float().reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)  # [1, D, r, c]
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", antialias=antialias, align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_embed.dtype)  # [1, r'*c', D]


class AttentionPool(nn.Module):
    """Multi-head attention pooling, "MAP" (Lee et al. 2019, "Set Transformer", its PMA block; the readout of
    SigLIP, Zhai et al. 2023): one learnt query attends over the tokens, z = softmax(q kᵀ/√d_k) v per head,
    then x = proj(z) and x + MLP(norm(x)). There is no residual around the attention: the latent query is a
    parameter, so the pooled vector is made of the tokens alone. The same computation as timm's
    `AttentionPoolLatent` (latent_len=1) and HF's `SiglipMultiheadAttentionPoolingHead`.
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.scale = cfg.head_dim**-0.5
        self.fused = True
        self.latent = nn.Parameter(torch.zeros(1, 1, dim))  # the learnt query token
        self.q = nn.Linear(dim, dim, bias=cfg.qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=cfg.qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.mlp = Mlp(cfg)
        self.hook_attn_scores = HookPoint()  # [batch, head, 1, key], scaled, before softmax
        self.hook_pattern = HookPoint()  # [batch, head, 1, key], the query's weights over the tokens, sum to 1
        self.hook_out = HookPoint()  # [batch, d_model], the pooled vector

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """`[..., N, D]` -> `[..., D]` (the logit lens reads `[layer, N, D]` stacks in one call)."""
        *lead, count, dim = tokens.shape
        x = tokens.reshape(-1, count, dim)  # [B, N, D]
        batch = x.shape[0]
        q = self.q(self.latent).reshape(1, 1, self.num_heads, self.head_dim).transpose(1, 2)  # [1, H, 1, Dh]
        q = q.expand(batch, -1, -1, -1)  # [B, H, 1, Dh]
        kv = self.kv(x).reshape(batch, count, 2, self.num_heads, self.head_dim)  # [B, N, 2, H, Dh]
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, N, Dh]
        if self.fused and not (self.hook_attn_scores.active or self.hook_pattern.active):
            z = F.scaled_dot_product_attention(q, k, v)  # [B, H, 1, Dh]
        else:
            scores = self.hook_attn_scores((q * self.scale) @ k.transpose(-2, -1))  # [B, H, 1, N]
            pattern = self.hook_pattern(scores.softmax(dim=-1))  # [B, H, 1, N]
            z = pattern @ v  # [B, H, 1, Dh]
        pooled = self.proj(z.transpose(1, 2).reshape(batch, dim))  # [B, D]
        pooled = pooled + self.mlp(self.norm(pooled))  # [B, D]
        return self.hook_out(pooled).reshape(*lead, dim)  # [..., D]


class ViT(nn.Module):
    """Vision Transformer whose every intermediate tensor can be captured by name."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cfg.class_token else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim)) if cfg.distill_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, cfg.num_register_tokens, dim)) if cfg.num_register_tokens else None
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.pos_embed_len, dim))
        self.norm_pre = nn.LayerNorm(dim, eps=cfg.norm_eps) if cfg.pre_norm else nn.Identity()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(dim, eps=cfg.norm_eps) if cfg.final_norm else nn.Identity()
        self.attn_pool = AttentionPool(cfg) if cfg.global_pool == "map" else None
        self.fc_norm = nn.LayerNorm(dim, eps=cfg.norm_eps) if cfg.fc_norm else nn.Identity()
        self.head = nn.Linear(dim, cfg.num_classes) if cfg.num_classes else None
        self.head_dist = nn.Linear(dim, cfg.num_classes) if cfg.distill_head else None
        # CLIP: pooled token -> image embedding in the joint image–text space; SigLIP: the pooled token is the
        # embedding (an identity, so `proj is not None` still says "image–text model")
        self.proj: nn.Module | None = None
        if cfg.image_embed_dim:
            self.proj = nn.Linear(dim, cfg.image_embed_dim, bias=cfg.proj_bias) if cfg.image_proj else nn.Identity()
        self.hook_embed = HookPoint()  # [batch, patches, d_model], patch projection before position
        self.hook_pos_embed = HookPoint()  # [1, pos or patches, d_model]
        self.hook_points: dict[str, HookPoint] = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                self.hook_points[name] = module
        self.init_weights()

    def init_weights(self) -> None:
        """Truncated-normal init (std 0.02) as in timm/big_vision, for training from scratch."""
        latent = self.attn_pool.latent if self.attn_pool is not None else None
        for param in (self.pos_embed, self.cls_token, self.dist_token, self.reg_token, latent):
            if param is not None:
                nn.init.trunc_normal_(param, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for block in self.blocks:
            for scale in (block.ls1, block.ls2):
                if isinstance(scale, LayerScale):
                    nn.init.constant_(scale.gamma, 1e-5)

    # ---- capture -------------------------------------------------------------------------------
    @contextmanager
    def hooks(self, fwd_hooks: Mapping[str, HookFn]) -> Iterator[None]:
        """Attach `fn(tensor, name)` to the named capture points for the duration of the block.

        A hook that returns a tensor replaces the value (interventions such as head ablation).
        Hooks are removed on exit, also when the block raises. Older names (`HOOK_ALIASES`:
        `blocks.{i}.attn.hook_scores`) attach to the same point; `fn` receives the name it was given.
        """
        points = {name: self.hook_points.get(self.canonical_hook_name(name)) for name in fwd_hooks}
        unknown = [name for name, point in points.items() if point is None]
        if unknown:
            raise VitCoreError("unknown_hook", name=unknown[0], valid=self.hook_names())
        handles = []
        try:
            for name, fn in fwd_hooks.items():
                handles.append(
                    points[name].register_forward_hook(
                        lambda _module, _inputs, output, fn=fn, name=name: fn(output, name)
                    )
                )
            yield
        finally:
            for handle in handles:
                handle.remove()

    @staticmethod
    def canonical_hook_name(name: str) -> str:
        """`blocks.3.attn.hook_scores` -> `blocks.3.attn.hook_attn_scores`; other names as they are."""
        prefix, dot, rest = name.partition(".")
        if prefix == "blocks" and dot:
            index, _, suffix = rest.partition(".")
            if suffix in HOOK_ALIASES:
                return f"blocks.{index}.{HOOK_ALIASES[suffix]}"
        return name

    @contextmanager
    def attention_functions(self, fn: AttentionFn) -> Iterator[None]:
        """Compute every block's attention output with `fn(layer, q, k, v, scale) -> z` inside the block.

        The statistics path uses it to run a kernel that reduces the attention weights as it computes
        them. Capture points on the scores or the pattern still take the explicit path. Restored on exit.
        """
        try:
            for index, block in enumerate(self.blocks):
                block.attn.attention_fn = functools.partial(fn, index)
            yield
        finally:
            for block in self.blocks:
                block.attn.attention_fn = None

    def hook_names(self) -> str:
        """The capture points, block indices folded: 'hook_embed, ..., blocks.{0..11}.attn.hook_pattern'."""
        folded = []
        for name in self.hook_points:
            parts = name.split(".")
            if parts[0] == "blocks":
                parts[1] = f"{{0..{self.cfg.depth - 1}}}"
            folded.append(".".join(parts))
        return ", ".join(dict.fromkeys(folded))

    def set_fused_attention(self, fused: bool) -> None:
        """Use `F.scaled_dot_product_attention` when nothing captures the pattern (default True)."""
        for block in self.blocks:
            block.attn.fused = fused
        if self.attn_pool is not None:
            self.attn_pool.fused = fused

    # ---- forward -------------------------------------------------------------------------------
    def prefix_tokens(self, batch: int) -> list[torch.Tensor]:
        tokens = [self.cls_token, self.dist_token, self.reg_token]
        return [t.expand(batch, -1, -1) for t in tokens if t is not None]  # each [B, n, D]

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """Position embedding for a patch grid, interpolated when it differs from the checkpoint's."""
        if grid == self.cfg.grid:
            return self.pos_embed  # [1, E, D]
        n_prefix = self.cfg.num_prefix_tokens if self.cfg.pos_embed_prefix else 0
        prefix, patches = self.pos_embed[:, :n_prefix], self.pos_embed[:, n_prefix:]
        resampled = resample_pos_embed(patches, grid, self.cfg.grid, self.cfg.pos_embed_antialias)
        return torch.cat([prefix, resampled], dim=1)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels `[B, C, H, W]` -> token sequence `[B, P + rows*cols, D]` fed to the first block."""
        patch = self.cfg.patch_size
        height, width = pixels.shape[-2:]
        if height % patch or width % patch:
            raise VitCoreError("input_not_patch_multiple", height=int(height), width=int(width), patch=patch)
        x = self.patch_embed(pixels)  # [B, D, rows, cols]
        grid = (x.shape[-2], x.shape[-1])
        x = self.hook_embed(x.flatten(2).transpose(1, 2))  # [B, rows*cols, D]
        pos = self.hook_pos_embed(self.position_embedding(grid))  # [1, E, D]
        prefix = self.prefix_tokens(x.shape[0])
        if self.cfg.pos_embed_prefix:
            x = torch.cat([*prefix, x], dim=1) + pos  # [B, N, D]
        else:
            x = torch.cat([*prefix, x + pos], dim=1)  # [B, N, D]
        return self.norm_pre(x)

    def forward_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """Residual stream after the last block, `[B, N, D]` (before the final norm)."""
        x = self.embed(pixels)
        for block in self.blocks:
            x = block(x)
        return x

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final norm + pooling + fc_norm: `[..., N, D]` -> `[..., D]` (DeiT: `[..., 2, D]`).

        LayerNorm acts per token, so only the tokens that are read get normalised. The attention pool reads
        the patch tokens, as timm's (prefix tokens are left out; SigLIP has none).
        """
        if self.cfg.distill_head:
            return self.norm(tokens[..., :2, :])  # class and distillation tokens, each with its own head
        if self.cfg.global_pool == "token":
            return self.norm(tokens[..., 0, :])
        _, patches = split_tokens(tokens, self.cfg.num_prefix_tokens)
        if self.attn_pool is not None:
            return self.fc_norm(self.attn_pool(self.norm(patches)))
        return self.fc_norm(self.norm(patches).mean(dim=-2))

    def head_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """The model's own readout on a residual stream `[..., N, D]` -> logits `[..., C]`.

        Applied to the stream after any block this is the logit lens (nostalgebraist 2020).
        Without a head it returns the pooled features `[..., D]`, as timm does with num_classes=0; an
        image–text model's image tower returns its image embedding `[..., E]` (not normalised).
        """
        pooled = self.pool(tokens)
        if self.proj is not None:
            return self.proj(pooled)
        if self.head is None:
            return pooled
        if self.head_dist is not None:
            # DeiT at inference: the average of the class-token and distillation-token heads.
            return (self.head(pooled[..., 0, :]) + self.head_dist(pooled[..., 1, :])) / 2
        return self.head(pooled)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels `[B, C, H, W]` -> logits `[B, classes]` (pooled features without a head, the image embedding
        `[B, E]` for an image–text model)."""
        return self.head_logits(self.forward_tokens(pixels))


def vit_from_state_dict(cfg: ViTConfig, state_dict: Mapping[str, torch.Tensor]) -> ViT:
    """Build on the meta device and adopt `state_dict`'s tensors: no time spent on a random init."""
    with torch.device("meta"):
        model = ViT(cfg)
    model.load_state_dict(state_dict, assign=True)  # requires_grad stays as the module declares it
    return model.eval()
