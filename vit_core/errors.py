"""The one exception type that carries a user-facing sentence (CLI exit code 2, gr.Error in the UI)."""


class VitCoreError(Exception):
    """A problem with the user's input (image, model name, weights), worded as one clear sentence."""


class WeightsUnavailable(VitCoreError):
    """Pretrained weights are neither cached locally nor downloadable right now."""
