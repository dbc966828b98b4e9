"""LeGrad against a straightforward reimplementation (one forward and one backward per layer), and attention flow
against a plain networkx max-flow built as in Abnar & Zuidema's code."""

import networkx as nx
import numpy as np
import pytest
import torch

from tests.reference import perturb, synthetic_capture
from vit_core.capture import capture
from vit_core.config import ViTConfig
from vit_core.errors import VitCoreError
from vit_core.flow import attention_flow, max_tokens
from vit_core.legrad import default_start_layer, legrad_batch
from vit_core.model import ViT
from vit_core.zoo import load_model


def explicit_block(block, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Block.forward written out, returning the attention weights `[B, H, N, N]` with their graph."""
    attn = block.attn
    batch, tokens, dim = x.shape
    qkv = attn.qkv(block.norm1(x)).reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    weights = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(-1)
    mixed = attn.proj((weights @ v).transpose(1, 2).reshape(batch, tokens, dim))
    x = x + block.ls1(mixed)
    return x + block.ls2(block.mlp(block.norm2(x))), weights


def straightforward_legrad(model, pixels: torch.Tensor, target: int, start: int) -> np.ndarray:
    total = 0
    for layer in range(start, model.cfg.depth):
        x, weights = model.embed(pixels), None
        for block in model.blocks[: layer + 1]:
            x, weights = explicit_block(block, x)
        (grad,) = torch.autograd.grad(model.head_logits(x)[:, target].sum(), weights)
        total = total + grad.clamp(min=0).mean(dim=1).mean(dim=1)  # heads, then queries: [B, N]
    return total[:, model.cfg.num_prefix_tokens :].detach().numpy()


@pytest.mark.parametrize("avg_pool", [False, True])
def test_legrad_matches_a_straightforward_reimplementation(avg_pool):
    cfg = ViTConfig(
        image_size=(16, 16), patch_size=4, embed_dim=32, depth=3, num_heads=4, mlp_dim=64, num_classes=5,
        class_token=not avg_pool, num_register_tokens=1 if avg_pool else 0,
        global_pool="avg" if avg_pool else "token", final_norm=not avg_pool, fc_norm=avg_pool,
    )  # fmt: skip
    model = perturb(ViT(cfg), std=0.1).double()
    pixels = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    for start in (0, 2):
        got = legrad_batch(model, pixels, 3, start_layer=start)
        assert got.shape == (2, 4, 4)
        assert np.allclose(got.reshape(2, -1), straightforward_legrad(model, pixels, 3, start), atol=1e-6)
    assert np.allclose(legrad_batch(model, pixels, 3), legrad_batch(model, pixels, 3, start_layer=1))
    assert default_start_layer(12) == 10  # the reference code's layer_index=-2


def test_legrad_resolves_top_on_the_final_output():
    loaded = load_model("bundled")
    pixels = torch.randn(1, 3, 96, 96)
    top = int(loaded.model(pixels).argmax())
    assert np.allclose(legrad_batch(loaded.model, pixels, "top"), legrad_batch(loaded.model, pixels, top))


# ---- attention flow -----------------------------------------------------------------------------------


def plain_flow(attentions: np.ndarray) -> np.ndarray:
    """Abnar & Zuidema's construction: an adjacency matrix of the (A + I)-renormalised head means, networkx's
    default max-flow from the top class token to every input token, divided by the sum."""
    layers, _, tokens, _ = attentions.shape
    mixed = attentions.mean(axis=1) + np.eye(tokens)
    mixed = mixed / mixed.sum(axis=-1, keepdims=True)
    adjacency = np.zeros(((layers + 1) * tokens, (layers + 1) * tokens))
    for layer in range(1, layers + 1):
        for i in range(tokens):
            for j in range(tokens):
                adjacency[layer * tokens + i, (layer - 1) * tokens + j] = mixed[layer - 1, i, j]
    graph = nx.from_numpy_array(adjacency, create_using=nx.DiGraph(), edge_attr="capacity")
    flows = np.array([nx.maximum_flow_value(graph, layers * tokens, j) for j in range(tokens)])
    return flows / flows.sum()


def tiny_capture():
    cfg = ViTConfig(image_size=(12, 12), patch_size=4, embed_dim=16, depth=3, num_heads=2, mlp_dim=32, num_classes=4)
    model = perturb(ViT(cfg), std=0.3)
    return capture(model, torch.randn(3, 12, 12))


def test_flow_matches_plain_networkx_on_a_tiny_model():
    result = tiny_capture()
    expected = plain_flow(result.attentions.astype(np.float64))
    got = attention_flow(result)
    assert got.shape == (3, 3)
    assert got.ravel() == pytest.approx(expected[1:], abs=1e-6)  # float32 map


def test_flow_by_hand_two_tokens_one_layer():
    # A = [[0, 1], [1, 0]] -> (A + I)/2 = [[0.5, 0.5], [0.5, 0.5]]: from the top class token 0.5 into each input.
    attentions = np.array([[[[0.0, 1.0], [1.0, 0.0]]]])
    got = attention_flow(synthetic_capture(attentions, grid=(1, 1)))
    assert got.ravel().tolist() == pytest.approx([0.5])  # 0.5 / (0.5 + 0.5)


def test_flow_without_class_token_starts_from_every_token():
    attentions = np.array([[[[1.0, 0.0], [0.0, 1.0]]]])  # each token keeps to itself
    got = attention_flow(synthetic_capture(attentions, grid=(1, 2), prefix=0, has_class_token=False))
    assert got.ravel().tolist() == pytest.approx([0.5, 0.5])


def test_flow_refuses_a_model_too_large():
    result = capture(load_model("bundled").model, torch.randn(3, 96, 96))
    with pytest.raises(VitCoreError) as error:
        attention_flow(result)
    assert error.value.key == "flow_too_large" and error.value.params["tokens"] == 145
    assert "145 tokens" in str(error.value) and "\n" not in str(error.value)
    assert max_tokens(6) == 69 and max_tokens(12) == 55
