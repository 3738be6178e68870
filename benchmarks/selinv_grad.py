"""Cost of the selected inverse's pullback relative to the numeric Cholesky factorisation.

Run ``python benchmarks/selinv_grad.py [m ...]`` (an ``m x m`` lattice CAR precision,
default m = 100 and 317, i.e. n = 10^4 and ~10^5).  Prints the best-of-``repeat`` wall
time and CPU time (all threads of the process; the minimum is the estimator least
disturbed by other load on a shared machine) of

* ``factor``: CHOLMOD's numeric factorisation (the floor for one logp evaluation);
* ``fac+selinv``: a fresh factorisation plus the forward selected inverse, i.e. what one
  gradient of ``logdet`` costs;
* ``vjp``: the pullback of the selected inverse (supernodal Takahashi adjoint + Cholesky
  adjoint, :mod:`pymc_sparse.linalg.takahashi_adjoint`), the extra cost of one Hessian-vector
  product of ``logdet`` or one gradient of the marginal variances;
* ``vjp_simpl``: the same with the column-by-column reference kernels;

and the ratio vjp / factor.  Timings, not assertions: the development machines have two
shared cores, so read the CPU-time columns when the load is high.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import scipy.sparse as sp

from pymc_sparse.linalg.cholmod import CholeskyCache
from pymc_sparse.linalg.pattern import SparsityPattern
from pymc_sparse.linalg.takahashi_adjoint import (
    csc_supernodes,
    selected_inverse_vjp,
    selected_inverse_vjp_factor,
)


def lattice_precision(m: int, alpha: float = 0.95, tau: float = 1.0) -> sp.csc_matrix:
    T = sp.diags([np.ones(m - 1), np.ones(m - 1)], [-1, 1], shape=(m, m))
    W = (sp.kron(T, sp.identity(m)) + sp.kron(sp.identity(m), T)).tocsc()
    D = sp.diags(np.asarray(W.sum(axis=1)).ravel())
    return (tau * (D - alpha * W)).tocsc()


def timed(fn, repeat: int) -> tuple[float, float]:
    """Minimum wall and CPU seconds of ``fn()`` over ``repeat`` calls."""
    wall, cpu = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return float(np.min(wall)), float(np.min(cpu))


def run(m: int, repeat: int = 7) -> dict:
    A = lattice_precision(m)
    pattern, data = SparsityPattern.from_scipy(A)
    cache = CholeskyCache(maxsize=2)
    f = cache.factor(pattern, data)
    L = f.L()
    Z = f.selected_inverse_factor()
    sbar = np.random.default_rng(0).normal(size=pattern.nnz)
    Zbar = np.random.default_rng(1).normal(size=L.nnz)
    # JIT warm-up (numba caches on disk, so only a first run ever compiles).
    selected_inverse_vjp(f, sbar)
    selected_inverse_vjp_factor(L.indptr, L.indices, L.data, Z, Zbar, supernodal=False)

    counter = iter(range(1, 10**9))

    def fresh():  # new values each time so that the cache cannot answer
        return cache.factor(pattern, data * (1.0 + 1e-12 * next(counter)))

    t = {
        "factor": timed(fresh, repeat),
        "fac+selinv": timed(lambda: fresh().selected_inverse(), repeat),
        "vjp": timed(lambda: selected_inverse_vjp(f, sbar), repeat),
        "vjp_simpl": timed(
            lambda: selected_inverse_vjp_factor(
                L.indptr, L.indices, L.data, Z, Zbar, supernodal=False
            ),
            max(1, repeat // 2),
        ),
    }
    starts = csc_supernodes(L.indptr.astype(np.int64), L.indices.astype(np.int64))
    t.update(n=pattern.n, nnz_L=L.nnz, supernodes=starts.size - 1)
    return t


def main(argv):
    ms = [int(a) for a in argv] or [100, 317]
    keys = ["factor", "fac+selinv", "vjp", "vjp_simpl"]
    head = ["n", "nnz(L)", "snodes"] + [f"{k}({u})" for k in keys for u in ("w", "cpu")]
    head += ["vjp/fac(w)", "vjp/fac(cpu)"]
    print(" ".join(f"{h:>13}" for h in head))
    for m in ms:
        t = run(m)
        row = [t["n"], t["nnz_L"], t["supernodes"]]
        row += [f"{t[k][u]:.4f}" for k in keys for u in (0, 1)]
        row += [f"{t['vjp'][u] / t['factor'][u]:.2f}" for u in (0, 1)]
        print(" ".join(f"{v:>13}" for v in row))


if __name__ == "__main__":
    main(sys.argv[1:])
