"""ICAR: constrained density vs dense references and pm.ICAR, hard constraint, exact draws."""

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest
import scipy.sparse as sp

from pymc_sparse.distributions.icar import ICAR, ICARRV, ComponentZeroSumTransform, icar_logp
from pymc_sparse.precision import connected_components, lattice_adjacency
from tests.gmrf_checks import (
    FAST,
    gaussian_pvalue,
    scotland_adjacency,
    whitener_from_covariance,
)

LOG2PI = np.log(2 * np.pi)


def laplacian(W):
    W = np.asarray(W.todense() if sp.issparse(W) else W, dtype=float)
    return np.diag(W.sum(1)) - W


def mixed_graph(rng):
    """Weighted 3x3 lattice + a path of 4 + two singletons: 4 components, 2 singletons."""
    A = sp.triu(lattice_adjacency(3, 3), 1).tocoo()
    A.data = rng.uniform(0.3, 2.0, A.nnz)
    path = sp.diags([np.ones(3), np.ones(3)], [-1, 1], shape=(4, 4))
    return sp.block_diag([A + A.T, path, sp.csc_matrix((2, 2))]).tocsc()


def dense_reference(x, W, sigma, singletons):
    """Density of the constrained field on its subspace, from eigenvalues (dense)."""
    R = laplacian(W)
    deg = R.diagonal()
    single = deg == 0
    lam = np.linalg.eigvalsh(R)
    lam = lam[lam > 1e-9]
    d = lam.size
    lp = -0.5 * d * LOG2PI + 0.5 * np.sum(np.log(lam / sigma**2)) - 0.5 * x @ R @ x / sigma**2
    if singletons == "iid":
        lp += np.sum(-0.5 * LOG2PI - np.log(sigma) - 0.5 * x[single] ** 2 / sigma**2)
    return lp


def component_sums(x, W):
    _, labels = connected_components(W)
    deg = np.asarray(W.sum(1)).ravel()
    x = np.atleast_2d(x)
    sums = np.array([np.bincount(labels, weights=r) for r in x])
    proper = np.bincount(labels, weights=(deg > 0).astype(float)) > 0
    return sums[:, proper]


def zero_sum_value(W, rng):
    x = rng.normal(size=W.shape[0])
    _, labels = connected_components(W)
    deg = np.asarray(W.sum(1)).ravel()
    means = np.bincount(labels, weights=x) / np.bincount(labels)
    return np.where(deg > 0, x - means[labels], x)


@pytest.mark.parametrize("singletons", ["iid", "zero"])
@pytest.mark.parametrize("graph", ["scotland-islands", "mixed-weighted"])
def test_logp_matches_dense_constrained_density(graph, singletons, rng):
    W = scotland_adjacency("islands") if graph == "scotland-islands" else mixed_graph(rng)
    x = zero_sum_value(W, rng)
    if singletons == "zero":
        x[np.asarray(W.sum(1)).ravel() == 0] = 0.0
    for sigma in (0.4, 1.0, 2.3):
        lp = pm.logp(ICAR.dist(W=W, sigma=sigma, singletons=singletons), x).eval(mode=FAST)
        np.testing.assert_allclose(lp, dense_reference(x, W, sigma, singletons), rtol=1e-11)


def test_sigma_term_and_pm_icar():
    """Ours = pm.ICAR + const - (n - k) log sigma on zero-sum values (pm.ICAR omits the last)."""
    W = scotland_adjacency("connected").toarray()
    n = W.shape[0]
    rng = np.random.default_rng(1)
    xs = [zero_sum_value(W, rng) for _ in range(2)]
    diffs = []
    for sigma in (1.0, 0.5, 3.0):
        ours = [pm.logp(ICAR.dist(W=W, sigma=sigma), x).eval(mode=FAST) for x in xs]
        theirs = [pm.logp(pm.ICAR.dist(W=W, sigma=sigma), x).eval(mode=FAST) for x in xs]
        # Same dependence on x for fixed sigma ...
        np.testing.assert_allclose(ours[0] - ours[1], theirs[0] - theirs[1], rtol=1e-10)
        diffs.append(ours[0] - theirs[0])
    # ... but pm.ICAR lacks -(n - 1) log sigma, so its posterior for sigma is wrong.
    np.testing.assert_allclose(diffs[1] - diffs[0], -(n - 1) * np.log(0.5), rtol=1e-10)
    np.testing.assert_allclose(diffs[2] - diffs[0], -(n - 1) * np.log(3.0), rtol=1e-10)


def test_gradient_sigma(rng):
    W = mixed_graph(rng)
    rv = ICAR.dist(W=W, sigma=1.0)
    op = rv.owner.op
    r_data = rv.owner.inputs[2]
    x = zero_sum_value(W, rng)

    def f(sigma):
        return icar_logp(op.pattern, x, r_data, sigma, log_gdet=op.log_gdet, singletons="iid")[0]

    pytensor.gradient.verify_grad(
        f, [np.array(0.8)], rng=rng, abs_tol=1e-5, rel_tol=1e-5, mode=FAST
    )


def test_out_of_support_sigma(rng):
    W = lattice_adjacency(3)
    rv = ICAR.dist(W=W)
    op = rv.owner.op
    s = pt.dscalar("s")
    lp = icar_logp(
        op.pattern, np.zeros(9), rv.owner.inputs[2], s, log_gdet=op.log_gdet, singletons="iid"
    )[0]
    f = pytensor.function([s], [lp, pytensor.grad(lp, s)], mode=FAST)
    for bad in (0.0, -1.0):
        v, g = f(bad)
        assert v == -np.inf and np.isfinite(g)
    with pytest.raises(ValueError, match=r"`sigma` must be > 0, got 0.0"):
        ICAR.dist(W=W, sigma=0.0)
    with pytest.raises(ValueError, match="`singletons` must be one of"):
        ICAR.dist(W=W, singletons="drop")
    with pytest.raises(ValueError, match="not symmetric"):
        ICAR.dist(W=np.triu(lattice_adjacency(3).toarray()))


@pytest.mark.parametrize("singletons", ["iid", "zero"])
def test_transform_is_an_isometry_onto_the_constraint(singletons, rng):
    W = mixed_graph(rng)
    rv = ICAR.dist(W=W, singletons=singletons)
    tr = ComponentZeroSumTransform(rv.owner.op.pattern, singletons)
    n = W.shape[0]
    n_free = n - 2 - (2 if singletons == "zero" else 0)  # 2 proper components, 2 singletons
    Z = rng.normal(size=(2, 3, n_free))
    X = tr.backward(pt.as_tensor(Z)).eval(mode=FAST)
    assert X.shape == (2, 3, n)
    np.testing.assert_allclose(component_sums(X.reshape(-1, n), W), 0, atol=1e-12)
    np.testing.assert_allclose(tr.forward(pt.as_tensor(X)).eval(mode=FAST), Z, atol=1e-12)
    # Isometry: distances (hence the density's measure) are preserved.
    np.testing.assert_allclose(
        np.linalg.norm(X[0, 0] - X[1, 2]), np.linalg.norm(Z[0, 0] - Z[1, 2]), rtol=1e-12
    )
    if singletons == "zero":
        np.testing.assert_array_equal(X[..., -2:], 0.0)
    assert tr.log_jac_det(pt.as_tensor(Z)).eval(mode=FAST).shape == (2, 3)


def test_model_value_variable_and_logp(rng):
    W = scotland_adjacency("islands")
    with pm.Model() as m:
        ICAR("phi", W=W, sigma=0.7)
    (value,) = m.value_vars
    assert value.name == "phi_zerosum__"
    ip = m.initial_point()
    assert ip["phi_zerosum__"].shape == (55,)  # 56 - one proper component
    z = rng.normal(size=55)
    op = m["phi"].owner.op
    assert isinstance(op, ICARRV)
    x = ComponentZeroSumTransform(op.pattern, "iid").backward(pt.as_tensor(z)).eval(mode=FAST)
    np.testing.assert_allclose(
        m.compile_logp()({"phi_zerosum__": z}),
        dense_reference(x, W, 0.7, "iid"),
        rtol=1e-11,
    )


@pytest.mark.parametrize("singletons", ["iid", "zero"])
def test_draws_constrained_and_distributed(singletons, rng):
    """Constraint per component to 1e-10; whitened draws N(0, I) on the range (p > 1e-3)."""
    W = mixed_graph(rng)
    sigma = 1.3
    X = pm.draw(
        ICAR.dist(W=W, sigma=sigma, singletons=singletons, size=4000), random_seed=9, mode=FAST
    )
    assert X.shape == (4000, W.shape[0])
    assert np.abs(component_sums(X, W)).max() < 1e-10
    single = np.asarray(W.sum(1)).ravel() == 0
    S = sigma**2 * np.linalg.pinv(laplacian(W))
    if singletons == "iid":
        S[single, single] = sigma**2
    else:
        np.testing.assert_array_equal(X[:, single], 0.0)
    assert gaussian_pvalue(X, 0.0, whitener_from_covariance(S)) > 1e-3
    assert gaussian_pvalue(X, 0.0, whitener_from_covariance(1.2 * S)) < 1e-3


def test_draws_large_lattice_constraint():
    W = lattice_adjacency(60, 60)
    X = pm.draw(ICAR.dist(W=W, sigma=2.0, size=3), random_seed=1, mode=FAST)
    assert np.abs(X.sum(axis=1)).max() < 1e-10


def test_nuts_short():
    W = scotland_adjacency("islands")
    y = np.random.default_rng(0).normal(size=56)
    with pm.Model():
        sigma = pm.HalfNormal("sigma", 1.0)
        phi = ICAR("phi", W=W, sigma=sigma)
        pm.Normal("y", phi, 0.5, observed=y)
        idata = pm.sample(
            draws=100,
            tune=100,
            chains=1,
            random_seed=4,
            progressbar=False,
            compute_convergence_checks=False,
        )
    phi = idata.posterior["phi"].values.reshape(-1, 56)
    assert np.abs(component_sums(phi, W)).max() < 1e-10
    assert int(idata.sample_stats["diverging"].sum()) < 10
