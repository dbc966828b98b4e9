"""Run a ViT once and bring back what happened inside it, as numpy arrays on the CPU.

Attention weights per layer and head, the residual stream after the embedding and after each block,
the logits, the logit lens (nostalgebraist 2020: the model's own final norm and head read off every
block's output) and, on request, scores, queries, keys and the gradient of one class logit with
respect to every layer's attention weights (one backward pass; Chefer et al. 2021 need it).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np
import torch

from vit_core.errors import VitCoreError
from vit_core.model import ViT
from vit_core.targets import TargetLike, resolve_targets, target_values

Target = TargetLike | None


@dataclass(frozen=True)
class Capture:
    """Everything captured from one image. Arrays are float32; shapes are per image."""

    input: np.ndarray  # [channels, height, width], the tensor actually fed to the model
    attentions: np.ndarray  # [layer, head, query, key], rows sum to 1
    tokens: np.ndarray  # [layer + 1, pos, dim]; 0 = embeddings (input to block 0)
    logits: np.ndarray | None  # [classes]; None for a model without a head
    probs: np.ndarray | None  # [classes], softmax of logits
    layer_logits: np.ndarray | None  # [layer, classes], logit lens; None without a head
    num_prefix_tokens: int  # class, distillation and register tokens before the patches
    grid: tuple[int, int]  # patches (rows, cols)
    patch_size: int
    has_class_token: bool = True  # False: registers only, or no prefix at all (pool by mean)
    scores: np.ndarray | None = None  # [layer, head, query, key], QK^T/sqrt(d_k) before softmax
    queries: np.ndarray | None = None  # [layer, head, pos, d_head]
    keys: np.ndarray | None = None  # [layer, head, pos, d_head]
    attention_grads: np.ndarray | None = None  # [layer, head, query, key], d logit[target] / d attention
    token_grads: np.ndarray | None = None  # [pos, dim], d logit[target] / d tokens entering the last block
    row_entropy: np.ndarray | None = None  # [layer, head, query], entropy of each attention row in nats
    target: Hashable | None = None  # the target's key; a class index for a class logit

    @property
    def num_layers(self) -> int:
        return self.attentions.shape[0]

    @property
    def num_heads(self) -> int:
        return self.attentions.shape[1]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """CUDA when available, else CPU; an explicit `device` ("cpu", "cuda", "cuda:1") overrides."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise VitCoreError("unknown_device", device=str(device)) from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise VitCoreError("cuda_unavailable", device=str(device))
    if resolved.type not in ("cpu", "cuda"):
        raise VitCoreError("unknown_device", device=str(device))
    return resolved


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def tensor_view(array: np.ndarray) -> torch.Tensor:
    """A zero-copy tensor over a capture's array (made contiguous if needed). Captures may be read-only;
    the tensor is only ever read."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(array))


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def predict(model: ViT, pixels: torch.Tensor, *, autocast: torch.dtype | None = None) -> torch.Tensor:
    """Plain inference on the fast path, nothing captured: pixels `[B, C, H, W]` -> logits `[B, C]`."""
    device = next(model.parameters()).device
    with torch.inference_mode(), _autocast(device, autocast):
        return model(pixels.to(device)).float()


def capture_batch(
    model: ViT,
    pixels: torch.Tensor,
    *,
    scores: bool = False,
    qk: bool = False,
    target: Target = None,
    autocast: torch.dtype | None = None,
) -> list[Capture]:
    """Run `pixels` `[B, C, H, W]` through `model` once and return one `Capture` per image.

    `target` (a class index, one per image, or "top" for each image's top prediction) adds, from one
    backward pass, the gradient of that class's logit with respect to every layer's attention weights
    and to the tokens entering the last block (Grad-CAM).
    """
    cfg = model.cfg
    weight = next(model.parameters())
    device = weight.device
    pixels = pixels.to(device, weight.dtype)
    if pixels.ndim != 4:
        raise VitCoreError("not_a_batch", shape=str(list(pixels.shape)))

    want_grad = target is not None
    # Each captured tensor is copied into one [slots, ...] buffer as it goes by, so the per-layer
    # intermediates are freed and recycled: retaining them all costs more in fresh memory than the copy.
    buffers: dict[str, torch.Tensor] = {}
    patterns: list[torch.Tensor] = []  # kept alive only when gradients are wanted
    last_input: list[torch.Tensor] = []  # tokens entering the last block, for Grad-CAM

    def record(kind: str, slot: int, slots: int):
        def hook(tensor: torch.Tensor, _name: str) -> None:
            if kind not in buffers:
                buffers[kind] = tensor.new_empty((slots, *tensor.shape))  # [slots, B, ...]
            buffers[kind][slot].copy_(tensor.detach())
            if want_grad and kind == "attentions":
                patterns.append(tensor)
            if want_grad and kind == "tokens" and slot == slots - 2:
                last_input.append(tensor)

        return hook

    latest_scores: list[torch.Tensor] = []

    def keep_scores(tensor: torch.Tensor, _name: str) -> None:
        latest_scores[:] = [tensor.detach()]

    def entropy(slot: int, slots: int):
        def hook(pattern: torch.Tensor, _name: str) -> None:
            with torch.no_grad():
                row_entropy = _row_entropy(latest_scores[0].float(), pattern.detach().float())  # [B, H, N]
            if "row_entropy" not in buffers:
                buffers["row_entropy"] = row_entropy.new_empty((slots, *row_entropy.shape))
            buffers["row_entropy"][slot].copy_(row_entropy)

        return hook

    depth = cfg.depth
    hooks = {"blocks.0.hook_resid_pre": record("tokens", 0, depth + 1)}
    for i in range(depth):
        hooks[f"blocks.{i}.attn.hook_scores"] = _chain(keep_scores, *([record("scores", i, depth)] if scores else []))
        hooks[f"blocks.{i}.attn.hook_pattern"] = _chain(record("attentions", i, depth), entropy(i, depth))
        hooks[f"blocks.{i}.hook_resid_post"] = record("tokens", i + 1, depth + 1)
        if qk:
            hooks[f"blocks.{i}.attn.hook_q"] = record("queries", i, depth)
            hooks[f"blocks.{i}.attn.hook_k"] = record("keys", i, depth)

    grad_mode = torch.enable_grad() if want_grad else torch.inference_mode()
    targets: list | None = None
    grads = token_grads = None
    with grad_mode, _autocast(device, autocast), model.hooks(hooks):
        final = model.forward_tokens(pixels)  # [B, N, D]
        logits = model.head_logits(final) if model.head is not None else None  # [B, C]
        if want_grad:
            if logits is None:
                raise VitCoreError("no_head", what="class-specific maps")
            targets = resolve_targets(target, logits)
            chosen = target_values(targets, logits)  # [B]
            *pattern_grads, token_grads = torch.autograd.grad(chosen.sum(), [*patterns, *last_input])
            grads = torch.stack(pattern_grads, dim=0)  # [L, B, H, N, N]
    with torch.inference_mode(), _autocast(device, autocast):
        tokens = buffers["tokens"]  # [L+1, B, N, D]
        layer_logits = model.head_logits(tokens[1:]) if logits is not None else None  # [L, B, C]
        arrays = {kind: _numpy(buffer) for kind, buffer in buffers.items()}  # each [slots, B, ...]
        logits_np = _numpy(logits) if logits is not None else None
        probs_np = _numpy(logits.float().softmax(-1)) if logits is not None else None
        layer_np = _numpy(layer_logits) if layer_logits is not None else None
        grads_np = _numpy(grads) if grads is not None else None
        token_grads_np = _numpy(token_grads) if grads is not None else None  # [B, N, D]
    grid = (pixels.shape[-2] // cfg.patch_size, pixels.shape[-1] // cfg.patch_size)

    def per_image(array: np.ndarray | None, b: int, batch_first: bool = False) -> np.ndarray | None:
        if array is None:
            return None
        return array[b] if batch_first else array[:, b]

    return [
        Capture(
            input=_numpy(pixels[b]),
            attentions=arrays["attentions"][:, b],
            tokens=arrays["tokens"][:, b],
            logits=per_image(logits_np, b, batch_first=True),
            probs=per_image(probs_np, b, batch_first=True),
            layer_logits=per_image(layer_np, b),
            num_prefix_tokens=cfg.num_prefix_tokens,
            grid=grid,
            patch_size=cfg.patch_size,
            has_class_token=cfg.class_token,
            scores=per_image(arrays.get("scores"), b),
            queries=per_image(arrays.get("queries"), b),
            keys=per_image(arrays.get("keys"), b),
            attention_grads=per_image(grads_np, b),
            token_grads=per_image(token_grads_np, b, batch_first=True),
            target=None if targets is None else targets[b].key,
            row_entropy=per_image(arrays["row_entropy"], b),
        )
        for b in range(pixels.shape[0])
    ]


def _chain(*hooks: Callable[[torch.Tensor, str], None]) -> Callable[[torch.Tensor, str], None]:
    def hook(tensor: torch.Tensor, name: str) -> None:
        for fn in hooks:
            fn(tensor, name)

    return hook


def _row_entropy(scores: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """Entropy of every softmax row `[..., query]` from its scores and weights, with one log per row.

    p = softmax(s) gives log p_k = s_k - log Z and log Z = s_max - log p_max, so
    H = -Σ p_k log p_k = Σ p_k (s_max - s_k) - log p_max: both terms are >= 0 (no cancellation), and
    the N² logs of Σ p log p, which cost more than the rest of the analyses together, become N.
    """
    top_score = scores.amax(dim=-1, keepdim=True)
    return (pattern * (top_score - scores)).sum(dim=-1) - pattern.amax(dim=-1).log()


def capture(model: ViT, pixels: torch.Tensor, **options: object) -> Capture:
    """`capture_batch` for one image `[C, H, W]` (or a batch of one)."""
    if pixels.ndim == 3:
        pixels = pixels.unsqueeze(0)
    if pixels.shape[0] != 1:
        raise VitCoreError("one_image_only")
    return capture_batch(model, pixels, **options)[0]  # type: ignore[arg-type]
