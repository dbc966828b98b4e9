"""An image–text model in the browser: a random CLIP saved with a tiny tokenizer, offered through VIT_MODELS.
Type labels and see them in the top-5; type a prompt and see the relevance map change with it."""

import pytest
from gradio.media import get_image

from tests.browser.test_page import TIMEOUT, changed, finish, open_page, settled, src, upload
from tests.clip_models import tiny_hf_clip

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def clip_server(tmp_path_factory):
    from tests.live import start, stop

    model = f"hf:{tiny_hf_clip(tmp_path_factory.mktemp('clip'))}"
    server = start(tmp_path_factory.mktemp("clip-server") / "server.log", VIT_MODELS=model, VIT_MODEL=model)
    yield server
    stop(server)


def test_labels_in_the_top5_and_the_map_follows_the_prompt(browser, clip_server, artifacts):
    context, page, errors = open_page(browser, clip_server.url)
    upload(page, get_image("bus.png"))
    src(page, "#overview-1")
    settled(page, "#overview-1")
    labels, prompt = page.locator("#labels textarea"), page.locator("#prompt textarea, #prompt input").first
    labels.wait_for(timeout=TIMEOUT)
    prompt.wait_for(timeout=TIMEOUT)

    labels.fill("a dog, a cat, a red bus")
    labels.press("Enter")
    top5 = page.locator("#top5")
    for label in ("a dog", "a cat", "a red bus"):
        top5.get_by_text(label).first.wait_for(timeout=TIMEOUT)
    before = src(page, "#overview-2")  # the top label's map, now that there are labels
    settled(page, "#overview-2")

    prompt.fill("a red bus on a street")
    prompt.press("Enter")
    first = changed(page, "#overview-2", before)
    settled(page, "#overview-2")
    prompt.fill("a green tree")
    prompt.press("Enter")
    changed(page, "#overview-2", first)
    settled(page, "#overview-2")
    page.screenshot(path=str(artifacts / "clip-prompt.png"), full_page=True)
    finish(context, page, errors)
