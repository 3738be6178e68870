"""Selected inversion against CHOLMOD's numeric factorisation, 2-D and 3-D lattices.

Run ``python benchmarks/selinv.py`` (all cases: 2-D n = 10^4, 10^5, 10^6 and 3-D
n = 46^3 = 97,336) or name cases, e.g. ``python benchmarks/selinv.py 2d-1e5 3d-1e5``.
Options: ``--ordering amd|metis|nesdis`` (default: the factor cache's), ``--repeat R``
(default 3; the minimum is reported), ``--orderings`` (compare all three orderings).

For each case it prints, in seconds (minimum over the repeats, wall clock, with the
process CPU time in brackets, which is steadier on a loaded machine):

* ``analysis``: CHOLMOD's symbolic analysis (fill-reducing ordering), once per pattern;
* ``factor``: CHOLMOD's numeric factorisation alone (refactorising one factor object
  in place), the unit of the ratios;
* ``fresh factor``: the same into a fresh copy of the symbolic analysis, which is what
  the factor cache does for each new value vector;
* ``logdet``: ``CACHE.factor`` on new values (factorisation + log-determinant);
* ``value+grad``: the same plus ``selected_inverse()`` (the gradient of the
  log-determinant), new values each call;
* the ratios ``logdet / factor`` and ``value+grad / factor`` (of the minima, wall and
  CPU), and their medians over pairs timed back to back (``paired``), which drift
  less with the load of a shared machine;
* the breakdown of the selected inversion: ``extract`` (reading CHOLMOD's supernodal
  factor in place), ``copy`` (L blocks into the work arrays), ``gather`` (the lower
  triangle of Sigma_RR from the ancestors, for the BLAS supernodes), ``blas`` (the
  arithmetic: dpotri, dtrsm, dsymm, dgemm, and the small supernodes' plain loops, whose
  gather is fused into them) and ``scatter`` (the entries of Q picked out of the
  supernodal result), each timed by running the kernel with phases switched off.

BLAS runs single-threaded (``OPENBLAS_NUM_THREADS=1`` unless already set), for CHOLMOD
as for the kernel.  Timings, not assertions.  Memory: about 3 GB at n = 10^6.
"""

from __future__ import annotations

import os

# Single-threaded BLAS for CHOLMOD as for the kernel unless asked otherwise: on a few
# shared cores, threaded BLAS timings mostly measure the other tenants.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import platform
import time

import numpy as np
import scipy.sparse as sp
from sksparse import cholmod as skc

from pymc_sparse.linalg.cholmod import CholeskyCache
from pymc_sparse.linalg.pattern import SparsityPattern
from pymc_sparse.linalg.takahashi import cholmod_supernodal_view, takahashi_supernodal


def lattice2(m: int) -> sp.csc_matrix:
    """Precision of a proper CAR on the ``m x m`` rook lattice (alpha = 0.9)."""
    T = sp.diags([np.ones(m - 1), np.ones(m - 1)], [-1, 1])
    W = (sp.kron(T, sp.identity(m)) + sp.kron(sp.identity(m), T)).tocsc()
    d = np.asarray(W.sum(axis=1)).ravel()
    return (sp.diags(d) - 0.9 * W).tocsc()


def lattice3(m: int) -> sp.csc_matrix:
    """The same on the ``m x m x m`` lattice."""
    T = sp.diags([np.ones(m - 1), np.ones(m - 1)], [-1, 1])
    eye = sp.identity(m)
    W = sp.kron(sp.kron(T, eye), eye) + sp.kron(sp.kron(eye, T), eye)
    W = (W + sp.kron(sp.kron(eye, eye), T)).tocsc()
    d = np.asarray(W.sum(axis=1)).ravel()
    return (sp.diags(d) - 0.9 * W).tocsc()


CASES = {
    "2d-1e4": lambda: lattice2(100),
    "2d-1e5": lambda: lattice2(316),
    "2d-1e6": lambda: lattice2(1000),
    "3d-1e5": lambda: lattice3(46),
}


def best(fn, repeat):
    """Minimum wall and CPU seconds of ``fn()`` over ``repeat`` calls."""
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)


def run_case(name: str, ordering: str, repeat: int) -> dict:
    A = CASES[name]()
    pattern, data = SparsityPattern.from_scipy(A)
    low = pattern.lower_csc(data)
    cache = CholeskyCache(maxsize=2, ordering=ordering)
    cache.factor(pattern, data).selected_inverse()  # analysis, plan, maps, compilation
    # The cache's "auto" picks an ordering per pattern: time CHOLMOD alone with that one.
    ordering = cache.factor(pattern, data).symbolic.ordering
    out = {"case": name, "n": pattern.n, "ordering": ordering}

    out["analysis"] = best(lambda: skc.analyze(low, ordering_method=ordering), 1)
    analysis = skc.analyze(low, ordering_method=ordering)
    chol = analysis.copy()
    out["factor"] = best(lambda: chol.cholesky_inplace(low), repeat)
    out["fresh factor"] = best(lambda: analysis.copy().cholesky_inplace(low), repeat)
    calls = iter(range(1, 10**6))

    def logdet_only():
        cache.factor(pattern, data * (1.0 + 1e-9 * next(calls))).logdet()

    def value_and_grad():
        f = cache.factor(pattern, data * (1.0 + 1e-9 * next(calls)))
        f.logdet()
        f.selected_inverse()

    out["logdet"] = best(logdet_only, repeat)
    out["value+grad"] = best(value_and_grad, repeat)
    # Paired ratios: each evaluation timed right after a factorisation, so that the
    # load of a shared machine drifts less between numerator and denominator.
    pairs = []
    for _ in range(repeat):
        tf, cf = best(lambda: chol.cholesky_inplace(low), 1)
        tl, cl = best(logdet_only, 1)
        tv, cv = best(value_and_grad, 1)
        pairs.append((tl / tf, tv / tf, cl / cf, cv / cf))
    out["paired"] = tuple(np.median(np.array(pairs), axis=0))

    fac = cache.factor(pattern, data)
    sym = fac.symbolic
    view = cholmod_supernodal_view(fac.chol, pattern.n, sym.supernodes)
    if view is not None:
        plan, x = view
        out["nsuper"] = plan.sup.size - 1
        out["L entries"] = plan.xsize
        out["extract"] = best(lambda: cholmod_supernodal_view(fac.chol, pattern.n, plan), repeat)
        t1 = best(lambda: takahashi_supernodal(plan, x, phases=1), repeat)
        t3 = best(lambda: takahashi_supernodal(plan, x, phases=3), repeat)
        t7 = best(lambda: takahashi_supernodal(plan, x), repeat)
        out["copy"] = t1
        out["gather"] = tuple(max(a - b, 0.0) for a, b in zip(t3, t1))
        out["blas"] = tuple(max(a - b, 0.0) for a, b in zip(t7, t3))
        out["kernel"] = t7
        Z = takahashi_supernodal(plan, x)
        out["scatter"] = best(lambda: Z[sym.q_to_x], repeat)
    return out


def fmt(t) -> str:
    return f"{t[0]:8.3f} ({t[1]:7.3f})"


def report(rows) -> None:
    cols = ["analysis", "factor", "fresh factor", "logdet", "value+grad"]
    parts = ["extract", "copy", "gather", "blas", "scatter"]
    print(
        f"{'case':8} {'order':6} {'n':>8} "
        + " ".join(f"{c:>18}" for c in cols)
        + f" {'ld/fac':>7} {'v+g/fac':>8}"
    )
    for r in rows:
        ratio_ld = r["logdet"][0] / r["factor"][0], r["logdet"][1] / r["factor"][1]
        ratio_vg = r["value+grad"][0] / r["factor"][0], r["value+grad"][1] / r["factor"][1]
        p = r["paired"]
        print(
            f"{r['case']:8} {r['ordering']:6} {r['n']:8d} "
            + " ".join(f"{fmt(r[c]):>18}" for c in cols)
            + f" {ratio_ld[0]:7.2f} {ratio_vg[0]:8.2f}"
            + f"   cpu {ratio_ld[1]:.2f} {ratio_vg[1]:.2f}"
            + f"   paired wall {p[0]:.2f} {p[1]:.2f} cpu {p[2]:.2f} {p[3]:.2f}"
        )
    print("\nbreakdown of the selected inversion, seconds wall (cpu); kernel / factor wall (cpu)")
    print(
        f"{'case':8} {'order':6} {'nsuper':>7} {'L entries':>10} "
        + " ".join(f"{c:>18}" for c in parts)
        + f" {'kernel/fac':>10}"
    )
    for r in rows:
        if "kernel" not in r:
            print(f"{r['case']:8} {r['ordering']:6}  (simplicial factor: reference kernel)")
            continue
        print(
            f"{r['case']:8} {r['ordering']:6} {r['nsuper']:7d} {r['L entries']:10d} "
            + " ".join(f"{fmt(r[c]):>18}" for c in parts)
            + f" {r['kernel'][0] / r['factor'][0]:10.2f} ({r['kernel'][1] / r['factor'][1]:.2f})"
        )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", help=f"any of {', '.join(CASES)} (default: all)")
    ap.add_argument("--ordering", default=CholeskyCache().ordering)
    ap.add_argument("--orderings", action="store_true", help="compare amd, metis, nesdis")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    args.cases = args.cases or list(CASES)
    unknown = sorted(set(args.cases) - set(CASES))
    if unknown:
        ap.error(f"unknown cases {unknown}; choose from {list(CASES)}")
    orderings = ["amd", "metis", "nesdis"] if args.orderings else [args.ordering]
    print(
        f"{platform.node()} | {platform.processor() or platform.machine()} | "
        f"{os.cpu_count()} CPUs | load average {os.getloadavg()[0]:.1f} | "
        f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']} | "
        f"repeat {args.repeat}, minimum reported"
    )
    rows = []
    for case in args.cases:
        for ordering in orderings:
            rows.append(run_case(case, ordering, args.repeat))
            print(f"  done: {rows[-1]}", flush=True)
    report(rows)


if __name__ == "__main__":
    main()
