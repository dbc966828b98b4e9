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
    # images (vit_core.images)
    "image_missing": "{name} does not exist.",
    "image_not_a_file": "{name} is not a file.",
    "image_unreadable": "{name} cannot be read ({reason}).",
    "image_empty": "{name} is empty (0 bytes).",
    "image_bomb": "{name} is too large to open safely (over {limit} MP).",
    "image_too_compressed": (
        "{name} claims to be {width}x{height} pixels but holds only {kilobytes} KB of data; "
        "a file compressed this far is refused as a possible decompression bomb."
    ),
    "image_not_an_image": "{name} is not an image file that can be read (use PNG, JPEG, WebP, GIF, BMP or TIFF).",
    "image_corrupt": "{name} is truncated or corrupt and cannot be decoded.",
    "image_no_pixels": "{name} has no pixels.",
    "image_too_many_pixels": "{name} is {width}x{height} pixels ({megapixels} MP); the limit is {limit} MP.",
    "image_aspect": "{name} is {width}x{height} pixels, an aspect ratio beyond {limit}:1 that cannot be analysed.",
    # models offered on a public page (app.service)
    "model_not_offered": "this page runs only the models in its model menu; choose one of those.",
    "model_too_large": "{name} has {millions} M parameters, more than this page's limit of {limit} M; "
    "choose a smaller model.",
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

    def __reduce__(self):
        # pickled as key and parameters (a ZeroGPU worker sends its errors back pickled): the app still
        # translates by key on the other side; Exception's default would rebuild it from the sentence
        return _rebuild, (type(self), self.key, self.params)


def _rebuild(cls: type[VitCoreError], key: str, params: dict[str, Any]) -> VitCoreError:
    return cls(key, **params)


class WeightsUnavailable(VitCoreError):
    """Pretrained weights are neither cached locally nor downloadable right now."""
