"""Sparse embedded Laplace: value + gradient per evaluation vs one factorisation of H.

Model: Poisson counts on an m x m lattice (n = m^2), x ~ N(0, Q^{-1}) with the proper
CAR precision Q = tau (D - alpha W), eta = log E + x, y ~ Poisson(exp(eta)).  A NUTS
trajectory moves the hyperparameters a little between evaluations, so each evaluation
here perturbs the hyperparameters by ~1% and starts Newton from the previous mode (warm
start), then computes the Laplace value and its IFT gradient with respect to every input.
Two cases, interleaved: ``tau`` moves tau only (Q stays a multiple of one matrix, so the
prior's factor and selected inverse are reused by scaling), ``tau+alpha`` moves both
(the prior is refactorised and its selected inverse recomputed at every evaluation).

Side by side, in the same run and interleaved: the bare numeric CHOLMOD factorisation of
H = Q + W (same pattern, new values each time so the cache cannot hide it).  The issue's
target is value + gradient within 6x that factorisation.

Run:  .venv/bin/python benchmarks/laplace_eval.py [--m 316] [--reps 7]
"""

import argparse
import time

import numpy as np
import scipy.sparse as sp

from pymc_sparse.linalg.cholmod import CACHE, cache_info
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

    def bare_factor(q, d2, k):
        # Bare factorisation of H on the same pattern, new values (no cache hit).
        hv = s.h_values(q * (1 + 1e-9 * k), s.a_default, -d2)
        w0, c0 = time.perf_counter(), time.process_time()
        CACHE.factor(s.h_pattern, hv)
        return time.perf_counter() - w0, time.process_time() - c0

    k = 0
    for case in ("tau", "tau+alpha"):
        rows, iters = [], []
        for _ in range(reps):
            tau = tau0 * (1.0 + 0.01 * rng.standard_normal())
            alpha = 0.9 * (1.0 + 0.01 * rng.standard_normal()) if case != "tau" else 0.9
            # Stored values of tau (D - alpha W): W's entries are the off-diagonal ones.
            q = tau * np.where(pattern.is_diag, base, base * (alpha / 0.9))
            inp = make_inputs(s, q, 0.0, y, {"exposure": E})
            before = bare_factor(q, st.d2, k := k + 1)
            n0 = cache_info()["numeric"]
            w0, c0 = time.perf_counter(), time.process_time()
            st = laplace_state(s, inp, tol=args.tol)
            w1 = time.perf_counter()
            laplace_gradient(st)
            w2, c2 = time.perf_counter(), time.process_time()
            iters.append((st.iterations, cache_info()["numeric"] - n0))
            after = bare_factor(q, st.d2, k := k + 1)
            # wall: factorisation, value, value + gradient; CPU: factorisation, value + grad
            fac_w, fac_c = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
            rows.append((fac_w, w1 - w0, w2 - w0, fac_c, c2 - c0))
        r = np.array(rows)
        med = np.median(r, axis=0)
        print(f"case {case} (medians of {reps}; each evaluation between two bare factorisations):")
        print(f"  bare factorisation of H     : {med[0] * 1e3:8.1f} ms")
        print(
            f"  Laplace value (warm)        : {med[1] * 1e3:8.1f} ms; (Newton "
            f"iterations, numeric factorisations incl. Q's) {iters}"
        )
        print(f"  Laplace value + gradient    : {med[2] * 1e3:8.1f} ms")
        print(
            f"  ratio (value+grad) / factor : {np.median(r[:, 2] / r[:, 0]):8.2f} wall, "
            f"{np.median(r[:, 4] / r[:, 3]):.2f} CPU time  (target <= 6)"
        )


if __name__ == "__main__":
    main()
