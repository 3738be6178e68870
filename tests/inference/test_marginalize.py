"""``marginalize_laplace``: graph reading, transformed model against dense references."""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest
import scipy.sparse as sp
from pymc.model.fgraph import ModelFreeRV, ModelVar
from pytensor.graph.traversal import io_toposort
from scipy.special import logit
from scipy.stats import multivariate_normal

from pymc_sparse.distributions.bym2 import BYM2
from pymc_sparse.distributions.car import CAR
from pymc_sparse.distributions.gmrf import SparseGMRF
from pymc_sparse.distributions.icar import ICAR
from pymc_sparse.inference.marginalize import MarginalizeError, analyse, marginalize_laplace
from pymc_sparse.linalg.laplace.families import get_family
from pymc_sparse.precision.scaling import scaling_factor
from tests.helpers import lattice_adjacency
from tests.inference.laplace_reference import dense_laplace


def islands_adjacency() -> sp.csc_matrix:
    """3 x 3 lattice, a 2-node path and a singleton: three components, n = 12."""
    return sp.block_diag(
        [lattice_adjacency(3), sp.csc_matrix([[0.0, 1.0], [1.0, 0.0]]), sp.csc_matrix((1, 1))]
    ).tocsc()


def bym2_model(W, y, E, family="poisson"):
    n = W.shape[0]
    with pm.Model() as model:
        beta0 = pm.Normal("beta0", 0.0, 1.0)
        sigma = pm.HalfNormal("sigma", 1.0)
        rho = pm.Beta("rho", 0.5, 0.5)
        b = BYM2("b", W=W, sigma=sigma, rho=rho)
        eta = beta0 + np.log(E) + b
        pm.Deterministic("rr", pm.math.exp(eta - np.log(E)))
        if family == "poisson":
            pm.Poisson("y", mu=pm.math.exp(eta), observed=y)
        else:
            pm.Normal("y", mu=eta, sigma=0.7, observed=y, shape=n)
    return model


def strip_model_vars(outs, replace):
    """Compile-able copies of fgraph expressions: ModelFreeRV -> inputs, wrappers removed."""
    mp = dict(replace)
    for node in io_toposort([], outs):
        if node.outputs[0] in mp:
            continue
        if isinstance(node.op, ModelVar):
            mp[node.outputs[0]] = mp.get(node.inputs[0], node.inputs[0])
            continue
        new = node.clone_with_new_inputs([mp.get(i, i) for i in node.inputs])
        for o, nw in zip(node.outputs, new.outputs, strict=True):
            mp[o] = nw
    return [mp.get(o, o) for o in outs]


def evaluate(a, outs, values):
    """Evaluate fgraph expressions of an Analysis at free-variable values (dict by name)."""
    free = [o for o in a.fgraph.outputs if o.owner and isinstance(o.owner.op, ModelFreeRV)]
    ins = {o: pt.tensor(name=o.name, shape=o.type.shape, dtype="float64") for o in free}
    fn = pytensor.function(
        list(ins.values()),
        strip_model_vars(outs, ins),
        on_unused_input="ignore",
        mode="FAST_COMPILE",
    )
    return fn(*(np.asarray(values[o.name], np.float64) for o in free))


def design(a, a_vals):
    if isinstance(a.A, tuple):
        struct = a.A[0].tocoo()
        return sp.csr_matrix((a_vals, (struct.row, struct.col)), shape=struct.shape)
    return sp.csr_matrix(a.A)


def test_bym2_predictor_is_read_exactly(rng):
    W = islands_adjacency()
    n = W.shape[0]
    model = bym2_model(W, rng.poisson(5, n), rng.uniform(2, 8, n))
    a = analyse(model, ["b"])
    assert a.family == "poisson" and a.constraint == "components"
    assert [f.name for f in a.fields] == ["b_u", "b_v"]
    vals = {
        "beta0": 0.3,
        "sigma": 0.8,
        "rho": 0.4,
        "b_u": rng.normal(size=n),
        "b_v": rng.normal(size=n),
    }
    eta, off, av, q, mu = evaluate(a, [a.eta, a.offset, a.A[1], a.Q.data, a.mu], vals)
    x = np.concatenate([vals["b_u"], vals["b_v"]])
    np.testing.assert_allclose(off + design(a, av) @ x, eta, rtol=1e-13, atol=1e-13)
    # Q = blockdiag(R + diag(singletons), I), mean 0.
    R = (sp.diags(np.asarray(W.sum(1)).ravel()) - W).toarray()
    R[-1, -1] = 1.0
    Qd = a.Q.pattern.to_scipy(q).toarray()
    np.testing.assert_allclose(Qd, sp.block_diag([R, np.eye(n)]).toarray(), atol=1e-14)
    assert np.all(mu == 0) and {d.name for d in a.dropped} == {"b", "rr"}


@pytest.mark.parametrize("family", ["poisson", "normal"])
def test_bym2_marginal_matches_dense_reference(family, rng):
    W = islands_adjacency()
    n = W.shape[0]
    E = rng.uniform(2, 8, n)
    y = rng.poisson(5, n) if family == "poisson" else rng.normal(1.5, 1.0, n)
    marginal = marginalize_laplace(bym2_model(W, y, E, family), "b")
    assert {v.name for v in marginal.free_RVs} == {"beta0", "sigma", "rho"}
    assert marginal.deterministics == [] and marginal._pms_laplace.dropped == ("b", "rr")
    beta0, sigma, rho = 0.2, 0.7, 0.35
    point = {"beta0": beta0, "sigma_log__": np.log(sigma), "rho_logodds__": logit(rho)}
    got = marginal.compile_logp(vars=[marginal["y"]], jacobian=False)(point)

    s = scaling_factor(W, per_node=True)
    R = (sp.diags(np.asarray(W.sum(1)).ravel()) - W).toarray()
    R[-1, -1] = 1.0
    Q = sp.block_diag([R, np.eye(n)]).toarray()
    A = np.hstack([np.diag(sigma * np.sqrt(rho / s)), sigma * np.sqrt(1 - rho) * np.eye(n)])
    C = np.zeros((2, 2 * n))
    C[0, :9] = 1.0
    C[1, 9:11] = 1.0
    off = beta0 + np.log(E)
    if family == "normal":
        # Exact: y ~ N(off, 0.49 I + A B (B'QB)^-1 B' A'), B an orthonormal basis of null(C).
        from scipy.linalg import null_space

        B = null_space(C)
        cov = 0.49 * np.eye(n) + A @ B @ np.linalg.solve(B.T @ Q @ B, B.T @ A.T)
        np.testing.assert_allclose(got, multivariate_normal(off, cov).logpdf(y), rtol=1e-10)
    else:
        fam = get_family("poisson")
        ones = np.ones(n)
        ref = dense_laplace(Q, 0.0, A, fam, y, off, ones, ones, C=C, intrinsic=True)[0]
        np.testing.assert_allclose(got, ref, rtol=1e-9)


def test_car_intercept_index_and_matrix_terms(rng):
    """Scalar field (intercept), indexing by constants, a constant matrix, a scale."""
    W = lattice_adjacency(3, 4)
    n = W.shape[0]
    idx = np.array([0, 3, 3, 7, 11, 5])
    M = rng.normal(size=(6, n))
    y = rng.poisson(3, 6)
    with pm.Model() as model:
        beta0 = pm.Normal("beta0", 0.5, 2.0)
        alpha = pm.Uniform("alpha", 0, 1)
        tau = pm.Gamma("tau", 2, 1)
        scale = pm.HalfNormal("scale", 1.0)
        x = CAR("x", mu=0.1, W=W, alpha=alpha, tau=tau)
        eta = beta0 + 2.0 * x[idx] - scale * x[idx] / 3.0 + 0.1 * pt.dot(M, x)
        pm.Poisson("y", mu=pm.math.exp(eta), observed=y)
    marginal = marginalize_laplace(model, ["beta0", "x"])
    assert {v.name for v in marginal.free_RVs} == {"alpha", "tau", "scale"}
    point = {"alpha_interval__": logit(0.6), "tau_log__": np.log(1.5), "scale_log__": 0.0}
    got = marginal.compile_logp(vars=[marginal["y"]], jacobian=False)(point)
    D = np.diag(np.asarray(W.sum(1)).ravel())
    Qx = 1.5 * (D - 0.6 * W.toarray())
    Q = sp.block_diag([[[0.25]], Qx]).toarray()
    S = np.zeros((6, n))
    S[np.arange(6), idx] = 1.0
    A = np.hstack([np.ones((6, 1)), (2.0 - 1.0 / 3.0) * S + 0.1 * M])
    mu = np.concatenate([[0.5], np.full(n, 0.1)])
    ones = np.ones(6)
    ref = dense_laplace(Q, mu, A, get_family("poisson"), y, np.zeros(6), ones, ones)[0]
    np.testing.assert_allclose(got, ref, rtol=1e-9)


@pytest.mark.parametrize(
    ("family", "params"),
    [
        ("binomial", {"n_trials"}),
        ("bernoulli", set()),
        ("negative_binomial", {"dispersion"}),
        ("normal", {"sigma"}),
        ("poisson", {"exposure"}),
    ],
)
def test_families_are_recognised(family, params, rng):
    n = 6
    Q = sp.diags(np.full(n, 2.0)) - 0.5 * sp.diags([np.ones(n - 1)] * 2, [-1, 1])
    with pm.Model() as model:
        x = SparseGMRF("x", Q=Q.tocsc())
        eta = 0.3 + x
        if family == "binomial":
            pm.Binomial("y", n=10, p=pm.math.invlogit(eta), observed=rng.integers(0, 10, n))
        elif family == "bernoulli":
            pm.Bernoulli("y", logit_p=eta, observed=rng.integers(0, 2, n))
        elif family == "negative_binomial":
            a = pm.HalfNormal("a", 5)
            pm.NegativeBinomial("y", mu=pm.math.exp(eta), alpha=a, observed=rng.poisson(3, n))
        elif family == "normal":
            pm.Normal("y", mu=eta, sigma=0.5, observed=rng.normal(size=n))
        else:
            pm.Poisson("y", mu=4.0 * pm.math.exp(eta), observed=rng.poisson(3, n))
    a = analyse(model, "x")
    assert a.family == family and set(a.params) == params
    if family == "negative_binomial":  # one compiled check (compiling costs seconds)
        marginal = marginalize_laplace(model, "x")
        assert np.isfinite(marginal.compile_logp()(marginal.initial_point()))


def test_errors_name_the_variable_and_the_reason(rng):
    W = lattice_adjacency(3)
    y = rng.poisson(3, 9)
    with pm.Model() as nonlinear:
        x = ICAR("x", W=W)
        pm.Poisson("y", mu=pm.math.exp(x * x), observed=y)
    with pytest.raises(MarginalizeError, match=r"not linear.*product of two field-dependent"):
        marginalize_laplace(nonlinear, "x")
    with pm.Model() as wrong_link:
        x = ICAR("x", W=W)
        pm.Poisson("y", mu=pm.math.sqr(x) + 1, observed=y)
    with pytest.raises(MarginalizeError, match="'y': the mean must be exp"):
        marginalize_laplace(wrong_link, "x")
    with pm.Model() as family:
        x = ICAR("x", W=W)
        pm.Gamma("y", alpha=2.0, beta=pm.math.exp(x), observed=y + 1.0)
    with pytest.raises(MarginalizeError, match="'y' is a GammaRV"):
        marginalize_laplace(family, "x")
    with pm.Model() as child:
        x = ICAR("x", W=W)
        pm.Normal("z", mu=x, sigma=1.0)
        pm.Poisson("y", mu=pm.math.exp(x), observed=y)
    with pytest.raises(MarginalizeError, match="free variable 'z' depends on the field"):
        marginalize_laplace(child, "x")
    with pm.Model() as not_gmrf:
        x = pm.HalfNormal("x", 1.0, shape=9)
        pm.Poisson("y", mu=pm.math.exp(x), observed=y)
    with pytest.raises(MarginalizeError, match="'x' is a HalfNormalRV"):
        marginalize_laplace(not_gmrf, "x")
    with pm.Model() as two_obs:
        x = ICAR("x", W=W)
        pm.Poisson("y", mu=pm.math.exp(x), observed=y)
        pm.Normal("w", mu=x, sigma=1.0, observed=y)
    with pytest.raises(MarginalizeError, match="2 observed variables depend"):
        marginalize_laplace(two_obs, "x")
    with pytest.raises(MarginalizeError, match="no variable 'nope'"):
        marginalize_laplace(two_obs, "nope")


def test_intrinsic_and_proper_fields_together_raise(rng):
    W = lattice_adjacency(3)
    with pm.Model() as model:
        u = ICAR("u", W=W)
        x = CAR("x", mu=0.0, W=W, alpha=0.5, tau=1.0)
        pm.Poisson("y", mu=pm.math.exp(u + x), observed=rng.poisson(3, 9))
    with pytest.raises(MarginalizeError, match="separate models"):
        marginalize_laplace(model, ["u", "x"])


def test_dependent_fields_raise(rng):
    W = lattice_adjacency(3)
    with pm.Model() as model:
        u = ICAR("u", W=W)
        x = CAR("x", mu=u, W=W, alpha=0.5, tau=1.0)
        pm.Poisson("y", mu=pm.math.exp(x), observed=rng.poisson(3, 9))
    with pytest.raises(MarginalizeError, match="prior of 'x' depends on another field"):
        marginalize_laplace(model, ["u", "x"])


def test_matern_spde_field_is_integrated_out(rng):
    """A MaternSPDE field seen through a mesh projector: value against the dense Laplace."""
    from pymc_sparse.distributions.matern import MaternSPDE
    from pymc_sparse.spde.mesh import mesh_from_points
    from pymc_sparse.spde.precision import SPDEPrecision, kappa_tau

    mesh = mesh_from_points(rng.uniform(size=(12, 2)), max_edge=(0.2, 0.45), extension=0.4)
    S = SPDEPrecision(mesh, 2)
    A = mesh.projector(rng.uniform(size=(20, 2))).toarray()
    y = rng.poisson(3.0, 20)
    with pm.Model() as model:
        r = pm.LogNormal("r", 0, 0.5)
        s = pm.LogNormal("s", 0, 0.5)
        f = MaternSPDE("f", mesh=S, range=r, sigma=s, alpha=2, mu=0.2)
        pm.Poisson("y", mu=pm.math.exp(1.0 + pt.dot(A, f)), observed=y)
    marginal = marginalize_laplace(model, "f")
    assert {v.name for v in marginal.free_RVs} == {"r", "s"}
    point = {"r_log__": np.log(0.5), "s_log__": np.log(1.5)}
    got = marginal.compile_logp(vars=[marginal["y"]], jacobian=False)(point)
    Q = S.matrix(*kappa_tau(0.5, 1.5, 2)).toarray()
    ones = np.ones(20)
    ref = dense_laplace(Q, 0.2, A, get_family("poisson"), y, ones, ones, ones)[0]
    np.testing.assert_allclose(got, ref, rtol=1e-9)
    assert np.all(np.isfinite(marginal.compile_dlogp()(point)))
