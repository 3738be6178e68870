"""Graph checks, precision builders and the ICAR scaling factor against dense references."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
import scipy.sparse as sp

from pymc_sparse.linalg.cholmod import cholesky
from pymc_sparse.linalg.pattern import SparsityPattern
from pymc_sparse.ops.matrix import SparseMatrix
from pymc_sparse.precision import (
    GraphComponents,
    ar1_precision,
    car_precision,
    connected_components,
    constrained_marginal_variances,
    icar_precision,
    isolated_nodes,
    lattice_adjacency,
    leroux_precision,
    linear_combination,
    proper_besag_precision,
    rw1,
    rw2,
    scaling_factor,
    validate_adjacency,
)
from tests.gmrf_checks import scotland_adjacency

EPS = np.sqrt(np.finfo(float).eps)


def dense_laplacian(W):
    W = np.asarray(W.todense() if sp.issparse(W) else W, dtype=float)
    return np.diag(W.sum(1)) - W


def weighted_graph(rng, n=9):
    W = lattice_adjacency(3, 3).toarray() * rng.uniform(0.5, 2.0, (n, n))
    return np.triu(W, 1) + np.triu(W, 1).T


# -- validate_adjacency -----------------------------------------------------------------
class TestValidateAdjacency:
    def test_accepts_dense_sparse_weighted(self, rng):
        W = weighted_graph(rng)
        for A in (W, sp.csr_matrix(W), sp.coo_matrix(W), pt.constant(W)):
            out = validate_adjacency(A)
            assert sp.isspmatrix_csc(out) and out.dtype == np.float64
            np.testing.assert_array_equal(out.toarray(), W)

    def test_drops_explicit_zeros(self):
        W = sp.csc_matrix(np.array([[0.0, 1.0], [1.0, 0.0]]))
        W.data[:] = 0.0
        assert validate_adjacency(W).nnz == 0

    @pytest.mark.parametrize(
        "W, match",
        [
            (np.ones((2, 3)), r"must be square, got shape \(2, 3\)"),
            (np.array([[0, 1.0], [2.0, 0]]), r"not symmetric: W\[\d, \d\] = "),
            (np.array([[0, -1.0], [-1.0, 0]]), r"negative weight: W\[1, 0\] = -1.0"),
            (np.array([[0, np.nan], [np.nan, 0]]), r"non-finite entry: W\[1, 0\] = nan"),
            (np.array([[1.0, 1.0], [1.0, 0]]), r"self-loop: W\[0, 0\] = 1.0"),
            (np.ones(3), r"2-D matrix"),
        ],
        ids=["not-square", "asymmetric", "negative", "nan", "self-loop", "1-d"],
    )
    def test_bad_input_names_the_entry(self, W, match):
        with pytest.raises(ValueError, match=match):
            validate_adjacency(W)

    def test_symbolic_rejected(self):
        with pytest.raises(TypeError, match="must be a constant"):
            validate_adjacency(pt.dmatrix("W"))

    def test_components_and_isolated_scotland(self):
        k, labels = connected_components(scotland_adjacency("connected"))
        assert k == 1 and np.all(labels == 0)
        W = scotland_adjacency("islands")
        k, labels = connected_components(W)
        assert k == 4
        # Orkney (6), Shetland (8) and the Western Isles (11) lose their ferry edges.
        np.testing.assert_array_equal(isolated_nodes(W), [5, 7, 10])
        assert np.bincount(labels).tolist() == [53, 1, 1, 1]


# -- builders ----------------------------------------------------------------------------
class TestBuilders:
    def test_icar_car_leroux_besag_dense(self, rng):
        W = weighted_graph(rng)
        R = dense_laplacian(W)
        n = W.shape[0]
        np.testing.assert_allclose(icar_precision(W).toarray(), R)
        np.testing.assert_allclose(
            car_precision(W, 0.3, 2.0).toarray(), 2.0 * (np.diag(W.sum(1)) - 0.3 * W)
        )
        np.testing.assert_allclose(
            leroux_precision(W, 0.4, 3.0).toarray(), 3.0 * (0.6 * np.eye(n) + 0.4 * R)
        )
        np.testing.assert_allclose(
            proper_besag_precision(W, 0.5, 2.0).toarray(), 2.0 * (R + 0.5 * np.eye(n))
        )

    @pytest.mark.parametrize(
        "build, dense",
        [
            (lambda W, a: car_precision(W, a, 2.0), lambda W, a: 2 * (np.diag(W.sum(1)) - a * W)),
            (
                lambda W, a: leroux_precision(W, a),
                lambda W, a: (1 - a) * np.eye(len(W)) + a * dense_laplacian(W),
            ),
            (
                lambda W, a: proper_besag_precision(W, a),
                lambda W, a: dense_laplacian(W) + a * np.eye(len(W)),
            ),
        ],
        ids=["car", "leroux", "besag-proper"],
    )
    def test_symbolic_parameter_gives_sparse_matrix(self, rng, build, dense):
        W = weighted_graph(rng)
        a = pt.dscalar("a")
        Q = build(W, a)
        assert isinstance(Q, SparseMatrix)
        f = pytensor.function([a], Q.data)
        np.testing.assert_allclose(
            Q.pattern.to_scipy(f(0.35)).toarray(), dense(W, 0.35), atol=1e-14
        )

    def test_constant_out_of_domain_raises(self):
        W = lattice_adjacency(3)
        with pytest.raises(ValueError, match=r"`alpha` must lie in \(-1, 1\), got 1.0"):
            car_precision(W, 1.0)
        with pytest.raises(ValueError, match=r"`tau` must be > 0, got 0.0"):
            car_precision(W, 0.5, 0.0)
        with pytest.raises(ValueError, match=r"`rho` must lie in \[0, 1\), got 1.0"):
            leroux_precision(W, 1.0)
        with pytest.raises(ValueError, match=r"\|rho\| < 1"):
            ar1_precision(5, -1.2)
        with pytest.raises(ValueError, match="rw2 needs n >= 3"):
            rw2(2)

    @pytest.mark.parametrize("n", [2, 7])
    def test_rw1(self, n, rng):
        R = rw1(n).toarray()
        x = rng.normal(size=n)
        np.testing.assert_allclose(x @ R @ x, np.sum(np.diff(x) ** 2))
        assert np.linalg.matrix_rank(R) == n - 1
        np.testing.assert_allclose(R @ np.ones(n), 0, atol=1e-14)

    def test_rw1_cyclic(self, rng):
        n = 6
        R = rw1(n, cyclic=True).toarray()
        x = rng.normal(size=n)
        np.testing.assert_allclose(x @ R @ x, np.sum(np.diff(np.r_[x, x[0]]) ** 2))
        assert np.linalg.matrix_rank(R) == n - 1

    def test_rw2(self, rng):
        n = 8
        R = rw2(n).toarray()
        x = rng.normal(size=n)
        np.testing.assert_allclose(x @ R @ x, np.sum(np.diff(x, 2) ** 2))
        assert np.linalg.matrix_rank(R) == n - 2
        np.testing.assert_allclose(R @ np.arange(n), 0, atol=1e-12)
        np.testing.assert_array_equal(R[3, 1:6], [1, -4, 6, -4, 1])

    def test_rw2_cyclic(self, rng):
        n = 7
        R = rw2(n, cyclic=True).toarray()
        x = rng.normal(size=n)
        xx = np.r_[x, x[:2]]
        np.testing.assert_allclose(x @ R @ x, np.sum(np.diff(xx, 2) ** 2))
        assert np.linalg.matrix_rank(R) == n - 1
        np.testing.assert_array_equal(R[0], [6, -4, 1, 0, 0, 1, -4])

    @pytest.mark.parametrize("unit", [False, True], ids=["innovation", "unit-marginal"])
    def test_ar1_covariance(self, unit):
        n, rho = 6, -0.6
        Q = ar1_precision(n, rho, unit_marginal=unit).toarray()
        lag = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
        cov = rho**lag * (1.0 if unit else 1.0 / (1 - rho**2))
        np.testing.assert_allclose(np.linalg.inv(Q), cov, atol=1e-12)
        r = pt.dscalar("r")
        S = ar1_precision(n, r, unit_marginal=unit)
        vals = S.data.eval({r: rho})
        np.testing.assert_allclose(S.pattern.to_scipy(vals).toarray(), Q, atol=1e-14)

    def test_lattice(self):
        W = lattice_adjacency(4, 5)
        assert W.shape == (20, 20)
        deg = np.asarray(W.sum(1)).ravel().reshape(4, 5)
        assert deg[0, 0] == 2 and deg[1, 1] == 4 and deg[0, 2] == 3
        Wq = lattice_adjacency(4, 5, queen=True)
        degq = np.asarray(Wq.sum(1)).ravel().reshape(4, 5)
        assert degq[0, 0] == 3 and degq[1, 1] == 8
        assert (Wq - Wq.T).nnz == 0 and Wq.diagonal().sum() == 0

    def test_linear_combination_and_gradient(self, rng):
        W = weighted_graph(rng)
        n = W.shape[0]
        mats = [sp.identity(n), sp.csc_matrix(dense_laplacian(W)), sp.diags(rng.uniform(1, 2, n))]
        th = pt.dvector("th")
        Q = linear_combination([th[0], th[1], th[2]], mats)
        dense = sum(t * M.toarray() for t, M in zip([0.7, 1.3, 0.2], mats))
        vals = Q.data.eval({th: [0.7, 1.3, 0.2]})
        np.testing.assert_allclose(Q.pattern.to_scipy(vals).toarray(), dense, atol=1e-14)
        assert Q.pattern.has_full_diagonal

        from pymc_sparse.ops import logdet

        def f(t):
            return logdet(linear_combination([t[0], t[1], t[2]], mats))

        pytensor.gradient.verify_grad(
            f, [np.array([0.7, 1.3, 0.2])], rng=rng, abs_tol=1e-5, rel_tol=1e-5
        )

    def test_linear_combination_bad_input(self):
        with pytest.raises(ValueError, match="one coefficient per matrix"):
            linear_combination([1.0], [sp.identity(3), sp.identity(3)])
        with pytest.raises(ValueError, match="order 4"):
            linear_combination([1.0, 1.0], [sp.identity(3), sp.identity(4)])


# -- scaling factor ------------------------------------------------------------------------
def dense_inla_variances(W):
    """R-INLA's recipe per component, densely: jitter, invert, krige on 1' x = 0."""
    W = np.asarray(W.todense() if sp.issparse(W) else W, dtype=float)
    k, labels = connected_components(W)
    var = np.ones(len(W))
    for c in range(k):
        i = np.flatnonzero(labels == c)
        if i.size == 1:
            continue
        R = dense_laplacian(W[np.ix_(i, i)])
        S = np.linalg.inv(R + np.eye(i.size) * R.diagonal().max() * EPS)
        s1 = S.sum(1)
        var[i] = np.diag(S - np.outer(s1, s1) / s1.sum())
    return var


def dense_pinv_variances(W):
    W = np.asarray(W.todense() if sp.issparse(W) else W, dtype=float)
    k, labels = connected_components(W)
    var = np.ones(len(W))
    for c in range(k):
        i = np.flatnonzero(labels == c)
        if i.size > 1:
            var[i] = np.diag(np.linalg.pinv(dense_laplacian(W[np.ix_(i, i)])))
    return var


def geometric_means(var, labels):
    return np.exp(np.bincount(labels, weights=np.log(var)) / np.bincount(labels))[labels]


class TestScalingFactor:
    def test_scotland_connected(self):
        W = scotland_adjacency("connected")
        s = scaling_factor(W)
        # R-INLA's recipe (dense): agreement to rounding.
        ref_inla = np.exp(np.mean(np.log(dense_inla_variances(W))))
        assert s == pytest.approx(ref_inla, rel=1e-9)
        # Dense generalised inverse: agreement up to the recipe's jitter.
        ref_pinv = np.exp(np.mean(np.log(dense_pinv_variances(W))))
        assert s == pytest.approx(ref_pinv, rel=1e-6)
        assert scaling_factor(W, method="exact") == pytest.approx(ref_pinv, rel=1e-12)
        assert s == pytest.approx(0.48532, abs=1e-5)

    def test_variances_match_dense(self):
        W = scotland_adjacency("islands")
        np.testing.assert_allclose(
            constrained_marginal_variances(W), dense_inla_variances(W), rtol=1e-8
        )
        np.testing.assert_allclose(
            constrained_marginal_variances(W, method="exact"), dense_pinv_variances(W), rtol=1e-11
        )

    @pytest.mark.parametrize("method", ["inla", "exact"])
    def test_per_component_with_singletons(self, method, rng):
        # Scotland with islands, plus a weighted two-component lattice block.
        W = sp.block_diag(
            [
                scotland_adjacency("islands"),
                sp.csc_matrix(weighted_graph(rng)),
                lattice_adjacency(2, 3),
            ]
        ).tocsc()
        _, labels = connected_components(W)
        s = scaling_factor(W, per_node=True, method=method)
        ref = dense_inla_variances(W) if method == "inla" else dense_pinv_variances(W)
        np.testing.assert_allclose(s, geometric_means(ref, labels), rtol=1e-8)
        np.testing.assert_array_equal(s[isolated_nodes(W)], 1.0)

    def test_disconnected_needs_per_node(self):
        with pytest.raises(ValueError, match=r"4 connected components \(3 of them single nodes"):
            scaling_factor(scotland_adjacency("islands"))
        with pytest.raises(ValueError, match="'inla' or 'exact'"):
            scaling_factor(lattice_adjacency(3), method="dense")

    def test_lattice_with_fill_in(self):
        # The 2-D lattice Laplacian's Cholesky factor has genuine fill-in.
        W = lattice_adjacency(12, 12)
        Q = icar_precision(W) + sp.identity(144)
        L = cholesky(Q).L()
        assert L.nnz > sp.tril(Q).nnz
        ref = np.exp(np.mean(np.log(dense_pinv_variances(W))))
        assert scaling_factor(W, method="exact") == pytest.approx(ref, rel=1e-12)
        assert scaling_factor(W) == pytest.approx(ref, rel=5e-6)

    def test_reduced_logdet_matrix_tree(self, rng):
        W = sp.block_diag(
            [scotland_adjacency("islands"), sp.csc_matrix(weighted_graph(rng))]
        ).tocsc()
        comp = GraphComponents.from_adjacency(validate_adjacency(W))
        lam = np.linalg.eigvalsh(dense_laplacian(W))
        k = connected_components(W)[0]
        assert comp.log_generalized_det == pytest.approx(np.sum(np.log(lam[k:])), rel=1e-12)
        p, _ = comp.reduced
        assert isinstance(p, SparsityPattern) and p.n == W.shape[0] - k
