"""The page: one function per tab creates its components and wires its own events; `build_demo()`
composes them and wires what crosses tabs (an upload redraws every tab on screen). What each event
does is in `app.handlers`.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
from PIL import Image

from app import handlers, service
from app.i18n import gradio_translations
from app.render import COLORMAPS

SCENES = Path(__file__).resolve().parent.parent / "assets" / "scenes"
PRIVATE = dict(api_visibility="private")
MODEL_RUN = dict(concurrency_id="model", concurrency_limit=1)  # one model run at a time; redraws do not wait
ALWAYS_LAST = dict(trigger_mode="always_last")


class UploadedImage(gr.Image):
    """gr.Image that hands the uploaded file's path over unopened, so `vit_core.images.load_image` gives
    the one-sentence message for a broken, empty or enormous file instead of a Pillow traceback."""

    is_template = True  # the frontend is gr.Image's

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except Exception:
            if payload is not None and payload.path:
                return payload.path
            raise gr.Error("The uploaded file could not be read as an image.") from None


I18N = gr.I18n(**gradio_translations())


def T(key: str):  # noqa: N802 - the conventional name of a translation marker
    """A label the browser translates (gr.I18n)."""
    return I18N(key)


def example_images() -> list[list[str]]:
    """Gradio's own photos and the first bundled scenes (their masks stay out of the gallery)."""
    photos = [gr.media.get_image(name) for name in ("cheetah1.jpg", "lion.jpg", "bus.png", "tower.jpg")]
    scenes = sorted(str(p) for p in SCENES.glob("*.png") if not p.stem.endswith("_mask"))[:8]
    return [[path] for path in photos + scenes]


class OutputImage(gr.Image):
    """gr.Image whose pictures are written once and atomically, named by content.

    Gradio rewrites a cached picture in place each time an event returns the same image; two views
    that show the same picture (the overview's raw attention and the default head view) could then
    truncate the file while the browser reads it (net::ERR_CONTENT_LENGTH_MISMATCH).
    """

    is_template = True  # the frontend is gr.Image's

    def postprocess(self, value):
        if isinstance(value, Image.Image):
            value = save_png_once(value, Path(self.GRADIO_CACHE))
        return super().postprocess(value)


def save_png_once(picture: Image.Image, cache_dir: Path) -> str:
    """PNG bytes under cache_dir/<sha256>/image.png, written to a temporary name and renamed."""
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    data = buffer.getvalue()
    path = cache_dir / hashlib.sha256(data).hexdigest()[:32] / "image.png"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
            handle.write(data)
        os.replace(handle.name, path)
    return str(path)


def _picture(label: str, elem_id: str | None = None) -> gr.Image:
    """An output image: PNG (not webp), not editable, with download and fullscreen buttons."""
    return OutputImage(
        label=label, format="png", interactive=False, buttons=["download", "fullscreen"], elem_id=elem_id
    )


@dataclass
class Shared:
    """What every tab reads: the session's analysis key, the tab on screen, the target class, the overlay style."""

    session: gr.State
    shown: gr.State
    target: gr.Dropdown
    style: list[gr.components.Component]


@dataclass
class Tab:
    """A tab's redraws: each a dict of event arguments (fn, inputs, outputs) that redraws part of it from
    the session. `setup` fits the tab's controls to the model's shape, within the upload's own event."""

    redraws: list[dict]
    setup: dict | None = None
    ui: gr.Tab | None = field(default=None, repr=False)
    after_upload: list[dict] = field(default_factory=list, repr=False)


def redraw(fn, inputs: list, outputs: list) -> dict:
    return dict(fn=fn, inputs=inputs, outputs=outputs, **PRIVATE)


def overview_tab(shared: Shared) -> Tab:
    """The four main maps side by side."""
    titles = [T(f"overview.{method}") for method in handlers.OVERVIEW_METHODS]
    with gr.Row():
        pictures = [
            _picture(title, f"overview-{method}")
            for method, title in zip(handlers.OVERVIEW_METHODS, titles, strict=True)
        ]
    return Tab([redraw(handlers.draw_overview, [shared.session, shared.target, *shared.style], pictures)])


def heads_tab(shared: Shared) -> Tab:
    """One head enlarged (click a patch to query it), the block's heads, the layers x heads matrix."""
    query = gr.State(None)
    with gr.Row():
        layer = gr.Slider(0, 11, value=11, step=1, label=T("label.block"), elem_id="layer")
        head = gr.Dropdown(["mean", "max"], value="mean", label=T("label.head"), elem_id="head")
        mass = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label=T("label.mass"), elem_id="mass")
        reset = gr.Button(T("button.reset_query"), size="sm")
    with gr.Row():
        with gr.Column(scale=1):
            head_view = _picture(T("label.head_view"), "head-view")
            caption = gr.Markdown()
        with gr.Column(scale=1):
            matrix = _picture(T("label.matrix"), "matrix")
    gallery = gr.Gallery(label=T("label.heads_gallery"), columns=6, height=260, format="png", elem_id="heads-gallery")
    draw = redraw(
        handlers.draw_heads,
        [shared.session, layer, head, query, mass, *shared.style],
        [head_view, gallery, matrix, caption],
    )
    gr.on([layer.input, head.input, mass.input, query.change], **lazy(shared, "heads", draw), **ALWAYS_LAST)
    head_view.select(handlers.select_query, [shared.session], [query], **PRIVATE)
    reset.click(lambda: None, None, [query], **PRIVATE)
    shown_draw = lazy(shared, "heads", draw)
    matrix.select(handlers.select_thumbnail, [shared.session], [layer, head], **PRIVATE).success(**shown_draw)
    gallery.select(handlers.select_gallery_head, None, [head], **PRIVATE).success(**shown_draw)
    setup = redraw(handlers.setup_heads, [shared.session], [layer, head, query])
    return Tab([draw], setup)


def relevance_tab(shared: Shared) -> Tab:
    """One method with its knobs."""
    with gr.Row():
        method = gr.Radio(list(handlers.MAP_METHODS), value="rollout", label=T("label.method"), elem_id="method")
        head_fusion = gr.Radio(
            [(T(f"choice.{f}"), f) for f in ("mean", "max", "min")], value="mean", label=T("label.head_fusion")
        )
        discard = gr.Slider(0, 0.95, value=0.0, step=0.05, label=T("label.discard"))
        start_layer = gr.Slider(0, 11, value=0, step=1, label=T("label.start_block"))
    view = _picture(T("label.map"), "method-view")
    gr.Markdown(T("relevance.not_here"))
    draw = redraw(
        handlers.draw_method,
        [shared.session, method, head_fusion, discard, start_layer, shared.target, *shared.style],
        [view],
    )
    gr.on(
        [method.input, head_fusion.input, discard.input, start_layer.input],
        **lazy(shared, "relevance", draw),
        **ALWAYS_LAST,
    )
    return Tab([draw], redraw(handlers.setup_relevance, [shared.session], [start_layer]))


def layers_tab(shared: Shared) -> Tab:
    """Per-layer predictions and per-head statistics."""
    with gr.Row():
        heatmap = gr.Plot(label=T("label.layer_heatmap"), elem_id="layer-heatmap")
        line = gr.Plot(label=T("label.class_line"), elem_id="class-line")
    scatter = gr.Plot(label=T("label.head_scatter"), elem_id="head-scatter")
    return Tab([redraw(handlers.draw_layers, [shared.session, shared.target], [heatmap, line, scatter])])


def tokens_tab(shared: Shared) -> Tab:
    """PCA of the tokens, their norms, similarity to a clicked patch, position similarity."""
    patch = gr.State(None)
    token_layer = gr.Slider(0, 12, value=12, step=1, label=T("label.token_layer"), elem_id="token-layer")
    with gr.Row():
        pca = _picture(T("label.pca"))
        similarity = _picture(T("label.similarity"), "similarity")
        positions = _picture(T("label.positions"))
    norms = gr.Plot(label=T("label.token_norms"))
    draw = redraw(
        handlers.draw_tokens, [shared.session, token_layer, patch, *shared.style], [pca, norms, similarity, positions]
    )
    gr.on([token_layer.input, patch.change], **lazy(shared, "tokens", draw), **ALWAYS_LAST)
    similarity.select(handlers.select_token_patch, [shared.session], [patch], **PRIVATE)
    return Tab([draw], redraw(handlers.setup_tokens, [shared.session], [token_layer, patch]))


def faithfulness_tab(shared: Shared) -> Tab:
    """Deletion / insertion curves on demand; head ablation and importance."""
    with gr.Row():
        steps = gr.Slider(2, 30, value=16, step=1, label=T("label.steps"))
        run = gr.Button(T("button.run_faithfulness"), elem_id="run-faithfulness")
    curves = gr.Plot(label=T("label.curves"), elem_id="faithfulness-plot")
    table = gr.JSON(label=T("label.auc"), elem_id="faithfulness-table")
    with gr.Row():
        layer = gr.Slider(0, 11, value=11, step=1, label=T("label.ablate_block"))
        heads = gr.CheckboxGroup([], label=T("label.ablate_heads"))
        ablate = gr.Button(T("button.ablate"))
        sweep = gr.Button(T("button.importance"))
    result = gr.Markdown()
    importance = gr.Plot(label=T("label.importance"))
    run.click(
        handlers.run_faithfulness, [shared.session, shared.target, steps], [curves, table], **MODEL_RUN, **PRIVATE
    )
    ablate.click(handlers.run_ablation, [shared.session, layer, heads, shared.target], result, **MODEL_RUN, **PRIVATE)
    sweep.click(handlers.run_importance, [shared.session, layer, shared.target], importance, **MODEL_RUN, **PRIVATE)
    return Tab([], redraw(handlers.setup_faithfulness, [shared.session], [layer, heads]))


def anatomy_tab(shared: Shared) -> Tab:
    """How a ViT sees, step by step, on the user's image (`app.anatomy_tab`)."""
    patch = gr.State(None)
    gr.Markdown(T("anatomy.intro"))
    with gr.Row():
        layer = gr.Slider(0, 11, value=0, step=1, label=T("label.block"), elem_id="anatomy-layer")
        head = gr.Dropdown(["0"], value="0", label=T("label.head"), elem_id="anatomy-head")
        query = gr.Radio(
            [(T("anatomy.query_class"), "class"), (T("anatomy.query_patch"), "patch")],
            value="class",
            label=T("anatomy.query"),
            elem_id="anatomy-query",
        )
        scaled = gr.Checkbox(True, label=T("anatomy.scaled"), elem_id="anatomy-scaled")
    gr.Markdown(T("anatomy.step1"))
    with gr.Row():
        grid = _picture(T("anatomy.grid_label"), "anatomy-grid")
        pixels = _picture(T("anatomy.pixels_label"), "anatomy-pixels")
        with gr.Column():
            vector = gr.Plot(label=T("anatomy.vector_label"), elem_id="anatomy-vector")
            embedding = gr.Plot(label=T("anatomy.embedding_label"), elem_id="anatomy-embedding")
    patch_facts = gr.Markdown(elem_id="anatomy-patch-facts")
    gr.Markdown(T("anatomy.step2"))
    position = _picture(T("label.positions"), "anatomy-position")
    gr.Markdown(T("anatomy.step3"))
    with gr.Row():
        row = gr.Plot(label=T("anatomy.row_label"), elem_id="anatomy-row")
        weights = _picture(T("anatomy.weights_label"), "anatomy-weights")
    saturation = gr.Markdown(elem_id="anatomy-saturation")
    entropy = gr.Plot(label=T("anatomy.entropy_label"), elem_id="anatomy-entropy")
    gr.Markdown(T("anatomy.step4"))
    heads = gr.Gallery(label=T("label.heads_gallery"), columns=6, height=260, format="png", elem_id="anatomy-heads")
    gr.Markdown(T("anatomy.step5"))
    mlp = gr.Plot(label=T("anatomy.mlp_label"), elem_id="anatomy-mlp")
    mlp_facts = gr.Markdown(elem_id="anatomy-mlp-facts")
    gr.Markdown(T("anatomy.step6"))
    with gr.Row():
        route = gr.Plot(label=T("anatomy.route_label"), elem_id="anatomy-route")
        logits = gr.Plot(label=T("anatomy.logits_label"), elem_id="anatomy-logits")
    head_facts = gr.Markdown(elem_id="anatomy-head-facts")

    draw_patch = redraw(
        handlers.draw_anatomy_patch,
        [shared.session, patch],
        [grid, pixels, vector, embedding, patch_facts, position, route, logits, head_facts],
    )
    draw_attention = redraw(
        handlers.draw_anatomy_attention,
        [shared.session, patch, layer, head, query, scaled],
        [row, weights, saturation, entropy, heads],
    )
    draw_mlp = redraw(handlers.draw_anatomy_mlp, [shared.session, layer], [mlp, mlp_facts])
    gr.on([patch.change], **lazy(shared, "anatomy", draw_patch), **ALWAYS_LAST)
    gr.on(
        [layer.input, head.input, query.input, scaled.input, patch.change],
        **lazy(shared, "anatomy", draw_attention),
        **ALWAYS_LAST,
    )
    gr.on([layer.input], **lazy(shared, "anatomy", draw_mlp), **ALWAYS_LAST)
    grid.select(handlers.select_anatomy_patch, [shared.session], [patch], **PRIVATE)
    setup = redraw(handlers.setup_anatomy, [shared.session], [layer, head, patch])
    return Tab([draw_patch, draw_attention, draw_mlp], setup)


def downloads_tab(shared: Shared) -> Tab:
    """Overlays as PNG, the capture as NPZ, predictions and statistics as JSON."""
    prepare = gr.Button(T("button.prepare"), elem_id="prepare-downloads")
    files = gr.File(label=T("label.downloads"), file_count="multiple", interactive=False, elem_id="downloads")
    prepare.click(handlers.prepare_downloads, [shared.session, shared.target, *shared.style], files, **PRIVATE)
    return Tab([])


def lazy(shared: Shared, tab_id: str, args: dict) -> dict:
    """The same redraw, drawn only while the tab `tab_id` is on screen."""
    fn = handlers.when_shown(tab_id, args["fn"], len(args["outputs"]))
    return {**args, "fn": fn, "inputs": [shared.shown, *args["inputs"]]}


TABS = {
    "overview": overview_tab,
    "heads": heads_tab,
    "relevance": relevance_tab,
    "layers": layers_tab,
    "tokens": tokens_tab,
    "faithfulness": faithfulness_tab,
    "anatomy": anatomy_tab,
    "downloads": downloads_tab,
}


def api_endpoints() -> None:
    """The named endpoints (documented in the README): each takes the image, so a client needs no session."""
    with gr.Column(visible=False):
        image = UploadedImage(type="filepath", label="image")
        model = gr.Textbox(label="model")
        method, layer, head = gr.Textbox(label="method"), gr.Textbox(label="layer"), gr.Textbox(label="head")
        query, target, fusion = (
            gr.Textbox(label="query_patch"),
            gr.Textbox(label="target"),
            gr.Textbox(label="head_fusion"),
        )
        discard, start, k, steps = (gr.Number(label=name) for name in ("discard_ratio", "start_layer", "k", "steps"))
        result, picture = gr.JSON(), gr.Image(format="png")
        buttons = [gr.Button() for _ in range(4)]
    explain_inputs = [image, model, method, layer, head, query, target, fusion, discard, start]
    buttons[0].click(handlers.api_analyze, [image, model], result, api_name="analyze", **MODEL_RUN)
    buttons[1].click(handlers.api_explain, explain_inputs, [picture, result], api_name="explain", **MODEL_RUN)
    buttons[2].click(
        handlers.api_layer_predictions, [image, model, k], result, api_name="layer_predictions", **MODEL_RUN
    )
    buttons[3].click(
        handlers.api_faithfulness, [image, model, target, steps], result, api_name="faithfulness", **MODEL_RUN
    )


def build_demo() -> gr.Blocks:
    """The whole page. Importable without launching (Spaces imports `app.demo`)."""
    # Gradio keeps every picture it serves on disk: drop those older than an hour, every half hour.
    with gr.Blocks(title="ViT attention explorer", delete_cache=(1800, 3600)) as demo:
        session = gr.State(None, time_to_live=3600)
        shown = gr.State("overview")  # the tab on screen
        with gr.Row(equal_height=True):
            gr.Markdown(T("intro"))
            gr.Markdown(T("language.code"), elem_id="language-code")  # read by app.i18n.LANGUAGE_JS
            # Gradio's own language switch lives in its Settings panel: this button opens it.
            language = gr.Button("🌐 English · 中文", size="sm", scale=0, min_width=140, elem_id="language")
        with gr.Row():
            with gr.Column(scale=1):
                image = UploadedImage(
                    type="filepath",
                    label=T("label.image"),
                    sources=["upload", "clipboard", "webcam"],
                    elem_id="input-image",
                )
                model = gr.Dropdown(
                    service.model_choices(),
                    value=service.default_model(),
                    allow_custom_value=True,
                    label=T("label.model"),
                    elem_id="model",
                )
                run = gr.Button(T("button.analyze"), variant="primary", elem_id="analyze")
                summary = gr.Markdown(T("summary.start"), elem_id="summary")
            with gr.Column(scale=1):
                predictions = gr.Label(num_top_classes=5, label=T("label.top5"), elem_id="top5")
                target = gr.Dropdown([], label=T("label.target"), elem_id="target")
        with gr.Accordion(T("accordion.overlay"), open=False):
            with gr.Row():
                style = [
                    gr.Slider(0, 1, value=0.55, step=0.05, label=T("label.opacity")),
                    gr.Dropdown(list(COLORMAPS), value="Viridis", label=T("label.colormap")),
                    gr.Radio(
                        [(T("choice.bilinear"), "bilinear"), (T("choice.nearest"), "nearest")],
                        value="bilinear",
                        label=T("label.upsampling"),
                    ),
                    gr.Checkbox(False, label=T("label.patch_grid")),
                    gr.Checkbox(True, label=T("label.colorbar")),
                ]
        shared = Shared(session, shown, target, style)
        tabs: dict[str, Tab] = {}
        with gr.Tabs():
            for tab_id, build in TABS.items():
                with gr.Tab(T(f"tab.{tab_id}"), id=tab_id) as tab_ui:
                    tabs[tab_id] = build(shared)
                tabs[tab_id].ui = tab_ui
        gr.Examples(example_images(), [image], label=T("label.examples"))

        # ---- what crosses tabs ----
        def drawn(tab_id: str, tab: Tab) -> list[dict]:
            """A tab's redraws; every tab but the overview (where the page opens) only while on screen."""
            return tab.redraws if tab_id == "overview" else [lazy(shared, tab_id, args) for args in tab.redraws]

        # A tab fits its controls to the model (`setup`) when it is on screen: Gradio keeps the values of
        # controls in a tab that was never opened on the page, so a hidden slider whose range changed would
        # send its old value. Each tab is fitted once per model (`fitted` holds the model it was fitted to).
        for tab_id, tab in tabs.items():
            setup = []
            if tab.setup is not None:
                fitted = gr.State(None)
                fn = fit_once(tab.setup["fn"], len(tab.setup["outputs"]))
                setup = [redraw(fn, [session, fitted], [*tab.setup["outputs"], fitted])]
            tab.ui.select(lambda tab_id=tab_id: tab_id, None, shown, **PRIVATE)
            chain_events(tab.ui.select, [*setup, *(tab.redraws if tab_id != "overview" else [])])
            tab.after_upload = [lazy(shared, tab_id, args) for args in [*setup, *tab.redraws]]
        analyzed = dict(inputs=[image, model], outputs=[session, predictions, target, summary], **MODEL_RUN, **PRIVATE)
        # after an upload: the overview first (it is what the page opens on), then the tab on screen
        after_upload = tabs["overview"].redraws + [
            args for tab_id, tab in tabs.items() if tab_id != "overview" for args in tab.after_upload
        ]
        for trigger, fn in (
            (run.click, handlers.on_analyze),
            (image.change, handlers.on_new_input),
            (model.input, handlers.on_new_input),
        ):
            # always_last: a new picture while the previous one is still being analysed is not dropped
            chain_events(trigger(fn=fn, **analyzed, **ALWAYS_LAST).success, after_upload)
        all_redraws = [args for tab_id, tab in tabs.items() for args in drawn(tab_id, tab)]
        chain_events(target.input, [args for args in all_redraws if target in args["inputs"]])
        chain_events(
            lambda **args: gr.on([s.input for s in style], **args),
            [args for args in all_redraws if style[0] in args["inputs"]],
        )
        language.click(None, js="() => { document.querySelector('footer button.settings')?.click(); }", **PRIVATE)
        api_endpoints()
    return demo


def fit_once(setup, outputs: int):
    """`setup(session)`, unless this tab was already fitted to the session's model: then nothing changes."""

    def fit(session, fitted):
        model = (session or {}).get("model")
        if model is not None and model == fitted:
            return tuple(gr.skip() for _ in range(outputs + 1))
        values = setup(session)
        return (*(values if isinstance(values, tuple) else (values,)), model)

    return fit


def chain_events(trigger, redraws: list[dict]) -> None:
    """`trigger(**redraws[0])`, then each next redraw after the previous one succeeded."""
    if not redraws:
        return
    event = trigger(**redraws[0])
    for args in redraws[1:]:
        event = event.success(**args)
