import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
import scipy.sparse as sp
from pytensor.gradient import verify_grad

import pymc_sparse as pms
from pymc_sparse.linalg.pattern import SparsityPattern
from tests.helpers import car_precision, grid_laplacian, lattice_adjacency, random_spd


def test_from_scipy_and_repr():
    Q = pms.SparseMatrix.from_scipy(grid_laplacian(3))
    assert repr(Q) == "SparseMatrix(n=9, nnz=21)"
    np.testing.assert_allclose(Q.to_scipy().toarray(), grid_laplacian(3).toarray())


def test_not_symmetric_raises():
    A = sp.csc_matrix(np.array([[2.0, 1.0], [0.5, 2.0]]))
    with pytest.raises(ValueError, match="not symmetric"):
        pms.SparseMatrix.from_scipy(A)


def test_not_square_raises():
    with pytest.raises(ValueError, match="square"):
        pms.SparseMatrix.from_scipy(sp.csc_matrix(np.ones((2, 3))))


def test_nan_raises():
    A = sp.csc_matrix(np.array([[np.nan, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="NaN"):
        pms.SparseMatrix.from_scipy(A)


def test_data_length_mismatch_raises():
    p, d = SparsityPattern.from_scipy(grid_laplacian(3))
    with pytest.raises(ValueError, match="stores 21 values"):
        pms.SparseMatrix(p, np.ones(5))


def test_float32_upcast_with_warning():
    p, d = SparsityPattern.from_scipy(grid_laplacian(3))
    x = pt.vector("x", dtype="float32")
    with pytest.warns(UserWarning, match="upcast to float64"):
        Q = pms.SparseMatrix(p, x)
    assert Q.data.dtype == "float64"


def test_car_arithmetic_matches_dense():
    W = lattice_adjacency(4)
    D = sp.diags(np.asarray(W.sum(1)).ravel())
    tau = pt.dscalar("tau")
    alpha = pt.dscalar("alpha")
    Q = tau * (pms.SparseMatrix.from_scipy(D) - alpha * pms.SparseMatrix.from_scipy(W))
    f = pytensor.function([tau, alpha], Q.data)
    np.testing.assert_allclose(
        Q.pattern.to_scipy(f(2.0, 0.7)).toarray(), car_precision(W, 0.7, 2.0).toarray()
    )


def test_add_diagonal_and_sub(rng):
    A = random_spd(10, 0.3, rng)
    d = rng.uniform(1, 2, 10)
    Q = pms.SparseMatrix.from_scipy(A).add_diagonal(d) - pms.SparseMatrix.from_scipy(
        sp.identity(10)
    )
    np.testing.assert_allclose(Q.to_scipy().toarray(), A.toarray() + np.diag(d) - np.eye(10))
    assert np.allclose(
        pms.SparseMatrix.from_scipy(A).add_diagonal(2.0).to_scipy().diagonal(), A.diagonal() + 2.0
    )


def test_kron_matches_scipy(rng):
    A = random_spd(4, 0.5, rng)
    B = grid_laplacian(2)
    K = pms.kron(A, B)
    np.testing.assert_allclose(K.to_scipy().toarray(), sp.kron(A, B).toarray())


def test_matvec_and_quad_form(rng):
    A = random_spd(12, 0.3, rng)
    Q = pms.SparseMatrix.from_scipy(A)
    x = rng.normal(size=12)
    X = rng.normal(size=(12, 3))
    np.testing.assert_allclose((Q @ x).eval(), A @ x)
    np.testing.assert_allclose((Q @ X).eval(), A @ X)
    np.testing.assert_allclose(Q.quad_form(x).eval(), x @ A @ x)
    np.testing.assert_allclose(Q.quad_form(X).eval(), np.einsum("ik,ij,jk->k", X, A.toarray(), X))


def test_arithmetic_gradients(rng):
    W = lattice_adjacency(3)
    D = sp.diags(np.asarray(W.sum(1)).ravel())
    x0 = rng.normal(size=9)

    def f(tau, alpha, x):
        Q = tau * (pms.SparseMatrix.from_scipy(D) - alpha * pms.SparseMatrix.from_scipy(W))
        return (
            Q.quad_form(x) + pt.sum(Q @ x) + pt.sum(pms.kron(Q, pms.SparseMatrix.identity(2)).data)
        )

    verify_grad(f, [np.array(1.5), np.array(0.4), x0], rng=rng)
