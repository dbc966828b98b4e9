"""The page's texts in every language: one JSON file per language in `app/locales/` (a new language is a
new file, no code change).

Static labels go through `gr.I18n` (the browser translates them by its locale; Gradio's Settings panel
switches it). Texts the server writes (summaries, captions, figure titles, error messages) follow the
same choice: the page keeps a cookie with the language the frontend shows (`LANGUAGE_JS`), and without
it the request's `Accept-Language` decides. English (`en.json`) is the source and the fallback.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

LOCALES = Path(__file__).resolve().parent / "locales"
DEFAULT = "en"


@cache
def catalogs() -> dict[str, dict[str, str]]:
    """language tag -> key -> text, one entry per file in app/locales."""
    return {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(LOCALES.glob("*.json"))}


def gradio_translations() -> dict[str, dict[str, str]]:
    """The catalogs for `gr.I18n`, each also under its base tag (zh-CN also answers a browser set to zh)."""
    merged = dict(catalogs())
    for tag, texts in catalogs().items():
        merged.setdefault(tag.split("-")[0], texts)
    return merged


def language_of(accept_language: str | None) -> str:
    """The best catalog for an `Accept-Language` header ("zh-CN,zh;q=0.9,en;q=0.8"), else English."""
    if not accept_language:
        return DEFAULT
    wanted = []
    for part in accept_language.split(","):
        tag, _, quality = part.strip().partition(";q=")
        try:
            wanted.append((float(quality or 1.0), tag.strip()))
        except ValueError:
            continue
    tags = {tag.lower(): tag for tag in catalogs()}
    bases = {tag.split("-")[0].lower(): tag for tag in catalogs()}
    for _, tag in sorted(wanted, key=lambda item: -item[0]):
        match = tags.get(tag.lower()) or bases.get(tag.split("-")[0].lower())
        if match:
            return match
    return DEFAULT


COOKIE = "vit_explorer_lang"
LANGUAGES = {"en": "English", "zh-CN": "中文"}  # the page's toggle; each has a file in app/locales

# Runs once when the page loads (launch(js=...)): a language chosen earlier with the toggle (its cookie)
# becomes Gradio's locale again, through the same `changeLocale` the toggle uses (app.ui.SWITCH_JS).
LANGUAGE_JS = f"""() => {{
    const match = document.cookie.match(/(?:^|; ){COOKIE}=([^;]*)/);
    if (!match) return;
    const choice = decodeURIComponent(match[1]);
    const apply = async (tries) => {{
        const url = performance.getEntriesByType('resource').map((entry) => entry.name)
            .find((name) => /\\/assets\\/core-[\\w-]+\\.js$/.test(name));
        if (!url) return tries > 0 ? setTimeout(() => apply(tries - 1), 200) : undefined;
        (await import(url)).changeLocale(choice);
    }};
    apply(25);
}}"""
LANGUAGE_CSS = ".empty-state { color: var(--body-text-color-subdued); }"


def language_of_request(cookie_header: str | None, accept_language: str | None) -> str:
    """The page's language from its cookie (a known catalog), else from `Accept-Language`."""
    if cookie_header:
        from http.cookies import SimpleCookie

        cookies = SimpleCookie()
        try:
            cookies.load(cookie_header)
        except Exception:  # a malformed cookie header from elsewhere must not fail the request
            cookies = SimpleCookie()
        if COOKIE in cookies:
            from urllib.parse import unquote

            chosen = unquote(cookies[COOKIE].value)
            if chosen in catalogs():
                return chosen
    return language_of(accept_language)


def text(key: str, language: str = DEFAULT, **values: object) -> str:
    """The text of `key` in `language` (English if that catalog lacks it), with `values` filled in."""
    template = catalogs().get(language, {}).get(key) or catalogs()[DEFAULT][key]
    return template.format(**values)


# The core's one-sentence errors (English), matched to catalog keys; named groups fill the translation.
ERRORS = [
    ("error.not_image", r"(?P<name>.+) is not an image file that can be read \(use .*\)\."),
    ("error.corrupt", r"(?P<name>.+) is truncated or corrupt and cannot be decoded\."),
    ("error.empty", r"(?P<name>.+) is empty \(0 bytes\)\."),
    ("error.bomb", r"(?P<name>.+) is too large to open safely \(over (?P<limit>\d+) MP\)\."),
    ("error.pixels", r"(?P<name>.+) is (?P<size>\d+x\d+) pixels \((?P<mp>\d+) MP\); the limit is (?P<limit>\d+) MP\."),
    ("error.aspect", r"(?P<name>.+) is (?P<size>\d+x\d+) pixels, an aspect ratio beyond (?P<limit>\d+):1 .*\."),
    ("error.no_image", r"[Uu]pload an image first\."),
    ("error.unknown_model", r"[Uu]nknown model (?P<name>'.*?'); .*\."),
    ("error.no_head", r"[Tt]his model has no classification head, so (?P<what>.+) are not available\."),
    (
        "error.out_of_range",
        r"(?P<what>.+?) (?P<value>\(?-?[\d, ]+\)?) (?:is out of range|is outside)[;,]? (?P<rest>.*)\.",
    ),
]


def translate_error(message: str, language: str) -> str:
    """A core error sentence in `language`; a sentence without a pattern keeps its English words."""
    if language == DEFAULT:
        return message
    for key, pattern in ERRORS:
        found = re.fullmatch(pattern, message)
        if found and key in catalogs().get(language, {}):
            return text(key, language, **found.groupdict())
    return text("error.generic", language, message=message)


def error_text(error, language: str) -> str:
    """A core error (`VitCoreError`) as one sentence in `language`."""
    return translate_error(str(error), language)
