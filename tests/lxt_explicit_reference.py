"""Full AttnLRP (relevance through q, k and v; the paper's softmax rule) for a torchvision `VisionTransformer`,
written out by hand with lxt 2.1's explicit rule functions (`lxt.explicit.functional`, `lxt.explicit.rules`).
The agreement test runs it in a subprocess, as it runs `tests/lxt_reference.py`.

    python tests/lxt_explicit_reference.py WEIGHTS.pt PIXELS.pt TARGET OUT.pt

WEIGHTS.pt holds {"config": VisionTransformer's keyword arguments, "state_dict": its state dict}; PIXELS.pt a
`[1, C, H, W]` tensor. Everything runs in float64.

In lxt's explicit rules the backward pass carries relevance itself (not a gradient): each rule's backward
returns the relevance of its inputs, so a leaf's `.grad` is its relevance and the pass starts from the
target logit's value, `logit.backward(logit)`, as in lxt's own examples. Plain torch ops on the relevance
path would scale it by their gradient, so only ops that move or split entries (cat, view, transpose,
indexing) are left plain; everything else is an lxt rule:

- patch tokens, class token and position embeddings are leaves (the convolution is a plain op outside the
  graph; relevance is read at the token level), joined by `add2` (the ε-rule for a sum, Eq. 8);
- LayerNorm: `layer_norm` (identity rule on the division by σ, ε-rule on the centring and the affine part);
- q, k, v: `linear_epsilon` on the three slices of `in_proj`; the 1/√d scale: `mul2` by a constant (all of
  the relevance to q); scores and the weighted sum: `matmul` (ε-rule, then half to each factor, Prop. 3.3);
  attention weights: `softmax` (Taylor decomposition at x with bias, Prop. 3.1); out projection:
  `linear_epsilon`; residual connections: `add2`;
- MLP: `linear_epsilon`, GELU with lxt's identity rule (`lxt.explicit.rules.identity`, Eq. 9: lxt has no
  GELU-specific rule), `linear_epsilon`; final LayerNorm, class token, head `linear_epsilon`.

OUT.pt holds, per stabiliser setting ("lxt": lxt's own defaults, ε = 1e-6 in `linear_epsilon` and
`layer_norm`, 1e-8 in `add2` and `matmul`, always added as z + ε; "zero": ε = 0 in every rule, the plain
z-rule), float64: `patches` [P] (summed over channels), `prefix` [1] (the class token), `positions` [N],
`logit`, `total` (their sum) and `softmax_absorbed` (relevance into the softmax layers, at their outputs,
less relevance out of them, at their inputs); and `covered_total`: the input relevance under lxt's
`conservation_check`, which spreads each rule's relevance uniformly over its inputs, so it equals the
logit only if every op on the relevance path is an lxt rule.
"""

from __future__ import annotations

import sys

import lxt.explicit.functional as lf
import torch
import torch.nn.functional as F
import torchvision
from lxt.explicit.check import conservation_check
from lxt.explicit.rules import identity
from torch import nn

LXT_DEFAULTS = {"linear": 1e-6, "layer_norm": 1e-6, "add": 1e-8, "matmul": 1e-8}


def layer_norm(norm: nn.LayerNorm, x: torch.Tensor, eps: dict[str, float]) -> torch.Tensor:
    if eps["layer_norm"] == LXT_DEFAULTS["layer_norm"]:
        return lf.layer_norm(x, norm.weight, norm.bias, norm.eps)
    # `lf.layer_norm` fixes its ε-rule stabiliser at its Function's default; its Function takes it as the 5th input
    return lf.layer_norm_grad_fn.apply(x, norm.weight, norm.bias, norm.eps, eps["layer_norm"])


def attention(mha: nn.MultiheadAttention, x: torch.Tensor, eps: dict[str, float], softmaxes: list) -> torch.Tensor:
    batch, tokens, dim = x.shape
    heads, head_dim = mha.num_heads, dim // mha.num_heads
    weights = mha.in_proj_weight.chunk(3)
    biases = mha.in_proj_bias.chunk(3) if mha.in_proj_bias is not None else (None, None, None)
    q, k, v = (
        lf.linear_epsilon(x, w, b, eps["linear"]).view(batch, tokens, heads, head_dim).transpose(1, 2)
        for w, b in zip(weights, biases, strict=True)
    )  # each [B, H, N, Dh]
    q = lf.mul2(q, head_dim**-0.5)  # a constant factor: all of the relevance to q
    scores = lf.matmul(q, k.transpose(-2, -1), epsilon=eps["matmul"])  # [B, H, N, N]
    pattern = lf.softmax(scores, -1)
    scores.retain_grad()
    pattern.retain_grad()
    softmaxes.append((scores, pattern))
    z = lf.matmul(pattern, v, epsilon=eps["matmul"])  # [B, H, N, Dh]
    z = z.transpose(1, 2).reshape(batch, tokens, dim)
    return lf.linear_epsilon(z, mha.out_proj.weight, mha.out_proj.bias, eps["linear"])


def mlp(block: nn.Sequential, x: torch.Tensor, eps: dict[str, float]) -> torch.Tensor:
    fc1, act, fc2 = block[0], block[1], block[3]
    assert isinstance(act, nn.GELU) and act.approximate == "none"
    h = lf.linear_epsilon(x, fc1.weight, fc1.bias, eps["linear"])
    h = identity(F.gelu, h)
    return lf.linear_epsilon(h, fc2.weight, fc2.bias, eps["linear"])


def attnlrp(model: torchvision.models.VisionTransformer, pixels: torch.Tensor, target: int, eps: dict[str, float]):
    """Forward by hand with lxt's rules, backward from the target logit; the relevance at the leaves."""
    with torch.no_grad():
        patches = model.conv_proj(pixels).flatten(2).transpose(1, 2)  # [1, P, D]
    patches = patches.clone().requires_grad_()
    prefix = model.class_token.detach().clone().requires_grad_()  # [1, 1, D]
    pos = model.encoder.pos_embedding.detach().clone().requires_grad_()  # [1, N, D]
    x = lf.add2(torch.cat([prefix, patches], dim=1), pos, epsilon=eps["add"])  # [1, N, D]
    softmaxes: list[tuple[torch.Tensor, torch.Tensor]] = []
    for layer in model.encoder.layers:
        x = lf.add2(
            x, attention(layer.self_attention, layer_norm(layer.ln_1, x, eps), eps, softmaxes), epsilon=eps["add"]
        )
        x = lf.add2(x, mlp(layer.mlp, layer_norm(layer.ln_2, x, eps), eps), epsilon=eps["add"])
    x = layer_norm(model.encoder.ln, x, eps)[:, 0]  # the class token, [1, D]
    head = model.heads.head
    logit = lf.linear_epsilon(x, head.weight, head.bias, eps["linear"])[0, target]
    logit.backward(logit.detach())  # relevance, not a gradient: the pass starts from the logit's value
    r_patches, r_prefix, r_pos = (leaf.grad[0].sum(-1) for leaf in (patches, prefix, pos))
    absorbed = sum((pattern.grad.sum() - scores.grad.sum()) for scores, pattern in softmaxes)
    return {
        "patches": r_patches,
        "prefix": r_prefix,
        "positions": r_pos,
        "logit": logit.detach(),
        "total": r_patches.sum() + r_prefix.sum() + r_pos.sum(),
        "softmax_absorbed": absorbed,
    }


def main(weights: str, pixels: str, target: str, out: str) -> None:
    torch.set_default_dtype(torch.float64)
    saved = torch.load(weights, weights_only=True)
    model = torchvision.models.VisionTransformer(**saved["config"]).double()
    model.load_state_dict(saved["state_dict"])
    model.eval()
    for param in model.parameters():
        param.requires_grad = False
    x = torch.load(pixels, weights_only=True).double()
    results = {
        "lxt": attnlrp(model, x, int(target), LXT_DEFAULTS),
        "zero": attnlrp(model, x, int(target), dict.fromkeys(LXT_DEFAULTS, 0.0)),
    }
    with conservation_check():
        covered = attnlrp(model, x, int(target), LXT_DEFAULTS)
    results["covered_total"] = covered["total"]
    torch.save(results, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
