"""Latent field sampled vs integrated out: same model, same data.

Model: ``models/lattice_gaussian_marginal.py`` (proper CAR field on a lattice, Gaussian
observations at 90 % of the sites).  Part ``small`` (32 x 32, n = 1024) fits

* ``pm_car``        x sampled by NUTS, PyMC's ``pm.CAR``;
* ``sparse_latent`` x sampled by NUTS, prior written with this package's sparse Ops;
* ``marginal``      x integrated out (``MarginalGMRFNormal``), NUTS on (tau, alpha, sigma);
* ``marginal_imh``  the same marginal model sampled by :func:`pymc_sparse.sample_imh`
  (independence + random-walk Metropolis, gradient-free);

and reports the minimum bulk ESS of (tau, alpha, sigma) per second of sampling
(``sampling_time``: PyMC's excludes compilation, ``sample_imh``'s includes it and the
MAP) and per second of wall time from model construction to the posterior (the
log-determinant table, compilation and pm.CAR's constant-folded eigendecomposition
included), and the largest difference of posterior means from the marginal fit in units
of the marginal posterior sd.  The marginal NUTS fit uses a dense mass matrix
(``--marginal-init``, 3 dimensions), the latent ones PyMC's default diagonal one.
Results go to ``benchmarks/results/marginal_vs_latent_small_{nx}[_seed{seed}].json``.

Part ``large`` (316 x 316, n ~ 10^5) fits the marginal model end to end, with
``sample_imh`` (default) or NUTS with a Laplace (MAP + finite-difference Hessian) dense
mass matrix and 2 chains (``--sampler nuts``), times every stage and recovers the field.

Usage::

    python benchmarks/marginal_vs_latent.py small [--draws 1000 --tune 1000 --seed 1]
    python benchmarks/marginal_vs_latent.py large [--nx 316 --draws 500 --tune 1000]

Cores are shared with other jobs on the development machines: timings are noisy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import arviz as az
import numpy as np
import pymc as pm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.lattice_gaussian_marginal import build_model, simulate_data

PARAMS = ["tau", "alpha", "sigma"]
RESULTS = Path(__file__).resolve().parent / "results"


def _row(idata, sampling_time, **extra):
    """Minimum bulk ESS, worst R-hat, posterior means and sds of PARAMS, ESS per second."""
    ess = az.ess(idata, var_names=PARAMS, method="bulk")
    rhat = az.rhat(idata, var_names=PARAMS)
    post = idata.posterior
    row = {
        "sampling_time_s": float(sampling_time),
        "min_bulk_ess": float(min(ess[p].values for p in PARAMS)),
        "max_rhat": float(max(rhat[p].values for p in PARAMS)),
        **extra,
        "mean": {p: float(post[p].mean()) for p in PARAMS},
        "sd": {p: float(post[p].std()) for p in PARAMS},
    }
    row["ess_per_s"] = row["min_bulk_ess"] / row["sampling_time_s"]
    return row


def _fit(model, *, draws, tune, chains, cores, seed, **kw):
    with model:
        idata = pm.sample(
            draws=draws,
            tune=tune,
            chains=chains,
            cores=cores,
            random_seed=seed,
            progressbar=True,
            compute_convergence_checks=False,
            **kw,
        )
    row = _row(
        idata,
        idata.sample_stats.attrs["sampling_time"],
        divergences=int(idata.sample_stats["diverging"].sum()),
        mean_leapfrog_steps=float(idata.sample_stats["n_steps"].mean()),
    )
    return row, idata


def _fit_imh(model, *, draws, tune, chains, seed):
    from pymc_sparse import sample_imh

    idata = sample_imh(draws, tune, chains=chains, model=model, random_seed=seed)
    attrs = idata.sample_stats.attrs
    row = _row(
        idata,
        attrs["sampling_time"],
        divergences=0,
        # log-density evaluations (no gradient) per kept draw, tuning included
        mean_leapfrog_steps=float(attrs["n_logp_evals"]) / (chains * draws),
        acceptance_rate=float(attrs["acceptance_rate"]),
        acceptance_rate_rw=float(attrs["acceptance_rate_rw"]),
    )
    return row, idata


def small(args):
    data = simulate_data(args.nx, seed=args.data_seed)
    rows = {}
    for form in args.formulations:
        t0 = time.perf_counter()
        model = build_model(data, formulation="marginal" if form == "marginal_imh" else form)
        print(f"== {form}", flush=True)
        if form == "marginal_imh":
            row, _ = _fit_imh(model, draws=args.draws, tune=args.tune, chains=2, seed=args.seed)
        else:
            # A dense mass matrix costs nothing for 3 hyperparameters and takes out their
            # correlation; for the latent models (n + 3 dimensions) PyMC's diagonal default.
            init = args.marginal_init if form == "marginal" else "jitter+adapt_diag"
            row, _ = _fit(
                model,
                draws=args.draws,
                tune=args.tune,
                chains=2,
                cores=1,
                seed=args.seed,
                init=init,
                target_accept=args.target_accept,
            )
            row["init"] = init
        # Wall time from model construction to the posterior: table build, compilation
        # (pm.CAR's constant-folded eigendecomposition) and both chains.
        row["wall_s"] = time.perf_counter() - t0
        row["ess_per_wall_s"] = row["min_bulk_ess"] / row["wall_s"]
        rows[form] = row
        print(json.dumps(row, indent=1), flush=True)
    ref = rows.get("marginal") or rows.get("marginal_imh")
    print(f"\nn = {args.nx**2}, {data['obs'].size} observations, truth {data['truth']}")
    print(
        "| formulation | sampling time (s) | min bulk ESS | ESS/s | ratio to pm_car "
        "| wall time (s) | ESS per wall s | ratio | gradients (NUTS) or evaluations (IMH) per draw "
        "| max R-hat | divergences | max abs mean diff / sd(marginal) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    base = rows.get("pm_car", {}).get("ess_per_s")
    base_wall = rows.get("pm_car", {}).get("ess_per_wall_s")
    for form, r in rows.items():
        diff = (
            max(abs(r["mean"][p] - ref["mean"][p]) / ref["sd"][p] for p in PARAMS)
            if ref is not None
            else float("nan")
        )
        ratio = r["ess_per_s"] / base if base else float("nan")
        ratio_wall = r["ess_per_wall_s"] / base_wall if base_wall else float("nan")
        print(
            f"| {form} | {r['sampling_time_s']:.1f} | {r['min_bulk_ess']:.0f} | "
            f"{r['ess_per_s']:.3g} | {ratio:.0f}x | {r['wall_s']:.1f} | "
            f"{r['ess_per_wall_s']:.3g} | {ratio_wall:.0f}x | {r['mean_leapfrog_steps']:.1f} | "
            f"{r['max_rhat']:.3f} | {r['divergences']} | {diff:.2f} |"
        )
    RESULTS.mkdir(exist_ok=True)
    tag = "" if args.seed == 1 else f"_seed{args.seed}"
    out = RESULTS / f"marginal_vs_latent_small_{args.nx}{tag}.json"
    out.write_text(json.dumps(rows, indent=1))


def laplace_potential(model, start=None, h=1e-4):
    """MAP in the sampler's (transformed) space and the inverse Hessian there."""
    from pymc.step_methods.hmc.quadpotential import QuadPotentialFull

    t0 = time.perf_counter()
    with model:
        map_point = pm.find_MAP(start=start, include_transformed=True, progressbar=False)
    t_map = time.perf_counter() - t0
    f = model.logp_dlogp_function(ravel_inputs=True)
    f.set_extra_values({})
    names = [v.name for v in model.value_vars]
    x0 = np.concatenate([np.atleast_1d(map_point[nm]).ravel() for nm in names])
    k = x0.size
    H = np.empty((k, k))
    for j in range(k):
        e = np.zeros(k)
        e[j] = h
        H[:, j] = (f(x0 + e)[1] - f(x0 - e)[1]) / (2 * h)
    H = 0.5 * (H + H.T)
    cov = np.linalg.inv(-H)
    np.linalg.cholesky(cov)  # raises if the MAP is not a maximum
    t_hess = time.perf_counter() - t0 - t_map
    init = {nm: map_point[nm] for nm in names}
    return QuadPotentialFull(cov), init, map_point, {"map_s": t_map, "hessian_s": t_hess}


def _logdet_family(model):
    """The one-parameter log-determinant table in the model's graph, if any."""
    try:  # pytensor >= 2.30
        from pytensor.graph.traversal import ancestors
    except ImportError:  # pragma: no cover
        from pytensor.graph.basic import ancestors

    from pymc_sparse.ops.table import OneParameterLogDet

    for v in ancestors([model.logp()]):
        if v.owner is not None and isinstance(v.owner.op, OneParameterLogDet):
            return v.owner.op.family
    return None


def _transformed_logp(model):
    """``x -> log p(x)`` on the sampler's (transformed, raveled) space, and x -> params."""
    import pytensor

    names = [v.name for v in model.value_vars]
    logp_fn = model.compile_logp()
    outs = model.replace_rvs_by_values([model[p] for p in PARAMS])
    to_params = pytensor.function(model.value_vars, outs)

    def f(x):
        return float(logp_fn(dict(zip(names, x, strict=True))))

    return f, to_params, names


def _field_images(data, ds, path):
    """True field, observations (missing sites blank), posterior mean and sd as images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shape = data["shape"]
    y = np.full(int(np.prod(shape)), np.nan)
    y[data["obs"]] = data["y"]
    panels = [
        ("true field x", data["x"]),
        ("observations y (10 % missing)", y),
        ("posterior mean E[x | y]", ds["x_mean"].values),
        ("posterior sd", ds["x_sd"].values),
    ]
    lim = np.nanpercentile(np.abs(data["x"]), 99)
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.2))
    for ax, (title, v) in zip(axes, panels, strict=True):
        kw = {"cmap": "viridis"} if "sd" in title else {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim}
        im = ax.imshow(np.asarray(v).reshape(shape), **kw)
        ax.set_title(title)
        ax.set_axis_off()
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(f"Proper CAR field on a {shape[0]} x {shape[1]} lattice (n = {np.prod(shape):,})")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def large(args):
    from pymc_sparse.inference.latent import sample_latent

    t0 = time.perf_counter()
    data = simulate_data(args.nx, seed=args.data_seed)
    model = build_model(data)
    t_build = time.perf_counter() - t0
    n = args.nx**2
    print(f"n = {n}, m = {data['obs'].size}; simulate + build {t_build:.1f} s", flush=True)
    f, _, _ = _transformed_logp(model)
    fg = model.logp_dlogp_function(ravel_inputs=True)
    fg.set_extra_values({})
    x0 = np.array([0.0, 0.0, 0.0])  # tau = 1, alpha = 0.5, sigma = 1
    fg(x0)
    t1 = time.perf_counter()
    f(x0 + 0.01)
    t_logp = time.perf_counter() - t1
    t1 = time.perf_counter()
    fg(x0 + 0.02)
    t_grad = time.perf_counter() - t1
    print(f"one logp: {t_logp:.2f} s; one logp + gradient: {t_grad:.2f} s", flush=True)
    row = {"n": n, "build_s": t_build, "logp_s": t_logp, "logp_grad_s": t_grad}
    fam = _logdet_family(model)
    if fam is not None:
        row["logdet_table"] = {"interval": [fam.lo, fam.hi], **fam.info}
        print(f"log det Q table: {fam!r}, {fam.info['build_seconds']:.1f} s", flush=True)
    if args.sampler == "nuts":
        potential, init, _map_point, t_lap = laplace_potential(
            model, start={"tau": 1.0, "alpha": 0.5, "sigma": 1.0}
        )
        with model:
            step = pm.NUTS(potential=potential, target_accept=0.8)
        fit, idata = _fit(
            model,
            draws=args.draws,
            tune=args.tune,
            chains=2,
            cores=2,
            seed=args.seed,
            step=step,
            initvals=init,
        )
        row.update(fit, **t_lap)
    else:
        fit, idata = _fit_imh(model, draws=args.draws, tune=args.tune, chains=2, seed=args.seed)
        fit["logp_evals"] = int(idata.sample_stats.attrs["n_logp_evals"])
        row.update(fit)
    row["fit_total_s"] = time.perf_counter() - t0
    print(az.summary(idata, var_names=PARAMS), flush=True)
    t1 = time.perf_counter()
    ds = sample_latent(idata, model, "y", thin=max(1, args.draws // 5), seed=1)
    row["latent_s"] = time.perf_counter() - t1
    row["latent_draws"] = int(ds["x"].shape[0] * ds["x"].shape[1])
    err = ds["x_mean"].values - data["x"]
    row["latent_rmse"] = float(np.sqrt(np.mean(err**2)))
    row["latent_2sd_coverage"] = float(np.mean(np.abs(err) < 2 * ds["x_sd"].values))
    row["truth"] = data["truth"]
    _field_images(
        data,
        ds,
        Path(__file__).resolve().parents[1]
        / "docs"
        / "performance"
        / f"marginal_large_{args.nx}_field.png",
    )
    row["posterior_mean"] = {p: float(idata.posterior[p].mean()) for p in PARAMS}
    row["posterior_sd"] = {p: float(idata.posterior[p].std()) for p in PARAMS}
    print(json.dumps(row, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"marginal_large_{args.nx}_{args.sampler}.json").write_text(
        json.dumps(row, indent=1)
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=["small", "large"])
    p.add_argument("--nx", type=int, default=None)
    p.add_argument("--draws", type=int, default=None)
    p.add_argument("--tune", type=int, default=None)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sampler", choices=["imh", "nuts"], default="imh")  # imh: sample_imh
    p.add_argument("--data-seed", type=int, default=20261126)
    p.add_argument(
        "--formulations",
        nargs="+",
        default=["marginal_imh", "marginal", "pm_car", "sparse_latent"],
        choices=["marginal_imh", "marginal", "pm_car", "sparse_latent"],
    )
    p.add_argument("--marginal-init", default="jitter+adapt_full")
    p.add_argument("--target-accept", type=float, default=0.8)
    args = p.parse_args(argv)
    if args.part == "small":
        args.nx = args.nx or 32
        args.draws = args.draws or 1000
        args.tune = args.tune or 1000
        small(args)
    else:
        args.nx = args.nx or 316
        args.draws = args.draws or (500 if args.sampler == "imh" else 200)
        args.tune = args.tune or (1000 if args.sampler == "imh" else 50)
        large(args)


if __name__ == "__main__":
    main()
