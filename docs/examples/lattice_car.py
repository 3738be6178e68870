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
# # Proper CAR with unknown $\alpha$ and $\tau$ on a lattice
#
# `models/lattice_car.py` ({doc}`../models`, model 4), used as it is: a field on an
# $n_x \times n_x$ rook lattice with a proper CAR prior whose dependence $\alpha$ and
# precision $\tau$ are both unknown, observed through Poisson counts,
#
# $$
# x \sim N\big(0, [\tau (D - \alpha W)]^{-1}\big), \quad
# y_i \sim \text{Poisson}\big(e^{\beta_0 + x_i}\big), \quad
# \alpha \sim U(0, 1),\ \tau \sim \text{Gamma}(2, 1),\ \beta_0 \sim N(0, 2).
# $$
#
# The data are simulated from the model itself (fixed seed) at $\alpha = 0.95$,
# $\tau = 2$, $\beta_0 = 0.5$.  Every $x_i$ is a parameter of the sampler.
#
# **Size.** This page samples a $64 \times 64$ lattice ($n = 4{,}096$, the module's
# default) so that the documentation builds in minutes.  The module itself takes
# `--n`: `python -m models.lattice_car --n 100000` builds and samples the same model on a
# $317 \times 317$ lattice ($n = 100{,}489$); {doc}`../models` reports what we measured
# at that size.  The last section below simulates and renders the $10^5$-site field.
#
# **Quick mode.** With `PYMC_SPARSE_EXAMPLES_QUICK=1` (continuous integration) the page
# samples fewer draws on the same lattice and prints a line saying so; the rendered page
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
from models.lattice_car import build_model, load_data, simulate_data

DRAWS, TUNE, CHAINS = sampling_budget(quick=(50, 100, 1), full=(300, 300, 2))

data = load_data(n=4096, likelihood="poisson")
nx = data["shape"][0]
truth = data["truth"]
print(
    f"lattice {nx} x {nx}: n = {nx * nx} sites, {data['W'].nnz // 2} edges; "
    f"truth alpha = {truth['alpha']}, tau = {truth['tau']}, beta0 = {truth['beta0']}"
)

# %% [markdown]
# ## The log-determinant: a certified table, checked against exact factorisations
#
# The only term of the CAR log-density that needs more than a sparse product is
# $\tfrac12\log\det(D - \alpha W)$.  `build_model(data, logdet="interpolated")` (the
# module's default for `main`, used below) takes it from a certified Chebyshev table in
# $\alpha$ (`pymc_sparse.logdet1d.table.car_logdet`, built once from a few dozen sparse
# factorisations, $O(1)$ per evaluation afterwards); the quadratic form stays exact.
# `build_model(data, logdet="exact")` uses `pms.CAR`, whose default `logdet="auto"`
# also tabulates a scalar $\alpha$ (pass `logdet="exact"` to `pms.CAR` for one
# factorisation and selected inverse per gradient).  Here the table and its derivative
# are compared with exact sparse Cholesky log-determinants at several $\alpha$:

# %%
import pytensor
import pytensor.tensor as pt

from pymc_sparse.distributions.car import car_logdet, car_structure

pattern, d_data, w_data = car_structure(data["W"])
a = pt.dscalar("alpha")
ld = {
    m: car_logdet(pattern, d_data, w_data, a, method=m, interval=(0.0, 1 - 1e-4))
    for m in ("interpolated", "exact")
}
f = {m: pytensor.function([a], [v, pytensor.grad(v, a)]) for m, v in ld.items()}
worst = 0.0
for alpha in (0.1, 0.5, 0.9, 0.95, 0.99):
    (v_t, g_t), (v_e, g_e) = f["interpolated"](alpha), f["exact"](alpha)
    worst = max(worst, abs(v_t - v_e))
    print(
        f"alpha {alpha:4.2f}: logdet table {v_t:14.8f}  exact {v_e:14.8f}  "
        f"d/dalpha table {g_t:11.5f}  exact {g_e:11.5f}"
    )
print(f"largest |table - exact| at these points: {worst:.1e}")
assert worst < 1e-6

# %% [markdown]
# ## Fit
#
# NUTS with the tabulated log-determinant (the module's default for `main`).  Two
# chains of 300 draws are short: the effective sample size of $\tau$ is small, see the
# table.  Longer runs: `python -m models.lattice_car --draws 1000 --tune 1000 --chains 4`.

# %%
model = build_model(data, logdet="interpolated")
t0 = time.perf_counter()
with model:
    idata = pm.sample(DRAWS, tune=TUNE, chains=CHAINS, random_seed=2026, progressbar=False)
print(f"sampling wall time {time.perf_counter() - t0:.0f} s")
names = ["alpha", "tau", "beta0"]
summary = az.summary(idata, var_names=names, round_to=3)
summary.insert(0, "truth", [truth[v] for v in names])
summary

# %%
az.plot_trace(idata, var_names=names, figsize=(10, 6), lines=[(v, {}, truth[v]) for v in names])
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The field as images
#
# The simulated field, the data (on a log scale) and the posterior mean and standard
# deviation of $x$.  With a Poisson mean around $e^{0.5}$ per site each count carries
# little information, so the posterior mean is a smoothed version of the truth.

# %%
post_x = idata.posterior["x"]
xm = post_x.mean(("chain", "draw")).values
xs = post_x.std(("chain", "draw")).values
err = xm - data["x"]
print(
    f"posterior mean field: rmse {np.sqrt(np.mean(err**2)):.3f} (sd of the true field "
    f"{np.std(data['x']):.3f}), correlation {np.corrcoef(xm, data['x'])[0, 1]:.3f}"
)
lim = np.abs(data["x"]).max()
panels = [
    ("simulated field x", data["x"], {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim}),
    ("data log(1 + y)", np.log1p(data["y"]), {"cmap": "viridis"}),
    ("posterior mean of x", xm, {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim}),
    ("posterior sd of x", xs, {"cmap": "magma"}),
]
fig, axes = plt.subplots(1, 4, figsize=(16, 4))
for ax, (title, img, kw) in zip(axes, panels, strict=True):
    im = ax.imshow(
        np.asarray(img, dtype=float).reshape(data["shape"]), interpolation="nearest", **kw
    )
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, shrink=0.8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The same prior at $n > 10^5$
#
# `simulate_data(n=100_000)` draws the field exactly from the CAR prior on a
# $317 \times 317$ lattice ($x = P^\top L^{-\top} z$ with the sparse Cholesky factor of
# the precision, Rue 2001).  `pm.CAR` could not even hold this prior: it stores $W$
# densely (80 GB).  The model on these data is `python -m models.lattice_car --n 100000`.

# %%
t0 = time.perf_counter()
big = simulate_data(n=100_000, likelihood="poisson")
nb = big["shape"][0]
print(
    f"{nb} x {nb} = {nb * nb:,} sites: one exact draw and the counts in "
    f"{time.perf_counter() - t0:.1f} s"
)
fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
lim_b = np.abs(big["x"]).max()
im0 = axes[0].imshow(big["x"].reshape(big["shape"]), cmap="RdBu_r", vmin=-lim_b, vmax=lim_b)
axes[0].set_title(f"simulated CAR field, n = {nb * nb:,}")
fig.colorbar(im0, ax=axes[0], shrink=0.8)
im1 = axes[1].imshow(np.log1p(big["y"]).reshape(big["shape"]), cmap="viridis")
axes[1].set_title("data log(1 + y)")
fig.colorbar(im1, ax=axes[1], shrink=0.8)
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
plt.tight_layout()
plt.show()
