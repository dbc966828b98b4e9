"""Texts in every language: the same keys and placeholders everywhere, every key the code uses exists."""

import dataclasses
import json
import re
from pathlib import Path

import gradio as gr
import pytest
import torch

from app import service
from app.i18n import (
    COOKIE,
    DEFAULT,
    LOCALES,
    catalogs,
    error_text,
    gradio_translations,
    language_of,
    language_of_request,
    text,
)
from tests.corpus import write
from tests.error_keys import raised_keys
from vit_core import ViT, ViTConfig, VitCoreError, capture
from vit_core.analysis import layer_predictions
from vit_core.errors import MESSAGES, WHAT, placeholders
from vit_core.images import load_image
from vit_core.maps import attention_map
from vit_core.rollout import rollout

APP = Path(__file__).resolve().parents[2] / "app"
ERROR_KEYS = ("error.", "what.")  # English comes from vit_core.errors; other languages translate by key


def test_every_language_file_has_every_key_with_the_same_placeholders():
    english = catalogs()["en"]
    assert len(catalogs()) >= 2 and "zh-CN" in catalogs()
    assert not [key for key in english if key.startswith(ERROR_KEYS)]
    for language, texts in catalogs().items():
        page = {key: template for key, template in texts.items() if not key.startswith(ERROR_KEYS)}
        assert set(page) == set(english), (language, set(english) ^ set(page))
        for key, template in page.items():
            assert placeholders(template) == placeholders(english[key]), (language, key)
            assert template.strip(), (language, key)
    # the files are plain JSON objects of strings: a third language is one more file
    for path in LOCALES.glob("*.json"):
        assert all(isinstance(v, str) for v in json.loads(path.read_text(encoding="utf-8")).values())


def test_every_key_the_code_uses_exists():
    from app.maps import METHODS
    from app.ui import TABS

    used = set()
    for path in APP.rglob("*.py"):
        used |= set(re.findall(r'\b(?:T|text)\(\s*"([a-z_0-9.]+)"', path.read_text(encoding="utf-8")))
    used |= {f"choice.{c}" for c in ("mean", "max", "min")}  # keys built from values (f-strings)
    used |= {f"method.{m}" for m in METHODS} | {f"overview.{m}" for m in METHODS} | {f"tab.{t}" for t in TABS}
    used |= {"summary.prefix_one", "summary.prefix_many", "relevance.left_out_flow"}  # counted(), refusals
    used |= {f"figure.norms_title_{n}" for n in ("none", "one", "many")}  # counted()
    assert len(used) > 100 and not used - set(catalogs()["en"]), used - set(catalogs()["en"])


@pytest.mark.parametrize(
    "prefix, english, chinese",
    [
        (0, "+ 0 prefix tokens ·", "+ 0 个前缀令牌 ·"),
        (1, "+ 1 prefix token ·", "+ 1 个前缀令牌 ·"),
        (2, "+ 2 prefix tokens ·", "+ 2 个前缀令牌 ·"),
    ],
)
def test_the_prefix_tokens_are_counted_in_words(prefix, english, chinese):
    """The summary counts in words ("1 prefix token", "2 prefix tokens"), never "token(s)" (Anatomy's facts:
    test_anatomy_tab)."""
    from app import panel

    facts = dict(model="m", layers=6, heads=6, rows=12, cols=12, patch=8, prefix=prefix, cached=True, threads=2)
    session = {"facts": facts}
    assert english in panel.summary_text(session, "en") and chinese in panel.summary_text(session, "zh-CN")
    assert not [key for key, template in catalogs()["en"].items() if "(s)" in template]


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_every_overview_caption_is_the_method_name_without_its_id(language):
    from app.maps import METHODS
    from app.tabs.overview import title

    for method in METHODS:
        caption, name = title(method, language), text(f"method.{method}", language)
        assert name.endswith(f" ({method})"), (language, name)  # the Rollout & relevance tab shows the id
        assert f"({method})" not in caption and f"（{method}）" not in caption, (language, caption)
        if method != "attention":  # raw attention's caption says which block and heads
            assert name == f"{caption} ({method})", (language, caption, name)


def test_chinese_differs_from_english_and_base_tags_answer():
    english, chinese = catalogs()["en"], catalogs()["zh-CN"]
    same = [k for k in english if english[k] == chinese[k] and re.search("[a-z]{4,}", english[k])]
    assert same == [], same  # nothing left untranslated (names like Grad-CAM are fine)
    assert gradio_translations()["zh"] is chinese


@pytest.mark.parametrize(
    "header,expected",
    [
        (None, "en"),
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
        ("zh", "zh-CN"),
        ("fr-FR,zh;q=0.5", "zh-CN"),
        ("en-GB,zh-CN;q=0.9", "en"),
        ("de-DE", "en"),
        ("garbage;q=x", "en"),
    ],
)
def test_language_of_accept_language(header, expected):
    assert language_of(header) == expected


def test_every_error_key_the_code_raises_is_translated_with_the_same_placeholders():
    used = raised_keys()  # read from the source with ast: every VitCoreError("key", ...) and the checks' own
    assert len(used) > 80 and used <= set(MESSAGES), used - set(MESSAGES)
    for language, texts in catalogs().items():
        if language == DEFAULT:
            continue
        errors = {key.removeprefix("error."): value for key, value in texts.items() if key.startswith("error.")}
        assert set(errors) == set(MESSAGES), (language, set(errors) ^ set(MESSAGES))  # none missing, none stale
        for key in used:
            assert placeholders(errors[key]) == placeholders(MESSAGES[key]), (language, key)
        words = {key.removeprefix("what."): value for key, value in texts.items() if key.startswith("what.")}
        assert set(words) == set(WHAT), (language, set(words) ^ set(WHAT))
        assert all(value.strip() for value in [*errors.values(), *words.values()]), language
        assert not [key for key, value in errors.items() if "`" in value], language  # no code on the page


def refused(fn, *args, **kwargs) -> VitCoreError:
    with pytest.raises(VitCoreError) as error:
        fn(*args, **kwargs)
    return error.value


def english_words(sentence: str, *names: str) -> list[str]:
    for name in names:
        sentence = sentence.replace(name, "")
    return re.findall("[A-Za-z]{2,}", sentence)


def test_real_errors_read_in_chinese_without_english_words(tmp_path):
    cfg = ViTConfig(image_size=(32, 32), patch_size=8, embed_dim=16, depth=2, num_heads=2, mlp_dim=32, num_classes=5)
    result = capture(ViT(cfg).eval(), torch.randn(3, 32, 32))
    headless = capture(ViT(dataclasses.replace(cfg, num_classes=0)).eval(), torch.randn(3, 32, 32))
    errors = [
        (refused(load_image, tmp_path / "missing.png"), "missing.png"),
        (refused(attention_map, result, 7), ""),
        (refused(attention_map, result, 1, head=5), ""),
        (refused(attention_map, result, 1, query_patch=(4, 0)), ""),
        (refused(attention_map, result, "1"), ""),  # a layer given as text
        (refused(rollout, result, discard_ratio=1.5), ""),
        (refused(layer_predictions, headless), ""),
        (refused(service.analyze, None, "bundled"), ""),
        (refused(service.shared_model, " "), ""),
    ]
    for error, name in errors:
        chinese = error_text(error, "zh-CN")
        assert re.search("[\u4e00-\u9fff]", chinese) and not english_words(chinese, name), (error.key, chinese)
        assert error_text(error, "en") == str(error)
    assert error_text(errors[1][0], "zh-CN") == "块 7 超出范围；请使用 0 到 1。"
    assert error_text(errors[0][0], "zh-CN") == "missing.png 不存在。"


def test_the_bad_image_sentences_are_translated(tmp_path):
    for name, (path, expect) in write(tmp_path).items():
        if expect is None:
            continue
        with pytest.raises(VitCoreError) as error:
            load_image(path)
        chinese = error_text(error.value, "zh-CN")
        assert path.name in chinese and re.search("[\u4e00-\u9fff]", chinese), (name, chinese)
        assert not english_words(chinese, path.name, "PNG", "JPEG", "WebP", "GIF", "BMP", "TIFF"), (name, chinese)
    upload = VitCoreError("upload_image")
    assert error_text(upload, "zh-CN") == "请先上传一张图片。"
    assert error_text(upload, "en") == "upload an image first."
    assert error_text(upload, "xx-YY") == "upload an image first."  # an unknown language: English
    unknown = VitCoreError("unknown_timm_model", name="vit_nope")  # the page points to its model list
    assert error_text(unknown, "zh-CN") == "未知的 timm 模型 'vit_nope'；请检查拼写，或从模型列表中选择一个模型。"
    assert text("heads.caption", "zh-CN", layer=3, head=1, who="类别令牌") == "第 3 块，头 1：类别令牌看向哪里。"


def test_a_place_on_the_servers_disk_is_never_in_the_pages_sentence():
    """torchvision's weights missing offline: the command line names the folder it looked in; the page and the
    API, which a public server shows anyone, say where in words instead."""
    from app.api import _errors

    folder = "/root/.cache/torch/hub/checkpoints"
    error = VitCoreError(
        "host_unreachable", what="weights", model="torchvision:vit_b_16", folder=folder, host="download.pytorch.org"
    )
    assert folder in str(error)  # the CLI's sentence (vit_core's own)
    english, chinese = error_text(error, "en"), error_text(error, "zh-CN")
    assert english == (
        "no local copy of the weights of torchvision:vit_b_16 was found in this server's download cache and "
        "download.pytorch.org cannot be reached; the bundled model works offline."
    )
    assert chinese == (
        "在服务器的下载缓存中没有找到 torchvision:vit_b_16 的权重，"
        "且无法连接 download.pytorch.org；内置模型可以离线使用。"
    )
    assert not [sentence for sentence in (english, chinese) if "/" in sentence or "cache/torch" in sentence]

    def load():
        raise error

    with pytest.raises(gr.Error) as answer:
        _errors(load)()
    assert folder not in answer.value.message and "this server's download cache" in answer.value.message


def test_the_page_cookie_wins_over_accept_language():
    assert language_of_request(f"a=1; {COOKIE}=zh-CN", "en-US") == "zh-CN"
    assert language_of_request(f"{COOKIE}=en", "zh-CN,zh") == "en"
    assert language_of_request(f"{COOKIE}=xx-YY", "zh-CN") == "zh-CN"  # unknown tag: the header decides
    assert language_of_request('bad"cookie', "zh") == "zh-CN"
    assert language_of_request(None, None) == "en"
