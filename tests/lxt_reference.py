"""lxt 2.1's CP-LRP recipe for torchvision's ViT, as a script: the agreement test runs it in a subprocess only,
because lxt replaces `forward` on torch's LayerNorm, GELU and MultiheadAttention classes for the whole process.

    python tests/lxt_reference.py WEIGHTS.pt PIXELS.pt TARGET OUT.pt

`import lxt.efficient` fails with transformers 5.24 (its package imports every language-model recipe), so
the two parent packages are registered empty and only the modules of the ViT path are imported:
`lxt.efficient.rules`, `lxt.efficient.patches` and `lxt.efficient.models.vit_torch`. The recipe's patches are
applied as lxt's `monkey_patch` would apply them. Linear and convolution layers keep their plain gradient
(lxt's example adds zennit's gamma rule there; without it, it is the ε-rule with ε = 0).
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import torch
import torchvision


def cp_lrp_recipe() -> dict:
    import lxt

    efficient = Path(lxt.__file__).parent / "efficient"
    for name, folder in (("lxt.efficient", efficient), ("lxt.efficient.models", efficient / "models")):
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]
        sys.modules[name] = package
    return importlib.import_module("lxt.efficient.models.vit_torch").cp_LRP


def main(weights: str, pixels: str, target: str, out: str) -> None:
    for module_class, patch in cp_lrp_recipe().items():
        patch(module_class)
    model = torchvision.models.vit_b_16(weights=None)
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    for param in model.parameters():
        param.requires_grad = False
    x = torch.load(pixels, weights_only=True).requires_grad_()
    logits = model(x)
    logits[0, int(target)].backward()
    torch.save({"pixels": (x * x.grad).sum(1)[0].detach(), "logit": logits[0, int(target)].detach()}, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
