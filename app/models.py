"""Loaded models shared by every session, bounded by memory: least-recently-used eviction by parameter bytes.

A model asked for by several sessions at once is loaded once (the others wait for it), and a slow load
does not hold up sessions using other models. The store is also the registry a ZeroGPU worker finds
its models in: the worker is a fork of this process, so it inherits the models loaded before it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from vit_core.zoo import LoadedModel


def model_bytes(loaded: LoadedModel) -> int:
    """Bytes held by a model's parameters and buffers."""
    tensors = [*loaded.model.parameters(), *loaded.model.buffers()]
    text_tower = 4 * loaded.text.num_parameters if loaded.text is not None else 0  # float32
    return sum(t.numel() * t.element_size() for t in tensors) + text_tower


class ModelStore:
    """Thread-safe LRU of loaded models, by bytes. The model just asked for stays, even alone over budget."""

    def __init__(
        self,
        max_bytes: int,
        load: Callable[[str], LoadedModel],
        size: Callable[[LoadedModel], int] = model_bytes,
    ) -> None:
        self.max_bytes = max_bytes
        self._load = load
        self._size = size
        self._models: OrderedDict[str, tuple[int, LoadedModel]] = OrderedDict()  # most recent last
        self._lock = threading.Lock()  # guards _models and _loading
        self._loading: dict[str, threading.Lock] = {}  # one lock per model being loaded

    def get(self, name: str, expected_bytes: int = 0) -> LoadedModel:
        """The model `name`, loaded on first use. `expected_bytes` (when known before loading) makes
        room first, so memory stays within budget while the new model loads."""
        found = self._touch(name)
        if found is not None:
            return found
        with self._lock:
            loading = self._loading.setdefault(name, threading.Lock())
        with loading:  # a second session asking for the same model waits here, then finds it
            found = self._touch(name)
            if found is not None:
                return found
            with self._lock:
                self._shrink(self.max_bytes - expected_bytes)
            try:
                loaded = self._load(name)
            except BaseException:
                with self._lock:
                    self._loading.pop(name, None)  # the next request tries again
                raise
            with self._lock:  # stored before its lock goes, so a later request finds it instead of loading again
                self._models[name] = (self._size(loaded), loaded)
                self._shrink(self.max_bytes, keep=name)
                self._loading.pop(name, None)
            return loaded

    def peek(self, name: str) -> LoadedModel | None:
        """The model if it is loaded, without loading it or changing the order."""
        with self._lock:
            entry = self._models.get(name)
            return None if entry is None else entry[1]

    def names(self) -> list[str]:
        """Loaded models, least recently used first."""
        with self._lock:
            return list(self._models)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(size for size, _ in self._models.values())

    def clear(self) -> None:
        with self._lock:
            self._models.clear()

    def after_fork(self) -> None:
        """In a forked child: fresh locks. A lock another thread of the parent held at the fork would
        stay locked forever in the child (a ZeroGPU worker), and a load in progress there is not the child's."""
        self._lock = threading.Lock()
        self._loading = {}

    def _touch(self, name: str) -> LoadedModel | None:
        with self._lock:
            if name not in self._models:
                return None
            self._models.move_to_end(name)
            return self._models[name][1]

    def _shrink(self, budget: int, keep: str | None = None) -> None:
        total = sum(size for size, _ in self._models.values())
        for name in list(self._models):
            if total <= budget:
                break
            if name != keep:
                total -= self._models.pop(name)[0]
