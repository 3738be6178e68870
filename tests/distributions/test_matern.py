"""MaternSPDE: exact log-density, gradients, draws, and use with MarginalGMRFNormal."""

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest
from scipy.stats import multivariate_normal

from pymc_sparse.distributions.marginal import MarginalGMRFNormal
from pymc_sparse.distributions.matern import (
    MaternSPDE,
    matern_logdet,
    matern_precision,
    pc_matern_prior,
)
from pymc_sparse.spde.mesh import mesh_from_points
from pymc_sparse.spde.precision import SPDEPrecision, kappa_tau


@pytest.fixture(scope="module")
def mesh():
    rng = np.random.default_rng(5)
    return mesh_from_points(rng.uniform(size=(12, 2)), max_edge=(0.2, 0.45), extension=0.4)


@pytest.mark.parametrize("method", ["exact", "interpolated"])
@pytest.mark.parametrize("alpha", [1, 2], ids=["alpha1", "alpha2"])
def test_logp_against_dense(mesh, rng, alpha, method):
    S = SPDEPrecision(mesh, alpha)
    with pm.Model() as model:
        r = pm.LogNormal("r", 0, 0.5)
        s = pm.LogNormal("s", 0, 0.5)
        f = MaternSPDE("f", mesh=S, range=r, sigma=s, alpha=alpha, logdet=method, mu=0.3)
    x = rng.normal(size=mesh.n)
    logp = model.compile_logp(vars=[f])({"r_log__": np.log(0.7), "s_log__": np.log(1.3), "f": x})
    Q = S.matrix(*kappa_tau(0.7, 1.3, alpha)).toarray()
    ref = multivariate_normal(np.full(mesh.n, 0.3), np.linalg.inv(Q)).logpdf(x)
    np.testing.assert_allclose(logp, ref, rtol=1e-10)


@pytest.mark.parametrize("method", ["exact", "interpolated"])
def test_verify_grad_kappa_tau(mesh, rng, method):
    S = SPDEPrecision(mesh, 2)
    x = rng.normal(size=mesh.n)

    def logp(kappa, tau):
        rv = MaternSPDE.dist(mesh=S, kappa=kappa, tau=tau, logdet=method)
        return pm.logp(rv, x)

    pytensor.gradient.verify_grad(logp, [np.array(2.1), np.array(0.6)], rng=rng, eps=1e-6)


def test_out_of_support_is_minus_inf(mesh):
    kappa = pt.scalar("kappa")
    rv = MaternSPDE.dist(mesh=mesh, kappa=kappa, tau=1.0, logdet="exact")
    lp = pm.logp(rv, np.zeros(mesh.n))
    fn = pytensor.function([kappa], [lp, pytensor.grad(lp, kappa)], on_unused_input="ignore")
    with pytest.raises(Exception, match="kappa > 0"):
        fn(-1.0)


def test_draws_have_covariance_q_inverse(mesh):
    S = SPDEPrecision(mesh, 2)
    kappa, tau = kappa_tau(0.6, 2.0, 2)
    rv = MaternSPDE.dist(mesh=S, kappa=kappa, tau=tau)
    x = pm.draw(rv, draws=6000, random_seed=11)
    L = np.linalg.cholesky(S.matrix(kappa, tau).toarray())
    z = x @ L  # L' x has identity covariance when Cov(x) = Q^-1
    cov = np.cov(z.T)
    assert np.abs(cov - np.eye(mesh.n)).max() < 6 / np.sqrt(6000)
    assert np.abs(z.mean(0)).max() < 6 / np.sqrt(6000)


def test_marginal_gmrf_normal_with_projector(mesh, rng):
    S = SPDEPrecision(mesh, 2)
    locs = rng.uniform(size=(15, 2))
    A = mesh.projector(locs)
    y = rng.normal(size=15)
    with pm.Model() as model:
        rho = pm.LogNormal("rho", 0, 0.5)
        sd = pm.LogNormal("sd", 0, 0.5)
        noise = pm.HalfNormal("noise", 1.0)
        kappa, tau = kappa_tau(rho, sd, 2)
        MarginalGMRFNormal(
            "y",
            Q=matern_precision(S, kappa, tau),
            logdet_Q=matern_logdet(S, kappa, tau, method="interpolated"),
            A=A,
            sigma=noise,
            observed=y,
        )
    point = {"rho_log__": np.log(0.5), "sd_log__": np.log(1.5), "noise_log__": np.log(0.3)}
    logp = model.compile_logp(vars=model.observed_RVs)(point)
    Q = S.matrix(*kappa_tau(0.5, 1.5, 2)).toarray()
    cov = A @ np.linalg.solve(Q, A.T.toarray()) + 0.3**2 * np.eye(15)
    np.testing.assert_allclose(logp, multivariate_normal(np.zeros(15), cov).logpdf(y), rtol=1e-10)
    # and it differentiates
    dlogp = model.compile_dlogp()(point)
    assert np.all(np.isfinite(dlogp))


def test_pc_prior(mesh):
    with pm.Model() as model:
        rho, sigma = pc_matern_prior("f", range0=0.2, p_range=0.05, sigma0=1.0, p_sigma=0.1)
        MaternSPDE("f", mesh=mesh, range=rho, sigma=sigma)
    assert {"f_inv_range", "f_sigma", "f_range"} <= set(model.named_vars)
    lam1 = -np.log(0.05) * 0.2
    lp = pm.logp(model["f_inv_range"], 3.0).eval()
    np.testing.assert_allclose(lp, np.log(lam1) - 3.0 * lam1)


def test_bad_inputs(mesh):
    with pytest.raises(TypeError, match="either `range` and `sigma`"):
        MaternSPDE.dist(mesh=mesh, range=1.0)
    with pytest.raises(TypeError, match="either `range` and `sigma`"):
        MaternSPDE.dist(mesh=mesh, range=1.0, sigma=1.0, kappa=2.0, tau=1.0)
    with pytest.raises(ValueError, match="`range` must be > 0"):
        MaternSPDE.dist(mesh=mesh, range=-1.0, sigma=1.0)
    with pytest.raises(TypeError, match="TriangleMesh"):
        MaternSPDE.dist(mesh=np.eye(3), range=1.0, sigma=1.0)
    with pytest.raises(ValueError, match="logdet"):
        MaternSPDE.dist(mesh=mesh, range=1.0, sigma=1.0, logdet="fast")


@pytest.mark.slow  # a JAX compile: ~60 s on a loaded 2-core machine
# JAX drops check_parameters (the log-density is -inf-safe without it).
@pytest.mark.filterwarnings("ignore:Skipping Check:UserWarning")
def test_jax_backend_agrees(mesh, rng):
    pytest.importorskip("jax")
    import pymc_sparse.dispatch.jax  # noqa: F401 - registers the JAX dispatch of the Ops

    kappa, tau = pt.dscalar("kappa"), pt.dscalar("tau")
    x = rng.normal(size=mesh.n)
    lp = pm.logp(MaternSPDE.dist(mesh=mesh, kappa=kappa, tau=tau, logdet="interpolated"), x)
    outs = [lp, *pytensor.grad(lp, [kappa, tau])]
    c = pytensor.function([kappa, tau], outs)(2.0, 0.7)
    j = pytensor.function([kappa, tau], outs, mode="JAX")(2.0, 0.7)
    np.testing.assert_allclose(np.array(j, dtype=float), np.array(c, dtype=float), rtol=1e-10)
