"""Texts in every language: the same keys and placeholders everywhere, every key the code uses exists."""

import json
import re
import string
from pathlib import Path

import pytest

from app.i18n import (
    COOKIE,
    LOCALES,
    catalogs,
    gradio_translations,
    language_of,
    language_of_request,
    text,
    translate_error,
)
from tests.corpus import write
from vit_core import VitCoreError
from vit_core.images import load_image

APP = Path(__file__).resolve().parents[2] / "app"


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_every_language_file_has_every_key_with_the_same_placeholders():
    english = catalogs()["en"]
    assert len(catalogs()) >= 2 and "zh-CN" in catalogs()
    for language, texts in catalogs().items():
        assert set(texts) == set(english), (language, set(english) ^ set(texts))
        for key, template in texts.items():
            assert placeholders(template) == placeholders(english[key]), (language, key)
            assert template.strip(), (language, key)
    # the files are plain JSON objects of strings: a third language is one more file
    for path in LOCALES.glob("*.json"):
        assert all(isinstance(v, str) for v in json.loads(path.read_text(encoding="utf-8")).values())


def test_every_key_the_code_uses_exists():
    from app.maps import METHODS
    from app.tabs.overview import METHODS as OVERVIEW
    from app.ui import TABS

    used = set()
    for path in APP.rglob("*.py"):
        used |= set(re.findall(r'\b(?:T|text)\(\s*"([a-z_0-9.]+)"', path.read_text(encoding="utf-8")))
    used |= {f"choice.{c}" for c in ("mean", "max", "min")}  # keys built from values (f-strings)
    used |= {f"method.{m}" for m in METHODS} | {f"overview.{m}" for m in OVERVIEW} | {f"tab.{t}" for t in TABS}
    assert len(used) > 100 and not used - set(catalogs()["en"]), used - set(catalogs()["en"])


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


def test_the_bad_image_sentences_are_translated(tmp_path):
    for name, (path, expect) in write(tmp_path).items():
        if expect is None:
            continue
        with pytest.raises(VitCoreError) as error:
            load_image(path)
        chinese = translate_error(str(error.value), "zh-CN")
        assert not chinese.startswith("出错") and path.name in chinese, (name, chinese)
        assert re.search("[\u4e00-\u9fff]", chinese), (name, chinese)
    assert translate_error("Upload an image first.", "zh-CN") == "请先上传一张图片。"
    assert translate_error("something new happened.", "zh-CN") == "出错：something new happened."
    assert translate_error("anything.", "en") == "anything."
    assert text("heads.caption", "zh-CN", layer=3, head=1, who="类别令牌") == "第 3 块，头 1：类别令牌看向哪里。"


def test_the_page_cookie_wins_over_accept_language():
    assert language_of_request(f"a=1; {COOKIE}=zh-CN", "en-US") == "zh-CN"
    assert language_of_request(f"{COOKIE}=en", "zh-CN,zh") == "en"
    assert language_of_request(f"{COOKIE}=xx-YY", "zh-CN") == "zh-CN"  # unknown tag: the header decides
    assert language_of_request('bad"cookie', "zh") == "zh-CN"
    assert language_of_request(None, None) == "en"
