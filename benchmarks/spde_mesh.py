"""Benchmark: an SPDE Matérn model on a 10^5-node mesh, end to end, stage by stage.

Synthetic Gaussian data at ``m`` uniform locations in a 10 km x 10 km square (the data of
``benchmarks/spde.py``); the four-parameter model of ``models/spde_ames.py`` (intercept,
range, sigma, nugget; field integrated out by ``MarginalGMRFNormal``).  Stages, each
timed (wall clock, printed as JSON, never asserted):

1. ``mesh``: :func:`pymc_sparse.spde.mesh_from_points` (inner ``max_edge`` ``h``, outer
   ``4 h``, 3 km extension; ``h = 0.05`` km gives about 10^5 nodes);
2. ``fem``: finite-element assembly (:func:`pymc_sparse.spde.fem_matrices`);
3. ``precision``: :class:`~pymc_sparse.spde.precision.SPDEPrecision` set-up (patterns of
   :math:`K` and :math:`Q`, :math:`G C^{-1} G`) and the projector :math:`A`;
4. ``table``: the certified log-determinant table (``--logdet interpolated``; skipped with
   ``--logdet exact``, which factorises :math:`K` at each evaluation instead);
5. ``compile`` and ``logp_grad``: the compiled log-density plus gradient, its median time;
6. ``fit``: :func:`pymc_sparse.fit_laplace_grid` (mode, Hessian, INLA-style grid over the
   four parameters) with ``--fit grid``, or a MAP with ``--fit map``.

Usage: ``python benchmarks/spde_mesh.py [--m 10000] [--h 0.05] [--logdet interpolated]
[--fit grid] [--out benchmarks/results/spde_mesh.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class _Stages:
    """Collect wall-clock times of named stages and print each as it finishes."""

    def __init__(self):
        self.out = {}

    def __call__(self, name, fn, *args, **kwargs):
        t0 = time.perf_counter()
        value = fn(*args, **kwargs)
        self.out[f"{name}_s"] = round(time.perf_counter() - t0, 3)
        print(f"{name}: {self.out[f'{name}_s']:.2f} s", flush=True)
        return value


def _data(m, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 10, size=(m, 2))
    y = np.sin(xy[:, 0] / 2) + np.cos(xy[:, 1] / 3) + 0.3 * rng.standard_normal(m)
    return {"xy": xy, "y": y - y.mean()}


def run(m=10_000, h=0.05, logdet="interpolated", fit="grid", max_points=2000, repeat=3):
    """Run every stage; return the timings and sizes as a dict."""
    import pymc as pm

    import pymc_sparse as pms
    from models.spde_ames import build_model
    from pymc_sparse.spde.fem import fem_matrices
    from pymc_sparse.spde.mesh import mesh_from_points
    from pymc_sparse.spde.precision import SPDEPrecision

    stage = _Stages()
    data = _data(m)
    mesh = stage("mesh", mesh_from_points, data["xy"], max_edge=(h, 4 * h), extension=3.0)
    print(mesh, f"min angle {mesh.angles().min():.2f}", flush=True)
    fem = stage("fem", fem_matrices, mesh)
    spde = stage("precision", SPDEPrecision, fem, 2)
    stage("projector", mesh.projector, data["xy"])
    bounds = (0.1, 50.0)
    info = {}
    if logdet == "interpolated":
        fam = stage("table", spde.logdet_family, bounds)
        info = {"table_pieces": fam.info.get("pieces")}
    model = build_model(data, mesh, logdet=logdet, range_bounds=bounds)
    # build_model re-creates SPDEPrecision from the mesh: the table cache is keyed by the
    # FE matrices, so it is found again (no second build).
    point = model.initial_point()
    fn = stage("compile", model.compile_logp_dlogp if hasattr(model, "compile_logp_dlogp")
               else lambda: (lambda p, a=model.compile_logp(), b=model.compile_dlogp():
                             (a(p), b(p))))  # fmt: skip
    stage("logp_grad_first", fn, point)
    t = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(point)
        t.append(time.perf_counter() - t0)
    stage.out["logp_grad_s"] = round(float(np.median(t)), 4)
    print(f"logp_grad: {stage.out['logp_grad_s']:.3f} s (median of {repeat})", flush=True)
    if fit == "grid":
        idata = stage("fit", pms.fit_laplace_grid, model, draws=400, max_points=max_points,
                      seed=1)  # fmt: skip
        post = idata.posterior
        info["fit_evaluations"] = int(post.attrs["n_evaluations"])
        info["fit_points"] = int(post.attrs["n_points"])
        info["posterior_mean"] = json.loads(post.attrs["grid_mean"])
    elif fit == "map":
        with model:
            mp = stage("fit", pm.find_MAP, progressbar=False)
        info["posterior_mode"] = {k: float(np.asarray(v)) for k, v in mp.items() if np.ndim(v) == 0}
    total = sum(v for k, v in stage.out.items() if k.endswith("_s") and k != "logp_grad_s")
    return {
        "m": m, "h": h, "n": mesh.n, "triangles": int(mesh.triangles.shape[0]),
        "logdet": logdet, "fit": fit, **stage.out, "total_s": round(total, 2), **info,
        "load_average": os.getloadavg()[0], "cpus": os.cpu_count(),
    }  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=10_000)
    parser.add_argument("--h", type=float, default=0.05)
    parser.add_argument("--logdet", choices=["interpolated", "exact"], default="interpolated")
    parser.add_argument("--fit", choices=["grid", "map", "none"], default="grid")
    parser.add_argument("--max-points", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    res = run(args.m, args.h, args.logdet, args.fit, args.max_points)
    print(json.dumps(res, indent=1), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
