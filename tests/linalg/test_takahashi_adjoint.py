"""Reverse-mode derivative of the selected inverse: kernels, Op, Hessians of logdet."""

import itertools

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
import scipy.sparse as sp
from pytensor.gradient import verify_grad

from pymc_sparse.linalg.cholmod import CACHE
from pymc_sparse.linalg.pattern import SparsityPattern
from pymc_sparse.linalg.takahashi_adjoint import (
    csc_supernodes,
    selected_inverse_vjp,
    selected_inverse_vjp_factor,
)
from pymc_sparse.ops.logdet import logdet
from pymc_sparse.ops.matrix import SparseMatrix
from pymc_sparse.ops.selinv import SparseSelectedInverse, marginal_variances
from pymc_sparse.ops.selinv_grad import SparseSelectedInverseGrad
from tests.helpers import (
    MATRIX_IDS,
    block_diagonal,
    grid_laplacian,
    lattice_adjacency,
    matrix,
    random_spd,
)


def dense_vjp(A, sbar):
    """Dense reference: qbar_e = -w_e (S B S)_ij, B symmetric with sbar_e / w_e at (i, j)."""
    pattern, _ = SparsityPattern.from_scipy(A)
    S = np.linalg.inv(A.toarray())
    r, c, w = pattern.rows, pattern.cols, pattern.symmetric_weights
    B = np.zeros((pattern.n, pattern.n))
    np.add.at(B, (r, c), sbar / w)
    off = ~pattern.is_diag
    np.add.at(B, (c[off], r[off]), sbar[off] / w[off])
    return -w * (S @ B @ S)[r, c]


def gradient_matrices():
    rng = np.random.default_rng(11)
    return {
        "grid6": grid_laplacian(6),
        "random25": random_spd(25, 0.12, rng),
        "blockdiag": block_diagonal(rng),
    }


GRAD_IDS = ["grid6", "random25", "blockdiag"]


def test_grid_has_fill_in():
    pattern, data = SparsityPattern.from_scipy(grid_laplacian(6))
    assert CACHE.factor(pattern, data).L().nnz > pattern.nnz


@pytest.mark.parametrize("name", MATRIX_IDS)
def test_vjp_matches_dense(name, rng):
    A = matrix(name)
    pattern, data = SparsityPattern.from_scipy(A)
    sbar = rng.normal(size=pattern.nnz)
    got = selected_inverse_vjp(CACHE.factor(pattern, data), sbar)
    ref = dense_vjp(A, sbar)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())


def kernel_matrices():
    rng = np.random.default_rng(12)
    return {
        "grid20": grid_laplacian(20),
        "random150": random_spd(150, 0.03, rng),  # dense-ish factor: large supernodes
        "blockdiag": block_diagonal(rng),
        "n1": sp.csc_matrix([[2.5]]),
    }


@pytest.mark.parametrize("name", ["grid20", "random150", "blockdiag", "n1"])
def test_supernodal_kernels_match_simplicial_on_whole_factor(name, rng):
    # A cotangent on every entry of L (not only Q's) exercises the whole reverse sweep.
    A = kernel_matrices()[name]
    pattern, data = SparsityPattern.from_scipy(A)
    f = CACHE.factor(pattern, data)
    L, Z = f.L(), f.selected_inverse_factor()
    Zbar = rng.normal(size=L.nnz)
    ref = selected_inverse_vjp_factor(L.indptr, L.indices, L.data, Z, Zbar, supernodal=False)
    got = selected_inverse_vjp_factor(L.indptr, L.indices, L.data, Z, Zbar, supernodal=True)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())


def test_supernode_partition_is_valid():
    pattern, data = SparsityPattern.from_scipy(random_spd(150, 0.03, np.random.default_rng(12)))
    L = CACHE.factor(pattern, data).L()
    ip, ix = L.indptr.astype(np.int64), L.indices.astype(np.int64)
    starts = csc_supernodes(ip, ix)
    assert starts[0] == 0 and starts[-1] == pattern.n and np.all(np.diff(starts) > 0)
    assert starts.size - 1 < pattern.n  # some columns do merge
    for c0, c1 in itertools.pairwise(starts):
        for j in range(c0, c1 - 1):
            np.testing.assert_array_equal(ix[ip[j] + 1 : ip[j + 1]], ix[ip[j + 1] : ip[j + 2]])


def test_vjp_through_factor_method(rng):
    A = grid_laplacian(5)
    pattern, data = SparsityPattern.from_scipy(A)
    sbar = rng.normal(size=pattern.nnz)
    got = CACHE.factor(pattern, data).selected_inverse_vjp(sbar)
    np.testing.assert_allclose(got, dense_vjp(A, sbar), rtol=1e-10, atol=1e-13)


def test_vjp_not_spd_is_nan():
    A = sp.csc_matrix(np.array([[1.0, 2.0], [2.0, 1.0]]))
    pattern, data = SparsityPattern.from_scipy(A)
    out = selected_inverse_vjp(CACHE.factor(pattern, data), np.ones(pattern.nnz))
    assert np.all(np.isnan(out))


def test_vjp_bad_cotangent_shape():
    pattern, data = SparsityPattern.from_scipy(grid_laplacian(3))
    with pytest.raises(ValueError, match="cotangent"):
        selected_inverse_vjp(CACHE.factor(pattern, data), np.ones(pattern.nnz + 1))


@pytest.mark.parametrize("name", GRAD_IDS)
def test_verify_grad_selected_inverse_raw_values(name):
    A = gradient_matrices()[name]
    pattern, data = SparsityPattern.from_scipy(A)
    op = SparseSelectedInverse(pattern)
    verify_grad(op, [data], rng=np.random.default_rng(3), abs_tol=1e-7, rel_tol=1e-6)


@pytest.mark.parametrize("name", GRAD_IDS)
def test_verify_grad_of_pullback_in_cotangent(name, rng):
    # The pullback is linear in sbar; its own pullback is the same Op with weights.
    A = gradient_matrices()[name]
    pattern, data = SparsityPattern.from_scipy(A)
    op = SparseSelectedInverseGrad(pattern)
    sbar = rng.normal(size=pattern.nnz)
    verify_grad(
        lambda s: op(pt.constant(data), s),
        [sbar],
        rng=np.random.default_rng(4),
        abs_tol=1e-7,
        rel_tol=1e-6,
    )


def test_pullback_gradient_in_data_raises():
    pattern, _data = SparsityPattern.from_scipy(grid_laplacian(3))
    d = pt.vector("d", shape=(pattern.nnz,))
    out = SparseSelectedInverseGrad(pattern)(d, pt.ones(pattern.nnz)).sum()
    with pytest.raises(Exception, match="Third derivatives"):
        pytensor.grad(out, d)


def _car_parts(m):
    W = lattice_adjacency(m)
    D = sp.diags(np.asarray(W.sum(axis=1)).ravel()).tocsc()
    return D, W


def _fd_hessian(f, t0, h=1e-4):
    ref = np.empty((t0.size, t0.size))
    E = np.eye(t0.size) * h
    for a in range(t0.size):
        for b in range(t0.size):
            pp, pm = f(t0 + E[a] + E[b]), f(t0 + E[a] - E[b])
            mp, mm = f(t0 - E[a] + E[b]), f(t0 - E[a] - E[b])
            ref[a, b] = (pp - pm - mp + mm) / (4 * h * h)
    return ref


@pytest.mark.parametrize("shift", [0.0, 0.5], ids=["car", "car_plus_shift"])
@pytest.mark.parametrize("m", [4, 7])
def test_hessian_logdet_car_vs_finite_differences(m, shift):
    # logdet(tau (D - alpha W)) = n log tau + logdet(D - alpha W) has a zero cross term;
    # adding shift * I couples tau and alpha, so both Hessian shapes are checked.
    D, W = _car_parts(m)
    n = D.shape[0]
    theta = pt.vector("theta", shape=(2,))
    tau, alpha = theta[0], theta[1]
    Q = tau * (SparseMatrix.from_scipy(D) - alpha * SparseMatrix.from_scipy(W))
    if shift:
        Q = Q + SparseMatrix.from_scipy(shift * sp.identity(n, format="csc"))
    H = pytensor.function([theta], pytensor.gradient.hessian(logdet(Q), theta))
    t0 = np.array([1.7, 0.83])
    got = H(t0)

    def f(t):
        sign, ld = np.linalg.slogdet(t[0] * (D - t[1] * W).toarray() + shift * np.eye(n))
        assert sign > 0
        return ld

    np.testing.assert_allclose(got, _fd_hessian(f, t0), rtol=1e-5, atol=1e-5)
    # Exact dense Hessian: -tr(S Q_a S Q_b) + tr(S Q_ab).
    S = np.linalg.inv(t0[0] * (D - t0[1] * W).toarray() + shift * np.eye(n))
    Qa = [(D - t0[1] * W).toarray(), -t0[0] * W.toarray()]
    exact = np.array([[-np.trace(S @ Qa[a] @ S @ Qa[b]) for b in range(2)] for a in range(2)])
    exact[0, 1] += np.trace(S @ -W.toarray())
    exact[1, 0] += np.trace(S @ -W.toarray())
    np.testing.assert_allclose(got, exact, rtol=1e-10, atol=1e-10)
    if shift:
        assert abs(exact[0, 1]) > 1e-2


@pytest.mark.parametrize("name", GRAD_IDS)
def test_grad_sum_marginal_variances_vs_dense(name):
    A = gradient_matrices()[name]
    pattern, data = SparsityPattern.from_scipy(A)
    d = pt.vector("d", shape=(pattern.nnz,))
    cost = marginal_variances(SparseMatrix(pattern, d)).sum()
    g = pytensor.function([d], pytensor.grad(cost, d))(data)
    # d tr(Q^-1) / d q_e = -w_e (S S)_ij.
    S = np.linalg.inv(A.toarray())
    ref = -pattern.symmetric_weights * (S @ S)[pattern.rows, pattern.cols]
    np.testing.assert_allclose(g, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())


def test_grad_marginal_variances_hyperparameter_path():
    D, W = _car_parts(5)
    Dm, Wm = SparseMatrix.from_scipy(D), SparseMatrix.from_scipy(W)
    verify_grad(
        lambda t: pt.log(marginal_variances(t[0] * (Dm - t[1] * Wm))).sum(),
        [np.array([2.0, 0.9])],
        rng=np.random.default_rng(5),
    )


def test_grad_not_spd_is_nan():
    pattern, data = SparsityPattern.from_scipy(grid_laplacian(3))
    d = pt.vector("d", shape=(pattern.nnz,))
    cost = marginal_variances(SparseMatrix(pattern, d)).sum()
    g = pytensor.function([d], pytensor.grad(cost, d))(-data)
    assert np.all(np.isnan(g))
