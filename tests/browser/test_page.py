"""The page in a real browser, as a newcomer meets it: every tab before any image, a real photo, a bad file,
a model that cannot be loaded, the language toggle, a Chinese browser, and every plot's text readable."""

import re
import time

import pytest
from gradio.media import get_image

pytestmark = pytest.mark.browser
TIMEOUT = 60_000
TAB_IDS = ["overview", "heads", "relevance", "layers", "tokens", "faithfulness", "anatomy", "downloads"]
TITLES = {
    "en": ["Overview", "Heads", "Rollout & relevance", "Layers", "Tokens", "Faithfulness & ablation", "Anatomy"],
    "zh-CN": ["概览", "注意力头", "展开与相关性", "各层", "令牌", "忠实度与消融", "解剖", "下载"],
}


def src(page, selector: str) -> str:
    locator = page.locator(f"{selector} img").first
    locator.wait_for(timeout=TIMEOUT)
    return locator.get_attribute("src")


IDLE = """(selector) => {
    const tracker = document.querySelector(selector + ' [data-testid="status-tracker"]');
    return !tracker || tracker.classList.contains('hide');
}"""


ALL_IDLE = """() => [...document.querySelectorAll('[data-testid="status-tracker"]')]
    .every((tracker) => tracker.classList.contains('hide') || !tracker.offsetParent)"""


def page_settled(page) -> None:
    """Wait until no event is pending anywhere on the page (Gradio's "processing | 1.2s" is not ours to translate)."""
    for pause in (0.3, 0.0):
        page.wait_for_function(ALL_IDLE, timeout=TIMEOUT)
        time.sleep(pause)


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
    """The texts of Gradio's notifications on the page (a gr.Error, a warning, a rejected input value)."""
    return page.locator(".toast-body").all_inner_texts()


def error_badges(page) -> int:
    """Gradio's red "Error" labels on outputs whose event failed."""
    return page.get_by_text(re.compile(r"^\s*Error\s*$")).count()


def finish(context, page, errors: list[str]) -> None:
    """No console errors, no failed file, no notification, no error badge; then close."""
    assert not errors, errors
    assert not error_toasts(page), error_toasts(page)
    assert error_badges(page) == 0
    context.close()


def open_page(browser, url, locale="en-US", cookies=()):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale=locale)
    context.add_cookies(list(cookies))
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


def tab(page, tab_id: str):
    return page.locator("#tabs button[role=tab]").nth(TAB_IDS.index(tab_id))


def upload(page, path: str) -> None:
    page.locator("#input-image input[type=file]").set_input_files(path)


def analysed(page) -> None:
    src(page, "#overview-3")
    settled(page, "#overview-3")


# Every text of every plotly figure on screen: inside its figure, and not on top of another text.
# Tick labels of one axis are checked against everything else, not against each other (plotly thins them).
PLOT_TEXTS = """() => {
    const problems = [];
    const group = (element) => {
        for (const name of ['xtick', 'ytick', 'y2tick', 'cbaxis', 'legendtext', 'annotation', 'gtitle',
                            'xtitle', 'ytitle', 'y2title', 'cbtitle']) {
            if (element.closest('.' + name) || element.classList.contains(name)) return name;
        }
        return 'other';
    };
    for (const plot of document.querySelectorAll('.js-plotly-plot')) {
        const frame = plot.getBoundingClientRect();
        if (frame.width === 0 || frame.height === 0) continue;  // a hidden tab
        const boxes = [];
        for (const element of plot.querySelectorAll('svg text')) {
            const content = element.textContent.trim();
            const box = element.getBoundingClientRect();
            if (!content || box.width === 0) continue;
            const where = plot.closest('[id]') ? plot.closest('[id]').id : '?';
            if (box.left < frame.left - 1 || box.right > frame.right + 1 || box.top < frame.top - 1
                || box.bottom > frame.bottom + 1) {
                problems.push(`${where}: "${content}" leaves the figure`);
            }
            boxes.push({content, box, group: group(element), where});
        }
        for (let i = 0; i < boxes.length; i++) {
            for (let j = i + 1; j < boxes.length; j++) {
                const a = boxes[i], b = boxes[j];
                if (a.group === b.group && a.group.endsWith('tick')) continue;
                const overlap = Math.min(a.box.right, b.box.right) - Math.max(a.box.left, b.box.left) > 1
                    && Math.min(a.box.bottom, b.box.bottom) - Math.max(a.box.top, b.box.top) > 1;
                if (overlap) problems.push(`${a.where}: "${a.content}" overlaps "${b.content}"`);
            }
        }
    }
    return problems;
}"""


def readable_plots(page) -> int:
    """Assert every plot on screen is readable; returns how many plots were checked."""
    # plotly lays out after the figure arrives, and again when its row changes (a table appearing beside it)
    for _ in range(10):
        page.wait_for_timeout(500)
        problems = page.evaluate(PLOT_TEXTS)
        if not problems:
            break
    assert problems == [], "\n".join(problems)
    return page.evaluate(
        "() => [...document.querySelectorAll('.js-plotly-plot')].filter(p => p.getBoundingClientRect().width).length"
    )


def test_a_fresh_page_shows_no_error_whatever_is_clicked_first(browser, live_server, artifacts):
    """Before any image: every tab shows its one friendly line, its controls inactive; no badge, no toast."""
    context, page, errors = open_page(browser, live_server.url)
    for tab_id in TAB_IDS:
        tab(page, tab_id).click()
        page.locator(f"#empty-{tab_id}").get_by_text("Pick an example or upload an image").wait_for(timeout=TIMEOUT)
        page.wait_for_timeout(400)
        assert error_badges(page) == 0 and not error_toasts(page), tab_id
    tab(page, "heads").click()
    assert page.locator("#layer input[type=number]").is_disabled()
    assert page.locator("#head input").is_disabled()
    tab(page, "faithfulness").click()
    assert page.locator("#run-faithfulness").is_disabled()
    page.locator("#analyze").click()  # the button before any image
    page.wait_for_timeout(800)
    assert page.locator("#summary").inner_text().strip() == "Pick an example or upload an image."
    page.screenshot(path=str(artifacts / "fresh-page.png"), full_page=True)
    finish(context, page, errors)


def test_the_examples_are_beside_the_upload_box_with_what_the_model_knows(browser, live_server, artifacts):
    context, page, errors = open_page(browser, live_server.url)
    page.locator("#model-note").get_by_text("ten shapes").wait_for(timeout=TIMEOUT)
    gallery = page.locator("#examples-column img").first
    gallery.wait_for(timeout=TIMEOUT)
    box = gallery.bounding_box()
    assert box["y"] + box["height"] < 1000  # visible without scrolling at 1400 x 1000
    assert re.search(r"/\d\d_[a-z]+\.png$", gallery.get_attribute("src") or "")  # the bundled model's scenes first
    assert "ten shapes" in page.locator("#model-note").inner_text()
    gallery.click()
    analysed(page)
    assert "from cache" in page.locator("#summary").inner_text() or " ms" in page.locator("#summary").inner_text()
    finish(context, page, errors)


def test_explore_a_photo_end_to_end(browser, live_server, artifacts):
    context, page, errors = open_page(browser, live_server.url)
    upload(page, get_image("cheetah1.jpg"))
    for slot in range(4):  # attention, rollout, chefer, gradcam
        src(page, f"#overview-{slot}")
    assert "blocks" in page.locator("#summary").inner_text()
    assert not page.locator("#empty-overview").is_visible()
    page.screenshot(path=str(artifacts / "overview.png"), full_page=True)

    # Heads: change the block, then the head, and see the enlarged view change
    tab(page, "heads").click()
    src(page, "#head-view")
    settled(page, "#head-view")
    before = src(page, "#head-view")
    src(page, "#matrix")
    slider = page.locator("#layer input[type=number]")
    slider.fill("0")
    slider.press("Enter")
    after_layer = changed(page, "#head-view", before)
    settled(page, "#matrix")
    # block 2, head 3 on the matrix: its picture is scaled to fit, so click by fractions of its size
    matrix = page.locator("#matrix img").first
    natural = page.evaluate("(img) => [img.naturalWidth, img.naturalHeight]", matrix.element_handle())
    shown = matrix.bounding_box()
    from app.render import MATRIX_MARGIN, MATRIX_TOP, matrix_cell

    step = matrix_cell(6) + 2
    x, y = MATRIX_MARGIN + 3 * step + step / 2, MATRIX_TOP + 2 * step + step / 2
    matrix.click(position={"x": x * shown["width"] / natural[0], "y": y * shown["height"] / natural[1]})
    after_head = changed(page, "#head-view", after_layer)
    page.wait_for_function("document.querySelector('#head input').value === '3'", timeout=TIMEOUT)
    # click a patch: the view becomes that patch's attention, with the patch marked
    page.locator("#head-view img").first.click(position={"x": 40, "y": 40})
    changed(page, "#head-view", after_head)
    page.get_by_text("where the patch (row").wait_for(timeout=TIMEOUT)
    page.screenshot(path=str(artifacts / "heads.png"), full_page=True)

    # Rollout & relevance: switch the method (translated names beside the ids)
    tab(page, "relevance").click()
    src(page, "#method-view")
    settled(page, "#method-view")
    before = src(page, "#method-view")
    page.locator("#method").get_by_text("Chefer et al. 2021 (chefer)", exact=True).click()
    changed(page, "#method-view", before)

    # Layers and Tokens: the plots are there and readable
    tab(page, "layers").click()
    for plot in ("#layer-heatmap", "#class-line", "#head-scatter"):
        page.locator(f"{plot} .js-plotly-plot").first.wait_for(timeout=TIMEOUT)
    settled(page, "#head-scatter")
    assert readable_plots(page) == 3
    assert "nostalgebraist 2020" in page.locator("#layers-about").inner_text()  # what the logit lens is
    page.screenshot(path=str(artifacts / "layers.png"), full_page=True)
    tab(page, "tokens").click()
    page.locator("#token-norms .js-plotly-plot").first.wait_for(timeout=TIMEOUT)
    settled(page, "#token-norms")
    assert readable_plots(page) == 1

    # Faithfulness, on demand: curves and a table of AUCs
    tab(page, "faithfulness").click()
    page.locator("#faithfulness-hint").get_by_text("computed on demand").wait_for(timeout=TIMEOUT)
    assert "blurred copy" in page.locator("#faithfulness-about").inner_text()
    page.locator("#run-faithfulness").click()
    page.locator("#faithfulness-plot .js-plotly-plot").first.wait_for(timeout=TIMEOUT)
    page.locator("#faithfulness-table").get_by_text("Deletion AUC").first.wait_for(timeout=TIMEOUT)
    page.locator("#faithfulness-start").get_by_text("on the blurred copy").wait_for(timeout=TIMEOUT)
    page.locator("#faithfulness-hint").wait_for(state="hidden", timeout=TIMEOUT)
    assert page.locator("#faithfulness-table").get_by_text("Attention rollout (rollout)").count() == 1
    assert readable_plots(page) >= 1
    page.screenshot(path=str(artifacts / "faithfulness.png"), full_page=True)

    # Downloads: a real PNG file arrives
    tab(page, "downloads").click()
    page.locator("#prepare-downloads").click()
    link = page.locator("#downloads a[download='rollout.png']").first
    link.wait_for(timeout=TIMEOUT)
    with page.expect_download(timeout=TIMEOUT) as download:
        link.click()
    path = download.value.path()
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    finish(context, page, errors)


def test_a_class_clicked_in_the_top5_is_explained_and_the_menu_lists_every_class(browser, live_server):
    """The top-5 are clickable: a class clicked becomes the target, and the class-specific maps explain it.
    The target menu lists the image's top 5 first, then every other class by index once it gets focus."""
    context, page, errors = open_page(browser, live_server.url)
    menu = page.locator("#target input")
    rows = page.locator("#top5 .confidence-set")  # Gradio's Label: one button per class
    options = page.locator("#target [data-testid=dropdown-option]")
    for image in ("lion.jpg", "bus.png"):
        before = None if image == "lion.jpg" else src(page, "#overview-2")
        upload(page, get_image(image))
        if before:
            changed(page, "#overview-2", before)
        analysed(page)
        rows.first.wait_for(timeout=TIMEOUT)
        top5 = [row.locator("dt").inner_text().strip() for row in rows.all()]
        assert menu.input_value() == top5[0], (menu.input_value(), top5)
        menu.click()
        page.wait_for_function(
            "() => document.querySelectorAll('#target [data-testid=dropdown-option]').length === 10", timeout=TIMEOUT
        )
        listed = [option.get_attribute("aria-label") for option in options.all()]
        rest = sorted(set(listed) - set(top5), key=lambda label: int(label.rsplit("(", 1)[1].rstrip(")")))
        assert listed == top5 + rest, listed
        menu.press("Escape")
        page.locator("#summary").click()
    chefer = src(page, "#overview-2")
    rows.nth(2).click()
    page.wait_for_function(
        "(label) => document.querySelector('#target input').value === label", arg=top5[2], timeout=TIMEOUT
    )
    changed(page, "#overview-2", chefer)
    settled(page, "#overview-2")
    finish(context, page, errors)


def test_the_overview_shows_the_maps_the_user_picks(browser, live_server, artifacts):
    """Any method in the Overview's four places: Raw attention out, LeGrad in; each picture says its method."""
    context, page, errors = open_page(browser, live_server.url)
    upload(page, get_image("lion.jpg"))
    analysed(page)
    before = src(page, "#overview-0")
    maps = page.locator("#overview-maps")
    maps.locator(".token", has_text="Raw attention").locator(".token-remove").click()
    page.locator("#overview-3").wait_for(state="hidden", timeout=TIMEOUT)  # three maps, three places
    maps.locator("input[role=combobox]").fill("LeGrad")
    page.get_by_role("option", name="LeGrad (legrad)").click()
    page.locator("#overview-3").get_by_text("LeGrad", exact=True).first.wait_for(timeout=TIMEOUT)
    src(page, "#overview-3")
    settled(page, "#overview-3")
    assert page.locator("#overview-0").get_by_text("Attention rollout").count() >= 1
    assert src(page, "#overview-0") != before  # rollout moved to the first place
    page.screenshot(path=str(artifacts / "overview-choice.png"), full_page=True)
    finish(context, page, errors)


def test_a_bad_file_after_a_good_image_shows_the_sentence_and_no_earlier_map(browser, live_server, artifacts, tmp_path):
    context, page, errors = open_page(browser, live_server.url)
    upload(page, get_image("lion.jpg"))
    analysed(page)
    tab(page, "heads").click()
    src(page, "#head-view")
    settled(page, "#head-view")
    tab(page, "overview").click()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    page.locator("#input-image button[aria-label='Remove Image']").first.click()
    upload(page, str(broken))
    page.locator("#summary").get_by_text("truncated or corrupt").wait_for(timeout=TIMEOUT)
    # the box is emptied (no broken picture stays in it), and emptying it neither runs nor wipes the sentence
    page.wait_for_function("!document.querySelector('#input-image img')", timeout=TIMEOUT)
    page_settled(page)
    assert "truncated or corrupt" in page.locator("#summary").inner_text()
    page.wait_for_function("!document.querySelector('#overview-1 img')", timeout=TIMEOUT)
    assert page.locator("#top5 .output-class").count() == 0 or not page.locator("#top5").inner_text().strip()
    assert page.locator("#empty-overview").is_visible()
    tab(page, "heads").click()  # the hidden tab's picture of the lion is gone too
    page.locator("#empty-heads").wait_for(state="visible", timeout=TIMEOUT)
    assert page.locator("#head-view img").count() == 0
    page.screenshot(path=str(artifacts / "bad-upload.png"), full_page=True)
    assert error_badges(page) == 0 and not error_toasts(page)
    tab(page, "overview").click()
    upload(page, get_image("tower.jpg"))  # the server keeps serving
    analysed(page)
    finish(context, page, errors)


def test_a_model_that_cannot_be_loaded_says_so_once_and_the_dropdown_reverts(browser, live_server, artifacts):
    context, page, errors = open_page(browser, live_server.url)
    upload(page, get_image("lion.jpg"))
    analysed(page)
    before = src(page, "#overview-1")
    box = page.locator("#model input")
    box.fill("timm:no_such_model_at_all")
    box.press("Enter")
    page.locator("#summary").get_by_text("no_such_model_at_all").wait_for(timeout=TIMEOUT)
    settled(page, "#summary")
    page.wait_for_timeout(1500)  # a second request, if one were sent, would have answered by now
    summary = page.locator("#summary").inner_text()
    assert summary.count("⚠️") == 1 and "--" not in summary, summary
    assert "6 blocks" in summary  # the analysis on screen is still the bundled model's
    page.wait_for_function("document.querySelector('#model input').value.startsWith('bundled')", timeout=TIMEOUT)
    assert src(page, "#overview-1") == before
    page.screenshot(path=str(artifacts / "unknown-model.png"), full_page=True)
    # a switch of language writes the warning again, translated, above the same summary
    page.locator("#language").get_by_text("中文").click()
    page.locator("#summary").get_by_text("未知的 timm 模型").wait_for(timeout=TIMEOUT)
    chinese = page.locator("#summary").inner_text()
    assert chinese.count("⚠️") == 1 and "no_such_model_at_all" in chinese and "6 个块" in chinese, chinese
    page.locator("#language").get_by_text("English").click()
    page.locator("#summary").get_by_text("Unknown").wait_for(timeout=TIMEOUT)
    assert page.locator("#summary").inner_text() == summary
    finish(context, page, errors)


def test_the_language_toggle_switches_every_title_at_once_and_keeps_the_analysis(browser, live_server, artifacts):
    context, page, errors = open_page(browser, live_server.url)
    page.locator("#language").get_by_text("中文").click()  # before any image: the upload box too
    page.locator("#input-image").get_by_text("将图片拖放到此处").wait_for(timeout=TIMEOUT)
    page.locator("#language").get_by_text("English").click()
    page.locator("#input-image").get_by_text("Drop an image here").wait_for(timeout=TIMEOUT)
    upload(page, get_image("bus.png"))
    analysed(page)
    assert "blocks" in page.locator("#summary").inner_text()
    page.locator("#language").get_by_text("中文").click()
    for title in TITLES["zh-CN"]:  # every tab title, the ones never opened too
        page.locator("#tabs button[role=tab]").get_by_text(title, exact=True).wait_for(timeout=TIMEOUT)
    page.locator("#summary").get_by_text("个块").wait_for(timeout=TIMEOUT)  # the same analysis, in Chinese
    assert page.get_by_role("button", name="分析").count() == 1
    assert src(page, "#overview-1")  # the maps stay
    page.screenshot(path=str(artifacts / "language-zh.png"), full_page=True)
    page.locator("#language").get_by_text("English").click()
    for title in TITLES["en"]:
        page.locator("#tabs button[role=tab]").get_by_text(title, exact=True).wait_for(timeout=TIMEOUT)
    page.locator("#summary").get_by_text("blocks").wait_for(timeout=TIMEOUT)
    finish(context, page, errors)


EMPTY = {"en": "Pick an example or upload an image", "zh-CN": "请选择一个示例或上传一张图片"}


def empty_lines_read(page, language: str, tab_ids=("overview", "heads")) -> None:
    """Each tab's empty line is on screen in `language` (opening the tab shows it)."""
    for tab_id in tab_ids:
        tab(page, tab_id).click()
        line = page.locator(f"#empty-{tab_id}")
        line.wait_for(state="visible", timeout=TIMEOUT)
        page_settled(page)
        assert EMPTY[language] in line.inner_text(), (tab_id, language, line.inner_text())
    tab(page, "overview").click()


def test_the_empty_line_follows_the_language_it_was_hidden_in_or_not(browser, live_server):
    """A tab's line hidden by an analysis in one language comes back in the page's language when the image is
    removed, whichever came first: the switch or the removal."""
    context, page, errors = open_page(browser, live_server.url)
    remove = page.locator("#input-image button[aria-label='Remove Image']").first
    # analysed in English (the Heads tab drawn too), switched to Chinese, then the image removed
    upload(page, get_image("lion.jpg"))
    analysed(page)
    tab(page, "heads").click()
    settled(page, "#head-view")
    tab(page, "overview").click()
    page.locator("#language").get_by_text("中文").click()
    page.locator("#summary").get_by_text("个块").wait_for(timeout=TIMEOUT)
    page_settled(page)
    remove.click()
    empty_lines_read(page, "zh-CN")
    # analysed in Chinese, the image removed, then switched to English
    upload(page, get_image("lion.jpg"))
    analysed(page)
    tab(page, "heads").click()
    settled(page, "#head-view")
    tab(page, "overview").click()
    remove.click()
    empty_lines_read(page, "zh-CN")
    page.locator("#language").get_by_text("English").click()
    page.locator("#summary").get_by_text("Pick an example").wait_for(timeout=TIMEOUT)
    empty_lines_read(page, "en")
    finish(context, page, errors)


def toast_titles(page) -> list[str]:
    return [title.strip() for title in page.locator(".toast-title").all_inner_texts()]


def close_toasts(page) -> None:
    """Close every notification, until none is left for half a second."""
    close = "() => document.querySelectorAll('[data-testid=toast-close]').forEach((button) => button.click())"
    for _ in range(20):
        if not page.locator("[data-testid=toast-close]").count():
            page.wait_for_timeout(500)
            if not page.locator("[data-testid=toast-close]").count():
                return
        page.evaluate(close)
        page.wait_for_timeout(300)
    raise AssertionError("the notifications keep coming")


def test_notifications_are_titled_in_the_pages_language(browser, live_server):
    """Gradio titles a notification with its kind in English whatever the locale ("Error"): the page retitles
    each one in its language (app.i18n.TOAST_JS), on screen when the language changes too."""
    context, page, errors = open_page(browser, live_server.url)
    upload(page, get_image("lion.jpg"))
    analysed(page)
    box = page.locator("#target input")
    box.fill("no such class")  # a target that is neither a class index nor a label: the maps say so
    box.press("Enter")
    page.locator(".toast-title").first.wait_for(timeout=TIMEOUT)
    assert set(toast_titles(page)) == {"Error"}, toast_titles(page)
    page.locator("#language").get_by_text("中文").click()  # the toast on screen follows
    retitled = "(title) => document.querySelector('.toast-title')?.textContent.trim() === title"
    page.wait_for_function(retitled, arg="错误", timeout=TIMEOUT)
    page.locator("#summary").get_by_text("个块").wait_for(timeout=TIMEOUT)  # the switch's redraw fails again
    page.wait_for_timeout(1000)
    close_toasts(page)
    box.fill("still no such class")  # a new one, in Chinese
    box.press("Enter")
    page.locator(".toast-title").first.wait_for(timeout=TIMEOUT)
    page.wait_for_timeout(300)
    assert set(toast_titles(page)) == {"错误"}, toast_titles(page)
    assert "未知类别" in page.locator(".toast-body").first.inner_text()
    page.locator("#language").get_by_text("English").click()  # and back
    page.wait_for_function(retitled, arg="Error", timeout=TIMEOUT)
    assert not errors, errors
    context.close()


def test_the_page_scripts_restore_the_language_and_load_plotly_before_any_plot(browser, live_server):
    """What runs when the page loads: the language chosen earlier comes back (its cookie), and plotly.js is
    fetched while the page is idle, so the first plot after an analysis does not wait for it."""
    from app.ui import plotly_chunk

    assert plotly_chunk(), "Gradio's frontend no longer has a PlotlyPlot chunk: the preload needs a new name"
    context, page, errors = open_page(browser, live_server.url)
    page.wait_for_function(
        "(chunk) => performance.getEntriesByType('resource').some((entry) => entry.name.endsWith(chunk))",
        arg=plotly_chunk(),
        timeout=TIMEOUT,
    )
    assert page.locator(".js-plotly-plot").count() == 0  # loaded before any figure asked for it
    page.locator("#language").get_by_text("中文").click()
    page.locator("#input-image").get_by_text("将图片拖放到此处").wait_for(timeout=TIMEOUT)
    cookies = context.cookies()
    finish(context, page, errors)
    # the same browser comes back (an English one: only the cookie says Chinese)
    context, page, errors = open_page(browser, live_server.url, cookies=cookies)
    page.locator("#input-image").get_by_text("将图片拖放到此处").wait_for(timeout=TIMEOUT)  # Gradio's own text
    for title in TITLES["zh-CN"]:
        page.locator("#tabs button[role=tab]").get_by_text(title, exact=True).wait_for(timeout=TIMEOUT)
    page.locator("#language").get_by_text("English").click()
    page.locator("#input-image").get_by_text("Drop an image here").wait_for(timeout=TIMEOUT)
    finish(context, page, errors)


# Words a Chinese page may show in Latin letters: identifiers (models, methods, classes, file types,
# environment variables), names of methods and architectures, and units.
IDENTIFIERS = {
    "API",
    "AUC",
    "CPU",
    "GPU",
    "CVPR",
    "ICCV",
    "Chefer",
    "Vaswani",  # cited in Anatomy §3, as Chefer is
    "DINO",
    "GELU",
    "Grad-CAM",
    "Gradio",
    "IQR",
    "ImageNet",
    "JSON",
    "LRP",
    "MLP",
    "NPZ",
    "PCA",
    "PNG",
    "RGB",
    "ShapeScenes",
    "Transformer",
    "Vision",
    "ViT",
    "ViT-B",  # ViT-B/16, Anatomy §1's reference model
    "VIT_MODEL",
    "English",
    "softmax",
    "logit",
    "nostalgebraist",  # the logit lens (Layers), cited by name
    "d_k",
    "diag",
    "MB",
    "bundled",
    "flow",
    "transformer_attribution",
    "AttnLRP",
    "CP-LRP",
    "LeGrad",
}


def english_words(page, labels: set[str], methods: set[str]) -> set[str]:
    text = page.evaluate("() => document.body.innerText")
    text += " " + page.evaluate(
        "() => [...document.querySelectorAll('.js-plotly-plot svg text')].map(e => e.textContent).join(' ')"
    )
    words = set(re.findall(r"[A-Za-z][A-Za-z_\-]{2,}", text))
    return {w for w in words if w not in IDENTIFIERS | labels | methods}


def test_a_chinese_browser_sees_no_english_outside_identifiers(browser, live_server, artifacts):
    from app.maps import METHODS
    from vit_core.zoo import load_model

    labels = set(load_model("bundled").labels)
    context, page, errors = open_page(browser, live_server.url, locale="zh-CN")
    page.locator("#model-note").get_by_text("十种形状").wait_for(timeout=TIMEOUT)  # the page has loaded its texts
    tab(page, "heads").click()  # before any image too
    page_settled(page)  # the tab's opening event done: Gradio's "processing | 0.3s" is not ours to translate
    assert english_words(page, labels, set(METHODS)) == set()
    tab(page, "overview").click()
    upload(page, get_image("cheetah1.jpg"))
    analysed(page)
    for tab_id in TAB_IDS:
        tab(page, tab_id).click()
        page.wait_for_timeout(300)
        if tab_id == "faithfulness":
            page.locator("#run-faithfulness").click()
            page.locator("#faithfulness-plot .js-plotly-plot").first.wait_for(timeout=TIMEOUT)
        if tab_id == "anatomy":
            page.locator("#anatomy-route .js-plotly-plot").first.wait_for(timeout=TIMEOUT)
        page_settled(page)
        page.wait_for_timeout(700)
        assert english_words(page, labels, set(METHODS)) == set(), tab_id
        page.screenshot(path=str(artifacts / f"zh-{tab_id}.png"), full_page=True)
    finish(context, page, errors)


def walk_through_anatomy(page, name: str, facts_marker: str) -> None:
    """Open the Anatomy tab after an upload, pick a patch, flip the scaling toggle, and see the figures change."""
    analysed(page)
    tab(page, "anatomy").click()
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
    settled(page, "#anatomy-mlp")
    assert readable_plots(page) == 7
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
    # the heads of the block arrive as pictures
    page.locator("#anatomy-heads img").first.scroll_into_view_if_needed()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#anatomy-heads img')].some((img) => img.naturalWidth > 0)",
        timeout=TIMEOUT,
    )


def test_anatomy_walk_through_in_english(browser, live_server, artifacts):
    context, page, errors = open_page(browser, live_server.url)
    upload(page, get_image("lion.jpg"))
    walk_through_anatomy(page, "Anatomy", "values")
    assert "no 1/√" in page.locator("#anatomy-row .gtitle").first.text_content()
    page.screenshot(path=str(artifacts / "anatomy-en.png"), full_page=True)
    finish(context, page, errors)


def test_a_chinese_browser_gets_the_chinese_page(browser, live_server, artifacts):
    context, page, errors = open_page(browser, live_server.url, locale="zh-CN")
    tab(page, "overview").get_by_text("概览").wait_for(timeout=TIMEOUT)
    assert page.get_by_role("button", name="分析").count() == 1
    upload(page, get_image("cheetah1.jpg"))
    page.locator("#summary").get_by_text("个块").wait_for(timeout=TIMEOUT)  # the server's summary, in Chinese
    walk_through_anatomy(page, "解剖", "个值")
    assert "不除以" in page.locator("#anatomy-row .gtitle").first.text_content()
    page.screenshot(path=str(artifacts / "anatomy-zh.png"), full_page=True)
    finish(context, page, errors)


# Records, every frame, whether an <img> showing `earlier` (a source) is visible on the page.
WATCH_EARLIER = """(earlier) => {
    window.sawEarlier = false;
    const look = () => {
        for (const img of document.querySelectorAll('img')) {
            const shown = img.offsetParent && getComputedStyle(img).visibility === 'visible';
            if (shown && img.getAttribute('src') === earlier) window.sawEarlier = true;
        }
        requestAnimationFrame(look);
    };
    look();
}"""


def test_a_new_image_redraws_the_tab_on_screen_and_no_tab_shows_an_earlier_one(browser, live_server, artifacts):
    """On Tokens, a new image redraws Tokens (the analysis draws the Overview itself; another tab on screen is
    drawn by the event that follows). Heads, drawn for the earlier image, never shows its views again: it is
    hidden as stale until it is drawn for the new one."""
    context, page, errors = open_page(browser, live_server.url)
    upload(page, get_image("lion.jpg"))
    analysed(page)
    tab(page, "heads").click()
    earlier_heads = src(page, "#head-view")
    settled(page, "#head-view")
    tab(page, "tokens").click()
    earlier_pca = src(page, "#pca")
    settled(page, "#pca")
    page.evaluate(WATCH_EARLIER, earlier_heads)
    upload(page, get_image("tower.jpg"))
    changed(page, "#pca", earlier_pca)
    assert "stale-views" not in (page.locator("#tab-tokens").get_attribute("class") or "")
    assert "stale-views" in (page.locator("#tab-heads").get_attribute("class") or "")
    tab(page, "heads").click()
    changed(page, "#head-view", earlier_heads)
    settled(page, "#head-view")
    assert page.evaluate("window.sawEarlier") is False
    tab(page, "overview").click()  # stale too (it was not on screen): drawn for the new image when opened
    assert src(page, "#overview-0") != earlier_heads
    page.screenshot(path=str(artifacts / "new-image-on-heads.png"), full_page=True)
    finish(context, page, errors)


VISIBLE = """(selector) => {
    const img = document.querySelector(selector + ' img');
    return !!img && img.offsetParent !== null && getComputedStyle(img).visibility === 'visible';
}"""


def test_while_a_new_image_waits_behind_a_model_run_no_earlier_view_shows(browser, live_server, artifacts):
    """A new photo uploaded while this page's deletion / insertion run holds the model waits in the queue: until
    its analysis is done, the earlier photo's maps and the model's view of it are hidden, not shown beside it."""
    context, page, errors = open_page(browser, live_server.url)
    upload(page, get_image("tower.jpg"))  # cropped: the model's view shows
    analysed(page)
    earlier = src(page, "#overview-0")
    assert page.evaluate(VISIBLE, "#model-view")
    tab(page, "faithfulness").click()
    steps = page.locator("#faithfulness-steps input[type=number]")
    page.wait_for_function("() => !document.querySelector('#run-faithfulness').disabled", timeout=TIMEOUT)
    steps.fill("30")  # the longest run: the new analysis surely waits behind it
    steps.press("Enter")
    page.locator("#run-faithfulness").click()
    tab(page, "overview").click()
    page.wait_for_function(VISIBLE, arg="#overview-0", timeout=TIMEOUT)
    upload(page, get_image("lion.jpg"))
    page.wait_for_function("() => document.querySelector('#input-image img')?.src.includes('lion')", timeout=TIMEOUT)
    page.wait_for_timeout(300)
    waiting = page.locator("#overview-0 img").first.get_attribute("src") == earlier
    assert waiting, "the new analysis did not wait behind the deletion / insertion run"
    assert not page.evaluate(VISIBLE, "#overview-0") and not page.evaluate(VISIBLE, "#model-view")
    page.screenshot(path=str(artifacts / "waiting-behind-a-model-run.png"), full_page=True)
    changed(page, "#overview-0", earlier, timeout_s=120)
    settled(page, "#overview-0")
    assert page.evaluate(VISIBLE, "#overview-0")  # the new maps show
    finish(context, page, errors)


def test_switching_the_model_refits_the_tab_on_screen(browser, live_server, artifacts, timm_tiny_file):
    """From the bundled model (6 blocks x 6 heads) to a ViT-Ti (12 blocks x 3 heads) while on the Heads tab."""
    context, page, errors = open_page(browser, live_server.url)
    upload(page, get_image("lion.jpg"))
    analysed(page)
    tab(page, "heads").click()
    page.get_by_text("Block 5, head mean").wait_for(timeout=TIMEOUT)
    settled(page, "#head-view")
    box = page.locator("#model input")
    box.fill(timm_tiny_file)
    box.press("Enter")
    page.get_by_text("Block 11, head mean").wait_for(timeout=TIMEOUT)  # the new model's last block
    # the slider is fitted to the new model
    page.wait_for_function("() => document.querySelector('#layer input[type=number]').value === '11'", timeout=TIMEOUT)
    assert "12 blocks × 3 heads" in page.locator("#summary").inner_text()
    page.screenshot(path=str(artifacts / "model-switch.png"), full_page=True)
    finish(context, page, errors)


def test_clearing_the_overview_maps_leaves_no_map_and_says_to_choose(browser, live_server, artifacts):
    """The selector's clear-all × (which sends no `input` event, only `change`): no map stays, one line says to
    choose; one map chosen after it: one picture."""
    context, page, errors = open_page(browser, live_server.url)
    upload(page, get_image("lion.jpg"))
    analysed(page)
    maps = page.locator("#overview-maps")
    maps.locator(".remove-all").click()
    for slot in range(4):
        page.locator(f"#overview-{slot}").wait_for(state="hidden", timeout=TIMEOUT)
    assert page.locator("[id^=overview-] img").count() == 0
    page.locator("#overview-none").get_by_text("Choose up to four maps").wait_for(timeout=TIMEOUT)
    page.screenshot(path=str(artifacts / "overview-none.png"), full_page=True)
    maps.locator("input[role=combobox]").fill("rollout")
    page.get_by_role("option", name="Attention rollout (rollout)").click()
    page.locator("#overview-0").get_by_text("Attention rollout", exact=True).first.wait_for(timeout=TIMEOUT)
    src(page, "#overview-0")
    settled(page, "#overview-0")
    assert page.locator("[id^=overview-] img").count() == 1
    assert all(not page.locator(f"#overview-{slot}").is_visible() for slot in (1, 2, 3))
    page.locator("#overview-none").wait_for(state="hidden", timeout=TIMEOUT)
    finish(context, page, errors)
