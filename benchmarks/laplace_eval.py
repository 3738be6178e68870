"""Sparse embedded Laplace: value + gradient per evaluation vs one factorisation of H.

Model: Poisson counts on an m x m lattice (n = m^2), x ~ N(0, Q^{-1}) with the proper
CAR precision Q = tau (D - alpha W), eta = log E + x, y ~ Poisson(exp(eta)).  A NUTS
trajectory moves the hyperparameters a little between evaluations, so each evaluation
here perturbs tau by ~1% and starts Newton from the previous mode (warm start), then
computes the Laplace value and its IFT gradient with respect to every input.

Side by side, in the same run and interleaved: the bare numeric CHOLMOD factorisation of
H = Q + W (same pattern, new values each time so the cache cannot hide it).  The issue's
target is value + gradient within 6x that factorisation.

Run:  .venv/bin/python benchmarks/laplace_eval.py [--m 316] [--reps 7]
"""

import argparse
import time

import numpy as np
import scipy.sparse as sp

from pymc_sparse.linalg.cholmod import CACHE
from pymc_sparse.linalg.laplace import laplace_gradient, laplace_state, make_inputs
from pymc_sparse.linalg.laplace.structure import LaplaceStructure
from pymc_sparse.linalg.pattern import SparsityPattern


def lattice(m):
    T = sp.diags([np.ones(m - 1), np.ones(m - 1)], [-1, 1], shape=(m, m))
    return (sp.kron(T, sp.identity(m)) + sp.kron(sp.identity(m), T)).tocsc()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", type=int, default=316)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--tol", type=float, default=1e-10)
    args = ap.parse_args()
    m, reps = args.m, args.reps
    W = lattice(m)
    n = m * m
    D = sp.diags(np.asarray(W.sum(axis=1)).ravel())
    pattern, base = SparsityPattern.from_scipy((D - 0.9 * W).tocsc())
    rng = np.random.default_rng(0)
    E = rng.uniform(5, 20, n)
    tau0 = 2.0
    # Simulate from the model so the mode is realistic.
    from pymc_sparse.linalg.sampling import sample_gmrf_numeric

    x = sample_gmrf_numeric(pattern, tau0 * base, rng=1)
    y = rng.poisson(E * np.exp(x)).astype(float)
    s = LaplaceStructure(pattern, None, "poisson")
    print(f"n = {n}, nnz(Q) = {pattern.nnz}, nnz(H) = {s.h_pattern.nnz}, tol = {args.tol}")

    t0 = time.perf_counter()
    st = laplace_state(s, make_inputs(s, tau0 * base, 0.0, y, {"exposure": E}), tol=args.tol)
    print(f"cold solve: {time.perf_counter() - t0:.3f} s, {st.iterations} Newton iterations")

    t_lap, t_val, t_fac, iters = [], [], [], []
    for r in range(reps):
        tau = tau0 * (1.0 + 0.01 * rng.standard_normal())
        inp = make_inputs(s, tau * base, 0.0, y, {"exposure": E})
        t0 = time.perf_counter()
        st = laplace_state(s, inp, tol=args.tol)
        t1 = time.perf_counter()
        laplace_gradient(st)
        t2 = time.perf_counter()
        t_val.append(t1 - t0)
        t_lap.append(t2 - t0)
        iters.append(st.iterations)
        # Bare factorisation of H on the same pattern, new values (no cache hit).
        hv = s.h_values(tau * base * (1 + 1e-9 * (r + 1)), s.a_default, -st.d2)
        t0 = time.perf_counter()
        CACHE.factor(s.h_pattern, hv)
        t_fac.append(time.perf_counter() - t0)
    fac = np.median(t_fac)
    print(f"bare factorisation of H     : {fac * 1e3:8.1f} ms (median of {reps})")
    print(
        f"Laplace value (warm)        : {np.median(t_val) * 1e3:8.1f} ms, Newton iterations {iters}"
    )
    print(f"Laplace value + gradient    : {np.median(t_lap) * 1e3:8.1f} ms")
    print(f"ratio (value+grad) / factor : {np.median(t_lap) / fac:8.2f}  (target <= 6)")


if __name__ == "__main__":
    main()
