# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Integrating a BYM2 field out: Scottish lip cancer with a Laplace marginal
#
# `models/scotland_bym2.py`, used as it is (BYM2 Poisson regression on 56 districts,
# {doc}`scotland_bym2`), and transformed by `pms.marginalize_laplace`: the 112 latent
# values of the BYM2 effect (ICAR `b_u` with an exact sum-to-zero constraint, iid `b_v`)
# are integrated out by a sparse Laplace approximation ({doc}`../theory/laplace`), NUTS
# samples the four hyperparameters, and the field comes back with `pms.sample_latent`.
# We then check the approximation against the model with the field sampled
# (`pms.check_laplace`, the `tmbstan` idea) and integrate the hyperparameters on an
# INLA-style grid instead of MCMC.
#
# **Quick mode.** With `PYMC_SPARSE_EXAMPLES_QUICK=1` (continuous integration) the page
# samples far fewer draws and prints a line saying so; the rendered page is the full run.

# %%
import warnings

# No ipywidgets in a docs build: tqdm's notebook progress bar falls back to text.
warnings.filterwarnings("ignore", message="IProgress not found")

import json

import _repo  # noqa: F401  (puts the repository root on sys.path for `models`)
import arviz as az
import matplotlib.pyplot as plt
import pymc as pm

from models._examples import QUICK, sampling_budget
from models.scotland_bym2 import MAIN_VARS, PUBLISHED_STAN, build_model, load_data
from pymc_sparse.inference.laplace_check import check_laplace
from pymc_sparse.inference.laplace_grid import fit_laplace_grid
from pymc_sparse.inference.latent import sample_latent
from pymc_sparse.inference.marginalize import marginalize_laplace

DRAWS, TUNE, CHAINS = sampling_budget(quick=(15, 25, 1), full=(500, 500, 2))

data = load_data()
model = build_model(data)
marginal = marginalize_laplace(model, ["b"])
print("free variables left:", [v.name for v in marginal.free_RVs])
print("likelihood:", marginal["y"].owner.op)
print("dropped (recomputed by sample_latent):", marginal._pms_laplace.dropped)

# %% [markdown]
# ## NUTS on the hyperparameters
#
# Each log-density evaluation solves for the mode of the field by Newton's method (warm
# started from the last mode) and returns the Laplace approximation of
# $\log p(y \mid \beta, \sigma, \rho)$ with its exact gradient.

# %%
with marginal:
    idata = pm.sample(DRAWS, tune=TUNE, chains=CHAINS, random_seed=2026, progressbar=False)
summary = az.summary(idata, var_names=MAIN_VARS, round_to=3)
summary["Stan (field sampled)"] = [f"{PUBLISHED_STAN[k][0]:+.3f}" for k in summary.index]
summary

# %% [markdown]
# ## The field and the relative risks
#
# `sample_latent` returns `b_u`, `b_v` under their names, and recomputes the model's
# Deterministics `b` and `rr` from them.  With `importance=True` every draw is corrected
# by importance sampling from the Gaussian approximation; the relative effective sample
# size is close to 1 where the Gaussian is good.

# %%
latent = sample_latent(
    idata, marginal, thin=5, importance=True, n_importance=50, seed=1, progressbar=False
)
print(
    f"importance ESS / draws: min {latent.attrs['is_ess_min']:.2f}, "
    f"median {latent.attrs['is_ess_median']:.2f}"
)
rr = latent["rr"].mean(("chain", "draw")).values
smr = data["y"] / data["E"]
fig, ax = plt.subplots(figsize=(5, 4))
ax.scatter(smr, rr, s=12)
top = max(smr.max(), rr.max()) * 1.05
ax.plot([0, top], [0, top], "k--", lw=0.8)
ax.set_xlabel("SMR = observed / expected")
ax.set_ylabel("posterior mean relative risk (Laplace)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Is the approximation good enough here?
#
# `check_laplace` fits the model twice, with the field sampled by NUTS and with it
# integrated out, and reports the differences of posterior means in units of the
# field-sampled posterior sd, next to the Monte Carlo noise expected in that difference.

# %%
# In quick mode the Laplace side uses the grid (below), which is cheaper than a second NUTS run.
method = "grid" if QUICK else "nuts"
check = check_laplace(model, ["b"], draws=DRAWS, tune=TUNE, chains=CHAINS, method=method, seed=3)
check.hyper[["mean_sampled", "mean_laplace", "diff_sd", "sd_ratio", "mc_noise_sd"]].round(3)

# %%
check.latent.round(3)

# %% [markdown]
# ## The hyperparameters on a grid (no MCMC)
#
# As R-INLA does: the posterior mode and Hessian of the four hyperparameters in PyMC's
# unconstrained space, then a grid of Laplace marginals in standardised coordinates.

# %%
grid = fit_laplace_grid(marginal, draws=2000, seed=4)
attrs = grid.posterior.attrs
means, sds = json.loads(attrs["grid_mean"]), json.loads(attrs["grid_sd"])
print(f"{attrs['n_points']} grid points, {attrs['n_evaluations']} evaluations")
for k in MAIN_VARS:
    nuts = idata.posterior[k]
    d = (means[k] - float(nuts.mean())) / float(nuts.std())
    print(
        f"{k:6s} grid {means[k]:+.3f} +- {sds[k]:.3f}   NUTS {float(nuts.mean()):+.3f}: {d:+.2f} sd"
    )
if not QUICK:  # the grid and NUTS agree (the full run; quick mode is a smoke test)
    assert all(abs(means[k] - float(idata.posterior[k].mean())) < 0.25 * sds[k] for k in MAIN_VARS)
