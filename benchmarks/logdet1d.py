"""Benchmark: tabulated CAR log-determinant vs pm.CAR (set-up and per-evaluation cost).

For 2-D lattices with n = 10^3, 10^4, 10^5 nodes this reports

* the set-up of :func:`pymc_sparse.logdet1d.table.car_logdet_family` (exact factorisations,
  pieces, certified errors, seconds);
* the per-evaluation time of a compiled CAR log-density and its gradient in (x, alpha,
  tau), with the tabulated log-determinant and an O(nnz) quadratic form (C backend, and
  JAX jit);
* the same for ``pm.CAR`` (sparse W): its set-up is the dense eigendecomposition that
  PyTensor constant-folds when the function is compiled; it runs in a child process with
  a time cap and is reported "over cap" when it does not finish.

Usage: ``python benchmarks/logdet1d.py [--sizes 1000 10000 100000] [--pm-cap 180]``.

``--setup N`` instead times the table set-up alone on the lattice nearest N nodes
(default interval, 1e-9 certificate), once per ``--workers`` value (default: 2 worker
processes, then serial) and, with ``--ladder``, once with the previous fixed ladder of
levels (serial), all in one run: wall and CPU seconds (this process and its worker
processes), exact factorisations (samples and certification checks), pieces, the
certified maximum errors and the tabulated interval.  Results go to
``benchmarks/results/logdet1d_setup_{n}.json``.

Timings are wall-clock on the machine it runs on; they are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def lattice(n_target):
    m = round(np.sqrt(n_target))
    from tests.helpers import lattice_adjacency

    return lattice_adjacency(m)


def car_logp_graph(fam, W):
    import pytensor.tensor as pt

    n = W.shape[0]
    d = np.asarray(W.sum(1)).ravel()
    T = sp.triu(W, 1).tocoo()
    r, c, w = T.row, T.col, T.data
    x = pt.dvector("x")
    alpha = pt.dscalar("alpha")
    tau = pt.dscalar("tau")
    # x' (D - alpha W) x = sum d x^2 - 2 alpha sum_{i<j} w_ij x_i x_j : O(nnz), differentiable
    quad = pt.sum(d * x**2) - 2.0 * alpha * pt.sum(w * x[r] * x[c])
    logp = 0.5 * (n * pt.log(tau) + fam(alpha) - tau * quad)
    return [x, alpha, tau], logp


def time_fn(f, args, reps):
    f(*args)
    t = time.perf_counter()
    for _ in range(reps):
        f(*args)
    return (time.perf_counter() - t) / reps


def ours(W, reps, jax_too=True):
    import pytensor

    from pymc_sparse.logdet1d.families import car_logdet_family

    t = time.perf_counter()
    fam = car_logdet_family(W)
    setup = time.perf_counter() - t
    inputs, logp = car_logp_graph(fam, W)
    grads = pytensor.grad(logp, inputs)
    f = pytensor.function(inputs, [logp, *grads])
    n = W.shape[0]
    x = np.random.default_rng(0).normal(size=n)
    args = (x, 0.7, 1.3)
    out = {"setup_s": setup, "info": fam.info, "lo": fam.lo, "hi": fam.hi}
    out["eval_c_s"] = time_fn(f, args, reps)
    a = inputs[1]
    f_ld = pytensor.function([a], [fam(a), pytensor.grad(fam(a), a)])
    out["logdet_only_s"] = time_fn(f_ld, (0.7,), reps)
    if jax_too:
        import jax
        from pytensor.link.jax.dispatch import jax_funcify

        import pymc_sparse.dispatch.jax_table  # noqa: F401

        fg = pytensor.graph.fg.FunctionGraph(inputs, [logp], clone=True)
        jf = jax_funcify(fg)
        vg = jax.jit(jax.value_and_grad(lambda x, a, s: jf(x, a, s)[0], argnums=(0, 1, 2)))
        jargs = (jax.numpy.asarray(x), 0.7, 1.3)

        def run(*a):
            _v, g = vg(*a)
            return jax.block_until_ready(g)

        out["eval_jax_s"] = time_fn(run, jargs, reps)
        v, g = vg(*jargs)
        c_out = f(*args)
        out["jax_vs_c_max_abs"] = float(
            max(
                abs(float(v) - c_out[0]),
                float(np.max(np.abs(np.asarray(g[0]) - c_out[1]))),
                abs(float(g[1]) - c_out[2]),
            )
        )
    return out


def _pm_worker(n_target, reps, q):
    import pymc as pm
    import pytensor
    import pytensor.tensor as pt

    W = lattice(n_target)
    n = W.shape[0]
    x = pt.dvector("x")
    alpha = pt.dscalar("alpha")
    tau = pt.dscalar("tau")
    t = time.perf_counter()
    logp = pm.logp(pm.CAR.dist(mu=np.zeros(n), W=sp.csr_matrix(W), alpha=alpha, tau=tau), x).sum()
    f = pytensor.function([x, alpha, tau], [logp, *pytensor.grad(logp, [x, alpha, tau])])
    xv = np.random.default_rng(0).normal(size=n)
    f(xv, 0.7, 1.3)
    setup = time.perf_counter() - t
    q.put(
        {
            "setup_s": setup,
            "eval_c_s": time_fn(f, (xv, 0.7, 1.3), reps),
            "logp": float(f(xv, 0.7, 1.3)[0]),
        }
    )


def pm_car(n_target, reps, cap):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_pm_worker, args=(n_target, reps, q))
    t = time.perf_counter()
    p.start()
    p.join(cap)
    if p.is_alive():
        p.terminate()
        p.join()
        return {"over_cap_s": cap}
    if p.exitcode != 0:
        return {"failed_exitcode": p.exitcode, "after_s": time.perf_counter() - t}
    return q.get()


def _cpu_seconds():
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # joined worker processes
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def setup_row(n_target, workers, ladder=False):
    """Time one table set-up (no cache: a fresh build) and return its row."""
    from pymc_sparse.linalg.cholmod import clear_cache
    from pymc_sparse.logdet1d.families import car_logdet_family

    W = lattice(n_target)
    clear_cache()  # empties the table cache too: every row builds from scratch
    cpu0, kids0 = _cpu_seconds()
    t = time.perf_counter()
    fam = car_logdet_family(W, workers=workers, adaptive_split=not ladder)
    wall = time.perf_counter() - t
    cpu1, kids1 = _cpu_seconds()
    info = fam.info
    row = {
        "n": int(W.shape[0]),
        "builder": "fixed ladder (previous)" if ladder else "adaptive",
        "workers": info["workers"],
        "wall_s": wall,
        "cpu_s_parent": cpu1 - cpu0,
        "cpu_s_workers": kids1 - kids0,
        "factorisations": info["evaluations"],
        "samples": info["samples"],
        "check_evaluations": info["check_points"],
        "pieces": info["pieces"],
        "max_degree": info["max_degree"],
        "max_error_f": float(info["max_error_f"]),
        "max_error_df": float(info["max_error_df"]),
        "certified": bool(info["certified"]),
        "table_interval": [fam.lo, fam.hi],
        "requested_interval": list(info["requested_interval"]),
        "atol": info["atol"],
    }
    return row, fam


def run_setup(n_target, workers_list, ladder):
    configs = [(w, False) for w in workers_list] + ([(1, True)] if ladder else [])
    out = {
        "benchmark": "logdet1d setup",
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "cores": os.cpu_count(),
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "rows": [],
    }
    fams = []
    path = None
    for w, lad in configs:
        row, fam = setup_row(n_target, w, lad)
        row["load_average_1min_after"] = os.getloadavg()[0]
        out["rows"].append(row)
        fams.append((fam, lad))
        print(
            f"setup n={row['n']} {row['builder']}, workers={row['workers']}: wall "
            f"{row['wall_s']:.1f} s, CPU {row['cpu_s_parent']:.1f} s (this process) + "
            f"{row['cpu_s_workers']:.1f} s (workers); {row['factorisations']} factorisations "
            f"({row['samples']} samples + {row['check_evaluations']} checks), "
            f"{row['pieces']} pieces; certified={row['certified']}, max |err| f "
            f"{row['max_error_f']:.2e}, f' {row['max_error_df']:.2e} (bound {row['atol']:g}); "
            f"table on [{row['table_interval'][0]:.6g}, {row['table_interval'][1]:.6g}]",
            flush=True,
        )
        # The tables of one builder agree whatever the number of workers (same samples).
        ref = [f for f, lad in fams if not lad]
        out["tables_identical_across_workers"] = all(
            bool(np.array_equal(ref[0].coef, f.coef) and np.array_equal(ref[0].breaks, f.breaks))
            for f in ref
        )
        # Written after every row: a long run interrupted keeps what it measured.
        name = f"logdet1d_setup_{row['n']}.json"
        path = Path(__file__).resolve().parent / "results" / name
        path.write_text(json.dumps(out, indent=1, default=str))
    print(f"wrote {path}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--pm-cap", type=float, default=180.0)
    ap.add_argument("--no-pm", action="store_true")
    ap.add_argument("--setup", type=int, default=None, help="set-up rows only, at ~N nodes")
    ap.add_argument("--workers", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--ladder", action="store_true", help="also the previous fixed ladder")
    args = ap.parse_args()
    if args.setup is not None:
        run_setup(args.setup, args.workers, args.ladder)
        return
    for n_target in args.sizes:
        W = lattice(n_target)
        n = W.shape[0]
        reps = 200 if n <= 20000 else 50
        o = ours(W, reps)
        info = o["info"]
        print(
            f"n={n}: table set-up {o['setup_s']:.1f} s ({info['evaluations']} factorisations, "
            f"{info['selected_inverses']} selected inverses, {info['pieces']} pieces, "
            f"max degree {info['max_degree']}); certified max |err| f {info['max_error_f']:.2e}, "
            f"f' {info['max_error_df']:.2e}; table on [{o['lo']:.6g}, {o['hi']:.6g}], exact beyond",
            flush=True,
        )
        print(
            f"    ours: logp+grad {o['eval_c_s'] * 1e3:.3f} ms (C; of which logdet+grad alone "
            f"{o['logdet_only_s'] * 1e3:.3f} ms), "
            f"{o.get('eval_jax_s', float('nan')) * 1e3:.3f} ms (JAX jit); "
            f"JAX vs C max |diff| {o.get('jax_vs_c_max_abs', float('nan')):.1e}",
            flush=True,
        )
        dense_gb = 8 * n * n / 1e9
        if not args.no_pm and dense_gb > 4:
            print(f"    pm.CAR: not run, a dense eigendecomposition needs >= {dense_gb:.0f} GB")
        elif not args.no_pm:
            r = pm_car(n_target, reps, args.pm_cap)
            if "over_cap_s" in r:
                cap = r["over_cap_s"]
                print(f"    pm.CAR: set-up (dense eigendecomposition) over the {cap:.0f} s cap")
            elif "failed_exitcode" in r:
                code, after = r["failed_exitcode"], r["after_s"]
                print(f"    pm.CAR: failed (exit code {code}) after {after:.0f} s")
            else:
                print(
                    f"    pm.CAR: set-up {r['setup_s']:.1f} s, "
                    f"logp+grad {r['eval_c_s'] * 1e3:.3f} ms (C)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
