"""AttnLRP and CP-LRP: each rule on a hand-computed case, conservation in float64, thread safety.

Relevance in the gradient × input framework: the relevance of a tensor t is t ⊙ dt, where the backward
pass is modified by the rules (`vit_core.lrp.RelevanceRules`). To feed a relevance R into an output y,
the backward pass starts from R / y.
"""

import copy
import math
import threading

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from timm.models.vision_transformer import VisionTransformer

from tests.reference import load_converted, perturb
from vit_core.convert import config_from_timm, config_from_torchvision, convert_timm, convert_torchvision
from vit_core.errors import VitCoreError
from vit_core.lrp import Relevance, RelevanceRules, embedding_parts, lrp_batch
from vit_core.targets import ClassLogit
from vit_core.zoo import load_model


def relevance_in(x: torch.Tensor, y: torch.Tensor, relevance_out: torch.Tensor) -> torch.Tensor:
    """The input relevance x ⊙ dx when relevance R enters the output y (y ⊙ dy = R)."""
    (grad,) = torch.autograd.grad(y, x, torch.where(y == 0, 0.0, relevance_out / y))
    return x.detach() * grad


def test_softmax_rule_two_tokens_by_hand():
    # s = softmax(1, 2) = (0.268941, 0.731059); R = (0.5, 1.5), ΣR = 2.
    # AttnLRP: Rᵢ ← xᵢ (Rᵢ − sᵢ ΣR): 1·(0.5 − 0.537883) = −0.037883 and 2·(1.5 − 1.462117) = 0.075766.
    x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    with RelevanceRules("attnlrp"):
        s = x.softmax(-1)
    assert s.tolist() == pytest.approx([0.268941, 0.731059], abs=1e-6)
    got = relevance_in(x, s, torch.tensor([0.5, 1.5], dtype=torch.float64))
    assert got.tolist() == pytest.approx([-0.037883, 0.075766], abs=1e-6)
    # what the rule does not pass on (its bias term) is 2 − 0.037883: no conservation through a softmax
    assert got.sum().item() == pytest.approx(0.037883, abs=1e-6)


def test_softmax_cp_lrp_passes_nothing():
    x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    with RelevanceRules("cp_lrp"):
        s = x.softmax(-1)
    assert not s.requires_grad  # CP-LRP: the attention weights are constants


def test_matrix_product_uniform_rule_by_hand():
    # o = a·v = 0.25·2 + 0.75·4 = 3.5 with R_o = 7; the uniform rule gives each factor half:
    # R_aⱼ = R_vⱼ = aⱼvⱼ R_o / (2 o) = aⱼvⱼ: (0.5, 3) to a and (0.5, 3) to v.
    a = torch.tensor([[0.25, 0.75]], dtype=torch.float64, requires_grad=True)
    v = torch.tensor([[2.0], [4.0]], dtype=torch.float64, requires_grad=True)
    with RelevanceRules("attnlrp"):
        o = a @ v
    grads = torch.autograd.grad(o, [a, v], torch.tensor([[2.0]], dtype=torch.float64))  # R_o / o = 7 / 3.5
    assert (a * grads[0]).flatten().tolist() == pytest.approx([0.5, 3.0])
    assert (v * grads[1]).flatten().tolist() == pytest.approx([0.5, 3.0])
    with RelevanceRules("chefer"):  # Chefer et al.'s matmul rule: the same halves, on relevance itself
        o = a @ v
    grads = torch.autograd.grad(o, [a, v], torch.tensor([[7.0]], dtype=torch.float64))
    assert grads[0].flatten().tolist() == pytest.approx([0.5, 3.0])
    assert grads[1].flatten().tolist() == pytest.approx([0.5, 3.0])


def test_layer_norm_identity_rule_by_hand():
    # x = (1, 2, 3): μ = 2, y = (x − μ)/σ. The division is the identity, the centring takes the ε(0)-rule:
    # R_xᵢ = Σⱼ xᵢ (δᵢⱼ − 1/3) R_yⱼ / (xⱼ − μ). With R_y = (−1, 0, 2): R_x = (0, −2, 3), which sums to ΣR_y = 1.
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    with RelevanceRules("attnlrp"):
        y = F.layer_norm(x, (3,), eps=0.0)
    assert y.tolist() == pytest.approx([-math.sqrt(1.5), 0.0, math.sqrt(1.5)])
    got = relevance_in(x, y, torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64))
    assert got.tolist() == pytest.approx([0.0, -2.0, 3.0])


def test_gelu_identity_rule():
    x = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64, requires_grad=True)
    with RelevanceRules("attnlrp"):
        y = F.gelu(x)
    relevance = torch.tensor([0.3, -0.2, 1.1], dtype=torch.float64)
    assert relevance_in(x, y, relevance).tolist() == pytest.approx(relevance.tolist())


def test_linear_epsilon_rule_by_hand():
    # z = 1·1 + 2·1 = 3 with R_z = 3: the ε-rule gives xᵢwᵢ R / (z + ε) = (1, 2)·3/(3 + ε).
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    weight = torch.ones(1, 2, dtype=torch.float64)
    with RelevanceRules("attnlrp", epsilon=0.5):
        z = F.linear(x, weight)
    got = relevance_in(x, z, torch.tensor([[3.0]], dtype=torch.float64))
    assert got.flatten().tolist() == pytest.approx([3 / 3.5, 6 / 3.5])


def test_alpha1_beta0_linear_by_hand():
    # x = (1, −1), w = (2, −1): contributions xw = (2, 1), both positive; α1β0 splits R = 1 as (2/3, 1/3).
    # With w = (2, 1) the second contribution is −1 and takes nothing: (1, 0).
    x = torch.tensor([[1.0, -1.0]], dtype=torch.float64, requires_grad=True)
    for weight, expected in (([[2.0, -1.0]], [2 / 3, 1 / 3]), ([[2.0, 1.0]], [1.0, 0.0])):
        with RelevanceRules("chefer"):
            z = F.linear(x, torch.tensor(weight, dtype=torch.float64), torch.tensor([5.0], dtype=torch.float64))
        (got,) = torch.autograd.grad(z, x, torch.ones_like(z))
        assert got.flatten().tolist() == pytest.approx(expected)


def test_residual_add_rule_by_hand():
    # a = (1, −3), b = (1, 4), R = (2, 1): z-rule R_a = (1, −3), R_b = (1, 4) with sums −2 and 5; rescaled so the
    # shares are 2/7 and 5/7 of ΣR = 3: R_a · (6/7)/(−2) = (−3/7, 9/7), R_b · (15/7)/5 = (3/7, 12/7).
    a = torch.tensor([[1.0, -3.0]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([[1.0, 4.0]], dtype=torch.float64, requires_grad=True)
    with RelevanceRules("chefer"):
        z = a + b
    got_a, got_b = torch.autograd.grad(z, [a, b], torch.tensor([[2.0, 1.0]], dtype=torch.float64))
    assert got_a.flatten().tolist() == pytest.approx([-3 / 7, 9 / 7])
    assert got_b.flatten().tolist() == pytest.approx([3 / 7, 12 / 7])


# ---- whole models --------------------------------------------------------------------------------------


def without_biases(model: torch.nn.Module) -> torch.nn.Module:
    """A float64 copy with every bias (linear, convolution, LayerNorm β) set to zero."""
    model = copy.deepcopy(model).double()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()
    return model


def small_timm() -> torch.nn.Module:
    source = perturb(VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=5))
    cfg = config_from_timm(source)
    return load_converted(cfg, convert_timm(source.state_dict(), cfg))


def small_timm_registers() -> torch.nn.Module:
    # no class token, one register, average pooling with fc_norm, layer scale
    source = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=5, class_token=False,
        reg_tokens=1, global_pool="avg", fc_norm=True, init_values=0.5,
    )  # fmt: skip
    source = perturb(source)
    cfg = config_from_timm(source)
    return load_converted(cfg, convert_timm(source.state_dict(), cfg))


def small_deit() -> torch.nn.Module:
    source = perturb(timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=32, depth=2))
    cfg = config_from_timm(source)
    return load_converted(cfg, convert_timm(source.state_dict(), cfg))


def small_siglip() -> torch.nn.Module:
    # SigLIP's readout: no class token, an attention pool whose query is a parameter (a constant input)
    source = timm.create_model(
        "vit_base_patch16_siglip_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32, depth=2,
        num_heads=4, num_classes=5,
    )  # fmt: skip
    source = perturb(source)
    cfg = config_from_timm(source)
    return load_converted(cfg, convert_timm(source.state_dict(), cfg))


def small_torchvision() -> torch.nn.Module:
    source = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64, num_classes=5
    )
    source = perturb(source)
    cfg = config_from_torchvision(source)
    return load_converted(cfg, convert_torchvision(source.state_dict(), cfg))


MODELS = {
    "bundled": lambda: load_model("bundled").model,
    "timm": small_timm,
    "timm_registers_avg_pool": small_timm_registers,
    "deit_distilled": small_deit,
    "torchvision": small_torchvision,
    "siglip_attention_pool": small_siglip,
}


def pixels_for(model) -> torch.Tensor:
    return torch.randn(2, 3, *model.cfg.image_size, dtype=next(model.parameters()).dtype)


@pytest.mark.parametrize("name", list(MODELS))
def test_conservation_float64_without_biases(name):
    """Input relevance (patches + prefix + positions) is the target logit: exactly for CP-LRP; for AttnLRP
    once the softmax rule's absorbed relevance is added back (its bias terms are part of the rule)."""
    model = without_biases(MODELS[name]())
    pixels = pixels_for(model)
    for variant in ("cp_lrp", "attnlrp"):
        for relevance in lrp_batch(model, pixels, "top", variant, epsilon=0.0):
            assert relevance.total + relevance.softmax_absorbed == pytest.approx(relevance.value, rel=1e-9, abs=1e-9)
            assert abs(relevance.bias_absorbed) < 1e-9
            if variant == "cp_lrp":
                assert relevance.softmax_absorbed == 0.0
                assert relevance.total == pytest.approx(relevance.value, rel=1e-9)


def test_input_relevance_adds_up_per_part():
    model = without_biases(MODELS["bundled"]())
    (relevance,) = lrp_batch(model, pixels_for(model)[:1], 3, "cp_lrp", epsilon=0.0)
    parts = relevance.patches.sum(dtype=np.float64) + relevance.prefix.sum() + relevance.positions.sum()
    assert parts == pytest.approx(relevance.total, rel=1e-5)
    # without a convolution bias the pixels carry exactly the patch tokens' relevance
    assert relevance.pixels.sum(dtype=np.float64) == pytest.approx(relevance.patches.sum(dtype=np.float64), rel=1e-5)
    assert relevance.patches.shape == (12, 12) and relevance.pixels.shape == (96, 96)
    assert relevance.target == 3 and relevance.variant == "cp_lrp"


def test_embedding_parts_match_the_model():
    for name in ("bundled", "timm_registers_avg_pool", "deit_distilled"):
        model = MODELS[name]()
        pixels = pixels_for(model)
        with torch.no_grad():
            _, _, _, tokens = embedding_parts(model, pixels)
            assert torch.allclose(model.norm_pre(tokens), model.embed(pixels), atol=1e-6)


def test_rules_leave_the_forward_pass_unchanged():
    model = MODELS["timm_registers_avg_pool"]()
    pixels = pixels_for(model)
    with torch.no_grad():
        expected = model(pixels)
    for rules in ("attnlrp", "cp_lrp", "chefer", "gradient"):
        with torch.enable_grad(), RelevanceRules(rules) as mode:
            got = model(pixels.requires_grad_())
        assert torch.allclose(got, expected, atol=1e-5), rules
        assert len(mode.patterns) == model.cfg.depth


def test_relevance_is_class_specific_and_targets_are_callables():
    model = MODELS["bundled"]()
    pixels = pixels_for(model)[:1]
    (first,) = lrp_batch(model, pixels, 0)
    (same,) = lrp_batch(model, pixels, ClassLogit(0))
    (other,) = lrp_batch(model, pixels, 1)
    assert np.allclose(first.patches, same.patches) and first.target == same.target == 0
    assert not np.allclose(first.patches, other.patches)
    assert isinstance(first, Relevance) and first.value == pytest.approx(float(model(pixels)[0, 0].detach()), rel=1e-5)


def test_biases_absorb_a_share_that_is_reported():
    model = MODELS["bundled"]()
    (relevance,) = lrp_batch(model.double(), pixels_for(model)[:1].double(), "top", "attnlrp")
    assert relevance.total + relevance.softmax_absorbed + relevance.bias_absorbed == pytest.approx(relevance.value)


def test_other_threads_see_plain_torch():
    """The rules live in a thread-local mode: a thread running the shared model meanwhile gets plain results."""
    model = MODELS["bundled"]()
    pixels = pixels_for(model)[:1]
    with torch.no_grad():
        expected = model(pixels)
    inside, results = threading.Event(), []

    def other() -> None:
        inside.wait()
        with torch.enable_grad():
            x = pixels.clone().requires_grad_()
            out = model(x)
            results.append((out.detach(), torch.autograd.grad(out[0, 0], x)[0]))

    thread = threading.Thread(target=other)
    thread.start()
    with RelevanceRules("attnlrp"):
        inside.set()
        thread.join()
    x = pixels.clone().requires_grad_()
    plain = torch.autograd.grad(model(x)[0, 0], x)[0]
    assert torch.allclose(results[0][0], expected, atol=1e-6)
    assert torch.allclose(results[0][1], plain, atol=1e-6)  # plain autograd, no rule in the other thread


def test_no_head_needs_a_callable_target():
    model = load_model("timm:vit_small_patch14_reg4_dinov2", random_weights=True).model
    with pytest.raises(VitCoreError) as error:
        lrp_batch(model, torch.zeros(1, 3, 28, 28), "top")
    assert error.value.key == "no_head"


def test_lrp_bench_and_the_explorer_bench_run():
    from vit_core.bench import class_agnostic, explain_all
    from vit_core.capture import capture
    from vit_core.lrp_bench import benchmark_methods, flow_seconds

    loaded = load_model("bundled")
    report = benchmark_methods(loaded, repeats=1)
    assert set(report["ratio_to_forward"]) == {"attnlrp", "cp_lrp", "legrad", "transformer_attribution"}
    assert flow_seconds(2, 10) >= 0
    pixels = torch.randn(1, 3, 96, 96)
    explain_all(loaded.model, pixels)  # the explorer's bench leaves the model-run and opt-in methods to lrp_bench
    class_agnostic(capture(loaded.model, pixels[0]))
