"""JAX dispatch of the sparse Ops: values, gradients, vmap, NaN policy, x64, threads."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402
import pytensor  # noqa: E402
import pytensor.tensor as pt  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from pymc.sampling.jax import get_jaxified_graph  # noqa: E402

import pymc_sparse.dispatch.jax as pjax  # noqa: E402
from pymc_sparse.linalg.cholmod import CACHE  # noqa: E402
from pymc_sparse.linalg.pattern import SparsityPattern  # noqa: E402
from pymc_sparse.ops.logdet import SparseLogDet, logdet  # noqa: E402
from pymc_sparse.ops.matrix import SparseMatrix  # noqa: E402
from pymc_sparse.ops.selinv import SparseSelectedInverse, selected_inverse  # noqa: E402
from pymc_sparse.ops.solve import SparseSolve, solve  # noqa: E402
from tests.helpers import MATRIX_IDS, grid_laplacian, lattice_adjacency, matrix  # noqa: E402

RTOL = 1e-10


def _allclose(a, b, rtol=RTOL, atol=1e-12):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def compare_jax_and_c(inputs, outputs, values, cost=None, rtol=RTOL):
    """Compile ``outputs`` with the JAX and the default (C) linker and compare them.

    With a scalar ``cost``, also compare ``jax.grad`` of the jaxified cost (what numpyro
    and blackjax use: JAX differentiates, ``L_op`` is never called) with ``pytensor.grad``
    compiled in both modes (the JAX mode then runs the Ops of the gradient graph).
    """
    f_c = pytensor.function(inputs, outputs)
    f_j = pytensor.function(inputs, outputs, mode="JAX")
    res_c, res_j = f_c(*values), f_j(*values)
    for a, b in zip(res_c, res_j, strict=True):
        _allclose(b, a, rtol)
    if cost is None:
        return res_c
    grads = pytensor.grad(cost, inputs)
    g_c = pytensor.function(inputs, grads)(*values)
    g_pj = pytensor.function(inputs, grads, mode="JAX")(*values)
    fn = get_jaxified_graph(inputs, [cost])
    g_jax = jax.grad(lambda *x: fn(*x)[0], argnums=tuple(range(len(inputs))))(
        *[jnp.asarray(v) for v in values]
    )
    for a, b, c in zip(g_c, g_pj, g_jax, strict=True):
        _allclose(b, a, rtol)
        _allclose(c, a, rtol)
    return res_c


def _pattern_data(name):
    return SparsityPattern.from_scipy(matrix(name))


def _car_parts(m=4):
    W = lattice_adjacency(m)
    D = sp.diags(np.asarray(W.sum(axis=1)).ravel())
    return SparseMatrix.from_scipy(D), SparseMatrix.from_scipy(W), m * m


@pytest.mark.parametrize("name", MATRIX_IDS, ids=MATRIX_IDS)
def test_logdet_matches_c_and_dense(name):
    pattern, d = _pattern_data(name)
    data = pt.vector("data", dtype="float64")
    scale = pt.scalar("scale", dtype="float64")
    Q = SparseMatrix(pattern, scale * data)  # hyperparameter path and raw values
    cost = logdet(Q)
    (val,) = compare_jax_and_c([data, scale], [cost], [d, 1.3], cost=cost)
    _allclose(val, np.linalg.slogdet(1.3 * pattern.to_scipy(d).toarray())[1], 1e-9)


@pytest.mark.parametrize("bshape", ["vector", "matrix"])
def test_solve_matches_c_and_dense(bshape, rng):
    pattern, d = _pattern_data("grid5")
    n = pattern.n
    data = pt.vector("data", dtype="float64")
    b = pt.vector("b") if bshape == "vector" else pt.matrix("b")
    bval = rng.normal(size=(n,) if bshape == "vector" else (n, 3))
    c = rng.normal(size=bval.shape)
    x = solve(SparseMatrix(pattern, data), b)
    cost = pt.sum(c * x) + 0.5 * pt.sum(x**2)
    x_c, _ = compare_jax_and_c([data, b], [x, cost], [d, bval], cost=cost)
    _allclose(x_c, np.linalg.solve(pattern.to_scipy(d).toarray(), bval), 1e-9)


@pytest.mark.parametrize("name", ["grid5", "random30", "blockdiag", "n1"])
def test_selected_inverse_values(name):
    pattern, d = _pattern_data(name)
    data = pt.vector("data", dtype="float64")
    s = selected_inverse(SparseMatrix(pattern, data)).data
    (s_c,) = compare_jax_and_c([data], [s], [d])
    S = np.linalg.inv(pattern.to_scipy(d).toarray())
    _allclose(s_c, S[pattern.rows, pattern.cols], 1e-9)


def _fd_grad(f, x, eps=1e-6):
    g = np.empty_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = eps
        g[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return g


def _dense(pattern, x):
    """The symmetric dense matrix of stored values ``x``, in JAX (differentiable reference)."""
    M = jnp.zeros((pattern.n, pattern.n)).at[pattern.rows, pattern.cols].set(x)
    return M + M.T - jnp.diag(jnp.diag(M))


def test_selected_inverse_vjp_finite_differences(rng):
    pattern, d = _pattern_data("grid5")
    r = rng.normal(size=pattern.nnz)
    f = pjax.jax_selected_inverse(pattern)

    @jax.jit
    def cost(x):
        return jnp.sum(jnp.asarray(r) * f(x))

    g = jax.grad(cost)(jnp.asarray(d))
    _allclose(g, _fd_grad(lambda x: float(cost(jnp.asarray(x))), d), 1e-6, 1e-8)


@pytest.mark.parametrize("name", ["grid5", "random30", "blockdiag"])
def test_selected_inverse_jacobian_forward_and_reverse(name):
    # Forward mode reuses the adjoint kernel (J dq = J'(w dq) / w): both Jacobians must
    # equal the dense one, with and without jit.
    pattern, d = _pattern_data(name)
    f = pjax.jax_selected_inverse(pattern)
    J_ref = jax.jacfwd(lambda x: jnp.linalg.inv(_dense(pattern, x))[pattern.rows, pattern.cols])(
        jnp.asarray(d)
    )
    _allclose(jax.jacfwd(f)(jnp.asarray(d)), J_ref, 1e-9, 1e-12)
    _allclose(jax.jit(jax.jacrev(f))(jnp.asarray(d)), J_ref, 1e-9, 1e-12)


@pytest.mark.parametrize(
    "mode",
    ["hessian", "jacrev-jacrev", "jacfwd-jacfwd", "jit-hessian"],
)
def test_logdet_hessian_every_mode(mode):
    pattern, d = _pattern_data("grid5")
    ld = pjax.jax_logdet(pattern)
    make = {
        "hessian": jax.hessian,
        "jacrev-jacrev": lambda f: jax.jacrev(jax.jacrev(f)),
        "jacfwd-jacfwd": lambda f: jax.jacfwd(jax.jacfwd(f)),
        "jit-hessian": lambda f: jax.jit(jax.hessian(f)),
    }[mode]
    H = make(ld)(jnp.asarray(d))
    H_ref = jax.hessian(lambda x: jnp.linalg.slogdet(_dense(pattern, x))[1])(jnp.asarray(d))
    _allclose(H, H_ref, 1e-9, 1e-12)


def test_logdet_hessian_against_finite_differences_of_gradient():
    # Independent of any JAX reference: central differences of our own gradient.
    pattern, d = _pattern_data("grid5")
    ld = pjax.jax_logdet(pattern)
    H = jax.jit(jax.hessian(ld))(jnp.asarray(d))
    g = jax.jit(jax.grad(ld))
    H_fd = np.stack([_fd_grad(lambda x, i=i: float(g(jnp.asarray(x))[i]), d) for i in range(4)])
    _allclose(np.asarray(H)[:4], H_fd, 1e-6, 1e-8)
    _allclose(H, np.asarray(H).T, 1e-10)


def test_jvp_of_gradient_and_vmapped_hessian(rng):
    pattern, d = _pattern_data("random30")
    ld = pjax.jax_logdet(pattern)
    ref = jax.hessian(lambda x: jnp.linalg.slogdet(_dense(pattern, x))[1])
    v = jnp.asarray(rng.normal(size=pattern.nnz))
    _, hv = jax.jvp(jax.grad(ld), (jnp.asarray(d),), (v,))
    _allclose(hv, ref(jnp.asarray(d)) @ v, 1e-9, 1e-12)
    batch = jnp.stack([jnp.asarray(d), 1.5 * jnp.asarray(d)])
    _allclose(jax.vmap(jax.hessian(ld))(batch), jax.vmap(ref)(batch), 1e-9, 1e-12)


def test_car_logdensity_hessian_in_tau_alpha():
    # The case: Hessian of logdet(tau (D - alpha W)) w.r.t. (tau, alpha), by
    # jax.hessian through the stored values, against dense finite differences.
    W = lattice_adjacency(5)
    deg = np.asarray(W.sum(axis=1)).ravel()
    pattern, dW = SparsityPattern.from_scipy(sp.tril(sp.diags(deg) + W).tocsc())
    off = ~np.asarray(pattern.is_diag)
    Dv, Wv = np.where(off, 0.0, dW), np.where(off, -dW, 0.0)
    ld = pjax.jax_logdet(pattern)

    def f(theta):
        tau, alpha = theta[0], theta[1]
        return ld(tau * (jnp.asarray(Dv) - alpha * jnp.asarray(Wv)))

    theta = np.array([1.7, 0.6])
    H = jax.hessian(f)(jnp.asarray(theta))

    def dense(t):
        return np.linalg.slogdet(t[0] * (np.diag(deg) - t[1] * W.toarray()))[1]

    eps = 1e-4
    H_fd = np.empty((2, 2))
    for i in range(2):
        for j in range(2):
            ei, ej = np.eye(2)[i] * eps, np.eye(2)[j] * eps
            H_fd[i, j] = (
                dense(theta + ei + ej)
                - dense(theta + ei - ej)
                - dense(theta - ei + ej)
                + dense(theta - ei - ej)
            ) / (4 * eps**2)
    _allclose(H, H_fd, 1e-6, 1e-6)
    assert abs(H_fd[0, 1]) < 1e-8 and abs(H_fd[1, 1]) > 1.0  # tau and alpha separate


def test_third_order_refused_with_a_clear_error():
    pattern, d = _pattern_data("grid5")
    ld = pjax.jax_logdet(pattern)
    with pytest.raises(NotImplementedError, match="second order"):
        jax.jacfwd(jax.hessian(ld))(jnp.asarray(d))


@pytest.mark.parametrize("bshape", ["vector", "matrix"])
def test_solve_hessian_forward_over_reverse(bshape, rng):
    pattern, d = _pattern_data("banded20")
    b = rng.normal(size=(pattern.n,) if bshape == "vector" else (pattern.n, 2))
    s = pjax.jax_solve(pattern)

    def cost(x, solve):
        return jnp.sum(solve(x, jnp.asarray(b)) ** 2)

    H = jax.jit(jax.hessian(lambda x: cost(x, s)))(jnp.asarray(d))
    H_ref = jax.hessian(lambda x: cost(x, lambda q, bb: jnp.linalg.solve(_dense(pattern, q), bb)))(
        jnp.asarray(d)
    )
    _allclose(H, H_ref, 1e-8, 1e-10)


def test_solve_second_order_reverse_over_reverse(rng):
    pattern, d = _pattern_data("banded20")
    b = jnp.asarray(rng.normal(size=pattern.n))
    s = pjax.jax_solve(pattern)

    def cost(x):
        return jnp.sum(s(x, b) ** 2)

    H = jax.jit(jax.jacrev(jax.grad(cost)))(jnp.asarray(d))
    g = jax.jit(jax.grad(cost))
    H_fd = np.stack([_fd_grad(lambda x, i=i: float(g(jnp.asarray(x))[i]), d) for i in range(3)])
    _allclose(np.asarray(H)[:3], H_fd, 1e-6, 1e-8)


def _car_logp_graph(m=4):
    Dm, Wm, n = _car_parts(m)
    tau = pt.scalar("tau", dtype="float64")
    alpha = pt.scalar("alpha", dtype="float64")
    x = pt.vector("x", dtype="float64")
    Q = tau * (Dm - alpha * Wm)
    logp = 0.5 * logdet(Q) - 0.5 * Q.quad_form(x)
    return [tau, alpha, x], logp, n


def test_car_precision_from_sparse_arithmetic(rng):
    inputs, logp, n = _car_logp_graph()
    # D and W have different patterns: the union goes through inc_subtensor scatters.
    assert any(
        "IncSubtensor" in type(node.op).__name__
        for node in pytensor.graph.traversal.applys_between(inputs, [logp])
    )
    xv = rng.normal(size=n)
    (val,) = compare_jax_and_c(inputs, [logp], [2.0, 0.7, xv], cost=logp)
    W = lattice_adjacency(4).toarray()
    Q = 2.0 * (np.diag(W.sum(1)) - 0.7 * W)
    _allclose(val, 0.5 * np.linalg.slogdet(Q)[1] - 0.5 * xv @ Q @ xv, 1e-9)


def _jax_car_logp():
    inputs, logp, n = _car_logp_graph()
    fn = get_jaxified_graph(inputs, [logp])
    return (lambda tau, alpha, x: fn(tau, alpha, x)[0]), n


def test_vmap_equals_loop_and_factors_once(rng):
    f, n = _jax_car_logp()
    B = CACHE.maxsize + 3  # more members than cached factors: still one factor each
    tau = jnp.asarray(rng.uniform(0.5, 2.0, B))
    alpha = jnp.asarray(rng.uniform(0.0, 0.9, B))
    x = jnp.asarray(rng.normal(size=(B, n)))
    vg = jax.jit(jax.vmap(jax.value_and_grad(f, argnums=(0, 1, 2))))
    CACHE.clear()
    val, (gt, ga, gx) = vg(tau, alpha, x)
    # Value and gradient of each batch member share one numeric factorisation.
    assert CACHE.info()["numeric"] == B
    for i in range(B):
        v_i, (gt_i, ga_i, gx_i) = jax.value_and_grad(f, argnums=(0, 1, 2))(tau[i], alpha[i], x[i])
        _allclose(val[i], v_i, 1e-12)
        _allclose(gt[i], gt_i, 1e-12)
        _allclose(ga[i], ga_i, 1e-12)
        _allclose(gx[i], gx_i, 1e-12)


def test_nested_vmap_and_unbatched_matrix(rng):
    # PyMC's post-processing uses vmap(vmap(fn)); jacrev vmaps cotangents over one matrix.
    pattern, d = _pattern_data("grid5")
    s = pjax.jax_solve(pattern)
    ld = pjax.jax_logdet(pattern)
    D = jnp.asarray(d * rng.uniform(1.0, 2.0, size=(2, 3, 1)))
    _allclose(
        jax.vmap(jax.vmap(ld))(D),
        [[ld(D[i, j]) for j in range(3)] for i in range(2)],
        1e-12,
    )
    b = jnp.asarray(rng.normal(size=(4, pattern.n)))
    CACHE.clear()
    xs = jax.vmap(s, in_axes=(None, 0))(jnp.asarray(d), b)
    assert CACHE.info()["numeric"] == 1
    _allclose(xs, np.linalg.solve(pattern.to_scipy(d).toarray(), np.asarray(b).T).T, 1e-10)
    Bm = jnp.asarray(rng.normal(size=(2, pattern.n, 3)))
    Dm = jnp.asarray(np.stack([d, 2 * d]))
    xm = jax.vmap(s)(Dm, Bm)
    _allclose(xm[1], np.linalg.solve(2 * pattern.to_scipy(d).toarray(), np.asarray(Bm[1])), 1e-10)


def test_not_positive_definite_gives_nan_without_raising(rng):
    pattern, d = _pattern_data("grid5")
    ld, s = pjax.jax_logdet(pattern), pjax.jax_solve(pattern)
    si = pjax.jax_selected_inverse(pattern)
    bad = jnp.asarray(-d)
    b = jnp.asarray(rng.normal(size=pattern.n))
    assert np.isnan(jax.jit(ld)(bad))
    assert np.all(np.isnan(jax.jit(s)(bad, b)))
    assert np.all(np.isnan(si(bad)))
    assert np.all(np.isnan(jax.grad(ld)(bad)))
    g_d, g_b = jax.grad(lambda q, v: jnp.sum(s(q, v)), argnums=(0, 1))(bad, b)
    assert np.all(np.isnan(g_d)) and np.all(np.isnan(g_b))
    # One bad batch member poisons only its own row.
    batch = jnp.stack([jnp.asarray(d), bad, jnp.asarray(2 * d)])
    v, g = jax.vmap(jax.value_and_grad(ld))(batch)
    assert np.isnan(v[1]) and np.all(np.isnan(g[1]))
    assert np.all(np.isfinite(np.asarray(v)[[0, 2]])) and np.all(np.isfinite(np.asarray(g)[[0, 2]]))
    # NaN/inf inputs too.
    assert np.isnan(ld(jnp.full(pattern.nnz, np.nan)))


def test_car_logp_nan_outside_support():
    f, n = _jax_car_logp()
    # alpha > 1 makes D - alpha W indefinite on a lattice.
    v, g = jax.value_and_grad(f, argnums=(0, 1))(1.0, 1.5, jnp.zeros(n))
    assert np.isnan(v) and np.isnan(g[0]) and np.isnan(g[1])


def test_x64_disabled_fails_loudly():
    pattern, _ = _pattern_data("n2")
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(RuntimeError, match="jax_enable_x64"):
            pjax.jax_logdet(pattern)
        with pytest.raises(RuntimeError, match="jax_enable_x64"):
            pytensor.link.jax.dispatch.jax_funcify(SparseSolve(pattern))
    finally:
        jax.config.update("jax_enable_x64", True)
    # A function built in x64 mode and traced after x64 was switched off fails too.
    ld = pjax.jax_logdet(pattern)
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(RuntimeError, match="jax_enable_x64"):
            ld(jnp.ones(pattern.nnz))
    finally:
        jax.config.update("jax_enable_x64", True)


def test_float32_input_rejected():
    pattern, d = _pattern_data("n2")
    with pytest.raises(TypeError, match="float64"):
        pjax.jax_logdet(pattern)(jnp.asarray(d, dtype=jnp.float32))


def test_funcify_registered_for_every_op():
    pattern, _ = _pattern_data("n2")
    for op in (SparseLogDet(pattern), SparseSolve(pattern), SparseSelectedInverse(pattern)):
        assert callable(pytensor.link.jax.dispatch.jax_funcify(op))


def test_concurrent_callbacks_from_threads(rng):
    # numpyro chain_method="parallel" calls the host callbacks from several threads.
    Q = grid_laplacian(12)
    pattern, d = SparsityPattern.from_scipy(Q)
    ld = pjax.jax_logdet(pattern)
    s = pjax.jax_solve(pattern)
    b = jnp.asarray(rng.normal(size=pattern.n))

    @jax.jit
    def work(scale):
        q = scale * jnp.asarray(d)
        return jax.value_and_grad(lambda q: ld(q) + jnp.sum(s(q, b) * b))(q)

    scales = np.repeat(np.linspace(1.0, 2.0, 6), 4)  # repeated values: in-flight sharing too
    CACHE.clear()
    expected = {float(c): work(c) for c in np.unique(scales)}
    CACHE.clear()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, scales))
    for c, (v, g) in zip(scales, results, strict=True):
        v0, g0 = expected[float(c)]
        _allclose(v, v0, 1e-12)
        _allclose(g, g0, 1e-12)
    # Concurrent requests for the same values wait for one factorisation.
    assert CACHE.info()["numeric"] == len(np.unique(scales))


@pytest.mark.parametrize("where", ["scale", "diagonal"])
def test_pytensor_hessian_graph_compiles_to_jax(where):
    """PyTensor's own second-order graph (SparseSelectedInverseGrad inside) runs under JAX."""
    import pytensor
    import pytensor.tensor as pt
    import scipy.sparse as sp

    import pymc_sparse as pms
    from tests.helpers import lattice_adjacency

    W = lattice_adjacency(4)
    D = sp.diags(np.asarray(W.sum(1)).ravel())
    t, a = pt.dscalars("t", "a")
    base = pms.SparseMatrix.from_scipy(D) - a * pms.SparseMatrix.from_scipy(W)
    Q = (t * base).add_diagonal(0.5) if where == "scale" else base.add_diagonal(t)
    gt, ga = pytensor.grad(pms.logdet(Q), [t, a])
    outs = [*pytensor.grad(gt, [t, a]), pytensor.grad(ga, a)]
    c = pytensor.function([t, a], outs)(1.5, 0.4)
    j = pytensor.function([t, a], outs, mode="JAX")(1.5, 0.4)
    np.testing.assert_allclose(np.asarray(j), np.asarray(c), rtol=1e-10)
    assert abs(c[1]) > 1e-3  # the cross term is really exercised
