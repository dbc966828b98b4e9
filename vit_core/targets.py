"""What a class-specific map explains: a *target*, a scalar function of the model's output per image.

As pytorch-grad-cam's `ClassifierOutputTarget`, a target is a callable on the model's output `[B, ...]`
that returns one value per image `[B]`, so every gradient or relevance method works for any kind of
target (a class logit here; an image–text similarity for a CLIP model) without a copy of the method.
A target also has a hashable `key`, so a result computed for it can be memoised (the app keeps maps per
target key).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch

from vit_core.errors import VitCoreError
from vit_core.validate import check_index


@runtime_checkable
class Target(Protocol):
    """A scalar per image of the model's output: `target(output [B, ...]) -> [B]`, and a memo key."""

    @property
    def key(self) -> Hashable: ...

    def __call__(self, output: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class ClassLogit:
    """The logit of one class (pytorch-grad-cam's `ClassifierOutputTarget`); its key is the class index,
    so a capture made with `target=3` and one made with `ClassLogit(3)` share their memo entries."""

    index: int

    @property
    def key(self) -> int:
        return self.index

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output[..., self.index]  # [B, C] -> [B]


TargetLike = int | Sequence[int] | Literal["top"] | Target | Sequence[Target]


def resolve_targets(target: TargetLike, output: torch.Tensor) -> list[Target]:
    """One `Target` per image of the output `[B, C]`: a class index (for every image), one index per image,
    "top" (each image's top class), or targets themselves (one for all, or one per image)."""
    batch = output.shape[0]
    if isinstance(target, str):
        if target != "top":
            raise VitCoreError("unknown_class", value=target)
        return [ClassLogit(int(i)) for i in output.argmax(-1).tolist()]
    if isinstance(target, Target):
        return [target] * batch
    if isinstance(target, int | np.integer):
        targets: list = [int(target)] * batch
    else:
        targets = list(target)  # type: ignore[arg-type]
    if len(targets) != batch:
        raise VitCoreError("target_count_mismatch", targets=len(targets), batch=batch)
    classes = output.shape[-1]
    return [t if isinstance(t, Target) else ClassLogit(check_index(t, classes, "target class")) for t in targets]


def target_values(targets: Sequence[Target], output: torch.Tensor) -> torch.Tensor:
    """`[B]`: each image's target evaluated on its own row of the output."""
    if all(isinstance(t, ClassLogit) for t in targets):  # one gather instead of B calls
        index = torch.tensor([t.index for t in targets], device=output.device)  # type: ignore[attr-defined]
        return output.gather(-1, index[:, None])[:, 0]
    return torch.stack([t(output[b : b + 1])[0] for b, t in enumerate(targets)])
