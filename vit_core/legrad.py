"""LeGrad (Bousselham et al. 2024, "LeGrad: An Explainability Method for Vision Transformers via Feature
Formation Sensitivity"), following the paper and its reference code (WalBouss/LeGrad).

For every layer l from the start layer on: read the layer's output out through the model's own final
norm and head (the class token for a class-token model: the logit lens), take the gradient of the
target's value s_l with respect to *the same layer's* attention weights A_l, apply a ReLU, and average
over heads and queries; the map is the sum over layers of that average's patch columns.

One forward and one backward pass serve every layer: each block's input is detached, so s_l reaches
only its own block's attention (∂s_l/∂A_l does not depend on the blocks below, and the later readouts
no longer depend on A_l), and the sum of the readouts is differentiated once.
"""

from __future__ import annotations

import numpy as np
import torch

from vit_core.config import split_tokens
from vit_core.lrp import RelevanceRules, check_target
from vit_core.model import ViT
from vit_core.targets import TargetLike, resolve_targets, target_values
from vit_core.validate import check_index


def default_start_layer(layers: int) -> int:
    """The reference code's default, `layer_index=-2`: the last two layers."""
    return max(layers - 2, 0)


def legrad_batch(model: ViT, pixels: torch.Tensor, target: TargetLike = "top", start_layer: int | None = None):
    """LeGrad maps `[B, rows, cols]` (float32, non-negative, not normalised) for `pixels` `[B, C, H, W]`.

    `target` is resolved on the final output ("top": each image's top class). `start_layer` defaults to
    the reference code's (the last two layers); 0 uses every layer.
    """
    check_target(model, target)
    cfg = model.cfg
    start = (
        default_start_layer(cfg.depth) if start_layer is None else check_index(start_layer, cfg.depth, "start layer")
    )
    weight = next(model.parameters())
    pixels = pixels.to(weight.device, weight.dtype)
    with torch.no_grad():
        x = model.embed(pixels)
        for block in model.blocks[:start]:
            x = block(x)
    readouts = []
    patterns = []  # each block's weights: an attention-pool readout records its own weights in the mode too
    with torch.enable_grad(), RelevanceRules("gradient") as mode:
        for block in model.blocks[start:]:
            x = block(x.detach())  # [B, N, D]; detached: this layer's readout reaches only its own attention
            patterns.append(mode.patterns[-1])  # [B, H, N, N]
            readouts.append(model.head_logits(x))  # [B, C]
    with torch.enable_grad():
        targets = resolve_targets(target, readouts[-1].detach())
        total = sum(target_values(targets, readout).sum() for readout in readouts)
        grads = torch.autograd.grad(total, patterns)  # each [B, H, N, N]
    with torch.no_grad():
        per_key = sum(grad.clamp(min=0).mean(dim=(1, 2)) for grad in grads)  # [B, N]: heads, then queries
        _, patches = split_tokens(per_key[..., None], cfg.num_prefix_tokens)  # [B, P, 1]
        grid = (pixels.shape[-2] // cfg.patch_size, pixels.shape[-1] // cfg.patch_size)
        return patches.float().cpu().numpy().reshape(-1, *grid).astype(np.float32)
