"""CAR: exact log-density vs dense MvNormal and pm.CAR, gradients, draws (vs pm.CAR's), policies."""

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest
import scipy.sparse as sp

from pymc_sparse.distributions.car import CAR, CARRV, car_logdet, car_logp, car_structure
from pymc_sparse.precision import lattice_adjacency
from tests.gmrf_checks import FAST, gaussian_pvalue, scotland_adjacency, whitener_from_precision

LOG2PI = np.log(2 * np.pi)


def dense_car_precision(W, alpha, tau):
    W = np.asarray(W.todense() if sp.issparse(W) else W, dtype=float)
    return tau * (np.diag(W.sum(1)) - alpha * W)


def dense_logp(x, mu, Q):
    return pm.logp(pm.MvNormal.dist(mu=mu, tau=Q), x).eval(mode=FAST)


def weighted(rng, W):
    W = sp.triu(W, 1).tocoo()
    W.data = rng.uniform(0.2, 3.0, W.nnz)
    return (W + W.T).tocsc()


@pytest.mark.parametrize("kind", ["binary-dense", "binary-sparse", "weighted-sparse", "scotland"])
def test_logp_matches_dense_mvnormal(kind, rng):
    W = lattice_adjacency(3, 4)
    if kind == "binary-dense":
        W = W.toarray()
    elif kind == "weighted-sparse":
        W = weighted(rng, W)
    elif kind == "scotland":
        W = scotland_adjacency("connected")
    n = W.shape[0]
    mu, x = rng.normal(size=n), rng.normal(size=n)
    lp = pm.logp(CAR.dist(mu=mu, W=W, alpha=0.7, tau=2.5), x).eval(mode=FAST)
    np.testing.assert_allclose(lp, dense_logp(x, mu, dense_car_precision(W, 0.7, 2.5)), rtol=1e-12)


@pytest.mark.parametrize("alpha", [-0.5, 0.3, 0.95])
def test_logp_vs_pm_car_up_to_dropped_constants(alpha, rng):
    """pm.CAR drops 0.5 * sum(log d_i) - n/2 log(2 pi); everything else is identical."""
    W = scotland_adjacency("connected").toarray()
    n = W.shape[0]
    d = W.sum(1)
    X = rng.normal(size=(2, n))
    ours = pm.logp(CAR.dist(mu=0.1, W=W, alpha=alpha, tau=0.8), X).eval(mode=FAST)
    theirs = pm.logp(pm.CAR.dist(mu=np.full(n, 0.1), W=W, alpha=alpha, tau=0.8), X).eval(mode=FAST)
    np.testing.assert_allclose(ours, theirs + 0.5 * np.log(d).sum() - 0.5 * n * LOG2PI, rtol=1e-11)


def test_gradient_alpha_tau(rng):
    W = weighted(rng, lattice_adjacency(3, 3))
    pattern, d_data, w_data = car_structure(W)
    x = rng.normal(size=9)

    def f(alpha, tau):
        return car_logp(pattern, x, 0.2, d_data, w_data, alpha, tau)[0]

    pytensor.gradient.verify_grad(
        f, [np.array(0.6), np.array(1.4)], rng=rng, abs_tol=1e-5, rel_tol=1e-5, mode=FAST
    )


def test_logdet_seam(rng):
    """car_logdet is the one function a one-parameter log-determinant would replace."""
    W = weighted(rng, lattice_adjacency(3, 3))
    pattern, d_data, w_data = car_structure(W)
    a = pt.dscalar("a")
    ld = car_logdet(pattern, d_data, w_data, a)
    for alpha in (-0.9, 0.0, 0.99):
        ref = np.linalg.slogdet(dense_car_precision(W, alpha, 1.0))[1]
        np.testing.assert_allclose(ld.eval({a: alpha}, mode=FAST), ref, rtol=1e-12)


def test_out_of_support_is_minus_inf_and_safe(rng):
    W = lattice_adjacency(3, 3)
    pattern, d_data, w_data = car_structure(W)
    x = rng.normal(size=9)
    a, t = pt.dscalars("a", "t")
    lp = car_logp(pattern, x, 0.0, d_data, w_data, a, t)[0]
    f = pytensor.function([a, t], [lp, *pytensor.grad(lp, [a, t])], mode=FAST)
    for alpha, tau in [(1.0, 1.0), (1.5, 1.0), (-1.0, 1.0), (0.5, 0.0), (0.5, -2.0)]:
        val, ga, gt = f(alpha, tau)
        assert val == -np.inf and np.isfinite(ga) and np.isfinite(gt)
    # In a model, check_parameters becomes -inf as well.
    with pm.Model() as m:
        CAR("x", mu=0.0, W=W, alpha=pm.Flat("a"), tau=pm.Flat("t"))
    assert m.compile_logp()({"a": 1.2, "t": 1.0, "x": x}) == -np.inf


def test_constant_parameters_checked_at_build():
    W = lattice_adjacency(3)
    with pytest.raises(ValueError, match=r"`alpha` must lie in \(-1, 1\), got 1.0"):
        CAR.dist(mu=0, W=W, alpha=1.0, tau=1.0)
    with pytest.raises(ValueError, match=r"`tau` must be > 0, got -1.0"):
        CAR.dist(mu=0, W=W, alpha=0.5, tau=-1.0)
    with pytest.raises(TypeError, match="`alpha` must be a scalar"):
        CAR.dist(mu=0, W=W, alpha=np.array([0.1, 0.2]), tau=1.0)
    with pytest.raises(ValueError, match="`mu` has length 4 but W is 9 x 9"):
        CAR.dist(mu=np.zeros(4), W=W, alpha=0.5, tau=1.0)


@pytest.mark.parametrize(
    "W, match",
    [
        (np.array([[0, 1.0], [0.0, 0]]), "not symmetric"),
        (np.array([[0, -1.0], [-1.0, 0]]), "negative weight"),
        (np.array([[0, np.inf], [np.inf, 0]]), "non-finite"),
        (np.array([[0, 1.0, 0], [1.0, 2.0, 1.0], [0, 1.0, 0]]), r"self-loop: W\[1, 1\]"),
        (np.ones((3, 2)), "must be square"),
    ],
    ids=["asymmetric", "negative", "inf", "self-loop", "not-square"],
)
def test_bad_adjacency(W, match):
    with pytest.raises(ValueError, match=match):
        CAR.dist(mu=0, W=W, alpha=0.5, tau=1.0)


def test_isolated_nodes_policy(rng):
    W = scotland_adjacency("islands")
    with pytest.raises(
        ValueError, match=r"3 node\(s\) of W have no neighbours \(0-based indices: 5, 7, 10\)"
    ):
        CAR.dist(mu=0, W=W, alpha=0.5, tau=1.0)
    with pytest.raises(ValueError, match="`isolated` must be one of"):
        CAR.dist(mu=0, W=W, alpha=0.5, tau=1.0, isolated="drop")
    x = rng.normal(size=56)
    lp = pm.logp(CAR.dist(mu=0, W=W, alpha=0.5, tau=2.0, isolated="iid"), x).eval(mode=FAST)
    Wd = W.toarray()
    d = Wd.sum(1)
    d[d == 0] = 1.0  # iid N(0, 1/tau) for the three islands
    Q = 2.0 * (np.diag(d) - 0.5 * Wd)
    np.testing.assert_allclose(lp, dense_logp(x, np.zeros(56), Q), rtol=1e-12)


def test_batched_mu_and_size(rng):
    W = lattice_adjacency(2, 3)
    mu = rng.normal(size=(4, 6))
    X = rng.normal(size=(4, 6))
    rv = CAR.dist(mu=mu, W=W, alpha=0.3, tau=1.5)
    assert isinstance(rv.owner.op, CARRV) and "pattern" in rv.owner.op.__props__
    Q = dense_car_precision(W, 0.3, 1.5)
    np.testing.assert_allclose(
        pm.logp(rv, X).eval(mode=FAST), [dense_logp(X[i], mu[i], Q) for i in range(4)], rtol=1e-12
    )
    assert pm.draw(CAR.dist(mu=0, W=W, alpha=0.3, tau=1.5, size=(2, 3)), mode=FAST).shape == (
        2,
        3,
        6,
    )
    with pm.Model(coords={"area": range(6)}) as m:
        CAR("x", mu=np.arange(6.0), W=W, alpha=0.3, tau=1.5, dims="area")
    np.testing.assert_array_equal(m.initial_point()["x"], np.arange(6.0))


def test_draws_have_covariance_q_inverse_unlike_pm_car():
    """Our draws pass the Gaussian test for Cov = Q^-1; pm.CAR's fail it and pass Q^-2."""
    W = lattice_adjacency(3, 4).toarray()
    n = W.shape[0]
    alpha, tau = 0.8, 2.0
    Q = dense_car_precision(W, alpha, tau)
    mu = np.linspace(0, 1, n)
    ours = pm.draw(CAR.dist(mu=mu, W=W, alpha=alpha, tau=tau, size=4000), random_seed=5, mode=FAST)
    theirs = pm.draw(
        pm.CAR.dist(mu=mu, W=W, alpha=alpha, tau=tau, size=4000), random_seed=5, mode=FAST
    )
    assert gaussian_pvalue(ours, mu, whitener_from_precision(Q)) > 1e-3
    assert gaussian_pvalue(theirs, mu, whitener_from_precision(Q)) < 1e-10
    # pm.CAR's draws are consistent with covariance Q^-2 = (Q^2)^-1 instead.
    assert gaussian_pvalue(theirs, mu, whitener_from_precision(Q @ Q)) > 1e-3


def test_nuts_short():
    W = scotland_adjacency("connected")
    y = np.random.default_rng(0).normal(size=56)
    with pm.Model():
        alpha = pm.Beta("alpha", 2, 2)
        tau = pm.Gamma("tau", 2, 2)
        phi = CAR("phi", mu=0.0, W=W, alpha=alpha, tau=tau)
        pm.Normal("y", phi, 0.5, observed=y)
        idata = pm.sample(
            draws=100,
            tune=100,
            chains=1,
            random_seed=2,
            progressbar=False,
            compute_convergence_checks=False,
        )
    a = idata.posterior["alpha"].values
    assert np.all((a > 0) & (a < 1)) and np.all(np.isfinite(idata.posterior["phi"]))
    assert int(idata.sample_stats["diverging"].sum()) < 10


@pytest.mark.parametrize("alpha", [-0.5, 0.3, 0.95, 0.9995])
def test_car_logdet_methods_agree(alpha):
    """The interpolated table (default for a free alpha) equals the exact factorisation."""
    import pymc as pm
    import scipy.sparse as sp

    from pymc_sparse.distributions.car import CAR

    m = 6
    T = sp.diags([np.ones(m - 1), np.ones(m - 1)], [-1, 1], shape=(m, m))
    W = (sp.kron(T, sp.identity(m)) + sp.kron(sp.identity(m), T)).tocsc()
    x = np.random.default_rng(3).normal(size=m * m)
    vals = {}
    for method in ("exact", "interpolated", "auto"):
        with pm.Model() as model:
            a = pm.Uniform("a", -1, 1)
            CAR("phi", mu=0.0, W=W, alpha=a, tau=2.0, logdet=method)
        point = {"a_interval__": np.log((alpha + 1) / (1 - alpha)), "phi": x}
        vals[method] = (model.compile_logp()(point), model.compile_dlogp()(point))
    for method in ("interpolated", "auto"):
        np.testing.assert_allclose(vals[method][0], vals["exact"][0], rtol=0, atol=1e-8)
        np.testing.assert_allclose(vals[method][1], vals["exact"][1], rtol=0, atol=1e-7)
