r"""One benchmark configuration, run in its own process by ``benchmarks/run_all.py``.

Usage (normally called by ``run_all.py``, which reads the peak memory of this process)::

    python benchmarks/peers.py '{"kind": "eval", "system": "ours", "n": 1024, "budget": 60}'

prints one line ``RESULT {json}``.

Kinds
-----
``eval``
    Proper CAR prior with unknown ``alpha ~ Uniform(0, 1)``, ``tau ~ Gamma(2, 1)`` on an
    ``nx x nx`` rook lattice, the field ``x`` latent (n + 2 unknowns).  Times graph
    construction, compile, first log-density + gradient evaluation, then the minimum over
    repeated evaluations at fresh points (a repeated point could be answered by a cache).
``e2e``
    ``y ~ CAR(beta0, W, alpha, tau)`` observed on the lattice (data simulated once, with a
    fixed seed, from the model with beta0 = 0.5, alpha = 0.9, tau = 2): NUTS, 2 chains run
    one after the other, returns the wall time, bulk ESS and posterior mean/sd.
``bym2``
    Scottish lip cancer BYM2 Poisson regression: ours (``models.scotland_bym2``) or a
    ``pm.ICAR``-based BYM2 with the same priors and scaling factor.

Systems: ``ours``, ``ours_jax``, ``ours_interp``, ``ours_interp_jax`` (our CAR with
``logdet="exact"``, one sparse Cholesky per evaluation, or ``logdet="interpolated"``, the
certified table of :mod:`pymc_sparse.logdet1d.table`, which ``logdet="auto"`` picks by
default), ``pm_car``,
``pm_mvnormal`` (dense ``pm.MvNormal(tau=Q)``), ``numpyro_car``, ``numpyro_car_sparse``,
``sparsax`` (CHOLMOD through JAX: log-determinant by ``sparsax.logdet`` on the upper
triangle, quadratic form in ``jax.numpy``).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TRUTH = {"beta0": 0.5, "alpha": 0.9, "tau": 2.0}
PARAMS = ["beta0", "alpha", "tau"]
SEED = 20261126


def lattice(n: int):
    """Rook adjacency of the ``nx x nx`` lattice, ``nx = round(sqrt(n))``."""
    from pymc_sparse.precision.builders import lattice_adjacency

    nx = max(2, round(math.sqrt(n)))
    return lattice_adjacency(nx, nx).tocsr()


def simulate(W):
    """``y = beta0 + x``, ``x ~ CAR(0, W, 0.9, 2)`` drawn exactly with CHOLMOD."""
    from pymc_sparse import sample_gmrf
    from pymc_sparse.precision.builders import car_precision

    rng = np.random.default_rng(SEED)
    x = sample_gmrf(car_precision(W, TRUTH["alpha"], TRUTH["tau"]), rng=rng)
    return TRUTH["beta0"] + x


# ----------------------------------------------------------------------------- PyMC models
def pymc_field(system, name, W, mu, alpha, tau, observed=None):
    import pymc as pm

    if system.startswith("ours"):
        from pymc_sparse.distributions.car import CAR

        method = "interpolated" if system.startswith("ours_interp") else "exact"
        return CAR(name, mu=mu, W=W, alpha=alpha, tau=tau, logdet=method, observed=observed)
    if system == "pm_car":
        return pm.CAR(name, mu=mu, W=W, alpha=alpha, tau=tau, observed=observed)
    if system == "pm_mvnormal":
        import pytensor.tensor as pt

        Wd = W.toarray()
        D = np.diag(Wd.sum(axis=1))
        Q = tau * (pt.constant(D) - alpha * pt.constant(Wd))
        return pm.MvNormal(name, mu=mu, tau=Q, observed=observed)
    raise ValueError(system)


def pymc_prior_model(system, W):
    import pymc as pm

    with pm.Model() as m:
        alpha = pm.Uniform("alpha", 0.0, 1.0)
        tau = pm.Gamma("tau", alpha=2.0, beta=1.0)
        pymc_field(system, "x", W, np.zeros(W.shape[0]), alpha, tau)
    return m


def pymc_observed_model(system, W, y):
    import pymc as pm

    with pm.Model() as m:
        beta0 = pm.Normal("beta0", 0.0, 2.0)
        alpha = pm.Uniform("alpha", 0.0, 1.0)
        tau = pm.Gamma("tau", alpha=2.0, beta=1.0)
        mu = beta0 + np.zeros(W.shape[0])
        pymc_field(system, "y", W, mu, alpha, tau, observed=y)
    return m


# ---------------------------------------------------------------------------- numpyro model
def numpyro_model(W, sparse, y=None):
    import numpyro
    import numpyro.distributions as dist

    adj = W if sparse else W.toarray()

    def model():
        alpha = numpyro.sample("alpha", dist.Uniform(0.0, 1.0))
        tau = numpyro.sample("tau", dist.Gamma(2.0, 1.0))
        if y is None:
            numpyro.sample("x", dist.CAR(0.0, alpha, tau, adj, is_sparse=sparse))
        else:
            beta0 = numpyro.sample("beta0", dist.Normal(0.0, 2.0))
            numpyro.sample("y", dist.CAR(beta0, alpha, tau, adj, is_sparse=sparse), obs=y)

    return model


# ----------------------------------------------------------------------------- sparsax logp
def sparsax_logp(W):
    """Unnormalised log posterior of the prior model in unconstrained (logit alpha, log tau, x)."""
    import jax
    import jax.numpy as jnp
    import scipy.sparse as sp
    import sparsax

    n = W.shape[0]
    d = np.asarray(W.sum(axis=1)).ravel()
    # sparsax reads only the upper triangle of a COO matrix: give it exactly that.
    U = sp.triu(W, k=1, format="coo")
    Ai = jnp.asarray(np.concatenate([np.arange(n), U.row]), dtype=jnp.int32)
    Aj = jnp.asarray(np.concatenate([np.arange(n), U.col]), dtype=jnp.int32)
    d_up = jnp.asarray(np.concatenate([d, np.zeros(U.nnz)]))
    w_up = jnp.asarray(np.concatenate([np.zeros(n), U.data]))
    ur, uc, uw = jnp.asarray(U.row), jnp.asarray(U.col), jnp.asarray(U.data)
    dj = jnp.asarray(d)

    def logp(au, tu, x):
        alpha = jax.nn.sigmoid(au)
        tau = jnp.exp(tu)
        ld = sparsax.logdet(Ai, Aj, d_up - alpha * w_up, n)
        quad = jnp.sum(dj * x * x) - 2.0 * alpha * jnp.sum(uw * x[ur] * x[uc])
        lp = 0.5 * n * jnp.log(tau) + 0.5 * ld - 0.5 * tau * quad
        # priors + Jacobians: Uniform(0, 1) via logit, Gamma(2, 1) via log
        lp += jnp.log(alpha) + jnp.log1p(-alpha)
        lp += jnp.log(tau) - tau + tu
        return lp

    return logp


def phase(text):
    """Progress line: ``run_all.py`` quotes the last one when it stops a run at the cap."""
    print(f"PHASE {text}", flush=True)


# ------------------------------------------------------------------------------- eval task
def unconstrained_point(n, rng):
    return {"alpha": math.log(0.9 / 0.1), "tau": math.log(2.0), "x": rng.standard_normal(n)}


def task_eval(system, n, budget):
    t_start = time.perf_counter()
    W = lattice(n)
    n = W.shape[0]
    rng = np.random.default_rng(0)
    base = unconstrained_point(n, rng)
    out = {"n": n}
    if system in ("ours", "ours_interp", "pm_car", "pm_mvnormal"):
        t0 = time.perf_counter()
        m = pymc_prior_model(system, W)
        t1 = time.perf_counter()
        phase(f"built in {t1 - t0:.0f} s; compiling")
        f = m.logp_dlogp_function(ravel_inputs=True)
        f.set_extra_values({})
        t2 = time.perf_counter()
        names = [v.name for v in f._grad_vars]

        def point(p):
            parts = {"alpha_interval__": p["alpha"], "tau_log__": p["tau"], "x": p["x"]}
            return np.concatenate([np.atleast_1d(parts[k]) for k in names])

        def call(p):
            return f(point(p))
    elif system in ("ours_jax", "ours_interp_jax"):
        import jax
        from pymc.sampling.jax import get_jaxified_graph

        import pymc_sparse.dispatch.jax
        import pymc_sparse.dispatch.jax_table  # noqa: F401

        t0 = time.perf_counter()
        m = pymc_prior_model(system, W)
        fn = get_jaxified_graph(inputs=m.value_vars, outputs=[m.logp()])
        names = [v.name for v in m.value_vars]
        vg = jax.jit(jax.value_and_grad(lambda *a: fn(*a)[0], argnums=tuple(range(len(names)))))
        t1 = time.perf_counter()
        key = {"alpha_interval__": "alpha", "tau_log__": "tau", "x": "x"}

        def args(p):
            return [np.asarray(p[key[k]], dtype=np.float64) for k in names]

        phase(f"built in {t1 - t0:.0f} s; compiling")
        vg = vg.lower(*args(base)).compile()
        t2 = time.perf_counter()

        def call(p):
            return jax.block_until_ready(vg(*args(p)))
    elif system in ("numpyro_car", "numpyro_car_sparse", "sparsax"):
        import jax

        t0 = time.perf_counter()
        if system == "sparsax":
            logp = sparsax_logp(W)

            def pot(p):
                return -logp(p["alpha"], p["tau"], p["x"])
        else:
            from numpyro.infer.util import initialize_model

            model = numpyro_model(W, sparse=system.endswith("sparse"))
            init = initialize_model(jax.random.PRNGKey(0), model, dynamic_args=False)
            pot = init.potential_fn
        vg = jax.jit(jax.value_and_grad(pot))
        t1 = time.perf_counter()

        def args(p):
            return {k: np.asarray(v, dtype=np.float64) for k, v in p.items()}

        phase(f"built in {t1 - t0:.0f} s; compiling")
        vg = vg.lower(args(base)).compile()
        t2 = time.perf_counter()

        def call(p):
            return jax.block_until_ready(vg(args(p)))
    else:
        raise ValueError(f"unknown system {system!r}")
    phase(f"compiled in {t2 - t1:.0f} s; first evaluation")
    v = call(base)
    t3 = time.perf_counter()
    phase(f"first evaluation {t3 - t2:.1f} s; repeats")
    out.update(build_s=t1 - t0, compile_s=t2 - t1, first_eval_s=t3 - t2, setup_s=t3 - t0)
    times = []
    # 5 to 20 repeats, each at a fresh point; stop after 5 once 3 s or 70% of the budget is spent.
    while len(times) < 20:
        p = dict(base, x=base["x"] + 1e-3 * rng.standard_normal(n))
        p["alpha"] = base["alpha"] + 1e-3 * rng.standard_normal()
        s = time.perf_counter()
        call(p)
        times.append(time.perf_counter() - s)
        spent = time.perf_counter() - t_start
        if len(times) >= 5 and (sum(times) > 3.0 or spent > 0.7 * budget):
            break
    out.update(eval_min_s=min(times), eval_median_s=float(np.median(times)), repeats=len(times))
    out["logp_first"] = float(np.ravel(v[0])[0]) if isinstance(v, tuple | list) else None
    return out


# -------------------------------------------------------------------------------- e2e task
def _summ(samples: dict, wall: float):
    """Posterior mean, sd and bulk ESS of each parameter; samples[name] is (chains, draws)."""
    import arviz as az

    res = {}
    for k, s in samples.items():
        s = np.asarray(s, dtype=np.float64)
        ess = float(az.ess(s, method="bulk"))
        res[k] = {
            "mean": float(s.mean()),
            "sd": float(s.std()),
            "ess_bulk": ess,
            "ess_per_s": ess / wall,
        }
    return res


def task_e2e(system, n, tune, draws, chains):
    W = lattice(n)
    n = W.shape[0]
    y = simulate(W)
    t0 = time.perf_counter()
    if system.startswith("ours") or system.startswith("pm_"):
        import pymc as pm

        m = pymc_observed_model(system, W, y)
        kw = {}
        if system.endswith("_numpyro"):
            kw = {"nuts_sampler": "numpyro", "nuts_sampler_kwargs": {"chain_method": "sequential"}}
        with m:
            idata = pm.sample(
                draws=draws,
                tune=tune,
                chains=chains,
                cores=1,
                random_seed=SEED,
                progressbar=False,
                compute_convergence_checks=False,
                **kw,
            )
        wall = time.perf_counter() - t0
        post = idata.posterior
        samples = {k: post[k].values for k in PARAMS}
        div = int(idata.sample_stats["diverging"].values.sum())
    elif system == "numpyro_car_sparse":
        import jax
        from numpyro.infer import MCMC, NUTS

        mcmc = MCMC(
            NUTS(numpyro_model(W, True, y)),
            num_warmup=tune,
            num_samples=draws,
            num_chains=chains,
            chain_method="sequential",
            progress_bar=False,
        )
        mcmc.run(jax.random.PRNGKey(SEED))
        wall = time.perf_counter() - t0
        s = mcmc.get_samples(group_by_chain=True)
        samples = {k: np.asarray(s[k]) for k in PARAMS}
        div = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    else:
        raise ValueError(f"unknown system {system!r}")
    return {
        "n": n,
        "wall_s": wall,
        "divergences": div,
        "tune": tune,
        "draws": draws,
        "chains": chains,
        "params": _summ(samples, wall),
    }


BYM2_PARAMS = ["beta0", "beta1", "sigma", "rho"]


def task_bym2(system, tune, draws, chains):
    import pymc as pm

    from models._data import load_scotland

    data = load_scotland()
    t0 = time.perf_counter()
    if system == "ours":
        from models.scotland_bym2 import build_model

        m = build_model(data)
    elif system == "pm_icar":
        from pymc_sparse.precision.scaling import scaling_factor

        W = data["W"]
        Wd = W.toarray() if hasattr(W, "toarray") else np.asarray(W)
        s = float(scaling_factor(W))
        y, E, x = (np.asarray(data[k], dtype=np.float64) for k in ("y", "E", "x"))
        with pm.Model() as m:
            beta0 = pm.Normal("beta0", 0.0, 1.0)
            beta1 = pm.Normal("beta1", 0.0, 1.0)
            sigma = pm.HalfNormal("sigma", 1.0)
            rho = pm.Beta("rho", 0.5, 0.5)
            u = pm.ICAR("u", W=Wd, sigma=1.0)  # soft sum-to-zero (pm.ICAR's default)
            v = pm.Normal("v", 0.0, 1.0, shape=y.size)
            b = sigma * (pm.math.sqrt(rho / s) * u + pm.math.sqrt(1.0 - rho) * v)
            pm.Poisson("y", mu=pm.math.exp(beta0 + beta1 * x + np.log(E) + b), observed=y)
    else:
        raise ValueError(f"unknown system {system!r}")
    with m:
        idata = pm.sample(
            draws=draws,
            tune=tune,
            chains=chains,
            cores=1,
            random_seed=SEED,
            progressbar=False,
            compute_convergence_checks=False,
        )
    wall = time.perf_counter() - t0
    post = idata.posterior
    return {
        "n": 56,
        "wall_s": wall,
        "tune": tune,
        "draws": draws,
        "chains": chains,
        "divergences": int(idata.sample_stats["diverging"].values.sum()),
        "params": _summ({k: post[k].values for k in BYM2_PARAMS}, wall),
    }


def main(argv):
    task = json.loads(argv[0])
    if task["system"] not in ("pm_car", "pm_mvnormal", "pm_icar") or task["kind"] == "e2e":
        import jax

        jax.config.update("jax_enable_x64", True)
    import warnings

    warnings.filterwarnings("ignore")
    if task["kind"] == "eval":
        res = task_eval(task["system"], task["n"], task.get("budget", 60))
    elif task["kind"] == "e2e":
        res = task_e2e(task["system"], task["n"], task["tune"], task["draws"], task["chains"])
    elif task["kind"] == "bym2":
        res = task_bym2(task["system"], task["tune"], task["draws"], task["chains"])
    else:
        raise ValueError(task["kind"])
    print("RESULT " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
