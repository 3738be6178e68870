"""Proper CAR field on a lattice, observed with Gaussian noise at most sites.

The model (the same in every formulation)::

    tau   ~ Gamma(2, 1)              precision scale of the field
    alpha ~ Uniform(0, 1)            spatial dependence
    sigma ~ HalfNormal(1)            noise sd
    x     ~ CAR(0, W, alpha, tau)    i.e. N(0, [tau (D - alpha W)]^-1) on an nx x ny lattice
    y_k   ~ Normal(x_{s_k}, sigma)   at the observed sites s_k (a fraction may be missing)

Formulations (``build_model(data, formulation=...)``):

* ``"marginal"`` (default): x integrated out exactly with
  :class:`~pymc_sparse.distributions.marginal.MarginalGMRFNormal`; NUTS samples only
  (tau, alpha, sigma).  ``log det Q`` comes from the certified one-parameter table
  (:func:`pymc_sparse.logdet1d.table.car_logdet_family`), so each step factorises only
  ``Q_post``.  Recover x with :func:`pymc_sparse.inference.latent.sample_latent`.
* ``"pm_car"``: x sampled, with PyMC's own ``pm.CAR`` (dense eigenvalue log-determinant).
* ``"sparse_latent"``: x sampled, its prior written with this package's sparse Ops.

Run ``python -m models.lattice_gaussian_marginal [--nx 100] [--draws 500] [--imh]`` to
simulate data, fit the marginal model (NUTS, or :func:`pymc_sparse.sample_imh` with
``--imh``), recover the latent field and save plots to ``models/output/``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import scipy.sparse as sp

from pymc_sparse import sample_gmrf
from pymc_sparse.distributions.marginal import MarginalGMRFNormal
from pymc_sparse.logdet1d.families import car_logdet_family
from pymc_sparse.ops import logdet
from pymc_sparse.ops.matrix import SparseMatrix

OUTPUT = Path(__file__).resolve().parent / "output"


def lattice_adjacency(nx: int, ny: int | None = None) -> sp.csr_matrix:
    """Binary rook adjacency of an ``nx x ny`` lattice (node ``i * ny + j``)."""
    ny = nx if ny is None else ny
    Tx = sp.diags([np.ones(nx - 1), np.ones(nx - 1)], [-1, 1], shape=(nx, nx))
    Ty = sp.diags([np.ones(ny - 1), np.ones(ny - 1)], [-1, 1], shape=(ny, ny))
    return (sp.kron(Tx, sp.identity(ny)) + sp.kron(sp.identity(nx), Ty)).tocsr()


def simulate_data(
    nx: int = 32,
    ny: int | None = None,
    *,
    tau: float = 1.0,
    alpha: float = 0.99,
    sigma: float = 0.3,
    missing: float = 0.1,
    seed: int = 20261126,
) -> dict:
    """Simulate the model on an ``nx x ny`` lattice.

    Returns
    -------
    dict
        ``W`` (adjacency), ``obs`` (observed site indices), ``y`` (observations at
        ``obs``), ``x`` (the true field), ``shape`` and ``truth`` (the parameters).
    """
    ny = nx if ny is None else ny
    rng = np.random.default_rng(seed)
    W = lattice_adjacency(nx, ny)
    n = nx * ny
    D = sp.diags(np.asarray(W.sum(axis=1)).ravel())
    x = sample_gmrf((tau * (D - alpha * W)).tocsc(), rng=rng)
    obs = np.sort(rng.choice(n, size=n - round(missing * n), replace=False))
    y = x[obs] + sigma * rng.standard_normal(obs.size)
    return {
        "W": W,
        "obs": obs,
        "y": y,
        "x": x,
        "shape": (nx, ny),
        "truth": {"tau": tau, "alpha": alpha, "sigma": sigma},
    }


def load_data() -> dict:
    """The default data set: a simulated 32 x 32 lattice with 10 % of the sites missing."""
    return simulate_data()


def _priors():
    tau = pm.Gamma("tau", alpha=2.0, beta=1.0)
    alpha = pm.Uniform("alpha", lower=0.0, upper=1.0)
    sigma = pm.HalfNormal("sigma", sigma=1.0)
    return tau, alpha, sigma


def build_model(data: dict, formulation: str = "marginal") -> pm.Model:
    """The lattice CAR model with Gaussian observations, in one of three formulations."""
    W = sp.csr_matrix(data["W"], dtype=np.float64)
    n = W.shape[0]
    obs = np.asarray(data["obs"])
    y = np.asarray(data["y"], dtype=np.float64)
    Dg = np.asarray(W.sum(axis=1)).ravel()
    coords = {"site": np.arange(n), "obs": obs}
    with pm.Model(coords=coords) as model:
        tau, alpha, sigma = _priors()
        if formulation == "pm_car":
            x = pm.CAR("x", mu=np.zeros(n), W=W.toarray(), alpha=alpha, tau=tau, dims="site")
            pm.Normal("y", mu=x[obs], sigma=sigma, observed=y, dims="obs")
            return model
        D = SparseMatrix.from_scipy(sp.diags(Dg))
        Wm = SparseMatrix.from_scipy(W)
        Q = tau * (D - alpha * Wm)
        if formulation == "marginal":
            A = sp.identity(n, format="csr")[obs]
            # log det Q = n log tau + log det(D - alpha W): the certified O(1) table of
            # pymc_sparse.logdet1d.table (built once, on alpha's prior support) instead of one
            # factorisation of Q per step; only Q_post is factorised.
            fam = car_logdet_family(W, (0.0, 1.0 - 1e-4))
            logdet_Q = n * pt.log(tau) + fam(alpha)
            MarginalGMRFNormal(
                "y", Q=Q, mu=0.0, A=A, sigma=sigma, logdet_Q=logdet_Q, observed=y, dims="obs"
            )
        elif formulation == "sparse_latent":
            x = pm.Flat("x", dims="site")
            pm.Potential(
                "x_prior", 0.5 * logdet(Q) - 0.5 * Q.quad_form(x) - 0.5 * n * np.log(2 * np.pi)
            )
            pm.Normal("y", mu=x[obs], sigma=sigma, observed=y, dims="obs")
        else:
            raise ValueError(
                f"Unknown formulation {formulation!r}; use 'marginal', 'pm_car' or 'sparse_latent'."
            )
    return model


def main(argv=None):
    import arviz as az

    from models.scotland_bym2 import add_sampling_args, sample
    from pymc_sparse.inference.latent import sample_latent

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nx", type=int, default=32)
    add_sampling_args(p, draws=500, tune=500, chains=2, target_accept=0.8, seed=1)
    p.add_argument(
        "--imh",
        action="store_true",
        help="sample with pymc_sparse.sample_imh (gradient-free, exact) instead of NUTS",
    )
    args = p.parse_args(argv)

    data = simulate_data(args.nx)
    n = args.nx * args.nx
    print(f"lattice {args.nx} x {args.nx}: n = {n}, {data['obs'].size} observations")
    model = build_model(data)
    if args.imh:
        from pymc_sparse import sample_imh

        t0 = time.perf_counter()
        idata = sample_imh(
            args.draws, args.tune, chains=args.chains, model=model, random_seed=args.seed
        )
        t_fit = time.perf_counter() - t0
    else:
        idata, t_fit = sample(model, args)
    print(az.summary(idata, var_names=["tau", "alpha", "sigma"]))
    print("truth:", data["truth"], f"fit wall time {t_fit:.1f} s")

    t0 = time.perf_counter()
    latent = sample_latent(idata, model, "y", name="x", thin=max(1, args.draws // 100), seed=2)
    print(f"latent recovery: {time.perf_counter() - t0:.1f} s")
    err = latent["x_mean"].values - data["x"]
    cover = np.mean(np.abs(err) < 2 * latent["x_sd"].values)
    print(f"latent field: rmse {np.sqrt(np.mean(err**2)):.3f}, 2-sd coverage {cover:.3f}")

    OUTPUT.mkdir(exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    az.plot_trace(idata, var_names=["tau", "alpha", "sigma"])
    plt.tight_layout()
    plt.savefig(OUTPUT / "lattice_gaussian_marginal_trace.png", dpi=80)
    fig, ax = plt.subplots(1, 3, figsize=(12, 4))
    shape = data["shape"]
    for a, (title, img) in zip(
        ax,
        [
            ("true field", data["x"]),
            ("posterior mean", latent["x_mean"].values),
            ("posterior sd", latent["x_sd"].values),
        ],
        strict=True,
    ):
        im = a.imshow(np.asarray(img).reshape(shape))
        a.set_title(title)
        fig.colorbar(im, ax=a)
    plt.tight_layout()
    fig.savefig(OUTPUT / "lattice_gaussian_marginal_field.png", dpi=80)
    print(f"plots saved to {OUTPUT}")


if __name__ == "__main__":
    main()
