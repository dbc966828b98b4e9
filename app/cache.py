"""A bounded store of analyses shared by every session: least-recently-used eviction by bytes, plus a TTL.

Sessions and API clients hold only a key (model name + image digest). Each entry holds one image's
class-agnostic capture and, added lazily, one gradient capture per target class and any derived
values worth keeping. Memory stays flat as visitors come and go: the store never holds more than
`max_bytes`, and entries untouched for `ttl_s` seconds are dropped.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from PIL import Image

from vit_core.capture import Capture, DeviceCapture, tensor_bytes


def capture_bytes(*captures: Capture | DeviceCapture) -> int:
    """Bytes held by captures: their numpy arrays and torch tensors (on any device), so the budget bounds
    both; an array two captures share counts once."""
    arrays = {}
    for capture in captures:
        for f in fields(capture):
            value = getattr(capture, f.name)
            if isinstance(value, np.ndarray | torch.Tensor):
                arrays[id(value)] = value
    return sum(v.nbytes if isinstance(v, np.ndarray) else tensor_bytes(v) for v in arrays.values())


@dataclass
class Analysis:
    """One (model, image[, label set]): the capture, the class-specific captures by target, and memoised views.

    An image–text model's analysis with labels holds the label set: its capture's logits are the labels'
    zero-shot logits. Targets are class indices, or ("text", phrase) for a phrase.
    """

    key: str
    model_name: str
    image_path: str
    capture: Capture
    by_target: dict[Hashable, Capture] = field(default_factory=dict)
    memo: dict[Any, Any] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)  # memos may nest
    created: float = field(default_factory=time.monotonic)  # a summary says "from cache" for an older one
    image_size: tuple[int, int] | None = None  # (width, height) of the decoded image, before preprocessing
    preview: Image.Image | None = None  # the decoded image, at most 384 pixels a side (where the crop is marked)
    pixels: torch.Tensor | None = None  # [C, H, W] the model's input, kept for re-runs (maps, ablations)
    labels: tuple[str, ...] | None = None  # an image–text model's zero-shot labels (None: none given)
    templates: tuple[str, ...] = ()  # the prompt templates around each label

    @property
    def nbytes(self) -> int:
        pixels = 0 if self.pixels is None else self.pixels.numel() * self.pixels.element_size()
        return capture_bytes(self.capture, *self.by_target.values()) + pixels

    def remember(self, key: Any, compute: Callable[[], Any]) -> Any:
        """`compute()` once per key; later calls return the stored value."""
        with self.lock:
            if key not in self.memo:
                self.memo[key] = compute()
            return self.memo[key]


class AnalysisCache:
    """Thread-safe LRU (by bytes) with time-to-live."""

    def __init__(self, max_bytes: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Analysis]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str | None) -> Analysis | None:
        with self._lock:
            self._expire()
            if key is None or key not in self._entries:
                return None
            _, analysis = self._entries.pop(key)
            self._entries[key] = (self._clock(), analysis)  # most recent last
            return analysis

    def put(self, analysis: Analysis) -> Analysis:
        with self._lock:
            self._entries.pop(analysis.key, None)
            self._entries[analysis.key] = (self._clock(), analysis)
            self._shrink(keep=analysis.key)
            return analysis

    def grew(self, analysis: Analysis) -> None:
        """Call after adding to an entry (a gradient capture): evicts others if the total is now too big."""
        with self._lock:
            self._shrink(keep=analysis.key)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(a.nbytes for _, a in self._entries.values())

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._entries)

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, (touched, _) in self._entries.items() if now - touched > self.ttl_s]:
            del self._entries[key]

    def _shrink(self, keep: str) -> None:
        self._expire()
        total = sum(a.nbytes for _, a in self._entries.values())
        for key in list(self._entries):
            if total <= self.max_bytes:
                break
            if key != keep:  # the entry in use stays, even alone over budget
                total -= self._entries.pop(key)[1].nbytes
