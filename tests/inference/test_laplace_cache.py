"""Caches of the numeric Laplace: the prior factor, the chord warm start, solved states."""

from __future__ import annotations

import numpy as np
import pytest

from pymc_sparse.linalg.cholmod import cache_info, clear_cache
from pymc_sparse.linalg.laplace import laplace_gradient, laplace_state, make_inputs, newton, prior
from pymc_sparse.linalg.laplace.structure import LaplaceStructure
from tests.inference.test_laplace_numeric import FAMILY_NAMES, _params, _problem, _sparse

CASES = [
    ("poisson", None),
    ("binomial", "intrinsic"),
    ("negative_binomial", "dense"),
    ("poisson", "components"),
]
IDS = [f"{f}-{c}" for f, c in CASES]


def _model(family, constraint):
    Q, A, y, ntr, phi, mu, off, C = _problem(family, constraint)
    s, q = _sparse(family, constraint, Q, A, C)
    params = _params(family, off, ntr, phi)
    return s, q, lambda qv: make_inputs(s, qv, mu, y, params)


def _fresh(s, inp):
    """Value and gradient with every cache emptied first (cold Newton from mu)."""
    clear_cache()
    st = laplace_state(s, inp, tol=1e-12, warm_start=False)
    out = st.value, laplace_gradient(st)
    newton._STATES.clear()  # the next solve at these inputs must not find this state
    return out


@pytest.mark.parametrize("family,constraint", CASES, ids=IDS)
def test_scaled_prior_is_reused_with_the_same_value_and_gradient(family, constraint):
    s, q, inputs = _model(family, constraint)
    c = 1.37
    ref_value, ref_grad = _fresh(s, inputs(c * q))
    clear_cache()
    laplace_state(s, inputs(q), tol=1e-12, warm_start=False)  # prior factor built at q
    n0 = cache_info()["numeric"]
    st = laplace_state(s, inputs(c * q), tol=1e-12, warm_start=False)
    assert st.prior.scale == pytest.approx(c, rel=1e-15)
    assert cache_info()["numeric"] - n0 == st.iterations  # factors of H only, none of Q
    np.testing.assert_allclose(st.value, ref_value, rtol=1e-12)
    for g, ref in zip(laplace_gradient(st), ref_grad):
        np.testing.assert_allclose(g, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("family,constraint", CASES, ids=IDS)
def test_constant_prior_is_reused_bitwise(family, constraint):
    s, q, inputs = _model(family, constraint)
    ref_value, ref_grad = _fresh(s, inputs(q))
    st = laplace_state(s, inputs(q.copy()), tol=1e-12, warm_start=False)
    assert st.prior.scale == 1.0
    assert st.value == ref_value
    for g, ref in zip(laplace_gradient(st), ref_grad):
        np.testing.assert_array_equal(g, ref)


def test_prior_of_another_shape_is_refactorised():
    s, q, inputs = _model("poisson", None)
    laplace_state(s, inputs(q), tol=1e-12)
    q2 = q.copy()
    q2[s.q_pattern.diag_index[0]] += 0.25  # not a multiple of q
    ref_value, ref_grad = _fresh(s, inputs(q2))
    first = laplace_state(s, inputs(q), tol=1e-12)
    st = laplace_state(s, inputs(q2), tol=1e-12)
    assert st.prior.core is not first.prior.core  # Q is factorised again
    np.testing.assert_array_equal(st.prior.core.q, q2)
    np.testing.assert_allclose(st.value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(laplace_gradient(st)[0], ref_grad[0], rtol=1e-9, atol=1e-12)


def test_caches_are_bounded_and_cleared():
    clear_cache()
    structures = 0
    for family in FAMILY_NAMES:
        for constraint in (None, "components"):
            s, q, inputs = _model(family, constraint)
            assert laplace_state(s, inputs(q)) is not None
            structures += 1
    assert structures > prior._PRIORS.maxsize
    for cache in (prior._PRIORS, newton._MODES, newton._STATES):
        assert 0 < len(cache) <= cache.maxsize
    assert all(len(v) <= newton._STATES_PER_KEY for v in newton._STATES._data.values())
    clear_cache()  # what pms.clear_cache() calls
    for cache in (prior._PRIORS, newton._MODES, newton._STATES):
        assert len(cache) == 0


def test_state_cache_sees_inputs_changed_in_place():
    s, q, inputs = _model("poisson", None)
    inp = inputs(q.copy())
    first = laplace_state(s, inp, tol=1e-12)
    inp.q *= 1.1  # a caller reusing its buffer (PyTensor storage, finite differences)
    second = laplace_state(s, inp, tol=1e-12)
    assert second is not first
    ref_value, _ = _fresh(s, inputs(1.1 * q))
    np.testing.assert_allclose(second.value, ref_value, rtol=1e-12)
    again = laplace_state(s, inputs(q), tol=1e-12)
    np.testing.assert_allclose(again.value, first.value, rtol=1e-12)


@pytest.mark.parametrize("family,constraint", CASES, ids=IDS)
def test_chord_warm_start_needs_one_factorisation(family, constraint):
    s, q, inputs = _model(family, constraint)
    clear_cache()
    laplace_state(s, inputs(q), tol=1e-12)
    for step in (1.0005, 1.3):  # nearby theta, then a large move
        ref_value, ref_grad = _fresh(s, inputs(step * q))
        laplace_state(s, inputs(q), tol=1e-12)
        st = laplace_state(s, inputs(step * q), tol=1e-12)
        if step < 1.01:
            assert st.iterations == 1
        np.testing.assert_allclose(st.value, ref_value, rtol=1e-11)
        for g, ref in zip(laplace_gradient(st), ref_grad):
            np.testing.assert_allclose(g, ref, rtol=1e-6, atol=1e-9)


def test_gradient_without_q_matches():
    s, q, inputs = _model("binomial", "intrinsic")
    st = laplace_state(s, inputs(q), tol=1e-12)
    full = laplace_gradient(st)
    part = laplace_gradient(st, wrt_q=False)
    np.testing.assert_array_equal(part[0], np.zeros_like(full[0]))
    for a, b in zip(part[1:], full[1:]):
        np.testing.assert_array_equal(a, b)


def test_structure_matvec_and_projection():
    s, q, _ = _model("poisson", "components")
    rng = np.random.default_rng(3)
    x = rng.normal(size=s.n)
    np.testing.assert_allclose(s.q_matvec(q, x), s.q_pattern.matvec(q, x), rtol=1e-13)
    C = s.C.toarray()
    p = s.feasible(x)
    np.testing.assert_allclose(C @ p, 0.0, atol=1e-13)
    np.testing.assert_allclose(p, x - C.T @ np.linalg.solve(C @ C.T, C @ x), atol=1e-13)
    assert isinstance(s, LaplaceStructure)
