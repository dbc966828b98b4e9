"""Faithfulness & ablation: deletion / insertion curves (Petsiuk et al. 2018) for every map, on demand;
zeroing chosen heads of a block; the importance of every head of a block (Michel et al. 2019)."""

from __future__ import annotations

import gradio as gr

from app import figures, service
from app.cache import Analysis
from app.i18n import text
from app.maps import FAITHFULNESS, grid_map
from app.session import analysis_of, handler, lang
from app.tabs.base import MODEL_RUN, PRIVATE, Shared, T, Tab, empty_line, redraw
from vit_core.errors import VitCoreError
from vit_core.faithfulness import BLUR_SIGMA
from vit_core.validate import check_range

# insertion can hardly tell the methods apart when the blurred image alone keeps at least this share of the image's
# p(target): its curves have little room left to rise
BLURRED_HIGH = 0.5


def faithfulness_report(analysis: Analysis, target, steps: int, progress=None, language: str = "en") -> dict:
    """Deletion and insertion curves for every map of `FAITHFULNESS`, batched, on the model's own input."""
    steps = int(check_range(steps, 2, 50, "steps"))
    pixels, target = analysis.pixels, service.target_class(analysis, target)
    if progress is not None:
        progress(0.1, desc=text("progress.maps", language))
    maps = {m: grid_map(analysis, m, target) for m in FAITHFULNESS}
    if progress is not None:
        progress(0.3, desc=text("progress.faithfulness", language, steps=steps, maps=len(maps)))
    curves = service.faithfulness_curves(analysis.model_name, pixels, list(maps.values()), target, steps)
    return {m: {"deletion": d, "insertion": i} for m, (d, i) in zip(maps, curves, strict=True)}


def curves_and_table(report: dict, language: str) -> tuple:
    """The curves (each method one colour: deletion solid, insertion dashed) and the AUC table."""
    curves = {m: (r["deletion"], r["insertion"]) for m, r in report.items()}
    # every AUC with 3 decimals, as text: a number column would show 0.2 beside 0.141
    rows = [
        [text(f"method.{m}", language), f"{r['deletion'].auc:.3f}", f"{r['insertion'].auc:.3f}"]
        for m, r in report.items()
    ]
    headers = [text(f"table.{column}", language) for column in ("method", "deletion_auc", "insertion_auc")]
    table = gr.Dataframe(value=rows, headers=headers, visible=True, column_widths=["50%", "25%", "25%"])
    names = {m: text(f"overview.{m}", language) for m in report}  # the Overview's captions, without the ids
    return figures.faithfulness_curves(curves, language, names), table


def about_text(analysis: Analysis, language: str) -> str:
    """What each curve starts from, as `vit_core.faithfulness.curves_for_maps` builds it for this model: deletion
    from the image, its patches set to 0 in the normalised input (the model's mean colour, in RGB); insertion from
    the image blurred with `BLUR_SIGMA` pixels of the model's input, its patches restored."""
    mean = service.shared_model(analysis.model_name).data_config.mean
    height, width = analysis.pixels.shape[-2:]
    return text(
        "faithfulness.about",
        language,
        rgb=", ".join(str(round(255 * channel)) for channel in mean),
        sigma=f"{BLUR_SIGMA:g}",
        size=f"{width}×{height}",
    )


def start_text(analysis: Analysis, report: dict, target: int, language: str) -> str:
    """p(target) where the curves start: on the image (deletion's first point) and on the blurred copy
    (insertion's first point, the same for every map), and a sentence when the blurred copy alone keeps
    `BLURRED_HIGH` of the image's p or more."""
    first = next(iter(report.values()))
    image, blurred = float(first["deletion"].probs[0]), float(first["insertion"].probs[0])
    label = service.labels_of(analysis)[target]
    said = text("faithfulness.start", language, label=label, image=f"{image:.3f}", blurred=f"{blurred:.3f}")
    if blurred >= BLURRED_HIGH * image:
        said += "\n\n" + text("faithfulness.start_high", language, image=f"{image:.3f}", blurred=f"{blurred:.3f}")
    return said


def hint_text(language: str) -> str:
    return text("faithfulness.hint", language, button=text("button.run_faithfulness", language))


def heads_phrase(heads: list, language: str) -> str:
    """The heads zeroed as a phrase: "head 2", "heads 2 and 3", "heads 0, 2 and 3" (头 2 / 头 2 和 3 / 头 0、2 和 3)."""
    if len(heads) == 1:
        return text("ablation.head", language, head=heads[0])
    return text("ablation.heads", language, heads=text("ablation.separator", language).join(heads[:-1]), last=heads[-1])


def signed(change: float) -> str:
    """A change in probability with its sign, in the sentence's own format (4 decimals, as the probabilities
    beside it: +0.0123, -0.0035); a change too small for that, to 2 significant figures (+8.9e-05); 0 unsigned."""
    if change == 0:
        return "0"
    return f"{change:+.4f}" if abs(change) >= 5e-5 else f"{change:+.1e}"


def ablation_text(found: dict, language: str) -> str:
    heads = [str(h) for h in found["heads"]]
    return text(
        "ablation.result",
        language,
        **{**found, "heads": heads_phrase(heads, language), "change": signed(found["change"])},
    )


def computed(analysis: Analysis, request: gr.Request | None, target: int) -> dict:
    """What this page computed on demand for the analysis and target class. Analyses of the same picture are
    shared between pages (the cache is keyed by the image's bytes), so each page keeps its own runs: one
    visitor never sees another's curves, ablation or head importance, and a result shows under its own
    target only."""
    pages = analysis.memo.setdefault(("on_demand", getattr(request, "session_hash", None)), {})
    return pages.setdefault(target, {})


HIDDEN = dict(value=None, visible=False)


def results(analysis: Analysis, report: dict | None, target: int, language: str) -> tuple:
    """The curves, the AUC table, the line that says the curves are computed on demand (only while there are
    none for this image and target) and, beside the table, p(target) where the curves start."""
    if report is None:
        return None, gr.update(**HIDDEN), gr.update(value=hint_text(language), visible=True), gr.update(**HIDDEN)
    curves, table = curves_and_table(report, language)
    start = gr.update(value=start_text(analysis, report, target, language), visible=True)
    return curves, table, gr.update(**HIDDEN), start


@handler(outputs=7)
def show(session, target, request: gr.Request = None):
    """What this page computed on demand for this analysis and target (the last curves, ablation and head
    importance), drawn in the page's language: the tab keeps its results when it is opened again, shows them
    again when their target comes back, and follows a language switch without a model run. Nothing
    computed yet: empty, and a line that says the button computes the curves. With what the curves start
    from (`about_text`) and, once they exist, p(target) there (`start_text`)."""
    analysis = analysis_of(session)
    language = lang(request)
    try:
        target = service.target_class(analysis, target)
    except VitCoreError:  # no class to explain (a backbone without a head): nothing to compute, nothing to say
        return None, gr.update(**HIDDEN), None, None, None, gr.update(**HIDDEN), gr.update(**HIDDEN)
    found = computed(analysis, request, target)
    curves, table, hint, start = results(analysis, found.get("faithfulness"), target, language)
    result = ablation_text(found["ablation"], language) if "ablation" in found else None
    bars = figures.head_importance_bars(*found["importance"], language) if "importance" in found else None
    return curves, table, result, bars, about_text(analysis, language), hint, start


@handler(outputs=4)
def run(session, target, steps, progress=gr.Progress(), request: gr.Request = None):
    """The curves, the AUC table and p(target) where they start, kept with the analysis for this page and
    target; the on-demand line hidden."""
    analysis = analysis_of(session)
    language = lang(request)
    target = service.target_class(analysis, target)
    report = faithfulness_report(analysis, target, int(steps), progress, language)
    computed(analysis, request, target)["faithfulness"] = report
    return results(analysis, report, target, language)


@handler(outputs=1)
def ablate(session, layer, heads, target, request: gr.Request = None):
    """Zero the chosen heads of one block and report the target probability before and after."""
    analysis = analysis_of(session)
    if not heads:
        raise VitCoreError("choose_heads")
    target = service.target_class(analysis, target)
    pairs = [(int(layer), int(h)) for h in heads]
    base, ablated = service.ablate(analysis.model_name, analysis.pixels, pairs, target)
    found = dict(
        label=service.labels_of(analysis)[target],
        base=base,
        ablated=ablated,
        layer=int(layer),
        heads=sorted(heads, key=int),
        change=ablated - base,
    )
    computed(analysis, request, target)["ablation"] = found
    return ablation_text(found, lang(request))


@handler(outputs=1)
def importance(session, layer, target, request: gr.Request = None):
    """Zero each head of one block alone (one batched pass) and plot the drop in the target probability."""
    analysis = analysis_of(session)
    target = service.target_class(analysis, target)
    drop = service.importance(analysis.model_name, analysis.pixels, int(layer), target)
    computed(analysis, request, target)["importance"] = (drop, int(layer))
    return figures.head_importance_bars(drop, int(layer), lang(request))


def heads_chosen(heads) -> dict:
    """Ablate is active once a head is ticked."""
    return gr.update(interactive=bool(heads))


def fit(analysis):
    layers, heads = analysis.capture.num_layers, analysis.capture.num_heads
    return (
        gr.update(interactive=True),
        gr.update(interactive=True),
        gr.update(minimum=0, maximum=layers - 1, value=layers - 1, step=1, interactive=True),
        gr.update(choices=[str(h) for h in range(heads)], value=[], interactive=True),
        gr.update(interactive=False),  # Ablate: once a head is ticked
        gr.update(interactive=True),
    )


def build(shared: Shared) -> Tab:
    empty = empty_line("faithfulness")
    with gr.Row():
        steps = gr.Slider(
            2, 30, value=16, step=1, label=T("label.steps"), interactive=False, elem_id="faithfulness-steps"
        )
        start = gr.Button(T("button.run_faithfulness"), elem_id="run-faithfulness", interactive=False)
    about = gr.Markdown(elem_id="faithfulness-about")  # what each curve starts from (server-written)
    hint = gr.Markdown(elem_id="faithfulness-hint", visible=False)  # while there are no curves
    # the curves over the full width (nine methods' legend beside them), the AUC table under them, and beside
    # it p(target) where the curves start
    curves = gr.Plot(show_label=False, label=T("label.curves"), elem_id="faithfulness-plot")
    with gr.Row():
        table = gr.Dataframe(
            label=T("label.auc"), elem_id="faithfulness-table", interactive=False, wrap=True, visible=False, scale=3
        )
        start_note = gr.Markdown(elem_id="faithfulness-start", visible=False, scale=2)
    with gr.Row():
        layer = gr.Slider(0, 11, value=11, step=1, label=T("label.ablate_block"), interactive=False)
        heads = gr.CheckboxGroup([], label=T("label.ablate_heads"), interactive=False)
        ablate_button = gr.Button(T("button.ablate"), interactive=False)
        sweep = gr.Button(T("button.importance"), interactive=False)
    result = gr.Markdown(elem_id="ablation-result")
    bars = gr.Plot(show_label=False, label=T("label.importance"), elem_id="importance-plot")
    start.click(run, [shared.session, shared.target, steps], [curves, table, hint, start_note], **MODEL_RUN, **PRIVATE)
    ablate_button.click(ablate, [shared.session, layer, heads, shared.target], result, **MODEL_RUN, **PRIVATE)
    sweep.click(importance, [shared.session, layer, shared.target], bars, **MODEL_RUN, **PRIVATE)
    heads.input(heads_chosen, heads, ablate_button, **PRIVATE)
    controls = [steps, start, layer, heads, ablate_button, sweep]
    shown = [curves, table, result, bars, about, hint, start_note]
    return Tab([redraw(show, [shared.session, shared.target], shown)], empty, controls, fit)
