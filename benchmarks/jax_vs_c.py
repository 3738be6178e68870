"""Per-evaluation log-density + gradient time: JAX path vs default (C) path vs NUMBA.

The graph is the proper-CAR log density on an m x m lattice,

    logp(tau, alpha, x) = 0.5 logdet(Q) - 0.5 x' Q x,   Q = tau (D - alpha W),

differentiated with respect to tau, alpha and x.  Every evaluation uses a new tau, so
every evaluation runs one numeric factorisation (the cache cannot hide it), one
log-determinant, one selected inverse (for the gradient) and the O(nnz) arithmetic.

* C: ``pytensor.function([tau, alpha, x], [logp, *pytensor.grad(...)])`` (default mode);
* JAX: ``jax.jit(jax.value_and_grad(f))`` with ``f`` from PyMC's ``get_jaxified_graph``,
  i.e. exactly what numpyro/blackjax evaluate (JAX differentiates via custom_jvp);
* NUMBA: the C graph compiled with ``mode="NUMBA"`` (nutpie's default backend).

Calls of the three paths are interleaved so machine noise hits them alike; the table
shows medians, the ratio JAX / C and the floor (the numeric factorisation alone).

Run:  .venv/bin/python benchmarks/jax_vs_c.py [--sizes 100 316] [--reps 7]
"""

import argparse
import time

import jax
import numpy as np
import pytensor
import pytensor.tensor as pt
import scipy.sparse as sp
from pymc.sampling.jax import get_jaxified_graph

import pymc_sparse.dispatch.jax  # noqa: F401
from pymc_sparse.linalg.cholmod import CACHE
from pymc_sparse.ops.logdet import logdet
from pymc_sparse.ops.matrix import SparseMatrix


def lattice(m):
    T = sp.diags([np.ones(m - 1), np.ones(m - 1)], [-1, 1], shape=(m, m))
    W = (sp.kron(T, sp.identity(m)) + sp.kron(sp.identity(m), T)).tocsc()
    D = sp.diags(np.asarray(W.sum(axis=1)).ravel())
    return D, W


def build(m):
    D, W = lattice(m)
    tau, alpha = pt.dscalar("tau"), pt.dscalar("alpha")
    x = pt.dvector("x")
    Q = tau * (SparseMatrix.from_scipy(D) - alpha * SparseMatrix.from_scipy(W))
    logp = 0.5 * logdet(Q) - 0.5 * Q.quad_form(x)
    inputs = [tau, alpha, x]
    grads = pytensor.grad(logp, inputs)
    f_c = pytensor.function(inputs, [logp, *grads])
    f_nb = pytensor.function(inputs, [logp, *grads], mode="NUMBA")
    # Values of Q alone, to time the bare numeric factorisation (the floor).
    data_fn = pytensor.function([tau, alpha], Q.data)
    jfn = get_jaxified_graph(inputs, [logp])
    f_j = jax.jit(jax.value_and_grad(lambda t, a, v: jfn(t, a, v)[0], argnums=(0, 1, 2)))
    return f_c, f_nb, f_j, data_fn, Q.pattern


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 316])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument(
        "--numba-fallback",
        action="store_true",
        help="do not register pymc_sparse.dispatch.numba (PyTensor's object-mode fallback)",
    )
    args = ap.parse_args()
    if not args.numba_fallback:
        import pymc_sparse.dispatch.numba  # noqa: F401
    rows = []
    for m in args.sizes:
        f_c, f_nb, f_j, data_fn, pattern = build(m)
        n = m * m
        rng = np.random.default_rng(0)
        x = rng.normal(size=n)
        alpha = 0.9
        # Warm up (compilation, symbolic analysis, numba/jit) and check agreement.
        vc = f_c(1.0, alpha, x)
        vj = f_j(1.0, alpha, x)
        vn = f_nb(1.0, alpha, x)
        assert np.allclose(vc[0], vj[0], rtol=1e-10) and np.allclose(vc[0], vn[0], rtol=1e-10)
        assert np.allclose(vc[1], vj[1][0], rtol=1e-8)
        times = {"C": [], "JAX": [], "NUMBA": [], "factor": []}
        k = 0
        for _ in range(args.reps):
            for name in ("C", "JAX", "NUMBA", "factor"):
                k += 1
                tau = 1.0 + 1e-4 * k  # new values: the cache cannot hide the factorisation
                if name == "factor":
                    d = data_fn(tau, alpha)
                    t0 = time.perf_counter()
                    CACHE.factor(pattern, d)
                    times[name].append(time.perf_counter() - t0)
                    continue
                t0 = time.perf_counter()
                if name == "C":
                    f_c(tau, alpha, x)
                elif name == "NUMBA":
                    f_nb(tau, alpha, x)
                else:
                    out = f_j(tau, alpha, x)
                    jax.block_until_ready(out)
                times[name].append(time.perf_counter() - t0)
        for stat, fn in (("median", np.median), ("min", np.min)):
            rows.append((n, pattern.nnz, stat, {k: 1e3 * float(fn(v)) for k, v in times.items()}))
    numba = "NUMBA-fallback" if args.numba_fallback else "NUMBA"
    print(
        f"{'n':>7} {'nnz':>7} {'stat':>6} {'C ms':>8} {'JAX ms':>8} {numba + ' ms':>10} "
        f"{'factor ms':>9} {'JAX/C':>6} {numba + '/C':>8}"
    )
    for n, nnz, stat, t in rows:
        print(
            f"{n:>7} {nnz:>7} {stat:>6} {t['C']:>8.1f} {t['JAX']:>8.1f} {t['NUMBA']:>10.1f} "
            f"{t['factor']:>9.1f} {t['JAX'] / t['C']:>6.2f} {t['NUMBA'] / t['C']:>8.2f}"
        )


if __name__ == "__main__":
    main()
