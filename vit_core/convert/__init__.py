"""Pure weight converters: a source library's state_dict (+ our config) -> a `vit_core.ViT` state_dict.

One file per source, as timm's `checkpoint_filter_fn` and TransformerLens's weight conversions do:
names are mapped explicitly, every shape is checked, and a key nobody understands is an error.
"""

from vit_core.convert.common import check_state_dict
from vit_core.convert.from_hf import config_from_hf, convert_hf
from vit_core.convert.from_timm import config_from_timm, convert_timm
from vit_core.convert.from_torchvision import config_from_torchvision, convert_torchvision

__all__ = [
    "check_state_dict",
    "config_from_hf",
    "config_from_timm",
    "config_from_torchvision",
    "convert_hf",
    "convert_timm",
    "convert_torchvision",
]
