"""Shared by the app tests: analyse an image through the panel's own handler, count model runs."""

from app import panel
from app.render import OverlayStyle

STYLE = OverlayStyle()
NO_PROGRESS = lambda *args, **kwargs: None  # noqa: E731


def analyzed(image, model, session=None, request=None):
    """The panel's analysis as the page runs it: (session, the panel's outputs)."""
    outputs = panel.outcome(image, model, session, progress=NO_PROGRESS, request=request)[0].values()
    return outputs[0], outputs
