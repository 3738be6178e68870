"""LaplaceGMRF: the PyMC distribution of the sparse embedded Laplace marginal."""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import pytest
import scipy.sparse as sp

from pymc_sparse.distributions.laplace import LaplaceGMRF
from pymc_sparse.distributions.marginal import MarginalGMRFNormal
from pymc_sparse.linalg.laplace import laplace_posterior
from pymc_sparse.linalg.pattern import SparsityPattern
from pymc_sparse.ops.matrix import SparseMatrix
from tests.helpers import car_precision, lattice_adjacency

W = lattice_adjacency(3, 4)
D = sp.diags(np.asarray(W.sum(axis=1)).ravel())
N = W.shape[0]
RNG = np.random.default_rng(3)
A = sp.csr_matrix(np.eye(N)[RNG.permutation(N)[:10]] + 0.3 * np.eye(N)[RNG.permutation(N)[:10]])
M = A.shape[0]


def _Q(tau, alpha):
    return tau * (SparseMatrix.from_scipy(D) - alpha * SparseMatrix.from_scipy(W))


def _points():
    return [{"tau_log__": np.log(t), "alpha_interval__": a} for t, a in [(1.3, 0.2), (0.7, -1.0)]]


def _model(build):
    with pm.Model() as model:
        tau = pm.Gamma("tau", 2, 1)
        alpha = pm.Uniform("alpha", 0, 1)
        build(_Q(tau, alpha))
    return model


def test_normal_family_equals_marginal_gmrf_normal():
    y = RNG.normal(size=M)
    mu = RNG.normal(size=N)
    m1 = _model(lambda Q: LaplaceGMRF("y", Q, mu=mu, A=A, family="normal", sigma=0.6, observed=y))
    m2 = _model(lambda Q: MarginalGMRFNormal("y", Q=Q, mu=mu, A=A, sigma=0.6, observed=y))
    lp1, lp2 = m1.compile_logp(), m2.compile_logp()
    g1, g2 = m1.compile_dlogp(), m2.compile_dlogp()
    for pt_ in _points():
        np.testing.assert_allclose(lp1(pt_), lp2(pt_), rtol=1e-11)
        np.testing.assert_allclose(g1(pt_), g2(pt_), rtol=1e-8, atol=1e-10)


def test_poisson_logp_matches_numeric_and_gradient():
    y = RNG.poisson(3.0, M).astype(float)
    E = RNG.uniform(0.5, 2.0, M)
    model = _model(
        lambda Q: LaplaceGMRF("y", Q, mu=0.2, A=A, family="poisson", exposure=E, observed=y)
    )
    lp = model.compile_logp(sum=False, jacobian=False)
    dlp = model.compile_dlogp(jacobian=False)
    tau, alpha = 1.3, 0.4
    point = {"tau_log__": np.log(tau), "alpha_interval__": np.log(alpha / (1 - alpha))}
    pattern, q = SparsityPattern.from_scipy(car_precision(W, alpha, tau))
    ref = laplace_posterior(pattern, q, 0.2, A, "poisson", y, {"exposure": E}).log_marginal
    np.testing.assert_allclose(lp(point)[-1], ref, rtol=1e-10)
    # Five-point stencil with h = 1e-3: the value carries ~1e-10 of Newton-tolerance noise.
    h = 1e-3
    for i, name in enumerate(["tau_log__", "alpha_interval__"]):

        def f(t, name=name):
            return sum(lp(dict(point, **{name: point[name] + t})))

        fd = (-f(2 * h) + 8 * f(h) - 8 * f(-h) + f(-2 * h)) / (12 * h)
        np.testing.assert_allclose(dlp(point)[i], fd, rtol=1e-7)


def test_exposure_equals_log_offset_and_symbolic_design_values():
    y = RNG.poisson(2.0, M).astype(float)
    E = RNG.uniform(0.5, 2.0, M)
    q_pattern, q = SparsityPattern.from_scipy(car_precision(W, 0.5, 1.0))
    Q = SparseMatrix(q_pattern, q)
    a = pt.dvector("a")
    ya = LaplaceGMRF.dist(Q, A=(A, a), family="poisson", exposure=E)
    yo = LaplaceGMRF.dist(Q, A=A, family="poisson", offset=np.log(E))
    lpa = pm.logp(ya, y)
    a0 = sp.csr_matrix(A).data
    np.testing.assert_allclose(lpa.eval({a: a0}), pm.logp(yo, y).eval(), rtol=1e-12)
    # The gradient flows to A's values.
    g = pt.grad(lpa, a).eval({a: a0})
    d = RNG.normal(size=a0.size)
    h = 1e-6
    fd = (lpa.eval({a: a0 + h * d}) - lpa.eval({a: a0 - h * d})) / (2 * h)
    np.testing.assert_allclose(g @ d, fd, rtol=1e-6)


@pytest.mark.parametrize(
    "family,kw",
    [
        ("binomial", {"n_trials": 5}),
        ("bernoulli", {}),
        ("negative_binomial", {"dispersion": 3.0}),
        ("poisson", {"offset": 0.5}),
    ],
)
def test_draws_and_finite_logp(family, kw):
    Q = SparseMatrix.from_scipy(car_precision(W, 0.7, 2.0))
    y = LaplaceGMRF.dist(Q, A=A, family=family, **kw)
    draws = pm.draw(y, draws=3, random_seed=1)
    assert draws.shape == (3, M)
    assert np.all(draws >= 0) and np.all(draws == np.round(draws))
    assert np.isfinite(pm.logp(y, draws[0]).eval())


def test_intrinsic_field_with_components_constraint():
    """An ICAR field (singular Q) with constraint='components': finite, draws sum to zero."""
    Wd = sp.block_diag([lattice_adjacency(2, 3), lattice_adjacency(1, 4)]).tocsc()
    Q = SparseMatrix.from_scipy(car_precision(Wd, 1.0, 1.5))
    y = LaplaceGMRF.dist(Q, family="poisson", offset=1.0, constraint="components")
    draws = pm.draw(y, draws=2, random_seed=2)
    assert np.isfinite(pm.logp(y, draws[0]).eval())
    from pymc_sparse.linalg.laplace import sample_prior

    x = sample_prior(y.owner.op.structure, Q.data.eval(), 0.0, size=(200,), rng=0)
    np.testing.assert_allclose(x[:, :6].sum(1), 0, atol=1e-10)
    np.testing.assert_allclose(x[:, 6:].sum(1), 0, atol=1e-10)


def test_not_positive_definite_is_minus_inf():
    y = RNG.poisson(2.0, M).astype(float)
    Q = SparseMatrix.from_scipy(car_precision(W, 0.5, 1.0))
    lp = pm.logp(LaplaceGMRF.dist(-1.0 * Q, A=A, family="poisson"), y)
    assert lp.eval() == -np.inf


def test_bad_arguments_raise():
    Q = SparseMatrix.from_scipy(car_precision(W, 0.5, 1.0))
    with pytest.raises(ValueError, match="needs `n_trials`"):
        LaplaceGMRF.dist(Q, family="binomial")
    with pytest.raises(ValueError, match="needs `dispersion`"):
        LaplaceGMRF.dist(Q, family="negative_binomial")
    with pytest.raises(ValueError, match="does not apply"):
        LaplaceGMRF.dist(Q, family="poisson", sigma=1.0)
    with pytest.raises(ValueError, match="log-link"):
        LaplaceGMRF.dist(Q, family="bernoulli", exposure=2.0)
    with pytest.raises(ValueError, match="Unknown family"):
        LaplaceGMRF.dist(Q, family="gamma")
    with pytest.raises(ValueError, match="columns"):
        LaplaceGMRF.dist(Q, A=np.eye(3), family="poisson")
