# %% [markdown]
# # Samplers, backends and the shared factor cache
#
# One proper-CAR model on the Scottish lip cancer graph, sampled with PyMC's own NUTS
# (PyTensor C backend) and with numpyro (the JAX backend: our Ops run as
# `jax.pure_callback` inside `jax.custom_jvp` rules). Then a look at the factor cache:
# a log-density and its gradient at one point cost one sparse factorisation.

# %%
import warnings

# No ipywidgets in a docs build: tqdm's notebook progress bar falls back to text.
warnings.filterwarnings("ignore", message="IProgress not found")

import _repo  # noqa: F401  (puts the repository root on sys.path for `models`)
import arviz as az
import numpy as np
import pymc as pm

import pymc_sparse as pms
from models._data import load_scotland
from models._examples import sampling_budget

# Quick mode (CI smoke runs, PYMC_SPARSE_EXAMPLES_QUICK=1): fewer draws, said below.
DRAWS, TUNE, CHAINS = sampling_budget(quick=(100, 100, 2), full=(500, 500, 2))

data = load_scotland()
W = data["W"]


def build(logdet="exact"):
    with pm.Model() as model:
        beta0 = pm.Normal("beta0", 0, 1)
        alpha = pm.Beta("alpha", 2, 2)
        tau = pm.Gamma("tau", 2, 1)
        phi = pms.CAR("phi", mu=0.0, W=W, alpha=alpha, tau=tau, logdet=logdet)
        pm.Poisson("y", mu=data["E"] * pm.math.exp(beta0 + phi), observed=data["y"])
    return model


# %% [markdown]
# ## Two samplers, one posterior

# %%
runs = {}
for sampler in ["pymc", "numpyro"]:
    with build():
        runs[sampler] = pm.sample(
            DRAWS,
            tune=TUNE,
            chains=CHAINS,
            nuts_sampler=sampler,
            random_seed=1,
            progressbar=False,
        )
summ = {k: az.summary(v, var_names=["beta0", "alpha", "tau"]) for k, v in runs.items()}
diff = summ["numpyro"]["mean"] - summ["pymc"]["mean"]
mcse = np.sqrt(summ["numpyro"]["mcse_mean"] ** 2 + summ["pymc"]["mcse_mean"] ** 2)
print(summ["pymc"][["mean", "sd", "ess_bulk", "r_hat"]])
print("difference of posterior means in posterior sd:\n", (diff / summ["pymc"]["sd"]).round(3))
print("... and in Monte Carlo standard errors:\n", (diff / mcse).round(2))
assert np.all(np.abs(diff / mcse) < 4)  # agreement within Monte Carlo error

# %% [markdown]
# ## The factor cache
# `pms.cache_info()` counts symbolic analyses (once per sparsity pattern) and numeric
# factorisations (once per distinct matrix value). With `logdet="exact"` a
# log-density plus gradient at a new point costs exactly one factorisation: the
# gradient's selected inverse reuses the factor the value computed.

# %%
model = build("exact")
logp = model.compile_logp()
dlogp = model.compile_dlogp()
point = model.initial_point()
pms.clear_cache()
logp(point)
dlogp(point)
print(pms.cache_info())
assert pms.cache_info()["numeric"] == 1

# %% [markdown]
# The cache is a bounded LRU keyed by the pattern and a 128-bit digest of the values,
# guarded by locks (numpyro's `chain_method="parallel"` calls it from several threads;
# a second thread asking for a factorisation already in progress waits for it instead
# of repeating it) and reset in a child process after `fork` (PyMC's multiprocess
# sampling). With the default `logdet="auto"`, CAR evaluates $\log\det(D-\alpha W)$
# from a certified one-parameter table and factorises only while building it.
