import numpy as np

import pymc_sparse as pms
from pymc_sparse.linalg.lru import LRUCache, lru_function


def test_lru_cache_is_bounded_and_least_recently_used_goes_first():
    c = LRUCache(2, "test")
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1  # a is now the most recent
    c.put("c", 3)
    assert "b" not in c and "a" in c and "c" in c and len(c) == 2


def test_clear_cache_empties_every_registered_cache():
    c = LRUCache(4, "test")
    c.put("k", np.zeros(3))
    calls = []

    @lru_function(maxsize=4)
    def build(x):
        calls.append(x)
        return x

    build(1)
    build(1)
    assert calls == [1]
    pms.clear_cache()
    assert len(c) == 0
    build(1)
    assert calls == [1, 1]  # the memoised function was emptied too
