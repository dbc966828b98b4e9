"""What every tab's handlers share: the session's analysis, the overlay style, the page's language, and how
a handler behaves before any image (quietly empty) and on bad input (one sentence in the page's language).
No layout here; `app.tabs.*` lay out and wire, `app.service` runs models.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import gradio as gr
from PIL import Image

from app import service
from app.cache import Analysis
from app.i18n import error_text, language_of, language_of_request
from app.render import OverlayStyle, input_view, patch_at
from vit_core.errors import VitCoreError

DISPLAY = 384  # the input view is shown at least this large; the model's input may be 96 pixels


class NoAnalysis(Exception):
    """A redraw was asked for before any image was analysed (or after a failed one): the view stays empty."""


def analysis_of(session: dict | None) -> Analysis:
    """The session's analysis; if the shared cache dropped it, the image is analysed again."""
    if not session or not session.get("key"):
        raise NoAnalysis
    return service.by_key(session.get("key"), session.get("image"), session.get("model"), session.get("labels"))


def lang(request: gr.Request | None) -> str:
    """The page's language: its cookie (set by the language toggle), else the browser's `Accept-Language`."""
    if request is None:
        return language_of(None)
    return language_of_request(request.headers.get("cookie"), request.headers.get("accept-language"))


def sentence(message: str) -> str:
    """Capitalise the first word, unless it is a file or model name ("cut.png is truncated ...")."""
    first = message.split(" ", 1)[0]
    return message if any(c in first for c in "./:_0123456789") else message[:1].upper() + message[1:]


def user_sentence(error: VitCoreError, request: gr.Request | None) -> str:
    """The error as one sentence in the page's language."""
    return sentence(error_text(error, lang(request)))


def _request_of(args: tuple, kwargs: dict) -> gr.Request | None:
    return kwargs.get("request") or next((a for a in args if isinstance(a, gr.Request)), None)


def handler(outputs: int):
    """A tab's handler: before any analysis every output is cleared (no error badge, no toast); a
    `VitCoreError` becomes one `gr.Error` sentence in the page's language."""

    def decorate(fn):
        @functools.wraps(fn)  # Gradio reads the signature (gr.SelectData, gr.Request) through __wrapped__
        def wrapped(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except NoAnalysis:
                return None if outputs == 1 else tuple(None for _ in range(outputs))
            except VitCoreError as error:
                raise gr.Error(user_sentence(error, _request_of(args, kwargs))) from None

        return wrapped

    return decorate


# refusals that say a method cannot run on this model (attention flow above its size): a view shows them as a
# warning beside an empty map, not as an error badge; every other error still fails the view
REFUSED = frozenset({"flow_too_large"})


def unless_refused(compute, request: gr.Request | None):
    """`compute()`, or None after a warning in the page's language when the method is refused on this model."""
    try:
        return compute()
    except VitCoreError as error:
        if error.key not in REFUSED:
            raise
        gr.Warning(user_sentence(error, request))
        return None


def select_patch(session: dict | None, evt: gr.SelectData):
    """A click on any picture of the input (head view, similarity, Anatomy grid): the patch under it;
    a click outside the image (on the colorbar) or before any analysis changes nothing."""
    try:
        analysis = analysis_of(session)
    except (NoAnalysis, VitCoreError):
        return gr.skip()
    patch = patch_at(tuple(evt.index), view_of(analysis).size, analysis.capture.grid)
    return gr.skip() if patch is None else patch


def view_of(analysis: Analysis) -> Image.Image:
    """The model's input de-normalised and enlarged for display (the maps are upsampled onto it)."""

    def make():
        view = input_view(analysis.capture, service.shared_model(analysis.model_name).data_config)
        scale = max(1.0, DISPLAY / min(view.size))
        return view.resize((round(view.width * scale), round(view.height * scale)), Image.Resampling.LANCZOS)

    return analysis.remember("input_view", make)


def thumbnail_view(analysis: Analysis, width: int) -> Image.Image:
    """The input view at `width` pixels (small multiples)."""
    view = view_of(analysis)
    return analysis.remember(("view", width), lambda: view.resize((width, round(width * view.height / view.width))))


def head_value(head: str | int | None) -> str | int:
    """A head choice from a control: "mean", "max" or an index."""
    if head in (None, "", "mean", "max"):
        return head or "mean"
    try:
        return int(head)
    except (TypeError, ValueError):
        raise VitCoreError("bad_head_choice", value=str(head)) from None


def style_of(value: Any) -> OverlayStyle:
    """The overlay style held in the page's style state (a default before the controls are touched)."""
    return value if isinstance(value, OverlayStyle) else OverlayStyle()


def when_shown(tab: str, fn, outputs: int):
    """`fn` with a leading `shown` input: it draws only while its tab is the one on screen, so an upload
    computes the visible views first and the other tabs draw when they are opened."""

    @functools.wraps(fn)
    def wrapped(shown, *args, **kwargs):
        if shown != tab:
            return gr.skip() if outputs == 1 else tuple(gr.skip() for _ in range(outputs))
        return fn(*args, **kwargs)

    signature = inspect.signature(fn)
    shown_parameter = inspect.Parameter("shown", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    wrapped.__signature__ = signature.replace(parameters=[shown_parameter, *signature.parameters.values()])
    return wrapped
