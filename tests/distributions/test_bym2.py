"""BYM2: structure, per-component scaling, prior covariance, R-INLA singleton convention, NUTS."""

import numpy as np
import pandas as pd
import pymc as pm
import pytest

from pymc_sparse.distributions.bym2 import BYM2
from pymc_sparse.distributions.icar import ICAR, ICARRV
from pymc_sparse.precision import connected_components, scaling_factor
from tests.gmrf_checks import (
    DATA,
    FAST,
    gaussian_pvalue,
    scotland_adjacency,
    whitener_from_covariance,
)


def laplacian(W):
    W = np.asarray(W.todense(), dtype=float)
    return np.diag(W.sum(1)) - W


def bym2_covariance(W, sigma, rho):
    """sigma^2 (rho S^-1/2 R^+ S^-1/2 + (1 - rho) I), R^+ per component, singletons 1."""
    R = laplacian(W)
    U = np.linalg.pinv(R)
    single = R.diagonal() == 0
    U[single, single] = 1.0
    s = scaling_factor(W, per_node=True)
    D = np.diag(1 / np.sqrt(s))
    return sigma**2 * (rho * D @ U @ D + (1 - rho) * np.eye(len(R)))


def test_structure_and_formula(rng):
    W = scotland_adjacency("islands")
    with pm.Model(coords={"area": range(56)}) as m:
        sigma = pm.HalfNormal("sigma", 1.0)
        rho = pm.Beta("rho", 2, 2)
        b = BYM2("b", W, sigma, rho, dims="area")
    assert isinstance(m["b_u"].owner.op, ICARRV)
    assert m.named_vars_to_dims["b"] == ("area",) and m.named_vars_to_dims["b_v"] == ("area",)
    point = m.initial_point()
    point["b_v"] = rng.normal(size=56)
    point["sigma_log__"] = np.log(0.7)
    point["rho_logodds__"] = np.log(0.3 / 0.7)
    outs = m.replace_rvs_by_values([b, m["b_u"], m["b_v"]])
    fn = m.compile_fn(outs, inputs=m.value_vars, mode=FAST, on_unused_input="ignore")
    bb, u, v = fn(point)
    s = scaling_factor(W, per_node=True)
    np.testing.assert_allclose(bb, 0.7 * (np.sqrt(0.3 / s) * u + np.sqrt(0.7) * v), rtol=1e-12)
    np.testing.assert_array_equal(s[[5, 7, 10]], 1.0)


def test_scaled_ICAR_has_unit_generalised_variance():
    W = scotland_adjacency("islands")
    _, labels = connected_components(W)
    var = np.diag(bym2_covariance(W, 1.0, 1.0))
    gm = np.exp(np.bincount(labels, weights=np.log(var)) / np.bincount(labels))
    np.testing.assert_allclose(gm, 1.0, rtol=1e-6)  # 1e-6: the recipe's jitter
    np.testing.assert_allclose(var[[5, 7, 10]], 1.0)  # singletons: N(0, sigma^2)


def test_prior_draws_covariance():
    """Prior draws of b pass the Gaussian test for the BYM2 covariance (p > 1e-3)."""
    W = scotland_adjacency("islands")
    sigma, rho = 1.5, 0.6
    with pm.Model() as m:
        BYM2("b", W, sigma, rho)
    assert pm.draw(m["b"], random_seed=0, mode=FAST).shape == (56,)
    # The same construction with a batch of 3000, drawn in one call.
    u = ICAR.dist(W=W, size=3000)
    v = pm.Normal.dist(0, 1, size=(3000, 56))
    s = scaling_factor(W, per_node=True)
    b = sigma * (np.sqrt(rho / s) * u + np.sqrt(1 - rho) * v)
    draws = pm.draw(b, random_seed=3, mode=FAST)
    S = bym2_covariance(W, sigma, rho)
    assert gaussian_pvalue(draws, 0.0, whitener_from_covariance(S)) > 1e-3
    assert gaussian_pvalue(draws, 0.0, whitener_from_covariance(1.15 * S)) < 1e-3


def test_bad_parameters():
    W = scotland_adjacency("connected")
    with pm.Model():
        with pytest.raises(ValueError, match=r"`rho` must lie in \[0, 1\], got 1.5"):
            BYM2("b", W, 1.0, 1.5)
        with pytest.raises(ValueError, match=r"`sigma` must be > 0, got 0.0"):
            BYM2("b", W, 0.0, 0.5)
        with pytest.raises(ValueError, match="negative weight"):
            BYM2("b", -W, 1.0, 0.5)


def lip_cancer_model(W):
    df = pd.read_csv(DATA / "scotland_lip_cancer.csv")
    with pm.Model() as m:
        beta0 = pm.Normal("beta0", 0, 1)
        beta1 = pm.Normal("beta1", 0, 1)
        sigma = pm.HalfNormal("sigma", 1.0)
        rho = pm.Beta("rho", 0.5, 0.5)
        b = BYM2("b", W, sigma, rho)
        eta = np.log(df["expected"].values) + beta0 + beta1 * df["x_aff_over_10"].values + b
        pm.Poisson("y", mu=pm.math.exp(eta), observed=df["observed"].values)
    return m


def test_nuts_short_lip_cancer():
    W = scotland_adjacency("connected")
    with lip_cancer_model(W):
        idata = pm.sample(
            draws=100,
            tune=150,
            chains=1,
            random_seed=6,
            progressbar=False,
            compute_convergence_checks=False,
        )
    post = idata.posterior
    assert np.abs(post["b_u"].values.sum(axis=-1)).max() < 1e-10
    assert np.all(np.isfinite(post["b"])) and float(post["sigma"].mean()) > 0


@pytest.mark.slow
def test_nuts_lip_cancer_converges():
    """4 chains x 1000: R-hat < 1.02; beta1 (AFF/10) clearly positive as in published fits."""
    import arviz as az

    W = scotland_adjacency("connected")
    with lip_cancer_model(W):
        idata = pm.sample(
            draws=1000, tune=1000, chains=4, cores=1, random_seed=7, progressbar=False
        )
    rhat = az.rhat(idata, var_names=["beta0", "beta1", "sigma", "rho"])
    assert all(float(rhat[v]) < 1.02 for v in rhat.data_vars)
    assert float(idata.posterior["beta1"].quantile(0.025)) > 0


def test_zero_sum_stdev_reaches_the_icar_component(rng):
    """zero_sum_stdev makes b_u pm.ICAR's soft-constrained field: no transform, same logp."""
    W = scotland_adjacency("connected")
    n = W.shape[0]
    with pm.Model() as m:
        BYM2("b", W, 0.8, 0.4, zero_sum_stdev=0.01)
    assert m["b_u"].owner.op.zero_sum_stdev == 0.01
    assert "b_u" in {v.name for v in m.value_vars}  # free in R^n: no zero-sum transform
    x = rng.normal(size=n)
    ours = m.compile_logp(vars=[m["b_u"]], mode=FAST)({"b_u": x, "b_v": np.zeros(n)})
    ref = pm.logp(ICAR.dist(W=W, zero_sum_stdev=0.01), x).eval(mode=FAST)
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    with pm.Model() as exact:
        BYM2("b", W, 0.8, 0.4)
    assert exact["b_u"].owner.op.zero_sum_stdev is None
