import numpy as np
import pytest
import scipy.sparse as sp

import pymc_sparse as pms
from pymc_sparse.linalg.graph import bipartite_components, components
from pymc_sparse.linalg.validate import symmetric_csc
from tests.helpers import lattice_adjacency


def test_asymmetry_hidden_by_a_large_diagonal_is_refused():
    # Relative to max|Q| = 1e12 the pair (-0.5, -0.6) would pass; per entry it does not.
    Q = np.array([[1e12, -0.5, 0.0], [-0.6, 2.0, -0.1], [0.0, -0.1, 3.0]])
    with pytest.raises(ValueError, match=r"Q\[1, 0\] = -0.6"):
        symmetric_csc(Q)
    with pytest.raises(ValueError, match="not symmetric"):
        pms.logdet(Q)


def test_rounding_level_asymmetry_passes():
    rng = np.random.default_rng(0)
    B = rng.standard_normal((6, 6))
    Q = B @ B.T + 6 * np.eye(6)
    Q[0, 1] *= 1 + 1e-13
    A = symmetric_csc(Q, symmetrise=True)
    assert abs(A - A.T).max() == 0


def test_triangle_only_input_gets_the_right_fix():
    Q = np.array([[2.0, -1.0, 0.0], [-1.0, 2.0, -1.0], [0.0, -1.0, 2.0]])
    L = sp.tril(Q).tocsc()
    with pytest.raises(ValueError, match=r"Q \+ Q.T - scipy.sparse.diags") as err:
        symmetric_csc(L)
    assert "halves" in str(err.value)
    # The advised fix gives back Q exactly; the wrong one does not.
    fixed = L + L.T - sp.diags(L.diagonal())
    assert np.allclose(fixed.toarray(), Q)
    assert np.isclose(np.linalg.slogdet(fixed.toarray())[1], np.linalg.slogdet(Q)[1])


def test_components_and_bipartite_counts():
    W = sp.block_diag([lattice_adjacency(3, 3), sp.csc_matrix(np.ones((3, 3)) - np.eye(3))])
    k, labels = components(W)
    assert k == 2 and labels[0] == 0 and labels[-1] == 1
    # A lattice is bipartite, a triangle is not.
    assert bipartite_components(W, labels) == 1
    # Reference: the same counts by dense eigenvalues (D - alpha W singular at -1).
    d = np.asarray(W.sum(1)).ravel()
    M = W.toarray() / np.sqrt(np.outer(d, d))
    ev = np.linalg.eigvalsh(M)
    assert np.sum(np.isclose(ev, 1.0)) == 2
    assert np.sum(np.isclose(ev, -1.0)) == 1
