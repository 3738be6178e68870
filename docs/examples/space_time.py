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
# # Space-time disease mapping with a Kronecker-structured precision
#
# `models/space_time.py` ({doc}`../models`, model 6), used through its `load_data` and
# `build_model` as they are: Poisson counts simulated from the model itself (fixed seed)
# for the 56 Scottish districts (Stan "connected" graph, their expected counts $E$) over
# $T$ years, with a latent space-time field whose precision is a Kronecker product of a
# temporal and a spatial precision (up to a scale),
#
# $$
# y_{it} \sim \text{Poisson}\big(E_i\, e^{\eta_{it}}\big), \qquad
# Q \propto Q_{\text{time}}(\rho) \otimes Q_{\text{space}}(\lambda)
# \quad (56T \times 56T),
# $$
#
# built symbolically with `pms.kron` from the package's precision builders.
# `SparseGMRF` evaluates $\log\det Q$ and its gradient with respect to the precision
# parameters from one sparse Cholesky factorisation of the $56T \times 56T$ matrix.  The
# exact model (priors, parameterisation, the effects it reports) is the module's
# docstring, printed in full below, so this page always describes the model it runs.
#
# **Quick mode.** With `PYMC_SPARSE_EXAMPLES_QUICK=1` (continuous integration) the page
# samples one short chain on the same data and prints a line saying so; the rendered page
# is the full run.

# %%
import time
import warnings

# No ipywidgets in a docs build: tqdm's notebook progress bar falls back to text.
warnings.filterwarnings("ignore", message="IProgress not found")

import _repo  # noqa: F401  (puts the repository root on sys.path for `models`)
import arviz as az
import matplotlib.pyplot as plt
import numpy as np
import pymc as pm

from models._examples import sampling_budget
from models.space_time import build_model, load_data

DRAWS, TUNE, CHAINS = sampling_budget(quick=(20, 40, 1), full=(200, 200, 2))

data = load_data()
T, n = np.shape(data["y"])
truth = data["truth"]
print(f"{n} districts x {T} years = {n * T} counts; space-time precision {n * T} x {n * T}")

# %% [markdown]
# ## The model
#
# The module's docstring (its references omitted), then the scalar free variables (the
# hyperparameters reported below) and the sampled fields.

# %%
import models.space_time

print(models.space_time.__doc__.split("References\n")[0].rstrip())

# %%
model = build_model(data)
hyper = [rv.name for rv in model.free_RVs if rv.type.ndim == 0]
fields = {
    rv.name: tuple(model.initial_point()[model.rvs_to_values[rv].name].shape)
    for rv in model.free_RVs
    if rv.type.ndim > 0
}
print("hyperparameters:", hyper)
print("latent fields (shape of the sampled value):", fields)
logp = model.compile_logp()(model.initial_point())
dlogp = model.compile_dlogp()(model.initial_point())
print(
    f"log-density at the initial point {logp:.3f}; gradient: {dlogp.size} entries, "
    f"all finite: {bool(np.all(np.isfinite(dlogp)))}"
)
assert np.isfinite(logp) and np.all(np.isfinite(dlogp))

# %% [markdown]
# ## Fit
#
# Two chains of 200 draws after 200 tuning steps keep the documentation build within its
# time limit (each gradient factorises the $56T \times 56T$ precision and takes its
# selected inverse).  **This is short**: read the ESS and $\hat R$ columns before using
# the numbers.  The module's own run is `python -m models.space_time` (see
# {doc}`../models`).

# %%
t0 = time.perf_counter()
with model:
    idata = pm.sample(DRAWS, tune=TUNE, chains=CHAINS, random_seed=2026, progressbar=False)
print(f"sampling wall time {time.perf_counter() - t0:.0f} s")
summary = az.summary(idata, var_names=hyper, round_to=3)
summary.insert(0, "truth", [truth.get(v, np.nan) for v in hyper])
summary

# %%
az.plot_trace(idata, var_names=hyper, figsize=(10, 2 * len(hyper)))
plt.tight_layout()
plt.show()

# %%
az.plot_forest(idata, var_names=hyper, combined=True, hdi_prob=0.9, figsize=(6, 4))
plt.title("hyperparameters, 90% HDI")
plt.show()

# %% [markdown]
# ## Effects against the truth
#
# The model reports a spatial effect $s$, a temporal effect $g$ and a space-time
# interaction $d$ (see the docstring above for their exact definition); the simulated
# values are known.  Below: the correlation of each posterior mean with the truth, the
# time effect $g$ with its 90% posterior band, and the posterior mean of $d$ against its
# true value.

# %%
post = idata.posterior
for name in ("s", "g", "d"):
    if name in post and name in truth:
        est = post[name].mean(("chain", "draw")).values
        corr = np.corrcoef(est.ravel(), np.ravel(truth[name]))[0, 1]
        print(f"{name}: correlation of posterior mean with the truth {corr:.3f}")

gq = post["g"].quantile([0.05, 0.5, 0.95], dim=("chain", "draw")).values
fig, ax = plt.subplots(1, 2, figsize=(11, 4))
ax[0].fill_between(range(T), gq[0], gq[2], alpha=0.3, label="90% interval")
ax[0].plot(range(T), gq[1], label="posterior median")
ax[0].plot(range(T), truth["g"], "k--", label="truth")
ax[0].set_xlabel("year")
ax[0].set_title("time effect g")
ax[0].legend()
dm = post["d"].mean(("chain", "draw")).values
ax[1].scatter(np.ravel(truth["d"]), dm.ravel(), s=6, alpha=0.5)
lim = np.abs(truth["d"]).max()
ax[1].plot([-lim, lim], [-lim, lim], "k:", lw=1)
ax[1].set_xlabel("true interaction d")
ax[1].set_ylabel("posterior mean")
ax[1].set_title("space-time interaction d")
plt.tight_layout()
plt.show()
