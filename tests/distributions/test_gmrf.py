"""SparseGMRF: log-density vs dense pm.MvNormal, gradients, draws, shapes, sampling."""

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest
import scipy.sparse as sp

from pymc_sparse.distributions.gmrf import SparseGMRF, SparseGMRFRV, gmrf_logp
from pymc_sparse.linalg.cholmod import NotPositiveDefiniteError
from pymc_sparse.ops.matrix import SparseMatrix, kron
from pymc_sparse.precision import ar1_precision, car_precision, lattice_adjacency
from tests.gmrf_checks import FAST, gaussian_pvalue, whitener_from_precision
from tests.helpers import MATRIX_IDS, matrix


def dense_logp(x, mu, Q):
    return pm.logp(pm.MvNormal.dist(mu=mu, tau=np.asarray(Q)), x).eval(mode=FAST)


@pytest.mark.parametrize("name", [m for m in MATRIX_IDS if m != "n2"] + ["n2"])
def test_logp_matches_dense_mvnormal(name, rng):
    Q = matrix(name)
    n = Q.shape[0]
    mu = rng.normal(size=n)
    x = rng.normal(size=n)
    lp = pm.logp(SparseGMRF.dist(Q=Q, mu=mu), x).eval(mode=FAST)
    np.testing.assert_allclose(lp, dense_logp(x, mu, Q.toarray()), rtol=1e-12)


def test_batched_values_and_means(rng):
    Q = matrix("grid5")
    n = Q.shape[0]
    mu = rng.normal(size=(3, n))
    X = rng.normal(size=(3, n))
    lp = pm.logp(SparseGMRF.dist(Q=Q, mu=mu), X).eval(mode=FAST)
    ref = [dense_logp(X[i], mu[i], Q.toarray()) for i in range(3)]
    assert lp.shape == (3,)
    np.testing.assert_allclose(lp, ref, rtol=1e-12)
    # size: a (2, 4) batch of fields sharing Q and the mean.
    x = SparseGMRF.dist(Q=Q, mu=1.0, size=(2, 4))
    assert x.type.shape == (2, 4, n) and pm.draw(x).shape == (2, 4, n)
    V = rng.normal(size=(2, 4, n))
    np.testing.assert_allclose(
        pm.logp(x, V).eval(mode=FAST), dense_logp(V, np.ones(n), Q.toarray()), rtol=1e-12
    )


def test_symbolic_precision_gradient(rng):
    """Q = tau * (D - alpha W): logp and gradient vs a dense float64 reference."""
    W = lattice_adjacency(3, 4)
    n = W.shape[0]
    x = rng.normal(size=n)

    def sparse_fn(a, t):
        Q = car_precision(W, a, t)
        return gmrf_logp(Q.pattern, x, 0.0, Q.data)[0]

    pytensor.gradient.verify_grad(
        sparse_fn, [np.array(0.4), np.array(1.7)], rng=rng, abs_tol=1e-5, rel_tol=1e-5, mode=FAST
    )
    a, t = pt.dscalars("a", "t")
    Q = car_precision(W, a, t)
    lp = gmrf_logp(Q.pattern, x, 0.0, Q.data)[0]
    Wd = W.toarray()
    Qd = 1.7 * (np.diag(Wd.sum(1)) - 0.4 * Wd)
    np.testing.assert_allclose(
        lp.eval({a: 0.4, t: 1.7}, mode=FAST), dense_logp(x, np.zeros(n), Qd), rtol=1e-12
    )


def test_not_positive_definite():
    W = lattice_adjacency(3)
    with pytest.raises(NotPositiveDefiniteError, match="not positive definite"):
        SparseGMRF.dist(Q=sp.diags(np.ones(9)) - 2 * W)
    # Symbolic Q that stops being SPD: -inf, no exception, in a model's logp.
    with pm.Model() as m:
        a = pm.Flat("a")
        Q = car_precision(W, 0.5) + SparseMatrix.from_scipy(sp.identity(9)) * a
        SparseGMRF("x", Q=Q)
    logp = m.compile_logp()
    assert np.isfinite(logp({"a": 0.0, "x": np.zeros(9)}))
    assert logp({"a": -10.0, "x": np.zeros(9)}) == -np.inf


def test_bad_input():
    with pytest.raises(TypeError, match="needs a precision matrix"):
        SparseGMRF.dist(mu=np.zeros(3))
    with pytest.raises(ValueError, match="not symmetric"):
        SparseGMRF.dist(Q=np.array([[2.0, 1.0], [0.0, 2.0]]))
    with pytest.raises(ValueError, match="`mu` has length 3 but Q is 9 x 9"):
        SparseGMRF.dist(Q=matrix("grid5")[:9, :9], mu=np.zeros(3))


def test_op_props_and_support_point():
    Q = matrix("banded20")
    x = SparseGMRF.dist(Q=Q, mu=2.0)
    op = x.owner.op
    assert isinstance(op, SparseGMRFRV) and op.signature == "(m),(k)->(m)"
    assert "pattern" in op.__props__ and op.pattern.n == 20
    with pm.Model() as m:
        SparseGMRF("x", Q=Q, mu=np.arange(20.0))
    np.testing.assert_array_equal(m.initial_point()["x"], np.arange(20.0))


def test_draws_mean_and_covariance():
    """Whitened draws L'(x - mu) must be N(0, I): chi-square and covariance tests, p > 1e-3."""
    Q = matrix("grid5").toarray()
    n = Q.shape[0]
    mu = np.linspace(-1, 1, n)
    X = pm.draw(SparseGMRF.dist(Q=Q, mu=mu, size=4000), random_seed=11, mode=FAST)
    assert gaussian_pvalue(X, mu, whitener_from_precision(Q)) > 1e-3
    # The same test rejects a covariance that is off by 10%.
    assert gaussian_pvalue(X, mu, whitener_from_precision(1.1 * Q)) < 1e-3


def test_space_time_kronecker(rng):
    """CAR(space) x AR1(time) with symbolic alpha and rho, vs dense MvNormal."""
    W = lattice_adjacency(2, 3)
    a, r = pt.dscalars("a", "r")
    Q = kron(car_precision(W, a, 2.0), ar1_precision(4, r))
    n = Q.n
    x = rng.normal(size=n)
    lp = pm.logp(SparseGMRF.dist(Q=Q), x).eval({a: 0.6, r: 0.3}, mode=FAST)
    Qd = np.kron(car_precision(W, 0.6, 2.0).toarray(), ar1_precision(4, 0.3).toarray())
    np.testing.assert_allclose(lp, dense_logp(x, np.zeros(n), Qd), rtol=1e-12)


def test_prior_predictive_with_random_precision():
    W = lattice_adjacency(3)
    with pm.Model(coords={"area": range(9)}) as m:
        tau = pm.Gamma("tau", 5, 5)
        SparseGMRF("x", Q=car_precision(W, 0.5, tau), dims="area")
    prior = pm.sample_prior_predictive(draws=20, model=m, random_seed=1).prior
    assert prior["x"].shape == (1, 20, 9) and np.all(np.isfinite(prior["x"]))


def test_nuts_short(rng):
    W = lattice_adjacency(3)
    y = rng.normal(size=9)
    with pm.Model() as m:
        tau = pm.Gamma("tau", 2, 2)
        x = SparseGMRF("x", Q=car_precision(W, 0.8, tau))
        pm.Normal("y", x, 1.0, observed=y)
        idata = pm.sample(
            draws=100,
            tune=100,
            chains=1,
            random_seed=3,
            progressbar=False,
            compute_convergence_checks=False,
        )
    assert m["tau"] in m.free_RVs
    post = idata.posterior
    assert post["x"].shape == (1, 100, 9) and np.all(np.isfinite(post["tau"]))
    assert int(idata.sample_stats["diverging"].sum()) < 10
