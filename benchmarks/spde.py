"""Benchmark: SPDE Matérn field (MarginalGMRFNormal) vs ``pm.gp.Marginal`` (Matérn nu = 1).

Synthetic Gaussian data at ``m`` uniform locations in a 10 km x 10 km square. For each
``(m, max_edge)`` it reports the mesh size and build time, the build time of the
log-determinant table, and the per-evaluation time of the compiled log-density plus
gradient of the four-parameter model of ``models/spde_ames.py`` (SPDE, C backend).
For ``pm.gp.Marginal`` with the dense Matérn nu = 1 covariance the same is timed up to
``--gp-max`` locations (its memory is 8 m^2 bytes per matrix and its cost O(m^3)).
A "time to posterior" estimate is ``evaluations x per-evaluation``; with
``--nuts DRAWS`` the SPDE model is also sampled (2 chains, DRAWS tune + DRAWS draws).

Usage: ``python benchmarks/spde.py [--sizes 1000 10000] [--edges 0.1 0.05] [--gp-max 2000]``.
Timings are wall-clock on the machine it runs on; printed, never asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _time(fn, point, repeat=5):
    fn(point)  # warm the factor cache / compile
    t = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(point)
        t.append(time.perf_counter() - t0)
    return float(np.median(t))


def _data(m, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 10, size=(m, 2))
    y = np.sin(xy[:, 0] / 2) + np.cos(xy[:, 1] / 3) + 0.3 * rng.standard_normal(m)
    return {"xy": xy, "y": y - y.mean()}


def bench_spde(m, h, nuts=0):
    import pymc as pm

    from models.spde_ames import build_mesh, build_model
    from pymc_sparse.spde.precision import SPDEPrecision

    data = _data(m)
    t0 = time.perf_counter()
    mesh = build_mesh(data["xy"], max_edge=(h, 4 * h), extension=3.0)
    t_mesh = time.perf_counter() - t0
    t0 = time.perf_counter()
    fam = SPDEPrecision(mesh, 2).logdet_family((0.1, 50.0))
    t_table = time.perf_counter() - t0
    model = build_model(data, mesh, range_bounds=(0.1, 50.0))
    point = model.initial_point()
    fn = model.compile_logp_dlogp() if hasattr(model, "compile_logp_dlogp") else None
    logp, dlogp = model.compile_logp(), model.compile_dlogp()
    t_eval = _time(lambda p: (logp(p), dlogp(p)), point) if fn is None else _time(fn, point)
    out = {
        "m": m,
        "max_edge": h,
        "n": mesh.n,
        "mesh_s": t_mesh,
        "table_s": t_table,
        "table_pieces": fam.info["pieces"],
        "logp_grad_s": t_eval,
    }
    if nuts:
        print(out, flush=True)  # the set-up and per-evaluation numbers before sampling
        t0 = time.perf_counter()
        with model:
            pm.sample(nuts, tune=nuts, chains=2, cores=1, progressbar=False, random_seed=1)
        out["nuts_s"] = time.perf_counter() - t0
    return out


def bench_gp(m):
    from models.spde_ames import build_gp_model

    model = build_gp_model(_data(m))
    point = model.initial_point()
    logp, dlogp = model.compile_logp(), model.compile_dlogp()
    return {"m": m, "gp_logp_grad_s": _time(lambda p: (logp(p), dlogp(p)), point, repeat=3)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--edges", type=float, nargs="*", default=[0.1, 0.05])
    parser.add_argument("--gp-max", type=int, default=2000)
    parser.add_argument("--nuts", type=int, default=0)
    args = parser.parse_args()
    for m in args.sizes:
        if m <= args.gp_max:
            print(bench_gp(m), flush=True)
        for h in args.edges:
            print(bench_spde(m, h, args.nuts), flush=True)


if __name__ == "__main__":
    main()
