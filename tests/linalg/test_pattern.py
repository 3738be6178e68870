import numpy as np
import pytest
import scipy.sparse as sp

from pymc_sparse.linalg.pattern import SparsityPattern
from tests.helpers import grid_laplacian, random_spd


def test_from_scipy_roundtrip(rng):
    A = random_spd(20, 0.2, rng)
    p, data = SparsityPattern.from_scipy(A)
    assert np.all(p.rows >= p.cols)
    np.testing.assert_allclose(p.to_scipy(data).toarray(), A.toarray())
    assert p.has_full_diagonal


def test_diagonal_always_stored():
    A = sp.csc_matrix(np.array([[0.0, 1.0], [1.0, 0.0]]))
    p, data = SparsityPattern.from_scipy(A)
    assert p.has_full_diagonal
    np.testing.assert_array_equal(data[p.diag_index], [0.0, 0.0])


def test_hash_and_eq_by_indices():
    A = grid_laplacian(4)
    p1, _ = SparsityPattern.from_scipy(A)
    p2, _ = SparsityPattern.from_scipy(A * 3.0)
    assert p1 == p2 and hash(p1) == hash(p2)
    p3, _ = SparsityPattern.from_scipy(grid_laplacian(5))
    assert p1 != p3


def test_repr_is_short():
    p, _ = SparsityPattern.from_scipy(grid_laplacian(30))
    assert repr(p) == f"SparsityPattern(n=900, nnz={p.nnz})"


def test_union_and_index_of(rng):
    A = random_spd(15, 0.2, rng)
    B = random_spd(15, 0.2, rng)
    pa, da = SparsityPattern.from_scipy(A)
    pb, db = SparsityPattern.from_scipy(B)
    u, ia, ib = pa.union(pb)
    z = np.zeros(u.nnz)
    z[ia] += da
    z[ib] += db
    np.testing.assert_allclose(u.to_scipy(z).toarray(), (A + B).toarray())
    assert np.all(pa.index_of(pa.cols, pa.rows) == np.arange(pa.nnz))


@pytest.mark.parametrize(
    "indptr, indices, match",
    [
        ([0, 1, 2], [0, 0], "lower triangle"),
        ([0, 2, 3], [1, 0, 1], "sorted and unique"),
        ([0, 1], [0], "length n \\+ 1"),
        ([0, 1, 2], [0, 5], "Row indices must lie"),
    ],
    ids=["upper-entry", "unsorted", "bad-indptr", "out-of-range"],
)
def test_bad_patterns_raise(indptr, indices, match):
    with pytest.raises(ValueError, match=match):
        SparsityPattern(2, indptr, indices)


def test_pickle_roundtrip():
    import pickle

    p, _ = SparsityPattern.from_scipy(grid_laplacian(4))
    q = pickle.loads(pickle.dumps(p))
    assert q == p
