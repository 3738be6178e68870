"""One bounded, thread-safe LRU cache type for every cache in the package.

Each cache registers itself at creation, so :func:`clear_all` (behind
``pms.clear_cache()``) empties every one of them: factors, symbolic analyses,
log-determinant tables, supernode plans.  Sizes are counted in entries and documented
where each cache is made.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections import OrderedDict

__all__ = ["LRUCache", "clear_all", "lru_function"]

_REGISTRY: weakref.WeakSet = weakref.WeakSet()


class LRUCache:
    """A mapping that keeps the ``maxsize`` most recently used entries.

    Parameters
    ----------
    maxsize : int
        Entries kept; the least recently used one is dropped beyond it.
    name : str
        Shown by :meth:`info` and ``pms.cache_info()``.
    """

    def __init__(self, maxsize: int, name: str):
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}.")
        self.maxsize = int(maxsize)
        self.name = name
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        _REGISTRY.add(self)

    def get(self, key, default=None):
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
            self.misses += 1
            return default

    def put(self, key, value) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def get_or_create(self, key, make):
        """The cached value of ``key``, else ``make()`` stored (``make`` runs unlocked)."""
        value = self.get(key)
        if value is None:
            value = make()
            self.put(key, value)
        return value

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0

    def info(self) -> dict:
        return {"size": len(self._data), "maxsize": self.maxsize}


_FUNCTIONS: list = []


def lru_function(maxsize: int):
    """Return ``functools.lru_cache(maxsize)`` whose cache :func:`clear_all` also empties.

    For memoised builders keyed on hashable arguments (JAX functions per pattern, ICAR
    layouts); ``maxsize`` bounds them like every other cache.
    """

    def decorate(fn):
        cached = functools.lru_cache(maxsize=maxsize)(fn)
        _FUNCTIONS.append(cached)
        return cached

    return decorate


def clear_all() -> None:
    """Empty every registered cache."""
    for cache in list(_REGISTRY):
        cache.clear()
    for fn in _FUNCTIONS:
        fn.cache_clear()
