"""Supernodal selected-inversion kernel: dense references, the simplicial reference
kernel, CHOLMOD's factor read in place, and the factor cache's use of it."""

import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from sksparse import cholmod as skc

from pymc_sparse.linalg import takahashi as tk
from pymc_sparse.linalg.cholmod import CholeskyCache
from pymc_sparse.linalg.pattern import SparsityPattern
from pymc_sparse.linalg.takahashi import (
    cholmod_supernodal_view,
    logdet_supernodal,
    map_pattern_to_supernodes,
    supernodal_to_csc,
    supernodes,
    supernodes_from_csc,
    takahashi_simplicial,
    takahashi_supernodal,
)
from pymc_sparse.linalg.takahashi_parallel import parallel_split, run_split
from tests.helpers import MATRIX_IDS, block_diagonal, grid_laplacian, matrix, random_spd


def lattice3(m: int, shift: float = 0.1) -> sp.csc_matrix:
    """3-D lattice Laplacian plus ``shift * I``."""
    T = sp.diags([-np.ones(m - 1), 2.0 * np.ones(m), -np.ones(m - 1)], [-1, 0, 1])
    eye = sp.identity(m)
    A = sp.kron(sp.kron(T, eye), eye) + sp.kron(sp.kron(eye, T), eye)
    return (A + sp.kron(sp.kron(eye, eye), T) + shift * sp.identity(m**3)).tocsc()


def supernodal_factor(A, ordering="amd"):
    """A CHOLMOD factor forced to be supernodal, with its plan and in-place values."""
    low = sp.tril(A).tocsc()
    f = skc.analyze(low, mode="supernodal", ordering_method=ordering).copy()
    f.cholesky_inplace(low)
    view = cholmod_supernodal_view(f, A.shape[0])
    assert view is not None
    return f, *view


def dense_on_factor(A, f, indptr, indices):
    """Dense ``inv(P A P')`` read on the pattern of L."""
    p = f.P()
    C = np.linalg.inv(A.toarray()[np.ix_(p, p)])
    cols = np.repeat(np.arange(A.shape[0]), np.diff(indptr))
    return C[indices, cols]


def rel_err(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


CASES = [*MATRIX_IDS, "grid30", "random300", "disconnected", "lattice3_8"]


def case(name):
    rng = np.random.default_rng(3)
    extra = {
        "grid30": lambda: grid_laplacian(30),
        "random300": lambda: random_spd(300, 0.02, rng),
        "disconnected": lambda: block_diagonal(rng),
        "lattice3_8": lambda: lattice3(8),
    }
    return extra[name]() if name in extra else matrix(name)


@pytest.mark.parametrize("ordering", ["amd", "metis", "nesdis"])
@pytest.mark.parametrize("name", CASES, ids=CASES)
def test_cholmod_supernodal_matches_dense(name, ordering):
    A = case(name)
    f, plan, x = supernodal_factor(A, ordering)
    Z = takahashi_supernodal(plan, x)
    ip, ix, to_x = supernodal_to_csc(plan)
    assert rel_err(Z[to_x], dense_on_factor(A, f, ip, ix)) < 1e-12


@pytest.mark.parametrize("name", CASES, ids=CASES)
def test_fundamental_supernodes_from_csc_match_dense(name):
    A = case(name)
    low = sp.tril(A).tocsc()
    f = skc.analyze(low, mode="simplicial").copy()
    f.cholesky_inplace(low)
    L = sp.csc_matrix(f.L())
    L.sort_indices()
    plan, to_x = supernodes_from_csc(L.indptr, L.indices)
    x = np.zeros(plan.xsize)
    x[to_x] = L.data
    Z = takahashi_supernodal(plan, x)[to_x]
    assert rel_err(Z, dense_on_factor(A, f, L.indptr, L.indices)) < 1e-12
    assert rel_err(Z, takahashi_simplicial(L.indptr, L.indices, L.data)) < 1e-12


@pytest.mark.parametrize(
    "A",
    [grid_laplacian(160), lattice3(22), random_spd(1500, 0.002, np.random.default_rng(5))],
    ids=["grid160", "lattice3_22", "random1500"],
)
def test_large_matches_simplicial_reference(A):
    _f, plan, x = supernodal_factor(A, "metis")
    ip, ix, to_x = supernodal_to_csc(plan)
    Z = takahashi_supernodal(plan, x)[to_x]
    assert rel_err(Z, takahashi_simplicial(ip, ix, x[to_x])) < 1e-12


def test_in_place_values_equal_scikit_sparse_L():
    A = grid_laplacian(40)
    f, plan, x = supernodal_factor(A)
    L = sp.csc_matrix(f.L())
    L.sort_indices()
    ip, ix, to_x = supernodal_to_csc(plan)
    np.testing.assert_array_equal(ip, L.indptr)
    np.testing.assert_array_equal(ix, L.indices)
    np.testing.assert_array_equal(x[to_x], L.data)


def test_factor_cache_uses_supernodal_kernel():
    A = lattice3(10)  # enough fill for CHOLMOD to choose a supernodal factor
    pattern, data = SparsityPattern.from_scipy(A)
    cache = CholeskyCache()
    fac = cache.factor(pattern, data)
    S = fac.selected_inverse()
    assert fac.symbolic.supernodes is not None
    C = np.linalg.inv(A.toarray())
    assert rel_err(S, C[pattern.rows, pattern.cols]) < 1e-12
    # L() and selected_inverse_factor() stay aligned with each other.
    L = fac.L()
    assert L.has_sorted_indices
    Z = fac.selected_inverse_factor()
    assert rel_err(Z, takahashi_simplicial(L.indptr, L.indices, L.data)) < 1e-12
    p = fac.symbolic.perm
    assert rel_err((L @ L.T).toarray(), A.toarray()[np.ix_(p, p)]) < 1e-12
    # A second factor of the same pattern reuses the plan, with new values.
    fac2 = cache.factor(pattern, 2.0 * data)
    assert rel_err(fac2.selected_inverse(), 0.5 * S) < 1e-12
    assert fac2.symbolic.supernodes is fac.symbolic.supernodes
    assert rel_err(fac2.L().toarray(), np.sqrt(2.0) * L.toarray()) < 1e-12
    # Work arrays are recycled between factors without leaking old values.
    assert len(fac.symbolic.selinv_work) >= 1
    for scale in (3.0, 0.25, 5.0):
        s = cache.factor(pattern, scale * data).selected_inverse()
        assert rel_err(s, S / scale) < 1e-12
    with pytest.raises(ValueError, match="contiguous float64"):
        plan = fac.symbolic.supernodes
        takahashi_supernodal(plan, np.ones(plan.xsize), out=np.ones(3))


def test_factor_cache_simplicial_path_unchanged():
    A = grid_laplacian(5)  # CHOLMOD factorises this one simplicially
    pattern, data = SparsityPattern.from_scipy(A)
    fac = CholeskyCache().factor(pattern, data)
    S = fac.selected_inverse()
    assert fac.symbolic.supernodes is None
    assert rel_err(S, np.linalg.inv(A.toarray())[pattern.rows, pattern.cols]) < 1e-12


def test_not_positive_definite_is_nan():
    A = lattice3(10, shift=-1.0)
    pattern, data = SparsityPattern.from_scipy(A)
    fac = CholeskyCache().factor(pattern, data)
    assert not fac.ok
    assert np.all(np.isnan(fac.selected_inverse()))


def test_singular_diagonal_block_gives_nan():
    _f, plan, x = supernodal_factor(grid_laplacian(20))
    x = x.copy()
    x[plan.px[-2]] = 0.0  # first diagonal entry of the last supernode
    assert np.all(np.isnan(takahashi_supernodal(plan, x)))


def test_bad_structure_and_values_raise():
    # Column 0 has rows {0, 1, 2} but column 1 lacks row 2: not a Cholesky factor.
    with pytest.raises(ValueError, match="missing"):
        supernodes([0, 1, 2, 3], [0, 3, 4, 5], [0, 3, 4, 5], [0, 1, 2, 1, 2])
    with pytest.raises(ValueError, match="missing"):
        supernodes_from_csc(np.array([0, 3, 4, 5]), np.array([0, 1, 2, 1, 2]))
    _f, plan, x = supernodal_factor(grid_laplacian(20))
    with pytest.raises(ValueError, match="supernodal values"):
        takahashi_supernodal(plan, x[:-1])


def test_view_rejects_unknown_objects():
    A = grid_laplacian(20)
    f, _plan, _x = supernodal_factor(A)
    assert cholmod_supernodal_view(object(), A.shape[0]) is None
    assert cholmod_supernodal_view(f, A.shape[0] + 1) is None
    low = sp.tril(A).tocsc()
    g = skc.analyze(low, mode="simplicial").copy()
    g.cholesky_inplace(low)
    assert cholmod_supernodal_view(g, A.shape[0]) is None


def test_map_pattern_to_supernodes():
    A = case("random300")
    pattern, _data = SparsityPattern.from_scipy(A)
    f, plan, x = supernodal_factor(A)
    q_to_x = map_pattern_to_supernodes(pattern, np.asarray(f.P()), plan)
    C = np.linalg.inv(A.toarray())
    Z = takahashi_supernodal(plan, x)
    assert rel_err(Z[q_to_x], C[pattern.rows, pattern.cols]) < 1e-12


@pytest.mark.slow  # a fresh interpreter importing pymc: ~5-20 s
def test_kernel_is_cached_on_disk():
    # A fresh process must load the compiled kernel instead of compiling it again.
    takahashi_supernodal(*supernodal_factor(grid_laplacian(20))[1:])
    code = (
        "import numpy as np\n"
        "from pymc_sparse.linalg.takahashi import _takahashi_supernodal as k\n"
        "from pymc_sparse.linalg.takahashi import supernodes_from_csc, takahashi_supernodal\n"
        "plan, to_x = supernodes_from_csc(np.array([0, 2, 3]), np.array([0, 1, 1]))\n"
        "takahashi_supernodal(plan, np.ones(plan.xsize))\n"
        "print(sum(k.stats.cache_hits.values()), sum(k.stats.cache_misses.values()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    hits, misses = map(int, out.stdout.split()[-2:])
    assert (hits, misses) == (1, 0)


@pytest.mark.parametrize(
    ("small", "nb"), [(0, 10**9), (0, 7), (10**9, 128)], ids=["blas", "blocked", "loops"]
)
def test_small_loop_and_blocked_paths_agree(small, nb):
    # Large supernodes (dense root) and small ones: every code path of the kernel.
    A = lattice3(12)
    f, plan, x = supernodal_factor(A, "metis")
    assert np.diff(plan.sup).max() > 2 * 7
    ref = takahashi_supernodal(plan, x)
    Z = takahashi_supernodal(plan, x, small=small, nb=nb)
    ip, ix, to_x = supernodal_to_csc(plan)
    assert rel_err(Z[to_x], ref[to_x]) < 1e-12
    assert rel_err(ref[to_x], dense_on_factor(A, f, ip, ix)) < 1e-12


def test_logdet_supernodal():
    A = lattice3(10)
    f, plan, x = supernodal_factor(A, "metis")
    assert np.isclose(logdet_supernodal(plan, x), np.linalg.slogdet(A.toarray())[1], rtol=1e-12)
    assert np.isclose(logdet_supernodal(plan, x), f.logdet(), rtol=1e-13)


def test_one_supernode_partitioner_and_moved_names():
    # Issue 15: the kernel and its adjoint share one partitioner; the CHOLMOD struct view,
    # the BLAS bindings and the plan live in their own modules, re-exported here.
    from pymc_sparse.linalg import blas, cholmod_struct, supernodes, takahashi, takahashi_adjoint

    assert takahashi_adjoint.csc_supernodes is supernodes.supernode_starts
    assert takahashi_adjoint._BLAS_THREADS is blas._BLAS_THREADS is takahashi._BLAS_THREADS
    for name in ("Supernodes", "supernodes", "supernodes_from_csc", "supernodal_to_csc"):
        assert getattr(takahashi, name) is getattr(supernodes, name)
    for name in ("cholmod_supernodal_view", "supernodal_view_cached"):
        assert getattr(takahashi, name) is getattr(cholmod_struct, name)
    A = grid_laplacian(6)
    L = sp.csc_matrix(np.linalg.cholesky(A.toarray()))
    L.sort_indices()
    sn, _ = supernodes.supernodes_from_csc(L.indptr, L.indices)
    starts = supernodes.supernode_starts(L.indptr.astype(np.int64), L.indices.astype(np.int64))
    np.testing.assert_array_equal(sn.sup, starts)
    assert starts.size - 1 < A.shape[0]  # a dense-ish factor has multi-column supernodes


@pytest.mark.parametrize("name", MATRIX_IDS, ids=MATRIX_IDS)
def test_takahashi_csc_matches_dense_on_a_simplicial_factor(name):
    from pymc_sparse.linalg.takahashi import CSCPlan, takahashi_csc

    A = matrix(name)
    low = sp.tril(A).tocsc()
    f = skc.analyze(low, mode="simplicial", ordering_method="amd").copy()
    f.cholesky_inplace(low)
    L = f.L().tocsc()
    L.sort_indices()
    plan = CSCPlan.from_csc(L.indptr, L.indices)
    Z = takahashi_csc(plan, L.data)
    np.testing.assert_allclose(Z, dense_on_factor(A, f, L.indptr, L.indices), atol=1e-12)
    Zs = takahashi_simplicial(L.indptr.astype(np.int64), L.indices.astype(np.int64), L.data)
    np.testing.assert_allclose(Z, Zs, rtol=1e-12, atol=1e-14)


def simplicial_plan(A, loop_max=None):
    """Fundamental supernodes of a simplicial AMD factor: many one-column supernodes."""
    low = sp.tril(A).tocsc()
    f = skc.analyze(low, mode="simplicial", ordering_method="amd").copy()
    f.cholesky_inplace(low)
    L = f.L().tocsc()
    L.sort_indices()
    _sn, to_x = supernodes_from_csc(L.indptr, L.indices)
    sn = supernodes(_sn.sup, _sn.pi, _sn.px, _sn.s, loop_max=loop_max)
    x = np.zeros(sn.xsize)
    x[to_x] = L.data
    return f, L, sn, x, to_x


def test_flat_gather_index_points_at_sigma_rr():
    # rr_idx[rr_ptr[J] + (packed column b, row t)] is where Sigma[R[t], R[b]] is stored.
    _f, _L, sn, _x, _to_x = simplicial_plan(grid_laplacian(12), loop_max=300)
    k, m = np.diff(sn.sup), np.diff(sn.pi)
    indexed = k * m * m <= sn.loop_max
    assert indexed.any() and not indexed.all()
    pos = {}  # (row, column) of L -> position in x
    ip, ix, to_x = supernodal_to_csc(sn)
    for j in range(sn.n):
        for q in range(ip[j], ip[j + 1]):
            pos[ix[q], j] = to_x[q]
    for J in range(k.size):
        R = sn.s[sn.pi[J] + k[J] : sn.pi[J + 1]]
        want = [pos[R[t], R[b]] for b in range(R.size) for t in range(b, R.size)]
        got = sn.rr_idx[sn.rr_ptr[J] : sn.rr_ptr[J + 1]]
        np.testing.assert_array_equal(got, want if indexed[J] else [])


@pytest.mark.parametrize("small", [0, 64, 2048, 10**9], ids=["blas", "k1", "default", "all"])
def test_plain_loop_paths_match_dense(small):
    # One-column supernodes (the k = 1 loop), small multi-column ones (the fused loop)
    # and BLAS supernodes in one factor; every `small` gives the dense answer.  small=0
    # sends the indexed supernodes through loops for W and Y and BLAS for the products.
    A = grid_laplacian(20)
    f, L, sn, x, to_x = simplicial_plan(A)
    k, m = np.diff(sn.sup), np.diff(sn.pi)
    kmm = k * m * m
    assert np.any((k == 1) & (m > 3))
    assert np.any((k > 1) & (m > k) & (kmm <= 2048))
    assert np.any(kmm > 2048)
    if small == 64:  # only some one-column supernodes take the loops
        assert np.any((k == 1) & (kmm <= 64)) and np.any((k == 1) & (kmm > 64))
    Z = takahashi_supernodal(sn, x, small=small)[to_x]
    assert rel_err(Z, dense_on_factor(A, f, L.indptr, L.indices)) < 1e-12
    ref = takahashi_supernodal(sn, x, small=0)[to_x]
    np.testing.assert_allclose(Z, ref, rtol=1e-12, atol=1e-15)


def test_plan_without_flat_index_uses_runs():
    # loop_max = 0: no flat index, so BLAS and the run-by-run gather everywhere.
    A = grid_laplacian(15)
    f, L, sn, x, to_x = simplicial_plan(A, loop_max=0)
    assert sn.rr_idx.size == 0 and sn.loop_max == 0
    Z = takahashi_supernodal(sn, x)[to_x]
    assert rel_err(Z, dense_on_factor(A, f, L.indptr, L.indices)) < 1e-12


@pytest.mark.parametrize(
    ("which", "bad"),
    [
        *[(which, bad) for which in ("k1", "fused", "blas") for bad in (0.0, -1.0, np.nan)],
        ("lapack", 0.0),  # LAPACK's dpotri flags exact zeros only
    ],
)
def test_failed_pivot_in_each_path_is_nan(which, bad):
    # k1, fused: the plain loops; blas: loops for W and Y, BLAS for the products;
    # lapack: no flat index, dpotri and dtrsm.
    _f, _L, sn, x, _to_x = simplicial_plan(grid_laplacian(20), 0 if which == "lapack" else None)
    k, m = np.diff(sn.sup), np.diff(sn.pi)
    kmm = k * m * m
    where = {
        "k1": (k == 1) & (m > 3),
        "fused": (k > 1) & (m > k) & (kmm <= 2048),
        "blas": (kmm > 2048) & (kmm <= sn.loop_max) & (m > k),
        "lapack": k > 1,
    }[which]
    J = np.flatnonzero(where)[0]
    x = x.copy()
    c = k[J] - 1  # last column of the supernode: for k > 1, not the first pivot
    x[sn.px[J] + c * (m[J] + 1)] = bad
    assert np.all(np.isnan(takahashi_supernodal(sn, x)))


def test_nan_off_the_diagonal_reaches_the_result():
    # Fast-math in the loops is reassociation only: a NaN in L still propagates.
    _f, _L, sn, x, _to_x = simplicial_plan(grid_laplacian(10))
    k, m = np.diff(sn.sup), np.diff(sn.pi)
    J = np.flatnonzero((k == 1) & (m > 3))[-1]
    x = x.copy()
    x[sn.px[J] + 1] = np.nan
    Z = takahashi_supernodal(sn, x)
    assert np.isnan(Z[sn.px[J]]) and np.isnan(Z[sn.px[J] + 1])


# -- two threads (pymc_sparse.linalg.takahashi_parallel) --------------------------------


def split_factor():
    """A nested-dissection factor large enough to split, and its split forced (no threshold)."""
    A = grid_laplacian(40)
    f, sn, x = supernodal_factor(A, "nesdis")
    orders = parallel_split(sn, min_work=0)
    assert orders is not None
    return A, f, sn, x, orders


def test_two_threads_are_bit_identical_to_one(monkeypatch):
    A, f, sn, x, (top, g0, g1) = split_factor()
    # Every supernode once; each after its ancestors within top + its own group.
    np.testing.assert_array_equal(
        np.sort(np.concatenate([top, g0, g1])), np.arange(sn.sup.size - 1)
    )
    assert top.size and g0.size and g1.size
    assert parallel_split(sn, min_work=0)[1] is g0  # computed once per plan
    calls = []
    monkeypatch.setattr(tk, "run_split", lambda *a: calls.append(1) or run_split(*a))
    ip, ix, to_x = supernodal_to_csc(sn)
    Z1 = takahashi_supernodal(sn, x, threads=1)[to_x]
    Z2 = takahashi_supernodal(sn, x, threads=2, min_work=0)[to_x]
    assert calls == [1]
    np.testing.assert_array_equal(Z2, Z1)
    assert rel_err(Z2, dense_on_factor(A, f, ip, ix)) < 1e-12
    # Below the threshold, or on one thread, no split.
    takahashi_supernodal(sn, x, threads=2, min_work=1e30)
    takahashi_supernodal(sn, x, threads=1, min_work=0)
    assert calls == [1]


@pytest.mark.parametrize(
    ("group", "bad"),
    [(0, 0.0), *[(g, bad) for g in (1, 2) for bad in (0.0, -1.0, np.nan)]],
    ids=["top-zero", *[f"group{g}-{b}" for g in (0, 1) for b in ("zero", "neg", "nan")]],
)
def test_failed_pivot_in_either_group_is_nan(group, bad):
    # In a group: a one-column supernode (the loops flag 0, < 0 and NaN); in the top, a
    # large one, where LAPACK's dpotri flags exact zeros only.
    _A, _f, sn, x, orders = split_factor()
    k = np.diff(sn.sup)[orders[group]]
    J = orders[group][np.flatnonzero(k == 1)[0] if group else np.argmax(k)]
    m = sn.pi[J + 1] - sn.pi[J]
    x = x.copy()
    x[sn.px[J] + (sn.sup[J + 1] - sn.sup[J] - 1) * (m + 1)] = bad
    assert np.all(np.isnan(takahashi_supernodal(sn, x, threads=1)))
    assert np.all(np.isnan(takahashi_supernodal(sn, x, threads=2, min_work=0)))


def test_worker_thread_exception_propagates():
    def kernel(order):
        if order is orders[2]:
            raise FloatingPointError("in the worker")
        return 0

    orders = (np.arange(1), np.arange(2), np.arange(3))
    with pytest.raises(FloatingPointError, match="in the worker"):
        run_split(kernel, orders)
    assert run_split(lambda order: int(order.size == 2), orders) == 1


def csc_plan(A):
    """Fundamental supernodes of the factor of ``A`` in its natural order (no postorder)."""
    L = sp.csc_matrix(np.linalg.cholesky(A.toarray()))
    L.eliminate_zeros()
    L.sort_indices()
    sn, to_x = supernodes_from_csc(L.indptr, L.indices)
    x = np.zeros(sn.xsize)
    x[to_x] = L.data
    return L, sn, x, to_x


@pytest.mark.parametrize("shape", ["not_postordered", "chain"])
def test_unsplittable_plan_runs_serially(shape):
    if shape == "not_postordered":
        # Elimination tree 0 -> 2 -> 4 and 1 -> 3 -> 4: the subtree {0, 2} is not a range.
        i, j = np.array([2, 3, 4, 4]), np.array([0, 1, 2, 3])
    else:  # a path: every supernode has one child, nothing to run side by side
        i, j = np.arange(1, 30), np.arange(29)
    n = i.max() + 1
    W = sp.coo_matrix((np.ones(i.size), (i, j)), shape=(n, n))
    A = (3.0 * sp.identity(n) - W - W.T).tocsc()
    L, sn, x, to_x = csc_plan(A)
    assert parallel_split(sn, min_work=0) is None
    Z = takahashi_supernodal(sn, x, threads=2, min_work=0)[to_x]
    np.testing.assert_allclose(
        Z,
        np.linalg.inv(A.toarray())[L.indices, np.repeat(np.arange(n), np.diff(L.indptr))],
        rtol=1e-12,
    )


def _threads_in_child(_):
    from pymc_sparse.linalg.takahashi_parallel import kernel_threads

    return kernel_threads()


@pytest.mark.skipif(sys.platform == "win32", reason="needs fork")
@pytest.mark.filterwarnings(r"ignore:os\.fork\(\) was called:RuntimeWarning")
def test_forked_child_inverts_on_one_thread():
    """A forked child (a chain of pm.sample, a ForkPool worker) uses one kernel thread."""
    import multiprocessing

    from pymc_sparse.linalg.takahashi_parallel import KERNEL_THREADS, kernel_threads

    assert kernel_threads() == KERNEL_THREADS
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.map(_threads_in_child, [0]) == [1]
