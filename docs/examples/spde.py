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
# # Matérn fields on a mesh: house prices in Ames, Iowa
#
# `models/spde_ames.py`: log price per square foot of 2,930 house sales in Ames, Iowa
# (2006-2010), with a Matérn $\nu = 1$ spatial field, a nugget and an intercept,
#
# $$
# y_k = b_0 + f(s_k) + e_k, \quad f \sim \text{Matérn}(\nu = 1, \rho, \sigma), \quad
# e_k \sim N(0, \sigma_e^2),
# $$
#
# with the PC prior $P(\rho < 0.3\,\text{km}) = 0.05$, $P(\sigma > 1) = 0.05$.  The field
# is the SPDE approximation on a triangle mesh (see {doc}`../spde`), integrated out with
# `MarginalGMRFNormal` through the projector $A$; NUTS samples four parameters.  On a
# subset of 400 sales the same model is fitted with `pm.gp.Marginal` and the exact Matérn
# $\nu = 1$ covariance, side by side.
#
# **Not executed by the documentation build** (its full run exceeded the build's 20-minute
# limit on 2 cores): run it with `PYTHONPATH=. python docs/examples/spde.py`.
#
# **Quick mode.** With `PYMC_SPARSE_EXAMPLES_QUICK=1` the page samples few draws and
# prints a line saying so; the rendered page is the full run.

# %%
import warnings

import _repo  # noqa: F401  (puts the repository root on sys.path for `models`)

warnings.filterwarnings("ignore", message="IProgress not found")

import time

import arviz as az
import matplotlib.pyplot as plt
import numpy as np
import pymc as pm
from matplotlib.path import Path
from scipy.sparse.linalg import spsolve
from scipy.stats import multivariate_normal

from models._examples import QUICK, sampling_budget
from models.spde_ames import build_gp_model, build_mesh, build_model, load_ames
from pymc_sparse.inference.latent import sample_latent
from pymc_sparse.linalg.cholmod import CACHE
from pymc_sparse.spde.mesh import mesh_from_points
from pymc_sparse.spde.precision import SPDEPrecision, kappa_tau, matern_correlation

DRAWS, TUNE, CHAINS = sampling_budget(quick=(30, 40, 1), full=(200, 200, 2))

data = load_ames()
t0 = time.perf_counter()
mesh = build_mesh(data["xy"])
print(f"{data['y'].size} sales; {mesh} built in {time.perf_counter() - t0:.1f} s")
print(f"smallest angle {mesh.angles().min():.1f} degrees")

fig, ax = plt.subplots(figsize=(6, 6))
ax.triplot(mesh.nodes[:, 0], mesh.nodes[:, 1], mesh.triangles, lw=0.2, color="0.5")
ax.plot(*data["xy"].T, ".", ms=1.5, color="C3")
ax.set_aspect("equal")
ax.set_xlabel("km east")
ax.set_ylabel("km north")
ax.set_title("mesh (grey) and sales (red)")
plt.show()

# %% [markdown]
# ## How close is the mesh field to the Matérn covariance?
#
# The covariance of the SPDE field between the centre node of a square and every other
# node, against the exact Matérn $\nu = 1$ covariance (range 1, $\sigma = 1$), for three
# mesh resolutions $h$ in the square and a coarse outer extension of three ranges:

# %%
square = np.array([[-1.0, -1], [1, -1], [1, 1], [-1, 1]])
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
r_grid = np.linspace(0, 1.5, 200)
axes[0].plot(r_grid, matern_correlation(r_grid, 1.0, 1.0), "k", lw=2, label="Matérn nu = 1")
for h in (0.2, 0.1, 0.05):
    msh = mesh_from_points(np.zeros((1, 2)), boundary=square, max_edge=(h, 0.35), extension=3.0)
    S = SPDEPrecision(msh, 2)
    i0 = int(np.argmin(np.linalg.norm(msh.nodes, axis=1)))
    e = np.zeros(msh.n)
    e[i0] = 1.0
    cov = CACHE.factor(S.pattern, S.values(*kappa_tau(1.0, 1.0, 2))).solve(e)
    r = np.linalg.norm(msh.nodes - msh.nodes[i0], axis=1)
    near = r <= 1.5
    order = np.argsort(r[near])
    axes[0].plot(r[near][order], cov[near][order], ".", ms=2, label=f"h = {h} (n = {msh.n})")
    err = np.abs(cov[near] - matern_correlation(r[near], 1.0, 1.0))
    axes[1].plot(r[near][order], err[order], ".", ms=2, label=f"h = {h}: max {err.max():.3f}")
axes[0].set_xlabel("distance / range")
axes[0].set_ylabel("covariance")
axes[0].legend()
axes[1].set_xlabel("distance / range")
axes[1].set_ylabel("|mesh - Matérn|")
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The marginal likelihood is the dense Gaussian one
#
# On 300 sales, `MarginalGMRFNormal` (sparse factorisations only) against
# $N(b_0, \sigma_e^2 I + A Q^{-1} A^\top)$ formed densely.  One evaluation needs no
# table: `logdet="exact"` factorises $G + \kappa^2 C$ instead (the fits below use the
# certified table, built once per mesh).

# %%
small = load_ames(300)
msh = build_mesh(small["xy"])
model_small = build_model(small, msh, logdet="exact")
point = model_small.initial_point()
loglik = model_small.compile_logp(vars=model_small.observed_RVs)(point)
rho = 1.0 / np.exp(point["field_inv_range_log__"])
sig, noise = np.exp(point["field_sigma_log__"]), np.exp(point["noise_log__"])
Q = SPDEPrecision(msh, 2).matrix(*kappa_tau(rho, sig, 2)).toarray()
A = msh.projector(small["xy"]).toarray()
cov = A @ np.linalg.solve(Q, A.T) + noise**2 * np.eye(A.shape[0])
dense = multivariate_normal(np.zeros(A.shape[0]), cov).logpdf(small["y"])
print(f"sparse {loglik:.8f}  dense {dense:.8f}  diff {loglik - dense:.1e}")
assert np.isclose(loglik, dense, rtol=1e-9)

# %% [markdown]
# ## Fit on all 2,930 sales

# %%
model = build_model(data, mesh)
t0 = time.perf_counter()
with model:
    idata = pm.sample(DRAWS, tune=TUNE, chains=CHAINS, random_seed=2026, progressbar=False)
t_spde = time.perf_counter() - t0
names = ["b0", "field_range", "field_sigma", "noise"]
print(f"SPDE, m = {data['y'].size}, n = {mesh.n}: {t_spde:.0f} s (table set-up included)")
az.summary(idata, var_names=names, round_to=3)

# %% [markdown]
# ## Prediction map with uncertainty
#
# `sample_latent` draws the nodal field given each retained posterior draw (exactly,
# one sparse factorisation each); a regular grid is projected with `mesh.projector`.
# The field's prior mean is the intercept (`mu=b0`), so the draws are of $b_0 + f$.

# %%
latent = sample_latent(
    idata, model, "y", name="x", thin=max(1, DRAWS // 50), seed=1, progressbar=False
)
draws = latent["x"].values.reshape(-1, mesh.n)
lo, hi = data["xy"].min(0), data["xy"].max(0)
gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 120), np.linspace(lo[1], hi[1], 120))
grid = np.column_stack([gx.ravel(), gy.ravel()])
in_region = Path(mesh.inner).contains_points(grid)  # the convex hull of the sales
Ag = mesh.projector(grid, outside="zero")
pred = Ag @ draws.T  # the latent field's prior mean is b0: x already includes it
pred[~in_region] = np.nan
mean, sd = pred.mean(1).reshape(gx.shape), pred.std(1).reshape(gx.shape)
fig, axes = plt.subplots(1, 2, figsize=(12, 5))
for ax, img, title, cmap in (
    (axes[0], mean, "posterior mean", "RdBu_r"),
    (axes[1], sd, "posterior sd", "magma"),
):
    im = ax.pcolormesh(gx, gy, img, cmap=cmap, shading="auto")
    ax.plot(*data["xy"].T, ".", ms=0.8, color="k")
    ax.set_title(f"{title} of b0 + f (centred log $/sq ft)")
    ax.set_aspect("equal")
    fig.colorbar(im, ax=ax, shrink=0.8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Side by side with `pm.gp.Marginal` on 150 sales
#
# `pm.gp` has Matérn 1/2, 3/2 and 5/2; the SPDE with $\alpha = 2$ is $\nu = 1$, so
# `models.spde_ames.Matern1` writes that covariance with SciPy's $K_1$ (and $K_0$ for the
# gradient).  Same priors, same data, a shorter run (the dense GP costs $O(m^3)$ per
# evaluation).  The SPDE model reuses the mesh of all sales (and so its table).  The
# predictive means at the sales are compared at the posterior means of the parameters, in
# units of the GP's predictive sd.

# %%
GP_DRAWS, GP_TUNE, GP_CHAINS = sampling_budget(quick=(20, 30, 1), full=(150, 150, 2))
sub = load_ames(100 if QUICK else 150)
results = {}
for label, mdl in (
    ("SPDE", build_model(sub, mesh)),
    ("pm.gp", build_gp_model(sub)),
):
    t0 = time.perf_counter()
    with mdl:
        idata_s = pm.sample(
            GP_DRAWS, tune=GP_TUNE, chains=GP_CHAINS, random_seed=7, progressbar=False
        )
    results[label] = (time.perf_counter() - t0, idata_s, mdl)
print(f"{'':10s}" + "".join(f"{v:>14s}" for v in names) + f"{'seconds':>10s}")
for label, (secs, idata_s, _) in results.items():
    row = "".join(
        f"{float(idata_s.posterior[v].mean()):8.3f}±{float(idata_s.posterior[v].std()):.3f}"
        for v in names
    )
    print(f"{label:10s}{row}{secs:10.0f}")

# %%
# Plug-in predictive mean and sd at the sales (the GP's posterior means of the parameters).
post = results["pm.gp"][1].posterior
theta = {v: float(post[v].mean()) for v in names}
gp_model = results["pm.gp"][2]
with gp_model:
    mu_gp, var_gp = gp_model.gp.predict(
        sub["xy"],
        point={
            "b0": theta["b0"],
            "field_inv_range": 1 / theta["field_range"],
            "field_range": theta["field_range"],
            "field_sigma": theta["field_sigma"],
            "noise": theta["noise"],
        },
        diag=True,
        pred_noise=False,
    )
S = SPDEPrecision(mesh, 2)
Q = S.matrix(*kappa_tau(theta["field_range"], theta["field_sigma"], 2))
A = mesh.projector(sub["xy"])
Qp = (Q + A.T @ A / theta["noise"] ** 2).tocsc()
x_mean = spsolve(Qp, A.T @ (sub["y"] - theta["b0"]) / theta["noise"] ** 2)
mu_spde = theta["b0"] + A @ x_mean
z = np.abs(mu_spde - mu_gp) / np.sqrt(var_gp)
print(
    f"|SPDE - GP| predictive mean / GP predictive sd: median {np.median(z):.3f}, max {z.max():.3f}"
)
