"""The shared checks of user input: an index, a number in a range, one of a few choices, a patch.

Every function returns the value as a plain Python value or raises a keyed `VitCoreError` whose
`what` parameter is a word of `vit_core.errors.WHAT`, so the app can translate the whole sentence.
(captum keeps its `_validate_*` helpers in one place in the same way.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vit_core.errors import VitCoreError, What


def _plain(value: object) -> str | int | float:
    """A parameter an error can carry: numbers and strings as they are, anything else as its repr."""
    if isinstance(value, np.generic):
        value = value.item()
    return value if isinstance(value, str | int | float) else repr(value)


def as_index(value: object, what: What) -> int:
    """`value` as an int: Python and numpy integers pass; bools, floats and strings are refused."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise VitCoreError("not_an_index", what=what, value=_plain(value))
    return int(value)


def check_index(value: object, size: int, what: What) -> int:
    """`value` as an index into `size` things (0 .. size - 1), else `index_out_of_range`."""
    index = as_index(value, what)
    if not 0 <= index < size:
        raise VitCoreError("index_out_of_range", what=what, value=index, size=int(size), last=int(size) - 1)
    return index


def check_range(
    value: object,
    low: float,
    high: float | None,
    what: What,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float | int:
    """`value` within [low, high] (either end open on request); `high=None` means at least `low`."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.integer | np.floating):
        raise VitCoreError("not_a_number", what=what, value=_plain(value))
    number = _plain(value)
    if high is None:
        if not number >= low:  # also refuses NaN
            raise VitCoreError("value_too_small", what=what, value=number, low=low)
        return number
    above = number > low if low_open else number >= low
    below = number < high if high_open else number <= high
    if not (above and below):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise VitCoreError("value_out_of_range", what=what, value=number, low=low, high=high, interval=interval)
    return number


def check_choice(value: object, choices: Sequence[str], what: What) -> str:
    """`value` if it is one of `choices`, else `unknown_choice` listing them."""
    if not isinstance(value, str) or value not in choices:
        raise VitCoreError("unknown_choice", what=what, value=_plain(value), choices=", ".join(choices))
    return value


def check_patch(patch: object, grid: tuple[int, int]) -> tuple[int, int]:
    """A (row, col) patch on a `grid` of (rows, cols) patches, as two ints."""
    try:
        row, col = patch  # type: ignore[misc]
    except (TypeError, ValueError):
        shown = ",".join(str(v) for v in patch) if isinstance(patch, tuple | list) else _plain(patch)
        raise VitCoreError("bad_query_patch", value=shown) from None
    row, col = as_index(row, "patch row"), as_index(col, "patch column")
    rows, cols = grid
    if not (0 <= row < rows and 0 <= col < cols):
        raise VitCoreError("patch_outside_grid", row=row, col=col, rows=int(rows), cols=int(cols))
    return row, col
