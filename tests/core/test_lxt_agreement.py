"""Our AttnLRP and CP-LRP against the reference package, lxt 2.1, on the same random weights (perturbed so
that attention is far from uniform).

- CP-LRP against lxt's torchvision vit_b_16 recipe (`tests/lxt_reference.py`): the pixel relevance maps
  agree with Pearson ≥ 0.99.
- Full AttnLRP (relevance through q, k and v, the paper's softmax rule) against a small torchvision ViT's
  forward pass written out by hand with lxt's explicit rule functions (`tests/lxt_explicit_reference.py`),
  with and without biases, float64. With ε = 0 on both sides (the plain z-rule in every linear map) each
  patch token's, the class token's and each position embedding's relevance is the reference's to the
  float32 rounding of our `Relevance` arrays (~1e-8 of the logit), and the input total, what the softmax
  layers absorb and what the biases absorb are the reference's to 1e-9 of the logit: the reference's input
  relevance is non-conservative by exactly as much as ours. With each side's default stabiliser the maps
  still agree (Pearson 0.9999997) but only to ~1e-4 of the logit: ours divides a linear layer's relevance
  by z + ε·sign(z), lxt's `linear_epsilon` by z + ε (with z + ε in ours the two match to rounding), and
  lxt's `layer_norm`, `add2` and `matmul` add an ε of their own where ours have none.

lxt runs in a subprocess only: its efficient recipe patches torch's own classes for the whole process (the
explicit rules patch nothing, but run there alike, in float64). It is installed with --no-deps (`make test`
does so from requirements-lxt.txt); locally without it the tests skip, under CI=true they fail.
"""

import copy
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
from vit_core.lrp import EPSILON, lrp_batch

ROOT = Path(__file__).resolve().parents[2]
# a small torchvision ViT for the explicit rules: 16 patches + the class token, 3 blocks
SMALL = {
    "image_size": 32,
    "patch_size": 8,
    "num_layers": 3,
    "num_heads": 4,
    "hidden_dim": 48,
    "mlp_dim": 96,
    "num_classes": 10,
}


def require_lxt() -> None:
    if importlib.util.find_spec("lxt") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("lxt is not installed: `pip install --no-deps -r requirements-lxt.txt`")
        pytest.skip("lxt is not installed (pip install --no-deps -r requirements-lxt.txt)")


def run_reference(script: str, tmp_path: Path, weights: object, pixels: torch.Tensor, target: int) -> dict:
    """Run `tests/<script>` in a subprocess on these weights and pixels; what it saved."""
    torch.save(weights, tmp_path / "weights.pt")
    torch.save(pixels, tmp_path / "pixels.pt")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [str(tmp_path / name) for name in ("weights.pt", "pixels.pt")] + [str(target), str(tmp_path / "out.pt")]
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / script), *args], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(tmp_path / "out.pt", weights_only=True)


def test_cp_lrp_agrees_with_lxt_on_vit_b_16(tmp_path):
    require_lxt()
    reference = perturb(torchvision.models.vit_b_16(weights=None))
    pixels = torch.randn(1, 3, 224, 224)
    target = 7
    theirs = run_reference("lxt_reference.py", tmp_path, reference.state_dict(), pixels, target)

    cfg = config_from_torchvision(reference)
    ours = load_converted(cfg, convert_torchvision(reference.state_dict(), cfg))
    (relevance,) = lrp_batch(ours, pixels, target, "cp_lrp")
    assert relevance.value == pytest.approx(float(theirs["logit"]), rel=1e-4)
    pearson = np.corrcoef(relevance.pixels.ravel(), theirs["pixels"].numpy().ravel())[0, 1]
    patches = relevance.pixels.reshape(14, 16, 14, 16).sum((1, 3))
    patch_pearson = np.corrcoef(patches.ravel(), theirs["pixels"].numpy().reshape(14, 16, 14, 16).sum((1, 3)).ravel())
    print(f"Pearson with lxt: pixels {pearson:.6f}, patches {patch_pearson[0, 1]:.6f}")
    assert pearson >= 0.99 and patch_pearson[0, 1] >= 0.99


def small_torchvision(biases: bool) -> torchvision.models.VisionTransformer:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = perturb(torchvision.models.VisionTransformer(**SMALL)).double()
    if not biases:
        model = copy.deepcopy(model)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("bias"):  # linear, convolution and LayerNorm biases
                    param.zero_()
    return model


@pytest.mark.parametrize("biases", [True, False], ids=["biases", "zero_biases"])
def test_attnlrp_agrees_with_lxt_explicit_rules(tmp_path, biases):
    require_lxt()
    reference = small_torchvision(biases)
    pixels = torch.randn(1, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        target = int(reference(pixels)[0].argmax())
    theirs = run_reference(
        "lxt_explicit_reference.py", tmp_path, {"config": SMALL, "state_dict": reference.state_dict()}, pixels, target
    )
    cfg = config_from_torchvision(reference)
    ours = load_converted(cfg, convert_torchvision(reference.state_dict(), cfg)).double()

    # ε = 0 on both sides: the same rules, so the same relevance up to rounding
    (relevance,) = lrp_batch(ours, pixels, target, "attnlrp", epsilon=0.0)
    zero = {key: value.numpy() for key, value in theirs["zero"].items()}
    logit = relevance.value
    assert logit == pytest.approx(float(zero["logit"]), rel=1e-12)
    worst = {
        part: float(np.abs(getattr(relevance, part).ravel() - zero[part]).max() / abs(logit))
        for part in ("patches", "prefix", "positions")
    }
    pearson = np.corrcoef(relevance.patches.ravel(), zero["patches"])[0, 1]
    their_bias = float(zero["logit"] - zero["total"] - zero["softmax_absorbed"])
    total_difference = abs(relevance.total - float(zero["total"])) / abs(logit)
    shares = {
        "total": (relevance.total, float(zero["total"])),
        "softmax absorbed": (relevance.softmax_absorbed, float(zero["softmax_absorbed"])),
        "biases absorbed": (relevance.bias_absorbed, their_bias),
    }
    print(f"\nbiases={biases}, logit {logit:.6f}; ε = 0, largest difference / logit:")
    print("  " + ", ".join(f"{part} {value:.1e}" for part, value in worst.items()) + f", total {total_difference:.1e}")
    print(f"  patch Pearson {pearson:.9f}; share of the logit, ours / lxt:")
    print("  " + "; ".join(f"{name} {a / logit:.6f} / {b / logit:.6f}" for name, (a, b) in shares.items()))
    assert max(worst.values()) <= 1e-6  # our arrays are float32: rounding leaves ~1e-8 of the logit
    assert pearson >= 0.99
    # the same total, away from the logit by the same softmax absorption and the same bias absorption
    assert total_difference <= 1e-9
    assert relevance.softmax_absorbed == pytest.approx(float(zero["softmax_absorbed"]), abs=1e-9 * abs(logit))
    assert relevance.bias_absorbed == pytest.approx(their_bias, abs=1e-9 * abs(logit))
    assert abs(relevance.total - logit) > 0.01 * abs(logit)  # non-conservative, visibly
    if not biases:
        assert relevance.total + relevance.softmax_absorbed == pytest.approx(logit, rel=1e-9)
        assert abs(their_bias) <= 1e-9 * abs(logit)
    # every op on the reference's relevance path is one of lxt's rules: under lxt's conservation check
    # (each rule spreads its relevance uniformly over its inputs) the inputs keep the whole logit, to the
    # float32 rounding of the check's own sums
    assert float(theirs["covered_total"]) == pytest.approx(float(zero["logit"]), rel=1e-6)

    # each side's default stabiliser, ε = 1e-6: ours z + ε·sign(z) in linear maps, lxt's z + ε there and in
    # LayerNorm (and 1e-8 in additions and products); the maps agree, the numbers to what these ε move
    (stabilised,) = lrp_batch(ours, pixels, target, "attnlrp", epsilon=EPSILON)
    lxt = {key: value.numpy() for key, value in theirs["lxt"].items()}
    default_pearson = np.corrcoef(stabilised.patches.ravel(), lxt["patches"])[0, 1]
    default_worst = np.abs(stabilised.patches.ravel() - lxt["patches"]).max() / abs(logit)
    default_total = abs(stabilised.total - float(lxt["total"])) / abs(logit)
    print(
        f"default stabilisers: patch Pearson {default_pearson:.9f}, largest patch difference / logit "
        f"{default_worst:.1e}, total difference / logit {default_total:.1e}"
    )
    assert default_pearson >= 0.99
    assert default_worst <= 1e-3 and default_total <= 1e-3
