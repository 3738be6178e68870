import os
import threading

import numpy as np
import pytest

import pymc_sparse as pms
from pymc_sparse.linalg.cholmod import CACHE, CholeskyCache
from pymc_sparse.linalg.pattern import SparsityPattern
from tests.helpers import grid_laplacian


def test_lru_bound_and_counters():
    cache = CholeskyCache(maxsize=3)
    p, d = SparsityPattern.from_scipy(grid_laplacian(4))
    for k in range(5):
        cache.factor(p, d * (1 + k))
    info = cache.info()
    assert info["numeric"] == 5 and info["symbolic"] == 1 and info["cached_factors"] == 3
    cache.factor(p, d * 5)  # most recent: a hit
    assert cache.info()["hits"] == 1
    cache.factor(p, d * 1)  # evicted: refactorised
    assert cache.info()["numeric"] == 6


def test_threads_share_one_factorisation():
    p, d = SparsityPattern.from_scipy(grid_laplacian(30))
    results, errors = [], []

    def work():
        try:
            for k in range(5):
                results.append(CACHE.factor(p, d * (1 + k % 2)).logdet())
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert pms.cache_info()["numeric"] == 2
    ref = np.linalg.slogdet(grid_laplacian(30).toarray())[1]
    assert np.isclose(min(results), ref) or np.isclose(max(results), ref)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_gets_fresh_cache():
    p, d = SparsityPattern.from_scipy(grid_laplacian(5))
    CACHE.factor(p, d)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            ok = CACHE.info()["cached_factors"] == 0 and np.isfinite(CACHE.factor(p, d).logdet())
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(w)
    msg = os.read(r, 1)
    os.waitpid(pid, 0)
    assert msg == b"1"


_FORK_SCRIPT = r"""
import os, sys, time
import numpy as np, scipy.sparse as sp
from pymc_sparse.linalg.cholmod import CACHE
from pymc_sparse.linalg.pattern import SparsityPattern

m = 100  # large enough for a supernodal factor with OpenMP regions in CHOLMOD
T = sp.diags([np.ones(m - 1), np.ones(m - 1)], [-1, 1], shape=(m, m))
W = (sp.kron(T, sp.identity(m)) + sp.kron(sp.identity(m), T)).tocsc()
Q = (sp.diags(np.asarray(W.sum(1)).ravel()) - 0.9 * W).tocsc()
p, d = SparsityPattern.from_scipy(Q)
assert np.isfinite(CACHE.factor(p, d).logdet())  # the parent factorises first
pid = os.fork()
if pid == 0:
    ld = CACHE.factor(p, 1.5 * d).logdet()
    os._exit(0 if np.isfinite(ld) else 3)
t0 = time.time()
while time.time() - t0 < 60:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        sys.exit(os.waitstatus_to_exitcode(status))
    time.sleep(0.05)
os.kill(pid, 9)
sys.exit(7)  # the child hung
"""


def test_factorisation_in_forked_child_does_not_hang():
    # pm.sample(cores > 1) forks on Linux; CHOLMOD's OpenMP pool must not be inherited
    # by the thread that factorises in the child (see cholmod._NumericThreads).
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _FORK_SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode != 7, "the forked child hung in its first factorisation"
    assert proc.returncode == 0, proc.stderr[-2000:]
