"""SPDE precisions, log-determinants, parameters and accuracy (pymc_sparse.spde.precision)."""

import math

import numpy as np
import pytest

from pymc_sparse.linalg.cholmod import CACHE
from pymc_sparse.spde.mesh import mesh_from_points
from pymc_sparse.spde.precision import (
    SPDEPrecision,
    kappa_tau,
    matern_correlation,
    pc_prior_rates,
    range_sigma,
)


@pytest.fixture(scope="module")
def mesh():
    rng = np.random.default_rng(3)
    return mesh_from_points(rng.uniform(size=(40, 2)), max_edge=(0.12, 0.3), extension=0.4)


@pytest.mark.parametrize("alpha", [1, 2], ids=["alpha1", "alpha2"])
def test_precision_and_logdet_against_dense(mesh, alpha):
    S = SPDEPrecision(mesh, alpha)
    C, G = np.diag(S.fem.c), S.fem.G.toarray()
    kappa, tau = 2.3, 0.8
    K = kappa**2 * C + G
    Q = tau**2 * (K if alpha == 1 else K @ np.diag(1 / S.fem.c) @ K)
    np.testing.assert_allclose(S.matrix(kappa, tau).toarray(), Q, rtol=1e-12, atol=1e-12)
    ref = np.linalg.slogdet(Q)
    assert ref[0] > 0
    np.testing.assert_allclose(S.logdet(kappa, tau), ref[1], rtol=1e-12)
    # The pencil identity: logdet Q = 2n log tau + (1 or 2) logdet K - (0 or 1) logdet C.
    ldK = np.linalg.slogdet(K)[1]
    expect = 2 * S.n * math.log(tau) + (ldK if alpha == 1 else 2 * ldK - np.log(S.fem.c).sum())
    np.testing.assert_allclose(ref[1], expect, rtol=1e-12)


def test_logdet_table_against_exact(mesh):
    S = SPDEPrecision(mesh, 2)
    fam = S.logdet_family((0.2, 5.0))
    assert fam.info["certified"]
    assert fam.singularities[0].point == 0.0 and fam.singularities[0].multiplicity == 1
    for s in np.geomspace(fam.lo, fam.hi, 9):
        np.testing.assert_allclose(fam.table(s), S.logdet_k(s), atol=1e-8)
        _, df = fam.exact(s)
        np.testing.assert_allclose(fam.table(s, 1), df, atol=1e-8, rtol=1e-9)
    # f'(s) = tr(K^-1 C), checked densely.
    s = 3.0
    K = S.fem.G.toarray() + s * np.diag(S.fem.c)
    np.testing.assert_allclose(
        fam.evaluate(s, 1), np.trace(np.linalg.solve(K, np.diag(S.fem.c))), rtol=1e-9
    )
    assert S.logdet_family((0.2, 5.0)) is fam  # cached


def test_parameter_maps():
    for alpha in (1, 2):
        k, t = kappa_tau(0.7, 1.9, alpha)
        np.testing.assert_allclose(range_sigma(k, t, alpha), (0.7, 1.9), rtol=1e-14)
    k, t = kappa_tau(2.0, 3.0, 2)
    assert k == pytest.approx(math.sqrt(8) / 2)
    # alpha = 2, d = 2: sigma^2 = 1 / (4 pi kappa^2 tau^2).
    assert 1 / (4 * math.pi * k**2 * t**2) == pytest.approx(9.0)
    np.testing.assert_allclose(matern_correlation([0.0, 2.0], 2.0, 1.0), [1.0, 0.13967], atol=1e-5)


def test_pc_prior_rates():
    lam1, lam2 = pc_prior_rates(0.5, 0.05, 2.0, 0.01)
    # 1/range ~ Exp(lam1): P(range < 0.5) = P(1/range > 2) = exp(-2 lam1).
    assert math.exp(-lam1 / 0.5) == pytest.approx(0.05)
    assert math.exp(-lam2 * 2.0) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="p_range"):
        pc_prior_rates(0.5, 1.5, 2.0, 0.01)


def _interior_error(h):
    square = np.array([[-1.0, -1], [1, -1], [1, 1], [-1, 1]])
    mesh = mesh_from_points(np.zeros((1, 2)), boundary=square, max_edge=(h, 0.35), extension=3.0)
    S = SPDEPrecision(mesh, 2)
    F = CACHE.factor(S.pattern, S.values(*kappa_tau(1.0, 1.0, 2)))
    i0 = int(np.argmin(np.linalg.norm(mesh.nodes, axis=1)))
    e = np.zeros(mesh.n)
    e[i0] = 1.0
    cov = F.solve(e)
    r = np.linalg.norm(mesh.nodes - mesh.nodes[i0], axis=1)
    near = r <= 1.0
    return np.abs(cov[near] - matern_correlation(r[near], 1.0, 1.0)).max()


def test_covariance_converges_to_matern():
    # Range 1, sigma 1, centre of a square meshed at h, 3 ranges of extension.
    errors = [_interior_error(h) for h in (0.2, 0.1, 0.05)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.02


def test_bad_inputs(mesh):
    with pytest.raises(ValueError, match="alpha"):
        SPDEPrecision(mesh, 3)
    with pytest.raises(ValueError, match="range_bounds"):
        SPDEPrecision(mesh, 2).s_interval((1.0, 0.5))
