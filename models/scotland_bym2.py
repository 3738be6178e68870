r"""Scottish lip cancer: BYM2 Poisson regression on 56 districts (the README demo).

The model of the Stan case study (Morris et al. 2019) and of R-INLA's BYM2 analyses
(Riebler et al. 2016), on the Stan "connected" graph (132 edges, one component) and the
Stan/BUGS data (expected counts with one decimal)::

    y_i   ~ Poisson(E_i exp(eta_i))
    eta_i = beta0 + beta1 x_i + b_i          x_i = AFF_i / 10, log E_i is the offset
    b     = BYM2(W, sigma, rho)              sigma (sqrt(rho / s) u + sqrt(1 - rho) v)
    beta0, beta1 ~ Normal(0, 1)
    sigma ~ HalfNormal(1)
    rho   ~ Beta(0.5, 0.5)

``u`` is a unit ICAR with a hard sum-to-zero constraint, ``v`` iid N(0, 1) and ``s`` the
ICAR scaling factor of the graph (the priors are those of the Stan case study's
``bym2_predictor_plus_offset.stan``).

Run from the repository root::

    python -m models.scotland_bym2            # 4 chains x (1000 tune + 1000 draws)
    python -m models.scotland_bym2 --draws 200 --tune 200 --chains 2   # quicker

It prints an ArviZ summary and saves ``models/output/scotland_bym2_*.png``.

References
----------
.. [1] Clayton, D. and Kaldor, J. (1987). Empirical Bayes estimates of age-standardized
   relative risks for use in disease mapping. *Biometrics* 43, 671-681.
.. [2] Riebler, A., Sørbye, S. H., Simpson, D. and Rue, H. (2016). An intuitive Bayesian
   spatial model for disease mapping that accounts for scaling. *Statistical Methods in
   Medical Research* 25(4), 1145-1165.
.. [3] Morris, M., Wheeler-Martin, K., Simpson, D., Mooney, S. J., Gelman, A. and
   DiMaggio, C. (2019). Bayesian hierarchical spatial models: implementing the Besag York
   Mollié model in Stan. *Spatial and Spatio-temporal Epidemiology* 31, 100301.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pymc as pm

from models._data import load_scotland
from pymc_sparse.distributions.bym2 import BYM2

OUTPUT = Path(__file__).resolve().parent / "output"
MAIN_VARS = ["beta0", "beta1", "sigma", "rho"]


def load_data(graph: str = "connected") -> dict:
    """Scottish lip cancer data with the Stan ``graph`` (:func:`models._data.load_scotland`)."""
    return load_scotland(graph=graph)


def build_bym2_poisson(
    data: dict, *, covariate: bool = True, zero_sum_stdev: float | None = None
) -> pm.Model:
    r"""BYM2 Poisson regression with log offset :math:`\log E` (shared by models 1-3).

    Parameters
    ----------
    data : dict
        ``y`` (counts), ``E`` (expected counts, > 0), ``W`` (adjacency); ``x`` (one
        covariate) when ``covariate``; optional ``names`` for the area coordinate.
    covariate : bool
        Include ``beta1 * x`` in the linear predictor.
    zero_sum_stdev : float, optional
        None: the exact sum-to-zero constraint; a number: ``pm.ICAR``'s soft one
        (:func:`~pymc_sparse.distributions.bym2.BYM2`).
    """
    y = np.asarray(data["y"])
    E = np.asarray(data["E"], dtype=np.float64)
    if np.any(E <= 0):
        raise ValueError("Expected counts E must be > 0 (log E is the offset).")
    n = y.size
    coords = {"area": list(data.get("names", range(n)))}
    with pm.Model(coords=coords) as model:
        log_E = pm.Data("log_E", np.log(E), dims="area")
        beta0 = pm.Normal("beta0", 0.0, 1.0)
        eta = beta0 + log_E
        if covariate:
            x = pm.Data("x", np.asarray(data["x"], dtype=np.float64), dims="area")
            beta1 = pm.Normal("beta1", 0.0, 1.0)
            eta = eta + beta1 * x
        sigma = pm.HalfNormal("sigma", 1.0)
        rho = pm.Beta("rho", 0.5, 0.5)
        b = BYM2("b", W=data["W"], sigma=sigma, rho=rho, dims="area", zero_sum_stdev=zero_sum_stdev)
        eta = eta + b
        # Relative risk exp(eta - log E): the quantity mapped in disease mapping.
        pm.Deterministic("rr", pm.math.exp(eta - log_E), dims="area")
        pm.Poisson("y", mu=pm.math.exp(eta), observed=y, dims="area")
    return model


def build_model(data: dict) -> pm.Model:
    """Model 1: BYM2 Poisson regression with the covariate ``x = AFF/10``."""
    return build_bym2_poisson(data, covariate=True)


def sample(model: pm.Model, args) -> tuple:
    """``pm.sample`` with the command-line settings; returns ``(idata, wall seconds)``."""
    kwargs = {}
    if args.sampler != "pymc":
        kwargs["nuts_sampler"] = args.sampler
    t0 = time.perf_counter()
    with model:
        idata = pm.sample(
            draws=args.draws,
            tune=args.tune,
            chains=args.chains,
            cores=min(args.chains, args.cores),
            target_accept=args.target_accept,
            random_seed=args.seed,
            progressbar=True,
            **kwargs,
        )
    return idata, time.perf_counter() - t0


def add_sampling_args(
    p: argparse.ArgumentParser,
    *,
    draws=1000,
    tune=1000,
    chains=4,
    target_accept=0.9,
    seed=20261126,
):
    """The sampling flags every model's ``main`` shares."""
    p.add_argument("--draws", type=int, default=draws)
    p.add_argument("--tune", type=int, default=tune)
    p.add_argument("--chains", type=int, default=chains)
    p.add_argument("--cores", type=int, default=2, help="processes for the chains")
    p.add_argument("--target-accept", type=float, default=target_accept)
    p.add_argument("--seed", type=int, default=seed)
    p.add_argument(
        "--sampler",
        default="pymc",
        choices=["pymc", "numpyro", "nutpie", "blackjax"],
        help="NUTS implementation (pm.sample's nuts_sampler)",
    )


def plot_areal(idata, data: dict, prefix: str, var_names=MAIN_VARS) -> list[Path]:
    """Trace plot, and posterior relative risk against the SMR ``y/E`` per area."""
    import arviz as az
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    OUTPUT.mkdir(parents=True, exist_ok=True)
    out = []
    az.plot_trace(idata, var_names=var_names)
    plt.tight_layout()
    out.append(OUTPUT / f"{prefix}_trace.png")
    plt.savefig(out[-1], dpi=80)
    plt.close("all")

    rr = idata.posterior["rr"]
    mean = rr.mean(("chain", "draw")).values
    lo, hi = rr.quantile([0.05, 0.95], dim=("chain", "draw")).values
    smr = np.asarray(data["y"]) / np.asarray(data["E"])
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.errorbar(smr, mean, yerr=[mean - lo, hi - mean], fmt="o", ms=3, alpha=0.6, lw=0.8)
    top = max(smr.max(), hi.max()) * 1.05
    ax.plot([0, top], [0, top], "k--", lw=0.8, label="RR = SMR")
    ax.set_xlabel("SMR = observed / expected")
    ax.set_ylabel("posterior relative risk (mean, 90% interval)")
    ax.set_title(f"{prefix}: shrinkage of the relative risks")
    ax.legend()
    fig.tight_layout()
    out.append(OUTPUT / f"{prefix}_rr_vs_smr.png")
    fig.savefig(out[-1], dpi=80)
    plt.close(fig)
    return out


#: Published posterior (mean, sd) of the same model and data: the Stan BYM2 fit of
#: M. Morris's case study "Spatial Models in Stan: Intrinsic Auto-Regressive Models for
#: Areal Data" (stan-dev/example-models, knitr/car-iar-poisson; cmdstanr, 4 chains x
#: 1000 draws; same priors, the "connected" graph, x = AFF/10, offset log E).
PUBLISHED_STAN = {
    "beta0": (-0.217, 0.129),
    "beta1": (0.365, 0.134),
    "sigma": (0.514, 0.0885),
    "rho": (0.878, 0.144),
}


def compare_with_published(idata) -> dict:
    """|our mean - published mean| in units of the published sd, per parameter."""
    post = idata.posterior
    return {k: abs(float(post[k].mean()) - m) / sd for k, (m, sd) in PUBLISHED_STAN.items()}


def main(argv=None):
    """Sample model 1, print the summary and save the plots."""
    import arviz as az

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sampling_args(p)
    args = p.parse_args(argv)

    data = load_data()
    print(
        f"Scottish lip cancer: {data['n']} districts, graph {data['graph']!r}, "
        f"{data['W'].nnz // 2} edges"
    )
    model = build_model(data)
    idata, wall = sample(model, args)
    summary = az.summary(idata, var_names=MAIN_VARS)
    print(summary)
    print(
        f"sampling wall time: {wall:.1f} s ({args.chains} chains x "
        f"({args.tune} tune + {args.draws} draws), sampler {args.sampler})"
    )
    print(
        "against the published Stan fit (Morris, Stan case study), |mean difference| "
        "in published posterior sd:"
    )
    for k, d in compare_with_published(idata).items():
        m, sd = PUBLISHED_STAN[k]
        print(
            f"  {k:6s} ours {float(idata.posterior[k].mean()):+.3f}, Stan {m:+.3f} "
            f"+- {sd:.3f}: {d:.2f} sd"
        )
    for path in plot_areal(idata, data, "scotland_bym2"):
        print(f"saved {path}")
    return idata


if __name__ == "__main__":
    main()
