"""What every source's loader returns: a `LoadedModel`, the network with its preprocessing and labels.

Each source (`vit_core/convert/from_<source>.py`) owns its loader, config translation, converter and
preprocessing; `vit_core.zoo` dispatches a name to one of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image
from torch import nn

from vit_core.config import DataConfig, ViTConfig
from vit_core.errors import VitCoreError
from vit_core.model import ViT
from vit_core.text import TextEncoder

WEIGHT_FILES = ["model.safetensors", "pytorch_model.bin"]


@dataclass
class LoadedModel:
    """A model ready to run: the network, how to turn an image into its input, and its labels.

    An image–text model (CLIP, SigLIP) also has its `text` tower: the source library's own, behind a
    `TextEncoder` that embeds prompts and zero-shot labels. A timm image tower alone has none.
    """

    name: str
    model: ViT
    data_config: DataConfig
    transform: Callable[[Image.Image], torch.Tensor]  # PIL RGB -> [C, H, W] float32, normalised
    labels: list[str] | None
    weights: str  # where the weights came from: a file, a cache path, or "random"
    make_reference: Callable[[], nn.Module]  # the source library's own model, same weights (benchmarks)
    text: TextEncoder | None = None

    @property
    def cfg(self) -> ViTConfig:
        return self.model.cfg

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def text_encoder(self) -> TextEncoder:
        """The text tower, or one sentence saying this model takes no prompt (`no_text_tower`)."""
        if self.text is None:
            raise VitCoreError("no_text_tower")
        return self.text

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """PIL RGB image -> the exact input tensor `[C, H, W]` the source library would feed."""
        return self.transform(image)


def timm_transform(data_config: DataConfig) -> Callable[[Image.Image], torch.Tensor]:
    """timm's own eval transform for a data config (also used for our files and HF models)."""
    from timm.data import create_transform

    return create_transform(**data_config.to_dict(), is_training=False)
