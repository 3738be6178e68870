"""One CAR model, every sampler: PyMC's NUTS, numpyro (parallel, vectorized), blackjax, nutpie.

The precision ``Q = tau * (D - alpha * W)`` of a 4 x 4 lattice depends on two free
parameters, so every log-density evaluation factorises a new matrix and the gradient
reaches ``tau`` and ``alpha`` through the log-determinant.  Posterior means must agree
across backends within Monte Carlo error.
"""

import os

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("numpyro")

# PyMC's JAX samplers run `chain_method="parallel"` chains on separate host devices; the
# device count is fixed when JAX's CPU backend starts, so ask for it before that happens.
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=4"]
).strip()

import arviz as az  # noqa: E402
import pymc as pm  # noqa: E402
import scipy.sparse as sp  # noqa: E402

import pymc_sparse.dispatch.jax  # noqa: E402, F401
from pymc_sparse.linalg.cholmod import CACHE  # noqa: E402
from pymc_sparse.ops.logdet import logdet  # noqa: E402
from pymc_sparse.ops.matrix import SparseMatrix  # noqa: E402
from tests.helpers import lattice_adjacency  # noqa: E402

VARS = ["tau", "alpha"]


def car_model(m=4, seed=11):
    """Latent proper CAR field on an m x m lattice, observed with Gaussian noise."""
    W = lattice_adjacency(m)
    D = sp.diags(np.asarray(W.sum(axis=1)).ravel())
    n = m * m
    rng = np.random.default_rng(seed)
    Qtrue = (2.0 * (D - 0.8 * W)).toarray()
    phi_true = np.linalg.cholesky(np.linalg.inv(Qtrue)) @ rng.normal(size=n)
    y = phi_true + 0.5 * rng.normal(size=n)
    Dm, Wm = SparseMatrix.from_scipy(D), SparseMatrix.from_scipy(W)
    with pm.Model() as model:
        tau = pm.Gamma("tau", 2.0, 1.0)
        alpha = pm.Uniform("alpha", 0.0, 0.99)
        phi = pm.Flat("phi", shape=n)
        Q = tau * (Dm - alpha * Wm)
        pm.Potential("car", 0.5 * logdet(Q) - 0.5 * Q.quad_form(phi))
        pm.Normal("y", phi, 0.5, observed=y)
    return model


def _summary(idata):
    post = idata.posterior
    out = {}
    for v in VARS:
        out[v] = (float(post[v].mean()), float(az.mcse(post[v]).to_array().values.squeeze()))
    for i in (0, 5):
        x = post["phi"].isel(phi_dim_0=i)
        out[f"phi[{i}]"] = (float(x.mean()), float(az.mcse(x).to_array().values.squeeze()))
    return out


def _agree(a, b, k=5.0):
    for name in a:
        (ma, sa), (mb, sb) = a[name], b[name]
        tol = k * np.hypot(sa, sb)
        assert abs(ma - mb) < tol, f"{name}: {ma:.4f} vs {mb:.4f} (tolerance {tol:.4f})"


SAMPLE = {"tune": 300, "draws": 300, "chains": 2, "random_seed": 3, "progressbar": False}


@pytest.fixture(scope="module")
def reference():
    with car_model():
        idata = pm.sample(**SAMPLE, cores=1, compute_convergence_checks=False)
    return _summary(idata)


# pymc <= 6.2 passes `progress_bar` to blackjax >= 1.6's window_adaptation, which forwards
# it to the NUTS kernel: TypeError before the first step, for every model
# (pymc-devs/pymc#8367, fix in pymc-devs/pymc#8373).  Not ours; blackjax itself is
# exercised below through `sample_blackjax_direct`.
_PYMC_BLACKJAX_BUG = pytest.mark.xfail(
    raises=TypeError, strict=False, reason="pymc-devs/pymc#8367 (progress_bar kwarg)"
)


@pytest.mark.parametrize(
    "sampler, chain_method",
    [
        ("numpyro", "parallel"),
        ("numpyro", "vectorized"),
        pytest.param("blackjax", "vectorized", marks=_PYMC_BLACKJAX_BUG),
    ],
    ids=["numpyro-parallel", "numpyro-vectorized", "pm-blackjax"],
)
def test_jax_samplers_agree_with_pymc(reference, sampler, chain_method):
    with car_model():
        idata = pm.sample(
            **SAMPLE,
            nuts_sampler=sampler,
            nuts_sampler_kwargs={"chain_method": chain_method},
            compute_convergence_checks=False,
        )
    summ = _summary(idata)
    for v in summ.values():
        assert np.isfinite(v[0])
    _agree(summ, reference)


def sample_blackjax_direct(model, tune, draws, chains, seed, chain_method="vectorized"):
    """blackjax window adaptation + NUTS on PyMC's jaxified log density."""
    import blackjax
    from pymc.sampling.jax import (
        _get_batched_jittered_initial_points,
        get_jaxified_graph,
        get_jaxified_logp,
    )

    logp = get_jaxified_logp(model)  # the log density itself (numpyro takes its negative)
    init = _get_batched_jittered_initial_points(model, chains, None, seed)

    def one_chain(key, position):
        k_adapt, k_draw = jax.random.split(key)
        adapt = blackjax.window_adaptation(blackjax.nuts, logp, target_acceptance_rate=0.8)
        (state, params), _ = adapt.run(k_adapt, position, num_steps=tune)
        kernel = blackjax.nuts(logp, **params).step

        def step(state, k):
            state, _ = kernel(k, state)
            return state, state.position

        _, samples = jax.lax.scan(step, state, jax.random.split(k_draw, draws))
        return samples

    keys = jax.random.split(jax.random.PRNGKey(seed), chains)
    map_fn = jax.vmap if chain_method == "vectorized" else jax.pmap
    raw = map_fn(one_chain)(keys, init)  # list over value vars of (chain, draw, ...)
    outputs = [model[name] for name in ("tau", "alpha", "phi")]
    to_constrained = get_jaxified_graph(model.value_vars, model.replace_rvs_by_values(outputs))
    post = jax.vmap(jax.vmap(to_constrained))(*raw)
    return az.from_dict(
        posterior={v.name: np.asarray(p) for v, p in zip(outputs, post, strict=True)}
    )


@pytest.mark.parametrize(
    "chain_method", ["vectorized", pytest.param("parallel", marks=pytest.mark.slow)]
)
def test_blackjax_agrees_with_pymc(reference, chain_method):
    idata = sample_blackjax_direct(car_model(), 300, 300, 2, 3, chain_method)
    _agree(_summary(idata), reference)


def test_nutpie_numba_backend_agrees_with_pymc(reference):
    nutpie = pytest.importorskip("nutpie")
    import pymc_sparse.dispatch.numba  # noqa: F401  (no object-mode fallback warnings)

    compiled = nutpie.compile_pymc_model(car_model(), backend="numba")
    idata = nutpie.sample(
        compiled, tune=300, draws=300, chains=2, seed=3, progress_bar=False, cores=1
    )
    _agree(_summary(idata), reference)


LONG = {"tune": 1000, "draws": 2000, "chains": 4, "random_seed": 5, "progressbar": False}


@pytest.fixture(scope="module")
def long_reference():
    with car_model():
        return _summary(pm.sample(**LONG, cores=1, compute_convergence_checks=False))


@pytest.mark.slow
@pytest.mark.parametrize(
    "sampler, chain_method", [("numpyro", "parallel"), ("numpyro", "vectorized")]
)
def test_long_runs_agree(long_reference, sampler, chain_method):
    with car_model():
        idata = pm.sample(
            **LONG,
            nuts_sampler=sampler,
            nuts_sampler_kwargs={"chain_method": chain_method},
            compute_convergence_checks=False,
        )
    _agree(_summary(idata), long_reference, k=4.0)


def test_cache_shared_between_value_and_gradient():
    # One numpyro-style value_and_grad evaluation factorises once.
    from pymc.sampling.jax import get_jaxified_logp

    model = car_model()
    logp = get_jaxified_logp(model)
    ip = model.initial_point()
    x = [jax.numpy.asarray(ip[v.name]) for v in model.value_vars]
    CACHE.clear()
    v, g = jax.jit(jax.value_and_grad(logp))(x)
    assert np.isfinite(v) and all(np.all(np.isfinite(gi)) for gi in g)
    assert CACHE.info()["numeric"] == 1
