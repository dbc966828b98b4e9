"""The panel: one analysis per (model, image), failures that leave one state, the examples and the note,
the summary in both languages."""

from types import SimpleNamespace

import gradio as gr
import pytest
from gradio.media import get_image
from PIL import Image

from app import panel, service
from app.i18n import text
from tests.app.helpers import NO_PROGRESS, analyzed
from tests.corpus import write

CHINESE = gr.Request(headers={"accept-language": "zh-CN,zh;q=0.9,en;q=0.8"})


def test_bad_images_become_one_sentence_and_clear_every_view(tmp_path):
    good, _ = analyzed(get_image("lion.jpg"), "bundled")
    for name, (path, expect) in write(tmp_path).items():
        session, outputs = analyzed(str(path), "bundled", good)
        if expect is None:
            assert len(outputs[1]) == 5, name
            continue
        assert session is None and outputs[1] is None, name  # nothing of the earlier image stays
        summary = outputs[3]
        assert summary.startswith("⚠️") and __import__("re").search(expect, summary), (name, summary)
        assert "\n" not in summary and summary.endswith("."), (name, summary)
        assert outputs[2].interactive is False and outputs[2].choices == []  # no target classes
        assert outputs[4] == "bundled"
        # a file the browser cannot show either leaves the image box empty, not with a broken-image icon;
        # a picture refused for its shape stays in it
        assert outputs[7] == (gr.skip() if name == "extreme aspect" else None), name


def test_the_target_menu_lists_the_top5_and_every_class_once_it_gets_focus():
    session, outputs = analyzed(get_image("lion.jpg"), "bundled")
    analysis = panel.analysis_of(session)
    labels, probs = service.labels_of(analysis), analysis.capture.probs
    top5 = [int(i) for i in (-probs).argsort(kind="stable")[:5]]
    menu = outputs[2]
    assert menu.choices == [(f"{labels[i]} ({i})", i) for i in top5] and menu.value == top5[0]
    assert outputs[-1] is None  # the menu lists the top 5 only
    # focus: every class, the top 5 first and the others by index; once per analysis
    every, listed = panel.every_class(session, None)
    rest = sorted(set(range(len(labels))) - set(top5))
    assert every.constructor_args["choices"] == [(f"{labels[i]} ({i})", i) for i in [*top5, *rest]]
    assert "value" not in every.constructor_args  # the chosen target stays
    assert listed == session["key"] and panel.every_class(session, listed) == (gr.skip(), gr.skip())
    assert panel.every_class(None, None) == (gr.skip(), gr.skip())  # before any analysis


def test_a_class_clicked_in_the_top5_becomes_the_target():
    session, outputs = analyzed(get_image("lion.jpg"), "bundled")
    top5 = list(outputs[1])  # "name (index)", most probable first
    third = top5[2]
    clicked = gr.SelectData(None, {"index": 2, "value": third, "selected": True})
    assert panel.pick_prediction(session, 0, clicked) == int(third.rsplit("(", 1)[1].rstrip(")"))
    # a click on no class (or before an analysis) leaves the target alone
    assert panel.pick_prediction(session, 4, gr.SelectData(None, {"index": 0, "value": "no such"})) == 4
    assert panel.pick_prediction(None, 4, clicked) == 4


def test_a_model_that_cannot_be_loaded_keeps_the_analysis_and_puts_the_dropdown_back():
    good, _ = analyzed(get_image("lion.jpg"), "bundled")
    session, outputs = analyzed(get_image("lion.jpg"), "no-such-model", good)
    assert session == gr.skip() and outputs[1] == gr.skip()  # the analysis on screen stays
    assert outputs[4] == "bundled"  # the dropdown returns to the model in use
    assert outputs[3].startswith("⚠️ Unknown model") and "bundled" in outputs[3].split("\n\n", 1)[1]
    assert "--" not in outputs[3]  # a sentence for the page, not for the command line


def test_before_an_image_the_summary_invites_and_a_model_change_is_checked():
    session, outputs = analyzed(None, "bundled")
    assert session is None and outputs[3] == "Pick an example or upload an image."
    _, outputs = analyzed(None, "no-such-model")
    assert outputs[3].startswith("⚠️ Unknown model") and outputs[4] == service.default_model()


def test_the_summary_follows_the_language_and_speaks_chinese():
    session, outputs = analyzed(get_image("bus.png"), "bundled", request=CHINESE)
    assert "个块" in outputs[3] and "线程" in outputs[3] and "threads" not in outputs[3]
    assert "blocks" in panel.summary_text(session, "en")
    assert "个块" in panel.summary_text(session, "zh-CN")
    assert panel.summary_text(None, "zh-CN") == "请选择一个示例或上传一张图片。"
    _, outputs = analyzed(str(__file__), "bundled", request=CHINESE)
    assert outputs[3].startswith("⚠️") and "test_panel.py" in outputs[3]


def test_the_warning_is_kept_as_data_and_a_language_switch_writes_it_again(tmp_path):
    """The summary's warning survives a switch of language, translated: the page keeps the error's key and
    parameters (the last panel output, a state), and `relabel` writes the summary from them."""
    from app.ui import relabel

    good, outputs = analyzed(get_image("lion.jpg"), "bundled")
    assert outputs[10] is None  # an analysis that succeeds leaves no warning
    _, outputs = analyzed(get_image("lion.jpg"), "no-such-model", good)
    warning = outputs[10]
    assert warning == {"key": "unknown_model", "params": {"name": "no-such-model"}, "alone": False}
    chinese = relabel("zh-CN", good, warning, "bundled")[0]
    line, summary = chinese.split("\n\n", 1)
    assert line.startswith("⚠️ 未知模型 'no-such-model'") and "个块" in summary and "blocks" not in chinese
    assert relabel("en", good, warning, "bundled")[0] == outputs[3]  # and back, as it was written
    # an image that cannot be read: the warning is the whole summary, in either language
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    session, outputs = analyzed(str(broken), "bundled", good, request=CHINESE)
    assert outputs[3].startswith("⚠️ broken.png") and "\n" not in outputs[3] and outputs[10]["alone"]
    english = relabel("en", session, outputs[10], "bundled")[0]
    assert english.startswith("⚠️ broken.png") and "truncated or corrupt" in english and "\n" not in english
    # the next analysis that succeeds drops it
    session, outputs = analyzed(get_image("lion.jpg"), "bundled", session)
    assert outputs[10] is None and relabel("zh-CN", session, outputs[10], "bundled")[0].startswith("**bundled**")


def test_examples_put_what_the_model_knows_first_and_the_note_says_so(monkeypatch):
    bundled = [row[0] for row in panel.example_images("bundled")]
    assert "assets/scenes" in bundled[0] and not any(p.endswith("_mask.png") for p in bundled)
    assert any(p.endswith("cheetah1.jpg") for p in bundled)
    imagenet = [row[0] for row in panel.example_images(service.SPACE_DEFAULT_MODEL)]
    assert imagenet[0].endswith("cheetah1.jpg")
    note = panel.model_note("bundled", "en")
    assert "ten shapes" in note and "ImageNet" in note
    assert "VIT_MODEL" in note  # offline here: says how to get a photo model
    assert "十种形状" in panel.model_note("bundled", "zh-CN")
    service.suggested_model.cache_clear()
    monkeypatch.setenv("SPACE_ID", "someone/vit-explorer")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("VIT_MODEL", raising=False)
    try:
        note = panel.model_note("bundled", "en")
        assert service.SPACE_DEFAULT_MODEL in note and "MB download" in note
    finally:
        service.suggested_model.cache_clear()


def test_the_demo_builds_without_launching_and_names_its_api():
    from app import ui

    demo = ui.build_demo()
    names = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"}
    assert names == {"analyze", "explain", "layer_predictions", "faithfulness"}


def test_every_event_that_may_run_the_model_waits_for_the_one_model_run_at_a_time():
    """The analysis, the faithfulness curves, the ablation, the head importance and the downloads (whose maps
    may include methods that run the model again) share one concurrency slot; redraws do not wait for it."""
    from app import ui

    demo = ui.build_demo()
    limits = {fn.fn.__name__: (fn.concurrency_id, fn.concurrency_limit) for fn in demo.fns.values()}
    for name in ("analyze_and_draw", "run", "ablate", "importance", "prepare"):
        assert limits[name] == ("model", 1), name
    assert limits["redraw"][0] != "model" and limits["open_tab"][0] != "model"


def test_spaces_gpu_wraps_model_runs_only_when_the_package_is_there(monkeypatch):
    import sys
    import types

    monkeypatch.delitem(sys.modules, "spaces", raising=False)
    monkeypatch.setattr("builtins.__import__", _refuse("spaces", __import__))
    plain = service._gpu_decorator(20)
    assert plain(len) is len  # a no-op off Spaces
    monkeypatch.undo()
    fake = types.ModuleType("spaces")
    fake.GPU = lambda fn=None, duration=None: (lambda f: ("wrapped", f, duration)) if fn is None else ("wrapped", fn)
    monkeypatch.setitem(sys.modules, "spaces", fake)
    assert service._gpu_decorator(20)(len) == ("wrapped", len, 20)  # spaces.GPU(duration=20)
    assert service._gpu_decorator()(len) == ("wrapped", len)
    # every model run states the seconds it reserves on ZeroGPU
    runs = [service.run_capture, service.faithfulness_curves, service.ablate, service.importance]
    assert all(0 < fn.duration <= 60 for fn in runs)


def _refuse(name, real_import):
    def guarded(module, *args, **kwargs):
        if module == name:
            raise ImportError(module)
        return real_import(module, *args, **kwargs)

    return guarded


def test_default_model_follows_vit_model_then_space_id(monkeypatch):
    monkeypatch.delenv("VIT_MODEL", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert service.default_model() == "bundled"
    monkeypatch.setenv("SPACE_ID", "someone/vit-explorer")
    assert service.default_model() == service.SPACE_DEFAULT_MODEL
    assert service.SPACE_DEFAULT_MODEL in {entry.name for entry in service.CATALOG}
    on_space = {value: label for label, value in service.model_choices()}
    assert on_space[service.SPACE_DEFAULT_MODEL].endswith("86.6 M params · 346 MB download")  # a Space has a hub
    monkeypatch.setenv("VIT_MODEL", "timm:deit_small_patch16_224.fb_in1k")
    assert service.default_model() == "timm:deit_small_patch16_224.fb_in1k"
    monkeypatch.delenv("SPACE_ID")
    offline = {value: label for label, value in service.model_choices()}
    assert "download" not in offline["bundled"] and "1.6 M params" in offline["bundled"]
    assert any("需下载" in label for label, _ in service.model_choices("zh-CN"))


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_model_choices_are_described_in_the_language(language):
    labels = [label for label, _ in service.model_choices(language)]
    assert labels[0].startswith("bundled — ")
    if language == "zh-CN":
        assert "十种形状" in labels[0] and "本项目" in panel.model_note("bundled", language)


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_the_model_menu_names_each_model_in_a_few_words_and_the_note_describes_it(language):
    choices = dict((value, label) for label, value in service.model_choices(language))
    for entry in service.CATALOG:
        words = choices[entry.name].removeprefix(f"{entry.name} — ").split(" · ")[0]
        assert words == text(f"menu.{entry.name}", language) and len(words) <= 30, (language, words)
        description = service.catalog_description(entry, language)
        assert len(description) >= len(words) and description in panel.model_note(entry.name, language)
    bundled = choices["bundled"]
    assert "trained by this project" not in bundled and "本项目" not in bundled  # that is the note's
    assert panel.model_note(None, language) == ""
    assert panel.model_note("/srv/mine.safetensors", language).startswith(text("note.imagenet", language))


def test_a_wide_photo_says_the_model_sees_a_crop_and_marks_it(tmp_path):
    from PIL import Image

    wide = tmp_path / "wide.png"
    Image.new("RGB", (3000, 200), (200, 120, 40)).save(wide)
    session, outputs = analyzed(str(wide), "bundled")
    assert "centre crop" in outputs[3] and "7%" in outputs[3]  # 200 x 200 of 3000 x 200
    seen = outputs[6]  # an update with the picture (no gr.Image built: it would write the picture at once)
    assert seen["visible"] is True
    picture = seen["value"]
    middle = picture.height // 2
    assert picture.getpixel((0, middle)) != picture.getpixel((picture.width // 2, middle))  # outside dimmed
    session, outputs = analyzed(get_image("tower.jpg"), "bundled")  # 377 x 600 into a square: a crop too
    assert "centre crop" in outputs[3]
    square = tmp_path / "square.png"
    Image.new("RGB", (300, 300), (10, 200, 40)).save(square)
    _, outputs = analyzed(str(square), "bundled")
    assert "crop" not in outputs[3] and outputs[6] == gr.update(value=None, visible=False)


def test_a_small_image_says_the_model_sees_it_enlarged(tmp_path):
    """An image smaller than the model's input (96 x 96 here) is enlarged to it: the summary says by how much,
    as it says what a crop cuts off; an image at least as large as the input gets no such line."""
    from PIL import Image

    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (5, 5), (200, 30, 30)).save(tiny)
    session, outputs = analyzed(str(tiny), "bundled")
    assert session["facts"]["enlarged"] == pytest.approx(96 / 5)
    assert "The image is smaller than the model's input: it was enlarged 19.2×, so the model sees blurred" in outputs[3]
    assert "crop" not in outputs[3]
    assert "它被放大了 19.2 倍" in panel.summary_text(session, "zh-CN")
    bus = tmp_path / "bus.png"
    Image.new("RGB", (61, 68), (20, 30, 200)).save(bus)  # shortest side 61 -> 96, then 96 of 107 rows kept
    _, outputs = analyzed(str(bus), "bundled")
    assert "enlarged 1.6×" in outputs[3] and "centre crop" in outputs[3]
    square = tmp_path / "square.png"
    Image.new("RGB", (96, 96), (10, 200, 40)).save(square)
    session, outputs = analyzed(str(square), "bundled")
    assert session["facts"]["enlarged"] is None and "enlarged" not in outputs[3]


def test_emptying_the_box_of_an_unreadable_file_starts_no_analysis_and_keeps_the_sentence(monkeypatch, tmp_path):
    """The box emptied by the answer to a bad file fires its change event: that request without the image
    gets the same answer again, unrun, the box left alone and the views as they are."""
    calls = []
    real = service.analyze
    monkeypatch.setattr(service, "analyze", lambda *args: calls.append(args) or real(*args))
    page = gr.Request(headers={"accept-language": "zh-CN"})
    page.session_hash = "a-tab-with-a-bad-file"
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    clock = [1000.0]
    monkeypatch.setattr(panel, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    refused, follow = panel.outcome(str(broken), "bundled", None, progress=NO_PROGRESS, request=page)
    assert follow and refused.image is None and refused.summary.startswith("⚠️ broken.png")
    clock[0] += 30  # the box's change waited in the model queue behind other pages' runs
    echo, follow = panel.outcome(None, "bundled", None, progress=NO_PROGRESS, request=page)
    assert not follow and echo.image == gr.skip() and echo.summary == refused.summary
    assert len(calls) == 1  # the emptied box ran nothing
    # the next picture is analysed as always
    good, follow = panel.outcome(get_image("lion.jpg"), "bundled", None, progress=NO_PROGRESS, request=page)
    assert follow and good.session["key"] and good.image == gr.skip() and len(calls) == 2


def test_the_same_request_twice_from_a_page_runs_once(monkeypatch):
    """A dropdown choice reports itself twice (selection, then blur): one model load and run."""
    calls = []
    real = service.analyze
    monkeypatch.setattr(service, "analyze", lambda *args: calls.append(args) or real(*args))
    page = gr.Request(headers={"accept-language": "en"})
    page.session_hash = "one-browser-tab"
    first = analyzed(get_image("lion.jpg"), "bundled", request=page)
    second = analyzed(get_image("lion.jpg"), "bundled", request=page)
    assert len(calls) == 1 and second[0] == first[0]
    _, unknown = analyzed(get_image("lion.jpg"), "no-such-model", first[0], request=page)
    _, again = analyzed(get_image("lion.jpg"), "no-such-model", first[0], request=page)
    assert again[3] == unknown[3] and unknown[3].startswith("⚠️")
    other = gr.Request(headers={"accept-language": "en"})
    other.session_hash = "another-browser-tab"
    analyzed(get_image("lion.jpg"), "bundled", request=other)
    assert len(calls) == 2  # another page asks for itself


def test_an_upload_of_any_mode_reaches_the_handler_as_the_file_itself(tmp_path):
    """No decode, conversion and rewrite by Gradio before the handler: the path is the uploaded file's."""
    from gradio.data_classes import FileData

    from app import ui

    demo = ui.build_demo()
    box = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "input-image")
    for mode in ("RGBA", "L", "CMYK", "P"):
        path = tmp_path / f"{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
        Image.new(mode, (40, 30)).save(path)
        assert box.preprocess(FileData(path=str(path), orig_name=path.name)) == str(path)
    image = service.analyze(str(tmp_path / "RGBA.png"), "bundled")
    assert image.capture.probs is not None
