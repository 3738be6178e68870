"""Sparse embedded Laplace (numeric layer) against a dense NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.stats as st
from scipy import integrate

from pymc_sparse.linalg.cholmod import NotPositiveDefiniteError
from pymc_sparse.linalg.laplace import (
    NotConvergedError,
    laplace_gradient,
    laplace_posterior,
    laplace_posterior_from_inputs,
    laplace_state,
    make_inputs,
)
from pymc_sparse.linalg.laplace.families import FAMILIES
from pymc_sparse.linalg.laplace.structure import LaplaceStructure
from pymc_sparse.linalg.pattern import SparsityPattern
from tests.helpers import car_precision, lattice_adjacency
from tests.inference.laplace_reference import dense_laplace, fd5

FAMILY_NAMES = ["poisson", "binomial", "bernoulli", "negative_binomial", "normal"]


def _design(n, m, rng):
    """Sparse design: identity rows plus some rows with two entries (fill in A'A)."""
    rows = [np.eye(n)[i % n] * rng.uniform(0.5, 1.5) for i in range(m)]
    for k in range(0, m, 3):
        rows[k][(k + 3) % n] += rng.uniform(-0.8, 0.8)
    return sp.csr_matrix(np.array(rows))


def _data(family, m, rng):
    ntr = rng.integers(1, 6, m).astype(float)
    phi = {"negative_binomial": 2.5, "normal": 0.7}.get(family, 1.0) * rng.uniform(0.8, 1.2, m)
    if family == "poisson" or family == "negative_binomial":
        y = rng.poisson(2.0, m).astype(float)
    elif family == "binomial":
        y = rng.binomial(ntr.astype(int), 0.4).astype(float)
    elif family == "bernoulli":
        y = rng.integers(0, 2, m).astype(float)
    else:
        y = rng.normal(0.5, 1.0, m)
    return y, ntr, phi


def _problem(family, constraint, seed=0):
    """Q (scipy), data, and the dense constraint matrix (None) of a small model."""
    rng = np.random.default_rng(seed)
    if constraint == "intrinsic":
        # Two ICAR components (a 2x3 lattice and a path of 3): Q = tau (D - W).
        W = sp.block_diag([lattice_adjacency(2, 3), lattice_adjacency(1, 3)]).tocsc()
        Q = car_precision(W, alpha=1.0, tau=1.7)
    elif constraint == "components":
        W = sp.block_diag([lattice_adjacency(2, 3), lattice_adjacency(1, 3)]).tocsc()
        Q = car_precision(W, alpha=0.8, tau=1.7)
    else:
        Q = car_precision(lattice_adjacency(3, 3), alpha=0.85, tau=1.3)
    n = Q.shape[0]
    m = n + 3
    A = _design(n, m, rng)
    y, ntr, phi = _data(family, m, rng)
    mu = rng.normal(0, 0.3, n)
    off = rng.normal(0, 0.2, m)
    if constraint in ("components", "intrinsic"):
        labels = np.r_[np.zeros(6), np.ones(3)]
        C = np.stack([(labels == c).astype(float) for c in (0, 1)])
    elif constraint == "dense":
        C = rng.normal(size=(1, n))
    else:
        C = None
    return Q, A, y, ntr, phi, mu, off, C


def _sparse(family, constraint, Q, A, C):
    pattern, q = SparsityPattern.from_scipy(Q)
    spec = {None: None, "dense": C}.get(constraint, "components")
    return LaplaceStructure(pattern, A, family, spec), q


def _params(family, off, ntr, phi):
    p = {"offset": off}
    if family == "binomial":
        p["n_trials"] = ntr
    if family == "negative_binomial":
        p["dispersion"] = phi
    if family == "normal":
        p["sigma"] = phi
    return p


CASES = [(f, None) for f in FAMILY_NAMES] + [
    ("poisson", "components"),
    ("poisson", "intrinsic"),
    ("binomial", "intrinsic"),
    ("negative_binomial", "dense"),
]
IDS = [f"{f}-{c}" for f, c in CASES]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_family_derivatives(family):
    rng = np.random.default_rng(1)
    fam = FAMILIES[family]
    y, ntr, phi = _data(family, 7, rng)
    eta = rng.normal(0, 1, 7)
    ll, l1, l2, l3 = fam.derivs(y, eta, ntr, phi)
    ref = {
        "poisson": lambda: st.poisson.logpmf(y, np.exp(eta)),
        "binomial": lambda: st.binom.logpmf(y, ntr, 1 / (1 + np.exp(-eta))),
        "bernoulli": lambda: st.bernoulli.logpmf(y, 1 / (1 + np.exp(-eta))),
        "negative_binomial": lambda: st.nbinom.logpmf(y, phi, phi / (phi + np.exp(eta))),
        "normal": lambda: st.norm.logpdf(y, eta, phi),
    }[family]()
    np.testing.assert_allclose(ll, ref, rtol=1e-12, atol=1e-12)
    h = 1e-5
    for k, (lo, hi) in enumerate(
        zip(fam.derivs(y, eta - h, ntr, phi)[:3], fam.derivs(y, eta + h, ntr, phi)[:3])
    ):
        np.testing.assert_allclose((hi - lo) / (2 * h), (l1, l2, l3)[k], rtol=1e-7, atol=1e-8)
    if fam.param:
        dp = fam.param_derivs(y, eta, ntr, phi)
        lo = fam.derivs(y, eta, ntr, phi - h)[:3]
        hi = fam.derivs(y, eta, ntr, phi + h)[:3]
        for k in range(3):
            np.testing.assert_allclose((hi[k] - lo[k]) / (2 * h), dp[k], rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("family,constraint", CASES, ids=IDS)
def test_value_mode_and_H_match_dense(family, constraint):
    Q, A, y, ntr, phi, mu, off, C = _problem(family, constraint)
    s, q = _sparse(family, constraint, Q, A, C)
    post = laplace_posterior(
        s.q_pattern,
        q,
        mu,
        A,
        family,
        y,
        _params(family, off, ntr, phi),
        s.C.toarray() if constraint == "dense" else (None if constraint is None else "components"),
        tol=1e-13,
    )
    val, x, H = dense_laplace(
        Q.toarray(),
        mu,
        A.toarray(),
        FAMILIES[family],
        y,
        off,
        ntr,
        phi,
        C,
        intrinsic=constraint == "intrinsic",
    )
    np.testing.assert_allclose(post.mode, x, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(post.log_marginal, val, rtol=1e-10)
    # The cached factor is that of H at the mode: P' L L' P = H.
    L = post.factor.L().toarray()
    perm = post.factor.symbolic.perm
    Hf = np.empty_like(H)
    Hf[np.ix_(perm, perm)] = L @ L.T
    np.testing.assert_allclose(Hf, H, rtol=1e-10, atol=1e-12)
    # Constrained marginal variances against the dense conditional covariance.
    S = np.linalg.inv(H)
    if C is not None:
        S = S - S @ C.T @ np.linalg.solve(C @ S @ C.T, C @ S)
    np.testing.assert_allclose(post.marginal_variances, np.diag(S), rtol=1e-9, atol=1e-12)


def _blocks(s, q, mu, off, a, phi):
    return {"q": q, "mu": mu, "offset": off, "a": a, "phi": phi}


@pytest.mark.parametrize("family,constraint", CASES, ids=IDS)
def test_gradient_matches_finite_differences_of_dense(family, constraint):
    Q, A, y, ntr, phi, mu, off, C = _problem(family, constraint)
    s, q = _sparse(family, constraint, Q, A, C)
    inp = make_inputs(s, q, mu, y, _params(family, off, ntr, phi))
    stt = laplace_state(s, inp, tol=1e-13)
    grads = dict(zip(["q", "mu", "offset", "a", "phi"], laplace_gradient(stt)))
    rng = np.random.default_rng(5)
    base = _blocks(s, q, mu, inp.off, inp.a, inp.phi)
    intrinsic = constraint == "intrinsic"

    def value(blocks):
        Qd = s.q_pattern.to_scipy(blocks["q"]).toarray()
        Ad = s.A_csr(blocks["a"]).toarray()
        return dense_laplace(
            Qd,
            blocks["mu"],
            Ad,
            FAMILIES[family],
            y,
            blocks["offset"],
            ntr,
            blocks["phi"],
            C,
            intrinsic=intrinsic,
        )[0]

    for name in ["q", "mu", "offset", "a"] + (["phi"] if FAMILIES[family].param else []):
        d = rng.normal(size=base[name].size)
        if name == "q" and intrinsic:
            d = q * rng.normal()  # stay on the intrinsic manifold: the tau path
        if name == "q" and not intrinsic:
            d *= 0.1 * np.abs(q)
        ref = fd5(lambda t: value({**base, name: base[name] + t[0] * d}), np.zeros(1), np.ones(1))
        np.testing.assert_allclose(grads[name] @ d, ref, rtol=1e-8, atol=1e-9, err_msg=name)


def test_mode_movement_term_is_needed():
    """Dropping d(-1/2 log det H)/dx* dx*/dtheta must break the hyperparameter gradient."""
    Q, A, y, _ntr, _phi, mu, off, C = _problem("poisson", None, seed=3)
    y = y * 3  # counts large enough that W moves with the mode
    s, q = _sparse("poisson", None, Q, A, C)

    def path_value(tau):
        return laplace_state(s, make_inputs(s, tau * q, mu, y, {"offset": off}), tol=1e-13).value

    stt = laplace_state(s, make_inputs(s, q, mu, y, {"offset": off}), tol=1e-13)
    ref = fd5(lambda t: path_value(1.0 + t[0]), np.zeros(1), np.ones(1))
    full = laplace_gradient(stt)[0] @ q
    dropped = laplace_gradient(stt, mode_term=False)[0] @ q
    np.testing.assert_allclose(full, ref, rtol=1e-7)
    assert abs(dropped - ref) > 1e-3 * abs(ref)
    # Offset (a "theta" that only moves the mode and W) too.
    g_off = laplace_gradient(stt)[2].sum()
    g_off_dropped = laplace_gradient(stt, mode_term=False)[2].sum()
    ref_off = fd5(
        lambda t: laplace_state(
            s, make_inputs(s, q, mu, y, {"offset": off + t[0]}), tol=1e-13
        ).value,
        np.zeros(1),
        np.ones(1),
    )
    np.testing.assert_allclose(g_off, ref_off, rtol=1e-7)
    assert abs(g_off_dropped - ref_off) > 1e-3 * abs(ref_off)


def test_quadrature_one_dimensional():
    """Laplace is approximate: close to the exact 1-D marginal, not equal."""
    pattern, q = SparsityPattern.from_scipy(sp.csc_matrix([[2.0]]))
    for yv in (0.0, 3.0, 12.0):
        post = laplace_posterior(pattern, q, 0.3, None, "poisson", [yv], tol=1e-13)
        f = lambda x: np.exp(st.poisson.logpmf(yv, np.exp(x)) + st.norm.logpdf(x, 0.3, 2**-0.5))  # noqa: E731
        exact = np.log(integrate.quad(f, -12, 12, epsabs=1e-14, limit=200)[0])
        assert abs(post.log_marginal - exact) < 0.05
        assert post.log_marginal != pytest.approx(exact, abs=1e-8)


def test_normal_family_is_exact():
    Q, A, y, _ntr, phi, mu, off, C = _problem("normal", None)
    s, q = _sparse("normal", None, Q, A, C)
    post = laplace_posterior(s.q_pattern, q, mu, A, "normal", y, {"sigma": phi, "offset": off})
    S = A.toarray() @ np.linalg.inv(Q.toarray()) @ A.toarray().T + np.diag(phi**2)
    exact = st.multivariate_normal.logpdf(y, off + A @ mu, S)
    np.testing.assert_allclose(post.log_marginal, exact, rtol=1e-11)
    draws = post.sample(5, rng=0)
    np.testing.assert_allclose(post.log_weights(draws), exact, rtol=1e-10)


@pytest.mark.parametrize("constraint", ["intrinsic", "dense"])
def test_posterior_samples_and_weights(constraint):
    Q, A, y, _ntr, _phi, mu, off, C = _problem("poisson", constraint)
    s, q = _sparse("poisson", constraint, Q, A, C)
    spec = C if constraint == "dense" else "components"
    post = laplace_posterior(s.q_pattern, q, mu, A, "poisson", y, {"offset": off}, spec)
    X = post.sample((4000,), rng=1)
    np.testing.assert_allclose(X @ C.T, 0.0, atol=1e-10)
    np.testing.assert_allclose(
        X.mean(0), post.mode, atol=5 * np.sqrt(post.marginal_variances.max() / 4000)
    )
    np.testing.assert_allclose(X.var(0), post.marginal_variances, rtol=0.15)
    lw = post.log_weights(X[:200])
    assert post.log_weights(post.mode) == pytest.approx(post.log_marginal, rel=1e-12)
    # Importance estimate of log p(y|theta) is close to the Laplace value.
    est = np.log(np.mean(np.exp(lw - lw.max()))) + lw.max()
    assert abs(est - post.log_marginal) < 0.1


def test_not_positive_definite_and_errors():
    Q, A, y, _ntr, _phi, mu, off, C = _problem("poisson", None)
    s, q = _sparse("poisson", None, Q, A, C)
    assert laplace_state(s, make_inputs(s, -q, mu, y, {"offset": off})) is None
    with pytest.raises(NotPositiveDefiniteError):
        laplace_posterior(s.q_pattern, -q, mu, A, "poisson", y)
    with pytest.raises(ValueError, match="counts"):
        laplace_posterior(s.q_pattern, q, mu, A, "poisson", -y - 1)
    with pytest.raises(ValueError, match="needs `dispersion`"):
        laplace_posterior(s.q_pattern, q, mu, A, "negative_binomial", y)
    with pytest.raises(ValueError, match="needs `n_trials`"):
        laplace_posterior(s.q_pattern, q, mu, A, "binomial", np.minimum(y, 1))
    with pytest.raises(ValueError, match="do not apply"):
        laplace_posterior(s.q_pattern, q, mu, A, "poisson", y, {"sigma": 1.0})
    with pytest.raises(ValueError, match="Unknown family"):
        laplace_posterior(s.q_pattern, q, mu, A, "gamma", y)
    with pytest.raises(NotConvergedError):
        laplace_posterior(s.q_pattern, q, mu, A, "poisson", y, max_iter=1, warm_start=False)


def test_warm_start_saves_iterations():
    Q, A, y, _ntr, _phi, mu, off, C = _problem("poisson", None, seed=7)
    s, q = _sparse("poisson", None, Q, A, C)
    cold = laplace_state(s, make_inputs(s, q, mu, y, {"offset": off}), warm_start=False)
    warm = laplace_state(s, make_inputs(s, q * 1.01, mu, y, {"offset": off}))
    assert warm.iterations < cold.iterations


def test_posterior_from_op_inputs_matches():
    Q, A, y, ntr, phi, mu, off, C = _problem("binomial", "intrinsic")
    s, q = _sparse("binomial", "intrinsic", Q, A, C)
    a = laplace_posterior(
        s.q_pattern, q, mu, A, "binomial", y, _params("binomial", off, ntr, phi), "components"
    )
    b = laplace_posterior_from_inputs(s, q, mu, off, s.a_default, y, ntr, 1.0)
    np.testing.assert_allclose(b.mode, a.mode, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b.log_marginal, a.log_marginal, rtol=1e-12)
    np.testing.assert_allclose(b.marginal_variances, a.marginal_variances, rtol=1e-9)


def test_bym2_like_latent_with_design_values():
    """Latent (u ICAR with 2 components, v iid), eta = o + a_u u + a_v v: BYM2's layout."""
    rng = np.random.default_rng(11)
    Wd = sp.block_diag([lattice_adjacency(2, 3), lattice_adjacency(1, 3)]).tocsc()
    k = Wd.shape[0]
    R = car_precision(Wd, 1.0, 1.0)
    Q = sp.block_diag([R, sp.identity(k)]).tocsc()
    A = sp.hstack([0.7 * sp.identity(k), 0.4 * sp.identity(k)]).tocsr()
    y = rng.poisson(2.0, k).astype(float)
    off = rng.normal(0, 0.2, k)
    pattern, q = SparsityPattern.from_scipy(Q)
    s = LaplaceStructure(pattern, A, "poisson", "components")
    assert s.n_constraints == 2  # the v nodes are singletons: not constrained
    C = s.C.toarray()
    inp = make_inputs(s, q, 0.0, y, {"offset": off})
    stt = laplace_state(s, inp, tol=1e-13)
    val, x, _ = dense_laplace(
        Q.toarray(), 0.0, A.toarray(), FAMILIES["poisson"], y, off, None, None, C, intrinsic=True
    )
    np.testing.assert_allclose(stt.value, val, rtol=1e-10)
    np.testing.assert_allclose(stt.x, x, atol=1e-10)
    ga = laplace_gradient(stt)[3]
    d = rng.normal(size=ga.size)

    def value(t):
        Ad = s.A_csr(s.a_default + t[0] * d).toarray()
        return dense_laplace(
            Q.toarray(), 0.0, Ad, FAMILIES["poisson"], y, off, None, None, C, intrinsic=True
        )[0]

    np.testing.assert_allclose(ga @ d, fd5(value, np.zeros(1), np.ones(1)), rtol=1e-8)
