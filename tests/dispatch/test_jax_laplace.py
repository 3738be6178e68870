"""JAX dispatch of the Laplace marginal: value and gradient agree with the C backend."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402
import pytensor  # noqa: E402
import pytensor.tensor as pt  # noqa: E402
from pymc.sampling.jax import get_jaxified_graph  # noqa: E402

import pymc_sparse.dispatch.jax_laplace as jl  # noqa: E402
from pymc_sparse.ops.laplace import LaplaceMarginal  # noqa: E402
from tests.dispatch.test_jax import compare_jax_and_c  # noqa: E402
from tests.ops.test_laplace import NAMES, _case  # noqa: E402

CASES = [("poisson", None), ("negative_binomial", None), ("bernoulli", "intrinsic")]


@pytest.mark.parametrize("family,constraint", CASES, ids=[f"{f}-{c}" for f, c in CASES])
def test_jax_matches_c(family, constraint):
    s, vals, _ = _case(family, constraint)
    tau, shift = pt.dscalar("tau"), pt.dscalar("shift")
    xs = [pt.dvector(n) for n in NAMES]
    cost = LaplaceMarginal(s, 1e-12)(tau * xs[0], xs[1], xs[2] + shift, xs[3], xs[4], xs[5], xs[6])
    inputs = [tau, shift, xs[0], xs[1], xs[3], xs[6]]
    fixed = {2: vals[2], 4: vals[4], 5: vals[5]}
    cost = pytensor.clone_replace(cost, {xs[i]: pt.constant(v) for i, v in fixed.items()})
    compare_jax_and_c(inputs, [cost], [1.1, 0.05, vals[0], vals[1], vals[3], vals[6]], cost, 1e-9)


def test_jax_nan_and_vmap():
    s, vals, _ = _case("poisson", None)
    f = jl.jax_laplace_marginal(s, 1e-12)
    args = [jnp.asarray(v) for v in vals]
    assert np.isnan(f(-args[0], *args[1:]))
    g = jax.grad(lambda q: f(q, *args[1:]))(-args[0])
    assert np.all(np.isnan(np.asarray(g)))
    taus = jnp.array([0.9, 1.0, 1.2])
    batched = jax.vmap(lambda t: f(t * args[0], *args[1:]))(taus)
    single = [f(t * args[0], *args[1:]) for t in taus]
    np.testing.assert_allclose(np.asarray(batched), np.asarray(single), rtol=1e-12)
    gb = jax.vmap(jax.grad(lambda t: f(t * args[0], *args[1:])))(taus)
    assert np.all(np.isfinite(np.asarray(gb)))


def test_jaxified_graph_of_pytensor_gradient():
    s, vals, _ = _case("poisson", None)
    tau = pt.dscalar("tau")
    cost = LaplaceMarginal(s, 1e-12)(tau * vals[0], *[pt.constant(v) for v in vals[1:]])
    (g,) = pytensor.grad(cost, [tau])
    fn = get_jaxified_graph([tau], [g])
    ref = pytensor.function([tau], g)(1.3)
    np.testing.assert_allclose(np.asarray(fn(jnp.asarray(1.3))[0]), ref, rtol=1e-10)


@pytest.mark.slow
def test_numpyro_samples_hyperparameters():
    import pymc as pm
    import scipy.sparse as sp

    from pymc_sparse.distributions.laplace import LaplaceGMRF
    from pymc_sparse.ops.matrix import SparseMatrix
    from tests.helpers import lattice_adjacency

    W = lattice_adjacency(5)
    D = sp.diags(np.asarray(W.sum(1)).ravel())
    y = np.random.default_rng(0).poisson(3.0, 25)
    with pm.Model():
        tau = pm.Gamma("tau", 2, 1)
        alpha = pm.Uniform("alpha", 0, 1)
        b0 = pm.Normal("b0", 0, 2)
        Q = tau * (SparseMatrix.from_scipy(D) - alpha * SparseMatrix.from_scipy(W))
        LaplaceGMRF("y", Q, mu=b0, family="poisson", observed=y)
        idata = pm.sample(
            100, tune=100, chains=1, nuts_sampler="numpyro", progressbar=False, random_seed=1
        )
    b0_draws = idata.posterior["b0"].values
    assert np.all(np.isfinite(b0_draws))
    assert abs(b0_draws.mean() - np.log(y.mean())) < 0.5
