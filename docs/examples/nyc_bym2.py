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
# # BYM2 on 1,921 New York City census tracts
#
# The "bigger data" example of the Stan BYM2 case study (Morris et al. 2019):
# pedestrian and bicyclist injuries in 2001 per census tract, with the tract population
# as exposure, queen contiguity (5,461 edges, one connected component) and an intercept
# only,
#
# $$
# y_i \sim \text{Poisson}\big(E_i\, e^{\beta_0 + b_i}\big), \qquad
# b = \sigma\big(\sqrt{\rho/s}\,u + \sqrt{1-\rho}\,v\big),
# $$
#
# $\beta_0 \sim N(0, 1)$, $\sigma \sim N^+(0, 1)$, $\rho \sim \text{Beta}(0.5, 0.5)$.
# The model is `models/nyc_bym2.py` ({doc}`../models`, model 3), used as it is.  The data
# follow the case study in one respect a reader should know: a tract with fewer than
# 10 inhabitants gets the exposure $E_i = 10$ (21 tracts, 11 of them with none), because
# a zero exposure makes the log offset infinite; `data["pop"]` keeps the published
# populations.
#
# NUTS samples $1 + 2 + 1{,}920 + 1{,}921 = 3{,}844$ parameters; a log-density gradient is
# a sparse quadratic form over the edges (the ICAR's normalising constant is a number
# computed once from a sparse factorisation).
#
# **Quick mode.** With `PYMC_SPARSE_EXAMPLES_QUICK=1` (continuous integration) the page
# samples fewer draws and prints a line saying so; the rendered page is the full run.

# %%
import warnings

# No ipywidgets in a docs build: tqdm's notebook progress bar falls back to text.
warnings.filterwarnings("ignore", message="IProgress not found")

import _repo  # noqa: F401  (puts the repository root on sys.path for `models`)
import arviz as az
import matplotlib.pyplot as plt
import numpy as np
import pymc as pm

from models._examples import sampling_budget
from models.nyc_bym2 import MAIN_VARS, build_model, load_data

DRAWS, TUNE, CHAINS = sampling_budget(quick=(40, 80, 1), full=(300, 300, 2))

data = load_data()
y, E = data["y"], data["E"]
print(
    f"{data['n']} tracts, {data['W'].nnz // 2} edges, {int(y.sum()):,} injuries, "
    f"{int(data['pop'].sum()):,} inhabitants"
)
print(f"tracts with population < 10 (exposure set to 10): {int(np.sum(data['pop'] < 10))}")

# %% [markdown]
# ## Fit
#
# Two chains of 300 draws after 300 tuning steps keep the documentation build within
# minutes.  **This is not enough for inference**: in such runs `sigma` and `rho` have
# $\hat R > 1.01$ and small effective sample sizes (see the table printed below and
# {doc}`../models`).  For inference run
# `python -m models.nyc_bym2 --draws 1000 --tune 1000 --chains 4`.

# %%
model = build_model(data)
with model:
    idata = pm.sample(DRAWS, tune=TUNE, chains=CHAINS, random_seed=2026, progressbar=False)
az.summary(idata, var_names=MAIN_VARS, round_to=3)

# %%
az.plot_trace(idata, var_names=MAIN_VARS, figsize=(10, 6))
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Fixed effects
#
# $e^{\beta_0}$ is the injury rate per inhabitant of a tract with $b_i = 0$; the 15,490
# events over 7.07 million inhabitants give a crude rate of $e^{-6.1}$.  The forest plot
# shows the intercept and the two hyperparameters (separate axes: their scales differ).

# %%
print(f"crude log rate log(sum y / sum E) = {np.log(y.sum() / E.sum()):.3f}")
fig, axes = plt.subplots(1, 2, figsize=(10, 2.8))
az.plot_forest(idata, var_names=["beta0"], combined=True, hdi_prob=0.94, ax=axes[0])
az.plot_forest(idata, var_names=["sigma", "rho"], combined=True, hdi_prob=0.94, ax=axes[1])
axes[0].set_title("intercept (94% HDI)")
axes[1].set_title("BYM2 hyperparameters (94% HDI)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Posterior relative risks without a map
#
# The model's deterministic `rr` is $e^{\eta_i - \log E_i} = e^{\beta_0 + b_i}$: here
# $E_i$ is a population, so `rr` is a rate per inhabitant.  Divided by the city-wide
# crude rate $\sum y / \sum E$ (a constant) it becomes a relative risk against the city
# average, which is what is plotted: the 1,921 tracts sorted by posterior mean, with
# 90% intervals, and the raw ratio $(y_i / E_i) / (\sum y / \sum E)$ of the same tracts
# for comparison.

# %%
crude = y.sum() / E.sum()
rr = idata.posterior["rr"] / crude
mean = rr.mean(("chain", "draw")).values
lo, hi = rr.quantile([0.05, 0.95], dim=("chain", "draw")).values
order = np.argsort(mean)
smr = (y / E) / crude
rank = np.arange(mean.size)

# A log axis cannot show the raw ratio 0 of tracts without injuries: they are drawn as
# separate markers on a floor line below every other value.
floor = 0.5 * min(lo.min(), smr[smr > 0].min())
zero = smr[order] == 0
fig, ax = plt.subplots(figsize=(10, 4.5))
ax.fill_between(
    rank, lo[order], hi[order], color="C0", alpha=0.3, lw=0, label="90% posterior interval"
)
ax.plot(rank, mean[order], color="C0", lw=1.2, label="posterior mean")
ax.scatter(
    rank[~zero], smr[order][~zero], s=2, color="k", alpha=0.35, label="raw ratio (y/E) / crude rate"
)
ax.scatter(
    rank[zero],
    np.full(zero.sum(), floor),
    s=2,
    color="C3",
    alpha=0.5,
    label=f"raw ratio 0 (y = 0), drawn at {floor:.2g}",
)
ax.axhline(1.0, color="grey", lw=0.8, ls="--")
ax.set_yscale("log")
ax.set_xlabel("tract, sorted by posterior mean relative risk")
ax.set_ylabel("relative risk vs city average")
ax.legend(loc="upper left")
plt.show()
above = np.mean(lo > 1.0)
below = np.mean(hi < 1.0)
print(f"tracts whose 90% interval lies above the city average: {above:.1%}, below: {below:.1%}")
print(
    f"raw ratios that are 0 (no injury in 2001): {np.mean(y == 0):.1%}; "
    "the model pulls them towards their neighbours"
)
