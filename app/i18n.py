"""The page's texts in every language: one JSON file per language in `app/locales/` (a new language is a
new file, no code change).

Static labels go through `gr.I18n` (the browser translates them by its locale; Gradio's Settings panel
switches it). Texts the server writes (summaries, captions, figure titles, error messages) follow the
same choice: the page keeps a cookie with the language the frontend shows (`LANGUAGE_JS`), and without
it the request's `Accept-Language` decides. English (`en.json`) is the source and the fallback.

Errors are data (`VitCoreError(key, **params)`): their English sentences live in `vit_core.errors.MESSAGES`,
and another language's catalog holds `error.<key>` with the same placeholders and `what.<word>` for the words
of `vit_core.errors.WHAT`. An English sentence is never parsed back.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from vit_core.errors import VitCoreError, render

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

# A JS expression: the URL of Gradio's frontend core module among those the page loaded (undefined before it
# loads); importing it again returns the same module instance, whose exports the page's scripts use.
CORE_URL_JS = (
    "performance.getEntriesByType('resource').map((entry) => entry.name)"
    ".find((name) => /\\/assets\\/core-[\\w-]+\\.js$/.test(name))"
)

# Runs once when the page loads (launch(js=...)): a language chosen earlier with the toggle (its cookie)
# becomes Gradio's locale again, through the same `changeLocale` the toggle uses (app.ui.SWITCH_JS).
LANGUAGE_JS = f"""() => {{
    const match = document.cookie.match(/(?:^|; ){COOKIE}=([^;]*)/);
    if (!match) return;
    const choice = decodeURIComponent(match[1]);
    const apply = async (tries) => {{
        const url = {CORE_URL_JS};
        if (!url) return tries > 0 ? setTimeout(() => apply(tries - 1), 200) : undefined;
        (await import(url)).changeLocale(choice);
    }};
    apply(25);
}}"""
LANGUAGE_CSS = ".empty-state { color: var(--body-text-color-subdued); }"

TOASTS = ("error", "warning", "info", "success")  # Gradio's kinds of notification


def toast_titles() -> dict[str, dict[str, str]]:
    """language tag (and base tag) -> a notification's kind -> its title (`toast.<kind>`)."""
    return {tag: {kind: texts[f"toast.{kind}"] for kind in TOASTS} for tag, texts in gradio_translations().items()}


# Runs once when the page loads (launch(js=...)). Gradio 6.31 titles a notification with its kind, capitalised
# ("Warning"), in no language: its toast translates nothing and ignores the title gr.Warning/gr.Error send.
# The page writes the title in Gradio's locale (svelte-i18n keeps it in <html lang>) into each toast as it
# appears, and into those on screen when the language changes. Svelte compares a title with the text it last
# wrote itself, not with the node's, so it does not write its own back. tests/browser checks the titles, so a
# Gradio that changes its toast fails loudly.
TOAST_JS = f"""() => {{
    const titles = {json.dumps(toast_titles(), ensure_ascii=False)};
    const retitle = (wrap) => {{
        const language = document.documentElement.lang || '{DEFAULT}';
        const words = titles[language] || titles[language.split('-')[0]] || titles['{DEFAULT}'];
        for (const title of wrap.querySelectorAll('.toast-title')) {{
            const kind = [...title.classList].find((name) => name in words);
            const first = title.firstChild;
            if (kind && first && first.nodeType === Node.TEXT_NODE && first.nodeValue !== words[kind] + ' ') {{
                first.nodeValue = words[kind] + ' ';
            }}
        }}
    }};
    const watch = (tries) => {{
        const wrap = document.querySelector('.toast-wrap');
        if (!wrap) return tries > 0 ? setTimeout(() => watch(tries - 1), 200) : undefined;
        const toasts = {{ childList: true, characterData: true, subtree: true }};
        new MutationObserver(() => retitle(wrap)).observe(wrap, toasts);
        const lang = {{ attributes: true, attributeFilter: ['lang'] }};
        new MutationObserver(() => retitle(wrap)).observe(document.documentElement, lang);
        retitle(wrap);
    }};
    watch(50);
}}"""


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


def counted(key: str, count: int, language: str = DEFAULT) -> str:
    """`count` with its noun: the text of `<key>_one` for exactly one, of `<key>_many` otherwise (a language
    without plurals writes both alike), and of `<key>_none` for zero where the catalog words it ("no outlier
    patches")."""
    if count == 0 and f"{key}_none" in catalogs()[DEFAULT]:
        return text(f"{key}_none", language)
    return text(f"{key}_{'one' if count == 1 else 'many'}", language, count=count)


# Parameters that name a place on the server's disk, by error key: the command line shows the place, the page
# and the API never do (a public server must not show its paths) and say these words (`place.<word>`) instead.
SERVER_PLACES = {"host_unreachable": {"folder": "place.download_cache"}}


def error_text(error: VitCoreError, language: str = DEFAULT) -> str:
    """The sentence of `error` in `language` (`keyed_error_text`)."""
    return keyed_error_text(error.key, error.params, language)


def keyed_error_text(key: str, params: dict, language: str = DEFAULT) -> str:
    """The sentence of the error `key` with `params` in `language`: the catalog's `error.<key>` filled with
    the parameters (a `what` word through `what.<word>`, a place on the server's disk through
    `SERVER_PLACES`); English, and any language without that key, use `vit_core`'s own template."""
    texts = catalogs().get(language, {})
    params = dict(params)
    for name, place in SERVER_PLACES.get(key, {}).items():
        params[name] = text(place, language)
    template = texts.get(f"error.{key}") if language != DEFAULT else None
    if template is None:
        return render(key, params)
    if "what" in params:
        params["what"] = texts.get(f"what.{params['what']}", params["what"])
    return template.format(**params)
