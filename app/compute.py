"""One thread for the server's tensor work.

Torch's CPU kernels run on OpenMP, and GNU OpenMP keeps a pool of worker threads per calling thread. Gradio
runs each event on whichever of its worker threads is free, so after a few events several pools exist;
once libgomp manages more threads than there are cores it stops spinning between parallel regions, and
every region pays for waking its threads. Measured on 2 cores: a ViT-S/16 forward and backward pass takes
~125 ms when one thread has ever run torch and 150-220 ms once several have. So every event of the page and
the API runs its body here, on one thread, and the process keeps one pool.

The price is that events no longer overlap. They did not gain from overlapping either: the model runs were
already one at a time (`MODEL_RUN`), and a redraw takes a small fraction of a forward pass.
"""

from __future__ import annotations

import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

F = TypeVar("F", bound=Callable)

_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compute")
_THREAD = threading.local()


def _mark() -> None:
    _THREAD.compute = True


_EXECUTOR.submit(_mark).result()  # the executor's one thread, started now and marked


def here() -> bool:
    """Whether the caller is the compute thread."""
    return getattr(_THREAD, "compute", False)


def on_compute_thread(fn: F) -> F:
    """`fn`, run on the compute thread (directly when already there), in the caller's context: Gradio's
    progress bar and warnings find their event through context variables."""

    @functools.wraps(fn)  # Gradio reads the signature (gr.Request, gr.Progress) through __wrapped__
    def wrapped(*args, **kwargs):
        if here():
            return fn(*args, **kwargs)
        context = contextvars.copy_context()
        return _EXECUTOR.submit(context.run, fn, *args, **kwargs).result()

    return wrapped  # type: ignore[return-value]
