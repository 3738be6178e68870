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
# # BYM2 on a disconnected graph: the Scottish islands
#
# The model of {doc}`scotland_bym2` (same data, priors and likelihood) on the Stan
# "islands" adjacency: the 6 edges that join Orkney, Shetland and the Western Isles to
# the mainland are removed, leaving 126 edges and **four connected components**, the
# mainland (53 districts) and three districts without neighbours.  The model is
# `models/scotland_islands.py` ({doc}`../models`, model 2), used here as it is.
#
# `pms.BYM2` follows R-INLA on such a graph (Freni-Sterrantino et al. 2018):
#
# * the ICAR part $u$ has one hard sum-to-zero constraint **per connected component of
#   size at least 2**, here on the mainland only;
# * each component is scaled by its own factor $s_c$, the geometric mean of its
#   constrained ICAR marginal variances;
# * a district without neighbours has $u_i \sim N(0, 1)$ and $s = 1$, so its effect
#   $b_i = \sigma(\sqrt{\rho}\,u_i + \sqrt{1-\rho}\,v_i) \sim N(0, \sigma^2)$: no spatial
#   smoothing, the same marginal variance as every other district.
#
# `pm.ICAR` instead puts one soft constraint on the sum over all 56 districts.
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

import pymc_sparse as pms
from models._examples import sampling_budget
from models.scotland_islands import MAIN_VARS, build_model, describe_graph, load_data

DRAWS, TUNE, CHAINS = sampling_budget(quick=(100, 100, 2), full=(500, 500, 2))

data = load_data()
names = data["names"]
info = describe_graph(data)
print(
    f"islands graph: {data['W'].nnz // 2} edges, {info['n_components']} components of "
    f"sizes {sorted(info['sizes'].tolist(), reverse=True)}"
)

# %% [markdown]
# ## Per-component constraints and scaling
#
# `describe_graph` (from the model module) reports the components, the scaling factor
# each node gets (`pms.scaling_factor(W, per_node=True)`: one sparse factorisation and a
# selected inverse per component) and the number of free ICAR coordinates.  We check the
# mainland's factor against a dense generalised inverse of the mainland's ICAR structure
# matrix (fine for 53 nodes; the sparse computation is what runs at $10^5$).

# %%
labels, sizes, s_node = info["labels"], info["sizes"], info["scaling"]
mainland_label = int(np.argmax(sizes))
mainland = np.flatnonzero(labels == mainland_label)
for i in info["singletons"]:
    print(f"singleton {names[i]:<14s} scaling factor {s_node[i]:.4f}  (no neighbours)")
print(f"mainland ({mainland.size} districts): scaling factor {s_node[mainland[0]]:.6f}")
print(
    f"free ICAR coordinates: {info['free_icar']} of {data['n']} "
    f"({mainland.size} - 1 on the mainland + {info['singletons'].size} islands)"
)

Wm = data["W"][mainland][:, mainland].toarray()
R = np.diag(Wm.sum(axis=1)) - Wm  # ICAR structure matrix of the mainland
s_dense = np.exp(np.mean(np.log(np.diag(np.linalg.pinv(R)))))
s_exact = pms.scaling_factor(data["W"], per_node=True, method="exact")[mainland[0]]
print(
    f"mainland factor: sparse (R-INLA jitter) {s_node[mainland[0]]:.8f}, "
    f"sparse exact {s_exact:.8f}, dense pinv {s_dense:.8f}"
)
assert np.isclose(s_exact, s_dense, rtol=1e-8)
assert np.all(s_node[info["singletons"]] == 1.0)

# %% [markdown]
# ## Fit
# 2 chains x (500 + 500) draws keep the documentation build short; for inference run
# `python -m models.scotland_islands` (4 x (1000 + 1000)).

# %%
model = build_model(data)
with model:
    idata = pm.sample(DRAWS, tune=TUNE, chains=CHAINS, random_seed=2026, progressbar=False)
az.summary(idata, var_names=MAIN_VARS, round_to=3)

# %%
az.plot_trace(idata, var_names=MAIN_VARS, figsize=(10, 7))
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The constraint holds per component
#
# In every draw the ICAR part sums to zero over the mainland (a hard constraint, to
# rounding), while its sum over all 56 districts moves freely with the three island
# values, which are unconstrained:

# %%
u = idata.posterior["b_u"]
island_names = [names[i] for i in info["singletons"]]
mainland_names = [names[i] for i in mainland]
sum_mainland = np.abs(u.sel(area=mainland_names).sum("area")).max().item()
sum_all = u.sum("area")
print(f"max |sum of u over the mainland| over all draws: {sum_mainland:.1e}")
print(f"sum of u over all 56 districts: posterior sd {sum_all.std().item():.3f}")
print(az.summary(idata, var_names=["b_u"], coords={"area": island_names}, kind="stats"))
assert sum_mainland < 1e-10

# %% [markdown]
# ## Island relative risks
#
# Without neighbours, an island's relative risk is informed only by its own counts, the
# covariate and the shared $\sigma$: the intervals are wide.  The forest plot shows the
# three islands next to three mainland districts.

# %%
shown = island_names + mainland_names[:3]
print(az.summary(idata, var_names=["rr"], coords={"area": shown}, kind="stats"))
az.plot_forest(
    idata, var_names=["rr"], coords={"area": shown}, combined=True, hdi_prob=0.9, figsize=(6, 3.5)
)
plt.title("posterior relative risk, 90% HDI")
plt.show()
