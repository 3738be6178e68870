"""Initial points of CAR and SparseGMRF never draw from the field or factorise Q (issue 16).

A support point that references the random variable (``full_like(rv, mu)``, or only
``rv.shape``) makes pymc's initial-point function collect the RV's RNG update and sample
the field: one CHOLMOD analysis, factorisation and solve at model set-up, 110 s of a
compile at n = 10^6.
"""

import numpy as np
import pymc as pm
import pytest

from pymc_sparse.distributions.car import CAR, CARRV, car_structure
from pymc_sparse.distributions.gmrf import SparseGMRF, SparseGMRFRV
from pymc_sparse.linalg.cholmod import CACHE
from pymc_sparse.ops.matrix import SparseMatrix
from pymc_sparse.precision import car_precision, lattice_adjacency


@pytest.fixture
def no_factorisation(monkeypatch):
    """Call it to make every factorisation and every draw of the two fields raise."""

    def boom(*args, **kwargs):
        raise AssertionError("the initial point factorised Q or drew from the field")

    def arm():
        monkeypatch.setattr(CACHE, "factor", boom)
        monkeypatch.setattr(CARRV, "rng_fn", boom)
        monkeypatch.setattr(SparseGMRFRV, "rng_fn", boom)

    return arm


def test_car_initial_point_is_the_mean_without_a_draw(no_factorisation):
    W = lattice_adjacency(3, 4)
    mu = np.arange(12.0)
    with pm.Model() as m:
        alpha = pm.Uniform("alpha", 0.0, 1.0)
        tau = pm.Gamma("tau", 2.0, 1.0)
        CAR("x", mu=mu, W=W, alpha=alpha, tau=tau)
        CAR("xs", mu=1.5, W=W, alpha=alpha, tau=tau, size=(2,))
        CAR("xb", mu=np.ones((3, 12)), W=W, alpha=0.5, tau=tau)
        CAR("xsh", mu=-1.0, W=W, alpha=alpha, tau=1.0, shape=(2, 3, 12))
    no_factorisation()
    ip = m.initial_point()
    np.testing.assert_array_equal(ip["x"], mu)
    np.testing.assert_array_equal(ip["xs"], np.full((2, 12), 1.5))
    np.testing.assert_array_equal(ip["xb"], np.ones((3, 12)))
    np.testing.assert_array_equal(ip["xsh"], np.full((2, 3, 12), -1.0))


def test_gmrf_initial_point_is_the_mean_without_a_draw(no_factorisation):
    Q = SparseMatrix.from_scipy(car_precision(lattice_adjacency(3, 3), 0.9, 2.0))
    with pm.Model() as m:
        SparseGMRF("x", Q=Q, mu=2.0)
        SparseGMRF("xs", Q=Q, mu=np.arange(9.0), size=(4,))
    # A constant Q is factorised once when the variable is created (to reject a Q that is
    # not positive definite by name); the initial point must not factorise it again.
    no_factorisation()
    ip = m.initial_point()
    np.testing.assert_array_equal(ip["x"], np.full(9, 2.0))
    np.testing.assert_array_equal(ip["xs"], np.tile(np.arange(9.0), (4, 1)))


def test_logp_function_compiles_without_a_factorisation(no_factorisation):
    """``logp_dlogp_function`` (which takes the initial point) builds without CHOLMOD."""
    W = lattice_adjacency(4, 4)
    with pm.Model() as m:
        alpha = pm.Uniform("alpha", 0.0, 1.0)
        CAR("x", mu=0.0, W=W, alpha=alpha, tau=1.0, logdet="exact")
    no_factorisation()
    m.logp_dlogp_function(ravel_inputs=True)


def test_structure_matches_the_sparse_sum(rng):
    """``car_structure`` writes the pattern of diag + tril(W) directly: same as scipy's sum."""
    import scipy.sparse as sp

    W = sp.triu(sp.random(40, 40, density=0.1, random_state=3), 1)
    W = (W + W.T).tocsc()
    W.data = rng.uniform(0.2, 3.0, W.nnz)
    W = (W + W.T) / 2
    pattern, d_data, w_data = car_structure(W, isolated="iid")
    d = np.asarray(W.sum(axis=1)).ravel()
    d[d == 0] = 1.0
    ref = sp.tril(sp.diags(d) + W, format="csc")
    ref.sort_indices()
    np.testing.assert_array_equal(pattern.indptr, ref.indptr)
    np.testing.assert_array_equal(pattern.indices, ref.indices)
    Q = pattern.to_scipy(d_data - w_data).toarray()
    np.testing.assert_allclose(Q, np.diag(d) - W.toarray())


def test_icar_bym2_matern_initial_points_without_a_draw(monkeypatch):
    """ICAR (and so BYM2) and MaternSPDE support points do not reference the draw either."""
    from pymc_sparse.distributions.bym2 import BYM2
    from pymc_sparse.distributions.icar import ICAR, ICARRV
    from pymc_sparse.distributions.matern import MaternSPDE, MaternSPDERV
    from pymc_sparse.spde.mesh import mesh_from_points

    def boom(*args, **kwargs):
        raise AssertionError("the initial point drew from the field")

    W = lattice_adjacency(3, 4)
    mesh = mesh_from_points(
        np.random.default_rng(5).uniform(size=(8, 2)), max_edge=(0.3, 0.6), extension=0.3
    )
    with pm.Model() as m:
        s = pm.HalfNormal("s", 1.0)
        ICAR("u", W=W, sigma=s)
        ICAR("us", W=W, size=(2,))
        BYM2("b", W=W, sigma=s, rho=0.5)
        MaternSPDE("f", mesh=mesh, range=0.5, sigma=s, mu=0.25)
    monkeypatch.setattr(ICARRV, "rng_fn", boom)
    monkeypatch.setattr(MaternSPDERV, "rng_fn", boom)
    monkeypatch.setattr(CACHE, "factor", boom)
    ip = m.initial_point()
    np.testing.assert_array_equal(ip["u_zerosum__"], np.zeros(11))  # 12 nodes, 1 component
    np.testing.assert_array_equal(ip["us_zerosum__"], np.zeros((2, 11)))
    np.testing.assert_array_equal(ip["b_u_zerosum__"], np.zeros(11))
    np.testing.assert_array_equal(ip["f"], np.full(mesh.n, 0.25))
