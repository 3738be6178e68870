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
# # Integrating the latent field out: a Gaussian CAR lattice
#
# `models/lattice_gaussian_marginal.py`, used as it is: a proper CAR field on a
# $32 \times 32$ lattice observed with Gaussian noise at 90% of the sites,
#
# $$
# x \sim N\big(0, [\tau(D - \alpha W)]^{-1}\big), \qquad
# y_k \sim N(x_{s_k}, \sigma^2), \qquad
# \tau \sim \text{Gamma}(2, 1),\ \alpha \sim U(0, 1),\ \sigma \sim N^+(0, 1),
# $$
#
# simulated from the model (fixed seed) at $\tau = 1$, $\alpha = 0.99$, $\sigma = 0.3$.
# With `MarginalGMRFNormal` the 1,024 latent values are integrated out exactly
# (see {doc}`../marginal`): NUTS samples only $(\tau, \alpha, \sigma)$, and the field is
# recovered afterwards with `sample_latent`, exactly given each posterior draw.
#
# **Quick mode.** With `PYMC_SPARSE_EXAMPLES_QUICK=1` (continuous integration) the page
# samples fewer draws on the same lattice and prints a line saying so; the rendered page
# is the full run.

# %%
import warnings

# No ipywidgets in a docs build: tqdm's notebook progress bar falls back to text.
warnings.filterwarnings("ignore", message="IProgress not found")

import _repo  # noqa: F401  (puts the repository root on sys.path for `models`)
import arviz as az
import matplotlib.pyplot as plt
import numpy as np
import pymc as pm
from scipy.stats import multivariate_normal

from models._examples import QUICK, sampling_budget
from models.lattice_gaussian_marginal import build_model, load_data
from pymc_sparse.inference.latent import sample_latent

DRAWS, TUNE, CHAINS = sampling_budget(quick=(50, 75, 2), full=(500, 500, 2))

data = load_data()
n = data["W"].shape[0]
obs, y, truth = data["obs"], data["y"], data["truth"]
print(
    f"lattice {data['shape'][0]} x {data['shape'][1]}: n = {n}, {obs.size} observed "
    f"sites, {n - obs.size} missing; truth {truth}"
)

# %% [markdown]
# ## The marginal likelihood is the dense Gaussian one
#
# Integrating $x$ out gives $y \sim N\big(0,\ \sigma^2 I + A Q^{-1} A^\top\big)$, $A$ the
# rows of the identity at the observed sites.  `MarginalGMRFNormal` evaluates it with two
# sparse factorisations (of $Q$ and of $Q + \sigma^{-2}A^\top A$) and never forms that
# covariance; at $n = 1{,}024$ the dense formula is still affordable as a check:

# %%
model = build_model(data)  # formulation="marginal"
point = model.initial_point()
point.update(
    tau_log__=np.log(1.3), alpha_interval__=np.log(0.97 / 0.03), sigma_log__=np.log(0.35)
)  # tau = 1.3, alpha = 0.97, sigma = 0.35
loglik = model.compile_logp(vars=[model["y"]])(point)

W = data["W"].toarray()
Q = 1.3 * (np.diag(W.sum(axis=1)) - 0.97 * W)
cov = np.linalg.inv(Q)[np.ix_(obs, obs)] + 0.35**2 * np.eye(obs.size)
dense = multivariate_normal(np.zeros(obs.size), cov).logpdf(y)
print(
    f"log p(y | theta): sparse marginal {loglik:.8f}   dense {dense:.8f}   "
    f"diff {loglik - dense:.1e}"
)
assert np.isclose(loglik, dense, rtol=1e-10, atol=1e-8)

# %% [markdown]
# ## Hyperparameters
#
# Three parameters instead of 1,027: no funnel between the hyperparameters and $x$.
# Any divergences PyMC reports below concern the posterior of $(\tau, \alpha, \sigma)$
# alone, where the noise sd $\sigma$ and the small-scale variance of the field trade off;
# the run is short (2 x (500 + 500)), so read the ESS and $\hat R$ columns.

# %%
with model:
    idata = pm.sample(DRAWS, tune=TUNE, chains=CHAINS, random_seed=2026, progressbar=False)
names = ["tau", "alpha", "sigma"]
summary = az.summary(idata, var_names=names, round_to=3)
summary.insert(0, "truth", [truth[v] for v in names])
summary

# %%
az.plot_trace(idata, var_names=names, figsize=(10, 6), lines=[(v, {}, truth[v]) for v in names])
plt.tight_layout()
plt.show()

# %%
az.plot_pair(idata, var_names=["tau", "alpha"], kind="kde", figsize=(4.5, 4.5))
plt.show()

# %% [markdown]
# ## The same posterior without gradients: `sample_imh`
#
# Three hyperparameters are few enough for an independence sampler: `pms.sample_imh`
# fits a t-mixture proposal by importance sampling (it follows the long left tail of
# $\log\sigma$), then alternates an independence Metropolis-Hastings step with a
# random-walk step; both are exact. Each draw costs about 2.5 log-density evaluations
# and no gradient (see {doc}`../marginal` for the method and the 100x benchmark).

# %%
import time

import pymc_sparse as pms

t0 = time.perf_counter()
idata_imh = pms.sample_imh(
    2 * DRAWS,
    300 if QUICK else 1000,
    chains=CHAINS,
    model=model,
    random_seed=2026,
    progressbar=False,
)
t_imh = time.perf_counter() - t0
ess_nuts = az.ess(idata, var_names=names)
ess_imh = az.ess(idata_imh, var_names=names)
rows = [
    (
        v,
        float(idata.posterior[v].mean()),
        float(idata_imh.posterior[v].mean()),
        float(idata.posterior[v].std()),
        float(ess_nuts[v]),
        float(ess_imh[v]),
    )
    for v in names
]
acc = idata_imh.sample_stats.attrs
print(
    f"sample_imh: {t_imh:.1f} s, acceptance {acc['acceptance_rate']:.2f} (independence) / "
    f"{acc['acceptance_rate_rw']:.2f} (random walk)"
)
head = ["mean NUTS", "mean IMH", "sd NUTS", "ESS NUTS", "ESS IMH"]
print(f"{'':6s} " + " ".join(f"{h:>10s}" for h in head))
for v, m1, m2, sd, e1, e2 in rows:
    print(f"{v:6s} {m1:10.4f} {m2:10.4f} {sd:10.4f} {e1:10.0f} {e2:10.0f}")

# %% [markdown]
# ## Recovering the latent field
#
# For each retained draw of $\theta = (\tau, \alpha, \sigma)$, `sample_latent` factorises
# $Q_{\text{post}} = Q + \sigma^{-2}A^\top A$ once, takes the conditional mean by a solve,
# one exact draw of $x \mid \theta, y$, and the conditional variances by the selected
# inverse; the returned mean and sd average over $\theta$ (law of total variance).
# Missing sites are predicted from their neighbours.

# %%
latent = sample_latent(
    idata, model, "y", name="x", thin=max(1, DRAWS // 100), seed=2, progressbar=False
)
x_mean, x_sd = latent["x_mean"].values, latent["x_sd"].values
err = x_mean - data["x"]
cover = np.mean(np.abs(err) < 2 * x_sd)
missing = np.setdiff1d(np.arange(n), obs)
print(f"latent draws: {dict(latent['x'].sizes)}")
print(
    f"posterior mean vs true field: rmse {np.sqrt(np.mean(err**2)):.3f} "
    f"(noise sd {truth['sigma']}), at missing sites {np.sqrt(np.mean(err[missing] ** 2)):.3f}"
)
print(f"true value within 2 posterior sd: {cover:.1%} of the sites")

y_img = np.full(n, np.nan)
y_img[obs] = y
lim = np.abs(data["x"]).max()
panels = [
    ("true field x", data["x"], {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim}),
    ("data y (white: missing)", y_img, {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim}),
    ("posterior mean of x", x_mean, {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim}),
    ("posterior sd of x", x_sd, {"cmap": "magma"}),
]
fig, axes = plt.subplots(1, 4, figsize=(16, 4))
for ax, (title, img, kw) in zip(axes, panels, strict=True):
    im = ax.imshow(np.asarray(img).reshape(data["shape"]), interpolation="nearest", **kw)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, shrink=0.8)
plt.tight_layout()
plt.show()
