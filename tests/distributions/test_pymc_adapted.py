"""PyMC's own CAR/ICAR tests, run against ``pms.CAR`` / ``pms.ICAR``, and the drop-in checks.

Adapted from ``tests/distributions/test_multivariate.py`` of PyMC 5 (pymc-devs/pymc,
Apache-2.0): ``test_car_logp``, ``test_car_matrix_check``, ``test_car_alpha_bounds``,
``TestMoments.test_car_moment``/``test_icar_moment``, ``TestICAR`` and ``test_car_rng_fn``
(26 cases).  Each test keeps PyMC's inputs; where our behaviour differs on purpose the test
asserts *our documented behaviour* instead, and its docstring says what PyMC asserts and why
we differ (see ``docs/migration.md``).  Summary:

========================================  ===========================================
PyMC test                                 here
========================================  ===========================================
test_car_logp (6)                         passes, and stronger: equal to SciPy exactly
                                          (PyMC: up to a constant); logp shape is the
                                          batch shape, () for one field (PyMC: (1,))
test_car_matrix_check (2)                 error at build, ``ValueError`` naming the
                                          entry (PyMC: ``AssertionError`` at logp)
test_car_alpha_bounds (2)                 constant alpha: ``ValueError`` at build;
                                          alpha set later: same errors as PyMC
test_car_moment (4), test_icar_moment (2)  pass unchanged
TestICAR.check_rv_inferred_size           passes unchanged
TestICAR.check_pymc_params_match_rv_op    PyMC internals: our Op's parameters asserted
test_icar_logp                            xfail (strict): different normalisation;
                                          the exact relation is asserted separately
test_icar_rng_fn                          PyMC cannot draw; we draw exactly
test_icar_matrix_checks (4)               3 same errors (at build); weighted W allowed
test_car_rng_fn (2)                       passes unchanged
========================================  ===========================================

Then the drop-in checks of issue 19 and 18: every ``W`` form ``pm.CAR`` accepts, a shared
``W`` changed after the build, and ``shape``/``dims`` agreement with the graph.
"""

from __future__ import annotations

import numpy as np
import numpy.random as npr
import pymc as pm
import pytensor
import pytensor.sparse
import pytensor.tensor as pt
import pytest
import scipy.sparse as sp
import scipy.stats as st
from pymc.logprob.utils import ParameterValueError
from pymc.testing import assert_support_point_is_expected

from pymc_sparse.distributions.bym2 import BYM2
from pymc_sparse.distributions.car import CAR
from pymc_sparse.distributions.gmrf import SparseGMRF
from pymc_sparse.distributions.icar import ICAR
from pymc_sparse.precision.graph import AdjacencyChangedError

# PyTensor's sparse rewrites read its BLAS flags; on a machine where PyTensor links no BLAS
# (pip-installed, as here) that read warns.  Not ours, and not about these tests.
pytestmark = pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS:UserWarning")

# PyMC's 4-node square of rook-adjacent sites (a 4-cycle).
W_SQUARE = np.array(
    [[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]]
)


def _as_pytensor(W, sparse: bool):
    """PyMC's tests pass W as a PyTensor constant, or its CSR conversion."""
    W = pt.as_tensor_variable(W)
    return pytensor.sparse.csr_from_dense(W) if sparse else W


# -- test_car_logp --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sparse, size",
    [(False, ()), (False, (1,)), (False, (4,)), (False, (4, 4, 4)), (True, ()), (True, (4,))],
    ids=str,
)
def test_car_logp(sparse, size):
    """PyMC: CAR logp equals SciPy's MVN logpdf *up to an additive constant*.

    Ours is the normalised density, so it equals SciPy's exactly.  Shape: PyMC's test takes
    ``delta_logp[0]``, which needs at least one dimension; ``pm.CAR`` returns ``(1,)`` for a
    single field, ``pms.CAR`` returns a scalar (the batch shape ``size``), like ``pm.MvNormal``.
    """
    npr.seed(1)
    tau, alpha, mu = 2, 0.5, np.zeros(4)
    xs = npr.randn(*(size + mu.shape))
    D = W_SQUARE.sum(axis=0)
    cov = np.linalg.inv(tau * (np.diag(D) - alpha * W_SQUARE))
    scipy_logp = st.multivariate_normal.logpdf(xs, mu, cov)

    car = CAR.dist(mu, _as_pytensor(W_SQUARE, sparse), alpha, tau, size=size)
    car_logp = pm.logp(car, xs).eval()

    assert car_logp.shape == size
    np.testing.assert_allclose(car_logp, scipy_logp, rtol=1e-12, atol=1e-12)


# -- test_car_matrix_check ------------------------------------------------------------------
@pytest.mark.parametrize("sparse", [False, True], ids=str)
def test_car_matrix_check(sparse):
    """PyMC: an asymmetric W builds, and ``logp(...).eval()`` raises ``AssertionError``.

    Ours checks W when the variable is created and raises ``ValueError`` naming the entry
    (an exception at build instead of at evaluation; a different type).
    """
    W = W_SQUARE.copy()
    W[0, 2] = 2.0
    with pytest.raises(ValueError, match=r"not symmetric: W\[\d, \d\]"):
        CAR.dist(np.zeros(4), _as_pytensor(W, sparse), 0.5, 2)
    if not sparse:  # W.ndim != 2: PyMC raises ValueError("W must be a matrix") at build
        with pytest.raises(ValueError, match="must be a 2-D matrix"):
            CAR.dist(np.zeros(4), pt.as_tensor_variable(np.array([0.0, 1.0, 2.0, 0.0])), 0.5, 2)


# -- test_car_alpha_bounds ------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [1, -1])
def test_car_alpha_bounds(alpha):
    """PyMC: a constant alpha = +-1 builds; draws and logp raise ``ValueError`` later.

    Ours refuses a constant alpha outside (-1, 1) at build.  An alpha that only reaches the
    bound at evaluation (here a shared variable) raises exactly as PyMC does: the draw with
    a ``ValueError`` and the logp with ``ParameterValueError`` "-1 < alpha < 1, tau > 0".
    """
    W = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]])
    mu, values = np.array([0, 0, 0]), np.array([-0.5, 0, 0.5])
    with pytest.raises(ValueError, match=r"`alpha` must lie in \(-1, 1\)"):
        CAR.dist(W=W, alpha=alpha, mu=mu, tau=1)

    a = pytensor.shared(0.5)
    car = CAR.dist(W=W, alpha=a, mu=mu, tau=1)
    a.set_value(float(alpha))
    with pytest.raises(ValueError, match="-1 < alpha < 1"):
        pm.draw(car)
    with pytest.raises(ParameterValueError, match="-1 < alpha < 1, tau > 0"):
        pm.logp(car, values).eval()


# -- TestMoments ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "mu, size, expected",
    [
        (np.array([1, 0, 3.0, 4]), None, np.array([1, 0, 3.0, 4])),
        (np.array([1, 0, 3.0, 4]), 6, np.full((6, 4), [1, 0, 3.0, 4])),
        (np.array([1, 0, 3.0, 4]), (5, 3), np.full((5, 3, 4), [1, 0, 3.0, 4])),
        (
            np.array([[3.0, 5, 2, 1], [1, 4, 0.5, 9]]),
            (4, 5, 2),
            np.full((4, 5, 2, 4), [[3.0, 5, 2, 1], [1, 4, 0.5, 9]]),
        ),
    ],
    ids=["none", "6", "5x3", "batched-mu"],
)
def test_car_moment(mu, size, expected):
    """Unchanged from PyMC: the support point is ``mu``, broadcast to the variable."""
    with pm.Model() as model:
        CAR("x", mu=mu, W=W_SQUARE, alpha=0.5, tau=2, size=size)
    assert_support_point_is_expected(model, expected)


@pytest.mark.parametrize(
    "W, expected",
    [
        (np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]]), np.array([0, 0, 0])),
        (np.array([[0, 1], [1, 0]]), np.array([0, 0])),
    ],
    ids=["path3", "pair"],
)
def test_icar_moment(W, expected):
    """Unchanged from PyMC: the support point is 0 (which satisfies every constraint)."""
    with pm.Model() as model:
        ICAR("x", W=W)
    assert_support_point_is_expected(model, expected)


# -- TestICAR -------------------------------------------------------------------------------
W_TRIANGLE = np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]])
W_CYCLE = np.array([[0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0]])


def test_icar_rv_op_params():
    """PyMC checks ``pm.ICAR``'s internal parameters (edge lists, soft-constraint strength).

    Those are implementation details of ``pm.ICAR``.  Ours has two: the stored
    lower-triangle values of :math:`R = D - W` (pattern order) and ``sigma``.
    """
    rv = ICAR.dist(W=W_TRIANGLE, sigma=2)
    op = rv.owner.op
    r_data, sigma = rv.owner.inputs[2:]
    R = np.diag(W_TRIANGLE.sum(axis=1)) - W_TRIANGLE
    np.testing.assert_allclose(op.pattern.to_scipy(r_data.eval()).toarray(), R)
    assert float(sigma.eval()) == 2.0


@pytest.mark.parametrize(
    "size, expected",
    [
        (None, (3,)),
        ((), (3,)),
        (1, (1, 3)),
        ((1,), (1, 3)),
        (5, (5, 3)),
        ((4, 5), (4, 5, 3)),
        ((2, 4, 2), (2, 4, 2, 3)),
    ],
    ids=str,
)
def test_icar_rv_inferred_size(size, expected):
    """Unchanged from PyMC (its seven sizes as parameters)."""
    assert tuple(ICAR.dist(W=W_TRIANGLE, sigma=2, size=size).shape.eval()) == expected


X_CYCLE = np.array([0.01, -0.03, 0.02, 0.00])


@pytest.mark.xfail(
    strict=True,
    reason="Different normalisation on purpose: pm.ICAR's value 4.60022238 has a soft "
    "constraint term and no -(n-k)/2 log(2 pi) + log|R|*/2; ours is the normalised density "
    "on the constrained subspace (docs/migration.md). The exact relation is tested below.",
)
def test_icar_logp_pymc_value():
    """PyMC: ``pm.logp(ICAR(W), x) == 4.60022238``."""
    assert np.isclose(pm.logp(ICAR.dist(W=W_CYCLE), X_CYCLE).eval(), 4.60022238)


def test_icar_logp_relation_to_pymc():
    r"""Ours minus ``pm.ICAR``'s is the documented constant (sigma = 1, x sums to 0).

    ``pm.ICAR``: :math:`-\tfrac12 x^\top R x - \log\sqrt{2\pi} - \log(0.001 n)
    - \tfrac12 (\sum x / 0.001 n)^2`; ours: :math:`-\tfrac{n-1}{2}\log 2\pi
    + \tfrac12\log|R|_* - \tfrac12 x^\top R x`.
    """
    n = 4
    ours = float(pm.logp(ICAR.dist(W=W_CYCLE), X_CYCLE).eval())
    pymc = float(pm.logp(pm.ICAR.dist(W=W_CYCLE), X_CYCLE).eval())
    eig = np.linalg.eigvalsh(np.diag(W_CYCLE.sum(1)) - W_CYCLE)
    log_gdet = np.log(eig[1:]).sum()
    expected = (
        -(n - 1) / 2 * np.log(2 * np.pi)
        + 0.5 * log_gdet
        + 0.5 * np.log(2 * np.pi)
        + np.log(0.001 * n)
    )
    assert abs(X_CYCLE.sum()) < 1e-15
    np.testing.assert_allclose(ours - pymc, expected, rtol=1e-12)
    np.testing.assert_allclose(pymc, 4.60022238, rtol=1e-8)  # PyMC's own number still holds


def test_icar_rng_fn():
    """PyMC: ``pm.draw(pm.ICAR.dist(W))`` raises ``NotImplementedError``.

    Ours draws exactly from the constrained law: each draw sums to 0 and the sample
    covariance approaches :math:`R^+` (relative error < 5% with 20,000 draws).
    """
    draws = pm.draw(ICAR.dist(W=W_CYCLE, size=20_000), random_seed=3)
    np.testing.assert_allclose(draws.sum(axis=1), 0.0, atol=1e-12)
    R = np.diag(W_CYCLE.sum(1)) - W_CYCLE
    rel = np.abs(np.cov(draws.T) - np.linalg.pinv(R)).max() / np.abs(np.linalg.pinv(R)).max()
    assert rel < 0.05


@pytest.mark.parametrize(
    "W, match",
    [
        (np.array([0, 1, 0, 0]), "must be a 2-D matrix"),
        (np.array([[0, 1, 0, 0], [1, 0, 0, 1], [1, 0, 0, 1]]), "must be square"),
        (np.array([[0, 1, 0, 0], [1, 0, 0, 1], [1, 0, 0, 1], [0, 1, 1, 0]]), "not symmetric"),
    ],
    ids=["ndim", "square", "symmetric"],
)
def test_icar_matrix_checks(W, match):
    """Same inputs as PyMC, same ``ValueError`` type and moment (build); our wording."""
    with pytest.raises(ValueError, match=match):
        with pm.Model():
            ICAR("phi", W=W)


def test_icar_weighted_w_allowed():
    """PyMC refuses weights other than 0/1 ("W must be composed of only 1s and 0s").

    Ours accepts a weighted W: the log-density uses :math:`R = D - W` with the weights.
    """
    W = np.array([[0, 1, 1, 0], [1, 0, 0, 0.5], [1, 0, 0, 1], [0, 0.5, 1, 0]])
    x = np.array([0.3, -0.1, -0.4, 0.2])
    R = np.diag(W.sum(1)) - W
    eig = np.linalg.eigvalsh(R)
    expected = -1.5 * np.log(2 * np.pi) + 0.5 * np.log(eig[1:]).sum() - 0.5 * x @ R @ x
    np.testing.assert_allclose(pm.logp(ICAR.dist(W=W), x).eval(), expected, rtol=1e-12)


# -- test_car_rng_fn ------------------------------------------------------------------------
@pytest.mark.parametrize("sparse", [True, False], ids=str)
def test_car_rng_fn(sparse):
    """Unchanged from PyMC: KS test of CAR draws against ``pm.MvNormal`` draws."""
    delta, n_fails, size = 0.05, 20, (100,)
    tau, alpha, mu = 2, 0.5, np.array([1, 1, 1, 1])
    D = W_SQUARE.sum(axis=0)
    cov = np.linalg.inv(tau * (np.diag(D) - alpha * W_SQUARE))
    with pm.Model():
        CAR("car", mu, _as_pytensor(W_SQUARE, sparse), alpha, tau, size=size)
        pm.MvNormal("mn", mu, cov, size=size)
        check = pm.sample_prior_predictive(n_fails, return_inferencedata=False, random_seed=1)
    p, f = delta, n_fails
    while p <= delta and f > 0:
        car_smp, mn_smp = check["car"][f - 1], check["mn"][f - 1]
        p = min(
            st.ks_2samp(car_smp[..., idx].ravel(), mn_smp[..., idx].ravel())[1]
            for idx in range(car_smp.shape[-1])
        )
        f -= 1
    assert p > delta


# -- every W that pm.CAR / pm.ICAR accept (issue 19) ----------------------------------------
def _path(n=5):
    W = np.zeros((n, n))
    for i in range(n - 1):
        W[i, i + 1] = W[i + 1, i] = 1.0
    return W


W_FORMS = {
    "numpy": lambda W: W,
    "scipy-csr": lambda W: sp.csr_matrix(W),
    "pt-constant": lambda W: pt.constant(W),
    "pt-sparse-constant": lambda W: pytensor.sparse.as_sparse_variable(sp.csr_matrix(W)),
    "csr_from_dense": lambda W: pytensor.sparse.csr_from_dense(pt.as_tensor_variable(W)),
    "pm.Data": lambda W: pm.Data("W", W),
    "pm.Data-sparse": lambda W: pm.Data("W", sp.csr_matrix(W)),
    "shared-expression": lambda W: pytensor.shared(W) * 1.0,
}
X_PATH = np.array([0.3, -0.2, 0.5, -0.1, -0.5])


@pytest.fixture(scope="module")
def reference_logps():
    """CAR and ICAR log-densities at ``X_PATH`` with a NumPy ``W`` (computed once)."""
    W = _path()
    car = pm.logp(CAR.dist(mu=0.0, W=W, alpha=0.6, tau=2.0), X_PATH)
    icar = pm.logp(ICAR.dist(W=W), X_PATH)
    return pytensor.function([], [car, icar])()


@pytest.mark.parametrize("form", list(W_FORMS), ids=list(W_FORMS))
def test_every_w_form(form, reference_logps):
    """Each form gives the same CAR and ICAR log-density as the NumPy array."""
    with pm.Model():
        Wk = W_FORMS[form](_path())
        car = CAR("car", mu=0.0, W=Wk, alpha=0.6, tau=2.0)
        icar = ICAR("icar", W=Wk)
    got = pytensor.function([], [pm.logp(car, X_PATH), pm.logp(icar, X_PATH)])()
    np.testing.assert_allclose(got, reference_logps, rtol=1e-14)


def test_free_symbolic_w_refused():
    """A W that depends on a random variable has no pattern at build: ``TypeError``."""
    with pm.Model():
        s = pm.HalfNormal("s")
        with pytest.raises(TypeError, match=r"must be a constant.*depend only on shared"):
            CAR("c", mu=0.0, W=s * _path(), alpha=0.5, tau=1.0)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_set_data_on_w_raises(sparse):
    """``pm.set_data`` on W after the build: logp, gradient and draws raise, never silently.

    Setting it back to the build-time value works again; a new edge, a changed weight and
    a different size are each detected.
    """
    W = _path()
    conv = sp.csr_matrix if sparse else np.asarray
    with pm.Model() as model:
        Wd = pm.Data("W", conv(W))
        a = pm.Uniform("a", 0, 1)
        CAR("car", mu=0.0, W=Wd, alpha=a, tau=2.0)
        ICAR("icar", W=Wd)
        BYM2("b", W=Wd, sigma=1.0, rho=0.5)
    logp, dlogp = model.compile_logp(), model.compile_dlogp()
    ip = model.initial_point()
    before = logp(ip)

    new_edge = W.copy()
    new_edge[0, 4] = new_edge[4, 0] = 1.0
    weight = W.copy()
    weight[0, 1] = weight[1, 0] = 2.0
    for changed in (new_edge, weight, _path(6)):
        pm.set_data({"W": conv(changed)}, model=model)
        for f in (logp, dlogp):
            with pytest.raises(AdjacencyChangedError, match="changed since the model was built"):
                f(ip)
        for var in ("car", "icar"):
            with pytest.raises(AdjacencyChangedError):
                pm.draw(model[var])
    pm.set_data({"W": conv(W)}, model=model)
    assert logp(ip) == before


# -- shape / dims agree with the graph (issue 18) -------------------------------------------
SHAPE_CASES = {
    "CAR": lambda **kw: CAR("x", mu=0.0, W=_path(4), alpha=0.5, tau=1.0, **kw),
    "ICAR": lambda **kw: ICAR("x", W=_path(4), **kw),
    "SparseGMRF": lambda **kw: SparseGMRF("x", Q=sp.identity(4, format="csc") * 2.0, **kw),
}


@pytest.mark.parametrize("dist", list(SHAPE_CASES), ids=list(SHAPE_CASES))
@pytest.mark.parametrize("how", ["dims", "shape"])
def test_support_length_checked_at_build(dist, how):
    """A last dimension of length 6 for a 4-node graph raises when the variable is created."""
    with pm.Model(coords={"area": range(6), "ok": range(4)}):
        kw = {"dims": "area"} if how == "dims" else {"shape": (6,)}
        with pytest.raises(ValueError, match=r"has length 6 but .* has 4 nodes"):
            SHAPE_CASES[dist](**kw)
        good = {"dims": "ok"} if how == "dims" else {"shape": (2, 4)}
        SHAPE_CASES[dist](**good)


def test_bym2_dims_longer_than_graph():
    """The case reported in issue 18: BYM2 with dims longer than W used to build and sample."""
    with pm.Model(coords={"area": range(6)}) as model:
        with pytest.raises(ValueError, match="BYM2 dims 'area' has 6 coordinates but W has 4"):
            BYM2("b", W=_path(4), sigma=1.0, rho=0.5, dims="area")
    assert not model.named_vars  # nothing half-built is left in the model


def test_bym2_keeps_user_names():
    """``u_name``/``v_name`` keep the notebook's ``phi``/``theta`` (for ``pm.do``, var_names)."""
    with pm.Model(coords={"area": range(5)}) as model:
        rho = pm.Beta("rho", 0.5, 0.5)
        BYM2("b", W=_path(), sigma=1.0, rho=rho, dims="area", u_name="phi", v_name="theta")
    assert {"phi", "theta", "b"} <= set(model.named_vars)
    with pm.do(model, {"rho": 1.0}) as m1:
        draw = pm.draw(m1["b"], random_seed=1)
    np.testing.assert_allclose(draw.sum(), 0.0, atol=1e-12)  # pure ICAR part: sums to 0
