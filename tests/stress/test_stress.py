"""Concurrency stress tests (issue 18), in the slow suite, each under a timeout.

A hang is the failure these tests look for, so each scenario runs in a subprocess with
``subprocess.run(timeout=...)`` (or joins its threads with a timeout): a deadlock fails
the test instead of stalling the suite.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS:UserWarning"),
]


def _run(script: str, timeout: int, env_extra: dict | None = None) -> str:
    import os

    env = dict(os.environ, **(env_extra or {}))
    try:
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired as err:  # a hang is the bug we look for
        pytest.fail(f"timed out after {timeout} s (deadlock?):\n{(err.stderr or '')[-3000:]}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


@pytest.mark.parametrize("backend", ["C", "JAX"])
def test_python_threads_on_one_compiled_function(backend):
    # A PyTensor Function keeps its inputs and outputs in shared storage, so threads
    # share its compiled thunks (C code, or the jitted JAX function and its callbacks)
    # through ``fn.copy()``: PyTensor's rule, not ours.
    import pytensor
    import pytensor.tensor as pt

    import pymc_sparse as pms
    from pymc_sparse.linalg.pattern import SparsityPattern
    from pymc_sparse.ops.matrix import SparseMatrix
    from tests.helpers import grid_laplacian

    p, d0 = SparsityPattern.from_scipy(grid_laplacian(40))
    data = pt.dvector("data")
    ld = pms.logdet(SparseMatrix.from_pattern(p, data))
    outs = [ld, pytensor.grad(ld, data)]
    mode = "FAST_RUN"
    if backend == "JAX":
        jax = pytest.importorskip("jax")
        jax.config.update("jax_enable_x64", True)
        mode = "JAX"
    fn = pytensor.function([data], outs, mode=mode)
    fns = [fn.copy() for _ in range(8)]
    scales = np.linspace(0.5, 2.0, 16)
    serial = [fns[0](s * d0) for s in scales]
    pms.clear_cache()
    results, errors = {}, []

    def work(t):
        try:
            for k in range(40):
                i = (t + k) % scales.size
                results.setdefault(i, []).append(fns[t](scales[i] * d0))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
        assert not t.is_alive(), "a thread hung"
    assert not errors, errors[0]
    for i, outs in results.items():
        for ld_i, g_i in outs:  # bit-identical to the serial evaluation
            assert np.asarray(ld_i) == np.asarray(serial[i][0])
            assert np.array_equal(np.asarray(g_i), np.asarray(serial[i][1]))
    assert pms.cache_info()["symbolic"] == 1


def test_numpyro_parallel_chains():
    out = _run(
        """
        import os
        import numpy as np, pymc as pm, scipy.sparse as sp
        import pymc_sparse as pms
        from pymc_sparse.distributions.car import CAR
        from tests.helpers import lattice_adjacency

        W = lattice_adjacency(12)
        y = np.random.default_rng(0).normal(size=144)
        with pm.Model() as m:
            tau = pm.Gamma("tau", 2.0, 1.0)
            alpha = pm.Uniform("alpha", 0.0, 0.99)
            x = CAR("x", mu=0.0, W=W, alpha=alpha, tau=tau)
            pm.Normal("y", x, 0.5, observed=y)
            res = {}
            for method in ("parallel", "vectorized"):
                idata = pm.sample(100, tune=100, chains=4, nuts_sampler="numpyro",
                                  random_seed=1, progressbar=False,
                                  nuts_sampler_kwargs={"chain_method": method})
                res[method] = idata.posterior["tau"].values
        for v in res.values():
            assert np.all(np.isfinite(v)) and v.shape == (4, 100)
        print("ok", float(res["parallel"].mean()), float(res["vectorized"].mean()))
        """,
        timeout=900,
        env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
    )
    assert out.startswith("ok")


def test_pm_sample_forked_chains_after_parent_factorised():
    # pm.sample(cores=2) forks on Linux; the parent factorises (supernodal, OpenMP) first.
    out = _run(
        """
        import numpy as np, pymc as pm, scipy.sparse as sp
        import pymc_sparse as pms
        from pymc_sparse.distributions.gmrf import SparseGMRF
        from pymc_sparse.linalg.cholmod import CACHE
        from pymc_sparse.linalg.threads import NUMERIC_THREADS
        from pymc_sparse.ops.matrix import SparseMatrix
        from tests.helpers import lattice_adjacency

        W = lattice_adjacency(100)  # n = 10^4: a supernodal factor with OpenMP regions
        D = sp.diags(np.asarray(W.sum(axis=1)).ravel())
        Q0 = (D - 0.9 * W).tocsc()
        x_obs = pms.sample_gmrf(Q0, rng=0)  # the parent factorises, in its main thread
        with pm.Model() as m:
            tau = pm.Gamma("tau", 2.0, 2.0)
            Q = tau * SparseMatrix.from_scipy(Q0)
            SparseGMRF("x", Q=Q, observed=x_obs)  # one free variable: cheap NUTS
        lp = m.compile_logp()
        assert np.isfinite(lp(m.initial_point()))
        assert CACHE.info()["numeric"] >= 1 and not NUMERIC_THREADS.forked
        with m:
            idata = pm.sample(30, tune=30, chains=2, cores=2, mp_ctx="fork",
                              random_seed=2, progressbar=False, compute_convergence_checks=False)
        assert np.all(np.isfinite(idata.posterior["tau"].values))
        print("ok")
        """,
        timeout=900,
    )
    assert out.startswith("ok")
