"""Helpers shared by the converters: rename by explicit rules, then check against the architecture."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch

from vit_core.config import ViTConfig
from vit_core.errors import VitCoreError
from vit_core.model import ViT

StateDict = dict[str, torch.Tensor]


def expected_shapes(cfg: ViTConfig) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of `ViT(cfg)`, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        model = ViT(cfg)
    return {name: tuple(value.shape) for name, value in model.state_dict().items()}


def rename(
    state_dict: Mapping[str, torch.Tensor],
    rules: Iterable[tuple[str, str]],
    ignore: Iterable[str],
    source: str,
) -> StateDict:
    """Map each key with the first matching `(regex, template)` rule; `ignore` lists keys to drop.

    A key that no rule or ignore pattern matches raises: silently dropping weights hides bugs.
    """
    rules = [(re.compile(pattern), template) for pattern, template in rules]
    ignore = [re.compile(pattern) for pattern in ignore]
    out: StateDict = {}
    for key, value in state_dict.items():
        if any(pattern.fullmatch(key) for pattern in ignore):
            continue
        for pattern, template in rules:
            match = pattern.fullmatch(key)
            if match:
                out[match.expand(template)] = value
                break
        else:
            raise VitCoreError("weights_unmappable", source=source, key=key)
    return out


def check_keys(state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], source: str) -> None:
    """Fail on the first key that is unknown, missing or of the wrong shape, naming both shapes."""
    for key, shape in expected.items():  # the model's own order: embeddings, blocks, head
        if key in state_dict and tuple(state_dict[key].shape) != tuple(shape):
            raise VitCoreError(
                "weights_shape_mismatch",
                source=source,
                key=key,
                weights_shape=str(list(state_dict[key].shape)),
                model_shape=str(list(shape)),
            )
    for key in state_dict:
        if key not in expected:
            raise VitCoreError("weights_unexpected_key", source=source, key=key)
    missing = [key for key in expected if key not in state_dict]
    if missing:
        raise VitCoreError(
            "weights_missing_key",
            source=source,
            key=missing[0],
            shape=str(list(expected[missing[0]])),
            count=len(missing),
        )


def check_state_dict(state_dict: Mapping[str, torch.Tensor], cfg: ViTConfig, source: str) -> StateDict:
    """`check_keys` against `ViT(cfg)`; the weights as float32."""
    check_keys(state_dict, expected_shapes(cfg), source)
    return {key: value.float() if value.is_floating_point() else value for key, value in state_dict.items()}
