"""Reference outputs taken from each source library itself, for the parity tests.

Each function returns (logits [B, C], attentions: list of [B, H, N, N] per layer,
hidden states: list of [B, N, D], the embedding output first, then each block's output).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vit_core import ViT
from vit_core.capture import Capture

Reference = tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]


def perturb(model: nn.Module, std: float = 0.05, seed: int = 0) -> nn.Module:
    """Add noise to every parameter so attention is far from uniform and heads differ.

    Fresh inits (std 0.02) give near-uniform attention, where a wrong mapping could still pass.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * std)
    return model.eval()


@torch.no_grad()
def timm_reference(model: nn.Module, pixels: torch.Tensor) -> Reference:
    attentions: list[torch.Tensor] = []
    hidden: list[torch.Tensor] = []
    handles = [model.blocks[0].register_forward_pre_hook(lambda _m, args: hidden.append(args[0]))]
    for block in model.blocks:
        block.attn.fused_attn = False  # timm's explicit path, so attn_drop sees the softmax output
        handles.append(block.attn.attn_drop.register_forward_hook(lambda _m, _i, out: attentions.append(out)))
        handles.append(block.register_forward_hook(lambda _m, _i, out: hidden.append(out)))
    try:
        logits = model(pixels)
    finally:
        for handle in handles:
            handle.remove()
    return logits, attentions, hidden


@torch.no_grad()
def hf_reference(model: nn.Module, pixels: torch.Tensor) -> Reference:
    out = model(pixel_values=pixels, output_attentions=True, output_hidden_states=True)
    logits = out.logits if hasattr(out, "logits") else out.last_hidden_state
    return logits, list(out.attentions), list(out.hidden_states)


@torch.no_grad()
def torchvision_reference(model: nn.Module, pixels: torch.Tensor) -> Reference:
    """torchvision's EncoderBlock asks for no weights; a kwargs pre-hook asks for per-head weights."""
    attentions: list[torch.Tensor] = []
    hidden: list[torch.Tensor] = []

    def want_weights(_module, args, kwargs):
        return args, {**kwargs, "need_weights": True, "average_attn_weights": False}

    layers = model.encoder.layers
    handles = [layers[0].register_forward_pre_hook(lambda _m, args: hidden.append(args[0]))]
    for layer in layers:
        attn = layer.self_attention
        handles.append(attn.register_forward_pre_hook(want_weights, with_kwargs=True))
        handles.append(attn.register_forward_hook(lambda _m, _i, out: attentions.append(out[1])))
        handles.append(layer.register_forward_hook(lambda _m, _i, out: hidden.append(out)))
    try:
        logits = model(pixels)
    finally:
        for handle in handles:
            handle.remove()
    return logits, attentions, hidden


@torch.no_grad()
def openclip_reference(visual: nn.Module, pixels: torch.Tensor) -> Reference:
    """open_clip's image tower: per-head weights from each block's `nn.MultiheadAttention` (asked for by a
    kwargs pre-hook, as for torchvision), hidden states around the blocks, the image embedding as logits."""
    attentions: list[torch.Tensor] = []
    hidden: list[torch.Tensor] = []

    def want_weights(_module, args, kwargs):
        return args, {**kwargs, "need_weights": True, "average_attn_weights": False}

    blocks = visual.transformer.resblocks
    handles = [blocks[0].register_forward_pre_hook(lambda _m, args: hidden.append(args[0]))]
    for block in blocks:
        handles.append(block.attn.register_forward_pre_hook(want_weights, with_kwargs=True))
        handles.append(block.attn.register_forward_hook(lambda _m, _i, out: attentions.append(out[1])))
        handles.append(block.register_forward_hook(lambda _m, _i, out: hidden.append(out)))
    try:
        embedding = visual(pixels)
    finally:
        for handle in handles:
            handle.remove()
    return embedding, attentions, hidden


@torch.no_grad()
def hf_clip_reference(model: nn.Module, pixels: torch.Tensor) -> Reference:
    """HF CLIPModel's image tower: attentions and hidden states of `vision_model`, the projected embedding."""
    out = model.vision_model(pixel_values=pixels, output_attentions=True, output_hidden_states=True)
    return model.visual_projection(out.pooler_output), list(out.attentions), list(out.hidden_states)


def max_differences(ours: list[Capture], reference: Reference, output: torch.Tensor | None = None) -> dict[str, float]:
    """Max abs difference on logits, every layer's attention and every hidden state.

    An image–text model's captures have no logits without labels: pass our model's `output` (the image
    embedding) to compare it with the reference's instead.
    """
    logits, attentions, hidden = reference
    mine = np.stack([c.logits for c in ours]) if output is None else output.detach().numpy()
    diff = {"logits": float(np.abs(mine - logits.numpy()).max())}
    diff["attentions"] = max(
        float(np.abs(np.stack([c.attentions[i] for c in ours]) - a.numpy()).max()) for i, a in enumerate(attentions)
    )
    diff["hidden"] = max(
        float(np.abs(np.stack([c.tokens[i] for c in ours]) - h.numpy()).max()) for i, h in enumerate(hidden)
    )
    assert len(attentions) == ours[0].num_layers and len(hidden) == ours[0].num_layers + 1
    return diff


def load_converted(cfg, state_dict) -> ViT:
    model = ViT(cfg)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def assert_parity(reference_model, config_from, convert, reference, size: int, batch: int, tol: float = 1e-4) -> None:
    """Perturb, convert, run both on one random batch; logits, attention and hidden states within `tol`."""
    reference_model = perturb(reference_model)
    cfg = config_from(reference_model)
    ours = load_converted(cfg, convert(reference_model.state_dict(), cfg))
    pixels = torch.randn(batch, 3, size, size)
    from vit_core import capture_batch

    diff = max_differences(capture_batch(ours, pixels), reference(reference_model, pixels))
    assert max(diff.values()) <= tol, diff


def synthetic_capture(
    attentions: np.ndarray,
    grid: tuple[int, int] = (1, 2),
    *,
    prefix: int = 1,
    patch_size: int = 1,
    has_class_token: bool = True,
    grads: np.ndarray | None = None,
    tokens: np.ndarray | None = None,
    token_grads: np.ndarray | None = None,
) -> Capture:
    """A hand-made capture for hand-computed cases: attentions `[L, H, N, N]`, optional gradients."""
    layers, _, n, _ = attentions.shape
    if grads is not None and token_grads is None:
        token_grads = np.zeros((n, 2))
    return Capture(
        input=np.zeros((3, 1, 1), np.float32),
        attentions=attentions,
        tokens=np.zeros((layers + 1, n, 2)) if tokens is None else tokens,
        logits=None,
        probs=None,
        layer_logits=None,
        num_prefix_tokens=prefix,
        grid=grid,
        patch_size=patch_size,
        has_class_token=has_class_token,
        attention_grads=grads,
        token_grads=token_grads,
        target=None if grads is None else 0,
    )


class _Softmaxes(torch.overrides.TorchFunctionMode):
    """Records every softmax output computed inside the mode (an attention pool's weights, in its explicit path)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (torch.Tensor.softmax, torch.softmax, torch.nn.functional.softmax):
            self.found.append(out)
        return out


@torch.no_grad()
def timm_pool_attention(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """timm's `AttentionPoolLatent` weights `[B, H, N]` over the tokens it reads: the pool runs again on its own
    input in its explicit path (`fused_attn=False`), with the softmax it computes recorded."""
    inputs: list[torch.Tensor] = []
    handle = model.attn_pool.register_forward_pre_hook(lambda _m, args: inputs.append(args[0]))
    try:
        model(pixels)
    finally:
        handle.remove()
    model.attn_pool.fused_attn = False
    with _Softmaxes() as mode:
        model.attn_pool(inputs[0])
    (weights,) = mode.found
    return weights[:, :, 0]


@torch.no_grad()
def hf_siglip_reference(vision: nn.Module, pixels: torch.Tensor, **kwargs) -> tuple[Reference, torch.Tensor]:
    """HF SigLIP's image tower: (pooled embedding, attentions, hidden states) and the pooling head's weights
    `[B, H, N]`, asked of its `nn.MultiheadAttention` by a kwargs pre-hook."""
    found: list[torch.Tensor] = []

    def want_weights(_module, args, kw):
        return args, {**kw, "need_weights": True, "average_attn_weights": False}

    attention = vision.head.attention
    handles = [
        attention.register_forward_pre_hook(want_weights, with_kwargs=True),
        attention.register_forward_hook(lambda _m, _i, out: found.append(out[1])),
    ]
    try:
        out = vision(pixel_values=pixels, output_attentions=True, output_hidden_states=True, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return (out.pooler_output, list(out.attentions), list(out.hidden_states)), found[0][:, :, 0]
