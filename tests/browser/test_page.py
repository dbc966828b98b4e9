"""The page in a real browser: upload a real photo, explore heads, patches, methods, faithfulness, downloads."""

import re
import time

import pytest
from gradio.media import get_image

pytestmark = pytest.mark.browser
TIMEOUT = 60_000


def src(page, selector: str) -> str:
    locator = page.locator(f"{selector} img").first
    locator.wait_for(timeout=TIMEOUT)
    return locator.get_attribute("src")


IDLE = """(selector) => {
    const tracker = document.querySelector(selector + ' [data-testid="status-tracker"]');
    return !tracker || tracker.classList.contains('hide');
}"""


def settled(page, selector: str) -> None:
    """Wait until no event is pending on the output `selector` (its Gradio status tracker is hidden),
    twice: a chained redraw may start right after the previous one ended."""
    for pause in (0.3, 0.0):
        page.wait_for_function(IDLE, arg=selector, timeout=TIMEOUT)
        time.sleep(pause)


def changed(page, selector: str, before: str, timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = page.locator(f"{selector} img").first.get_attribute("src")
        if now and now != before:
            return now
        time.sleep(0.1)
    raise AssertionError(f"{selector} did not change")


def error_toasts(page) -> list[str]:
    """The texts of Gradio's error notifications on the page (a gr.Error, or a rejected input value)."""
    return page.locator(".toast-body.error").all_inner_texts()


def finish(context, page, errors: list[str]) -> None:
    """No console errors, no failed file, no error notification; then close."""
    assert not errors, errors
    assert not error_toasts(page), error_toasts(page)
    context.close()


def open_page(browser, url, locale="en-US"):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale=locale)
    page = context.new_page()
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    # a file (image, plot, download) that fails to arrive; the queue's event streams are aborted by design
    page.on(
        "requestfailed",
        lambda request: errors.append(f"{request.url}: {request.failure}") if "/file=" in request.url else None,
    )
    page.goto(url + "/", timeout=TIMEOUT)
    page.locator("#analyze").wait_for(timeout=TIMEOUT)
    return context, page, errors


def test_explore_a_photo_end_to_end(browser, live_server, artifacts):
    context, page, errors = open_page(browser, live_server.url)
    page.locator("#input-image input[type=file]").set_input_files(get_image("cheetah1.jpg"))
    for method in ("attention", "rollout", "chefer", "gradcam"):
        src(page, f"#overview-{method}")
    assert "blocks" in page.locator("#summary").inner_text()
    page.screenshot(path=str(artifacts / "overview.png"), full_page=True)

    # Heads: change the block, then the head, and see the enlarged view change
    page.get_by_role("tab", name="Heads").click()
    src(page, "#head-view")
    settled(page, "#head-view")
    before = src(page, "#head-view")
    src(page, "#matrix")
    slider = page.locator("#layer input[type=number]")
    slider.fill("0")
    slider.press("Enter")
    after_layer = changed(page, "#head-view", before)
    page.locator("#matrix img").first.click(position={"x": 3 * 42 + 10, "y": 2 * 42 + 10})  # block 2, head 3
    after_head = changed(page, "#head-view", after_layer)
    page.wait_for_function("document.querySelector('#head input').value === '3'", timeout=TIMEOUT)
    # click a patch: the view becomes that patch's attention, with the patch marked
    page.locator("#head-view img").first.click(position={"x": 40, "y": 40})
    changed(page, "#head-view", after_head)
    page.get_by_text("where the patch (row").wait_for(timeout=TIMEOUT)
    page.screenshot(path=str(artifacts / "heads.png"), full_page=True)

    # Rollout & relevance: switch the method
    page.get_by_role("tab", name="Rollout & relevance").click()
    src(page, "#method-view")
    settled(page, "#method-view")
    before = src(page, "#method-view")
    page.locator("#method").get_by_text("chefer", exact=True).click()
    changed(page, "#method-view", before)

    # Layers: the plots are there
    page.get_by_role("tab", name="Layers").click()
    for plot in ("#layer-heatmap", "#class-line", "#head-scatter"):
        page.locator(f"{plot} .js-plotly-plot").first.wait_for(timeout=TIMEOUT)
    page.screenshot(path=str(artifacts / "layers.png"), full_page=True)

    # Faithfulness, on demand
    page.get_by_role("tab", name="Faithfulness & ablation").click()
    page.locator("#run-faithfulness").click()
    page.locator("#faithfulness-plot .js-plotly-plot").first.wait_for(timeout=TIMEOUT)
    page.get_by_text("deletion_auc").first.wait_for(timeout=TIMEOUT)

    # Downloads: a real PNG file arrives
    page.get_by_role("tab", name="Downloads").click()
    page.locator("#prepare-downloads").click()
    link = page.locator("#downloads a[download='rollout.png']").first
    link.wait_for(timeout=TIMEOUT)
    with page.expect_download(timeout=TIMEOUT) as download:
        link.click()
    path = download.value.path()
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    page.screenshot(path=str(artifacts / "downloads.png"), full_page=True)
    finish(context, page, errors)


def test_a_broken_upload_shows_one_sentence_and_the_page_keeps_working(browser, live_server, artifacts, tmp_path):
    context, page, errors = open_page(browser, live_server.url)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    page.locator("#input-image input[type=file]").set_input_files(str(broken))
    page.get_by_text("truncated or corrupt").first.wait_for(timeout=TIMEOUT)
    page.screenshot(path=str(artifacts / "bad-upload.png"), full_page=True)
    page.locator("#input-image button[aria-label='Remove Image']").first.click()
    page.locator("#input-image input[type=file]").set_input_files(get_image("lion.jpg"))
    try:
        src(page, "#overview-rollout")
    except Exception:
        page.screenshot(path=str(artifacts / "bad-upload-then-good.png"), full_page=True)
        raise
    context.close()


def walk_through_anatomy(page, artifacts, name: str, facts_marker: str) -> None:
    """Open the Anatomy tab after an upload, pick a patch, flip the scaling toggle, and see the figures change."""
    page.locator("#overview-gradcam img").first.wait_for(timeout=TIMEOUT)  # the analysis is there
    page.get_by_role("tab", name=name).click()
    page.locator("#anatomy-grid img").first.wait_for(timeout=TIMEOUT)
    page.locator("#anatomy-patch-facts").get_by_text(facts_marker).first.wait_for(timeout=TIMEOUT)
    facts = page.locator("#anatomy-patch-facts").inner_text()
    page.locator("#anatomy-grid img").first.click(position={"x": 10, "y": 10})
    page.wait_for_function(
        "(before) => document.querySelector('#anatomy-patch-facts').innerText !== before", arg=facts, timeout=TIMEOUT
    )
    for plot in ("#anatomy-vector", "#anatomy-row", "#anatomy-entropy", "#anatomy-mlp", "#anatomy-route"):
        page.locator(f"{plot} .js-plotly-plot").first.wait_for(timeout=TIMEOUT)
    settled(page, "#anatomy-weights")
    before = src(page, "#anatomy-weights")
    row_title = page.locator("#anatomy-row .gtitle").first.text_content()
    page.locator("#anatomy-scaled input[type=checkbox]").click()
    changed(page, "#anatomy-weights", before)
    page.wait_for_function(
        """(before) => {
            const title = document.querySelector('#anatomy-row .gtitle');
            return title && title.textContent !== before;
        }""",
        arg=row_title,
        timeout=TIMEOUT,
    )


def test_anatomy_walk_through_in_english(browser, live_server, artifacts):
    context, page, errors = open_page(browser, live_server.url)
    page.locator("#input-image input[type=file]").set_input_files(get_image("lion.jpg"))
    walk_through_anatomy(page, artifacts, "Anatomy", "values")
    assert "no 1/√" in page.locator("#anatomy-row .gtitle").first.text_content()
    page.screenshot(path=str(artifacts / "anatomy-en.png"), full_page=True)
    finish(context, page, errors)


def test_a_chinese_browser_gets_the_chinese_page(browser, live_server, artifacts):
    context, page, errors = open_page(browser, live_server.url, locale="zh-CN")
    page.get_by_role("tab", name="概览").wait_for(timeout=TIMEOUT)
    assert page.get_by_role("button", name="分析").count() == 1
    page.locator("#input-image input[type=file]").set_input_files(get_image("cheetah1.jpg"))
    page.locator("#summary").get_by_text("个块").wait_for(timeout=TIMEOUT)  # the server's summary, in Chinese
    walk_through_anatomy(page, artifacts, "解剖", "个值")
    assert "不除以" in page.locator("#anatomy-row .gtitle").first.text_content()
    page.screenshot(path=str(artifacts / "anatomy-zh.png"), full_page=True)
    finish(context, page, errors)


def test_the_language_switch_on_the_page_turns_it_chinese(browser, live_server, artifacts):
    context, page, errors = open_page(browser, live_server.url)
    page.get_by_role("tab", name="Overview").wait_for(timeout=TIMEOUT)
    page.locator("#language").click()
    choose = page.get_by_role("combobox", name="Language")
    choose.click()
    page.get_by_role("option", name=re.compile("中文")).first.click()
    page.get_by_role("tab", name="概览").wait_for(timeout=TIMEOUT)
    page.get_by_role("button", name="分析").wait_for(timeout=TIMEOUT)
    page.keyboard.press("Escape")
    page.mouse.click(5, 5)  # close the settings panel
    # the server follows the switch too (the browser itself still asks for English)
    page.locator("#input-image input[type=file]").set_input_files(get_image("bus.png"))
    page.locator("#summary").get_by_text("个块").wait_for(timeout=TIMEOUT)
    page.screenshot(path=str(artifacts / "language-switch.png"))
    finish(context, page, errors)


def test_switching_the_model_refits_the_tab_on_screen(browser, live_server, artifacts, timm_tiny_file):
    """From the bundled model (6 blocks x 6 heads) to a ViT-Ti (12 blocks x 3 heads) while on the Heads tab."""
    context, page, errors = open_page(browser, live_server.url)
    page.locator("#input-image input[type=file]").set_input_files(get_image("lion.jpg"))
    src(page, "#overview-gradcam")
    page.get_by_role("tab", name="Heads").click()
    page.get_by_text("Block 5, head mean").wait_for(timeout=TIMEOUT)
    settled(page, "#head-view")
    box = page.locator("#model input")
    box.fill(timm_tiny_file)
    box.press("Enter")
    page.get_by_text("Block 11, head mean").wait_for(timeout=TIMEOUT)  # the new model's last block
    assert page.locator("#layer input[type=number]").input_value() == "11"
    assert "12 blocks × 3 heads" in page.locator("#summary").inner_text()
    page.screenshot(path=str(artifacts / "model-switch.png"), full_page=True)
    finish(context, page, errors)
