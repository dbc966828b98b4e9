"""Errors are data: literal keys everywhere, one English template per key, and the shared checks."""

import math
import pickle

import numpy as np
import pytest
import torch

from tests.error_keys import ERROR_CLASSES, calls, raised_keys
from vit_core import ViT, ViTConfig, capture
from vit_core.errors import MESSAGES, WHAT, VitCoreError, WeightsUnavailable, placeholders, render
from vit_core.maps import attention_map
from vit_core.validate import as_index, check_choice, check_index, check_patch, check_range


def refused(fn, *args, **kwargs) -> VitCoreError:
    with pytest.raises(VitCoreError) as error:
        fn(*args, **kwargs)
    return error.value


def test_every_error_is_built_from_a_literal_key():
    errors = [call for call in calls() if call.name in ERROR_CLASSES]
    non_literal = [call.where for call in errors if call.key is None]
    assert non_literal == [], f"VitCoreError(...) needs a literal key first: {non_literal}"
    assert len(errors) > 100


def test_every_raised_key_has_a_template_and_every_template_is_raised():
    used = raised_keys()
    assert used - set(MESSAGES) == set(), used - set(MESSAGES)
    assert set(MESSAGES) - used == set(), f"templates nothing raises: {set(MESSAGES) - used}"


def test_every_literal_what_is_a_word_of_the_vocabulary():
    literal = {what for call in calls() for what in call.whats}
    assert literal - set(WHAT) == set(), literal - set(WHAT)
    assert len(literal) > 15
    assert len(set(WHAT)) == len(WHAT)


def test_templates_are_one_sentence_with_plain_parameters_and_no_command_line_flags():
    for key, template in MESSAGES.items():
        params = {name: WHAT[0] if name == "what" else 7 for name in placeholders(template)}
        sentence = render(key, params)
        assert sentence.endswith(".") and "\n" not in sentence and "{" not in sentence, (key, sentence)
        # the page shows these sentences: a command-line hint belongs to vit_core.cli (CLI_HINTS)
        assert key.startswith("cli_") or " --" not in f" {template}", (key, template)
        # and so does code to run: the page's users need not write Python
        assert "`" not in template and "list_models" not in template, (key, template)


def test_an_unknown_timm_model_points_to_the_model_list_and_the_cli_adds_the_code():
    from vit_core.cli import CLI_HINTS

    error = VitCoreError("unknown_timm_model", name="vit_nope")
    assert str(error) == "unknown timm model 'vit_nope'; check the spelling, or choose a model from the model list."
    assert "python -m vit_core models" in CLI_HINTS[error.key] and "timm.list_models" in CLI_HINTS[error.key]


def test_unknown_keys_missing_parameters_and_unknown_words_raise_at_construction():
    with pytest.raises(KeyError, match="no_such_key"):
        VitCoreError("no_such_key")
    with pytest.raises(KeyError, match="size|last"):
        VitCoreError("index_out_of_range", what="layer", value=3)
    with pytest.raises(ValueError, match="blocks"):
        VitCoreError("index_out_of_range", what="blocks", value=3, size=2, last=1)


def test_an_error_carries_its_key_and_parameters_and_survives_pickling():
    error = VitCoreError("index_out_of_range", what="layer", value=9, size=6, last=5)
    assert str(error) == "layer 9 is out of range; use 0 to 5."
    assert (error.key, error.params) == ("index_out_of_range", {"what": "layer", "value": 9, "size": 6, "last": 5})
    again = pickle.loads(pickle.dumps(error))  # ZeroGPU sends errors between processes
    assert type(again) is VitCoreError and again.key == error.key and again.params == error.params
    weights = pickle.loads(pickle.dumps(WeightsUnavailable("hub_unreachable", what="weights", model="hf:x")))
    assert isinstance(weights, WeightsUnavailable) and isinstance(weights, VitCoreError)
    assert "cannot be reached" in str(weights)
    # a parameter may be called "key" (a state_dict key) without clashing with the error's key
    assert "'cls_token'" in str(VitCoreError("weights_unexpected_key", source="timm", key="cls_token"))


def test_check_index_hand_cases():
    assert check_index(0, 6, "layer") == 0
    assert check_index(5, 6, "layer") == 5
    assert check_index(np.int64(3), 6, "head") == 3 and type(check_index(np.int64(3), 6, "head")) is int
    for value in (-1, 6):
        error = refused(check_index, value, 6, "layer")
        assert error.key == "index_out_of_range"
        assert error.params == {"what": "layer", "value": value, "size": 6, "last": 5}
    for value in (1.5, True, np.bool_(False), "2", None):
        error = refused(check_index, value, 6, "head")
        assert error.key == "not_an_index" and error.params["what"] == "head", value
    assert refused(check_index, 1.5, 6, "head").params["value"] == 1.5
    assert refused(check_index, True, 6, "head").params["value"] is True
    assert refused(check_index, None, 6, "head").params["value"] == "None"  # plain values only
    assert as_index(np.int32(4), "token") == 4


def test_check_range_hand_cases():
    assert check_range(0, 0, 1, "discard ratio", high_open=True) == 0
    assert check_range(np.float32(0.5), 0, 1, "discard ratio") == 0.5
    assert check_range(256, 2, 256, "steps") == 256
    error = refused(check_range, 1.0, 0, 1, "discard ratio", high_open=True)
    assert error.key == "value_out_of_range" and error.params["interval"] == "[0, 1)"
    assert str(error) == "discard ratio must be in [0, 1), got 1.0."
    assert refused(check_range, 0, 0, 1, "mass fraction", low_open=True).params["interval"] == "(0, 1]"
    assert refused(check_range, math.nan, 0, 1, "mass fraction").key == "value_out_of_range"
    assert refused(check_range, 0, 1, None, "top-k").key == "value_too_small"
    assert check_range(10**9, 1, None, "top-k") == 10**9
    assert refused(check_range, "3", 2, 50, "steps").key == "not_a_number"
    assert refused(check_range, True, 0, 1, "discard ratio").key == "not_a_number"


def test_check_choice_and_check_patch():
    assert check_choice("max", ("mean", "max", "min"), "head fusion") == "max"
    error = refused(check_choice, "median", ("mean", "max", "min"), "head fusion")
    assert str(error) == "unknown head fusion 'median'; use one of mean, max, min."
    assert refused(check_choice, 3, ("mean",), "head fusion").params["value"] == 3
    assert check_patch((np.int64(3), 0), (4, 5)) == (3, 0)
    error = refused(check_patch, (4, 0), (4, 5))
    assert error.key == "patch_outside_grid" and str(error) == "patch (4, 0) is outside the 4x5 patch grid."
    assert refused(check_patch, (1, 2, 3), (4, 5)).key == "bad_query_patch"
    assert refused(check_patch, (1, 2.0), (4, 5)).params["what"] == "patch column"


def test_real_calls_raise_keyed_errors():
    cfg = ViTConfig(image_size=(32, 32), patch_size=8, embed_dim=16, depth=2, num_heads=2, mlp_dim=32, num_classes=5)
    result = capture(ViT(cfg).eval(), torch.randn(3, 32, 32))
    error = refused(attention_map, result, 2)
    assert (error.key, error.params["what"], error.params["value"]) == ("index_out_of_range", "layer", 2)
    assert refused(attention_map, result, 1, head="median").key == "bad_head_choice"
    assert refused(attention_map, result, 1, head=2).params["what"] == "head"
    assert refused(ViTConfig, embed_dim=10, num_heads=3).key == "embed_dim_not_divisible"
