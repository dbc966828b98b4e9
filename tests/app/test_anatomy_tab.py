"""The Anatomy tab's handler on the bundled model: live numbers, the scaling toggle, the patch pick, Chinese."""

import gradio as gr
import numpy as np
import pytest
from gradio.media import get_image

from app import figures, service
from app.session import select_patch, view_of
from app.tabs import anatomy, heads
from tests.app.conftest import FakeSelect
from tests.app.helpers import STYLE, analyzed
from vit_core.anatomy import attention_row, block_internals

CHINESE = gr.Request(headers={"accept-language": "zh-CN,zh;q=0.9,en;q=0.8"})


def draw_anatomy(session, patch, layer, head, query, scaled, request=None):
    """The three handlers of the tab, outputs in the tab's order (steps 1-6)."""
    grid, pixels, vector, strip, facts, position, route, logits, head_facts = anatomy.draw_patch(
        session, patch, request=request
    )
    attention = anatomy.draw_attention(session, patch, layer, head, query, scaled, request=request)
    mlp = anatomy.draw_mlp(session, layer, request=request)
    return (grid, pixels, vector, strip, facts, position, *attention, *mlp, route, logits, head_facts)


@pytest.fixture
def session():
    return analyzed(get_image("lion.jpg"), "bundled")[0]


def test_every_step_is_drawn_from_the_models_tensors(session):
    analysis = service.CACHE.get(session["key"])
    result = analysis.capture
    out = draw_anatomy(session, (2, 3), 4, "1", "patch", True)
    (
        grid_view,
        pixels,
        vector,
        strip,
        facts,
        position,
        row,
        weights,
        table,
        curve,
        heads,
        mlp,
        mlp_facts,
        route,
        logits,
        head_facts,
    ) = out
    size = result.patch_size
    assert len(vector.data[0].y) == size * size * 3 and f"**{size * size * 3} values**" in facts
    assert len(strip.data[0].z[0]) == result.tokens.shape[-1] and f"**{result.tokens.shape[1]} tokens**" in facts
    # a signed strip reads as every signed map on the page: red above zero, blue below, white at zero
    scale = strip.data[0].colorscale
    assert strip.data[0].zmid == 0 and scale[0][1] == "rgb(5,48,97)" and scale[-1][1] == "rgb(103,0,31)"
    # the shown weights are the model's own attention row for the chosen patch's query, block 4, head 1
    query = result.num_prefix_tokens + 2 * result.grid[1] + 3
    assert np.allclose(row.data[1].y, result.attentions[4, 1, query], atol=1e-5)
    assert len(heads) == result.num_heads and all("px" in caption for _, caption in heads)
    count = 4 * result.tokens.shape[-1] * result.tokens.shape[1]  # mlp_dim = 4 D, for every token
    assert mlp_facts.startswith(f"{count} pre-activations") and "negative" in mlp_facts
    assert float(np.sum(mlp.data[0].y) * mlp.data[0].width) == pytest.approx(1.0, abs=1e-4)  # a density
    assert head_facts.startswith("The head maps") and len(logits.data[1].y) == 5


def test_the_scaling_toggle_recomputes_the_row_from_the_same_q_and_k(session):
    analysis = service.CACHE.get(session["key"])
    scaled = draw_anatomy(session, None, 2, "0", "class", True)
    unscaled = draw_anatomy(session, None, 2, "0", "class", False)
    internals = block_internals(service.shared_model("bundled").model, analysis.capture, 2)
    expected = attention_row(internals.queries, internals.keys, 0, 0, scaled=False)
    assert np.allclose(unscaled[6].data[0].y, expected.scores) and np.allclose(unscaled[6].data[1].y, expected.weights)
    assert not np.allclose(scaled[6].data[0].y, unscaled[6].data[0].y)
    assert not np.array_equal(np.asarray(scaled[7]), np.asarray(unscaled[7]))  # the weights on the image change
    assert f"{expected.max_weight:.3f}" in unscaled[8] and f"{expected.jacobian_norm:.4f}" in unscaled[8]


def test_picking_a_patch_and_bad_choices(session):
    analysis = service.CACHE.get(session["key"])
    width, height = view_of(analysis).size
    assert select_patch(session, FakeSelect([width - 1, 0])) == (0, analysis.capture.grid[1] - 1)
    with pytest.raises(gr.Error, match="out of range"):
        draw_anatomy(session, None, 99, "0", "class", True)
    with pytest.raises(gr.Error, match="超出范围"):
        draw_anatomy(session, None, 1, "42", "class", True, request=CHINESE)


def test_a_chinese_browser_gets_chinese_numbers_and_figures(session):
    out = draw_anatomy(session, (1, 1), 0, "0", "patch", True, request=CHINESE)
    assert "个值" in out[4] and "最大权重" in out[8] and "为负" in out[12]
    assert out[6].layout.title.text.startswith("得分") and out[6].layout.xaxis.title.text == "键令牌（前缀在前）"
    assert [bar.name for bar in out[14].data] == ["logit 值", "softmax 概率"]  # identifiers with Chinese words
    lens = figures.layer_heatmap(np.full((6, 10), 0.1), [str(i) for i in range(10)], [0, 1], "zh-CN")
    assert "透镜" in lens.layout.title.text and "lens" not in lens.layout.title.text
    caption = heads.draw(session, 1, "mean", None, 1.0, STYLE, request=CHINESE)[3]
    assert caption.startswith("第 1 块") and "mean" not in caption


SATURATION = {  # the words that say which way the Jacobian went, per language
    "en": ("the row saturates", "the unscaled Jacobian is larger"),
    "zh-CN": ("饱和了", "雅可比反而更大"),
}


@pytest.mark.parametrize("language", ["en", "zh-CN"])
@pytest.mark.parametrize("spread", [0.3, 3.0], ids=["not saturated", "saturated"])
def test_the_sentence_under_the_saturation_table_says_what_its_numbers_show(language, spread):
    """Small scores: dropping 1/√d_k sharpens a nearly flat row and its Jacobian grows; large scores: the
    unscaled row saturates and its Jacobian shrinks. The sentence says which, with the table's numbers."""
    rng = np.random.default_rng(0)
    queries, keys = rng.normal(0, spread, (2, 1, 50, 16))
    scaled, unscaled = (attention_row(queries, keys, 0, 0, scaled=s) for s in (True, False))
    saturated = unscaled.jacobian_norm < scaled.jacobian_norm
    assert saturated == (spread > 1)  # both directions happen
    note = anatomy.saturation_note(scaled, unscaled, 16, language)
    said, other = SATURATION[language] if saturated else SATURATION[language][::-1]
    assert said in note and other not in note
    assert f"{scaled.jacobian_norm:.4f}" in note and f"{unscaled.jacobian_norm:.4f}" in note and "4.0" in note
    if not saturated:
        assert f"{1 / np.sqrt(50):.3f}" in note  # a uniform row's Jacobian, about 1/√N


def test_the_saturation_table_ends_with_the_sentence_for_its_own_numbers(session):
    analysis = service.CACHE.get(session["key"])
    internals = block_internals(service.shared_model("bundled").model, analysis.capture, 5)
    for request, language in ((None, "en"), (CHINESE, "zh-CN")):
        table = draw_anatomy(session, None, 5, "0", "class", True, request=request)[8]
        scaled, unscaled = (attention_row(internals.queries, internals.keys, 0, 0, scaled=s) for s in (True, False))
        assert table.endswith(anatomy.saturation_note(scaled, unscaled, internals.queries.shape[-1], language))


@pytest.mark.parametrize("request_, language", [(None, "en"), (CHINESE, "zh-CN")])
def test_step_one_leaves_the_numbers_to_the_model_and_the_facts_give_them(session, request_, language):
    """§1 speaks of P·P·C (768 only as ViT-B/16's); the line under its pictures gives the bundled model's 8×8×3."""
    from app.i18n import text

    step = text("anatomy.step1", language)
    assert "P·P·C" in step and "768" in step and "(768 for 16×16 RGB)" not in step
    assert step.index("ViT-B/16") < step.index("768")  # 768 only as the reference model's
    result = service.CACHE.get(session["key"]).capture
    p, c = result.patch_size, 3
    facts = draw_anatomy(session, (0, 0), 0, "0", "class", True, request=request_)[4]
    assert (p, p * p * c) == (8, 192) and f"{p}×{p}×{c} = **{p * p * c} " in facts
    # one prefix token, in words: no "token(s)"
    assert ("with 1 prefix token the encoder" if language == "en" else "加上 1 个前缀令牌，编码器") in facts


def zero_height(axis) -> float:
    """Where an axis's zero sits, as a share of the plot's height from the bottom."""
    low, high = axis.range
    return -low / (high - low)


def test_two_y_axes_over_one_plot_share_their_zero(session):
    """Bars on one axis and a line or bars on the other read from one baseline: scores (signed) and weights,
    the pre-activations' density and GELU (negative below 0), logits (signed) and probabilities."""
    left, right = figures.zero_aligned([-3.0, 10.0], [0.0, 1.0], pad=0.0)
    assert left == pytest.approx([-3.0, 10.0]) and right == pytest.approx([-3 / 10, 1.0])  # 3/13 of each below 0
    assert figures.zero_aligned([1.0, 5.0], [0.0, 1.0], pad=0.0) == ([0.0, 5.0], [0.0, 1.0])
    _, p_axis = figures.zero_aligned([-5.0, -1.0], [0.0, 1.0], pad=0.0)  # SigLIP: every logit negative
    assert p_axis == pytest.approx([-1.0, 1.0])  # the probabilities keep the upper half

    out = draw_anatomy(session, (2, 3), 4, "1", "patch", True)
    row, mlp, logits = out[6], out[11], out[14]
    for figure in (row, mlp, logits):
        layout = figure.layout
        assert zero_height(layout.yaxis) == pytest.approx(zero_height(layout.yaxis2), abs=1e-9)
        for trace in figure.data:  # every value inside its axis
            axis = layout.yaxis2 if trace.yaxis == "y2" else layout.yaxis
            assert axis.range[0] <= min(trace.y) and max(trace.y) <= axis.range[1]
    assert zero_height(mlp.layout.yaxis2) > 0  # GELU dips below zero, and the density axis makes room for it
    assert list(logits.layout.yaxis2.tickvals) == figures.UNIT_TICKS  # no negative probability ticks
