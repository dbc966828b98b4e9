"""Image–text models end to end on random weights: loading (open_clip, HF CLIP), zero-shot probabilities against
each library's own computation, gradients of an image–text similarity against each library's own autograd,
prompt maps that follow the prompt, the text cache, and every bad input as one sentence."""

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPModel

from tests.clip_models import register_tiny_openclip, tiny_hf_clip, tiny_tokenizer
from tests.reference import perturb
from vit_core import ViT, ViTConfig, VitCoreError, capture, explain, load_model
from vit_core.text import MAX_LABELS, TextEncoder, TextSimilarity, imagenet_templates, parse_labels
from vit_core.zeroshot import PromptGradients, image_embeddings, zero_shot

TOL = 1e-4


@pytest.fixture(scope="module")
def openclip_loaded(tmp_path_factory):
    """The tiny open_clip architecture with perturbed random weights, loaded from a weights file."""
    arch = register_tiny_openclip(tmp_path_factory.mktemp("openclip"))
    source = perturb(open_clip.create_model(arch, pretrained=None).eval(), std=0.02)
    path = tmp_path_factory.mktemp("weights") / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    return load_model(f"openclip:{arch}", weights=path), source, arch


@pytest.fixture(scope="module")
def hf_loaded(tmp_path_factory):
    folder = tiny_hf_clip(tmp_path_factory.mktemp("hf_clip"))
    return load_model(f"hf:{folder}"), CLIPModel.from_pretrained(str(folder)).eval()


def pixels(seed: int = 0, size: int = 64) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


LABELS = ("a dog", "a cat", "a red bus", "a tree")


# ---- loading and zero-shot against the libraries ----------------------------------------------------------
def test_openclip_zero_shot_probabilities_equal_open_clips_own(openclip_loaded):
    loaded, source, arch = openclip_loaded
    assert loaded.cfg.act == "quick_gelu" and loaded.cfg.image_embed_dim == 24 and loaded.labels is None
    head = loaded.text_encoder().head(", ".join(LABELS), templates=("a photo of {}.",))
    x = pixels()
    result = capture(loaded.model, x[0], zero_shot=head)
    tokenizer = open_clip.get_tokenizer(arch)
    with torch.no_grad():
        image = source.encode_image(x, normalize=True)
        text = source.encode_text(tokenizer([f"a photo of {label}." for label in LABELS]), normalize=True)
        logits = source.logit_scale.exp() * image @ text.T  # open_clip's zero-shot logits
    assert np.abs(result.logits - logits[0].numpy()).max() <= TOL
    assert np.abs(result.probs - logits.softmax(-1)[0].numpy()).max() <= 1e-5
    # the logit lens of an image–text model: each block's class token through final norm + projection
    assert result.layer_logits.shape == (loaded.cfg.depth, len(LABELS))
    assert np.abs(result.layer_logits[-1] - result.logits).max() <= 1e-5


def test_openclip_weights_file_loads_the_text_tower_too(openclip_loaded):
    loaded, source, arch = openclip_loaded
    tokenizer = open_clip.get_tokenizer(arch)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(source.encode_text(tokenizer(["a red bus"])), dim=-1)[0]
    assert torch.allclose(loaded.text.encode(["a red bus"])[0], expected, atol=1e-5)
    assert loaded.text.logit_scale == pytest.approx(float(source.logit_scale.detach().exp()))
    reference = loaded.make_reference()  # open_clip's model rebuilt with our weights
    with torch.no_grad():
        assert torch.allclose(reference.encode_image(pixels()), source.encode_image(pixels()), atol=1e-5)


def test_hf_clip_zero_shot_probabilities_equal_logits_per_image(hf_loaded):
    loaded, reference = hf_loaded
    head = loaded.text_encoder().head(list(LABELS), templates=("{}",))
    x = pixels(1)
    result = capture(loaded.model, x[0], zero_shot=head)
    tokens = tiny_tokenizer()(list(LABELS), padding=True, return_tensors="pt")
    with torch.no_grad():
        out = reference(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], pixel_values=x)
    assert np.abs(result.logits - out.logits_per_image[0].numpy()).max() <= TOL
    assert np.abs(result.probs - out.logits_per_image.softmax(-1)[0].numpy()).max() <= 1e-5


def test_zero_shot_from_an_existing_capture_equals_the_capture_with_labels(openclip_loaded):
    loaded, _, _ = openclip_loaded
    head = loaded.text.head(", ".join(LABELS))
    x = pixels(2)
    plain = capture(loaded.model, x[0])
    assert plain.logits is None and plain.probs is None  # no labels, no logits
    with_labels = capture(loaded.model, x[0], zero_shot=head)
    fast = zero_shot(loaded.model, plain, head)
    assert np.abs(fast.logits.numpy() - with_labels.logits).max() <= 1e-5
    assert np.abs(fast.layer_logits.numpy() - with_labels.layer_logits).max() <= 1e-5
    assert fast.top(2)[0][0] == LABELS[int(with_labels.probs.argmax())]
    with torch.no_grad():
        assert torch.allclose(image_embeddings(loaded.model, plain), loaded.model(x)[0], atol=1e-5)


# ---- gradients of the image–text similarity against each library's autograd ------------------------------
def test_similarity_gradient_wrt_pixels_equals_open_clips_autograd(openclip_loaded):
    loaded, source, arch = openclip_loaded
    target = loaded.text.target("a red bus")
    x = pixels(3)
    ours_x = x.clone().requires_grad_(True)
    (ours,) = torch.autograd.grad(target(loaded.model(ours_x)).sum(), ours_x)
    theirs_x = x.clone().requires_grad_(True)
    text = source.encode_text(open_clip.get_tokenizer(arch)(["a red bus"]), normalize=True).detach()
    logit = source.logit_scale.exp().detach() * source.encode_image(theirs_x, normalize=True) @ text.T
    (theirs,) = torch.autograd.grad(logit.sum(), theirs_x)
    assert float(theirs.abs().max()) > 1e-2  # a real gradient, not a vanishing one
    assert float((ours - theirs).abs().max()) <= TOL


def test_similarity_gradient_wrt_pixels_equals_hf_autograd(hf_loaded):
    loaded, reference = hf_loaded
    target = loaded.text.target("a red bus")
    x = pixels(4)
    ours_x = x.clone().requires_grad_(True)
    (ours,) = torch.autograd.grad(target(loaded.model(ours_x)).sum(), ours_x)
    theirs_x = x.clone().requires_grad_(True)
    tokens = tiny_tokenizer()(["a red bus"], return_tensors="pt")
    out = reference(input_ids=tokens["input_ids"], pixel_values=theirs_x)
    (theirs,) = torch.autograd.grad(out.logits_per_image.sum(), theirs_x)
    assert float(theirs.abs().max()) > 1e-3
    assert float((ours - theirs).abs().max()) <= TOL


def test_prompt_gradients_from_a_kept_graph_equal_a_fresh_capture(openclip_loaded):
    loaded, _, _ = openclip_loaded
    x = pixels(5)
    base = capture(loaded.model, x[0])
    kept = PromptGradients(loaded.model, x[0])
    for prompt in ("a red bus", "a dog on grass"):
        target = loaded.text.target(prompt)
        fresh = capture(loaded.model, x[0], target=target)
        again = kept.capture_for(base, target)
        assert again.target == fresh.target == ("text", prompt)
        assert np.abs(again.attention_grads - fresh.attention_grads).max() <= 1e-6
        assert np.abs(again.token_grads - fresh.token_grads).max() <= 1e-6
        assert np.allclose(explain(again, "chefer"), explain(fresh, "chefer"), atol=1e-6)


def test_a_label_target_is_that_labels_similarity(openclip_loaded):
    loaded, _, _ = openclip_loaded
    head = loaded.text.head(", ".join(LABELS), templates=("{}",))
    x = pixels(6)
    by_index = capture(loaded.model, x[0], zero_shot=head, target=2)
    by_phrase = capture(loaded.model, x[0], target=loaded.text.target(LABELS[2]))
    assert by_index.target == 2 and by_phrase.target == ("text", LABELS[2])
    assert np.abs(by_index.attention_grads - by_phrase.attention_grads).max() <= 1e-6
    top = capture(loaded.model, x[0], zero_shot=head, target="top")
    assert top.target == int(top.probs.argmax())


# ---- prompt maps that follow the prompt --------------------------------------------------------------------
RED, BLUE = (0, 0), (1, 1)  # the planted patches on a 2x2 grid


def planted_model() -> ViT:
    """One block whose image embedding reads patch colour: feature 0 = a patch's red, feature 1 = its blue.

    Queries and keys are zero (uniform attention), values and the output projection are the identity, the
    MLP is off, and the projection is the identity. So "red" (e0) is explained by the red patch and
    "blue" (e1) by the blue one: d sim_red / d A[cls, p] = v_p · g > 0 only for the red patch (hand-derived
    through the LayerNorms: g ∝ [1, -1, 0, 0]).
    """
    cfg = ViTConfig(
        image_size=(16, 16), patch_size=8, embed_dim=4, depth=1, num_heads=1, mlp_dim=4, num_classes=0,
        image_embed_dim=4, norm_eps=1e-6,
    )  # fmt: skip
    model = ViT(cfg)
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        conv = model.patch_embed.proj.weight  # [D, C, P, P]
        conv[0, 0] = 1 / 64  # feature 0: mean red
        conv[1, 2] = 1 / 64  # feature 1: mean blue
        block = model.blocks[0]
        for norm in (block.norm1, block.norm2, model.norm):
            norm.weight.fill_(1)
        block.attn.qkv.weight[8:12] = torch.eye(4)  # v = x; q = k = 0
        block.attn.proj.weight.copy_(torch.eye(4))
        model.proj.weight.copy_(torch.eye(4))
    return model.eval()


def planted_image() -> torch.Tensor:
    image = torch.zeros(3, 16, 16)
    image[0, :8, :8] = 1  # red top-left
    image[2, 8:, 8:] = 1  # blue bottom-right
    return image


def words_encoder() -> TextEncoder:
    """A stand-in text tower: "red" -> e0, "blue" -> e1 (the phrases align with the planted features)."""
    table = {"red": torch.tensor([1.0, 0, 0, 0]), "blue": torch.tensor([0, 1.0, 0, 0])}

    def embed(prompts):
        return torch.stack([sum(table[w] for w in p.split() if w in table) + 1e-3 for p in prompts])

    return TextEncoder(embed, lambda prompt: len(prompt.split()) + 2, context_length=8, logit_scale=10.0)


@pytest.mark.parametrize("method", ["chefer", "grad_rollout", "gradcam"])
def test_each_prompts_map_peaks_at_its_own_planted_patch(method):
    model, image, text = planted_model(), planted_image(), words_encoder()
    for prompt, patch in (("a red square", RED), ("a blue square", BLUE)):
        grid = explain(capture(model, image, target=text.target(prompt)), method)
        assert np.unravel_index(int(grid.argmax()), grid.shape) == patch, (method, prompt, grid)
    # the zero-shot ranking agrees: the image holds both, in equal amounts
    head = text.head("red, blue", templates=("{}",))
    assert np.allclose(capture(model, image, zero_shot=head).probs, [0.5, 0.5], atol=1e-4)


# ---- the text side ------------------------------------------------------------------------------------------
def test_label_embeddings_are_cached_per_prompt_and_the_cache_is_bounded(openclip_loaded):
    loaded, _, _ = openclip_loaded
    text = loaded.text
    text.encode(["a dog", "a cat"], templates=("{}",))
    before = text.encoded
    again = text.encode(["a cat", "a dog"], templates=("{}",))
    assert text.encoded == before  # both from the cache
    assert again.shape == (2, 24) and torch.allclose(again.norm(dim=-1), torch.ones(2))
    small = TextEncoder(lambda prompts: torch.randn(len(prompts), 3), lambda p: 3, 77, 100.0, cache_size=2)
    small.encode(["a", "b", "c"])
    assert len(small._cache) == 2 and small.encoded == 3
    small.encode(["a"])  # evicted, so encoded again
    assert small.encoded == 4


def test_templates_average_then_renormalise_as_clip_does(openclip_loaded):
    loaded, _, _ = openclip_loaded
    templates = ("a photo of a {}.", "a drawing of a {}.")
    row = loaded.text.encode(["dog"], templates)[0]
    single = loaded.text.encode(["a photo of a dog.", "a drawing of a dog."])
    assert torch.allclose(row, torch.nn.functional.normalize(single.mean(0), dim=0), atol=1e-6)
    assert len(imagenet_templates()) == 80 and imagenet_templates()[0] == "a bad photo of a {}."


def test_labels_are_parsed_and_bad_labels_are_one_sentence():
    assert parse_labels(" a dog,a cat ,  a red bus") == ("a dog", "a cat", "a red bus")
    cases = {
        "": "no_labels",
        "a dog,,a cat": "empty_label",
        "a dog, A Dog": "duplicate_label",
        ",".join(f"label {i}" for i in range(MAX_LABELS + 1)): "too_many_labels",
    }
    for text, key in cases.items():
        with pytest.raises(VitCoreError) as error:
            parse_labels(text)
        assert error.value.key == key
    assert "1001 labels are more than the limit of 1000" in str(
        pytest.raises(VitCoreError, parse_labels, ",".join(map(str, range(1001)))).value
    )
    assert len(parse_labels(",".join(map(str, range(MAX_LABELS))))) == MAX_LABELS


def test_bad_prompts_are_one_sentence(openclip_loaded):
    loaded, _, _ = openclip_loaded
    text = loaded.text
    for prompt in ("", "   "):
        with pytest.raises(VitCoreError, match="the prompt is empty"):
            text.target(prompt)
    with pytest.raises(VitCoreError) as error:
        text.target("a very long prompt about a red bus on a wet street at night under the bright yellow moon")
    assert error.value.key == "prompt_too_long" and error.value.params["limit"] == 16
    assert "at most 16 tokens" in str(error.value)
    with pytest.raises(VitCoreError) as error:
        text.head("a dog", templates=("a photo",))
    assert error.value.key == "template_without_slot"


def test_a_prompt_to_a_model_without_a_text_tower_is_one_sentence(openclip_loaded):
    timm_clip = load_model("timm:vit_base_patch16_clip_224.openai", random_weights=True)
    assert timm_clip.text is None and timm_clip.cfg.image_embed_dim == 512
    with pytest.raises(VitCoreError, match="no text tower"):
        timm_clip.text_encoder()
    classifier = ViT(ViTConfig(image_size=(32, 32), patch_size=16, embed_dim=16, depth=1, num_heads=2, mlp_dim=32))
    loaded, _, _ = openclip_loaded
    with pytest.raises(VitCoreError, match="no text tower"):
        capture(classifier.eval(), torch.randn(3, 32, 32), target=loaded.text.target("a dog"))
    with pytest.raises(VitCoreError, match="no text tower"):
        capture(classifier.eval(), torch.randn(3, 32, 32), zero_shot=loaded.text.head("a, b"))
    with pytest.raises(VitCoreError, match="labels or a prompt"):  # a label index with no labels
        capture(loaded.model, pixels()[0], target="top")


@pytest.mark.parametrize(
    "name,key",
    [
        ("openclip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "openclip_ambiguous_name"),
        ("openclip:local-dir:/tmp/x", "openclip_ambiguous_name"),
        ("openclip:ViT-Q-99", "unknown_openclip_model"),
        ("openclip:ViT-B-16/no-such-tag", "unknown_openclip_tag"),
        ("openclip:ViT-B-16", "openclip_tag_needed"),
        ("openclip:RN50/openai", "openclip_not_a_vit"),
    ],
)
def test_bad_openclip_names_are_one_sentence(name, key):
    with pytest.raises(VitCoreError) as error:
        load_model(name)
    assert error.value.key == key, str(error.value)
    if key == "openclip_ambiguous_name":
        assert "openclip:ARCH/TAG" in str(error.value) and "hf:REPO" in str(error.value)


def test_unknown_hf_model_type_is_one_sentence(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "swin"}')
    with pytest.raises(VitCoreError) as error:
        load_model(f"hf:{tmp_path}", random_weights=True)
    assert error.value.key == "hf_model_type_unsupported" and "clip" in str(error.value)


def test_text_similarity_is_a_target_with_a_hashable_key():
    from vit_core.targets import Target

    target = TextSimilarity("a dog", torch.tensor([1.0, 0.0]), scale=2.0, bias=-1.0)
    assert isinstance(target, Target) and hash(target.key) == hash(("text", "a dog"))
    assert torch.allclose(target(torch.tensor([[3.0, 0.0], [0.0, 5.0]])), torch.tensor([1.0, -1.0]))
