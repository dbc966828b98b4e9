"""The page: the panel (`app.panel`), one module per tab (`app.tabs.*`), the HTTP API (`app.api`), and the
wiring that crosses them: an analysis redraws the tab on screen, a tab draws when it is opened, the
target class, the overlay style and the language switch redraw what depends on them.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from app import api, panel, service
from app.board import STALE_CSS, Board
from app.i18n import COOKIE, CORE_URL_JS, LANGUAGE_CSS, LANGUAGE_JS, LANGUAGES, TOAST_JS, text
from app.render import OverlayStyle
from app.session import lang
from app.tabs import anatomy, downloads, faithfulness, heads, layers, overview, relevance, tokens
from app.tabs.base import ALWAYS_LAST, I18N, MODEL_RUN, PRIVATE, Shared, T, Tab

TABS = {
    "overview": overview,
    "heads": heads,
    "relevance": relevance,
    "layers": layers,
    "tokens": tokens,
    "faithfulness": faithfulness,
    "anatomy": anatomy,
    "downloads": downloads,
}

__all__ = ["I18N", "PAGE_CSS", "PAGE_JS", "build_demo"]


def plotly_chunk() -> str | None:
    """The file name of Gradio's frontend chunk that holds plotly.js (4.6 MB), or None if Gradio has none."""
    assets = Path(gr.__file__).resolve().parent / "templates" / "frontend" / "assets"
    found = sorted(assets.glob("PlotlyPlot-*.js"))
    return found[0].name if found else None


# Gradio's Plot imports plotly.js the first time a figure is drawn: ~1.4 s on these machines, spent on the
# first tab a user opens after an analysis. The page imports the same chunk (the same URL, so the same module
# instance) while it is idle after loading instead.
PRELOAD_JS = f"""() => {{
    const chunk = {json.dumps(plotly_chunk())};
    const load = (tries) => {{
        const core = {CORE_URL_JS};
        if (!chunk) return;
        if (!core) return tries > 0 ? setTimeout(() => load(tries - 1), 200) : undefined;
        const url = core.replace(/core-[\\w-]+\\.js$/, chunk);
        (window.requestIdleCallback || setTimeout)(() => import(url).catch(() => {{}}));
    }};
    load(25);
}}"""

# While an analysis is pending (queued behind another page's model run, or running), every view of the earlier
# image is hidden: the tabs' content and the model's view. Gradio shows the analysis's status on the top-5 (no
# other event writes it): a script marks the page while that tracker shows. (A CSS `:has()` on the tracker did
# the same without a script, but every status change anywhere then restyled the whole page: a tab's first
# visit took up to 4x longer.)
ANALYSING = "analysing"
ANALYSING_JS = f"""() => {{
    const watch = (tries) => {{
        const top5 = document.querySelector('#top5');
        if (!top5) return tries > 0 ? setTimeout(() => watch(tries - 1), 200) : undefined;
        const update = () => {{
            const tracker = top5.querySelector('[data-testid="status-tracker"]');
            document.body.classList.toggle('{ANALYSING}', !!tracker && !tracker.classList.contains('hide'));
        }};
        const changes = {{ attributes: true, attributeFilter: ['class'], childList: true, subtree: true }};
        new MutationObserver(update).observe(top5, changes);
        update();
    }};
    watch(50);
}}"""
ANALYSING_CSS = f"body.{ANALYSING} :is(.tabitem > *, #model-view) {{ visibility: hidden; }}"

# Runs once when the page loads (`launch(js=...)`).
PAGE_JS = f"() => {{ ({LANGUAGE_JS})(); ({TOAST_JS})(); ({PRELOAD_JS})(); ({ANALYSING_JS})(); }}"
PAGE_CSS = "\n".join([LANGUAGE_CSS, STALE_CSS, ANALYSING_CSS])

# Switch Gradio's own locale (every gr.I18n label, tab titles and Gradio's built-in texts) from the page:
# `changeLocale` is exported by Gradio's frontend core module; the module is already loaded, so importing
# its URL again returns the same instance. The cookie tells the server which language to write.
# tests/browser checks this still works, so a Gradio upgrade that renames it fails loudly. Gradio 6.31 itself
# translates a few built-in tooltips only when it draws their element (an image's Download, a multiselect's
# Remove and Clear): those keep the earlier language until drawn again, as after Gradio's own Settings switch.
SWITCH_JS = f"""async (choice, ...rest) => {{
    document.cookie = '{COOKIE}=' + encodeURIComponent(choice) + '; path=/; SameSite=Lax';
    const url = {CORE_URL_JS};
    if (url) {{
        const core = await import(url);
        core.changeLocale(choice);
    }} else {{
        console.error('vit-explorer: Gradio core module not found; the language cannot be switched');
    }}
    return [choice, ...rest];
}}"""


def relabel(choice, session, warning, model, request: gr.Request = None):
    """After a language switch: the texts the server wrote, in the new language (the summary with the warning
    it opened with, if any), and the tab titles (Gradio re-translates only the tabs it has drawn)."""
    language = choice if choice in LANGUAGES else lang(request)
    return (
        panel.summary_text(session, language, warning),
        gr.Dropdown(choices=service.model_choices(language)),
        panel.model_note((session or {}).get("model") or model, language),
        *(gr.Tab(label=text(f"tab.{tab_id}", language)) for tab_id in TABS),
    )


def initial_texts(session, warning, model, request: gr.Request = None):
    """When the page opens: the language toggle on the page's language, the server's texts in it."""
    language = lang(request)
    return (language, *relabel(language, session, warning, model, request))


def build_demo() -> gr.Blocks:
    """The whole page. Importable without launching (Spaces imports `app.demo`)."""
    # Gradio keeps every picture it serves on disk: drop those older than an hour, every half hour.
    with gr.Blocks(title="ViT attention explorer", delete_cache=(1800, 3600)) as demo:
        api.register()  # first: the public names go to the API, not to the page's private events
        session = gr.State(None, time_to_live=3600)
        shown = gr.State("overview")  # the tab on screen
        style = gr.State(OverlayStyle())
        with gr.Row(equal_height=True):
            gr.Markdown(T("intro"))
            language = gr.Radio(
                [(name, code) for code, name in LANGUAGES.items()],
                value="en",
                label=T("label.language"),  # read by screen readers; not shown
                show_label=False,
                container=False,
                scale=0,
                min_width=190,
                elem_id="language",
                interactive=True,
            )
        top = panel.build()
        shared = Shared(session, shown, top.target, style)
        tabs: dict[str, Tab] = {}
        with gr.Tabs(elem_id="tabs"):
            for tab_id, module in TABS.items():
                with gr.Tab(T(f"tab.{tab_id}"), id=tab_id, elem_id=f"tab-{tab_id}") as tab_ui:
                    tabs[tab_id] = module.build(shared)
                tabs[tab_id].ui = tab_ui

        # ---- one event per action: the tab on screen is fitted and drawn in it (app.board) ---------------
        board = Board(tabs, shared)
        for tab_id, tab in tabs.items():
            tab.ui.select(**board.opened(tab_id), **PRIVATE)

        # ---- an analysis: the image, the model, or the button; the tab on screen follows, the rest go stale -
        analyzed = board.analyzed(panel.outcome, top.analysis_inputs(session), top.analysis_outputs(session))
        # a new picture while the previous one is still being analysed is not dropped
        gr.on(
            [top.run.click, top.image.change, top.model.input, top.labels.submit],
            **analyzed,
            **MODEL_RUN,
            **PRIVATE,
            **ALWAYS_LAST,
            # the progress shows where the answer appears first; a spinner on each of its outputs would keep
            # the browser busy while the model runs on the same cores
            show_progress_on=[top.summary, top.predictions],
        )
        # another tab on screen is drawn right after (the analysis carries the first tab's views only)
        board.pending.change(**board.followed(), **PRIVATE, **ALWAYS_LAST)

        # ---- what redraws with the overlay style, the target, a prompt, the language ---------------------
        gr.on(
            [c.input for c in top.style_controls],
            **board.redraw_shown(style, panel.set_style, top.style_controls),
            **PRIVATE,
            **ALWAYS_LAST,
        )
        top.target.input(**board.redraw_shown(top.target), **PRIVATE, **ALWAYS_LAST)
        # the menu lists the image's top 5; every class arrives when it gets focus
        top.target.focus(
            panel.every_class, [session, top.listed], [top.target, top.listed], show_progress="hidden", **PRIVATE
        )
        # a class clicked in the top-5 becomes the target
        top.predictions.select(
            **board.redraw_shown(top.target, panel.pick_prediction, [session, top.target], selection=True),
            **PRIVATE,
            **ALWAYS_LAST,
        )
        # a prompt (image–text models) becomes the target: the class-specific maps explain the phrase
        top.prompt.submit(**board.redraw_shown(top.target, panel.use_prompt, [top.prompt, session]), **PRIVATE)
        texts = [top.summary, top.model, top.note, *(tab.ui for tab in tabs.values())]
        switched = language.input(relabel, [language, session, top.warning, top.model], texts, js=SWITCH_JS, **PRIVATE)
        switched.then(**board.redraw_shown(), **PRIVATE)
        demo.load(initial_texts, [session, top.warning, top.model], [language, *texts], **PRIVATE)
    return demo
