"""The page: the panel (`app.panel`), one module per tab (`app.tabs.*`), the HTTP API (`app.api`), and the
wiring that crosses them: an analysis redraws the tab on screen, a tab draws when it is opened, the
target class, the overlay style and the language switch redraw what depends on them.
"""

from __future__ import annotations

import gradio as gr

from app import api, panel, service
from app.i18n import LANGUAGE_CSS, LANGUAGE_JS, LANGUAGES, text
from app.render import OverlayStyle
from app.session import analysis_of, lang
from app.tabs import anatomy, downloads, faithfulness, heads, layers, overview, relevance, tokens
from app.tabs.base import ALWAYS_LAST, I18N, MODEL_RUN, PRIVATE, Shared, T, Tab, lazy, redraw
from vit_core.errors import VitCoreError

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

# Runs once when the page loads (`launch(js=...)`).
PAGE_JS = LANGUAGE_JS
PAGE_CSS = LANGUAGE_CSS

# Switch Gradio's own locale (every gr.I18n label, tab titles and Gradio's built-in texts) from the page:
# `changeLocale` is exported by Gradio's frontend core module; the module is already loaded, so importing
# its URL again returns the same instance. The cookie tells the server which language to write.
# tests/browser checks this still works, so a Gradio upgrade that renames it fails loudly.
SWITCH_JS = """async (choice, ...rest) => {
    document.cookie = 'vit_explorer_lang=' + encodeURIComponent(choice) + '; path=/; SameSite=Lax';
    const url = performance.getEntriesByType('resource').map((entry) => entry.name)
        .find((name) => /\\/assets\\/core-[\\w-]+\\.js$/.test(name));
    if (url) {
        const core = await import(url);
        core.changeLocale(choice);
    } else {
        console.error('vit-explorer: Gradio core module not found; the language cannot be switched');
    }
    return [choice, ...rest];
}"""


def fit_once(tab: Tab):
    """Fit the tab's controls to the session's model, once per model; inactive with the empty line before
    any analysis. Gradio keeps the values of controls in a tab that was never opened on the page, so a
    hidden slider whose range changed would send its old value: tabs are fitted when they are on screen."""
    count = len(tab.controls)

    def fit(session, fitted):
        model = (session or {}).get("model") if (session or {}).get("key") else None
        if model is not None and model == fitted:
            return tuple(gr.skip() for _ in range(count + len(tab.resets) + 2))
        if model is None:
            controls = [gr.update(interactive=False) for _ in range(count)]
        else:
            try:
                analysis = analysis_of(session)
            except VitCoreError:
                return tuple(gr.skip() for _ in range(count + len(tab.resets) + 2))
            controls = list(tab.fit(analysis)) if tab.fit else []
        return (gr.update(visible=model is None), *controls, *(None for _ in tab.resets), model)

    return fit


def clear_other_tabs(drawn: list[tuple[str, list]]):
    """A new analysis (or a failed one): every tab but the one on screen is emptied, so no picture of an
    earlier image waits in a tab that is opened later."""

    def empty(component):
        # a table shows placeholder headers when empty: hidden until drawn again
        return gr.update(value=None, visible=False) if isinstance(component, gr.Dataframe) else None

    def clear(shown: str):
        return tuple(empty(c) if tab_id != shown else gr.skip() for tab_id, outputs in drawn for c in outputs)

    return clear


def chain(first, steps: list[dict]):
    """`first(**steps[0])`, then each next step after the previous one, whatever it returned."""
    if not steps:
        return first
    event = first(**steps[0])
    for args in steps[1:]:
        event = event.then(**args)
    return event


def relabel(choice, session, model, request: gr.Request = None):
    """After a language switch: the texts the server wrote, in the new language, and the tab titles
    (Gradio re-translates only the tabs it has drawn)."""
    language = choice if choice in LANGUAGES else lang(request)
    return (
        panel.summary_text(session, language),
        gr.Dropdown(choices=service.model_choices(language)),
        panel.model_note((session or {}).get("model") or model, language),
        *(gr.Tab(label=text(f"tab.{tab_id}", language)) for tab_id in TABS),
    )


def initial_texts(session, model, request: gr.Request = None):
    """When the page opens: the language toggle on the page's language, the server's texts in it."""
    language = lang(request)
    return (language, *relabel(language, session, model, request))


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

        # ---- each tab: fitted and drawn when it is on screen --------------------------------------------
        # Each tab's steps run in order (a fitted slider first, then the views that read it); the tabs'
        # chains run side by side, and only the tab on screen does any work.
        on_screen: dict[str, list[dict]] = {}
        drawn_by_tab: list[tuple[str, list]] = []
        for tab_id, tab in tabs.items():
            fitted = gr.State(None)
            outputs = [tab.empty, *tab.controls, *tab.resets, fitted]
            fit = redraw(fit_once(tab), [session, fitted], outputs)
            on_screen[tab_id] = [lazy(shared, tab_id, args) for args in [fit, *tab.redraws]]
            select = tab.ui.select(lambda tab_id=tab_id: tab_id, None, shown, **PRIVATE)
            chain(select.then, on_screen[tab_id])
            drawn_by_tab.append((tab_id, [c for args in tab.redraws for c in args["outputs"]] + tab.outputs))

        # ---- an analysis: the image, the model, or the button; every tab follows the session -------------
        analyzed = dict(
            fn=panel.analyze,
            inputs=[top.image, top.model, session, top.labels, top.prompt],
            outputs=[
                session,
                *(top.predictions, top.target, top.summary, top.model, top.note, top.seen, top.labels, top.prompt),
            ],
            **MODEL_RUN,
            **PRIVATE,
            **ALWAYS_LAST,  # a new picture while the previous one is still being analysed is not dropped
        )
        gr.on([top.run.click, top.image.change, top.model.input, top.labels.submit], **analyzed)
        every_output = [c for _, outputs in drawn_by_tab for c in outputs]
        session.change(**redraw(clear_other_tabs(drawn_by_tab), [shown], every_output))
        for steps in on_screen.values():
            chain(session.change, steps)

        # ---- what redraws with the target class, the overlay style, the language -----------------------
        styled = gr.on([c.input for c in top.style_controls], panel.set_style, top.style_controls, style, **PRIVATE)
        texts = [top.summary, top.model, top.note, *(tab.ui for tab in tabs.values())]
        switched = language.input(relabel, [language, session, top.model], texts, js=SWITCH_JS, **PRIVATE)
        # a prompt (image–text models) becomes the target: the class-specific maps explain the phrase
        prompted = top.prompt.submit(panel.use_prompt, [top.prompt, session], top.target, **PRIVATE)
        for tab_id, tab in tabs.items():
            redraws = [lazy(shared, tab_id, args) for args in tab.redraws]
            chain(top.target.input, [args for args in redraws if top.target in args["inputs"]])
            chain(prompted.then, [args for args in redraws if top.target in args["inputs"]])
            chain(styled.then, [args for args in redraws if style in args["inputs"]])
            chain(switched.then, redraws)
        demo.load(initial_texts, [session, top.model], [language, *texts], **PRIVATE)
    return demo
