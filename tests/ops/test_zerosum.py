"""The fused per-component zero-sum map: dense references, adjoints, gradients, backends."""

import warnings

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pymc.distributions.transforms import ZeroSumTransform
from pytensor.gradient import verify_grad

import pymc_sparse.dispatch.numba  # noqa: F401  (registers the dispatch)
from pymc_sparse.ops.zerosum import (
    KINDS,
    ComponentZeroSum,
    numpy_zero_sum,
    one_component,
    zero_sum_backward,
    zero_sum_forward,
)

MODES = ["FAST_RUN", "NUMBA", "FAST_COMPILE"]  # C, Numba, Python (perform)


def _layout(components, singletons, n):
    """Layout of the map: each component a node list whose last node is the pivot."""
    comp_of = {}
    for c, nodes in enumerate(components):
        for i in nodes[:-1]:
            comp_of[i] = c
    for i in singletons:
        comp_of[i] = -1
    free = np.array(sorted(comp_of), dtype=np.int64)
    comp = np.array([comp_of[i] for i in free], dtype=np.int64)
    pivots = np.array([nodes[-1] for nodes in components], dtype=np.int64)
    sizes = np.array([len(nodes) for nodes in components], dtype=np.float64)
    return n, free, comp, pivots, sizes


LAYOUTS = {
    # two interleaved components, two copied nodes, one node fixed at 0 (node 10)
    "mixed": _layout([[0, 2, 5, 9], [1, 3, 4, 6, 7]], [8, 11], 12),
    "one-component": _layout([list(range(7))], [], 7),
    "pairs": _layout([[0, 1], [2, 3], [4, 5]], [], 6),
    "no-component": _layout([], [0, 2], 3),
}


def dense_backward(layout):
    """B (n x n_f) column by column, from the per-component Householder map."""
    n, free, comp, pivots, sizes = layout
    B = np.zeros((n, free.size))
    for j, (f, c) in enumerate(zip(free, comp, strict=True)):
        if c < 0:
            B[f, j] = 1.0
            continue
        m = sizes[c]
        members = free[comp == c]
        B[members, j] = -1.0 / (np.sqrt(m) + m)
        B[f, j] += 1.0
        B[pivots[c], j] = -1.0 / np.sqrt(m)
    return B


def dense_forward(layout):
    """F (n_f x n): the inverse of B on the zero-sum subspace."""
    n, free, comp, pivots, sizes = layout
    F = np.zeros((free.size, n))
    for j, (f, c) in enumerate(zip(free, comp, strict=True)):
        F[j, f] = 1.0
        if c >= 0:
            m = sizes[c]
            F[j, pivots[c]] = -np.sqrt(m) / (np.sqrt(m) + m)
    return F


def dense(kind, layout):
    B, F = dense_backward(layout), dense_forward(layout)
    return {"backward": B, "backward_adjoint": B.T, "forward": F, "forward_adjoint": F.T}[kind]


def _compile(inputs, outputs, mode):
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*object mode.*")
        return pytensor.function(inputs, outputs, mode=mode)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_dense_map_is_the_householder_isometry(name, rng):
    """The dense reference itself: zero sums, isometry, F inverts B, PyMC's map."""
    layout = LAYOUTS[name]
    n, free, comp, pivots, _sizes = layout
    B, F = dense_backward(layout), dense_forward(layout)
    np.testing.assert_allclose(B.T @ B, np.eye(free.size), atol=1e-14)
    np.testing.assert_allclose(F @ B, np.eye(free.size), atol=1e-14)
    x = B @ rng.normal(size=free.size)
    for c, p in enumerate(pivots):
        np.testing.assert_allclose(x[free[comp == c]].sum() + x[p], 0.0, atol=1e-14)
    if name == "one-component":
        z = rng.normal(size=n - 1)
        pymc = ZeroSumTransform([-1]).backward(pt.as_tensor(z)).eval()
        np.testing.assert_allclose(B @ z, pymc, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("mode", MODES)
def test_values_match_dense(mode, rng):
    """Every kind, layout, vector and (strided) batch in one compiled function per backend."""
    inputs, outputs, values, expected = [], [], [], []
    for layout in LAYOUTS.values():
        args = [pt.constant(layout[0])] + [pt.constant(a) for a in layout[1:]]
        for kind in KINDS:
            M = dense(kind, layout)
            v, V = pt.dvector(), pt.dmatrix()
            vv = rng.normal(size=M.shape[1])
            big = rng.normal(size=(6, 2 * M.shape[1]))
            VV = big[::2, ::2]  # strided rows and columns
            inputs += [v, V]
            outputs += [ComponentZeroSum(kind)(v, *args), ComponentZeroSum(kind)(V, *args)]
            values += [vv, VV]
            expected += [M @ vv, VV @ M.T]
            np.testing.assert_allclose(numpy_zero_sum(kind, VV, *layout), VV @ M.T, atol=1e-14)
    got = _compile(inputs, outputs, mode)(*values)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["mixed", "pairs"])
def test_verify_grad(name, kind, rng):
    # The kernels are compared with the dense maps above; this checks the L_op wiring.
    layout = LAYOUTS[name]
    args = [pt.constant(layout[0])] + [pt.constant(a) for a in layout[1:]]
    size = dense(kind, layout).shape[1]
    for shape in ((size,), (2, size)):
        verify_grad(
            lambda v: ComponentZeroSum(kind)(v, *args),
            [rng.normal(size=shape)],
            rng=rng,
            mode="FAST_COMPILE",
        )


@pytest.mark.parametrize("mode", MODES)
def test_gradient_is_the_adjoint_on_every_backend(mode, rng):
    layout = LAYOUTS["mixed"]
    z, w = pt.dvector("z"), pt.dvector("w")
    x = zero_sum_backward(z, *layout)
    zf = zero_sum_forward(w, *layout)
    gz = pytensor.grad(pt.sum(x * w), z)
    gw = pytensor.grad(pt.sum(zf * z), w)
    f = _compile([z, w], [gz, gw], mode)
    zv, wv = rng.normal(size=layout[1].size), rng.normal(size=layout[0])
    a, b = f(zv, wv)
    np.testing.assert_allclose(a, dense_backward(layout).T @ wv, atol=1e-14)
    np.testing.assert_allclose(b, dense_forward(layout).T @ zv, atol=1e-14)


def test_batch_dimensions_and_static_shapes(rng):
    layout = LAYOUTS["mixed"]
    n, nf = layout[0], layout[1].size
    Z = pt.tensor("Z", dtype="float64", shape=(2, 3, nf))
    X = zero_sum_backward(Z, *layout)
    assert X.type.shape == (2, 3, n)
    Zv = rng.normal(size=(2, 3, nf))
    Xv = X.eval({Z: Zv})
    np.testing.assert_allclose(Xv, Zv @ dense_backward(layout).T, atol=1e-14)
    np.testing.assert_allclose(zero_sum_forward(Xv, *layout).eval(), Zv, atol=1e-14)
    assert zero_sum_backward(pt.dvector(), *layout).type.shape == (n,)


def test_bad_input_raises(rng):
    n, free, comp, pivots, sizes = LAYOUTS["mixed"]
    with pytest.raises(ValueError, match="has length 5, expected 9"):
        zero_sum_backward(np.zeros(5), n, free, comp, pivots, sizes)
    with pytest.raises(ValueError, match="must be distinct"):
        zero_sum_backward(np.zeros(9), n, free, comp, np.array([0, 7]), sizes)
    with pytest.raises(ValueError, match=r"`comp` must lie in \[-1, 2\)"):
        zero_sum_backward(np.zeros(9), n, free, comp + 2, pivots, sizes)
    with pytest.raises(TypeError, match="at least one dimension"):
        zero_sum_backward(pt.dscalar(), n, free, comp, pivots, sizes)
    with pytest.raises(ValueError, match="`kind` must be one of"):
        ComponentZeroSum("inverse")
    # A length known only at run time is checked by the kernel, never truncated.
    z = pt.dvector("z")
    for mode in ("FAST_RUN", "NUMBA"):
        f = _compile([z], zero_sum_backward(z, n, free, comp, pivots, sizes), mode)
        with pytest.raises(ValueError, match="length"):
            f(np.zeros(10))


def test_jax_matches_c(rng):
    pytest.importorskip("jax")
    import pymc_sparse.dispatch.jax  # noqa: F401  (registers the dispatch)

    layout = LAYOUTS["mixed"]
    z, Z, w = pt.dvector("z"), pt.dmatrix("Z"), pt.dvector("w")
    x = zero_sum_backward(z, *layout)
    outs = [
        x,
        zero_sum_backward(Z, *layout),
        zero_sum_forward(x, *layout),
        pytensor.grad(pt.sum(x * w), z),
        pytensor.grad(pt.sum(zero_sum_forward(w, *layout) * z), w),
    ]
    vals = [
        rng.normal(size=layout[1].size),
        rng.normal(size=(3, layout[1].size)),
        rng.normal(size=layout[0]),
    ]
    c = pytensor.function([z, Z, w], outs, mode="FAST_RUN")(*vals)
    j = pytensor.function([z, Z, w], outs, mode="JAX")(*vals)
    for a, b in zip(c, j, strict=True):
        np.testing.assert_allclose(np.asarray(b), a, rtol=1e-14, atol=1e-15)


def test_numba_takes_the_contiguous_path_only_forone_component():
    """The contiguous C and Numba rows (no gathers) serve exactly a connected graph."""

    for name, layout in LAYOUTS.items():
        args = [pt.constant(np.int64(layout[0]))] + [pt.constant(a) for a in layout[1:]]
        node = ComponentZeroSum("backward")(pt.dvector(), *args).owner
        assert one_component(node) == (name == "one-component"), name
    symbolic = ComponentZeroSum("backward")(pt.dvector(), pt.lscalar(), *args[1:]).owner
    assert not one_component(symbolic)
