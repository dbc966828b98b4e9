"""Run a ViT once and bring back what happened inside it: on the model's device, or as numpy on the CPU.

Attention weights per layer and head, the residual stream after the embedding and after each block,
the logits, the logit lens (nostalgebraist 2020: the model's own final norm and head read off every
block's output) and, on request, scores, queries, keys and the gradient of one class logit with
respect to every layer's attention weights (one backward pass; Chefer et al. 2021 need it).

`capture_batch(..., keep_on_device=True)` returns a `DeviceCapture`: the batch's tensors stay where the
model ran (in the autocast dtype under autocast), and `to_numpy(fields)` brings only the fields asked
for to the host in one pinned, non-blocking copy. Without it, the same copy happens at once and each
image gets a `Capture` of float32 numpy arrays.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from vit_core.errors import VitCoreError
from vit_core.model import ViT
from vit_core.targets import ClassLogit, TargetLike, resolve_targets, target_values
from vit_core.text import Activation, TextSimilarity, ZeroShotHead
from vit_core.validate import check_choice

Target = TargetLike | None


@dataclass(frozen=True)
class Capture:
    """Everything captured from one image. Arrays are float32; shapes are per image.

    `DeviceCapture.to_numpy(fields)` leaves the fields it was not asked for as None.
    """

    input: np.ndarray | None  # [channels, height, width], the tensor actually fed to the model
    attentions: np.ndarray | None  # [layer, head, query, key], rows sum to 1
    tokens: np.ndarray | None  # [layer + 1, pos, dim]; 0 = embeddings (input to block 0)
    logits: np.ndarray | None  # [classes]; None for a model without a head
    probs: np.ndarray | None  # [classes], softmax of logits (a sigmoid per label for SigLIP: `activation`)
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
    target: Hashable | None = None  # the target's key; a class index for a class logit (or a label's)
    # an attention-pool readout (SigLIP): its query's weights over the last block's output tokens, prefix
    # columns 0; rows sum to 1. None for a class-token or mean readout (or when not asked of `to_numpy`).
    pool_attention: np.ndarray | None = None  # [head, key]
    pool_attention_grads: np.ndarray | None = None  # [head, key], d target / d pool attention
    has_attention_pool: bool = False  # the model reads out by an attention pool (then maps need pool_attention)
    activation: Activation = "softmax"  # how logits become probs, the logit lens's too (SigLIP's labels: sigmoid)

    @property
    def num_layers(self) -> int:
        if self.attentions is None and self.row_entropy is not None:
            return self.row_entropy.shape[0]
        if self.attentions is None and self.tokens is not None:
            return self.tokens.shape[0] - 1
        return self.attentions.shape[0]

    @property
    def num_heads(self) -> int:
        return (self.attentions if self.attentions is not None else self.row_entropy).shape[1]


# The per-image array fields of a capture, in the order they are copied to the host.
FIELDS: tuple[str, ...] = (
    "input",
    "attentions",
    "tokens",
    "logits",
    "probs",
    "layer_logits",
    "scores",
    "queries",
    "keys",
    "attention_grads",
    "token_grads",
    "row_entropy",
    "pool_attention",
    "pool_attention_grads",
)


@dataclass(frozen=True)
class DeviceCapture:
    """A batch's capture, kept on the device where the model ran. Every tensor has a leading batch axis.

    The same fields as `Capture`; big ones are in the autocast dtype under autocast (bf16 halves them),
    `row_entropy`, `logits`, `probs` and `layer_logits` are float32. The torch maps and analyses
    (`rollout_vector`, `mean_distance_per_head`, ...) run on these tensors where they are.
    """

    input: torch.Tensor  # [batch, channels, height, width]
    attentions: torch.Tensor  # [batch, layer, head, query, key], rows sum to 1
    tokens: torch.Tensor  # [batch, layer + 1, pos, dim]
    logits: torch.Tensor | None  # [batch, classes]
    probs: torch.Tensor | None  # [batch, classes]
    layer_logits: torch.Tensor | None  # [batch, layer, classes]
    num_prefix_tokens: int
    grid: tuple[int, int]
    patch_size: int
    has_class_token: bool = True
    scores: torch.Tensor | None = None  # [batch, layer, head, query, key]
    queries: torch.Tensor | None = None  # [batch, layer, head, pos, d_head]
    keys: torch.Tensor | None = None  # [batch, layer, head, pos, d_head]
    attention_grads: torch.Tensor | None = None  # [batch, layer, head, query, key]
    token_grads: torch.Tensor | None = None  # [batch, pos, dim]
    row_entropy: torch.Tensor | None = None  # [batch, layer, head, query]
    targets: tuple[Hashable, ...] | None = None  # per image, the key of the target the gradients differentiate
    pool_attention: torch.Tensor | None = None  # [batch, head, key]: the attention pool's query (SigLIP)
    pool_attention_grads: torch.Tensor | None = None  # [batch, head, key]
    has_attention_pool: bool = False
    activation: Activation = "softmax"

    def __len__(self) -> int:
        return self.input.shape[0]

    @property
    def device(self) -> torch.device:
        return self.attentions.device

    @property
    def nbytes(self) -> int:
        """Bytes held by the tensors (on the device)."""
        return sum(tensor_bytes(getattr(self, name)) for name in FIELDS)

    def to_numpy(self, fields: Iterable[str] | None = None) -> list[Capture]:
        """One `Capture` per image with the requested `fields` (default: all) as float32 numpy arrays.

        One host copy for the whole batch (pinned and non-blocking from CUDA, waited on once); each
        image's arrays are views into it. Fields not requested are None.
        """
        names = FIELDS if fields is None else tuple(check_choice(name, FIELDS, "capture field") for name in fields)
        arrays = host_arrays({name: getattr(self, name) for name in names if getattr(self, name) is not None})
        return [
            Capture(
                **{name: arrays[name][b] if name in arrays else None for name in FIELDS},
                num_prefix_tokens=self.num_prefix_tokens,
                grid=self.grid,
                patch_size=self.patch_size,
                has_class_token=self.has_class_token,
                target=None if self.targets is None else self.targets[b],
                has_attention_pool=self.has_attention_pool,
                activation=self.activation,
            )
            for b in range(len(self))
        ]

    @property
    def numpy(self) -> list[Capture]:
        """Every field of every image as numpy (`to_numpy()`)."""
        return self.to_numpy()


def tensor_bytes(tensor: torch.Tensor | None) -> int:
    return 0 if tensor is None else tensor.numel() * tensor.element_size()


def host_arrays(tensors: Mapping[str, torch.Tensor], pin: bool | None = None) -> dict[str, np.ndarray]:
    """Tensors -> numpy arrays on the host (floating ones as float32), the device's ones in one staged copy.

    CPU tensors become arrays without a copy when they are float32 already. Tensors on an accelerator
    are copied, non-blocking, into slices of one host buffer (page-locked when `pin`, the default for
    CUDA, so the copies run as DMA) and the stream is synchronised once; bf16 and fp16 are widened to
    float32 on the host afterwards. `pin=False` with CPU tensors runs the staged copy on the CPU (tests).
    """
    staged = {name: t for name, t in tensors.items() if t.device.type != "cpu" or pin is False}
    arrays = {name: _float32(t.detach()) for name, t in tensors.items() if name not in staged}
    if not staged:
        return arrays
    alignment = 64  # every slice starts on a cache line, so any dtype can view it
    offsets, total = {}, 0
    for name, tensor in staged.items():
        offsets[name] = total
        total += -(-tensor_bytes(tensor) // alignment) * alignment
    pin = any(t.device.type == "cuda" for t in staged.values()) if pin is None else pin
    staging = torch.empty(total, dtype=torch.uint8, pin_memory=pin)  # [bytes]
    views = {}
    for name, tensor in staged.items():
        view = staging[offsets[name] : offsets[name] + tensor_bytes(tensor)].view(tensor.dtype).view(tensor.shape)
        view.copy_(tensor.detach(), non_blocking=pin)
        views[name] = view
    for device in {t.device for t in staged.values() if t.device.type == "cuda"}:
        torch.cuda.current_stream(device).synchronize()  # once, after every copy was queued
    arrays.update({name: _float32(view) for name, view in views.items()})
    return {name: arrays[name] for name in tensors}


def _float32(tensor: torch.Tensor) -> np.ndarray:
    """Floating tensors as float32 arrays (bf16 has no numpy dtype), integers as they are; no copy when possible."""
    widen = tensor.is_floating_point() and tensor.dtype != torch.float32
    return (tensor.float() if widen else tensor).numpy()


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
    keep_on_device: bool = False,
    zero_shot: ZeroShotHead | None = None,
) -> list[Capture] | DeviceCapture:
    """Run `pixels` `[B, C, H, W]` through `model` once and return one `Capture` per image.

    `target` (a class index, one per image, "top" for each image's top prediction, or a target callable
    of `vit_core.targets`) adds, from one backward pass, the gradient of that target with respect to every
    layer's attention weights and to the tokens entering the last block (Grad-CAM). `keep_on_device=True`
    returns the batch as one `DeviceCapture` instead, its tensors left on the model's device (in the
    autocast dtype under autocast).

    An image–text model's output is its image embedding. With `zero_shot` (a label set,
    `vit_core.text.ZeroShotHead`) its logits and logit lens are the labels' zero-shot logits, and a class
    index or "top" targets a label; a `TextSimilarity` target explains any phrase.
    """
    cfg = model.cfg
    weight = next(model.parameters())
    device = weight.device
    pixels = pixels.to(device, weight.dtype)
    if pixels.ndim != 4:
        raise VitCoreError("not_a_batch", shape=str(list(pixels.shape)))
    # Kept on the device under autocast, the big fields take the autocast dtype: bf16 halves them.
    store_dtype = autocast if keep_on_device and autocast not in (None, torch.float32) else None

    want_grad = target is not None
    pool_patterns: list[torch.Tensor] = []  # the attention pool's weights, kept for gradients
    # Each captured tensor is copied into one [B, slots, ...] buffer as it goes by, so the per-layer
    # intermediates are freed and recycled: retaining them all costs more in fresh memory than the copy.
    buffers: dict[str, torch.Tensor] = {}
    patterns: list[torch.Tensor] = []  # kept alive only when gradients are wanted
    last_input: list[torch.Tensor] = []  # tokens entering the last block, for Grad-CAM

    def record(kind: str, slot: int, slots: int, dtype: torch.dtype | None = store_dtype):
        def hook(tensor: torch.Tensor, _name: str) -> None:
            if kind not in buffers:
                buffers[kind] = tensor.new_empty((tensor.shape[0], slots, *tensor.shape[1:]), dtype=dtype)
            buffers[kind][:, slot].copy_(tensor.detach())
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
                buffers["row_entropy"] = row_entropy.new_empty((row_entropy.shape[0], slots, *row_entropy.shape[1:]))
            buffers["row_entropy"][:, slot].copy_(row_entropy)

        return hook

    def record_pool(pattern: torch.Tensor, _name: str) -> None:
        weights = pattern[:, :, 0]  # [B, H, patches]: the one query's row
        if want_grad:
            pool_patterns.append(pattern)
        buffer = weights.new_zeros((*weights.shape[:2], cfg.num_prefix_tokens + weights.shape[-1]), dtype=store_dtype)
        buffer[..., cfg.num_prefix_tokens :] = weights.detach()  # prefix columns: the pool does not read them
        buffers["pool_attention"] = buffer  # [B, H, N]

    depth = cfg.depth
    hooks = {"blocks.0.hook_resid_pre": record("tokens", 0, depth + 1)}
    if model.attn_pool is not None:
        hooks["attn_pool.hook_pattern"] = record_pool
    for i in range(depth):
        kept = [record("scores", i, depth)] if scores else []
        hooks[f"blocks.{i}.attn.hook_attn_scores"] = _chain(keep_scores, *kept)
        hooks[f"blocks.{i}.attn.hook_pattern"] = _chain(record("attentions", i, depth), entropy(i, depth))
        hooks[f"blocks.{i}.hook_resid_post"] = record("tokens", i + 1, depth + 1)
        if qk:
            hooks[f"blocks.{i}.attn.hook_q"] = record("queries", i, depth)
            hooks[f"blocks.{i}.attn.hook_k"] = record("keys", i, depth)

    grad_mode = torch.enable_grad() if want_grad else torch.inference_mode()
    targets: list | None = None
    grads = token_grads = pool_grads = None
    readout = _readout(model, zero_shot)
    with grad_mode, _autocast(device, autocast), model.hooks(hooks):
        final = model.forward_tokens(pixels)  # [B, N, D]
        # the model's output: logits [B, C], or an image–text model's image embeddings [B, E]
        output = model.head_logits(final) if model.head is not None or model.proj is not None else None
        if output is None and model.attn_pool is not None:
            model.pool(final)  # a backbone's attention-pool readout: its weights are captured all the same
        logits = readout(output) if readout is not None else None  # [B, C]
        if want_grad:
            targets = _targets(model, target, output, logits, zero_shot)
            chosen = target_values(targets, output)  # [B]
            *pattern_grads, token_grads = torch.autograd.grad(chosen.sum(), [*patterns, *pool_patterns, *last_input])
            if pool_patterns:
                pool_grad = pattern_grads.pop()[:, :, 0]  # [B, H, patches]
                pool_grads = pool_grad.new_zeros((*pool_grad.shape[:2], cfg.num_prefix_tokens + pool_grad.shape[-1]))
                pool_grads[..., cfg.num_prefix_tokens :] = pool_grad  # [B, H, N]
            grads = torch.stack(pattern_grads, dim=1)  # [B, L, H, N, N]
            if store_dtype is not None:
                grads, token_grads = grads.to(store_dtype), token_grads.to(store_dtype)
                pool_grads = None if pool_grads is None else pool_grads.to(store_dtype)
    with torch.inference_mode(), _autocast(device, autocast):
        layer_logits = readout(model.head_logits(buffers["tokens"][:, 1:])).float() if logits is not None else None
    logits = logits.detach().float() if logits is not None else None  # [B, C]; layer_logits [B, L, C]
    result = DeviceCapture(
        input=pixels,
        attentions=buffers["attentions"],
        tokens=buffers["tokens"],
        logits=logits,
        probs=_probabilities(logits, zero_shot),
        layer_logits=layer_logits,
        num_prefix_tokens=cfg.num_prefix_tokens,
        grid=(pixels.shape[-2] // cfg.patch_size, pixels.shape[-1] // cfg.patch_size),
        patch_size=cfg.patch_size,
        has_class_token=cfg.class_token,
        scores=buffers.get("scores"),
        queries=buffers.get("queries"),
        keys=buffers.get("keys"),
        attention_grads=grads,
        token_grads=token_grads,
        row_entropy=buffers["row_entropy"],
        targets=None if targets is None else tuple(t.key for t in targets),
        pool_attention=buffers.get("pool_attention"),
        pool_attention_grads=pool_grads,
        has_attention_pool=model.attn_pool is not None,
        activation=zero_shot.activation if zero_shot is not None else "softmax",
    )
    return result if keep_on_device else result.to_numpy()


def _chain(*hooks: Callable[[torch.Tensor, str], None]) -> Callable[[torch.Tensor, str], None]:
    def hook(tensor: torch.Tensor, name: str) -> None:
        for fn in hooks:
            fn(tensor, name)

    return hook


def _row_entropy(scores: torch.Tensor, pattern: torch.Tensor, *, overwrite_scores: bool = False) -> torch.Tensor:
    """Entropy of every softmax row `[..., query]` from its scores and weights: H = log Z - Σ p·s.

    p = softmax(s) gives log p_k = s_k - log Z, so H = -Σ p_k log p_k = log Z - Σ p_k s_k, and the log
    of the partition function comes from the two row maxima, log Z = s_max - log p_max: one log per
    row instead of N. The scores are shifted by their row maximum first, H = -Σ p_k (s_k - s_max) -
    log p_max, so that both terms are >= 0: unshifted, Σ p·s cancels against log Z, and float32 rows
    with scores near 10⁴ (a saturated model) come out up to 5e-4 nats off. Σ p·(s - s_max) is a
    batched dot product, so no product the size of the attention is allocated; `overwrite_scores=True`
    shifts the scores in place (for a caller that no longer needs them), so nothing that size is.
    """
    top_score = scores.amax(dim=-1, keepdim=True)  # [..., Q, 1]
    shifted = scores.sub_(top_score) if overwrite_scores else scores - top_score  # [..., Q, K], all <= 0
    score_mass = (pattern.unsqueeze(-2) @ shifted.unsqueeze(-1)).flatten(-3)  # [..., Q]: Σ p·(s - s_max)
    return score_mass.neg_() - pattern.amax(dim=-1).log()


def capture(model: ViT, pixels: torch.Tensor, **options: object) -> Capture | DeviceCapture:
    """`capture_batch` for one image `[C, H, W]` (or a batch of one).

    With `keep_on_device=True` it returns the `DeviceCapture` of a batch of one.
    """
    if pixels.ndim == 3:
        pixels = pixels.unsqueeze(0)
    if pixels.shape[0] != 1:
        raise VitCoreError("one_image_only")
    result = capture_batch(model, pixels, **options)  # type: ignore[arg-type]
    return result if isinstance(result, DeviceCapture) else result[0]


def _readout(model: ViT, zero_shot: ZeroShotHead | None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Model output -> logits: the identity for a classifier, the label set for an image–text model,
    None when there are no logits (no head, or an image–text model without labels)."""
    if model.proj is not None:
        return zero_shot
    if zero_shot is not None:
        raise VitCoreError("no_text_tower")
    return (lambda output: output) if model.head is not None else None


def _probabilities(logits: torch.Tensor | None, zero_shot: ZeroShotHead | None) -> torch.Tensor | None:
    if logits is None:
        return None
    return zero_shot.probabilities(logits) if zero_shot is not None else logits.softmax(-1)


def _targets(
    model: ViT, target: Target, output: torch.Tensor | None, logits: torch.Tensor | None, zero_shot: ZeroShotHead | None
) -> list:
    """One target per image, each a callable on the model's output.

    A classifier's targets read its logits. An image–text model's read its image embedding: a phrase is a
    `TextSimilarity`, and a class index or "top" picks a label of `zero_shot` and becomes that label's.
    """
    if isinstance(target, TextSimilarity) and model.proj is None:
        raise VitCoreError("no_text_tower")
    if output is None:
        raise VitCoreError("no_head", what="class-specific maps")
    if model.proj is None:
        return resolve_targets(target, output)
    resolved = resolve_targets(target, output if logits is None else logits)
    if not any(isinstance(t, ClassLogit) for t in resolved):
        return resolved
    if zero_shot is None:
        raise VitCoreError("labels_or_prompt_needed")
    return [zero_shot.target(t.index) if isinstance(t, ClassLogit) else t for t in resolved]
