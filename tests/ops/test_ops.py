import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
import scipy.linalg
import scipy.sparse as sp
from pytensor.gradient import verify_grad

import pymc_sparse as pms
from pymc_sparse.linalg.pattern import SparsityPattern
from tests.helpers import MATRIX_IDS, lattice_adjacency, matrix

MODES = ["FAST_RUN", "NUMBA"]


def _symbolic(A):
    p, d = SparsityPattern.from_scipy(A)
    data = pt.dvector("data")
    return p, d, data, pms.SparseMatrix(p, data)


def test_grid_has_fill_in():
    import sksparse.cholmod as chol

    A = matrix("grid5")
    L = chol.cholesky(A).L()
    assert L.nnz > sp.tril(A).nnz  # the Takahashi recursion must touch fill entries


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", MATRIX_IDS)
def test_logdet_value(name, mode):
    A = matrix(name)
    _p, d, data, Q = _symbolic(A)
    f = pytensor.function([data], pms.logdet(Q), mode=mode)
    np.testing.assert_allclose(f(d), np.linalg.slogdet(A.toarray())[1], rtol=1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", MATRIX_IDS)
def test_solve_value(name, mode, rng):
    A = matrix(name)
    _p, d, data, Q = _symbolic(A)
    b = pt.dmatrix("b")
    bv = pt.dvector("bv")
    f = pytensor.function([data, b, bv], [pms.solve(Q, b), pms.solve(Q, bv)], mode=mode)
    B = rng.normal(size=(A.shape[0], 3))
    x, xv = f(d, B, B[:, 0])
    np.testing.assert_allclose(x, scipy.linalg.solve(A.toarray(), B), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(xv, x[:, 0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", MATRIX_IDS)
def test_selected_inverse_value(name, mode):
    A = matrix(name)
    p, d, data, Q = _symbolic(A)
    f = pytensor.function(
        [data], [pms.selected_inverse(Q).data, pms.marginal_variances(Q)], mode=mode
    )
    s, mv = f(d)
    S = np.linalg.inv(A.toarray())
    np.testing.assert_allclose(s, S[p.rows, p.cols], rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(mv, np.diag(S), rtol=1e-11)


@pytest.mark.parametrize("name", MATRIX_IDS)
def test_verify_grad_raw_values(name, rng):
    A = matrix(name)
    p, d = SparsityPattern.from_scipy(A)
    b = rng.normal(size=A.shape[0])
    B = rng.normal(size=(A.shape[0], 2))
    verify_grad(lambda v: pms.logdet(pms.SparseMatrix(p, v)), [d], rng=rng)
    verify_grad(lambda v, b: pms.solve(pms.SparseMatrix(p, v), b), [d, b], rng=rng)
    verify_grad(lambda v, b: pms.solve(pms.SparseMatrix(p, v), b), [d, B], rng=rng)


def test_verify_grad_car_path(rng):
    W = lattice_adjacency(4)
    D = sp.diags(np.asarray(W.sum(1)).ravel())
    b = rng.normal(size=16)

    def Qof(tau, alpha):
        return tau * (pms.SparseMatrix.from_scipy(D) - alpha * pms.SparseMatrix.from_scipy(W))

    verify_grad(lambda t, a: pms.logdet(Qof(t, a)), [np.array(2.0), np.array(0.6)], rng=rng)
    verify_grad(lambda t, a, b: pms.solve(Qof(t, a), b), [np.array(2.0), np.array(0.6), b], rng=rng)


def test_logdet_grad_is_selected_inverse():
    A = matrix("grid5")
    p, d, data, Q = _symbolic(A)
    g = pytensor.function([data], pytensor.grad(pms.logdet(Q), data))(d)
    S = np.linalg.inv(A.toarray())
    np.testing.assert_allclose(g, p.symmetric_weights * S[p.rows, p.cols], rtol=1e-11)


def test_one_factorisation_per_point():
    W = lattice_adjacency(6)
    D = sp.diags(np.asarray(W.sum(1)).ravel())
    tau, alpha = pt.dscalars("tau", "alpha")
    x = pt.dvector("x")
    Q = tau * (pms.SparseMatrix.from_scipy(D) - alpha * pms.SparseMatrix.from_scipy(W))
    logp = 0.5 * pms.logdet(Q) - 0.5 * Q.quad_form(x) + pt.sum(pms.solve(Q, x))
    f = pytensor.function([tau, alpha, x], [logp, *pytensor.grad(logp, [tau, alpha, x])])
    pms.clear_cache()
    f(1.0, 0.5, np.ones(36))
    info = pms.cache_info()
    assert info["numeric"] == 1 and info["symbolic"] == 1
    f(1.0, 0.6, np.ones(36))
    assert pms.cache_info()["numeric"] == 2 and pms.cache_info()["symbolic"] == 1


@pytest.mark.parametrize("mode", MODES)
def test_not_positive_definite_gives_nan(mode):
    A = matrix("grid5").toarray()
    A[3, 3] = -5.0
    _p, d, data, Q = _symbolic(sp.csc_matrix(A))
    f = pytensor.function(
        [data], [pms.logdet(Q), pms.solve(Q, pt.ones(25)), pms.selected_inverse(Q).data], mode=mode
    )
    ld, x, s = f(d)
    assert np.isnan(ld) and np.all(np.isnan(x)) and np.all(np.isnan(s))
    g = pytensor.function([data], pytensor.grad(pms.logdet(Q), data), mode=mode)(d)
    assert np.all(np.isnan(g))


def test_nan_values_give_nan_inside_graph():
    _p, d, data, Q = _symbolic(matrix("grid5"))
    d = d.copy()
    d[0] = np.nan
    assert np.isnan(pytensor.function([data], pms.logdet(Q))(d))


def test_cholesky_helper_raises_with_column():
    A = matrix("banded20").toarray()
    A[7, 7] = -1.0
    with pytest.raises(pms.NotPositiveDefiniteError, match="column"):
        pms.cholesky(sp.csc_matrix(A))


def test_cholesky_helper_values(rng):
    A = matrix("random30")
    f = pms.cholesky(A)
    np.testing.assert_allclose(f.logdet(), np.linalg.slogdet(A.toarray())[1])


def test_runtime_length_mismatch_raises():
    _p, _d, data, Q = _symbolic(matrix("grid5"))
    f = pytensor.function([data], pms.logdet(Q))
    with pytest.raises(ValueError, match="values vector of length"):
        f(np.ones(3))


def test_solve_shape_mismatch_raises():
    _p, _d, _data, Q = _symbolic(matrix("grid5"))
    with pytest.raises(ValueError, match="rows"):
        pms.solve(Q, pt.ones(7))


def test_sample_gmrf_covariance():
    A = matrix("grid5")
    X = pms.sample_gmrf(A, size=40000, rng=1)
    assert X.shape == (40000, 25)
    C = np.cov(X.T)
    S = np.linalg.inv(A.toarray())
    # Sample covariance of 40000 draws: sd of an entry ~ sqrt((S_ii S_jj + S_ij^2)/N).
    se = np.sqrt((np.outer(np.diag(S), np.diag(S)) + S**2) / 40000)
    assert np.max(np.abs(C - S) / se) < 5.0
    assert np.max(np.abs(X.mean(0)) / np.sqrt(np.diag(S) / 40000)) < 5.0


def test_sample_gmrf_not_pd_raises():
    A = matrix("grid5").toarray()
    A[0, 0] = -1.0
    with pytest.raises(pms.NotPositiveDefiniteError):
        pms.sample_gmrf(sp.csc_matrix(A), size=3)


def test_logdet_from_supernodal_blocks_matches_dense():
    """A supernodal factor's logdet is read from CHOLMOD's blocks in place: check it."""
    from pymc_sparse.linalg.cholmod import CACHE
    from pymc_sparse.linalg.takahashi import supernodal_view_cached
    from tests.helpers import grid_laplacian

    A = grid_laplacian(100, shift=0.05)  # large enough for CHOLMOD to go supernodal
    p, d = SparsityPattern.from_scipy(A)
    f = CACHE.factor(p, d)
    assert supernodal_view_cached(f.chol, p.n, f.symbolic) is not None  # supernodal path taken
    # Reference: scikit-sparse's own logdet of the same factor (a converted copy).
    np.testing.assert_allclose(f.logdet(), f.chol.logdet(), rtol=1e-13)
    bad = A.tolil()
    bad[100, 100] = -3.0
    p2, d2 = SparsityPattern.from_scipy(bad.tocsc())
    assert np.isnan(CACHE.factor(p2, d2).logdet())
