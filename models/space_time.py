r"""Space-time disease mapping: ICAR in space, RW1 in time, a Kronecker-structured interaction.

Counts simulated (fixed seed, from the model itself) for the 56 Scottish districts of
:mod:`models.scotland_bym2` (Stan "connected" graph, their expected counts ``E``) over
``T`` years::

    y_it   ~ Poisson(E_i exp(beta0 + s_i + g_t + d_it))
    s      = sigma_s * ICAR(W)              space, sum-to-zero (hard constraint)
    g      = sigma_t * ICAR(path graph)     time: a first-order random walk, R = rw1(T)
    d      = sigma_d * d_raw,  d_raw ~ N(0, Q^-1),  Q = Q_AR1(rho) ⊗ Q_Leroux(lam)   (T * 56)
    beta0  ~ Normal(0, 1);  sigma_s, sigma_t, sigma_d ~ HalfNormal(1)
    rho    ~ Uniform(-1, 1);  lam ~ Uniform(0, 1)

* An ICAR on the path graph ``1 - 2 - ... - T`` *is* the RW1 model: its structure matrix
  ``D - W`` equals :func:`pymc_sparse.precision.rw1` (checked by :func:`build_model`).
* The interaction's precision is built symbolically from two builders,
  :func:`~pymc_sparse.precision.ar1_precision` (unit marginal variance) and
  :func:`~pymc_sparse.precision.leroux_precision`, combined by
  :func:`pymc_sparse.sparse.kron` (time major: index ``t * 56 + i``), and
  used in :class:`~pymc_sparse.distributions.gmrf.SparseGMRF`: its log-determinant and
  gradient w.r.t. ``rho`` and ``lam`` come from one sparse factorisation of
  the ``56 T x 56 T`` matrix.  The scale ``sigma_d`` multiplies the field outside the
  GMRF (non-centred in the scale), which avoids the funnel between a precision
  parameter and the field that slows NUTS down.
* This interaction is the *proper* analogue of Knorr-Held's (2000) type IV interaction
  ``RW1 ⊗ ICAR``, which it approaches as ``rho, lam -> 1``.  The intrinsic version has
  ``56 + T - 1`` zero eigenvalues and needs as many linear constraints, which
  ``SparseGMRF`` does not impose; the proper form needs none.

With 448 counts the spatial main effect ``s`` and the spatially structured interaction
(``lam`` and ``rho`` near 1) explain much of the same variation: expect slow mixing of
``sigma_s``, ``sigma_d`` and ``rho`` in short runs (see ``docs/models.md``).

Run from the repository root: ``python -m models.space_time [--years 10]``.

References
----------
.. [1] Knorr-Held, L. (2000). Bayesian modelling of inseparable space-time variation in
   disease risk. *Statistics in Medicine* 19, 2555-2567.
.. [2] Leroux, B. G., Lei, X. and Breslow, N. (2000). Estimation of disease rates in small
   areas: a new mixed model for spatial dependence. In *Statistical Models in
   Epidemiology, the Environment, and Clinical Trials*, 179-191. Springer.
"""

from __future__ import annotations

import argparse

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import scipy.sparse as sp

from models._data import load_scotland
from pymc_sparse.distributions.gmrf import SparseGMRF
from pymc_sparse.distributions.icar import ICAR
from pymc_sparse.precision.builders import ar1_precision, icar_precision, leroux_precision, rw1
from pymc_sparse.sampling import sample_gmrf
from pymc_sparse.sparse import kron

TRUTH = {"beta0": 0.3, "sigma_s": 0.6, "sigma_t": 0.15, "sigma_d": 0.35, "rho": 0.7, "lam": 0.8}
MAIN_VARS = ["beta0", "sigma_s", "sigma_t", "sigma_d", "rho", "lam"]


def path_adjacency(T: int) -> sp.csc_matrix:
    """Adjacency of the path graph ``0 - 1 - ... - T-1`` (the RW1 neighbourhood)."""
    return sp.diags([np.ones(T - 1), np.ones(T - 1)], [-1, 1], shape=(T, T), format="csc")


def _constrained_normal(R: sp.spmatrix, rng) -> np.ndarray:
    """One draw of the unit intrinsic GMRF with structure ``R`` (connected), sum zero.

    Small sizes only (dense eigendecomposition): used for simulating data.
    """
    lam, V = np.linalg.eigh(R.toarray())
    keep = lam > 1e-9 * lam.max()
    return V[:, keep] @ (rng.standard_normal(keep.sum()) / np.sqrt(lam[keep]))


def simulate_data(years: int = 8, seed: int = 20261126) -> dict:
    """Simulate ``y`` (``years x 56``) from the model at ``TRUTH`` with Scotland's graph and E."""
    scot = load_scotland(graph="connected")
    rng = np.random.default_rng(seed)
    W, E = scot["W"], scot["E"]
    n = W.shape[0]
    s = TRUTH["sigma_s"] * _constrained_normal(icar_precision(W), rng)
    g = TRUTH["sigma_t"] * _constrained_normal(rw1(years), rng)
    Q = sp.kron(
        ar1_precision(years, TRUTH["rho"], unit_marginal=True), leroux_precision(W, TRUTH["lam"])
    ).tocsc()
    d = TRUTH["sigma_d"] * sample_gmrf(Q, rng=rng).reshape(years, n)
    eta = TRUTH["beta0"] + s[None, :] + g[:, None] + d
    y = rng.poisson(E[None, :] * np.exp(eta))
    return {"W": W, "E": E, "y": y, "names": scot["names"], "years": years,
            "truth": {**TRUTH, "s": s, "g": g, "d": d}}


def load_data(years: int = 8) -> dict:
    """The default simulated data set (56 districts x ``years``)."""
    return simulate_data(years)


def build_model(data: dict) -> pm.Model:
    """Model 6: ICAR space + RW1 time + proper AR1 ⊗ Leroux interaction, Poisson counts."""
    W = data["W"]
    T = int(data["years"])
    n = W.shape[0]
    Wt = path_adjacency(T)
    # The RW1 structure matrix is the ICAR structure matrix of the path graph.
    if abs(icar_precision(Wt) - rw1(T)).max() > 0:
        raise AssertionError("ICAR on the path graph should equal rw1(T).")
    y = np.asarray(data["y"])
    coords = {"year": np.arange(T), "area": list(data.get("names", range(n)))}
    with pm.Model(coords=coords) as model:
        log_E = pm.Data("log_E", np.log(np.asarray(data["E"], dtype=float)), dims="area")
        beta0 = pm.Normal("beta0", 0.0, 1.0)
        sigma_s = pm.HalfNormal("sigma_s", 1.0)
        sigma_t = pm.HalfNormal("sigma_t", 1.0)
        sigma_d = pm.HalfNormal("sigma_d", 1.0)
        rho = pm.Uniform("rho", -1.0, 1.0)
        lam = pm.Uniform("lam", 0.0, 1.0)
        s = pm.Deterministic("s", sigma_s * ICAR("s_raw", W=W, dims="area"), dims="area")
        g = pm.Deterministic("g", sigma_t * ICAR("g_raw", W=Wt, dims="year"), dims="year")
        Q = kron(ar1_precision(T, rho, unit_marginal=True), leroux_precision(W, lam))
        d_raw = SparseGMRF("d_raw", Q=Q, mu=0.0)
        d = pm.Deterministic("d", sigma_d * d_raw.reshape((T, n)), dims=("year", "area"))
        eta = beta0 + s[None, :] + g[:, None] + d
        pm.Deterministic("rr", pt.exp(eta), dims=("year", "area"))
        pm.Poisson("y", mu=pt.exp(log_E[None, :] + eta), observed=y, dims=("year", "area"))
    return model


def main(argv=None):
    """Simulate, sample, compare with the truth, plot the time trend and a trace."""
    import arviz as az

    from models.scotland_bym2 import add_sampling_args, sample

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--years", type=int, default=8)
    add_sampling_args(p, draws=500, tune=500, chains=2)
    args = p.parse_args(argv)

    data = load_data(args.years)
    T, n = data["y"].shape
    print(f"space-time: {n} districts x {T} years = {n * T} counts; interaction precision "
          f"{n * T} x {n * T}")
    model = build_model(data)
    idata, wall = sample(model, args)
    summ = az.summary(idata, var_names=MAIN_VARS)
    summ.insert(0, "truth", [TRUTH[v] for v in MAIN_VARS])
    print(summ)
    post = idata.posterior
    for name in ("s", "g", "d"):
        est = post[name].mean(("chain", "draw")).values
        true = data["truth"][name]
        corr = np.corrcoef(est.ravel(), true.ravel())[0, 1]
        print(f"{name}: corr(posterior mean, truth) = {corr:.3f}")
    print(f"sampling wall time: {wall:.1f} s ({args.chains} chains x "
          f"({args.tune} tune + {args.draws} draws), sampler {args.sampler})")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from models.scotland_bym2 import OUTPUT

    OUTPUT.mkdir(parents=True, exist_ok=True)
    gq = post["g"].quantile([0.05, 0.5, 0.95], dim=("chain", "draw")).values
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ax[0].fill_between(range(T), gq[0], gq[2], alpha=0.3, label="90% interval")
    ax[0].plot(range(T), gq[1], label="posterior median")
    ax[0].plot(range(T), data["truth"]["g"], "k--", label="truth")
    ax[0].set_xlabel("year")
    ax[0].set_title("RW1 time effect g")
    ax[0].legend()
    dm = post["d"].mean(("chain", "draw")).values
    ax[1].scatter(data["truth"]["d"].ravel(), dm.ravel(), s=6, alpha=0.5)
    ax[1].set_xlabel("true interaction d")
    ax[1].set_ylabel("posterior mean")
    ax[1].set_title("AR1 ⊗ Leroux interaction")
    fig.tight_layout()
    fig.savefig(OUTPUT / "space_time_effects.png", dpi=80)
    plt.close(fig)
    az.plot_trace(idata, var_names=MAIN_VARS)
    plt.tight_layout()
    plt.savefig(OUTPUT / "space_time_trace.png", dpi=80)
    plt.close("all")
    print(f"saved {OUTPUT / 'space_time_effects.png'} and {OUTPUT / 'space_time_trace.png'}")
    return idata


if __name__ == "__main__":
    main()
