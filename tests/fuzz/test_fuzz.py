"""Property-based fuzz suite (issue 18): no silent wrong answers on any input.

Every public function and distribution, on random SPD, badly scaled, near-singular,
singular, indefinite and asymmetric matrices, on the C, Numba and JAX backends, must give
the right answer (against a dense reference), a named error, or NaN/-inf in a graph;
never a finite wrong number.  The quick profile runs by default (``QUICK`` examples per
property, a subset of graphs on Numba/JAX); ``--runslow`` adds the long profile
(``LONG`` examples, every graph and backend).
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymc.logprob.utils import ParameterValueError

import pymc_sparse as pms
from pymc_sparse.distributions.car import CAR
from pymc_sparse.distributions.gmrf import SparseGMRF
from pymc_sparse.distributions.icar import ICAR
from pymc_sparse.distributions.marginal import MarginalGMRFNormal
from pymc_sparse.linalg.cholmod import NotPositiveDefiniteError
from pymc_sparse.linalg.pattern import SparsityPattern
from pymc_sparse.ops.matrix import SparseMatrix
from tests.fuzz.cases import (
    CONNECTED,
    GRAPHS,
    KINDS,
    check_linalg,
    classify,
    logdet_spd,
    lower_data,
    marginal_logp,
    pattern_matrix,
    tolerance,
    values,
)

pytestmark = [
    # Compiling the distributions' graphs reads PyTensor's BLAS flags; not our warning.
    pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS:UserWarning"),
    # PyTensor's JAX backend drops check_parameters (the logp must be NaN-safe alone,
    # which is what these tests check).
    pytest.mark.filterwarnings("ignore:Skipping Check.*JAX tracing:UserWarning"),
]

QUICK, LONG = 12, 150
SEEDS = st.integers(0, 2**32 - 1)
_MODES = {"C": "FAST_RUN", "NUMBA": "NUMBA", "JAX": "JAX"}
_FNS: dict = {}


def _profile(n):
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def _mode(backend):
    if backend == "JAX":
        jax = pytest.importorskip("jax")
        jax.config.update("jax_enable_x64", True)
    return _MODES[backend]


def _pattern(name):
    return SparsityPattern.from_scipy(pattern_matrix(name))[0]


def _linalg_fn(name, backend):
    key = ("linalg", name, backend)
    if key not in _FNS:
        p = _pattern(name)
        data, b = pt.dvector("data"), pt.dvector("b")
        Q = SparseMatrix.from_pattern(p, data)
        outs = [pms.logdet(Q), pms.solve(Q, b), pms.selected_inverse(Q).data]
        outs.append(pms.marginal_variances(Q))
        _FNS[key] = pytensor.function([data, b], outs, mode=_mode(backend))
    return _FNS[key]


def _run_linalg(name, kind, seed, backend):
    rng = np.random.default_rng(seed)
    Q = values(name, kind, rng)
    verdict, kappa = classify(Q, kind)
    p = _pattern(name)
    b = rng.normal(size=Q.shape[0])
    out = _linalg_fn(name, backend)(lower_data(Q, p), b)
    ok = check_linalg(Q, verdict, kappa, *[np.asarray(o) for o in out[:2]], b, *out[2:], p)
    # Outside graphs: the constant-matrix entry points raise a named error instead.
    Qs = sp.csc_matrix(Q)
    if ok:
        f = pms.cholesky(Qs)
        assert abs(f.logdet() - out[0]) <= 1e-12 * abs(out[0]) + 1e-9
        draws = pms.sample_gmrf(Qs, size=3, rng=seed)
        assert draws.shape == (3, Q.shape[0]) and np.all(np.isfinite(draws))
    elif verdict == "invalid":
        with pytest.raises(NotPositiveDefiniteError):
            pms.cholesky(Qs)
        with pytest.raises(NotPositiveDefiniteError):
            pms.sample_gmrf(Qs, rng=seed)
        with pytest.raises(NotPositiveDefiniteError):
            SparseGMRF.dist(Q=Qs)


# -- linear algebra, every backend ---------------------------------------------------


@_profile(QUICK * 2)
@given(name=st.sampled_from(sorted(GRAPHS)), kind=st.sampled_from(KINDS), seed=SEEDS)
def test_linalg_c(name, kind, seed):
    _run_linalg(name, kind, seed, "C")


@pytest.mark.parametrize("backend", ["NUMBA", "JAX"])
@_profile(QUICK)
@given(kind=st.sampled_from(KINDS), seed=SEEDS)
def test_linalg_other_backends(backend, kind, seed):
    _run_linalg("blocks", kind, seed, backend)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["C", "NUMBA", "JAX"])
@_profile(LONG)
@given(name=st.sampled_from(sorted(GRAPHS)), kind=st.sampled_from(KINDS), seed=SEEDS)
def test_linalg_long(backend, name, kind, seed):
    _run_linalg(name, kind, seed, backend)


# -- asymmetric and one-triangle input: a named error everywhere ---------------------


@_profile(QUICK * 2)
@given(
    name=st.sampled_from(sorted(GRAPHS)),
    seed=SEEDS,
    rel=st.floats(1e-7, 0.5),
    big=st.floats(0.0, 14.0),
)
def test_asymmetric_input_is_refused(name, seed, rel, big):
    rng = np.random.default_rng(seed)
    Q = values(name, "spd", rng)
    Q[0, 0] *= 10.0**big  # a huge entry elsewhere must not hide the asymmetry
    # an edge above the diagonal (the graph's nnz may count the diagonal too)
    edges = np.argwhere(np.triu(GRAPHS[name].toarray(), 1))
    r, c = edges[rng.integers(len(edges))]
    Q[r, c] *= 1.0 + rel
    A = sp.csc_matrix(Q)
    for make in (SparseMatrix.from_scipy, pms.cholesky, pms.sample_gmrf, SparseGMRF.dist):
        with pytest.raises(ValueError, match="not symmetric"):
            make(A)


def test_one_triangle_input_gets_the_right_fix():
    Q = values("lattice4", "spd", np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"only one triangle.*diags"):
        SparseMatrix.from_scipy(sp.tril(sp.csc_matrix(Q)))


# -- distributions -------------------------------------------------------------------


def _gmrf_fn(name, backend):
    key = ("gmrf", name, backend)
    if key not in _FNS:
        p = _pattern(name)
        data, x, y, sigma = pt.dvector("data"), pt.dvector("x"), pt.dvector("y"), pt.dscalar("s")
        Q = SparseMatrix.from_pattern(p, data)
        lp = pm.logp(SparseGMRF.dist(Q=Q, mu=0.0), x)
        lm = pm.logp(MarginalGMRFNormal.dist(Q=Q, mu=0.0, sigma=sigma), y)
        _FNS[key] = pytensor.function([data, x, y, sigma], [lp, lm], mode=_mode(backend))
    return _FNS[key]


def _run_gmrf(name, kind, seed, backend):
    rng = np.random.default_rng(seed)
    Q = values(name, kind, rng)
    verdict, kappa = classify(Q, kind)
    n = Q.shape[0]
    x, y, sigma = rng.normal(size=n), rng.normal(size=n), float(rng.uniform(0.1, 2.0))
    try:
        lp, lm = (
            float(v) for v in _gmrf_fn(name, backend)(lower_data(Q, _pattern(name)), x, y, sigma)
        )
    except ParameterValueError:  # a named error: check_parameters on the C backend
        assert verdict != "valid"
        return
    if verdict == "invalid":
        assert not np.isfinite(lp) and not np.isfinite(lm), (lp, lm)
        return
    if verdict == "valid":
        assert np.isfinite(lp) and np.isfinite(lm)
    if not np.isfinite(lp):
        return
    tol = tolerance(kappa, n)
    ref = 0.5 * logdet_spd(Q) - 0.5 * x @ Q @ x - 0.5 * n * np.log(2 * np.pi)
    assert abs(lp - ref) <= 1e-9 * abs(ref) + tol * (1 + abs(x @ Q @ x)), (lp, ref)
    ref_m = marginal_logp(Q, y, sigma)
    assert abs(lm - ref_m) <= 1e-8 * abs(ref_m) + tol * (1 + y @ y / sigma**2), (lm, ref_m)


@_profile(QUICK)
@given(kind=st.sampled_from(KINDS), seed=SEEDS)
def test_gmrf_and_marginal_logp(kind, seed):
    _run_gmrf("random12", kind, seed, "C")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["C", "JAX"])
@_profile(LONG)
@given(name=st.sampled_from(sorted(GRAPHS)), kind=st.sampled_from(KINDS), seed=SEEDS)
def test_gmrf_and_marginal_logp_long(backend, name, kind, seed):
    _run_gmrf(name, kind, seed, backend)


def _car_fn(name, backend):
    key = ("car", name, backend)
    if key not in _FNS:
        W = GRAPHS[name]
        x, alpha, tau = pt.dvector("x"), pt.dscalar("alpha"), pt.dscalar("tau")
        lp = pm.logp(CAR.dist(mu=0.0, W=W, alpha=alpha, tau=tau), x)
        s = pt.dscalar("sigma")
        li = pm.logp(ICAR.dist(W=W, sigma=s), x)
        _FNS[key] = (
            pytensor.function([x, alpha, tau], lp, mode=_mode(backend)),
            pytensor.function([x, s], li, mode=_mode(backend)),
        )
    return _FNS[key]


def _run_car(name, seed, alpha, tau, backend):
    rng = np.random.default_rng(seed)
    W = GRAPHS[name].toarray()
    n = W.shape[0]
    x = rng.normal(size=n)
    car, icar = _car_fn(name, backend)
    try:
        lp = float(car(x, alpha, tau))
    except ParameterValueError:
        lp = np.nan  # a named error: pymc's check_parameters on the C backend
    Q = tau * (np.diag(W.sum(axis=1)) - alpha * W)
    verdict, kappa = classify(Q) if tau > 0 else ("invalid", np.inf)
    if abs(alpha) >= 1:
        verdict = "invalid"  # outside the support (alpha = +-1: intrinsic, singular)
    if verdict == "invalid":
        assert not np.isfinite(lp), (alpha, tau, lp)
    elif verdict == "valid":
        ref = 0.5 * logdet_spd(Q) - 0.5 * x @ Q @ x - 0.5 * n * np.log(2 * np.pi)
        assert abs(lp - ref) <= 1e-8 * abs(ref) + tolerance(kappa, n), (alpha, lp, ref)
    # ICAR: log-density differences between two zero-sum values and two sigmas
    R = np.diag(W.sum(axis=1)) - W
    x1, x2 = x - x.mean(), rng.normal(size=n)
    x2 -= x2.mean()
    s1, s2 = float(rng.uniform(0.1, 3)), float(rng.uniform(0.1, 3))
    got = float(icar(x1, s1)) - float(icar(x2, s2))
    ref = -0.5 * (x1 @ R @ x1 / s1**2 - x2 @ R @ x2 / s2**2) - (n - 1) * np.log(s1 / s2)
    assert abs(got - ref) <= 1e-8 * (1 + abs(ref)), (got, ref)


@_profile(QUICK)
@given(
    seed=SEEDS,
    alpha=st.one_of(st.floats(-1.4, 1.4), st.sampled_from([-1.0, 1.0, 0.999999])),
    tau=st.one_of(st.floats(0.01, 20.0), st.sampled_from([0.0, -1.0])),
)
def test_car_and_icar_logp(seed, alpha, tau):
    _run_car("random12", seed, alpha, tau, "C")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["C", "JAX"])
@_profile(LONG)
@given(
    name=st.sampled_from(CONNECTED),
    seed=SEEDS,
    alpha=st.one_of(st.floats(-1.4, 1.4), st.sampled_from([-1.0, 1.0, 0.999999])),
    tau=st.one_of(st.floats(0.01, 20.0), st.sampled_from([0.0, -1.0])),
)
def test_car_and_icar_logp_long(backend, name, seed, alpha, tau):
    _run_car(name, seed, alpha, tau, backend)


@_profile(QUICK)
@given(name=st.sampled_from(sorted(GRAPHS)), seed=SEEDS, rho=st.floats(-0.5, 1.5))
def test_bym2_scaling_and_domain(name, seed, rho):
    rng = np.random.default_rng(seed)
    W = GRAPHS[name].toarray() * np.exp(rng.normal(0, 1, (1, 1)))  # a global weight
    s = pms.scaling_factor(W, per_node=True, method="exact")
    # Dense reference: geometric mean of diag of the pseudo-inverse of each component's R.
    R = np.diag(W.sum(axis=1)) - W
    k, labels = pms.connected_components(W)
    for c in range(k):
        idx = np.flatnonzero(labels == c)
        if idx.size == 1:
            assert s[idx[0]] == 1.0
            continue
        v = np.diag(np.linalg.pinv(R[np.ix_(idx, idx)]))
        np.testing.assert_allclose(s[idx], np.exp(np.mean(np.log(v))), rtol=1e-8)
    with pm.Model():
        if 0 <= rho <= 1:
            pms.BYM2("b", W, sigma=1.0, rho=rho)
        else:
            with pytest.raises(ValueError, match="rho"):
                pms.BYM2("b", W, sigma=1.0, rho=rho)


# -- SparseMatrix arithmetic ---------------------------------------------------------


@_profile(QUICK)
@given(
    a=st.sampled_from(sorted(GRAPHS)),
    b=st.sampled_from(sorted(GRAPHS)),
    seed=SEEDS,
    c=st.floats(-1e6, 1e6, allow_nan=False),
    extra=st.integers(1, 5),
)
def test_sparse_matrix_ops_match_dense(a, b, seed, c, extra):
    rng = np.random.default_rng(seed)
    A, B = values(a, "spd", rng), values(b, "indefinite", rng)
    if A.shape != B.shape:
        with pytest.raises(ValueError, match="order"):
            SparseMatrix.from_scipy(A) + SparseMatrix.from_scipy(B)
        return
    n = A.shape[0]
    x, y = rng.normal(size=n), rng.normal(size=n)
    M = c * SparseMatrix.from_scipy(A) - SparseMatrix.from_scipy(B).add_diagonal(x)
    ref = c * A - (B + np.diag(x))
    scale = np.abs(c * A).max() + np.abs(B).max() + np.abs(x).max()
    np.testing.assert_allclose(M.to_scipy(M.data.eval()).toarray(), ref, atol=1e-14 * scale)
    np.testing.assert_allclose((M @ y).eval(), ref @ y, atol=1e-13 * scale * np.abs(y).sum())
    qf = float(M.quad_form(y).eval())
    assert abs(qf - y @ ref @ y) <= 1e-13 * scale * np.abs(y).sum() ** 2
    z = np.ones(n + extra)  # a vector of another length is refused, never truncated
    with pytest.raises(ValueError, match="length"):
        M @ z
    with pytest.raises(ValueError, match="length"):
        M.quad_form(z)
