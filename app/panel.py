"""The panel above the tabs: the image, the model, the examples and what the model knows, the summary, the
top-5 and the target class, the overlay style and the language toggle. `outcome` runs the model once per
(model, image); every tab then draws from the session it returns.

With an image–text model (CLIP) a labels box and a prompt box appear: the labels are the zero-shot classes
of the top-5 and the per-layer predictions (a new label set for the same image runs no model), and the
prompt becomes the target, so the class-specific maps explain that phrase.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

import gradio as gr
import numpy as np

from app import service
from app.cache import Analysis
from app.i18n import counted, keyed_error_text, text
from app.render import COLORMAPS, OverlayStyle, mark_crop
from app.session import NoAnalysis, analysis_of, lang, sentence, user_sentence
from app.tabs.base import T, picture, schema_once
from vit_core.errors import VitCoreError

SCENES = Path(__file__).resolve().parent.parent / "assets" / "scenes"
PHOTOS = ("cheetah1.jpg", "lion.jpg", "bus.png", "tower.jpg")


class UploadedImage(gr.Image):
    """gr.Image that hands the uploaded file's path over unopened, so `vit_core.images.load_image` gives
    the one-sentence message for a broken, empty or enormous file instead of a Pillow traceback.

    Built with `image_mode=None`: with a mode, Gradio decodes a file of any other mode (an RGBA screenshot,
    a grayscale or CMYK photo), converts it and writes it again before the handler sees it, in full and at
    full size; `load_image` converts it anyway (after a draft decode for a large JPEG)."""

    is_template = True  # the frontend is gr.Image's

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except Exception:
            if payload is not None and payload.path:
                return payload.path
            raise gr.Error("The uploaded file could not be read as an image.") from None

    def api_info(self) -> dict:
        return schema_once(self, super().api_info)


def example_images(model: str) -> list[list[str]]:
    """ShapeScenes first for the bundled model (what it knows), Gradio's own photos first otherwise."""
    photos = [gr.media.get_image(name) for name in PHOTOS]
    scenes = sorted(str(p) for p in SCENES.glob("*.png") if not p.stem.endswith("_mask"))[:8]
    return [[path] for path in (scenes + photos if model == "bundled" else photos + scenes)]


def model_note(model: str | None, language: str) -> str:
    """What the chosen model is (a catalog model's description: the menu names it in a few words) and what it
    knows; for the bundled one, that photos need an ImageNet model, and which one."""
    if not model:
        return ""
    entry = service.catalog_entry(model)
    description = None if entry is None else service.catalog_description(entry, language)
    about = "" if description is None else text("note.description", language, description=description) + " "
    if model != "bundled":
        if service.known_image_text(model):
            return about + text("note.image_text", language)
        return about + text("note.imagenet", language)
    note = about + text("note.bundled", language)
    suggestion = service.suggested_model()
    if suggestion is not None:
        note += " " + text("note.switch", language, model=suggestion.name, mb=suggestion.download_mb)
    else:
        note += " " + text("note.offline", language)
    return note


# ---- the session ------------------------------------------------------------------------------------


def warning_of(error: VitCoreError, alone: bool = False) -> dict:
    """What the summary's warning is made of, kept in the page's state (`Panel.warning`) so a language switch
    writes it again: the error's key and parameters, never its sentence. `alone`: the warning is the whole
    summary (an image that could not be read leaves nothing analysed to summarise)."""
    return {"key": error.key, "params": dict(error.params), "alone": alone}


def summary_text(session: dict | None, language: str, warning: dict | None = None) -> str:
    """The summary of the session's analysis (or the first hint), in `language`, after the warning of the
    last request that failed (`warning_of`): re-rendered on a switch."""
    if warning:
        line = "⚠️ " + sentence(keyed_error_text(warning["key"], warning["params"], language))
        return line if warning.get("alone") else line + "\n\n" + summary_text(session, language)
    if not session or not session.get("facts"):
        return text("summary.start", language)
    facts = session["facts"]
    shape = {k: facts[k] for k in ("model", "layers", "heads", "rows", "cols", "patch")}
    shape["prefix"] = counted("summary.prefix", facts["prefix"], language)
    when = text("summary.cached", language) if facts["cached"] else text("summary.ms", language, ms=facts["ms"])
    if facts.get("gpu"):
        device = text("device.gpu", language, name=facts["gpu"])
    else:
        device = text("device.cpu", language, threads=facts["threads"])
    lines = [text("summary.done", language, device=device, when=when, **shape)]
    crop = facts.get("crop")
    if crop and crop["kind"] == "crop":
        lines.append(text("summary.crop", language, percent=crop["percent"]))
    elif crop:
        lines.append(text("summary.squash", language, width=crop["width"], height=crop["height"]))
    if facts.get("enlarged"):
        lines.append(text("summary.enlarged", language, factor=facts["enlarged"]))
    return "\n\n".join(lines)


def _facts(analysis: Analysis, seconds: float, cached: bool) -> dict:
    result = analysis.capture
    device = service.device_facts()
    return dict(
        model=analysis.model_name,
        layers=result.num_layers,
        heads=result.num_heads,
        rows=result.grid[0],
        cols=result.grid[1],
        patch=result.patch_size,
        prefix=result.num_prefix_tokens,
        ms=round(seconds * 1000),
        cached=cached,
        crop=service.crop_facts(analysis),
        enlarged=service.enlargement(analysis),
        **device,
    )


@dataclass(frozen=True)
class Outcome:
    """What an analysis sets: the session, the top-5, the target choices, the summary (and the warning it
    opens with, as data), the model dropdown."""

    session: dict | None
    predictions: object
    target: object
    summary: str
    model: object
    note: object
    seen: object = None  # the image with what the model sees marked, when its preprocessing cuts some off
    text_boxes: object = None  # the labels and prompt boxes: shown for an image–text model
    chosen: object = None  # the target the class-specific maps explain: the top class, a prompt, or none
    follow: bool = True  # the views follow (False: a model that could not be loaded; the analysis stays)
    image: object = field(default_factory=gr.skip)  # the image box: emptied (None) when its file cannot be read
    warning: dict | None = None  # the summary's warning (`warning_of`); None after a request that succeeded
    listed: object = None  # the analysis whose every class the target menu lists (`every_class`); None: its top 5

    def values(self) -> tuple:
        boxes = self.text_boxes if isinstance(self.text_boxes, tuple) else (self.text_boxes, self.text_boxes)
        return (
            self.session,
            self.predictions,
            self.target,
            self.summary,
            self.model,
            self.note,
            self.seen,
            self.image,
            *boxes,
            self.warning,
            self.listed,
        )


class RecentRequests:
    """The last (model, image) each browser session asked for and what it got, for a few seconds: a
    dropdown choice fires its event twice (selection, then blur), and one user action must start at most
    one model load or run."""

    def __init__(self, seconds: float = 5.0, sessions: int = 1000) -> None:
        self.seconds, self.sessions = seconds, sessions
        self._entries: OrderedDict[str, tuple[float, tuple, Outcome]] = OrderedDict()  # until, request, answer
        self._lock = threading.Lock()

    def get(self, session_hash: str, request: tuple) -> Outcome | None:
        with self._lock:
            entry = self._entries.get(session_hash)
            if entry and entry[1] == request and time.monotonic() < entry[0]:
                return entry[2]
            return None

    def put(self, session_hash: str, request: tuple, outcome: Outcome, seconds: float | None = None) -> Outcome:
        """Remember `outcome` as the answer to `request` for `seconds` (the default: a few)."""
        until = time.monotonic() + (self.seconds if seconds is None else seconds)
        with self._lock:
            self._entries.pop(session_hash, None)
            self._entries[session_hash] = (until, request, outcome)
            while len(self._entries) > self.sessions:
                self._entries.popitem(last=False)
        return outcome


RECENT = RecentRequests()
ECHO_SECONDS = 120.0  # how long the emptied image box's own change event is recognised (see `outcome`)

# refusals of a file the browser cannot show either (a broken-image icon would stay in the box) or must not
# decode (a possible decompression bomb): the box is emptied; a picture refused for its size or shape stays
UNREADABLE = frozenset(
    {
        "image_missing",
        "image_not_a_file",
        "image_unreadable",
        "image_empty",
        "image_not_an_image",
        "image_corrupt",
        "image_no_pixels",
        "image_bomb",
        "image_too_compressed",
    }
)


def outcome(
    image: str | None,
    model_name: str,
    session: dict | None,
    labels: str | None = None,
    prompt: str | None = None,
    progress=gr.Progress(),
    request: gr.Request = None,
) -> tuple[Outcome, bool]:
    """Run the model once for (image, model), and say whether the views follow. A model that cannot be
    loaded leaves the analysis as it was and puts the dropdown back; an image that cannot be read clears
    every view and the image box. Either way the summary says why, in one sentence. The same request again
    within seconds gets the same answer, unrun, and the views stay."""
    asked = (image, (model_name or "").strip(), (labels or "").strip(), (prompt or "").strip(), lang(request))
    session_hash = getattr(request, "session_hash", None)
    if session_hash is None:  # not from a page (a test, a script): nothing to tell apart
        result = _analyze(image, model_name, session, labels, prompt, progress, request)
        return result, result.follow
    repeated = RECENT.get(session_hash, asked)
    if repeated is not None:
        return repeated, False
    result = RECENT.put(session_hash, asked, _analyze(image, model_name, session, labels, prompt, progress, request))
    if result.image is None:
        # the image box is emptied: its change comes back as the same request without the image, and gets
        # this answer again, unrun, with the box left alone (the sentence saying why stays). That request
        # waits in the model queue behind other pages' runs, so its answer is kept longer than a few seconds;
        # any other request of the page replaces it.
        RECENT.put(session_hash, (None, *asked[1:]), replace(result, image=gr.skip(), follow=False), ECHO_SECONDS)
    return result, result.follow


def _text_boxes(image_text: bool) -> tuple:
    return gr.Textbox(visible=image_text), gr.Textbox(visible=image_text)


def class_label(names: list[str], index: int) -> str:
    """How the page names a class, in the top-5 and the target menu alike: "name (index)"."""
    return f"{names[index]} ({index})"


def class_choices(analysis: Analysis, everything: bool = False) -> list[tuple[str, int]]:
    """The target menu's classes: the image's top 5, most probable first; with `everything`, every other
    class after them, by index."""
    probs = analysis.capture.probs
    if probs is None:
        return []
    names = service.labels_of(analysis)
    order = [int(i) for i in np.argsort(-probs, kind="stable")]
    order = order[:5] + (sorted(order[5:]) if everything else [])
    return [(class_label(names, i), i) for i in order]


def every_class(session: dict | None, listed: str | None) -> tuple:
    """When the target menu gets focus: every class, the top 5 first, once per analysis (the menu, and the
    analysis whose every class it lists). An analysis sends only the top 5: ImageNet's 1000 names would be
    the largest part of its update, and Gradio's page copies a menu's choices on every status change of
    every event that writes it."""
    try:
        analysis = analysis_of(session)
    except NoAnalysis:
        return gr.skip(), gr.skip()
    if analysis.capture.probs is None or listed == analysis.key:
        return gr.skip(), gr.skip()
    return gr.Dropdown(choices=class_choices(analysis, everything=True)), analysis.key


def _analyze(image, model_name, session, labels, prompt, progress, request) -> Outcome:
    language = lang(request)
    previous_model = (session or {}).get("model") or service.default_model()
    model_name = (model_name or "").strip()
    labels, prompt = (labels or "").strip(), (prompt or "").strip()
    try:
        progress(0.1, desc=text("progress.loading", language))
        image_text = service.shared_model(model_name).cfg.image_text
    except VitCoreError as error:  # the analysis on screen stays; the dropdown returns to its model
        warning = warning_of(error)
        return Outcome(
            gr.skip(),
            gr.skip(),
            gr.skip(),
            summary_text(session, language, warning),
            previous_model,
            gr.skip(),
            text_boxes=gr.skip(),
            follow=False,
            warning=warning,
            listed=gr.skip(),
        )
    note = model_note(model_name, language)
    boxes = _text_boxes(image_text)
    if image is None:  # a model chosen before any image: nothing to analyse yet
        return Outcome(None, None, _no_targets(), summary_text(None, language), model_name, note, _unseen(), boxes)
    try:
        progress(0.4, desc=text("progress.running", language))
        start = time.monotonic()
        analysis = service.analyze(image, model_name, labels if image_text else None)
        seconds, cached = time.monotonic() - start, analysis.created < start
        if image_text and prompt:
            service.shared_model(model_name).text_encoder().check_prompt(prompt)
    except VitCoreError as error:  # nothing of an earlier image stays beside this one
        warning = warning_of(error, alone=True)
        return Outcome(
            None,
            None,
            _no_targets(),
            summary_text(None, language, warning),
            model_name,
            note,
            _unseen(),
            boxes,
            image=None if error.key in UNREADABLE else gr.skip(),
            warning=warning,
        )
    result = analysis.capture
    session = {"key": analysis.key, "image": analysis.image_path, "model": analysis.model_name}
    if analysis.labels:
        session["labels"] = labels
    session["facts"] = _facts(analysis, seconds, cached)
    top = None if result.probs is None else int(np.argmax(result.probs))
    chosen = prompt if image_text and prompt else top
    target = gr.Dropdown(
        choices=class_choices(analysis),  # every class once the menu gets focus (`every_class`)
        value=chosen,
        interactive=top is not None or image_text,
        allow_custom_value=True,  # a typed prompt, a value left from an earlier image
    )
    return Outcome(
        session,
        top_predictions(analysis, language),
        target,
        summary_text(session, language),
        model_name,
        note,
        seen_picture(analysis, session["facts"]["crop"]),
        boxes,
        chosen,
    )


def use_prompt(prompt: str | None, session: dict | None, request: gr.Request = None):
    """A typed prompt becomes the target, so the class-specific maps explain it; an empty one gives the
    target back to the top label (or nothing, without labels)."""
    prompt = (prompt or "").strip()
    if not prompt:
        try:
            analysis = analysis_of(session)
        except NoAnalysis:
            return None
        probs = analysis.capture.probs
        return None if probs is None else int(np.argmax(probs))
    try:
        if session and session.get("model"):
            service.shared_model(session["model"]).text_encoder().check_prompt(prompt)
    except VitCoreError as error:
        raise gr.Error(user_sentence(error, request)) from None
    return prompt


def seen_picture(analysis: Analysis, crop: dict | None):
    """The uploaded image with the part the model does not see dimmed; hidden when it sees everything. An
    update, not a `gr.Image`: a component built with a picture writes it to Gradio's cache at once (a WebP,
    5 ms), before the page's own encoding (`app.tabs.base.OutputImage`)."""
    if not crop or crop["kind"] != "crop" or analysis.preview is None:
        return _unseen()
    marked = mark_crop(analysis.preview, tuple(crop["box"]), source_size=analysis.image_size)
    return gr.update(value=marked, visible=True)


def _unseen():
    return gr.update(value=None, visible=False)


def _no_targets():
    return gr.Dropdown(choices=[], value=None, interactive=False)


def pick_prediction(session: dict | None, target: int | str | None, selected: gr.SelectData) -> int | str | None:
    """A class clicked in the top-5 becomes the target (`class_label`); anything else
    there (a line saying the model has no labels) leaves the target as it is."""
    try:
        analysis = analysis_of(session)
    except NoAnalysis:
        return target
    return next((index for label, index in class_choices(analysis) if label == selected.value), target)


def top_predictions(analysis: Analysis, language: str = "en") -> dict[str, float]:
    probs = analysis.capture.probs
    if probs is None and service.image_text(analysis):
        return {text("summary.no_labels", language): 1.0}
    if probs is None:
        return {text("summary.no_head", language): 1.0}
    return {label: float(probs[index]) for label, index in class_choices(analysis)}


def set_style(opacity: float, cmap: str, upsample: str, grid: bool, colorbar: bool) -> OverlayStyle:
    """The five overlay controls as one value."""
    return OverlayStyle(float(opacity), cmap or "Viridis", upsample or "bilinear", bool(grid), bool(colorbar))


@dataclass
class Panel:
    image: gr.Image
    model: gr.Dropdown
    run: gr.Button
    summary: gr.Markdown
    note: gr.Markdown
    predictions: gr.Label
    target: gr.Dropdown
    seen: gr.Image
    style_controls: list
    labels: gr.Textbox
    prompt: gr.Textbox
    warning: gr.State  # the summary's warning as data (`warning_of`), for a language switch to write it again
    listed: gr.State  # the analysis whose every class the target menu lists (`every_class`)

    def analysis_inputs(self, session: gr.State) -> list:
        """What `outcome` reads, in its order."""
        return [self.image, self.model, session, self.labels, self.prompt]

    def analysis_outputs(self, session: gr.State) -> list:
        """What `outcome` sets (`Outcome.values`), in its order."""
        panel = [session, self.predictions, self.target, self.summary, self.model, self.note, self.seen, self.image]
        return [*panel, self.labels, self.prompt, self.warning, self.listed]


def build() -> Panel:
    """The panel's layout: image and model | examples and what the model knows | top-5 and target."""
    default = service.default_model()
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            image = UploadedImage(
                type="filepath",
                image_mode=None,
                label=T("label.image"),
                sources=["upload", "clipboard", "webcam"],
                elem_id="input-image",
                height=260,
                placeholder=T("upload.placeholder"),
            )
            model = gr.Dropdown(
                service.model_choices(),
                value=default,
                allow_custom_value=not service.public_mode(),
                label=T("label.model"),
                elem_id="model",
            )
            run = gr.Button(T("button.analyze"), variant="primary", elem_id="analyze")
            # shown with an image–text model: zero-shot labels, and a phrase for the maps to explain
            labels = gr.Textbox(
                label=T("label.labels"),
                placeholder=T("placeholder.labels"),
                elem_id="labels",
                visible=False,
                max_lines=3,
            )
            prompt = gr.Textbox(
                label=T("label.prompt"),
                placeholder=T("placeholder.prompt"),
                elem_id="prompt",
                visible=False,
                max_lines=1,
            )
        with gr.Column(scale=4, elem_id="examples-column"):
            gr.Examples(example_images(default), [image], label=T("label.examples"), examples_per_page=12)
            note = gr.Markdown(elem_id="model-note")  # written when the page loads, in its language
        with gr.Column(scale=4):
            summary = gr.Markdown(elem_id="summary")
            # a class clicked here becomes the target (`pick_prediction`)
            predictions = gr.Label(num_top_classes=5, label=T("label.top5"), elem_id="top5")
            # custom values: any class by index or label; and a value left from an earlier image is no error
            target = gr.Dropdown(
                [], label=T("label.target"), elem_id="target", interactive=False, allow_custom_value=True
            )
            seen = picture(T("label.model_view"), "model-view", visible=False, height=220)
    with gr.Accordion(T("accordion.overlay"), open=False):
        with gr.Row():
            style_controls = [
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
    warning, listed = gr.State(None), gr.State(None)
    return Panel(
        image, model, run, summary, note, predictions, target, seen, style_controls, labels, prompt, warning, listed
    )
