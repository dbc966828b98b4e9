"""Layer-wise relevance propagation through our ViT: AttnLRP, CP-LRP and the rules of Chefer et al. 2021.

AttnLRP (Achtibat et al., ICML 2024, "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for
Transformers") costs one forward and one backward pass. Relevance is gradient × input once the backward
pass of a few operations is modified (the "Gradient*Input framework" of their paper):

- linear layers: the ε-rule, Rᵢ = Σⱼ xᵢwⱼᵢ Rⱼ / (zⱼ + ε·sign zⱼ): the plain gradient scaled by z/(z + ε·sign z);
- LayerNorm: the identity rule on the division by the standard deviation (it is held constant in the
  backward pass); the centring and the affine part are linear and take the ε-rule;
- GELU (any element-wise non-linearity): the identity rule, R_in = R_out, i.e. the gradient times f(x)/x;
- softmax: their rule Rᵢ = xᵢ(Rᵢ − sᵢ Σⱼ Rⱼ), which is exactly the softmax's own gradient times its input;
- matrix products of two activations (QKᵀ and AV): the uniform rule, half of the relevance to each factor,
  i.e. half of the gradient to each.

CP-LRP (Ali et al., ICML 2022, "XAI for Transformers: Better Explanations through Conservative
Propagation"; the variant `lxt`'s torchvision ViT recipe uses) holds the attention weights constant:
no relevance flows through the queries and keys, all of it through the values.

The rules act through a `TorchFunctionMode`, which is thread-local and lives only for one call: the
model's own forward code runs, nothing is patched or hooked, and other threads sharing the model see
plain torch. The same mode records the attention weights of every block with their graph (LeGrad needs
them) and, with `rules="chefer"`, carries relevance instead of gradients backwards with the rules of
Chefer et al.'s Transformer Attribution (`vit_core.relevance.transformer_attribution`).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd import Function
from torch.overrides import TorchFunctionMode

from vit_core.errors import VitCoreError
from vit_core.model import ViT
from vit_core.targets import Target, TargetLike, resolve_targets, target_values

Variant = Literal["attnlrp", "cp_lrp"]
Rules = Literal["attnlrp", "cp_lrp", "chefer", "gradient"]
# the ε-rule's stabiliser only: it keeps z + ε·sign(z) away from 0. What it absorbs scales with 1/|z|: next to
# nothing on a trained model's logits, up to ~1e-3 of the logit on random small models whose logits are ~0.02
EPSILON = 1e-6

_LINEAR = {F.linear}
_LAYER_NORM = {F.layer_norm}
_GELU = {F.gelu}
_SOFTMAX = {torch.Tensor.softmax, torch.softmax, F.softmax}
_MATMUL = {torch.Tensor.matmul, torch.Tensor.__matmul__, torch.matmul}
_ATTENTION = {F.scaled_dot_product_attention}
_ADD = {torch.Tensor.add, torch.Tensor.__add__, torch.add}
_MUL = {torch.Tensor.mul, torch.Tensor.__mul__, torch.mul}
_DIV = {torch.Tensor.div, torch.Tensor.__truediv__, torch.div}
_MEAN = {torch.Tensor.mean, torch.mean}


def safe_divide(numerator: torch.Tensor, denominator: torch.Tensor, epsilon: float = 1e-9) -> torch.Tensor:
    """numerator / (denominator ± ε), away from zero, and 0 where the denominator is exactly 0."""
    stabilised = denominator + epsilon * torch.where(denominator >= 0, 1.0, -1.0).to(denominator.dtype)
    return torch.where(denominator == 0, torch.zeros_like(numerator), numerator / stabilised)


# ---- Gradient × input: modified backward passes ------------------------------------------------------


class _EpsilonLinear(Function):
    """ε-rule: the gradient scaled by z / (z + ε·sign z) = |z| / (|z| + ε) before it goes through Wᵀ."""

    @staticmethod
    def forward(ctx, x, weight, bias, epsilon):
        z = F.linear(x, weight, bias)  # [..., out]
        magnitude = z.abs()
        ctx.save_for_backward(weight, magnitude.div_(magnitude + epsilon))
        return z

    @staticmethod
    def backward(ctx, grad):
        weight, factor = ctx.saved_tensors
        return (grad * factor) @ weight, None, None, None  # no gradient for W and b


class _IdentityRule(Function):
    """Identity rule for an element-wise f: R_in = R_out, so the gradient is multiplied by f(x)/x."""

    @staticmethod
    def forward(ctx, x, fn):
        y = fn(x)
        ctx.save_for_backward((y / x).nan_to_num_(nan=0.5))  # at x = 0 the relevance is 0 whatever the factor
        return y

    @staticmethod
    def backward(ctx, grad):
        (ratio,) = ctx.saved_tensors
        return grad * ratio, None


class _ScaleGradient(Function):
    """The identity forward; the gradient times `factor` backward (the uniform rule's ½ per factor)."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


class _LayerNormConstantStd(Function):
    """LayerNorm whose standard deviation is a constant in the backward pass (the identity rule on the
    division): y = γ(x − μ)/σ + β is then linear in x, and the gradient is γ·g centred and divided by σ."""

    @staticmethod
    def forward(ctx, x, normalized_shape, weight, bias, eps):
        y, _, rstd = torch.native_layer_norm(x, normalized_shape, weight, bias, eps)  # rstd = 1/σ, [..., 1]
        ctx.save_for_backward(weight, rstd)
        ctx.dims = tuple(range(-len(normalized_shape), 0))
        return y

    @staticmethod
    def backward(ctx, grad):
        weight, rstd = ctx.saved_tensors
        if weight is not None:
            grad = grad * weight
        return (grad - grad.mean(dim=ctx.dims, keepdim=True)) * rstd, None, None, None, None


def _layer_norm_constant_std(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    return _LayerNormConstantStd.apply(x, tuple(normalized_shape), weight, bias, eps)


# ---- Relevance instead of gradients: Chefer et al. 2021's rules ----------------------------------------


class _PassRelevance(Function):
    """Forward `fn(x)`; the relevance goes back unchanged (LayerNorm, GELU, softmax, scaling by constants)."""

    @staticmethod
    def forward(ctx, x, fn):
        return fn(x)

    @staticmethod
    def backward(ctx, relevance):
        return relevance, None


class _AlphaBetaLinear(Function):
    """LRP-α1β0 (Bach et al. 2015), the rule Chefer et al.'s code applies to every linear layer:
    Rᵢ = Σⱼ (xᵢwⱼᵢ)⁺ Rⱼ / Σᵢ' (xᵢ'wⱼᵢ')⁺, with (xw)⁺ = x⁺w⁺ + x⁻w⁻; the bias takes no part."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, relevance):
        x, weight = ctx.saved_tensors
        x_pos, x_neg = x.clamp(min=0), x.clamp(max=0)
        w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
        scaled = safe_divide(relevance, F.linear(x_pos, w_pos) + F.linear(x_neg, w_neg))  # [..., out]
        return x_pos * (scaled @ w_pos) + x_neg * (scaled @ w_neg), None, None


class _BilinearRelevance(Function):
    """Z = A·B: each factor gets its gradient × input on R/Z, halved (both together would count R twice)."""

    @staticmethod
    def forward(ctx, a, b):
        z = a @ b
        ctx.save_for_backward(a, b, z)
        return z

    @staticmethod
    def backward(ctx, relevance):
        a, b, z = ctx.saved_tensors
        scaled = safe_divide(relevance, z)
        return a * (scaled @ b.transpose(-2, -1)) / 2, b * (a.transpose(-2, -1) @ scaled) / 2


class _OneFactorRelevance(Function):
    """Z = A·B with one factor constant (an attention pool's learnt query): the product is linear in the other
    factor, which takes all of the relevance by the z-rule, its gradient × input on R/Z."""

    @staticmethod
    def forward(ctx, a, b, a_varies):
        z = a @ b
        ctx.save_for_backward(a, b, z)
        ctx.a_varies = a_varies
        return z

    @staticmethod
    def backward(ctx, relevance):
        a, b, z = ctx.saved_tensors
        scaled = safe_divide(relevance, z)
        if ctx.a_varies:
            return a * (scaled @ b.transpose(-2, -1)), None, None
        return None, b * (a.transpose(-2, -1) @ scaled), None


class _AddRelevance(Function):
    """Z = a + b (a residual connection): the z-rule, then each branch rescaled so that the two shares are in
    the ratio of |Σ R_a| to |Σ R_b| and add up to Σ R (Chefer et al.'s `Add.relprop`, per image)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a + b

    @staticmethod
    def backward(ctx, relevance):
        a, b = ctx.saved_tensors
        scaled = safe_divide(relevance, a + b)
        r_a, r_b = a * scaled, b * scaled
        dims = tuple(range(1, relevance.ndim))
        sum_a, sum_b = r_a.sum(dims, keepdim=True), r_b.sum(dims, keepdim=True)  # [B, 1, ...]
        total = relevance.sum(dims, keepdim=True)
        share = safe_divide(sum_a.abs(), sum_a.abs() + sum_b.abs())
        return r_a * safe_divide(share * total, sum_a), r_b * safe_divide((1 - share) * total, sum_b)


class _MeanRelevance(Function):
    """Z = mean over `dim` (average pooling): the z-rule, Rᵢ = xᵢ R / Σ x."""

    @staticmethod
    def forward(ctx, x, dim):
        ctx.save_for_backward(x)
        ctx.dim = dim
        return x.mean(dim=dim)

    @staticmethod
    def backward(ctx, relevance):
        (x,) = ctx.saved_tensors
        return x * safe_divide(relevance.unsqueeze(ctx.dim), x.sum(dim=ctx.dim, keepdim=True)), None


# ---- the mode --------------------------------------------------------------------------------------------


def _is_activation(value: object) -> bool:
    return isinstance(value, torch.Tensor) and value.requires_grad and not isinstance(value, torch.nn.Parameter)


class RelevanceRules(TorchFunctionMode):
    """Within `with RelevanceRules(rules):`, this thread's torch calls follow the rules; `patterns` collects
    every block's attention weights `[B, H, N, N]` (with their graph) in order.

    rules: "attnlrp" and "cp_lrp" (gradient × input is LRP relevance), "chefer" (the backward pass carries
    relevance itself), "gradient" (plain autograd; only the attention is computed explicitly and recorded).
    The fused attention call is computed explicitly (scores, softmax, product) so each rule can act on it.
    """

    def __init__(self, rules: Rules, epsilon: float = EPSILON) -> None:
        super().__init__()
        self.rules = rules
        self.epsilon = epsilon
        self.patterns: list[torch.Tensor] = []
        self.scores: list[torch.Tensor] = []  # the softmax inputs, same order

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _ATTENTION:
            return self._attention(*args, **kwargs)
        if func in _SOFTMAX:
            return self._softmax(func, args, kwargs)
        if func in _MATMUL and len(args) == 2:
            return self._matmul(*args)
        if self.rules == "gradient":
            return func(*args, **kwargs)
        if func in _LINEAR:
            return self._linear(*args, **kwargs)
        if func in _LAYER_NORM and _is_activation(args[0]):
            if self.rules == "chefer":
                return _PassRelevance.apply(args[0], lambda x: func(x, *args[1:], **kwargs))
            return _layer_norm_constant_std(*args, **kwargs)
        if func in _GELU and _is_activation(args[0]):
            rule = _PassRelevance if self.rules == "chefer" else _IdentityRule
            return rule.apply(args[0], lambda x: func(x, *args[1:], **kwargs))
        if self.rules == "chefer":
            return self._chefer_elementwise(func, args, kwargs)
        return func(*args, **kwargs)

    # the attention: softmax(q kᵀ · scale) v, explicit
    def _attention(self, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        if attn_mask is not None or is_causal or dropout_p or kwargs:
            raise NotImplementedError("relevance rules support plain self-attention only")
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        if self.rules == "chefer":
            q = _PassRelevance.apply(q, lambda t: t * scale)
        else:
            q = q * scale
        pattern = self._softmax(torch.Tensor.softmax, (self._matmul(q, k.transpose(-2, -1)),), {"dim": -1})
        return self._matmul(pattern, v)  # [B, H, N, Dh]

    def _softmax(self, func, args, kwargs):
        self.scores.append(args[0])
        if self.rules == "chefer" and _is_activation(args[0]):
            pattern = _PassRelevance.apply(args[0], lambda x: func(x, *args[1:], **kwargs))
        else:
            pattern = func(*args, **kwargs)
        if self.rules == "cp_lrp":
            pattern = pattern.detach()  # CP-LRP: attention weights are constants
        self.patterns.append(pattern)
        return pattern

    def _matmul(self, a, b):
        if self.rules == "chefer" and _is_activation(a) != _is_activation(b):
            return _OneFactorRelevance.apply(a, b, _is_activation(a))
        if not (_is_activation(a) and _is_activation(b)):
            return torch.matmul(a, b)
        if self.rules == "attnlrp":
            return torch.matmul(_ScaleGradient.apply(a, 0.5), _ScaleGradient.apply(b, 0.5))
        if self.rules == "chefer":
            return _BilinearRelevance.apply(a, b)
        return torch.matmul(a, b)

    def _linear(self, x, weight, bias=None):
        if not _is_activation(x):
            # made of parameters alone (an attention pool's learnt query): a constant, like a bias, so a
            # product with it is linear in the other factor and passes all of the relevance to that factor
            return F.linear(x, weight, bias).detach()
        if self.rules == "chefer":
            return _AlphaBetaLinear.apply(x, weight, bias)
        if self.epsilon > 0:
            return _EpsilonLinear.apply(x, weight, bias, self.epsilon)
        return F.linear(x, weight, bias)

    def _chefer_elementwise(self, func, args, kwargs):
        """Residual additions, scaling by constants (layer scale, the DeiT heads' average) and mean pooling."""
        if func in _ADD and len(args) == 2 and not kwargs and all(_is_activation(a) for a in args):
            if args[0].shape == args[1].shape:
                return _AddRelevance.apply(*args)
        if func in _MUL | _DIV and len(args) == 2 and not kwargs:
            activations = [a for a in args if _is_activation(a)]
            if len(activations) == 1 and (func in _MUL or activations[0] is args[0]):
                return _PassRelevance.apply(
                    activations[0], lambda x: func(*[x if a is activations[0] else a for a in args])
                )
        if func in _MEAN and _is_activation(args[0]):
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            if isinstance(dim, int) and not kwargs.get("keepdim", False):
                return _MeanRelevance.apply(args[0], dim)
        return func(*args, **kwargs)


# ---- AttnLRP / CP-LRP --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Relevance:
    """LRP relevance of one image for one target, signed, float32. Input relevance is the relevance of
    the embedding: patch tokens + prefix tokens + position embeddings. It adds up to `value` less what the
    softmax rule's bias terms absorb (AttnLRP only) and what the biases absorb: value = total +
    softmax_absorbed + bias_absorbed, exactly (tested in float64)."""

    patches: np.ndarray  # [rows, cols], each patch token's projection (its pixels plus the projection bias)
    pixels: np.ndarray  # [height, width], the input pixels' relevance, summed over channels
    prefix: np.ndarray  # [num_prefix_tokens], class, distillation and register tokens
    positions: np.ndarray  # [pos], each position-embedding row (prefix rows first when they have one)
    value: float  # the target's value that is decomposed (the class logit)
    total: float  # the input relevance, patches + prefix + positions, summed in the model's precision
    softmax_absorbed: float  # what the softmax rule's bias terms absorb (0 for CP-LRP); biases take the rest
    variant: str  # "attnlrp" or "cp_lrp"
    target: Hashable  # the target's key (a class index for a class logit)

    @property
    def bias_absorbed(self) -> float:
        """What the biases (and the ε stabiliser) absorb: value = total + softmax_absorbed + bias_absorbed."""
        return self.value - self.total - self.softmax_absorbed


def embedding_parts(model: ViT, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`model.embed` with its three inputs kept apart, so relevance can be read off each:
    (patch tokens `[B, P, D]` from the projection, prefix tokens `[B, n, D]`, position embeddings
    `[B, E, D]`, the token sequence `[B, N, D]` before `norm_pre`). Prefix and position embeddings are
    fresh leaves per image."""
    cfg = model.cfg
    height, width = pixels.shape[-2:]
    if height % cfg.patch_size or width % cfg.patch_size:
        raise VitCoreError("input_not_patch_multiple", height=int(height), width=int(width), patch=cfg.patch_size)
    projected = model.patch_embed(pixels)  # [B, D, rows, cols]
    grid = (projected.shape[-2], projected.shape[-1])
    patches = projected.flatten(2).transpose(1, 2)  # [B, P, D]
    batch, _, dim = patches.shape
    pos = model.position_embedding(grid).detach().expand(batch, -1, -1).clone().requires_grad_()  # [B, E, D]
    prefix_tokens = model.prefix_tokens(batch)
    prefix = (torch.cat(prefix_tokens, dim=1) if prefix_tokens else patches.new_zeros(batch, 0, dim)).detach()
    prefix = prefix.clone().requires_grad_()  # [B, n, D]
    if cfg.pos_embed_prefix:
        tokens = torch.cat([prefix, patches], dim=1) + pos
    else:
        tokens = torch.cat([prefix, patches + pos], dim=1)
    return patches, prefix, pos, tokens  # tokens: [B, N, D]


def _seed(targets: list[Target], output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(d target / d output `[B, ...]`, the targets' values `[B]`), from a graph of the target alone."""
    with torch.enable_grad():
        leaf = output.detach().requires_grad_()
        values = target_values(targets, leaf)
        (seed,) = torch.autograd.grad(values.sum(), leaf)
    return seed, values.detach()


def check_target(model: ViT, target: TargetLike) -> None:
    if model.head is None and not isinstance(target, Target):
        raise VitCoreError("no_head", what="class-specific maps")


def lrp_batch(
    model: ViT,
    pixels: torch.Tensor,
    target: TargetLike = "top",
    variant: Variant = "attnlrp",
    epsilon: float = EPSILON,
) -> list[Relevance]:
    """AttnLRP (or CP-LRP) relevance of `target` for each image of `pixels` `[B, C, H, W]`: one forward and
    one backward pass. `target` is a class index, one per image, "top", or any `vit_core.targets.Target`."""
    check_target(model, target)
    weight = next(model.parameters())
    pixels = pixels.to(weight.device, weight.dtype).detach().requires_grad_()
    with torch.enable_grad():
        patches, prefix, pos, tokens = embedding_parts(model, pixels)
        with RelevanceRules(variant, epsilon) as mode:
            x = model.norm_pre(tokens)
            for block in model.blocks:
                x = block(x)
            output = model.head_logits(x)  # [B, C]
        targets = resolve_targets(target, output.detach())
        seed, values = _seed(targets, output)
        inputs = [pixels, patches, prefix, pos]
        softmax = [*mode.patterns, *mode.scores] if variant == "attnlrp" else []
        grads = torch.autograd.grad(output, inputs + softmax, seed, allow_unused=True)
    with torch.no_grad():
        r_pixels = (pixels * grads[0]).sum(1)  # [B, H, W]
        r_patches, r_prefix, r_pos = ((t * g).sum(-1) for t, g in zip(inputs[1:], grads[1:4], strict=True))
        totals = r_patches.sum(-1) + r_prefix.sum(-1) + r_pos.sum(-1)  # [B], in the model's precision
        absorbed = torch.zeros_like(totals)
        layers = len(softmax) // 2
        for pattern, scores, g_pattern, g_scores in zip(
            softmax[:layers], softmax[layers:], grads[4 : 4 + layers], grads[4 + layers :], strict=True
        ):  # relevance into the softmax (at its output) minus relevance out of it (at the scores)
            absorbed += (pattern * g_pattern - scores * g_scores).sum((1, 2, 3))
        r_pixels, r_patches, r_prefix, r_pos = (r.float().cpu().numpy() for r in (r_pixels, r_patches, r_prefix, r_pos))
    grid = (pixels.shape[-2] // model.cfg.patch_size, pixels.shape[-1] // model.cfg.patch_size)
    return [
        Relevance(
            patches=r_patches[b].reshape(grid),
            pixels=r_pixels[b],
            prefix=r_prefix[b],
            positions=r_pos[b],
            value=float(values[b]),
            total=float(totals[b]),
            softmax_absorbed=float(absorbed[b]),
            variant=variant,
            target=targets[b].key,
        )
        for b in range(pixels.shape[0])
    ]


# ---- what other methods need from one rules-run ---------------------------------------------------------


@dataclass(frozen=True)
class AttentionRelevance:
    """What Transformer Attribution reads: relevance and gradient at every attention's weights."""

    relevances: torch.Tensor  # [L, B, H, N, N], Chefer et al.'s LRP relevance at each block's attention weights
    gradients: torch.Tensor  # [L, B, H, N, N], d target / d attention weights
    targets: list[Target]
    pool_relevances: torch.Tensor | None  # [B, H, N] at an attention pool's weights (prefix columns 0); None without
    pool_gradients: torch.Tensor | None  # [B, H, N]


def attention_relevance(model: ViT, pixels: torch.Tensor, target: TargetLike = "top") -> AttentionRelevance:
    """Relevance and gradients at every block's attention weights (and at an attention pool's, SigLIP).

    Two passes: the relevance pass (rules="chefer", starting from d target / d output, the one-hot vector
    of a class logit) and a plain gradient pass.
    """
    check_target(model, target)
    weight = next(model.parameters())
    pixels = pixels.to(weight.device, weight.dtype)
    depth, prefix = model.cfg.depth, model.cfg.num_prefix_tokens
    results = []
    targets: list[Target] | None = None
    for rules in ("chefer", "gradient"):
        with torch.no_grad():
            tokens = model.embed(pixels)  # [B, N, D]
        with torch.enable_grad():
            tokens = tokens.detach().requires_grad_()
            with RelevanceRules(rules) as mode:
                x = tokens
                for block in model.blocks:
                    x = block(x)
                output = model.head_logits(x)
            if targets is None:
                targets = resolve_targets(target, output.detach())
            seed, _ = _seed(targets, output)
            # the blocks' weights [B, H, N, N], then the attention pool's [B, H, 1, patches] when there is one
            results.append(torch.autograd.grad(output, mode.patterns, seed))
    relevances, gradients = (torch.stack(found[:depth]) for found in results)  # [L, B, H, N, N]
    pools = [_pad_prefix(found[depth][:, :, 0], prefix) if len(found) > depth else None for found in results]
    return AttentionRelevance(relevances, gradients, targets, pools[0], pools[1])  # type: ignore[arg-type]


def _pad_prefix(rows: torch.Tensor, prefix: int) -> torch.Tensor:
    """`[..., patches]` -> `[..., prefix + patches]`, zeros in the prefix columns the attention pool does not read."""
    return torch.cat([rows.new_zeros((*rows.shape[:-1], prefix)), rows], dim=-1)


def attention_relevance_and_gradients(
    model: ViT, pixels: torch.Tensor, target: TargetLike = "top"
) -> tuple[torch.Tensor, torch.Tensor, list[Target]]:
    """For Transformer Attribution: (Chefer et al.'s LRP relevance at every block's attention weights,
    the gradient of the target with respect to them), each `[L, B, H, N, N]`, and the resolved targets.
    `attention_relevance` also returns an attention pool's."""
    result = attention_relevance(model, pixels, target)
    return result.relevances, result.gradients, result.targets
