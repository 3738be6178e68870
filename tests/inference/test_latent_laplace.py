"""``sample_latent`` for a LaplaceGMRF likelihood (after ``marginalize_laplace``)."""

from __future__ import annotations

import arviz as az
import numpy as np
import pymc as pm
import pytest
import scipy.sparse as sp
from scipy.linalg import null_space

from pymc_sparse.distributions.gmrf import SparseGMRF
from pymc_sparse.inference.latent import sample_latent
from pymc_sparse.inference.marginalize import marginalize_laplace
from pymc_sparse.linalg.laplace.families import get_family
from pymc_sparse.precision.scaling import scaling_factor
from tests.inference.laplace_reference import dense_laplace
from tests.inference.test_marginalize import bym2_model, islands_adjacency


def posterior(chains: int, draws: int, **values) -> az.InferenceData:
    """A hand-made posterior: every draw at the same values."""
    post = {k: np.full((chains, draws, *np.shape(v)), v, dtype=float) for k, v in values.items()}
    return az.from_dict(posterior=post)


@pytest.fixture
def bym2_case(rng):
    W = islands_adjacency()
    n = W.shape[0]
    E = rng.uniform(2, 8, n)
    y = rng.poisson(4, n)
    return W, E, y, marginalize_laplace(bym2_model(W, y, E), "b")


def dense_bym2(W, E, y, beta0, sigma, rho):
    """Dense Laplace mode and constrained covariance of (b_u, b_v) given theta."""
    n = W.shape[0]
    s = scaling_factor(W, per_node=True)
    R = (sp.diags(np.asarray(W.sum(1)).ravel()) - W).toarray()
    R[-1, -1] = 1.0
    Q = sp.block_diag([R, np.eye(n)]).toarray()
    A = np.hstack([np.diag(sigma * np.sqrt(rho / s)), sigma * np.sqrt(1 - rho) * np.eye(n)])
    C = np.zeros((2, 2 * n))
    C[0, :9] = 1.0
    C[1, 9:11] = 1.0
    ones = np.ones(n)
    fam = get_family("poisson")
    _, mode, H = dense_laplace(Q, 0.0, A, fam, y, beta0 + np.log(E), ones, ones, C, True)
    B = null_space(C)
    cov = B @ np.linalg.solve(B.T @ H @ B, B.T)
    return mode, cov, s


def test_bym2_fields_and_deterministics_are_recovered(bym2_case):
    W, E, y, marginal = bym2_case
    n = W.shape[0]
    theta = {"beta0": 0.1, "sigma": 0.6, "rho": 0.7}
    ds = sample_latent(posterior(2, 50, **theta), marginal, seed=1, progressbar=False)
    mode, cov, s = dense_bym2(W, E, y, **theta)
    # One distinct theta: the mean is the mode and the sd the constrained marginal sd.
    np.testing.assert_allclose(ds["b_u_mean"], mode[:n], atol=1e-8)
    np.testing.assert_allclose(ds["b_v_mean"], mode[n:], atol=1e-8)
    np.testing.assert_allclose(ds["b_u_sd"], np.sqrt(np.diag(cov)[:n]), rtol=1e-8)
    u, v = ds["b_u"].values, ds["b_v"].values
    np.testing.assert_allclose(u[..., :9].sum(-1), 0.0, atol=1e-10)
    np.testing.assert_allclose(u[..., 9:11].sum(-1), 0.0, atol=1e-10)
    b = theta["sigma"] * (np.sqrt(theta["rho"] / s) * u + np.sqrt(1 - theta["rho"]) * v)
    np.testing.assert_allclose(ds["b"].values, b, rtol=1e-12)
    np.testing.assert_allclose(ds["rr"].values, np.exp(theta["beta0"] + b), rtol=1e-12)
    # 100 exact draws of N(mode, cov): their mean within 4.5 standard errors.
    z = (u.reshape(-1, n).mean(0) - mode[:n]) / np.sqrt(np.diag(cov)[:n] / 100)
    assert np.max(np.abs(z[:-1])) < 4.5


def test_rao_blackwell_over_several_draws(bym2_case):
    W, E, y, marginal = bym2_case
    n = W.shape[0]
    post = az.from_dict(
        posterior={
            "beta0": np.array([[0.1, -0.2]]),
            "sigma": np.array([[0.6, 0.9]]),
            "rho": np.array([[0.7, 0.3]]),
        }
    )
    ds = sample_latent(post, marginal, seed=1, progressbar=False)
    m1, c1, _ = dense_bym2(W, E, y, 0.1, 0.6, 0.7)
    m2, c2, _ = dense_bym2(W, E, y, -0.2, 0.9, 0.3)
    mean = 0.5 * (m1 + m2)
    var = 0.5 * (np.diag(c1) + np.diag(c2)) + 0.25 * (m1 - m2) ** 2
    np.testing.assert_allclose(ds["b_v_mean"], mean[n:], atol=1e-8)
    np.testing.assert_allclose(ds["b_v_sd"], np.sqrt(var[n:]), rtol=1e-7)


def test_importance_ess_is_one_for_gaussian_observations(rng):
    n = 8
    Q = (sp.diags(np.full(n, 2.2)) - sp.diags([np.ones(n - 1)] * 2, [-1, 1])).tocsc()
    with pm.Model() as model:
        s = pm.HalfNormal("s", 1.0)
        x = SparseGMRF("x", Q=Q)
        pm.Normal("y", mu=1.0 + x, sigma=s, observed=rng.normal(size=n))
    marginal = marginalize_laplace(model, "x")
    ds = sample_latent(
        posterior(1, 3, s=0.5), marginal, importance=True, n_importance=20, progressbar=False
    )
    np.testing.assert_allclose(ds["laplace_is_ess"], 1.0, rtol=1e-8)
    np.testing.assert_allclose(ds["laplace_log_ratio"], 0.0, atol=1e-8)
    # Exact conditional: x | y ~ N(H^-1 (s^-2 (y - 1)), H^-1), H = Q + I / s^2.
    y = marginal.rvs_to_values[marginal["y"]].data
    H = Q.toarray() + np.eye(n) / 0.25
    np.testing.assert_allclose(ds["x_mean"], np.linalg.solve(H, (y - 1.0) / 0.25), atol=1e-10)
    np.testing.assert_allclose(ds["x_sd"], np.sqrt(np.diag(np.linalg.inv(H))), rtol=1e-10)


def test_importance_flags_small_counts(bym2_case):
    _, _, _, marginal = bym2_case
    ds = sample_latent(
        posterior(1, 2, beta0=-3.0, sigma=2.0, rho=0.5),
        marginal,
        importance=True,
        n_importance=200,
        seed=2,
        progressbar=False,
    )
    ess = ds["laplace_is_ess"].values
    assert np.all((ess > 0) & (ess <= 1)) and ds.attrs["is_ess_min"] < 0.99
    assert {"b_u_is_mean", "b_v_is_mean", "laplace_log_ratio"} <= set(ds.data_vars)
