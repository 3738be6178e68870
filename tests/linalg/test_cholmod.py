import os
import threading

import numpy as np
import pytest
import scipy.sparse as sp

import pymc_sparse as pms
from pymc_sparse.linalg.cholmod import (
    CACHE,
    CholeskyCache,
    NotPositiveDefiniteError,
    SingularPrecisionError,
)
from pymc_sparse.linalg.pattern import SparsityPattern
from tests.helpers import grid_laplacian, lattice_adjacency


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
            from pymc_sparse.linalg.threads import NUMERIC_THREADS

            ok = CACHE.info()["cached_factors"] == 0 and np.isfinite(CACHE.factor(p, d).logdet())
            ok = ok and NUMERIC_THREADS.forked  # the child hands factorisations to workers
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


# -- numerical singularity (issue 18) ------------------------------------------------


def _structure(W):
    """ICAR structure matrix D - W: singular by construction."""
    W = sp.csc_matrix(W)
    return sp.csc_matrix(sp.diags(np.asarray(W.sum(axis=1)).ravel()) - W)


def _random_graph(n, seed, mean_degree=3.0):
    # A ring plus random chords: connected, no isolated node.
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    rows = np.concatenate([i, rng.integers(0, n, int(mean_degree * n / 2))])
    cols = np.concatenate([(i + 1) % n, rng.integers(0, n, rows.size - n)])
    W = sp.coo_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n)).tocsc()
    W = W + W.T
    W.setdiag(0)
    W.eliminate_zeros()
    W.data[:] = rng.uniform(0.2, 5.0, W.nnz)
    return (W + W.T) / 2


def _lattice3(m):
    T = sp.diags([np.ones(m - 1), np.ones(m - 1)], [-1, 1], shape=(m, m))
    eye = sp.identity(m)
    return (sp.kron(sp.kron(T, eye), eye) + sp.kron(sp.kron(eye, T), eye)).tocsc() + sp.kron(
        sp.kron(eye, eye), T
    ).tocsc()


def test_icar_structure_of_every_lattice_is_flagged_singular():
    for k in range(2, 31):
        p, d = SparsityPattern.from_scipy(_structure(lattice_adjacency(k)))
        f = CACHE.factor(p, d)
        assert not f.ok
        assert np.isnan(f.logdet()) and np.isnan(f.solve(np.ones(k * k))).all()
        with pytest.raises(SingularPrecisionError, match=r"column \d+ .*ICAR"):
            f.raise_if_failed()


@pytest.mark.parametrize("m", [6, 10, 12], ids=["simplicial", "supernodal10", "supernodal12"])
def test_icar_structure_of_3d_lattices_is_flagged(m):
    # m >= 9 gives a supernodal factor: both CHOLMOD kernels are covered.
    W = _lattice3(m)
    W.data[:] = np.random.default_rng(m).uniform(0.5, 2.0, W.nnz)
    Q = _structure((W + W.T) / 2)
    with pytest.raises(SingularPrecisionError):
        pms.cholesky(Q)
    # a valid neighbour: a proper CAR, and an indefinite one that is not called singular
    Qd = Q + 1e-3 * sp.identity(m**3)
    assert np.isclose(pms.cholesky(Qd).logdet(), np.linalg.slogdet(Qd.toarray())[1])
    with pytest.raises(NotPositiveDefiniteError) as err:
        pms.cholesky((Q - 0.5 * sp.identity(m**3)).tocsc())
    assert not isinstance(err.value, SingularPrecisionError)


def test_icar_structure_of_random_weighted_graphs_is_flagged():
    for seed in range(100):
        Q = _structure(_random_graph(50, seed))
        with pytest.raises(SingularPrecisionError):
            pms.cholesky(Q)
        # a congruence scaling over 10 orders of magnitude changes nothing
        s = np.exp(np.random.default_rng(seed).normal(0.0, 4.0, 50))
        with pytest.raises(SingularPrecisionError):
            pms.cholesky(sp.csc_matrix(sp.diags(s) @ Q @ sp.diags(s)))
    assert pms.cache_info()["singular"] >= 100


@pytest.mark.parametrize("delta", [1e-8, 1e-12], ids=["cond1e8", "cond1e12"])
def test_near_singular_valid_matrices_still_factorise(delta):
    # Global near-null direction (ICAR + ridge): condition about 8 / delta.
    Q = (_structure(lattice_adjacency(30)) + 4 * delta * sp.identity(900)).tocsc()
    f = pms.cholesky(Q)
    dense = Q.toarray()
    assert np.linalg.cond(dense) > 1e-2 / delta
    assert np.isclose(f.logdet(), np.linalg.slogdet(dense)[1], rtol=1e-7)
    b = np.random.default_rng(0).normal(size=900)
    x = f.solve(b)
    assert np.linalg.norm(dense @ x - b) <= 1e-3 * np.linalg.norm(b)
    # Local near-null direction: a 2 x 2 block of condition 2 / delta in a 1000-node chain.
    B = sp.lil_matrix(sp.identity(1000) * 2.0)
    B[0, 0] = B[1, 1] = 1.0
    B[0, 1] = B[1, 0] = 1.0 - delta
    f = pms.cholesky(B.tocsc())
    assert np.isclose(f.logdet(), np.log(1 - (1 - delta) ** 2) + 998 * np.log(2), rtol=1e-3)


def test_singular_in_graphs_is_nan_and_outside_raises():
    import pytensor

    Q = _structure(lattice_adjacency(6))
    Qs = pms.SparseMatrix.from_scipy(Q)
    out = pytensor.function([], [pms.logdet(Qs), pms.solve(Qs, np.ones(36))])()
    assert np.isnan(out[0]) and np.isnan(out[1]).all()
    with pytest.raises(NotPositiveDefiniteError, match="singular"):
        pms.sample_gmrf(Qs, rng=0)


def test_indefinite_is_not_called_singular():
    Q = grid_laplacian(6, shift=-0.5)  # a clearly negative pivot
    with pytest.raises(NotPositiveDefiniteError) as err:
        pms.cholesky(Q)
    assert not isinstance(err.value, SingularPrecisionError)
    assert "broke down at column" in str(err.value)


# -- bounded caches, concurrency, fork -----------------------------------------------


def test_symbolic_cache_is_bounded_and_cleared():
    cache = CholeskyCache(maxsize=2, symbolic_maxsize=3)
    for k in range(3, 9):
        p, d = SparsityPattern.from_scipy(grid_laplacian(k))
        assert np.isfinite(cache.factor(p, d).logdet())
    info = cache.info()
    assert info["cached_patterns"] == 3 and info["symbolic"] == 6 and info["cached_factors"] == 2
    cache.clear()
    assert cache.info()["cached_patterns"] == 0
    with pytest.raises(ValueError, match="at least 1"):
        CholeskyCache(symbolic_maxsize=0)


def test_one_symbolic_analysis_under_concurrent_first_use():
    p, d = SparsityPattern.from_scipy(grid_laplacian(40))
    barrier = threading.Barrier(8)
    out, errors = [], []

    def work(i):
        try:
            barrier.wait()
            out.append(CACHE.factor(p, d * (1 + i % 2)).logdet())
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    info = pms.cache_info()
    assert info["symbolic"] == 1 and info["numeric"] == 2 and info["cached_patterns"] == 1
    assert len(set(out)) == 2


_RSS_SCRIPT = r"""
import gc, os, numpy as np, scipy.sparse as sp
import pymc_sparse as pms
from pymc_sparse.linalg.cholmod import CACHE
from pymc_sparse.linalg.pattern import SparsityPattern

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

m = 50  # n = 2,500
T = sp.diags([np.ones(m - 1), np.ones(m - 1)], [-1, 1], shape=(m, m))
W = (sp.kron(T, sp.identity(m)) + sp.kron(sp.identity(m), T)).tocsc()
base = (sp.diags(np.asarray(W.sum(1)).ravel() + 0.1) - W).tocsc()
def pattern(k):  # one extra long-range edge per pattern: 300 distinct patterns
    E = sp.csc_matrix(([-0.01, -0.01], ([k, 2499 - k], [2499 - k, k])), shape=(2500, 2500))
    return SparsityPattern.from_scipy((base + E).tocsc())
p, d = pattern(0); CACHE.factor(p, d).selected_inverse()
gc.collect(); r0 = rss()
for k in range(1, 300):
    p, d = pattern(k); CACHE.factor(p, d).selected_inverse()
gc.collect(); r1 = rss()
pms.clear_cache(); gc.collect(); r2 = rss()
import ctypes; ctypes.CDLL("libc.so.6").malloc_trim(0); r3 = rss()  # freed pages to the OS
print(f"{r0:.1f} {r1:.1f} {r2:.1f} {r3:.1f} {pms.cache_info()['cached_patterns']}")
"""


def test_memory_is_bounded_and_returned_by_clear_cache():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    r0, r1, _, r3, patterns = (float(v) for v in out.stdout.split())
    # Measured (MB): unbounded symbolic cache +114 after 300 patterns, bounded +23; after
    # clear_cache() and malloc_trim the resident size is back to (or below) its start.
    assert r1 - r0 < 60, (r0, r1)
    assert r3 - r0 < 10, (r0, r3)
    assert patterns == 0


def test_unforked_process_calls_cholmod_directly():
    from pymc_sparse.linalg.threads import NUMERIC_THREADS

    assert not NUMERIC_THREADS.forked  # pytest itself never forks this process
    names = []
    p, d = SparsityPattern.from_scipy(grid_laplacian(8))
    NUMERIC_THREADS.run(lambda: names.append(threading.current_thread().name))
    assert names == [threading.current_thread().name]
    assert np.isfinite(CACHE.factor(p, d).logdet())
