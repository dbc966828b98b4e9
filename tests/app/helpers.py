"""Shared by the app tests: analyse an image through the panel's own handler, count model runs."""

from pathlib import Path

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
    """A drawn picture as an event returns it: a file the board wrote (`app.tabs.base.write_pictures`: a JPEG
    where it shows a photo, a PNG where it is exact), or a PIL image where a handler leaves the writing to
    Gradio."""
    if isinstance(value, Image.Image):
        return True
    formats = {".jpg": "JPEG", ".png": "PNG"}
    if not isinstance(value, str) or Path(value).suffix not in formats or not Path(value).is_file():
        return False
    with Image.open(value) as image:
        return image.format == formats[Path(value).suffix] and image.width > 0
