"""Our CP-LRP against the reference, lxt 2.1's torchvision vit_b_16 recipe, on the same random weights (perturbed so
that attention is far from uniform): the pixel relevance maps agree with Pearson ≥ 0.99.

lxt runs in a subprocess only (`tests/lxt_reference.py`): it patches torch's own classes for the whole process.
It is installed with --no-deps (`make test` does so from requirements-lxt.txt); locally without it the test
skips, under CI=true it fails.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from tests.reference import load_converted, perturb
from vit_core.convert import config_from_torchvision, convert_torchvision
from vit_core.lrp import lrp_batch

ROOT = Path(__file__).resolve().parents[2]


def test_cp_lrp_agrees_with_lxt_on_vit_b_16(tmp_path):
    if importlib.util.find_spec("lxt") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("lxt is not installed: `pip install --no-deps -r requirements-lxt.txt`")
        pytest.skip("lxt is not installed (pip install --no-deps -r requirements-lxt.txt)")
    reference = perturb(torchvision.models.vit_b_16(weights=None))
    pixels = torch.randn(1, 3, 224, 224)
    target = 7
    torch.save(reference.state_dict(), tmp_path / "weights.pt")
    torch.save(pixels, tmp_path / "pixels.pt")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [str(tmp_path / name) for name in ("weights.pt", "pixels.pt")] + [str(target), str(tmp_path / "out.pt")]
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "lxt_reference.py"), *args], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = torch.load(tmp_path / "out.pt", weights_only=True)

    cfg = config_from_torchvision(reference)
    ours = load_converted(cfg, convert_torchvision(reference.state_dict(), cfg))
    (relevance,) = lrp_batch(ours, pixels, target, "cp_lrp")
    assert relevance.value == pytest.approx(float(theirs["logit"]), rel=1e-4)
    pearson = np.corrcoef(relevance.pixels.ravel(), theirs["pixels"].numpy().ravel())[0, 1]
    patches = relevance.pixels.reshape(14, 16, 14, 16).sum((1, 3))
    patch_pearson = np.corrcoef(patches.ravel(), theirs["pixels"].numpy().reshape(14, 16, 14, 16).sum((1, 3)).ravel())
    print(f"Pearson with lxt: pixels {pearson:.6f}, patches {patch_pearson[0, 1]:.6f}")
    assert pearson >= 0.99 and patch_pearson[0, 1] >= 0.99
