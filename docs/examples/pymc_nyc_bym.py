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
# # PyMC's BYM notebook (NYC, nutpie), ported to `pymc_sparse`
#
# A port of the PyMC example *The Besag-York-Mollie Model for Spatial Data* (Daniel
# Saunders, pymc-examples, `examples/spatial/nyc_bym`): pedestrian injuries in 1,921 New
# York City census tracts, population as exposure, a BYM2 random effect written by hand
# from `pm.ICAR` and an iid normal, sampled with nutpie. The port replaces the hand-written
# effect (and its hand-written scaling factor) by one call,
#
# ```python
# b = pms.BYM2("b", W=W_nyc, sigma=sigma, rho=rho, dims="area_idx", u_name="phi", v_name="theta")
# ```
#
# which keeps the notebook's names `phi` and `theta` ({doc}`../migration`). We fit both
# versions here, side by side, with the notebook's priors and sampler.
#
# One difference in the *data*: the notebook's covariate, the social fragmentation index
# (`fragment_index` of pymc-examples' `nyc_traffic.csv`), is not among the bundled data
# (`models/data/SOURCE.md`; the counts, populations and the 5,461-edge graph are the same
# Stan case-study data), so both fits here drop `beta1` and keep the intercept. The
# original's published statements are: every $\hat R \le 1.03$, the posterior mean of
# $\rho$ "somewhere around 0.50" (with the covariate), and "the default sampler took
# roughly 12 minutes" against much less with nutpie.
#
# **Quick mode.** With `PYMC_SPARSE_EXAMPLES_QUICK=1` (continuous integration) the page
# samples a few draws with PyMC's own NUTS (nutpie's compilation alone takes minutes on a
# small machine) and prints a line saying so; the rendered page is the full nutpie run.

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
from models._data import load_nyc
from models._examples import QUICK, sampling_budget

DRAWS, TUNE, CHAINS = sampling_budget(quick=(30, 30, 1), full=(1000, 1000, 2))
SAMPLER = "pymc" if QUICK else "nutpie"

data = load_nyc()
W_nyc = data["W"].toarray()  # the notebook's dense adjacency
y, E = data["y"], data["E"]  # E: population, values below 10 set to 10 as in the notebook
log_E = np.log(E)
coords = {"area_idx": np.arange(data["n"])}
print(f"{data['n']} tracts, {data['W'].nnz // 2} edges, {int(y.sum()):,} injuries")

# %% [markdown]
# ## The scaling factor
#
# The notebook computes it with a jittered sparse solve against the identity (an
# $n \times n$ dense result) and a rank-one correction for the constraint. `pymc_sparse`
# computes R-INLA's recipe from the selected inverse of the sparse factor; the two agree.

# %%
s = pms.scaling_factor(data["W"])
print(f"scaling factor: {s:.6f}")

# %% [markdown]
# ## The two models


# %%
def notebook_model() -> pm.Model:
    """The notebook's BYM model (without the covariate), as written there."""
    with pm.Model(coords=coords) as model:
        beta0 = pm.Normal("beta0", 0, 1)
        theta = pm.Normal("theta", 0, 1, dims="area_idx")
        phi = pm.ICAR("phi", W=W_nyc, dims="area_idx")
        sigma = pm.HalfNormal("sigma", 1)
        rho = pm.Beta("rho", 0.5, 0.5)
        mixture = pm.Deterministic(
            "mixture", pt.sqrt(1 - rho) * theta + pt.sqrt(rho / s) * phi, dims="area_idx"
        )
        mu = pm.Deterministic("mu", pt.exp(log_E + beta0 + sigma * mixture), dims="area_idx")
        pm.Poisson("y_i", mu, observed=y)
    return model


def ported_model() -> pm.Model:
    """The same model with pms.BYM2, keeping the notebook's names phi and theta."""
    with pm.Model(coords=coords) as model:
        beta0 = pm.Normal("beta0", 0, 1)
        sigma = pm.HalfNormal("sigma", 1)
        rho = pm.Beta("rho", 0.5, 0.5)
        b = pms.BYM2(
            "b", W=W_nyc, sigma=sigma, rho=rho, dims="area_idx", u_name="phi", v_name="theta"
        )
        pm.Deterministic("mixture", b / sigma, dims="area_idx")
        mu = pm.Deterministic("mu", pt.exp(log_E + beta0 + b), dims="area_idx")
        pm.Poisson("y_i", mu, observed=y)
    return model


fits, seconds = {}, {}
for label, build in (("pm.ICAR (notebook)", notebook_model), ("pms.BYM2 (port)", ported_model)):
    model = build()
    start = time.perf_counter()
    with model:
        fits[label] = pm.sample(
            DRAWS,
            tune=TUNE,
            chains=CHAINS,
            nuts_sampler=SAMPLER,
            random_seed=8926,
            progressbar=False,
        )
    seconds[label] = time.perf_counter() - start
    print(f"{label}: {seconds[label]:.0f} s with {SAMPLER} (compilation included)")

# %% [markdown]
# ## Side by side
#
# Posterior summaries of the main parameters, the wall time of each fit, and effective
# samples per second of `sigma` and `rho` (the slowest-mixing parameters). The notebook's
# `pm.ICAR` has one *soft* sum-to-zero constraint and omits no term that matters here
# (`sigma` scales outside the ICAR), so both target the same posterior up to the
# constraint's softness; `pms.BYM2` samples $n - 1$ free ICAR coordinates under a hard
# constraint.

# %%
MAIN = ["beta0", "sigma", "rho"]
rows = []
for label, idata in fits.items():
    summ = az.summary(idata, var_names=MAIN)
    for v in MAIN:
        rows.append(
            {
                "implementation": label,
                "parameter": v,
                "mean": summ.loc[v, "mean"],
                "sd": summ.loc[v, "sd"],
                "ess_bulk": summ.loc[v, "ess_bulk"],
                "r_hat": summ.loc[v, "r_hat"],
                "ess_bulk per s": summ.loc[v, "ess_bulk"] / seconds[label],
            }
        )
table = pd.DataFrame(rows).set_index(["parameter", "implementation"]).sort_index()
table.round(3)

# %%
for label, idata in fits.items():
    rhat = az.summary(idata, kind="diagnostics")["r_hat"].to_numpy()
    print(f"{label}: parameters with r_hat > 1.03: {int(np.sum(rhat > 1.03))} of {rhat.size}")
    phi = idata.posterior["phi"].values
    print(f"   max |sum of phi| over draws: {np.abs(phi.sum(axis=-1)).max():.2e}")

# %% [markdown]
# `phi` sums to zero to rounding under `pms.BYM2` (hard constraint) and only
# approximately under `pm.ICAR` (soft constraint, standard deviation $0.001\,n \approx
# 1.9$ on the sum).
#
# On wall time: a log-density and gradient of the port costs less than the original's,
# but nutpie takes about 3x more leapfrog steps per draw on the hard constraint (a soft
# constraint's stiff sum direction makes its trajectories turn early; PyMC's own NUTS
# takes as many steps on both). So the same number of draws takes longer (1.5-1.9x the
# CPU time), and each draw carries more effective samples; per effective sample of
# `(beta0, sigma, rho)`, pooled over three seeds, the notebook with `pms.ICAR` swapped in
# cost 0.90-1.34x the original's CPU time and this port 0.99-1.42x (three runs). With
# `pm.ICAR`'s own soft constraint, `pms.ICAR("phi", W=W, zero_sum_stdev=0.001)`, the
# swapped notebook is `pm.ICAR`'s model on our kernels: 0.87-0.92x the original's CPU
# time at equal draws, 0.70-0.97x per effective draw ({doc}`../performance/small_n`,
# `benchmarks/small_n.py nutpie`).
#
# ## The notebook's counterfactual maps, with the same code
#
# The notebook draws posterior predictions with `pm.do(model, {"rho": 1.0})` (spatial
# effect only) and `{"rho": 0.0}` (unstructured only). Because `rho` is the user's own
# variable and `phi`/`theta`/`mixture` keep their names, the same calls work on the port.

# %%
preds = {}
for label, build in (("pm.ICAR (notebook)", notebook_model), ("pms.BYM2 (port)", ported_model)):
    with pm.do(build(), {"rho": 1.0}):
        pp = pm.sample_posterior_predictive(
            fits[label],
            var_names=["mu"],
            predictions=True,
            progressbar=False,
            random_seed=1,
        )
    preds[label] = pp.predictions["mu"].mean(dim=["chain", "draw"]).values

a, b = preds.values()
print(f"correlation of the two spatial-only predictions: {np.corrcoef(a, b)[0, 1]:.3f}")
fig, ax = plt.subplots(figsize=(4.5, 4.5))
ax.loglog(a, b, ".", alpha=0.4)
lims = [min(a.min(), b.min()), max(a.max(), b.max())]
ax.plot(lims, lims, "k-", lw=0.8)
ax.set_xlabel("pm.ICAR (notebook): mean prediction, rho = 1")
ax.set_ylabel("pms.BYM2 (port)")
fig.tight_layout()
