"""Benchmark: SPDE Matérn field (MarginalGMRFNormal) vs ``pm.gp.Marginal`` (Matérn nu = 1).

Synthetic Gaussian data at ``m`` uniform locations in a 10 km x 10 km square. For each
``(m, max_edge)`` it reports the mesh size and build time, the build time of the
log-determinant table, and the per-evaluation time of the compiled log-density plus
gradient of the four-parameter model of ``models/spde_ames.py`` (SPDE, C backend).
For ``pm.gp.Marginal`` with the dense Matérn nu = 1 covariance the same is timed up to
``--gp-max`` locations (its memory is 8 m^2 bytes per matrix and its cost O(m^3)).
A "time to posterior" estimate is ``evaluations x per-evaluation``; with
``--nuts DRAWS`` the SPDE model is also sampled (2 chains, DRAWS tune + DRAWS draws).

``--posterior`` measures time to posterior side by side (:func:`posterior`): both models
on the same data (mesh: the first 300 locations as nodes, inner edge 0.25 km, outer 4 km,
20 km extension), the same NUTS settings and seed, wall and CPU time from the start of the
build to the posterior, min bulk ESS per second of the four hyperparameters, and the
plug-in predictive mean and sd at 200 held-out locations against the dense GP's, in
units of the GP's predictive sd.  ``pm.gp.Marginal`` runs under ``--gp-cap`` seconds of
wall clock; if it does not finish, the iterations it completed are reported and the
ratio is a measured lower bound.  Results go to
``benchmarks/results/spde_posterior_{m}.json``.

Usage: ``python benchmarks/spde.py [--sizes 1000 10000] [--edges 0.1 0.05] [--gp-max 2000]``
or ``python benchmarks/spde.py --posterior --sizes 1000 [--draws 200] [--gp-cap 1200]``.
Timings are wall-clock on the machine it runs on; printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


RESULTS = Path(__file__).resolve().parent / "results"
HYPER = ["b0", "field_range", "field_sigma", "noise"]


def _time(fn, point, repeat=5):
    """Median wall time of ``fn`` at ``repeat`` distinct points near ``point``.

    Distinct points: the factor cache would otherwise serve every call after the first.
    """
    rng = np.random.default_rng(0)
    fn(point)  # compile and warm
    t = []
    for _ in range(repeat):
        p = {k: v + 0.01 * rng.standard_normal(np.shape(v)) for k, v in point.items()}
        t0 = time.perf_counter()
        fn(p)
        t.append(time.perf_counter() - t0)
    return float(np.median(t))


def _data(m, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 10, size=(m, 2))
    y = np.sin(xy[:, 0] / 2) + np.cos(xy[:, 1] / 3) + 0.3 * rng.standard_normal(m)
    return {"xy": xy, "y": y - y.mean()}


def _heldout(m_test=200, seed=99):
    """Held-out locations (no responses needed: predictions are compared, not scored)."""
    return np.random.default_rng(seed).uniform(0.5, 9.5, size=(m_test, 2))


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


class _Capped(Exception):
    """Raised from the sampling callback when the wall-clock cap is reached."""


def _cpu_s() -> float:
    """CPU seconds of this process and of its finished children (parallel chains)."""
    import resource

    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def _fit(build, draws, tune, chains, seed, cap_s=None, cores=1):
    """Build a model and sample it; times from the start of the build to the posterior.

    Returns the measurements (and the InferenceData and model, or None if capped).
    """
    import arviz as az
    import pymc as pm

    t0, c0 = time.perf_counter(), _cpu_s()
    model = build()
    out = {"build_s": time.perf_counter() - t0}
    done = [0]

    def callback(trace, draw):
        done[0] += 1
        if cap_s is not None and time.perf_counter() - t0 > cap_s:
            raise _Capped

    kw = {"chains": chains, "cores": cores, "random_seed": seed, "progressbar": False}
    try:
        with model:
            idata = pm.sample(draws, tune=tune, callback=callback, **kw)
    except _Capped:
        out.update(
            finished=False,
            wall_s=time.perf_counter() - t0,
            cpu_s=_cpu_s() - c0,
            cap_s=cap_s,
            iterations_done=done[0],
            iterations_total=chains * (draws + tune),
        )
        return out, None, model
    out.update(finished=True, wall_s=time.perf_counter() - t0, cpu_s=_cpu_s() - c0)
    ess = az.ess(idata, var_names=HYPER, method="bulk")
    rhat = az.rhat(idata, var_names=HYPER)
    out["min_bulk_ess"] = float(min(float(ess[v]) for v in HYPER))
    out["max_rhat"] = float(max(float(rhat[v]) for v in HYPER))
    out["min_ess_per_s"] = out["min_bulk_ess"] / out["wall_s"]
    out["gradient_evaluations"] = int(idata.sample_stats["n_steps"].sum())
    out["divergences"] = int(idata.sample_stats["diverging"].sum())
    out["posterior_mean"] = {v: float(idata.posterior[v].mean()) for v in HYPER}
    out["posterior_sd"] = {v: float(idata.posterior[v].std()) for v in HYPER}
    return out, idata, model


def _spde_predict(mesh, data, xy_test, theta):
    """Plug-in predictive mean and sd of ``b0 + f`` at ``xy_test`` (SPDE, exact solves)."""
    from pymc_sparse.linalg.cholmod import cholesky
    from pymc_sparse.spde.precision import SPDEPrecision, kappa_tau

    Q = SPDEPrecision(mesh, 2).matrix(*kappa_tau(theta["field_range"], theta["field_sigma"], 2))
    A, At = mesh.projector(data["xy"]), mesh.projector(xy_test)
    d = 1.0 / theta["noise"] ** 2
    F = cholesky((Q + d * (A.T @ A)).tocsc())
    mean = theta["b0"] + At @ F.solve(d * (A.T @ (data["y"] - theta["b0"])))
    W = np.asarray(At.T.todense())
    return mean, np.sqrt(np.sum(W * F.solve(W), axis=0))


def _matern1(X, Y, theta, block=2000):
    """Dense Matérn nu = 1 covariance ``sigma^2 u K_1(u)``, ``u = sqrt(8) r / range``."""
    from scipy.spatial.distance import cdist
    from scipy.special import k1

    out = np.empty((X.shape[0], Y.shape[0]))
    for i in range(0, X.shape[0], block):
        u = cdist(X[i : i + block], Y) * (np.sqrt(8.0) / theta["field_range"])
        with np.errstate(invalid="ignore"):
            c = u * k1(u)
        out[i : i + block] = np.where(u > 1e-8, c, 1.0)
    return out * theta["field_sigma"] ** 2


def _gp_predict(data, xy_test, theta):
    """Plug-in predictive mean and sd of ``b0 + f`` at ``xy_test`` (dense GP, NumPy)."""
    from scipy.linalg import cho_factor, cho_solve, solve_triangular

    K = _matern1(data["xy"], data["xy"], theta)
    K[np.diag_indices_from(K)] += theta["noise"] ** 2
    c = cho_factor(K, lower=True, overwrite_a=True)
    Ks = _matern1(xy_test, data["xy"], theta)
    mean = theta["b0"] + Ks @ cho_solve(c, data["y"] - theta["b0"])
    V = solve_triangular(c[0], Ks.T, lower=True)
    var = theta["field_sigma"] ** 2 - np.sum(V * V, axis=0)
    return mean, np.sqrt(np.maximum(var, 0.0))


def _eval_time(model, repeat=3, log=None):
    """Compile logp + gradient (as NUTS does) and time it at distinct points (wall and CPU)."""
    from pymc.blocking import DictToArrayBijection

    t0, c0 = time.perf_counter(), time.process_time()
    f = model.logp_dlogp_function(ravel_inputs=True)
    f.set_extra_values({})
    ip = model.initial_point()
    x0 = DictToArrayBijection.map({v.name: ip[v.name] for v in model.value_vars}).data
    if log:
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        log(f"compiled: {wall:.1f} s wall, {cpu:.1f} s CPU")
    f(x0)
    out = {"compile_and_first_s": time.perf_counter() - t0}
    if log:
        log(f"first call done: {out['compile_and_first_s']:.1f} s wall")
    rng = np.random.default_rng(0)
    t, c = [], []
    for _ in range(repeat):
        x = x0 + 0.01 * rng.standard_normal(x0.size)
        t1, c1 = time.perf_counter(), time.process_time()
        f(x)
        t.append(time.perf_counter() - t1)
        c.append(time.process_time() - c1)
        if log:
            log(f"call: {t[-1]:.2f} s wall, {c[-1]:.2f} s CPU")
    out.update(logp_grad_s=float(np.median(t)), logp_grad_cpu_s=float(np.median(c)), calls=repeat)
    return out


def posterior(m, draws=200, tune=200, chains=2, seed=1, gp_cap=1200.0, gp=True, cores=1):
    """Time to posterior of the SPDE model and of ``pm.gp.Marginal`` on the same data."""
    from models.spde_ames import build_gp_model, build_mesh, build_model

    data, xy_test = _data(m), _heldout()
    out = {"m": m, "draws": draws, "tune": tune, "chains": chains, "seed": seed}

    def build_spde():
        # Posterior ranges reach 10-20 km here: a 20 km extension keeps the Neumann
        # boundary away from the data (0.25 km inside, 4 km outside: ~5,000 nodes).
        mesh = build_mesh(data["xy"][:300], max_edge=(0.25, 4.0), extension=20.0)
        return build_model(data, mesh)

    spde, _, spde_model = _fit(build_spde, draws, tune, chains, seed, cores=cores)
    spde["n"] = spde_model.mesh.n
    spde.update(_eval_time(spde_model, repeat=10))
    out["spde"] = spde
    print({"spde": spde}, flush=True)
    theta = spde["posterior_mean"]
    if gp:
        gpr, _, _ = _fit(lambda: build_gp_model(data), draws, tune, chains, seed, gp_cap, cores)
        out["gp"] = gpr
        print({"gp": gpr}, flush=True)
        if gpr["finished"]:
            theta = gpr["posterior_mean"]
            out["wall_ratio"] = gpr["wall_s"] / spde["wall_s"]
            out["ess_per_s_ratio"] = spde["min_ess_per_s"] / gpr["min_ess_per_s"]
        else:
            out["wall_ratio_lower_bound"] = gpr["wall_s"] / spde["wall_s"]
    out["theta_for_prediction"] = theta
    mu_s, sd_s = _spde_predict(spde_model.mesh, data, xy_test, theta)
    mu_g, sd_g = _gp_predict(data, xy_test, theta)
    z = np.abs(mu_s - mu_g) / sd_g
    out["prediction"] = {
        "held_out": int(xy_test.shape[0]),
        "mean_diff_over_gp_sd_median": float(np.median(z)),
        "mean_diff_over_gp_sd_max": float(z.max()),
        "sd_ratio_min": float((sd_s / sd_g).min()),
        "sd_ratio_max": float((sd_s / sd_g).max()),
    }
    print(out["prediction"], flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"spde_posterior_{m}.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


def gp_eval(m):
    """Per-evaluation logp + gradient of ``pm.gp.Marginal`` alone (for m where NUTS cannot run)."""
    from models.spde_ames import build_gp_model

    def log(msg):
        print(f"pm.gp.Marginal, m = {m}: {msg}", flush=True)

    out = {"m": m, **_eval_time(build_gp_model(_data(m)), repeat=2, log=log)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"spde_gp_eval_{m}.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--edges", type=float, nargs="*", default=[0.1, 0.05])
    parser.add_argument("--gp-max", type=int, default=2000)
    parser.add_argument("--nuts", type=int, default=0)
    parser.add_argument("--posterior", action="store_true")
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--gp-cap", type=float, default=1200.0)
    parser.add_argument("--no-gp", action="store_true")
    parser.add_argument(
        "--cores",
        type=int,
        default=1,
        help="--posterior: chains in parallel processes (set OMP_NUM_THREADS=1 with it)",
    )
    parser.add_argument("--gp-eval", action="store_true")
    args = parser.parse_args()
    if args.posterior or args.gp_eval:
        for m in args.sizes:
            if args.gp_eval:
                print(gp_eval(m), flush=True)
            else:
                posterior(
                    m,
                    args.draws,
                    args.draws,
                    gp_cap=args.gp_cap,
                    gp=not args.no_gp,
                    cores=args.cores,
                )
        return
    for m in args.sizes:
        if m <= args.gp_max:
            print(bench_gp(m), flush=True)
        for h in args.edges:
            print(bench_spde(m, h, args.nuts), flush=True)


if __name__ == "__main__":
    main()
