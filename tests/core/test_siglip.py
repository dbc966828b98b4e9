"""SigLIP end to end on random weights: loading (open_clip, HF) with tiny tokenizers built offline, zero-shot
probabilities against each library's own sigmoid of scale · cos + bias, gradients of an image–text similarity
against each library's autograd, and the attention-pool readout in every map: its weights as the raw attention,
the query row of rollout, gradient rollout, Chefer and Transformer Attribution (checked against loops), the
statistics path, the logit lens, and the LRP family."""

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import SiglipModel

from tests.clip_models import SIGLIP_CONTEXT, register_tiny_openclip_siglip, tiny_hf_siglip, tiny_siglip_tokenizer
from tests.reference import perturb
from vit_core import VitCoreError, capture, capture_batch, capture_stats, explain, load_model
from vit_core.explain import METHODS, ExplainOptions, explain_batch
from vit_core.maps import pool_attention_map
from vit_core.zeroshot import PromptGradients, zero_shot

TOL = 1e-4
LABELS = ("a dog", "a cat", "a red bus", "a tree")


@pytest.fixture(scope="module")
def openclip_siglip(tmp_path_factory):
    """The tiny open_clip SigLIP (timm trunk with an attention pool) with perturbed random weights, loaded from a
    weights file; its tokenizer is a local folder, as the hub's `timm/ViT-B-16-SigLIP` would be once cached."""
    arch = register_tiny_openclip_siglip(tmp_path_factory.mktemp("openclip_siglip"))
    source = perturb(open_clip.create_model(arch, pretrained=None).eval(), std=0.02)
    with torch.no_grad():
        source.logit_scale.fill_(2.0)  # a scale and bias whose sigmoid is not saturated on random embeddings
        source.logit_bias.fill_(-0.5)
    path = tmp_path_factory.mktemp("weights") / "tiny_siglip.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    return load_model(f"openclip:{arch}", weights=path), source, arch


@pytest.fixture(scope="module")
def hf_siglip(tmp_path_factory):
    folder = tiny_hf_siglip(tmp_path_factory.mktemp("hf_siglip"))
    return load_model(f"hf:{folder}"), SiglipModel.from_pretrained(str(folder)).eval(), folder


def pixels(seed: int = 0, size: int = 64) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---- loading and zero-shot against the libraries ----------------------------------------------------------
def test_openclip_siglip_zero_shot_is_open_clips_sigmoid_of_scale_and_bias(openclip_siglip):
    loaded, source, arch = openclip_siglip
    assert loaded.cfg.global_pool == "map" and loaded.cfg.image_text and loaded.text is not None
    text = loaded.text_encoder()
    assert text.activation == "sigmoid" and text.logit_bias == pytest.approx(-0.5)
    assert text.logit_scale == pytest.approx(float(np.exp(2.0)), rel=1e-6)
    head = text.head(", ".join(LABELS), templates=("a photo of {}.",))
    x = pixels()
    result = capture(loaded.model, x[0], zero_shot=head)
    tokenizer = open_clip.get_tokenizer(arch)  # the local Hugging Face tokenizer the config names
    with torch.no_grad():
        image = source.encode_image(x, normalize=True)
        labels = source.encode_text(tokenizer([f"a photo of {label}." for label in LABELS]), normalize=True)
        logits = source.logit_scale.exp() * image @ labels.T + source.logit_bias  # open_clip's SigLIP logits
    assert np.abs(result.logits - logits[0].numpy()).max() <= TOL
    assert np.abs(result.probs - torch.sigmoid(logits)[0].numpy()).max() <= 1e-5
    assert not np.isclose(result.probs.sum(), 1.0)  # each label on its own, not a softmax
    assert result.layer_logits.shape == (loaded.cfg.depth, len(LABELS))  # the logit lens through the pool
    assert np.abs(result.layer_logits[-1] - result.logits).max() <= 1e-5


def test_openclip_siglip_weights_file_loads_the_text_tower_and_the_reference(openclip_siglip):
    loaded, source, arch = openclip_siglip
    with torch.no_grad():
        expected = F.normalize(source.encode_text(open_clip.get_tokenizer(arch)(["a red bus"])), dim=-1)[0]
        assert torch.allclose(loaded.text.encode(["a red bus"])[0], expected, atol=1e-5)
        reference = loaded.make_reference()  # open_clip's model rebuilt with our weights
        assert torch.allclose(reference.encode_image(pixels()), source.encode_image(pixels()), atol=1e-5)
    # the HF tokenizer's own count (SigLIP's ends with </s>); longer than the context is refused
    assert loaded.text.check_prompt("a red bus") == "a red bus"
    with pytest.raises(VitCoreError) as error:
        loaded.text.target("a drawing of a dog on grass under the bright yellow moon at night in a green field")
    assert error.value.key == "prompt_too_long" and error.value.params["limit"] == SIGLIP_CONTEXT


def test_hf_siglip_zero_shot_is_logits_per_image(hf_siglip):
    loaded, reference, folder = hf_siglip
    text = loaded.text_encoder()
    assert text.activation == "sigmoid" and loaded.cfg.image_embed_dim == 32 and not loaded.cfg.image_proj
    assert text.logit_bias == pytest.approx(float(reference.logit_bias.detach()))
    head = text.head(list(LABELS), templates=("{}",))
    x = pixels(1)
    result = capture(loaded.model, x[0], zero_shot=head)
    tokens = tiny_siglip_tokenizer(folder / "again")(list(LABELS), padding="max_length", max_length=SIGLIP_CONTEXT)
    with torch.no_grad():
        out = reference(input_ids=torch.tensor(tokens["input_ids"]), pixel_values=x)  # HF's way: no mask
    assert np.abs(result.logits - out.logits_per_image[0].numpy()).max() <= TOL
    assert np.abs(result.probs - torch.sigmoid(out.logits_per_image)[0].numpy()).max() <= 1e-5


def test_a_siglip_vision_model_is_image_only(tmp_path, hf_siglip):
    from transformers import SiglipVisionModel

    _, reference, _ = hf_siglip
    SiglipVisionModel(reference.config.vision_config).save_pretrained(str(tmp_path))
    loaded = load_model(f"hf:{tmp_path}")
    assert loaded.text is None and loaded.cfg.image_text and loaded.cfg.global_pool == "map"
    with pytest.raises(VitCoreError, match="no text tower"):
        loaded.text_encoder()


def test_timm_siglip_tower_is_image_only():
    loaded = load_model("timm:vit_base_patch16_siglip_224", random_weights=True)
    assert loaded.text is None and loaded.cfg.image_embed_dim == 768 and not loaded.cfg.image_proj
    assert loaded.data_config.mean == (0.5, 0.5, 0.5)  # timm's SigLIP preprocessing


# ---- gradients of the image–text similarity against each library's autograd ------------------------------
def test_similarity_gradient_wrt_pixels_equals_open_clips_autograd(openclip_siglip):
    loaded, source, arch = openclip_siglip
    target = loaded.text.target("a red bus")
    x = pixels(3)
    ours_x = x.clone().requires_grad_(True)
    (ours,) = torch.autograd.grad(target(loaded.model(ours_x)).sum(), ours_x)
    theirs_x = x.clone().requires_grad_(True)
    text = source.encode_text(open_clip.get_tokenizer(arch)(["a red bus"]), normalize=True).detach()
    image = source.encode_image(theirs_x, normalize=True)
    logit = source.logit_scale.exp().detach() * image @ text.T + source.logit_bias.detach()
    (theirs,) = torch.autograd.grad(logit.sum(), theirs_x)
    assert float(theirs.abs().max()) > 1e-3  # a real gradient, not a vanishing one
    assert float((ours - theirs).abs().max()) <= TOL


def test_similarity_gradient_wrt_pixels_equals_hf_autograd(hf_siglip):
    loaded, reference, folder = hf_siglip
    target = loaded.text.target("a red bus")
    x = pixels(4)
    ours_x = x.clone().requires_grad_(True)
    (ours,) = torch.autograd.grad(target(loaded.model(ours_x)).sum(), ours_x)
    theirs_x = x.clone().requires_grad_(True)
    tokens = tiny_siglip_tokenizer(folder / "again")(["a red bus"], padding="max_length", max_length=SIGLIP_CONTEXT)
    out = reference(input_ids=torch.tensor(tokens["input_ids"]), pixel_values=theirs_x)
    (theirs,) = torch.autograd.grad(out.logits_per_image.sum(), theirs_x)
    assert float(theirs.abs().max()) > 1e-3
    assert float((ours - theirs).abs().max()) <= TOL


def test_prompt_gradients_from_a_kept_graph_equal_a_fresh_capture(openclip_siglip):
    loaded, _, _ = openclip_siglip
    x = pixels(5)
    base = capture(loaded.model, x[0])
    assert base.pool_attention is not None and base.pool_attention_grads is None
    kept = PromptGradients(loaded.model, x[0])
    for prompt in ("a red bus", "a dog on grass"):
        target = loaded.text.target(prompt)
        fresh = capture(loaded.model, x[0], target=target)
        again = kept.capture_for(base, target)
        assert np.abs(again.pool_attention_grads - fresh.pool_attention_grads).max() <= 1e-6
        assert np.abs(again.attention_grads - fresh.attention_grads).max() <= 1e-6
        assert np.allclose(explain(again, "chefer"), explain(fresh, "chefer"), atol=1e-6)


def test_zero_shot_from_an_existing_capture_reads_out_through_the_pool(openclip_siglip):
    loaded, _, _ = openclip_siglip
    head = loaded.text.head(", ".join(LABELS))
    x = pixels(2)
    fast = zero_shot(loaded.model, capture(loaded.model, x[0]), head)
    full = capture(loaded.model, x[0], zero_shot=head)
    assert np.abs(fast.logits.numpy() - full.logits).max() <= 1e-5
    assert np.abs(fast.layer_logits.numpy() - full.layer_logits).max() <= 1e-5


# ---- the attention-pool readout in the maps ----------------------------------------------------------------
def test_the_pool_attention_is_a_capture_point_and_the_readouts_raw_attention(openclip_siglip):
    loaded, _, _ = openclip_siglip
    model = loaded.model
    assert "attn_pool.hook_pattern" in model.hook_names()
    seen = []
    with model.hooks({"attn_pool.hook_pattern": lambda t, _n: seen.append(t.shape)}), torch.no_grad():
        model(pixels())
    assert seen == [(1, model.cfg.num_heads, 1, 16)]  # [batch, head, query, key]
    result = capture(model, pixels()[0])
    assert result.pool_attention.shape == (4, 16) and np.allclose(result.pool_attention.sum(-1), 1, atol=1e-5)
    expected = result.pool_attention.mean(0).reshape(4, 4)
    assert np.allclose(pool_attention_map(result), expected, atol=1e-7)
    assert np.allclose(explain(result, "attention"), expected, atol=1e-7)  # no layer: the readout's attention
    last_layer_mean_row = result.attentions[-1].mean(0).mean(0).reshape(4, 4)
    assert np.allclose(explain(result, "attention", ExplainOptions(layer=1)), last_layer_mean_row, atol=1e-6)
    assert np.allclose(pool_attention_map(result, head=2), result.pool_attention[2].reshape(4, 4))


def hand_rollout(attentions: np.ndarray, query: np.ndarray) -> np.ndarray:
    """query · Π_l ½(A_l + I) (rows renormalised), the last layer on the left, by loops in float64."""
    row = query.astype(np.float64)
    for attention in attentions[::-1]:
        mixed = attention.astype(np.float64).mean(0) + np.eye(attention.shape[-1])
        row = row @ (mixed / mixed.sum(-1, keepdims=True))
    return row


def test_rollout_chefer_and_gradient_rollout_start_from_the_pools_row(openclip_siglip):
    loaded, _, _ = openclip_siglip
    result = capture(loaded.model, pixels(6)[0], target=loaded.text.target("a red bus"))
    pool, pool_grads = result.pool_attention.astype(np.float64), result.pool_attention_grads.astype(np.float64)
    assert np.abs(pool_grads).max() > 0
    # rollout: the pool's head-mean weights as the query row
    expected = hand_rollout(result.attentions, pool.mean(0))
    assert np.allclose(explain(result, "rollout").ravel(), expected, atol=1e-6)
    # Chefer et al.: the pool's Ā = mean_h (∇P ⊙ P)⁺ as the row, then r ← r + r · Ā_l down the layers
    row = np.clip(pool_grads * pool, 0, None).mean(0)
    for attention, grad in zip(result.attentions[::-1], result.attention_grads[::-1], strict=True):
        row = row + row @ np.clip(grad.astype(np.float64) * attention, 0, None).mean(0)
    assert np.allclose(explain(result, "chefer").ravel(), row, rtol=1e-5, atol=1e-9)
    # gradient rollout: the pool's (mean_h ∇P ⊙ P)⁺, then gradient-weighted ½(Ā + I) rows renormalised
    row = np.clip((pool_grads * pool).mean(0), 0, None)
    for attention, grad in zip(result.attentions[::-1], result.attention_grads[::-1], strict=True):
        mixed = np.clip((grad.astype(np.float64) * attention).mean(0), 0, None) + np.eye(16)
        row = row @ (mixed / mixed.sum(-1, keepdims=True))
    assert np.allclose(explain(result, "grad_rollout").ravel(), row, rtol=1e-5, atol=1e-9)


def test_transformer_attribution_starts_from_the_pools_relevance(openclip_siglip):
    from vit_core.lrp import attention_relevance

    loaded, _, _ = openclip_siglip
    x, target = pixels(7), loaded.text.target("a tree")
    found = attention_relevance(loaded.model, x, target)
    assert found.relevances.shape == (2, 1, 4, 16, 16) and found.pool_relevances.shape == (1, 4, 16)
    row = (found.pool_gradients[0] * found.pool_relevances[0]).clamp(min=0).mean(0).double()
    for relevance, grad in zip(found.relevances.flip(0), found.gradients.flip(0), strict=True):
        row = row + row @ (grad[0] * relevance[0]).clamp(min=0).mean(0).double()
    got = explain_batch(loaded.model, x, "transformer_attribution", target)[0]
    assert np.allclose(got.ravel(), row.numpy(), rtol=1e-5, atol=1e-9)


def test_every_method_maps_a_siglip_prompt(openclip_siglip):
    loaded, _, _ = openclip_siglip
    target = loaded.text.target("a red bus")
    for method in METHODS:
        grid = explain_batch(loaded.model, pixels(8), method, target)
        assert grid.shape == (1, 4, 4) and np.isfinite(grid).all(), method
        assert grid.std() > 0, method


def test_statistics_path_reads_the_pool_as_the_capture_does(openclip_siglip):
    loaded, _, _ = openclip_siglip
    batch = torch.cat([pixels(9), pixels(10)])
    stats = capture_stats(loaded.model, batch).to_numpy()
    for b, image in enumerate(capture_batch(loaded.model, batch)):
        assert np.allclose(stats.pool_rows[b], image.pool_attention, atol=1e-6)
        assert np.allclose(stats.rollout_maps()[b], explain(image, "rollout"), atol=1e-5)
        assert np.allclose(stats.readout_rows()[b].reshape(4, 4), explain(image, "attention"), atol=1e-6)


def test_pool_attention_of_a_model_without_a_pool_is_one_sentence(openclip_siglip):
    loaded = load_model("timm:vit_tiny_patch16_224", random_weights=True)
    result = capture(loaded.model, torch.randn(3, 224, 224))
    assert result.pool_attention is None
    with pytest.raises(VitCoreError) as error:
        pool_attention_map(result)
    assert error.value.key == "no_attention_pool"
    loaded, _, _ = openclip_siglip
    stripped = capture_batch(loaded.model, pixels(), target=loaded.text.target("a dog"), keep_on_device=True)
    (partial,) = stripped.to_numpy(["attentions", "attention_grads", "token_grads"])
    for method in ("chefer", "rollout", "attention"):  # not read out by the mean row instead: refused
        with pytest.raises(VitCoreError) as error:
            explain(partial, method)
        assert error.value.key == "capture_without_pool", method


def test_openclip_siglip_without_its_tokenizer_offline_is_image_only(tmp_path):
    """open_clip's SigLIP names its tokenizer by hub repository; offline and uncached, the model still loads
    (image tower, maps), with no text tower instead of a failure."""
    import json

    import open_clip

    register_tiny_openclip_siglip(tmp_path)
    config = json.loads((tmp_path / "Tiny-SigLIP-test.json").read_text())
    config["text_cfg"]["hf_tokenizer_name"] = "nobody/no-such-siglip-tokenizer"
    path = tmp_path / "Tiny-SigLIP-hub-test.json"
    path.write_text(json.dumps(config))
    open_clip.add_model_config(path)
    loaded = load_model("openclip:Tiny-SigLIP-hub-test", random_weights=True)
    assert loaded.text is None and loaded.cfg.global_pool == "map"


# ---- the command line ---------------------------------------------------------------------------------------
def test_cli_zeroshot_run_and_explain_with_a_siglip_model(capsys, tmp_path, hf_siglip):
    import json

    from PIL import Image

    from vit_core.cli import main
    from vit_core.images import load_image

    loaded, _, folder = hf_siglip
    image = tmp_path / "scene.png"
    Image.fromarray((np.random.default_rng(0).random((80, 96, 3)) * 255).astype(np.uint8)).save(image)
    model = ["--model", f"hf:{folder}"]
    assert main(["zeroshot", str(image), *model, "--labels", "a dog,a cat,a red bus", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["activation"] == "sigmoid"
    head = loaded.text.head("a dog,a cat,a red bus")
    probs = capture(loaded.model, loaded.preprocess(load_image(str(image))), zero_shot=head).probs
    by_label = {row["label"]: row["probability"] for row in report["labels"]}
    assert by_label == pytest.approx(dict(zip(head.labels, probs, strict=True)), abs=1e-6)
    out = tmp_path / "run.npz"
    assert main(["run", str(image), *model, "--labels", "a dog,a cat", "--out", str(out)]) == 0
    saved = np.load(out)
    assert saved["pool_attention"].shape == (4, 16) and saved["image_embedding"].shape == (32,)
    assert (
        main(
            [
                "explain",
                str(image),
                *model,
                "--method",
                "chefer",
                "--text",
                "a red bus",
                "--out",
                str(tmp_path / "m.npy"),
            ]
        )
        == 0
    )
    assert np.load(tmp_path / "m.npy").shape == (4, 4)


def test_the_logit_lens_of_siglip_labels_is_a_sigmoid_per_label(openclip_siglip):
    from vit_core.analysis import layer_predictions

    loaded, _, _ = openclip_siglip
    result = capture(loaded.model, pixels(11)[0], zero_shot=loaded.text.head(", ".join(LABELS)))
    assert result.activation == "sigmoid"
    lens = layer_predictions(result, k=2)
    assert np.allclose(lens.probs[-1], result.probs, atol=1e-6)
    assert np.allclose(lens.probs, 1 / (1 + np.exp(-result.layer_logits.astype(np.float64))), atol=1e-6)
