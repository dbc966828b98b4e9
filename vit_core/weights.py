"""Read state dicts from files without unpickling anything, and our own self-describing format.

Our format is one `.safetensors` file whose metadata holds the `ViTConfig`, the `DataConfig` and
the class labels as JSON, so the file alone is enough to rebuild and run the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from vit_core.config import DataConfig, ViTConfig
from vit_core.errors import VitCoreError
from vit_core.model import ViT, vit_from_state_dict

StateDict = dict[str, torch.Tensor]
FORMAT_KEY = "vit_core"


def read_state_dict(path: str | Path) -> StateDict:
    """A state dict from `.safetensors`, or from a torch file with `weights_only=True` (no pickle code)."""
    path = Path(path)
    if not path.exists():
        raise VitCoreError("weights_file_missing", path=str(path))
    if not path.is_file():
        raise VitCoreError("weights_not_a_file", path=str(path))
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise VitCoreError("weights_bad_safetensors", name=path.name) from error
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for foreign or hostile files
        raise VitCoreError("weights_not_loadable", name=path.name) from error
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VitCoreError("weights_not_state_dict", name=path.name)
    return state


def save_vit(path: str | Path, model: ViT, data_config: DataConfig, labels: list[str] | None) -> None:
    """Write `model` in our own format: weights + config, data config and labels as metadata."""
    metadata = {
        FORMAT_KEY: json.dumps({"config": model.cfg.to_dict(), "data_config": data_config.to_dict(), "labels": labels})
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=metadata)


def load_vit(path: str | Path) -> tuple[ViT, DataConfig, list[str] | None]:
    """Read a file written by `save_vit`; a foreign safetensors file is refused with one sentence."""
    path = Path(path)
    if not path.is_file():
        raise VitCoreError("model_file_missing", path=str(path))
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise VitCoreError("model_file_unreadable", name=path.name) from error
    if FORMAT_KEY not in metadata:
        raise VitCoreError("model_file_without_config", name=path.name)
    meta = json.loads(metadata[FORMAT_KEY])
    cfg = ViTConfig.from_dict(meta["config"])
    from vit_core.convert.common import check_state_dict

    model = vit_from_state_dict(cfg, check_state_dict(read_state_dict(path), cfg, "vit_core"))
    return model, DataConfig.from_dict(meta["data_config"]), meta.get("labels")
