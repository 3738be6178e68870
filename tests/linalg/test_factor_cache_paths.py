"""The factor cache's fast paths (issue 16): simplicial factors packed into supernodes,
the per-pattern choice of ordering, the value comparison before the fingerprint, and
the pooled work arrays, all against dense references."""

import numpy as np
import pytest
import scipy.sparse as sp

import pymc_sparse.linalg.cholmod as cholmod_mod
from pymc_sparse.linalg.cholmod import CholeskyCache
from pymc_sparse.linalg.cholmod_struct import symbolic_flops
from pymc_sparse.linalg.pattern import SparsityPattern
from pymc_sparse.linalg.takahashi import takahashi_simplicial
from tests.helpers import MATRIX_IDS, car_precision, grid_laplacian, lattice_adjacency, matrix
from tests.linalg.test_takahashi import lattice3, rel_err


def cases():
    out = [(name, matrix(name)) for name in MATRIX_IDS]
    out += [
        ("grid30", grid_laplacian(30)),  # fill-in, simplicial
        ("car32", car_precision(lattice_adjacency(32), 0.9, 2.0)),
        ("lattice3_6", lattice3(6)),
        ("lattice3_10", lattice3(10)),  # supernodal
    ]
    return out


PARAMS = [(name, A, "auto") for name, A in cases()]
PARAMS += [(name, A, o) for name, A in cases() if name in ("car32", "lattice3_6") for o in ("amd", "metis")]  # fmt: skip  # noqa: E501


@pytest.mark.parametrize("name,A,ordering", PARAMS, ids=[f"{c[0]}-{c[2]}" for c in PARAMS])
def test_every_path_matches_dense(name, A, ordering):
    A = sp.csc_matrix(A)
    pattern, data = SparsityPattern.from_scipy(A)
    cache = CholeskyCache(ordering=ordering)
    f = cache.factor(pattern, data)
    assert f.ok
    C = np.linalg.inv(A.toarray())
    sym = f.symbolic
    simplicial = sym.simplicial is not None or sym.supernodes is None
    assert rel_err(f.selected_inverse(), C[pattern.rows, pattern.cols]) < 1e-10
    assert f.logdet() == pytest.approx(np.linalg.slogdet(A.toarray())[1], rel=1e-12, abs=1e-12)
    L = f.L()
    p = sym.perm
    assert L.has_sorted_indices
    assert rel_err((L @ L.T).toarray(), A.toarray()[np.ix_(p, p)]) < 1e-12
    Z = f.selected_inverse_factor()
    assert rel_err(Z, takahashi_simplicial(L.indptr, L.indices, L.data)) < 1e-12
    cols = np.repeat(np.arange(A.shape[0]), np.diff(L.indptr))
    assert rel_err(Z, C[np.ix_(p, p)][L.indices, cols]) < 1e-10
    if name in ("grid30", "car32"):
        assert simplicial and sym.simplicial is not None
    if name == "lattice3_10":
        assert sym.supernodes is not None and sym.simplicial is None
    # New values at the same pattern reuse the plan and the pooled work arrays.
    for scale in (2.0, 0.5, 3.0):
        g = cache.factor(pattern, scale * data)
        assert rel_err(g.selected_inverse(), C[pattern.rows, pattern.cols] / scale) < 1e-10
    assert cache.info()["symbolic"] == 1


def test_simplicial_factor_converted_in_place_is_read_again():
    # scikit-sparse's solve_Lt(..., use_LDLt_decomposition=False) turns L D L' into L L'
    # in place; what is read after that must follow the new arrays.
    A = grid_laplacian(12)
    pattern, data = SparsityPattern.from_scipy(A)
    cache = CholeskyCache()
    cache.factor(pattern, 0.5 * data).selected_inverse()  # builds the simplicial plan
    f = cache.factor(pattern, data)
    z = np.random.default_rng(0).standard_normal(A.shape[0])
    x = f.solve_Lt_perm(z)
    assert np.isfinite(x).all()
    C = np.linalg.inv(A.toarray())
    assert rel_err(f.selected_inverse(), C[pattern.rows, pattern.cols]) < 1e-10
    assert f.symbolic.simplicial is not None
    p = f.symbolic.perm
    L = f.L()
    assert rel_err((L @ L.T).toarray(), A.toarray()[np.ix_(p, p)]) < 1e-12


def test_repeated_values_and_caller_mutation():
    A = grid_laplacian(8)
    pattern, data = SparsityPattern.from_scipy(A)
    cache = CholeskyCache()
    a = data.copy()
    f1 = cache.factor(pattern, a)
    assert cache.factor(pattern, a.copy()) is f1
    assert cache.info()["hits"] == 1
    a *= 2.0  # the caller changes its array: the cached factor keeps its own values
    f2 = cache.factor(pattern, a)
    assert f2 is not f1
    assert f2.logdet() == pytest.approx(f1.logdet() + A.shape[0] * np.log(2.0), rel=1e-12)
    assert cache.factor(pattern, data) is f1  # still cached, found by its fingerprint


def test_fingerprint_collisions_never_return_another_factor(monkeypatch):
    monkeypatch.setattr(cholmod_mod, "_digest", lambda data: 0)
    A = grid_laplacian(6)
    pattern, data = SparsityPattern.from_scipy(A)
    cache = CholeskyCache()
    ref = np.linalg.slogdet(A.toarray())[1]
    for scale in (1.0, 2.0, 1.0, 3.0, 2.0):
        f = cache.factor(pattern, scale * data)
        assert f.logdet() == pytest.approx(ref + A.shape[0] * np.log(scale), rel=1e-12)


def test_auto_ordering_keeps_the_cheaper_analysis():
    for A in (car_precision(lattice_adjacency(32), 0.9, 2.0), lattice3(10)):
        pattern, data = SparsityPattern.from_scipy(A)
        auto = CholeskyCache(ordering="auto").factor(pattern, data).symbolic
        flops = {}
        for ordering in ("amd", "metis"):
            sym = CholeskyCache(ordering=ordering).factor(pattern, data).symbolic
            flops[ordering] = symbolic_flops(sym.analysis, pattern.n)
            assert sym.ordering == ordering
        assert auto.ordering in flops
        assert symbolic_flops(auto.analysis, pattern.n) == min(flops.values())


def test_failures_keep_their_classification_on_the_fast_paths():
    # Indefinite (simplicial, negative pivot) and singular (ICAR structure) matrices.
    A = grid_laplacian(10, shift=-0.5)
    pattern, data = SparsityPattern.from_scipy(A)
    f = CholeskyCache().factor(pattern, data)
    assert not f.ok and np.isnan(f.logdet()) and np.isnan(f.selected_inverse()).all()
    W = lattice_adjacency(10)
    S = sp.diags(np.asarray(W.sum(axis=1)).ravel()) - W
    pattern, data = SparsityPattern.from_scipy(sp.csc_matrix(S))
    f = CholeskyCache().factor(pattern, data)
    assert not f.ok and f.singular
