"""MarginalGMRFNormal (latent GMRF integrated out) and latent recovery, vs dense references."""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest
import scipy.sparse as sp
from scipy.stats import multivariate_normal

import pymc_sparse as pms
from pymc_sparse.distributions.marginal import (
    MarginalGMRFNormal,
    ObservationMatrix,
    marginal_gmrf_normal_logp,
)
from pymc_sparse.inference.latent import sample_latent
from pymc_sparse.ops.matrix import SparseMatrix
from tests.helpers import lattice_adjacency

NX, NY = 4, 5  # 20 nodes; the lattice precision has genuine Cholesky fill-in
N = NX * NY


def _W():
    return lattice_adjacency(NX, NY)


def _Q_dense(tau, alpha):
    W = _W()
    D = sp.diags(np.asarray(W.sum(axis=1)).ravel())
    return (tau * (D - alpha * W)).toarray()


def _design(kind, rng):
    if kind == "identity":
        return None, np.eye(N)
    if kind == "missing":
        obs = np.sort(rng.choice(N, 14, replace=False))
        A = sp.identity(N, format="csr")[obs]
        return A, A.toarray()
    if kind == "design":  # sparse design, more rows than nodes, 1-3 nonzeros per row
        m = 27
        rows, cols, vals = [], [], []
        for k in range(m):
            c = rng.choice(N, rng.integers(1, 4), replace=False)
            rows += [k] * c.size
            cols += list(c)
            vals += list(rng.normal(size=c.size))
        A = sp.csr_matrix((vals, (rows, cols)), shape=(m, N))
        return A, A.toarray()
    raise ValueError(kind)


def _symbolic_logp(A, m, hetero):
    tau = pt.dscalar("tau")
    alpha = pt.dscalar("alpha")
    sigma = pt.dvector("sigma") if hetero else pt.dscalar("sigma")
    mu = pt.dvector("mu")
    y = pt.dvector("y")
    W = _W()
    D = SparseMatrix.from_scipy(sp.diags(np.asarray(W.sum(axis=1)).ravel()))
    Q = tau * (D - alpha * SparseMatrix.from_scipy(W))
    design = ObservationMatrix(A, N)
    sig = sigma if hetero else pt.alloc(sigma, m)
    logp = marginal_gmrf_normal_logp(y, Q, mu, design, sig)
    return [tau, alpha, sigma, mu, y], logp


def _dense_logp(tau, alpha, sigma, mu, y, Ad):
    C = np.diag(np.broadcast_to(sigma, (Ad.shape[0],)) ** 2) + Ad @ np.linalg.solve(
        _Q_dense(tau, alpha), Ad.T
    )
    return multivariate_normal(Ad @ mu, C).logpdf(y)


@pytest.mark.parametrize("hetero", [False, True], ids=["sigma_scalar", "sigma_vector"])
@pytest.mark.parametrize("kind", ["identity", "missing", "design"])
def test_logp_and_gradient_match_dense(kind, hetero, rng):
    A, Ad = _design(kind, rng)
    m = Ad.shape[0]
    inputs, logp = _symbolic_logp(A, m, hetero)
    grads = pytensor.grad(logp, inputs[:4])
    f = pytensor.function(inputs, [logp, *grads])
    tau, alpha = 1.7, 0.8
    sigma = rng.uniform(0.3, 1.2, m) if hetero else 0.6
    mu = rng.normal(size=N)
    y = Ad @ mu + rng.normal(size=m)
    out = f(tau, alpha, sigma, mu, y)
    ref = _dense_logp(tau, alpha, sigma, mu, y, Ad)
    np.testing.assert_allclose(out[0], ref, rtol=1e-10)

    # Central differences of the dense reference in each parameter.
    point = [tau, alpha, sigma, mu]
    for i, g in enumerate(out[1:]):

        def fun(v, i=i):
            args = [*point]
            args[i] = v
            return _dense_logp(*args, y, Ad)

        np.testing.assert_allclose(g, _fd(fun, point[i]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sigma", [1e-3, 1e-6, 1e-9])
def test_logp_stays_accurate_as_sigma_goes_to_zero(sigma, rng):
    # The textbook r'Dr - c'Qpost^-1 c is a difference of O(1/sigma^2) numbers (its
    # rounding error is O(|r|^2) at sigma ~ 1e-8, and samplers exploring that tail then see
    # a spurious density); the implementation sums two non-negative terms instead.
    A, Ad = _design("missing", rng)
    m = Ad.shape[0]
    inputs, logp = _symbolic_logp(A, m, False)
    f = pytensor.function(inputs, logp)
    tau, alpha = 1.7, 0.8
    mu = rng.normal(size=N)
    y = Ad @ mu + rng.normal(size=m)
    ref = _dense_logp(tau, alpha, sigma, mu, y, Ad)
    np.testing.assert_allclose(f(tau, alpha, sigma, mu, y), ref, rtol=1e-9)


def _fd(fun, p, h=1e-6):
    p = np.asarray(p, dtype=float)
    out = np.empty(p.shape)
    for j in np.ndindex(p.shape):
        e = np.zeros(p.shape)
        e[j] = h
        out[j] = (fun(p + e) - fun(p - e)) / (2 * h)
    return out


def test_verify_grad_through_the_ops(rng):
    A, Ad = _design("missing", rng)
    m = Ad.shape[0]
    y = rng.normal(size=m)
    mu = rng.normal(size=N)

    def f(log_tau, logit_alpha, log_sigma):
        inputs, logp = _symbolic_logp(A, m, True)
        tau = pt.exp(log_tau)
        alpha = pt.sigmoid(logit_alpha)
        sigma = pt.exp(log_sigma)
        return pytensor.clone_replace(
            logp, dict(zip(inputs, [tau, alpha, sigma, pt.constant(mu), pt.constant(y)]))
        )

    pytensor.gradient.verify_grad(
        f,
        [np.array(0.3), np.array(1.2), rng.normal(-0.5, 0.2, m)],
        rng=np.random.default_rng(1),
        abs_tol=1e-6,
        rel_tol=1e-6,
    )


def _car_model(A, y, sigma_obs=None, mu=0.0):
    W = _W()
    D = SparseMatrix.from_scipy(sp.diags(np.asarray(W.sum(axis=1)).ravel()))
    with pm.Model() as model:
        tau = pm.Gamma("tau", 2.0, 1.0)
        alpha = pm.Uniform("alpha", 0.0, 1.0)
        sigma = pm.HalfNormal("sigma", 1.0) if sigma_obs is None else sigma_obs
        Q = tau * (D - alpha * SparseMatrix.from_scipy(W))
        MarginalGMRFNormal("y", Q=Q, mu=mu, A=A, sigma=sigma, observed=y)
    return model


def test_model_logp_dlogp_share_two_factorisations(rng):
    A, Ad = _design("missing", rng)
    y = rng.normal(size=Ad.shape[0])
    model = _car_model(A, y)
    f = model.logp_dlogp_function(ravel_inputs=True)
    f.set_extra_values({})
    x = np.array([0.2, 0.5, -0.4])
    pms.clear_cache()
    logp, grad = f(x)
    info = pms.cache_info()
    # One numeric factorisation of Q and one of Q_post serve logp, its gradient and the
    # gradient's extra solve.
    assert info["numeric"] == 2, info
    assert np.isfinite(logp) and np.all(np.isfinite(grad))
    # The model's logp matches the dense marginal plus the priors' terms.
    tau, alpha, sigma = np.exp(0.2), 1 / (1 + np.exp(-0.5)), np.exp(-0.4)
    lp_y = model.compile_logp(vars=[model["y"]], jacobian=False)(
        {"tau_log__": 0.2, "alpha_interval__": 0.5, "sigma_log__": -0.4}
    )
    ref = _dense_logp(tau, alpha, sigma, np.zeros(N), y, Ad)
    np.testing.assert_allclose(lp_y, ref, rtol=1e-10)


def test_not_positive_definite_gives_minus_inf(rng):
    A, _ = _design("identity", rng)
    inputs, logp = _symbolic_logp(A, N, False)
    f = pytensor.function(inputs, logp)
    y = rng.normal(size=N)
    assert f(1.0, 1.5, 0.5, np.zeros(N), y) == -np.inf  # alpha outside (-1, 1)
    assert f(-1.0, 0.5, 0.5, np.zeros(N), y) == -np.inf  # negative precision


def test_bad_input_raises():
    Q = sp.identity(N, format="csc") * 2.0
    with pytest.raises(ValueError, match="columns but the latent field"):
        MarginalGMRFNormal.dist(Q=Q, A=sp.identity(N + 1, format="csr"))
    with pytest.raises(ValueError, match="sigma"):
        MarginalGMRFNormal.dist(Q=Q, sigma=np.ones(N - 3))
    with pytest.raises(ValueError, match="mu"):
        MarginalGMRFNormal.dist(Q=Q, mu=np.ones(N + 2))
    with pytest.raises(TypeError, match=r"constant scipy\.sparse"):
        MarginalGMRFNormal.dist(Q=Q, A=pt.dmatrix("A"))


def test_random_draws_match_marginal_moments(rng):
    A, Ad = _design("design", rng)
    m = Ad.shape[0]
    sigma = rng.uniform(0.3, 1.0, m)
    mu = rng.normal(size=N)
    Qd = _Q_dense(1.5, 0.7)
    y = MarginalGMRFNormal.dist(Q=sp.csc_matrix(Qd), mu=mu, A=A, sigma=sigma)
    ndraw = 20000
    draws = pm.draw(y, ndraw, random_seed=3)
    assert draws.shape == (ndraw, m)
    C = np.diag(sigma**2) + Ad @ np.linalg.solve(Qd, Ad.T)
    z = (draws.mean(0) - Ad @ mu) / np.sqrt(np.diag(C) / ndraw)
    assert np.max(np.abs(z)) < 4.5
    S = np.cov(draws.T)
    se = np.sqrt((np.outer(np.diag(C), np.diag(C)) + C**2) / ndraw)
    assert np.max(np.abs(S - C) / se) < 5.0


def _dense_conditional(tau, alpha, sigma, mu, y, Ad):
    Qd = _Q_dense(tau, alpha)
    d = 1.0 / np.broadcast_to(sigma, (Ad.shape[0],)) ** 2
    Qp = Qd + Ad.T @ (d[:, None] * Ad)
    cov = np.linalg.inv(Qp)
    return cov @ (Qd @ mu + Ad.T @ (d * y)), cov


def _idata(tau, alpha, sigma=None):
    import arviz as az

    post = {"tau": np.asarray(tau, float), "alpha": np.asarray(alpha, float)}
    if sigma is not None:
        post["sigma"] = np.asarray(sigma, float)
    return az.from_dict(posterior=post)


@pytest.mark.parametrize("kind", ["missing", "design"])
def test_latent_draws_match_dense_conditional(kind, rng):
    A, Ad = _design(kind, rng)
    m = Ad.shape[0]
    sigma = rng.uniform(0.4, 1.0, m)  # heteroscedastic, fixed (not a random variable)
    mu = rng.normal(size=N)
    y = Ad @ mu + rng.normal(size=m)
    model = _car_model(A, y, sigma_obs=sigma, mu=mu)
    ndraw = 8000  # one theta repeated: the draws are iid from x | theta, y
    idata = _idata(np.full((2, ndraw // 2), 1.3), np.full((2, ndraw // 2), 0.85))
    ds = sample_latent(idata, model, "y", seed=11, progressbar=False, store_conditional=True)
    mean, cov = _dense_conditional(1.3, 0.85, sigma, mu, y, Ad)
    x = ds["x"].values.reshape(ndraw, N)
    # Exact quantities: the conditional mean and marginal sd of every draw.
    np.testing.assert_allclose(ds["x_cond_mean"].values[0, 0], mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ds["x_cond_sd"].values[1, -1], np.sqrt(np.diag(cov)), rtol=1e-9)
    np.testing.assert_allclose(ds["x_mean"].values, mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ds["x_sd"].values, np.sqrt(np.diag(cov)), rtol=1e-9)
    # Statistical: sample mean within 4.5 standard errors, covariance entries within 5.
    z = (x.mean(0) - mean) / np.sqrt(np.diag(cov) / ndraw)
    assert np.max(np.abs(z)) < 4.5
    se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / ndraw)
    assert np.max(np.abs(np.cov(x.T) - cov) / se) < 5.0


def test_latent_rao_blackwell_over_varying_theta(rng):
    A, Ad = _design("missing", rng)
    m = Ad.shape[0]
    y = rng.normal(size=m)
    model = _car_model(A, y)
    tau = rng.uniform(0.8, 2.5, (2, 5))
    alpha = rng.uniform(0.3, 0.95, (2, 5))
    sigma = rng.uniform(0.3, 1.0, (2, 5))
    ds = sample_latent(_idata(tau, alpha, sigma), model, progressbar=False, seed=0, thin=2)
    assert ds["x"].shape == (2, 3, N)
    means, variances = [], []
    for c in range(2):
        for d in range(0, 5, 2):
            mn, cv = _dense_conditional(tau[c, d], alpha[c, d], sigma[c, d], np.zeros(N), y, Ad)
            means.append(mn)
            variances.append(np.diag(cv))
    means = np.array(means)
    np.testing.assert_allclose(ds["x_mean"].values, means.mean(0), rtol=1e-9, atol=1e-12)
    total_var = np.mean(variances, axis=0) + means.var(axis=0)
    np.testing.assert_allclose(ds["x_sd"].values, np.sqrt(total_var), rtol=1e-9)


def test_sample_latent_rejects_other_variables(rng):
    with pm.Model() as model:
        pm.Normal("z", 0, 1, observed=np.zeros(3))
    with pytest.raises(ValueError, match="MarginalGMRFNormal"):
        sample_latent(_idata(np.ones((1, 2)), np.ones((1, 2))), model)
    with pytest.raises(TypeError, match="not a MarginalGMRFNormal"):
        sample_latent(_idata(np.ones((1, 2)), np.ones((1, 2))), model, "z")


def test_marginal_model_agrees_with_latent_model_on_joint(rng):
    """Integrating the sparse-latent joint by Laplace (exact here) recovers the marginal."""
    from models.lattice_gaussian_marginal import build_model, simulate_data

    data = simulate_data(5, seed=3)
    marg = build_model(data, "marginal")
    lat = build_model(data, "sparse_latent")
    point = {"tau_log__": 0.3, "alpha_interval__": 1.0, "sigma_log__": -0.5}
    lp_marg = marg.compile_logp()(point)
    # The joint is Gaussian in x: log p(y, theta) = log p(y, x, theta) - log p(x | y, theta),
    # evaluated at any x, e.g. the conditional mean.
    tau, alpha, sigma = np.exp(0.3), 1 / (1 + np.exp(-1.0)), np.exp(-0.5)
    W = data["W"].toarray()
    Qd = tau * (np.diag(W.sum(1)) - alpha * W)
    n = W.shape[0]
    Ad = np.eye(n)[data["obs"]]
    Qp = Qd + Ad.T @ Ad / sigma**2
    xm = np.linalg.solve(Qp, Ad.T @ data["y"] / sigma**2)
    lp_joint = lat.compile_logp()({**point, "x": xm})
    log_cond = 0.5 * np.linalg.slogdet(Qp)[1] - 0.5 * n * np.log(2 * np.pi)
    np.testing.assert_allclose(lp_marg, lp_joint - log_cond, rtol=1e-9)


@pytest.mark.slow
def test_model_samples_and_recovers_truth():
    from models.lattice_gaussian_marginal import build_model, simulate_data

    data = simulate_data(12, seed=5)
    model = build_model(data)
    with model:
        idata = pm.sample(300, tune=300, chains=2, cores=1, random_seed=1, progressbar=False)
    ds = sample_latent(idata, model, thin=10, progressbar=False, seed=1)
    err = ds["x_mean"].values - data["x"]
    assert np.mean(np.abs(err) < 2.5 * ds["x_sd"].values) > 0.85


def test_jax_backend_matches_c(rng):
    pytest.importorskip("jax")
    pytest.importorskip("pymc_sparse.dispatch.jax")
    A, Ad = _design("design", rng)
    m = Ad.shape[0]
    inputs, logp = _symbolic_logp(A, m, True)
    grads = pytensor.grad(logp, inputs[:4])
    args = (1.4, 0.75, rng.uniform(0.4, 1.0, m), rng.normal(size=N), rng.normal(size=m))
    ref = pytensor.function(inputs, [logp, *grads])(*args)
    out = pytensor.function(inputs, [logp, *grads], mode="JAX")(*args)
    for a, b in zip(out, ref, strict=True):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-9, atol=1e-10)


def _car_model_table(A, y):
    """The CAR model of _car_model with log det Q from the one-parameter table."""
    from pymc_sparse.logdet1d.families import car_logdet_family

    W = _W()
    n = W.shape[0]
    D = SparseMatrix.from_scipy(sp.diags(np.asarray(W.sum(axis=1)).ravel()))
    fam = car_logdet_family(W, (0.0, 1.0 - 1e-4))
    with pm.Model() as model:
        tau = pm.Gamma("tau", 2.0, 1.0)
        alpha = pm.Uniform("alpha", 0.0, 1.0)
        sigma = pm.HalfNormal("sigma", 1.0)
        Q = tau * (D - alpha * SparseMatrix.from_scipy(W))
        MarginalGMRFNormal(
            "y", Q=Q, A=A, sigma=sigma, logdet_Q=n * pt.log(tau) + fam(alpha), observed=y
        )
    return model


def test_given_logdet_equals_factorised_and_saves_a_factorisation(rng):
    A, Ad = _design("missing", rng)
    y = rng.normal(size=Ad.shape[0])
    exact, table = _car_model(A, y), _car_model_table(A, y)
    f_e = exact.logp_dlogp_function(ravel_inputs=True)
    f_t = table.logp_dlogp_function(ravel_inputs=True)
    for f in (f_e, f_t):
        f.set_extra_values({})
    for x in ([0.2, 0.5, -0.4], [-1.0, 2.0, 0.3], [0.7, -3.0, -1.2]):
        le, ge = f_e(np.array(x))
        pms.clear_cache()
        lt, gt = f_t(np.array(x))
        np.testing.assert_allclose(lt, le, rtol=0, atol=1e-9)
        np.testing.assert_allclose(gt, ge, rtol=1e-9, atol=1e-9)
        # Only Q_post is factorised now (the table replaces Q's factorisation).
        assert pms.cache_info()["numeric"] == 1


def test_given_logdet_must_be_scalar():
    W = _W()
    Q = SparseMatrix.from_scipy(sp.diags(np.asarray(W.sum(axis=1)).ravel()) - 0.5 * W)
    with pytest.raises(ValueError, match="logdet_Q"):
        MarginalGMRFNormal.dist(Q=Q, logdet_Q=np.zeros(3))
