"""Errors as data: every user-facing problem is a `VitCoreError(key, **params)`.

The English sentence is one rendering of the key (`MESSAGES` below); the app translates by key
(`app/locales/<language>.json`, `error.<key>`), never by parsing the English back. The CLI prints the
English sentence and exits with code 2.
"""

from __future__ import annotations

from typing import Any

# key -> English template ({name} placeholders filled from the error's params)
MESSAGES: dict[str, str] = {
    "no_image": "pick an example or upload an image first.",
    "not_uploaded": "send the image as an upload; files on the server cannot be named.",
    "query_patch_format": "query patch {value!r} must be ROW,COL.",
    "head_choice": "head {value!r} is not a head index, mean or max.",
    "no_head_layers": "this model has no classification head, so there are no per-layer predictions.",
}


def render(key: str, params: dict[str, Any]) -> str:
    """The English sentence of `key` with `params` filled in."""
    template = MESSAGES.get(key)
    if template is None:  # transitional: a sentence not yet given a key
        return key
    return template.format(**params)


class VitCoreError(Exception):
    """A problem with the user's input, carried as a key and its parameters; `str()` is the English sentence."""

    def __init__(self, key: str, **params: Any) -> None:
        self.key = key
        self.params = params
        super().__init__(render(key, params))


class WeightsUnavailable(VitCoreError):
    """Pretrained weights are neither cached locally nor downloadable right now."""
