# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # PyMC's CAR notebook (Scottish lip cancer), ported to `pymc_sparse`
#
# A port of the PyMC example *Conditional Autoregressive (CAR) Models for Spatial Data*
# (Conor Hassan and Daniel Saunders, pymc-examples, `examples/spatial/
# conditional_autoregressive_priors`), made with the README and {doc}`../migration`
# only. The notebook fits, to the lip cancer counts of 56 Scottish districts,
#
# $$
# y_i \sim \text{Poisson}(\lambda_i), \quad
# \log\lambda_i = \beta_0 + \beta_1 x_i + \theta_i + \phi_i + \log E_i, \quad
# \theta_i \sim N(0, 1/\tau_\text{ind}), \quad
# \phi \sim \text{CAR}(0, W, \alpha, \tau_\text{spat}),
# $$
#
# first with $\alpha = 0.95$ fixed, then with $\alpha \sim \text{Beta}(1, 1)$. **The port
# changes one word per model**: `pm.CAR` becomes `pms.CAR`. Everything else (priors,
# names, `dims`) is the notebook's. We fit both versions here, side by side.
#
# Two differences in the *data*, not the code: the bundled data
# (`models/data/SOURCE.md`) are the Stan/BUGS version of the same counts, whose expected
# counts $E$ have one decimal (1.4) where PyMC's CSV has two (1.38), and the adjacency is
# Stan's connected graph (132 edges), which matches the first rows of PyMC's `ADJ` column.
# The original publishes plots, not tables; what it states is that the posterior of
# $\alpha$ is "very near 1" and that the spatial terms change $\beta_1$. Both are checked
# below, for both implementations.
#
# **Quick mode.** With `PYMC_SPARSE_EXAMPLES_QUICK=1` (continuous integration) the page
# samples fewer draws and prints a line saying so; the rendered page is the full run.

# %%
import time
import warnings

# No ipywidgets in a docs build: tqdm's notebook progress bar falls back to text.
warnings.filterwarnings("ignore", message="IProgress not found")

import _repo  # noqa: F401  (puts the repository root on sys.path for `models`)
import arviz as az
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt

import pymc_sparse as pms
from models._data import load_scotland
from models._examples import QUICK, sampling_budget

DRAWS, TUNE, CHAINS = sampling_budget(quick=(100, 100, 1), full=(1000, 1000, 2))

data = load_scotland("connected")
y, E, x = data["y"], data["E"], data["x"]
N = data["n"]
logE = np.log(E)
adj_matrix = data["W"].toarray().astype("int32")  # the notebook's dense 0/1 matrix
print(f"N = {N} districts, {data['W'].nnz // 2} edges")


# %% [markdown]
# ## The notebook's models, with the CAR class as a parameter
#
# `car` is `pm.CAR` for the original and `pms.CAR` for the port; nothing else differs.


# %%
def car_model(car, alpha_prior: bool) -> pm.Model:
    with pm.Model(coords={"area_idx": np.arange(N)}) as model:
        beta0 = pm.Normal("beta0", mu=0.0, tau=1.0e-5)
        beta1 = pm.Normal("beta1", mu=0.0, tau=1.0e-5)
        tau_ind = pm.Gamma("tau_ind", alpha=3.2761, beta=1.81)
        tau_spat = pm.Gamma("tau_spat", alpha=1.0, beta=1.0)
        alpha = pm.Beta("alpha", alpha=1, beta=1) if alpha_prior else 0.95
        theta = pm.Normal("theta", mu=0, tau=tau_ind, dims="area_idx")
        phi = car("phi", mu=np.zeros(N), tau=tau_spat, alpha=alpha, W=adj_matrix, dims="area_idx")
        mu = pm.Deterministic("mu", pt.exp(logE + beta0 + beta1 * x + theta + phi), dims="area_idx")
        pm.Poisson("y_i", mu=mu, observed=y, dims="area_idx")
    return model


IMPLEMENTATIONS = {"pm.CAR": pm.CAR, "pms.CAR": pms.CAR}
fits, seconds = {}, {}
# Quick mode fits the alpha-random pair only (compilation dominates a short run).
for alpha_prior in (True,) if QUICK else (False, True):
    for label, car in IMPLEMENTATIONS.items():
        model = car_model(car, alpha_prior)
        start = time.perf_counter()
        with model:
            fits[label, alpha_prior] = pm.sample(
                DRAWS, tune=TUNE, chains=CHAINS, random_seed=8927, progressbar=False
            )
        seconds[label, alpha_prior] = time.perf_counter() - start
print({f"{k[0]}, alpha {'random' if k[1] else 'fixed'}": f"{v:.0f} s" for k, v in seconds.items()})

# %% [markdown]
# ## Side by side
#
# Posterior means and standard deviations of the parameters, for the original and the
# port. The Monte Carlo standard errors (`mcse`) say how far apart two correct runs may
# be; the two implementations target the same posterior (their log-densities differ only
# by a constant, {doc}`../migration`).

# %%
VARS = ["beta0", "beta1", "tau_ind", "tau_spat", "alpha"]
rows = []
for (label, alpha_prior), idata in fits.items():
    names = [v for v in VARS if v in idata.posterior]
    summ = az.summary(idata, var_names=names, kind="all")
    for v in names:
        rows.append(
            {
                "model": "alpha ~ Beta(1, 1)" if alpha_prior else "alpha = 0.95",
                "parameter": v,
                "implementation": label,
                "mean": summ.loc[v, "mean"],
                "sd": summ.loc[v, "sd"],
                "mcse": summ.loc[v, "mcse_mean"],
                "r_hat": summ.loc[v, "r_hat"],
            }
        )
table = pd.DataFrame(rows).pivot_table(
    index=["model", "parameter"], columns="implementation", values=["mean", "sd", "mcse"]
)
table.round(3)

# %%
# The two implementations agree within Monte Carlo error (a generous 5 combined MCSE plus
# 10% of a posterior sd, so that a correct run never fails the documentation build).
for (model_name, param), row in table.iterrows():
    gap = abs(row["mean", "pm.CAR"] - row["mean", "pms.CAR"])
    tol = 5 * np.hypot(row["mcse", "pm.CAR"], row["mcse", "pms.CAR"]) + 0.1 * row["sd", "pm.CAR"]
    status = "ok" if gap <= tol else "DIFFERENT"
    print(f"{model_name:>20} {param:>9}: |difference| {gap:.3f}  tolerance {tol:.3f}  {status}")
    if not QUICK:
        assert gap <= tol, (model_name, param)

# %% [markdown]
# The notebook's two statements hold for both implementations: with $\alpha$ free its
# posterior is close to 1, and the spatial terms move $\beta_1$ (the AFF effect) towards
# zero compared with the fixed-$\alpha$ model's estimate.

# %%
for label in IMPLEMENTATIONS:
    a = fits[label, True].posterior["alpha"]
    print(
        f"{label}: posterior mean of alpha {float(a.mean()):.3f}, "
        f"P(alpha > 0.8) = {float((a > 0.8).mean()):.2f}"
    )

fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for ax, var in zip(axes, ["beta1", "alpha"]):
    for (label, alpha_prior), idata in fits.items():
        if var in idata.posterior and (var != "beta1" or alpha_prior):
            az.plot_kde(idata.posterior[var].values.ravel(), ax=ax, label=label)
    ax.set_title(f"{var} (alpha random)")
    ax.legend()
fig.tight_layout()

# %% [markdown]
# ## Cost of one log-density and gradient
#
# At $n = 56$ either implementation is fast. `pms.CAR` (default `logdet="auto"`) builds a
# table of $\log\det(D - \alpha W)$ once and evaluates it in $O(1)$; `logdet="exact"`
# factorises at each evaluation; `pm.CAR` computes dense eigenvalues at each evaluation.
# The gap grows with $n$ (see {doc}`../migration`).


# %%
def seconds_per_gradient(model, repeats=200):
    f = model.compile_dlogp()
    point = model.initial_point()
    values = np.linspace(-2.0, 2.0, repeats)  # move alpha so that no cache answers
    f(point)
    start = time.perf_counter()
    for v in values:
        f({**point, "alpha_logodds__": np.asarray(v)})
    return (time.perf_counter() - start) / repeats


def exact_car(*args, **kwargs):
    return pms.CAR(*args, logdet="exact", **kwargs)


timing = {
    "pm.CAR": seconds_per_gradient(car_model(pm.CAR, True)),
    'pms.CAR, logdet="auto"': seconds_per_gradient(car_model(pms.CAR, True)),
}
if not QUICK:
    timing['pms.CAR, logdet="exact"'] = seconds_per_gradient(car_model(exact_car, True))
for k, v in timing.items():
    print(f"{k:>24}: {1e3 * v:.3f} ms per log-density gradient (whole model)")
