"""Every Op of the package under PyTensor's NUMBA backend, against the C backend.

Values and gradients must agree to rounding, and no Op may fall back to object mode
on its ``perform`` (PyTensor warns when it does; the warning is an error here).
"""

import warnings

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

import pymc_sparse.dispatch.numba  # noqa: F401  (registers the dispatch)
from pymc_sparse.linalg.pattern import SparsityPattern
from pymc_sparse.logdet1d.families import car_logdet_family
from pymc_sparse.ops.logdet import logdet
from pymc_sparse.ops.matrix import SparseMatrix
from pymc_sparse.ops.selinv import selected_inverse
from pymc_sparse.ops.solve import solve
from pymc_sparse.ops.table import tabulated_logdet
from tests.helpers import grid_laplacian, lattice_adjacency


def _both(inputs, outputs, values):
    """Outputs compiled with C and with NUMBA (no object-mode fallback allowed)."""
    c = pytensor.function(inputs, outputs, mode="FAST_RUN")(*values)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*object mode.*")
        numba_fn = pytensor.function(inputs, outputs, mode="NUMBA")
    return c, numba_fn(*values)


def _assert_same(c, nb, rtol=1e-10):
    assert len(c) == len(nb)
    for a, b in zip(c, nb, strict=True):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=1e-12)


@pytest.fixture
def grid():
    A = grid_laplacian(4)  # fill-in
    pattern, q = SparsityPattern.from_scipy(A)
    return pattern, q


def test_logdet_selinv_and_their_gradients(grid):
    pattern, q = grid
    d = pt.vector("d")
    Q = SparseMatrix(pattern, d)
    ld = logdet(Q)
    S = selected_inverse(Q).data
    cost = ld + pt.sum(pt.sin(S))  # grad of S runs SparseSelectedInverseGrad
    outs = [ld, S, *pytensor.grad(cost, [d])]
    _assert_same(*_both([d], outs, [q]))


def test_solve_value_and_gradient(grid, rng):
    pattern, q = grid
    d, b, B = pt.vector("d"), pt.vector("b"), pt.matrix("B")
    Q = SparseMatrix(pattern, d)
    x, X = solve(Q, b), solve(Q, B)
    cost = pt.sum(x**2) + pt.sum(X)
    outs = [x, X, *pytensor.grad(cost, [d, b, B])]
    vals = [q, rng.normal(size=pattern.n), rng.normal(size=(pattern.n, 2))]
    _assert_same(*_both([d, b, B], outs, vals))


def test_matvec_quad_form_pair_product(grid, rng):
    pattern, q = grid
    d, x, X = pt.vector("d"), pt.vector("x"), pt.matrix("X")
    Q = SparseMatrix(pattern, d)
    cost = Q.quad_form(x) + pt.sum(pt.cos(Q @ x)) + pt.sum(Q.quad_form(X)) + pt.sum(Q @ X)
    outs = [Q @ x, Q.quad_form(x), Q @ X, Q.quad_form(X), *pytensor.grad(cost, [d, x, X])]
    vals = [q, rng.normal(size=pattern.n), rng.normal(size=(pattern.n, 3))]
    _assert_same(*_both([d, x, X], outs, vals))


def test_one_parameter_logdet_table():
    fam = car_logdet_family(lattice_adjacency(5, 4))
    a = pt.scalar("a")
    f = tabulated_logdet(fam, a)
    g = pytensor.grad(f, a)
    outs = [f, g, pytensor.grad(g, a)]
    for alpha in (0.3, -0.5, 0.99):
        _assert_same(*_both([a], outs, [np.float64(alpha)]))


def test_not_spd_is_nan_under_numba(grid):
    pattern, q = grid
    d = pt.vector("d")
    f = pytensor.function([d], logdet(SparseMatrix(pattern, d)), mode="NUMBA")
    assert np.isnan(f(-q))
