"""The one private JAX hook of the package fails loudly when JAX changes it.

``dispatch/_jax_linear_call.py`` installs a batching rule for ``linear_call`` through
``jax._src``; pyproject.toml bounds jax to the versions this test has passed on.  If a
new JAX moves those internals, ``register()`` returns False and this test fails, naming
the file to update, instead of second derivatives failing later in a user's model.
"""

import pytest

jax = pytest.importorskip("jax")


def test_linear_call_batching_rule_is_installed():
    from pymc_sparse.dispatch._jax_linear_call import register

    assert register(), (
        f"jax {jax.__version__} moved the internals pymc_sparse/dispatch/_jax_linear_call.py "
        "uses (jax._src.custom_derivatives.linear_call_p, batching.fancy_primitive_batchers); "
        "update that module and the jax bound in pyproject.toml."
    )


def test_hessian_through_the_selected_inverse_needs_the_rule():
    # jax.hessian = jacfwd(jacrev): vmaps the linear_call of the selected inverse's JVP.
    import jax.numpy as jnp
    import numpy as np
    import scipy.sparse as sp

    import pymc_sparse as pms
    from pymc_sparse.dispatch.jax import jax_logdet

    jax.config.update("jax_enable_x64", True)
    Q = sp.csc_matrix(np.array([[3.0, -1.0, 0.0], [-1.0, 3.0, -1.0], [0.0, -1.0, 3.0]]))
    pattern, data = pms.SparsityPattern.from_scipy(Q)
    f = jax_logdet(pattern)
    H = jax.hessian(f)(jnp.asarray(data))
    # Dense reference: d2 logdet / dq_a dq_b = -w_a w_b tr(S E_a S E_b) on symmetric units.
    S = np.linalg.inv(Q.toarray())
    rows, cols = pattern.rows, pattern.cols
    ref = np.empty((pattern.nnz, pattern.nnz))
    for a in range(pattern.nnz):
        Ea = np.zeros((3, 3))
        Ea[rows[a], cols[a]] = Ea[cols[a], rows[a]] = 1.0
        for b in range(pattern.nnz):
            Eb = np.zeros((3, 3))
            Eb[rows[b], cols[b]] = Eb[cols[b], rows[b]] = 1.0
            ref[a, b] = -np.trace(S @ Ea @ S @ Eb)
    np.testing.assert_allclose(np.asarray(H), ref, rtol=1e-10, atol=1e-12)
