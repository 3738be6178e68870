"""Tabulated one-parameter log-determinants: accuracy, gradients, JAX, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
import scipy.sparse as sp

from pymc_sparse.logdet1d.families import (
    car_logdet_family,
    leroux_logdet_family,
    sar_logdet_family,
)
from pymc_sparse.logdet1d.table import logdet_family
from pymc_sparse.ops.table import OneParameterLogDet
from tests.helpers import lattice_adjacency

DATA = Path("/work/shared/data")
REPO_DATA = Path(__file__).parents[1] / "data"


def _edges(name: str) -> sp.csc_matrix:
    for root in (REPO_DATA, DATA):
        path = root / name
        if path.exists():
            e = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64) - 1
            n = int(e.max()) + 1
            W = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n)).tocsc()
            W = ((W + W.T) > 0).astype(float)
            return sp.csc_matrix(W)
    pytest.skip(f"{name} not available")


def _dense_car_logdet(W, alpha):
    """Reference: sum log d + sum log(1 - alpha lambda_i) from a dense eigendecomposition."""
    W = W.toarray()
    d = W.sum(1)
    lam = np.linalg.eigvalsh(W / np.sqrt(np.outer(d, d)))
    alpha = np.atleast_1d(alpha)[:, None]
    f = np.log(d).sum() + np.log(1 - alpha * lam).sum(1)
    df = (-lam / (1 - alpha * lam)).sum(1)
    return f, df


def _check(fam, alphas, atol=1e-9):
    """Issue 9's bound: |error| <= 1e-9 absolute on f and f' against fresh exact values.

    ``evaluate`` is what the Op computes: the table where it is certified, the exact path
    beyond (close to a singular end, where the exact f' itself is noisier than 1e-9).
    """
    err_f = err_df = 0.0
    for a in alphas:
        f, df = fam.exact(a)
        err_f = max(err_f, abs(fam.evaluate(a) - f))
        err_df = max(err_df, abs(fam.evaluate(a, 1) - df))
    assert err_f <= atol, err_f
    assert err_df <= atol, err_df
    assert fam.info["certified"]
    assert fam.info["max_error_f"] <= atol and fam.info["max_error_df"] <= atol


@pytest.fixture(scope="module")
def grid_family():
    return car_logdet_family(lattice_adjacency(12, 10))


@pytest.fixture(scope="module")
def scotland_family():
    return car_logdet_family(_edges("scotland_edges_stan_connected.csv"))


def test_car_matches_dense_eigen(grid_family):
    W = lattice_adjacency(12, 10)
    rng = np.random.default_rng(1)
    alphas = np.concatenate([rng.uniform(-0.9999, 0.9999, 200), [-0.9999, 0.0, 0.9999]])
    f_ref, df_ref = _dense_car_logdet(W, alphas)
    f = np.array([grid_family.evaluate(a) for a in alphas])
    df = np.array([grid_family.evaluate(a, 1) for a in alphas])
    np.testing.assert_allclose(f, f_ref, rtol=0, atol=1e-9)
    # within the certified table: 1e-9 absolute against the eigenvalues too
    inside = (alphas >= grid_family.lo) & (alphas <= grid_family.hi)
    assert inside.sum() > 190
    np.testing.assert_allclose(df[inside], df_ref[inside], rtol=0, atol=1e-9)
    # beyond it (exact path) both references are rounded like eps * kappa(Q) * |f'|
    np.testing.assert_allclose(df, df_ref, rtol=1e-10, atol=1e-9)
    assert grid_family.info["max_error_f"] <= 1e-9
    assert grid_family.info["max_error_df"] <= 1e-9
    assert 0.999 < grid_family.hi < 0.9999 and -0.9999 < grid_family.lo < -0.999
    assert grid_family.singularities[0].multiplicity == 1  # connected
    assert grid_family.singularities[1].multiplicity == 1  # a lattice is bipartite


def test_car_lattice_100_random_alphas(rng):
    fam = car_logdet_family(lattice_adjacency(20))
    _check(fam, rng.uniform(fam.lo, fam.hi, 100))


def test_scotland_100_random_alphas(scotland_family, rng):
    _check(scotland_family, rng.uniform(scotland_family.lo, scotland_family.hi, 100))
    W = _edges("scotland_edges_stan_connected.csv")
    alphas = rng.uniform(-0.9999, 0.9999, 50)
    f_ref, df_ref = _dense_car_logdet(W, alphas)
    np.testing.assert_allclose(
        [scotland_family.evaluate(a) for a in alphas], f_ref, atol=1e-9, rtol=0
    )
    np.testing.assert_allclose(
        [scotland_family.evaluate(a, 1) for a in alphas], df_ref, atol=1e-9, rtol=1e-10
    )


def test_nyc_100_random_alphas(rng):
    fam = car_logdet_family(_edges("nyc_edges.csv"), (0.0, 1 - 1e-4))
    _check(fam, rng.uniform(fam.lo, fam.hi, 100))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["scotland_edges_stan_connected.csv", "nyc_edges.csv"])
def test_real_graphs_1000_random_alphas(name):
    fam = car_logdet_family(_edges(name))
    _check(fam, np.random.default_rng(3).uniform(fam.lo, fam.hi, 1000))


@pytest.mark.slow
def test_lattice_1000_random_alphas():
    fam = car_logdet_family(lattice_adjacency(60))
    _check(fam, np.random.default_rng(4).uniform(fam.lo, fam.hi, 1000))


def test_disconnected_graph_multiplicities():
    # two lattices (bipartite) and a triangle (not bipartite): k = 3 at 1, 2 at -1
    tri = sp.csc_matrix(np.ones((3, 3)) - np.eye(3))
    W = sp.block_diag([lattice_adjacency(4), lattice_adjacency(3), tri]).tocsc()
    fam = car_logdet_family(W)
    assert [s.multiplicity for s in fam.singularities] == [3, 2]
    alphas = np.linspace(-0.9999, 0.9999, 41)
    f_ref, df_ref = _dense_car_logdet(W, alphas)
    np.testing.assert_allclose([fam.evaluate(a) for a in alphas], f_ref, atol=1e-9, rtol=0)
    df = np.array([fam.evaluate(a, 1) for a in alphas])
    inner = (alphas >= fam.lo) & (alphas <= fam.hi)
    np.testing.assert_allclose(df[inner], df_ref[inner], atol=1e-9, rtol=0)
    # beyond the table (exact path) both references are rounded like eps * kappa * |f'|
    np.testing.assert_allclose(df[~inner], df_ref[~inner], atol=1e-9, rtol=1e-9)


def test_leroux_against_dense(rng):
    W = _edges("scotland_edges_stan_connected.csv")
    fam = leroux_logdet_family(W)
    L = np.diag(np.asarray(W.sum(1)).ravel()) - W.toarray()
    for rho in rng.uniform(0, fam.hi, 20):
        Q = (1 - rho) * np.eye(W.shape[0]) + rho * L
        assert abs(fam.evaluate(rho) - np.linalg.slogdet(Q)[1]) < 1e-9
        df = np.trace(np.linalg.solve(Q, L - np.eye(W.shape[0])))
        assert abs(fam.evaluate(rho, 1) - df) < 1e-9 + 1e-10 * abs(df)


def test_car_family_is_built_once_per_graph():
    W = lattice_adjacency(7, 6)
    fam = car_logdet_family(W, (0.0, 0.9))
    assert car_logdet_family(W.copy(), (0.0, 0.9)) is fam
    assert car_logdet_family(W, (0.0, 0.8)) is not fam
    W2 = W.copy().astype(float)
    W2[0, 1] = W2[1, 0] = 2.0
    assert car_logdet_family(W2, (0.0, 0.9)) is not fam
    # the SAR family is a copy: the shared CAR family keeps logdet_d = 0
    sar = sar_logdet_family(W, (0.0, 0.9))
    assert sar.logdet_d != 0.0 and fam.logdet_d == 0.0 and sar == fam


def test_sar_row_standardised_and_symmetric():
    W = lattice_adjacency(5)
    fam = sar_logdet_family(W, (0.0, 0.9))
    B = W.toarray() / W.toarray().sum(1, keepdims=True)
    M = np.eye(25) - 0.6 * B
    assert abs(2 * (fam.table(0.6) - fam.logdet_d) - np.linalg.slogdet(M.T @ M)[1]) < 1e-9
    lam = np.linalg.eigvalsh(W.toarray())
    fam2 = sar_logdet_family(W, (0.9 / lam.min(), 0.9 / lam.max()), row_standardise=False)
    assert abs(fam2.table(0.1) - np.linalg.slogdet(np.eye(25) - 0.1 * W.toarray())[1]) < 1e-9


def test_general_family_and_exact_fallback_outside_table():
    W = lattice_adjacency(6)
    n = 36
    A0 = sp.identity(n) * 5.0
    fam = logdet_family(A0, -W, (-0.5, 0.5))
    for a in (-0.7, 0.3, 0.9):  # 0.9 and -0.7 are outside the table: exact path
        ref = np.linalg.slogdet(5.0 * np.eye(n) - a * W.toarray())[1]
        assert abs(fam.evaluate(a) - ref) < 1e-9
    assert np.isnan(fam.evaluate(1.5))  # 5 I - 1.5 W is not positive definite


def test_op_value_and_verify_grad(grid_family):
    a = pt.dscalar("a")
    f = pytensor.function([a], [grid_family(a), pytensor.grad(grid_family(a), a)])
    for x in (-0.5, 0.3, 0.99):
        v, g = f(x)
        ref, dref = grid_family.exact(x)
        assert abs(v - ref) < 1e-9
        assert abs(g - dref) < 1e-9
    rng = np.random.default_rng(0)
    # verify_grad's central difference (step 1e-7) is itself accurate to ~1e-7 relative here
    tol = {"abs_tol": 1e-6, "rel_tol": 1e-6}
    pytensor.gradient.verify_grad(grid_family, [np.array(0.95)], rng=rng, **tol)
    # second derivative (f'' from the table) against finite differences of f'
    op1 = OneParameterLogDet(grid_family, 1)
    pytensor.gradient.verify_grad(op1, [np.array(-0.6)], rng=rng, abs_tol=1e-6, rel_tol=1e-6)


def test_numba_mode_object_fallback(grid_family):
    pytest.importorskip("numba")
    a = pt.dscalar("a")
    f = pytensor.function([a], [grid_family(a), pytensor.grad(grid_family(a), a)], mode="NUMBA")
    np.testing.assert_allclose(f(0.3), grid_family.exact(0.3), rtol=1e-12, atol=1e-9)


def test_op_props_and_errors(grid_family):
    assert OneParameterLogDet(grid_family) == OneParameterLogDet(grid_family)
    with pytest.raises(TypeError, match="scalar"):
        grid_family(pt.dvector())
    with pytest.raises(ValueError, match="interval"):
        logdet_family(sp.identity(3), sp.identity(3), (1.0, 0.0))
    with pytest.raises(ValueError, match="no neighbours"):
        car_logdet_family(sp.csc_matrix(np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0.0]])))
    with pytest.raises(ValueError, match="-1 < lo < hi < 1"):
        car_logdet_family(lattice_adjacency(3), (0.0, 1.0))
    with pytest.raises(ValueError, match="symmetric"):
        logdet_family(sp.identity(2), sp.csc_matrix(np.array([[0, 1.0], [0, 0]])), (0, 1))


def test_car_logp_matches_pm_car(grid_family):
    pm = pytest.importorskip("pymc")
    W = lattice_adjacency(12, 10)
    n = W.shape[0]
    d = np.asarray(W.sum(1)).ravel()
    x = np.random.default_rng(2).normal(size=n)
    alpha, tau = 0.7, 1.5
    ref = pm.logp(pm.CAR.dist(mu=np.zeros(n), W=W.toarray(), alpha=alpha, tau=tau), x).eval()
    Wx = W @ x
    quad = tau * (x @ (d * x) - alpha * x @ Wx)
    # pm.CAR drops the constant sum(log d) and the 2 pi term
    ours = 0.5 * (n * np.log(tau) + grid_family.table(alpha) - np.log(d).sum() - quad)
    lam = np.linalg.eigvalsh(W.toarray() / np.sqrt(np.outer(d, d)))
    dense = 0.5 * (n * np.log(tau) + np.log(1 - alpha * lam).sum() - quad)
    assert abs(ours - dense) < 1e-9
    # pm.CAR's own eigvalsh path differs from the dense formula by ~7e-7 here
    assert abs(ours - ref) < 1e-5


def test_jax_equals_c_path(grid_family):
    jax = pytest.importorskip("jax")
    import pymc_sparse.dispatch.jax_table  # noqa: F401 - registers the dispatch

    a = pt.dscalar("a")
    out = [grid_family(a), pytensor.grad(grid_family(a), a)]
    f_c = pytensor.function([a], out)
    f_j = pytensor.function([a], out, mode="JAX")
    for x in (-0.99, 0.0, 0.5, 0.9999, 0.99999):  # the last one is outside the table
        np.testing.assert_allclose(f_j(x), f_c(x), rtol=1e-12, atol=1e-10)
    from pytensor.link.jax.dispatch import jax_funcify

    fg = pytensor.graph.fg.FunctionGraph([a], [grid_family(a)])
    jf = jax_funcify(fg)
    g = jax.grad(lambda x: jf(x)[0])
    for x in (0.3, 0.99999):
        np.testing.assert_allclose(g(x), f_c(x)[1], rtol=1e-12)
    vg = jax.vmap(jax.grad(lambda x: jf(x)[0]))(jax.numpy.array([0.1, 0.5, 0.99999]))
    np.testing.assert_allclose(vg, [f_c(x)[1] for x in (0.1, 0.5, 0.99999)], rtol=1e-12)


def test_jax_jit_value_and_grad_first_call():
    jax = pytest.importorskip("jax")
    from pytensor.link.jax.dispatch import jax_funcify

    import pymc_sparse.dispatch.jax_table  # noqa: F401

    # a fresh family: its derivative functions are first built while jit is tracing
    fam = car_logdet_family(lattice_adjacency(4, 5), (0.0, 0.9))
    a = pt.dscalar("a")
    jf = jax_funcify(pytensor.graph.fg.FunctionGraph([a], [fam(a)]))
    vg = jax.jit(jax.value_and_grad(lambda x: jf(x)[0]))
    v, g = vg(0.4)
    assert abs(float(v) - fam.exact(0.4)[0]) < 1e-9
    assert abs(float(g) - fam.exact(0.4)[1]) < 1e-9
    h = jax.jit(jax.hessian(lambda x: jf(x)[0]))(0.4)
    assert abs(float(h) - fam.table(0.4, 2)) < 1e-9


def _car_values(W, d):
    from pymc_sparse.linalg.pattern import SparsityPattern

    pattern, _ = SparsityPattern.from_scipy(sp.identity(W.shape[0]) + W)
    d_data = np.zeros(pattern.nnz)
    d_data[pattern.diag_index] = d
    Wl = sp.tril(W, k=-1, format="coo")
    w_data = np.zeros(pattern.nnz)
    w_data[pattern.index_of(Wl.row, Wl.col)] = Wl.data
    return pattern, d_data, w_data


@pytest.mark.parametrize("method", ["auto", "interpolated", "exact"])
def test_car_logdet_seam_with_isolated_iid_node(method):
    from pymc_sparse.distributions.car import car_logdet
    from pymc_sparse.logdet1d.families import _FAMILIES

    # a 4 x 4 lattice plus one isolated node given degree 1 (pms.CAR's isolated="iid")
    W = sp.block_diag([lattice_adjacency(4), sp.csc_matrix((1, 1))]).tocsc()
    d = np.asarray(W.sum(1)).ravel()
    d[-1] = 1.0
    pattern, d_data, w_data = _car_values(W, d)
    a = pt.dscalar("a")
    ld = car_logdet(pattern, pt.constant(d_data), pt.constant(w_data), a, method=method)
    f = pytensor.function([a], [ld, pytensor.grad(ld, a)])
    for x in (-0.9, 0.2, 0.999):
        Q = np.diag(d) - x * W.toarray()
        v, g = f(x)
        assert abs(v - np.linalg.slogdet(Q)[1]) < 1e-9
        assert abs(g + np.trace(np.linalg.solve(Q, W.toarray()))) < 1e-9 + 1e-10 * abs(g)
    n_cached = len(_FAMILIES)
    car_logdet(pattern, pt.constant(d_data), pt.constant(w_data), a, method=method)
    assert len(_FAMILIES) == n_cached  # a second model build reuses the table
    if method != "exact":
        from pymc_sparse.logdet1d.families import car_logdet_family_from_values

        fam = car_logdet_family_from_values(pattern, d_data, w_data)  # the cached table
        assert len(_FAMILIES) == n_cached
        assert [s.multiplicity for s in fam.singularities] == [1, 1]


def test_car_logdet_seam_batched_alpha_and_bad_method():
    from pymc_sparse.distributions.car import car_logdet

    W = lattice_adjacency(3)
    pattern, d_data, w_data = _car_values(W, np.asarray(W.sum(1)).ravel())
    with pytest.raises(ValueError, match="scalar alpha"):
        car_logdet(pattern, d_data, w_data, pt.dvector(), method="interpolated")
    with pytest.raises(ValueError, match="one of"):
        car_logdet(pattern, d_data, w_data, pt.dscalar(), method="table")


def test_pickle_round_trip(grid_family):
    import pickle

    fam = pickle.loads(pickle.dumps(grid_family))
    assert fam == grid_family
    assert OneParameterLogDet(fam) == OneParameterLogDet(grid_family)
    assert fam.table(0.37) == grid_family.table(0.37)


@pytest.mark.slow
def test_posterior_matches_exact_path_scotland():
    """Same model, exact per-step logdet vs the table: alpha's posterior agrees within MC error."""
    pm = pytest.importorskip("pymc")
    from pymc_sparse.distributions.car import car_logdet

    W = _edges("scotland_edges_stan_connected.csv")
    n = W.shape[0]
    d = np.asarray(W.sum(1)).ravel()
    pattern, d_data, w_data = _car_values(W, d)
    T = sp.triu(W, 1).tocoo()
    y = np.random.default_rng(5).normal(size=n) + 0.5 * (W @ np.ones(n)) / d

    def fit(method):
        with pm.Model():
            alpha = pm.Uniform("alpha", 0.0, 1.0)
            tau = pm.Gamma("tau", 2.0, 1.0)
            x = pm.Flat("x", shape=n)
            quad = pt.sum(d * x**2) - 2 * alpha * pt.sum(x[T.row] * x[T.col])
            ld = car_logdet(pattern, pt.constant(d_data), pt.constant(w_data), alpha, method=method)
            pm.Potential("car", 0.5 * (n * pt.log(tau) + ld - tau * quad))
            pm.Normal("y", x, 1.0, observed=y)
            idata = pm.sample(
                draws=1000,
                tune=1000,
                chains=2,
                cores=1,
                random_seed=11,
                progressbar=False,
                compute_convergence_checks=False,
            )
        return idata.posterior["alpha"].values.ravel()

    a_exact = fit("exact")
    a_table = fit("interpolated")
    se = np.sqrt(a_exact.var() / 200 + a_table.var() / 200)  # conservative ESS ~ 200 per run
    assert abs(a_exact.mean() - a_table.mean()) < 4 * se
    assert abs(a_exact.std() - a_table.std()) < 0.25 * a_exact.std()


def test_car_logdet_seam_reads_constant_graphs():
    from pymc_sparse.distributions.car import car_logdet

    W = lattice_adjacency(3)
    pattern, d_data, w_data = _car_values(W, np.asarray(W.sum(1)).ravel())
    # what core_param hands over for a batched variable: a reshape of a constant
    d_in = pt.constant(d_data[None, :]).reshape((pattern.nnz,))
    w_in = pt.constant(w_data[None, :]).reshape((pattern.nnz,))
    ld = car_logdet(pattern, d_in, w_in, pt.dscalar("a"))
    assert isinstance(ld.owner.op, OneParameterLogDet)


def test_end_zone_table_stops_where_exact_fprime_is_too_noisy(grid_family):
    # 1e-9 absolute on f' cannot be certified within ~1e-3 of alpha = +-1 (the exact f'
    # is rounded like eps * kappa(Q) * |f'| there): the table stops, the Op is exact beyond
    fam = grid_family
    assert fam.info["requested_interval"] == (-0.9999, 0.9999)
    assert fam.info["certified"] and fam.info["rtol_df"] == 0.0
    a = pt.dscalar("a")
    f = pytensor.function([a], [fam(a), pytensor.grad(fam(a), a)])
    for x in (fam.hi + 1e-5, 0.99995, fam.lo - 1e-5):
        assert not fam.contains(x)
        np.testing.assert_allclose(f(x), fam.exact(x), rtol=1e-14, atol=0)
    # the value is continuous across the end of the table to the bound
    for x in (fam.lo, fam.hi):
        assert abs(fam.table(x) - fam.exact(x)[0]) <= 1e-9
        assert abs(fam.table(x, 1) - fam.exact(x)[1]) <= 1e-9
    # a relative bound on f' lets the table reach the requested interval
    rel = car_logdet_family(lattice_adjacency(12, 10), rtol_df=1e-10)
    assert (rel.lo, rel.hi) == (-0.9999, 0.9999)
    x = 0.99985
    assert abs(rel.table(x, 1) - rel.exact(x)[1]) <= 1e-9 + 1e-10 * abs(rel.exact(x)[1])
