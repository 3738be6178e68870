"""LaplaceMarginal Op: value against the numeric layer, verify_grad for every input."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import verify_grad

from pymc_sparse.linalg.laplace import laplace_posterior
from pymc_sparse.ops.laplace import LaplaceMarginal, laplace_marginal
from tests.inference.test_laplace_numeric import _params, _problem, _sparse

NAMES = ["q", "mu", "offset", "a", "y", "n_trials", "phi"]


def _case(family, constraint):
    Q, A, y, ntr, phi, mu, off, C = _problem(family, constraint)
    s, q = _sparse(family, constraint, Q, A, C)
    vals = [q, mu, off, s.a_default.copy(), y, ntr if family == "binomial" else np.ones(s.m), phi]
    return s, vals, (Q, A, y, ntr, phi, mu, off, C)


CASES = [
    ("poisson", None),
    ("negative_binomial", None),
    ("normal", None),
    ("binomial", "intrinsic"),
]


@pytest.mark.parametrize("family,constraint", CASES, ids=[f"{f}-{c}" for f, c in CASES])
def test_value_matches_numeric(family, constraint):
    s, vals, (_Q, A, y, ntr, phi, mu, off, _C) = _case(family, constraint)
    xs = [pt.dvector(n) for n in NAMES]
    f = pytensor.function(xs, laplace_marginal(s, *xs, tol=1e-12))
    spec = None if constraint is None else "components"
    ref = laplace_posterior(
        s.q_pattern, vals[0], mu, A, family, y, _params(family, off, ntr, phi), spec, tol=1e-12
    ).log_marginal
    np.testing.assert_allclose(f(*vals), ref, rtol=1e-12)


@pytest.mark.parametrize("family,constraint", CASES, ids=[f"{f}-{c}" for f, c in CASES])
def test_verify_grad_every_input(family, constraint):
    s, vals, _ = _case(family, constraint)
    rng = np.random.default_rng(0)
    grad_inputs = [0, 1, 2, 3] + ([6] if s.family.param else [])
    for i in grad_inputs:
        if i == 0 and constraint == "intrinsic":
            # Off the intrinsic manifold the prior changes kind: differentiate along tau.
            def fn(tau, vals=vals):
                return LaplaceMarginal(s, 1e-12)(tau * vals[0], *vals[1:])

            verify_grad(fn, [np.array(1.3)], rng=rng, eps=1e-7, abs_tol=1e-5, rel_tol=1e-5)
            continue

        def fn(x, i=i, vals=vals):
            args = [pt.as_tensor_variable(v) for v in vals]
            args[i] = x
            return LaplaceMarginal(s, 1e-12)(*args)

        verify_grad(fn, [vals[i]], rng=rng, eps=1e-7, abs_tol=1e-5, rel_tol=1e-5)


def test_hyperparameter_path_gradient():
    """pytensor.grad through tau * q and a scalar offset shift, against central differences."""
    s, vals, _ = _case("poisson", None)
    tau, shift = pt.dscalar("tau"), pt.dscalar("shift")
    out = LaplaceMarginal(s, 1e-12)(tau * vals[0], vals[1], vals[2] + shift, *vals[3:])
    f = pytensor.function([tau, shift], [out, *pytensor.grad(out, [tau, shift])])
    h = 1e-5
    _, gt, gs = f(1.2, 0.1)
    np.testing.assert_allclose(gt, (f(1.2 + h, 0.1)[0] - f(1.2 - h, 0.1)[0]) / (2 * h), rtol=1e-6)
    np.testing.assert_allclose(gs, (f(1.2, 0.1 + h)[0] - f(1.2, 0.1 - h)[0]) / (2 * h), rtol=1e-6)


def test_not_positive_definite_gives_nan():
    s, vals, _ = _case("poisson", None)
    xs = [pt.dvector(n) for n in NAMES]
    out = laplace_marginal(s, *xs)
    f = pytensor.function(xs, [out, pytensor.grad(out, xs[0])])
    bad = [-vals[0], *vals[1:]]
    v, g = f(*bad)
    assert np.isnan(v) and np.all(np.isnan(g))


def test_bad_lengths_raise():
    s, vals, _ = _case("poisson", None)
    with pytest.raises(ValueError, match="`mu` must have length"):
        LaplaceMarginal(s)(vals[0], np.zeros(3), *vals[2:])


def test_constant_q_skips_its_gradient():
    """A Q built from constants only gets a gradient Op with wrt_q=False: same gradients."""
    from pymc_sparse.ops.laplace import LaplaceMarginalGrad

    try:
        from pytensor.graph.traversal import ancestors
    except ImportError:  # pragma: no cover - older pytensor
        from pytensor.graph.basic import ancestors

    s, vals, _ = _case("binomial", "intrinsic")
    shift = pt.dscalar("shift")
    q_sym = pt.dvector("q")

    def graph(q):
        out = LaplaceMarginal(s, 1e-12)(q, vals[1], vals[2] + shift, *vals[3:])
        return out, pytensor.grad(out, shift)

    const_out, const_g = graph(pt.as_tensor_variable(vals[0]) * 1.0)
    sym_out, sym_g = graph(q_sym)

    def grad_ops(g):
        nodes = {v.owner for v in ancestors([g]) if v.owner is not None}
        return [n.op for n in nodes if isinstance(n.op, LaplaceMarginalGrad)]

    ops = {"const": grad_ops(const_g), "sym": grad_ops(sym_g)}
    assert [op.wrt_q for op in ops["const"]] == [False]
    assert [op.wrt_q for op in ops["sym"]] == [True]
    f_const = pytensor.function([shift], [const_out, const_g])
    f_sym = pytensor.function([q_sym, shift], [sym_out, sym_g])
    for a, b in zip(f_const(0.1), f_sym(vals[0], 0.1)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
