"""Zero-shot labels and prompt maps from an image's existing capture, without running the model again.

The image embedding is the model's own readout (final norm, pooling, projection) of the last residual
stream a capture holds, so a new label set costs one matrix product with the (cached) label embeddings.
A prompt's map needs the gradient of its similarity: `PromptGradients` keeps one forward pass with its
autograd graph, and each new phrase costs one backward pass through the image tower (no forward).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from vit_core.capture import Capture, tensor_view
from vit_core.errors import VitCoreError
from vit_core.model import ViT
from vit_core.targets import Target
from vit_core.text import ZeroShotHead


@dataclass(frozen=True)
class ZeroShot:
    """A label set's zero-shot result for one image."""

    labels: tuple[str, ...]
    logits: torch.Tensor  # [labels]: scale · cos(image, label) + bias
    probs: torch.Tensor  # [labels]: softmax (CLIP) or sigmoid per label (SigLIP)
    layer_logits: torch.Tensor | None  # [layer, labels]: each block's output read out the same way (the logit lens)

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        values, indices = self.probs.topk(min(k, len(self.labels)))
        return [(self.labels[i], float(v)) for v, i in zip(values.tolist(), indices.tolist(), strict=True)]


def _require_image_text(model: ViT) -> None:
    if model.proj is None:
        raise VitCoreError("no_text_tower")


def image_embeddings(model: ViT, capture: Capture, layers: bool = False) -> torch.Tensor:
    """The image embedding `[E]` (not normalised) from a capture's last residual stream; with `layers`,
    each block's output read out the same way `[layer, E]` (the logit lens of an image–text model)."""
    _require_image_text(model)
    device = next(model.parameters()).device
    tokens = tensor_view(capture.tokens[1:] if layers else capture.tokens[-1]).to(device)  # [(L,) N, D]
    with torch.inference_mode():
        return model.head_logits(tokens).float().cpu()


def zero_shot(model: ViT, capture: Capture, head: ZeroShotHead, layers: bool = True) -> ZeroShot:
    """`head`'s labels scored for the captured image: the same numbers `capture(..., zero_shot=head)` gives."""
    embeddings = image_embeddings(model, capture, layers=layers)  # [L, E] or [E]
    with torch.inference_mode():
        per_layer = head(embeddings) if layers else None  # [L, C]
        logits = per_layer[-1] if layers else head(embeddings)  # [C]
    return ZeroShot(head.labels, logits, head.probabilities(logits), per_layer)


class PromptGradients:
    """One forward pass of one image kept with its graph; `capture_for(target)` runs one backward pass.

    The attention weights of every layer and the tokens entering the last block are kept, as `capture`
    keeps them, so the gradients are the ones `capture(..., target=...)` computes (tested). Holding the
    graph costs memory (tens of MB for ViT-B/16), so keep one per image you are exploring.
    """

    def __init__(self, model: ViT, pixels: torch.Tensor) -> None:
        _require_image_text(model)
        if pixels.ndim == 3:
            pixels = pixels.unsqueeze(0)
        if pixels.shape[0] != 1:
            raise VitCoreError("one_image_only")
        weight = next(model.parameters())
        depth = model.cfg.depth
        self._prefix = model.cfg.num_prefix_tokens
        self._patterns: list[torch.Tensor] = []
        self._last_input: list[torch.Tensor] = []
        self._pool: list[torch.Tensor] = []  # an attention pool's weights [1, H, 1, patches] (SigLIP)

        def keep_pattern(tensor: torch.Tensor, _name: str) -> None:
            self._patterns.append(tensor)

        def keep_input(tensor: torch.Tensor, _name: str) -> None:
            self._last_input.append(tensor)

        hooks = {f"blocks.{i}.attn.hook_pattern": keep_pattern for i in range(depth)}
        hooks[f"blocks.{depth - 1}.hook_resid_pre"] = keep_input
        if model.attn_pool is not None:
            hooks["attn_pool.hook_pattern"] = lambda tensor, _name: self._pool.append(tensor)
        with torch.enable_grad(), model.hooks(hooks):
            self.output = model(pixels.to(weight.device, weight.dtype))  # [1, E]

    def gradients(self, target: Target) -> tuple[torch.Tensor, torch.Tensor]:
        """(d target / d attention `[L, H, N, N]`, d target / d tokens entering the last block `[N, D]`)."""
        grads, token_grads, _ = self._gradients(target)
        return grads, token_grads

    def _gradients(self, target: Target) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """`gradients` and d target / d the attention pool's weights `[H, N]` (prefix columns 0; None without)."""
        value = target(self.output).sum()
        *pattern_grads, token_grads = torch.autograd.grad(
            value, [*self._patterns, *self._pool, *self._last_input], retain_graph=True
        )
        pool_grads = None
        if self._pool:
            patches = pattern_grads.pop()[0, :, 0]  # [H, patches]
            pool_grads = torch.cat([patches.new_zeros(patches.shape[0], self._prefix), patches], dim=-1)  # [H, N]
        return torch.stack(pattern_grads, dim=1)[0], token_grads[0], pool_grads  # [L, H, N, N], [N, D], [H, N]

    def capture_for(self, capture: Capture, target: Target) -> Capture:
        """`capture` (of the same image) with the gradients of `target`: what the class-specific maps read."""
        grads, token_grads, pool_grads = self._gradients(target)
        return dataclasses.replace(
            capture,
            attention_grads=grads.detach().float().cpu().numpy(),
            token_grads=token_grads.detach().float().cpu().numpy(),
            pool_attention_grads=None if pool_grads is None else pool_grads.detach().float().cpu().numpy(),
            target=target.key,
        )
