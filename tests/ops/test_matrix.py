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
    p, _ = SparsityPattern.from_scipy(grid_laplacian(3))
    with pytest.raises(ValueError, match="stores 21 values"):
        pms.SparseMatrix(p, np.ones(5))


def test_float32_upcast_with_warning():
    p, _ = SparsityPattern.from_scipy(grid_laplacian(3))
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


# ------------------------------------------------ fused matvec / quadratic form (issue 16)
@pytest.mark.parametrize(
    "mode", ["FAST_RUN", "NUMBA", "FAST_COMPILE", "JAX"], ids=["c", "numba", "py", "jax"]
)
def test_fused_ops_match_dense_on_every_backend(mode, rng):
    if mode == "JAX":
        pytest.importorskip("jax")
        import pymc_sparse.dispatch.jax  # noqa: F401
    A = grid_laplacian(4)  # genuine fill-in pattern, unsymmetric column lengths
    pattern, q = SparsityPattern.from_scipy(A)
    d, x, X = pt.vector("d"), pt.vector("x"), pt.matrix("X")
    Q = pms.SparseMatrix(pattern, d)
    outs = [Q @ x, Q.quad_form(x), Q @ X, Q.quad_form(X), Q.quad_form(x, 2 * x)]
    cost = Q.quad_form(x) + pt.sum(pt.sin(Q @ x)) + pt.sum(Q.quad_form(X))
    f = pytensor.function([d, x, X], [*outs, *pytensor.grad(cost, [d, x, X])], mode=mode)
    xv, Xv = rng.normal(size=pattern.n), rng.normal(size=(pattern.n, 3))
    got = f(q, xv, Xv)
    Ad = A.toarray()
    np.testing.assert_allclose(got[0], Ad @ xv, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got[1], xv @ Ad @ xv, rtol=1e-12)
    np.testing.assert_allclose(got[2], Ad @ Xv, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got[3], np.einsum("ik,ij,jk->k", Xv, Ad, Xv), rtol=1e-12)
    np.testing.assert_allclose(got[4], 2 * xv @ Ad @ xv, rtol=1e-12)
    # Gradient in x from the dense formula; in d against finite differences below.
    gx = 2 * Ad @ xv + Ad @ np.cos(Ad @ xv)
    np.testing.assert_allclose(got[6], gx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got[7], 2 * Ad @ Xv, rtol=1e-10, atol=1e-12)
    w = pattern.symmetric_weights
    r, c = pattern.rows, pattern.cols
    u = np.cos(Ad @ xv)
    gd = w * xv[r] * xv[c] + np.where(r == c, u[r] * xv[c], u[r] * xv[c] + u[c] * xv[r])
    gd += w * np.einsum("ek,ek->e", Xv[r], Xv[c])
    np.testing.assert_allclose(got[5], gd, rtol=1e-10, atol=1e-12)


def test_fused_ops_verify_grad_second_order(rng):
    A = grid_laplacian(3)
    pattern, q = SparsityPattern.from_scipy(A)
    x0 = rng.normal(size=pattern.n)

    def grad_norm(d, x):
        Q = pms.SparseMatrix(pattern, d)
        g = pytensor.grad(Q.quad_form(x) + pt.sum(pt.sin(Q @ x)), [d, x])
        return pt.sum(g[0] ** 2) + pt.sum(g[1] ** 2)

    verify_grad(grad_norm, [q, x0], rng=rng)
    verify_grad(lambda d, x: pms.SparseMatrix(pattern, d).quad_form(x), [q, x0], rng=rng)
    X0 = rng.normal(size=(9, 2))
    verify_grad(lambda d, X: pt.sum(pms.SparseMatrix(pattern, d) @ X), [q, X0], rng=rng)


def test_wrong_vector_length_raises_at_build():
    # Issue 18: a vector of length n + 3 used to be truncated silently.
    Q = pms.SparseMatrix.from_scipy(grid_laplacian(3))  # n = 9
    bad = pt.vector("x", shape=(12,))
    with pytest.raises(ValueError, match=r"length 12 but the matrix is 9 x 9"):
        Q @ bad
    with pytest.raises(ValueError, match=r"length 12 but the matrix is 9 x 9"):
        Q.quad_form(bad)
    with pytest.raises(ValueError, match=r"length 12 but the matrix is 9 x 9"):
        Q.quad_form(bad, pt.vector("y"))
    with pytest.raises(ValueError, match=r"length 12 but the matrix is 9 x 9"):
        Q.quad_form(np.ones(12))


@pytest.mark.parametrize("mode", ["FAST_RUN", "NUMBA", "FAST_COMPILE"], ids=["c", "numba", "py"])
def test_wrong_vector_length_raises_at_run_time(mode):
    Q = pms.SparseMatrix.from_scipy(grid_laplacian(3))  # n = 9
    x = pt.vector("x")
    f = pytensor.function([x], [Q @ x, Q.quad_form(x)], mode=mode)
    assert np.isfinite(f(np.ones(9))[1])
    with pytest.raises(ValueError, match="length"):
        f(np.ones(12))
    with pytest.raises(ValueError, match="length"):
        f(np.ones(3))


@pytest.mark.parametrize("mode", ["FAST_RUN", "NUMBA"])
def test_quad_form_and_matvec_on_strided_inputs(mode, rng):
    """The C loops' unit-stride path and strided path give the same, dense-checked values."""
    from pymc_sparse.ops.quadform import SparseMatVec, SparseQuadForm

    A = random_spd(15, 0.3, rng)
    pattern, data = SparsityPattern.from_scipy(A)
    x = rng.normal(size=15)
    d, v = pt.dvector("d"), pt.dvector("v")
    ip, ix = pattern.indptr.astype(np.int64), pattern.indices.astype(np.int64)
    quad, qx = SparseQuadForm()(d, v, ip, ix)
    outs = [quad, qx, SparseMatVec()(d, v, ip, ix)]
    f = pytensor.function([d, v], outs, mode=mode)
    big_d, big_x = np.repeat(data, 2), np.repeat(x, 3)
    for dd, xx in ((data, x), (big_d[::2], big_x[::3])):  # contiguous, then strided views
        assert xx.strides[0] != 8 or dd is data
        q, y, y2 = f(dd, xx)
        dense = A.toarray()
        np.testing.assert_allclose(y, dense @ x, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(y2, dense @ x, rtol=1e-12, atol=1e-12)
        assert q == pytest.approx(x @ dense @ x, rel=1e-12)
