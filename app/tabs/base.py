"""What every tab module builds on: the shared inputs (`Shared`), a tab's description (`Tab`), output
pictures sent inline, and the wiring helpers (`redraw`, `lazy`).

A tab module exposes `build(shared) -> Tab`: it lays out its components and wires its own events; its
`Tab` tells `app.ui` how to draw it after an upload and how to fit its controls to a model.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.data_classes import ImageData
from PIL import Image

from app.i18n import gradio_translations
from app.session import when_shown

PRIVATE = dict(api_visibility="private")
MODEL_RUN = dict(concurrency_id="model", concurrency_limit=1)  # one model run at a time; redraws do not wait
ALWAYS_LAST = dict(trigger_mode="always_last")

I18N = gr.I18n(**gradio_translations())


def T(key: str):  # noqa: N802 - the conventional name of a translation marker
    """A label the browser translates (gr.I18n)."""
    return I18N(key)


_SCHEMAS: dict[type, dict] = {}


def schema_once(component: gr.components.Component, compute: Callable[[], dict]) -> dict:
    """The component's API schema, computed once per class. Gradio builds a new component for every update
    an event returns (a `gr.skip()` too) and asks it for its schema, and an image's comes from pydantic each
    time (`ImageData.model_json_schema()`, ~0.7 ms, twice per update: ~10 ms of every analysis). It depends
    on the class only. (A method, not a mixin: Gradio names a template component's frontend after its first
    base class.)"""
    cls = type(component)
    if cls not in _SCHEMAS:
        _SCHEMAS[cls] = compute()
    return _SCHEMAS[cls]


class OutputImage(gr.Image):
    """gr.Image whose pictures travel inside the event's answer, as `data:` URLs (`inline_picture`).

    Gradio would write each picture to its cache and the browser would then fetch it: one more request per
    picture after the answer, 30-40 ms of the first view's four or five, on a server still busy. Gradio
    itself sends an SVG this way (`ImageData` with a `data:` URL and no path: nothing to move or serve).
    """

    is_template = True  # the frontend is gr.Image's
    exact = False  # a PNG, not a JPEG (`picture` sets it; not a constructor argument: Gradio builds the
    # component's config from its constructor's signature)

    def postprocess(self, value):
        if isinstance(value, Image.Image):
            value = inline_picture(value, self.exact)
        if isinstance(value, str) and value.startswith("data:image/"):
            return ImageData(url=value, orig_name="image.png" if value.startswith(PNG_URL) else "image.jpg")
        return super().postprocess(value)

    def api_info(self) -> dict[str, Any]:
        return schema_once(self, super().api_info)


PNG_URL, JPEG_URL = "data:image/png;base64,", "data:image/jpeg;base64,"


def encode_picture(picture: Image.Image, exact: bool = False) -> bytes:
    """The picture's bytes: a JPEG where it shows a photo, a PNG where it is `exact`.

    A map blended over a photo is a photo: JPEG at quality 95 without chroma subsampling differs from it by
    0.9/255 on average (4/255 at the 99th percentile, invisible side by side at 2x), and is written in under
    a millisecond at a fifth of the size, where a PNG takes 10-12 ms (zlib level 1: a photo barely
    compresses) - 4-5 of them on every first view, and the bytes a Space's visitor downloads. An `exact`
    picture (a matrix, a patch's pixels, a map drawn alone) is a PNG: flat colours compress well, and its
    pixels are the lesson. The Downloads tab writes PNGs of every map."""
    buffer = io.BytesIO()
    if exact:
        picture.save(buffer, "PNG", compress_level=1)
    else:
        picture.convert("RGB").save(buffer, "JPEG", quality=95, subsampling=0)
    return buffer.getvalue()


def inline_picture(picture: Image.Image, exact: bool = False) -> str:
    """The picture as a `data:` URL (`encode_picture`): what an `OutputImage` shows without a file."""
    return (PNG_URL if exact else JPEG_URL) + base64.b64encode(encode_picture(picture, exact)).decode("ascii")


def save_picture(picture: Image.Image, cache_dir: Path, exact: bool = False) -> str:
    """The picture's bytes (`encode_picture`) under cache_dir/<sha256>/image.<png|jpg>, written to a temporary
    name and renamed: an API client gets a file."""
    data = encode_picture(picture, exact)
    path = cache_dir / hashlib.sha256(data).hexdigest()[:32] / ("image.png" if exact else "image.jpg")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
            handle.write(data)
        os.replace(handle.name, path)
    return str(path)


# Pillow releases the GIL while it compresses, so a tab's pictures are encoded side by side, in the handler's
# own thread, instead of one after another in Gradio's event loop (where its postprocessing runs them).
ENCODERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="picture")


def write_pictures(drawn: dict[int, Any], components: list) -> dict[int, Any]:
    """`drawn` (values by component id) with each output picture that is a PIL image, bare or the value of an
    update, encoded (`inline_picture`) and replaced by its `data:` URL."""
    jobs = {}
    for component in components:
        value = drawn.get(id(component))
        image = value.get("value") if isinstance(value, dict) else value
        if isinstance(component, OutputImage) and isinstance(image, Image.Image):
            jobs[id(component)] = ENCODERS.submit(inline_picture, image, component.exact)
    for key, job in jobs.items():
        value = drawn[key]
        drawn[key] = {**value, "value": job.result()} if isinstance(value, dict) else job.result()
    return drawn


def picture(label, elem_id: str | None = None, exact: bool = False, **kwargs) -> gr.Image:
    """An output image, not editable, with download and fullscreen buttons: JPEG where it shows a photo, PNG
    where it is `exact` (`save_picture`)."""
    image = OutputImage(
        label=label,
        format="png" if exact else "jpeg",
        interactive=False,
        buttons=["download", "fullscreen"],
        elem_id=elem_id,
        **kwargs,
    )
    image.exact = exact
    return image


def empty_line(tab_id: str) -> gr.Markdown:
    """The tab's one friendly line before any analysis."""
    return gr.Markdown(T("empty.pick"), elem_id=f"empty-{tab_id}", elem_classes=["empty-state"])


def empty_line_shown(shown: bool) -> dict:
    """The update that shows or hides a tab's empty line. Shown, it carries its text again as a translation
    key: Gradio (6.31) copies a component's displayed value, already translated, into its layout on any
    update without a value, and mounts it from there when it becomes visible again, so a line hidden in one
    language would come back in that language, no longer following the page's."""
    return gr.update(visible=True, value=T("empty.pick")) if shown else gr.update(visible=False)


@dataclass
class Shared:
    """What every tab reads: the session's analysis key, the tab on screen, the target class, the overlay
    style (one `OverlayStyle` value), and the page's language marker; and the Overview's "Maps shown"
    (`maps`, set when the Overview is built, before the tabs after it that read it: the Downloads)."""

    session: gr.State
    shown: gr.State
    target: gr.Dropdown
    style: gr.State
    maps: gr.Dropdown | None = None


@dataclass
class Tab:
    """A tab's drawing: `redraws` (event arguments: fn, inputs, outputs) draw it from the session;
    `controls` are made active and fitted by `fit(analysis)` once an analysis exists (inactive before);
    `empty` is its line shown until then."""

    redraws: list[dict]
    empty: gr.Markdown
    controls: list[gr.components.Component] = field(default_factory=list)
    fit: Callable | None = None  # analysis -> one update per control
    resets: list[gr.State] = field(default_factory=list)  # back to None for a new model (a chosen patch)
    outputs: list[gr.components.Component] = field(default_factory=list)  # drawn on demand; emptied for a new analysis
    ui: gr.Tab | None = field(default=None, repr=False)


def redraw(fn, inputs: list, outputs: list) -> dict:
    return dict(fn=fn, inputs=inputs, outputs=outputs, **PRIVATE)


def lazy(shared: Shared, tab_id: str, args: dict) -> dict:
    """The same redraw, drawn only while the tab `tab_id` is on screen."""
    fn = when_shown(tab_id, args["fn"], len(args["outputs"]))
    return {**args, "fn": fn, "inputs": [shared.shown, *args["inputs"]]}
