"""Second-order correction of the Laplace log marginal against quadrature and dense S."""

from __future__ import annotations

import json
from itertools import product

import numpy as np
import pymc as pm
import pytest
import scipy.linalg as sla
import scipy.sparse as sp
from scipy.special import gammaln, logsumexp
from scipy.stats import halfnorm

from pymc_sparse.inference.laplace_grid import fit_laplace_grid, reweight_laplace
from pymc_sparse.inference.marginalize import marginalize_laplace
from pymc_sparse.linalg.laplace import laplace_posterior
from pymc_sparse.linalg.laplace.correction import (
    correction_dense,
    fourth_derivative,
    importance_reweight,
    second_order_correction,
)
from pymc_sparse.linalg.laplace.families import FAMILIES
from pymc_sparse.linalg.pattern import SparsityPattern
from tests.helpers import grid_laplacian


def _posterior(Q, A, y, off, C=None, family="poisson", params=None):
    pattern, q = SparsityPattern.from_scipy(sp.csc_matrix(Q))
    params = {"offset": off, **(params or {})}
    return laplace_posterior(pattern, q, 0.0, sp.csr_matrix(A), family, y, params, C)


def _dense_s(post, Q, A, C=None):
    """``S = A Sigma_c A'`` densely, from the posterior's W."""
    H = np.asarray(Q) + A.T @ (post.W[:, None] * A)
    sig = np.linalg.inv(H)
    if C is not None:
        U = sig @ C.T
        sig -= U @ np.linalg.solve(C @ U, U.T)
    return A @ sig @ A.T


def _exact_log_marginal(Q, A, y, off, C=None, nodes=40):
    r"""log of the integral of Poisson(y | exp(off + Ax)) N(x; 0, Q^-1) [Cx = 0].

    Gauss-Hermite in whitened coordinates of the constrained subspace x = B s around the
    mode of the integrand (its own dense Newton), so it shares no code with the package.
    """
    Q = np.asarray(Q, float)
    B = np.eye(Q.shape[0]) if C is None else sla.null_space(np.atleast_2d(C))
    P = B.T @ Q @ B  # precision of s (mean 0: conditioning a centred Gaussian on Cx = 0)
    AB = A @ B
    d = B.shape[1]

    def phi(S):  # (..., d) -> log p(y | Bs) - s'Ps/2
        eta = off + S @ AB.T
        return np.sum(y * eta - np.exp(eta) - gammaln(y + 1), axis=-1) - 0.5 * np.einsum(
            "...i,ij,...j->...", S, P, S
        )

    s = np.zeros(d)
    for _ in range(100):
        eta = off + AB @ s
        g = AB.T @ (y - np.exp(eta)) - P @ s
        Hs = P + AB.T @ (np.exp(eta)[:, None] * AB)
        s = s + np.linalg.solve(Hs, g)
    Lc = np.linalg.cholesky(np.linalg.inv(Hs))
    t, w = np.polynomial.hermite.hermgauss(nodes)
    t, lw = t * np.sqrt(2.0), np.log(w / np.sqrt(np.pi))
    T = np.array(list(product(t, repeat=d)))
    LW = np.sum(np.array(list(product(lw, repeat=d))), axis=1)
    vals = phi(s + T @ Lc.T) + 0.5 * np.sum(T * T, axis=1)
    log_int = logsumexp(vals + LW) + np.log(np.linalg.det(Lc)) + 0.5 * d * np.log(2 * np.pi)
    return log_int + 0.5 * np.linalg.slogdet(P)[1] - 0.5 * d * np.log(2 * np.pi)


@pytest.mark.parametrize("family", ["poisson", "binomial", "bernoulli", "negative_binomial"])
def test_fourth_derivative_matches_finite_differences(family, rng):
    fam = FAMILIES[family]
    eta = rng.normal(0.0, 1.0, 7)
    y = np.array([0, 1, 3, 0, 2, 1, 4], float)
    n = np.full(7, 5.0)
    phi = np.full(7, 2.5)
    if family == "bernoulli":
        y = np.minimum(y, 1.0)
    h = 1e-4
    d3 = lambda e: fam.derivs(y, e, n, phi)[3]  # noqa: E731
    fd = (d3(eta - 2 * h) - 8 * d3(eta - h) + 8 * d3(eta + h) - d3(eta + 2 * h)) / (12 * h)
    np.testing.assert_allclose(fourth_derivative(fam, y, eta, n, phi), fd, rtol=1e-7, atol=1e-9)
    assert np.all(fourth_derivative("normal", y, eta, n, phi) == 0.0)
    with pytest.raises(ValueError, match="No fourth derivative"):
        fourth_derivative("gamma", y, eta, n, phi)


CASES = {
    # 1 latent, 1 observation: zero count with expected count 1.
    "1d": (np.array([[1.0]]), np.array([[1.0]]), np.array([0.0]), np.array([0.0]), None),
    # 3 latent, 4 observations of random combinations, small counts.
    "3d": (
        np.array([[2.0, -0.5, 0.0], [-0.5, 2.0, -0.5], [0.0, -0.5, 1.5]]),
        np.array([[1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.0, 0.7, -0.4], [0.0, 0.0, 1.0]]),
        np.array([0.0, 1.0, 2.0, 0.0]),
        np.array([0.3, -0.2, 0.1, -0.5]),
        None,
    ),
    # 3 latent on a sum-to-zero plane, 3 observations.
    "3d_sum_to_zero": (
        np.array([[1.5, -0.5, 0.0], [-0.5, 1.5, -0.5], [0.0, -0.5, 1.5]]),
        np.eye(3),
        np.array([0.0, 1.0, 3.0]),
        np.array([-0.3, 0.0, 0.4]),
        np.ones((1, 3)),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_correction_reduces_the_error_against_quadrature(case):
    Q, A, y, off, C = CASES[case]
    post = _posterior(Q, A, y, off, C)
    exact = _exact_log_marginal(Q, A, y, off, C)
    eps = second_order_correction(post).value
    err0 = exact - post.log_marginal
    err1 = exact - (post.log_marginal + eps)
    assert abs(err0) > 2e-3  # the Laplace error is visible ...
    assert abs(err1) < 0.25 * abs(err0)  # ... and the correction removes most of it


@pytest.mark.parametrize("constrained", [False, True])
def test_sparse_equals_dense_when_the_factor_pattern_is_full(constrained, rng):
    n, m = 5, 7
    B = rng.normal(size=(n, n))
    Q = B @ B.T + n * np.eye(n)  # dense: the factor pattern holds every pair
    A = rng.normal(size=(m, n)) * (rng.random((m, n)) < 0.6)
    A[np.arange(m), rng.integers(0, n, m)] = 1.0  # no empty row
    y = rng.poisson(1.0, m).astype(float)
    C = np.ones((1, n)) if constrained else None
    post = _posterior(Q, A, y, rng.normal(0, 0.3, m), C)
    st = post._state
    c4 = fourth_derivative("poisson", y, post.eta, 1.0, 1.0)
    dense = correction_dense(st.d3, c4, _dense_s(post, Q, A, C))
    sparse = second_order_correction(post)
    assert sparse.n_pairs == m * (m - 1) // 2
    for term in ("quartic", "cross", "cube", "cube_diagonal", "value"):
        assert getattr(sparse, term) == pytest.approx(dense[term], rel=1e-9, abs=1e-12)


def test_lattice_truncation_is_small_and_diagonal_option(rng):
    # 8 x 8 lattice, identity design: the factor pattern covers the neighbours and fill.
    Q = grid_laplacian(8, shift=0.5).toarray()
    n = Q.shape[0]
    A = np.eye(n)
    y = rng.poisson(0.8, n).astype(float)
    post = _posterior(Q, A, y, np.zeros(n))
    c4 = fourth_derivative("poisson", y, post.eta, 1.0, 1.0)
    dense = correction_dense(post._state.d3, c4, _dense_s(post, Q, A))
    full = second_order_correction(post)
    diag = second_order_correction(post, pairs="diagonal")
    for term in ("quartic", "cross", "cube_diagonal"):
        assert getattr(full, term) == pytest.approx(dense[term], rel=1e-9)
    assert diag.cube == pytest.approx(dense["cube_diagonal"], rel=1e-9) and diag.n_pairs == 0
    off_dense = dense["cube"] - dense["cube_diagonal"]
    assert abs(off_dense) > 1e-3
    # Pairs off the factor pattern (beyond the fill) hold a few per cent of the off-diagonal part.
    assert abs(full.cube - dense["cube"]) < 0.1 * abs(off_dense)
    with pytest.raises(ValueError, match="pairs"):
        second_order_correction(post, pairs="all")


def test_importance_reweight(rng):
    vals = rng.normal(size=(50, 2))
    eps = rng.normal(0.0, 0.5, 50)
    means, ess = importance_reweight(vals, eps)
    w = np.exp(eps) / np.exp(eps).sum()
    np.testing.assert_allclose(means, w @ vals)
    assert ess == pytest.approx(1.0 / np.sum(w**2))
    assert importance_reweight(vals, np.zeros(50))[1] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="draws"):
        importance_reweight(vals, eps[:10])
    with pytest.raises(ValueError, match="finite"):
        importance_reweight(vals, np.full(50, np.nan))


def _iid_poisson(rng, n=30):
    y = rng.poisson(0.6 * np.exp(rng.normal(0.0, 1.0, n))).astype(float)
    with pm.Model() as model:
        sigma = pm.HalfNormal("sigma", 1.0)
        x = pm.Normal("x", 0.0, sigma, shape=n)
        pm.Poisson("y", mu=0.6 * pm.math.exp(x), observed=y)
    return model, y


def _exact_sigma_posterior(y):
    """Posterior mean of sigma: p(y | sigma) is a product of 1-D integrals."""
    t, w = np.polynomial.hermite.hermgauss(80)
    sig = np.linspace(0.01, 3.5, 2000)
    xs = np.sqrt(2.0) * sig[:, None] * t[None, :]  # (grid, nodes)
    lp = (
        y[:, None, None] * (np.log(0.6) + xs[None])
        - 0.6 * np.exp(xs[None])
        - gammaln(y + 1.0)[:, None, None]
    )
    ll = np.sum(logsumexp(lp + np.log(w / np.sqrt(np.pi)), axis=2), axis=0)
    lpost = ll + halfnorm.logpdf(sig)
    wt = np.exp(lpost - logsumexp(lpost))
    m = wt @ sig
    return m, np.sqrt(wt @ (sig - m) ** 2)


def test_grid_correction_moves_towards_the_exact_posterior(rng):
    model, y = _iid_poisson(rng)
    idata = fit_laplace_grid(
        marginalize_laplace(model, ["x"]), correction="second_order", seed=1, draws=10
    )
    attrs = idata.posterior.attrs
    m, sd = _exact_sigma_posterior(y)
    corrected = json.loads(attrs["grid_mean"])["sigma"]
    plain = json.loads(attrs["grid_mean_uncorrected"])["sigma"]
    assert abs(plain - m) > 0.02 * sd  # the Laplace marginal is visibly off here
    assert abs(corrected - m) < 0.6 * abs(plain - m)
    lo, hi = attrs["correction_range"]
    assert lo < hi
    # Importance reweighting of uncorrected draws lands on the corrected grid's mean.
    marginal = marginalize_laplace(model, ["x"])
    plain_draws = fit_laplace_grid(marginal, seed=2, draws=4000)
    rw = reweight_laplace(plain_draws, marginal)
    assert rw["mean"]["sigma"] == pytest.approx(corrected, abs=0.05 * sd)
    assert abs(rw["mean"]["sigma"] - m) < abs(rw["mean_uncorrected"]["sigma"] - m)
    assert 0.5 * rw["n_draws"] < rw["ess"] <= rw["n_draws"]


def test_grid_correction_needs_a_laplace_likelihood():
    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, 1.0)
        pm.Normal("y", mu, 1.0, observed=np.zeros(3))
    with pytest.raises(ValueError, match="LaplaceGMRF"):
        fit_laplace_grid(model, correction="second_order")
    with pytest.raises(ValueError, match="correction"):
        fit_laplace_grid(model, correction="third_order")


def test_sample_imh_targets_the_corrected_marginal(rng):
    """``sample_imh(correction=...)``: its log density is the Laplace value plus eps, exactly."""
    from pymc_sparse.inference.imh import sample_imh

    model, y = _iid_poisson(rng)
    marginal = marginalize_laplace(model, ["x"])
    idata = sample_imh(
        400,
        300,
        chains=2,
        model=marginal,
        random_seed=3,
        progressbar=False,
        correction="second_order",
    )
    lp = idata.sample_stats["lp"].values.ravel()
    sigma = idata.posterior["sigma"].values.ravel()
    plain = marginal.compile_logp()
    eps = reweight_laplace(idata, marginal)["log_correction"]
    for k in range(0, sigma.size, 97):
        ref = plain({"sigma_log__": np.log(sigma[k])}) + eps[k]
        assert lp[k] == pytest.approx(ref, rel=1e-9, abs=1e-9)
    m, sd = _exact_sigma_posterior(y)
    assert abs(sigma.mean() - m) < 0.15 * sd  # Monte Carlo error ~0.05 sd here
    with pytest.raises(ValueError, match="correction"):
        sample_imh(10, 20, model=marginal, correction="third_order")


@pytest.mark.parametrize("constrained", [False, True])
def test_covered_pairs_equal_dense_s(constrained, rng):
    """Each covered S_ij (the cached pair plan) equals the dense A Sigma_c A' entry."""
    from pymc_sparse.linalg.laplace.correction import _offdiagonal_s

    Q = grid_laplacian(6, shift=0.3).toarray()
    n = Q.shape[0]
    m = 30
    A = np.zeros((m, n))
    for r in range(m):  # two or three nodes per observation, as in a BYM2 design
        A[r, rng.choice(n, size=rng.integers(2, 4), replace=False)] = rng.normal(1.0, 0.3, 1)
    y = rng.poisson(1.5, m).astype(float)
    C = np.ones((1, n)) if constrained else None
    post = _posterior(Q, A, y, rng.normal(0, 0.3, m), C)
    S = _dense_s(post, Q, A, C)
    for _ in range(2):  # the second call reads the cached plan
        i, j, sij = _offdiagonal_s(post._state)
        assert i.size > 0 and np.all(i < j)
        np.testing.assert_allclose(sij, S[i, j], rtol=1e-10, atol=1e-12)
