"""ICAR with ``zero_sum_stdev`` (pm.ICAR's soft constraint): dense density, draws, errors."""

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest

from pymc_sparse.distributions.icar import ICAR, icar_logp
from pymc_sparse.inference.marginalize import MarginalizeError, marginalize_laplace
from pymc_sparse.precision import connected_components
from tests.distributions.test_icar import laplacian, mixed_graph
from tests.gmrf_checks import FAST, gaussian_pvalue, scotland_adjacency, whitener_from_precision

LOG2PI = np.log(2 * np.pi)


def soft_precision(W, sigma, stdev, singletons):
    """Dense precision of the soft-constrained ICAR: R / sigma^2 + sum_c 1_c 1_c' / s_c^2."""
    R = laplacian(W)
    single = R.diagonal() == 0
    Q = R / sigma**2
    _, labels = connected_components(W)
    for c in np.unique(labels):
        members = labels == c
        if single[members].all():  # a singleton
            if singletons == "iid":
                Q[members, members] += 1.0 / sigma**2
                continue
        m = members.sum()
        Q[np.ix_(members, members)] += 1.0 / (stdev * m) ** 2
    return Q


def dense_logp(x, Q):
    sign, logdet = np.linalg.slogdet(Q)
    assert sign > 0
    return 0.5 * logdet - 0.5 * Q.shape[0] * LOG2PI - 0.5 * x @ Q @ x


@pytest.mark.parametrize("singletons", ["iid", "zero"])
@pytest.mark.parametrize("graph", ["connected", "mixed"])
def test_logp_is_the_dense_normalised_density(graph, singletons, rng):
    """Any x (not zero-sum): ours equals N(x; 0, Q^{-1}) with the soft precision, to 1e-10."""
    W = scotland_adjacency("connected") if graph == "connected" else mixed_graph(rng)
    x = rng.normal(size=W.shape[0])
    for sigma, stdev in ((1.0, 0.001), (0.6, 0.3), (2.0, 0.05)):
        rv = ICAR.dist(W=W, sigma=sigma, zero_sum_stdev=stdev, singletons=singletons)
        lp = pm.logp(rv, x).eval(mode=FAST)
        ref = dense_logp(x, soft_precision(W, sigma, stdev, singletons))
        np.testing.assert_allclose(lp, ref, rtol=1e-10)


def test_same_model_as_pm_icar_up_to_the_sigma_term():
    """On a connected graph, ours - pm.ICAR is -(n - 1) log sigma + const, for any x."""
    W = scotland_adjacency("connected").toarray()
    n = W.shape[0]
    rng = np.random.default_rng(3)
    xs = [rng.normal(size=n) for _ in range(2)]
    diffs = []
    for sigma in (1.0, 0.5):
        ours = [
            pm.logp(ICAR.dist(W=W, sigma=sigma, zero_sum_stdev=0.001), x).eval(mode=FAST)
            for x in xs
        ]
        theirs = [pm.logp(pm.ICAR.dist(W=W, sigma=sigma), x).eval(mode=FAST) for x in xs]
        np.testing.assert_allclose(ours[0] - ours[1], theirs[0] - theirs[1], rtol=1e-9)
        diffs.append(ours[0] - theirs[0])
    np.testing.assert_allclose(diffs[1] - diffs[0], -(n - 1) * np.log(0.5), rtol=1e-9)


def test_gradient_in_x_and_sigma(rng):
    W = mixed_graph(rng)
    rv = ICAR.dist(W=W, zero_sum_stdev=0.2, singletons="zero")
    op = rv.owner.op
    r_data = rv.owner.inputs[2]

    def f(x, sigma):
        return icar_logp(
            op.pattern,
            x,
            r_data,
            sigma,
            log_gdet=op.log_gdet,
            singletons="zero",
            zero_sum_stdev=0.2,
        )[0]

    x0 = rng.normal(size=W.shape[0])
    pytensor.gradient.verify_grad(
        f, [x0, np.array(0.8)], rng=rng, abs_tol=1e-5, rel_tol=1e-5, mode=FAST
    )


def test_model_has_no_transform_and_backends_agree(rng):
    """The value variable is the field itself; C, NUMBA and JAX give one logp and gradient."""
    W = mixed_graph(rng)
    with pm.Model() as m:
        ICAR("phi", W=W, sigma=0.7, zero_sum_stdev=0.01)
    assert [v.name for v in m.value_vars] == ["phi"]
    point = {"phi": rng.normal(size=W.shape[0])}
    ref = dense_logp(point["phi"], soft_precision(W, 0.7, 0.01, "iid"))
    for mode in ("FAST_RUN", "NUMBA", "JAX"):
        lp = m.compile_logp(mode=mode)(point)
        grad = m.compile_dlogp(mode=mode)(point)
        np.testing.assert_allclose(lp, ref, rtol=1e-10)
        Q = soft_precision(W, 0.7, 0.01, "iid")
        np.testing.assert_allclose(grad, -Q @ point["phi"], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("singletons", ["iid", "zero"])
def test_draws_follow_the_soft_precision(singletons, rng):
    W = mixed_graph(rng)
    rv = ICAR.dist(W=W, sigma=1.3, zero_sum_stdev=0.05, singletons=singletons, size=4000)
    X = pm.draw(rv, random_seed=4, mode=FAST)
    Q = soft_precision(W, 1.3, 0.05, singletons)
    assert gaussian_pvalue(X, 0.0, whitener_from_precision(Q)) > 1e-3
    assert gaussian_pvalue(X, 0.0, whitener_from_precision(Q / 1.2)) < 1e-3


def test_bad_zero_sum_stdev_is_named():
    W = scotland_adjacency("connected")
    for bad in (0.0, -1.0, np.nan, np.inf):
        with pytest.raises(ValueError, match="`zero_sum_stdev` must be a finite number > 0"):
            ICAR.dist(W=W, zero_sum_stdev=bad)
    with pytest.raises(TypeError, match="`zero_sum_stdev` must be one constant number"):
        ICAR.dist(W=W, zero_sum_stdev=pt.dscalar("s"))


def test_laplace_refuses_a_soft_icar():
    W = scotland_adjacency("connected")
    with pm.Model() as m:
        phi = ICAR("phi", W=W, zero_sum_stdev=0.001)
        pm.Poisson("y", pt.exp(phi), observed=np.ones(W.shape[0], dtype=int))
    with pytest.raises(MarginalizeError, match="soft constraint"):
        marginalize_laplace(m, "phi")
