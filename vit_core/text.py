"""Text prompts for image–text models: zero-shot labels and image–text similarity targets.

CLIP (Radford et al. 2021) and SigLIP (Zhai et al. 2023) embed an image and a text in one space; the
zero-shot logit of a text is `scale · cos(image, text) + bias` (CLIP: bias 0, softmax over the labels;
SigLIP: a learnt bias, a sigmoid per label). The text tower runs as its own library's code (open_clip,
transformers) behind a `TextEncoder`, which caches each prompt's embedding in a bounded LRU. A label
set becomes a `ZeroShotHead` (the labels' text embeddings, one row per label, averaged over prompt
templates as CLIP's ImageNet evaluation does); a phrase becomes a `TextSimilarity` target, a callable on
the image embedding in the target protocol of `vit_core.targets`, so every gradient method explains it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from vit_core.errors import VitCoreError

Activation = Literal["softmax", "sigmoid"]
MAX_LABELS = 1000
PLAIN_TEMPLATE = "{}"
DEFAULT_TEMPLATE = "a photo of a {}."


def imagenet_templates() -> tuple[str, ...]:
    """CLIP's 80 ImageNet prompt templates ("a bad photo of a {}.", ...), as open_clip ships them."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return tuple(template("{}") for template in OPENAI_IMAGENET_TEMPLATES)


def parse_labels(text: str | Sequence[str]) -> tuple[str, ...]:
    """Labels from "a dog, a cat" (comma-separated) or a list: stripped, none empty, no duplicates, ≤ 1,000."""
    labels = [part.strip() for part in (text.split(",") if isinstance(text, str) else text)]
    if not labels or labels == [""]:
        raise VitCoreError("no_labels")
    if len(labels) > MAX_LABELS:
        raise VitCoreError("too_many_labels", count=len(labels), limit=MAX_LABELS)
    seen: dict[str, int] = {}
    for position, label in enumerate(labels, start=1):
        if not label:
            raise VitCoreError("empty_label", position=position)
        folded = label.casefold()
        if folded in seen:
            raise VitCoreError("duplicate_label", label=label, first=seen[folded], position=position)
        seen[folded] = position
    return tuple(labels)


def check_template(template: str) -> str:
    """A prompt template with exactly one `{}` where the label goes."""
    if not isinstance(template, str) or template.count("{}") != 1:
        raise VitCoreError("template_without_slot", template=str(template))
    return template


class TextEncoder:
    """An image–text model's text tower, run by its own library, with a bounded cache per prompt.

    `embed(prompts) -> [P, E]` runs the library's own text tower (open_clip's `encode_text`, HF's
    `get_text_features`); `token_count(prompt)` counts the tokens the tokenizer makes, start and end
    tokens included, so a prompt longer than the context is refused instead of silently cut.
    Embeddings are unit length, float32, on the CPU. The cache holds `cache_size` entries, each a label
    under a tuple of templates (one entry per phrase for a plain prompt).
    """

    def __init__(
        self,
        embed: Callable[[list[str]], torch.Tensor],
        token_count: Callable[[str], int],
        context_length: int,
        logit_scale: float,
        logit_bias: float = 0.0,
        activation: Activation = "softmax",
        cache_size: int = 16_384,
        batch_size: int = 256,
        num_parameters: int = 0,
    ) -> None:
        self._embed = embed
        self._token_count = token_count
        self.context_length = int(context_length)
        self.logit_scale = float(logit_scale)  # exp of the learnt log-scale
        self.logit_bias = float(logit_bias)
        self.activation: Activation = activation
        self.cache_size = cache_size
        self.batch_size = batch_size
        self._cache: OrderedDict[tuple[str, tuple[str, ...]], torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.encoded = 0  # prompts run through the text tower so far (the cache's misses)
        self.num_parameters = num_parameters  # the text tower's (with the logit scale and bias), for budgets

    def check_prompt(self, prompt: str) -> str:
        """The prompt, stripped; empty or longer than the context length is refused with one sentence."""
        prompt = prompt.strip() if isinstance(prompt, str) else ""
        if not prompt:
            raise VitCoreError("empty_prompt")
        tokens = self._token_count(prompt)
        if tokens > self.context_length:
            raise VitCoreError("prompt_too_long", tokens=tokens, limit=self.context_length, prompt=prompt[:40])
        return prompt

    def encode(self, labels: Sequence[str], templates: Sequence[str] = (PLAIN_TEMPLATE,)) -> torch.Tensor:
        """`[len(labels), E]` unit rows: each label's embedding, the mean over `templates` renormalised."""
        templates = tuple(check_template(t) for t in templates)
        keys = [(label, templates) for label in labels]
        with self._lock:
            missing = list(dict.fromkeys(key for key in keys if key not in self._cache))
            if missing:
                prompts = [self.check_prompt(t.replace("{}", label)) for label, _ in missing for t in templates]
                rows = self._run(prompts).reshape(len(missing), len(templates), -1)  # [M, T, E]
                means = F.normalize(rows.mean(dim=1), dim=-1)  # [M, E]; CLIP's template ensembling
                for key, row in zip(missing, means, strict=True):
                    self._cache[key] = row
            rows = []
            for key in keys:
                self._cache.move_to_end(key)
                rows.append(self._cache[key])
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return torch.stack(rows) if rows else torch.zeros(0, 0)

    def _run(self, prompts: list[str]) -> torch.Tensor:
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(prompts), self.batch_size):
                batch = self._embed(prompts[start : start + self.batch_size])  # [b, E]
                chunks.append(F.normalize(batch.detach().float().cpu(), dim=-1))
        self.encoded += len(prompts)
        return torch.cat(chunks)

    def head(self, labels: str | Sequence[str], templates: Sequence[str] = (DEFAULT_TEMPLATE,)) -> ZeroShotHead:
        """The zero-shot classifier over `labels` (a comma-separated string or a list)."""
        labels = parse_labels(labels)
        templates = tuple(check_template(t) for t in templates)
        return ZeroShotHead(
            labels, templates, self.encode(labels, templates), self.logit_scale, self.logit_bias, self.activation
        )

    def target(self, prompt: str) -> TextSimilarity:
        """The similarity to a phrase as a target: what `capture(..., target=...)` explains."""
        prompt = self.check_prompt(prompt)
        return TextSimilarity(prompt, self.encode([prompt])[0], self.logit_scale, self.logit_bias)


def _similarity(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, scale: float, bias: float):
    """`[..., E]` x `[C, E]` -> `[..., C]`: scale · cos(image, text) + bias, as the libraries compute logits."""
    image = F.normalize(image_embeddings.float(), dim=-1)
    return scale * (image @ text_embeddings.to(image.device).T) + bias


@dataclass(frozen=True, eq=False)
class ZeroShotHead:
    """A label set as a classifier on the image embedding: `head(embedding [..., E]) -> logits [..., C]`."""

    labels: tuple[str, ...]
    templates: tuple[str, ...]
    text_embeddings: torch.Tensor = field(repr=False)  # [C, E], unit rows, CPU float32
    logit_scale: float
    logit_bias: float = 0.0
    activation: Activation = "softmax"

    @property
    def key(self) -> Hashable:
        """What identifies the label set (the app's analysis key includes it)."""
        return ("labels", self.labels, self.templates)

    def __call__(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        return _similarity(image_embeddings, self.text_embeddings, self.logit_scale, self.logit_bias)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax over the labels (CLIP) or a sigmoid per label (SigLIP: each label on its own)."""
        return torch.sigmoid(logits) if self.activation == "sigmoid" else logits.softmax(dim=-1)

    def target(self, index: int) -> TextSimilarity:
        """Label `index`'s zero-shot logit as a target; its key is the index, as a class logit's."""
        return TextSimilarity(
            self.labels[index], self.text_embeddings[index], self.logit_scale, self.logit_bias, index=index
        )


@dataclass(frozen=True)
class TextSimilarity:
    """Target: the zero-shot logit of a text, `scale · cos(image embedding, text embedding) + bias`, per image.

    A callable on the image tower's output `[B, E]` -> `[B]` with a hashable `key` (the label's index
    for a label of a `ZeroShotHead`, else ("text", phrase)), as `vit_core.targets` defines targets.
    """

    text: str
    embedding: torch.Tensor = field(compare=False, repr=False)  # [E], unit length
    scale: float = 1.0
    bias: float = 0.0
    index: int | None = None

    @property
    def key(self) -> Hashable:
        return self.index if self.index is not None else ("text", self.text)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return _similarity(output, self.embedding[None, :], self.scale, self.bias)[..., 0]
