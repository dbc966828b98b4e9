"""Shared by the app tests: analyse an image through the panel's own handler, count model runs."""

import base64
import io

from PIL import Image

from app import panel
from app.render import OverlayStyle

STYLE = OverlayStyle()
NO_PROGRESS = lambda *args, **kwargs: None  # noqa: E731


def analyzed(image, model, session=None, request=None):
    """The panel's analysis as the page runs it: (session, the panel's outputs)."""
    outputs = panel.outcome(image, model, session, progress=NO_PROGRESS, request=request)[0].values()
    return outputs[0], outputs


def is_picture(value) -> bool:
    """A drawn picture as an event returns it: a `data:` URL the board encoded (`app.tabs.base.write_pictures`:
    a JPEG where it shows a photo, a PNG where it is exact) whose bytes are that format, or a PIL image where a
    handler leaves the encoding to Gradio."""
    if isinstance(value, Image.Image):
        return True
    formats = {"data:image/jpeg;base64,": "JPEG", "data:image/png;base64,": "PNG"}
    prefix = next((p for p in formats if isinstance(value, str) and value.startswith(p)), None)
    if prefix is None:
        return False
    with Image.open(io.BytesIO(base64.b64decode(value[len(prefix) :], validate=True))) as image:
        return image.format == formats[prefix] and image.width > 0
