r"""JAX dispatch of the sparse Ops: ``pure_callback`` to CHOLMOD inside ``jax.custom_jvp``.

``pm.sample(nuts_sampler="numpyro" | "blackjax")`` turns the model's log density into a
JAX function with :func:`pytensor.link.jax.dispatch.jax_funcify` and lets *JAX*
differentiate it: the Ops' ``L_op`` is never called on that path.  Each Op therefore
gets a JAX function here that JAX can jit, vmap and differentiate:

* the numerical work runs on the host through :func:`jax.pure_callback`, against the
  shared factor cache :data:`pymc_sparse.linalg.cholmod.CACHE`, so a value and its gradient at
  one point share one numeric factorisation: the log-determinant's JVP returns the
  selected inverse with the value (one callback, one factor), the solve's transpose
  finds the factor its forward pass left in the cache;
* derivatives are forward-mode rules that JAX can transpose, with the same maths as the
  Ops' ``L_op`` (see :class:`~pymc_sparse.ops.logdet.SparseLogDet`,
  :class:`~pymc_sparse.ops.solve.SparseSolve`,
  :class:`~pymc_sparse.ops.selinv.SparseSelectedInverse`): the log-determinant and the
  selected inverse are :func:`jax.custom_jvp` functions, the solve is a
  :func:`jax.lax.custom_linear_solve`.  The selected inverse's tangent
  :math:`J\dot q = J^\top(w\odot\dot q)/w` reuses the adjoint kernel
  (:mod:`pymc_sparse.linalg.takahashi_adjoint`) and is a ``linear_call`` whose transpose is
  :math:`J^\top`, so ``jax.grad``, ``jax.jvp``, ``jax.jacfwd``, ``jax.jacrev`` and
  ``jax.hessian`` all work, to second order for the log-determinant and to every order
  for the solve; a third derivative of the log-determinant raises
  ``NotImplementedError``;
* under :func:`jax.vmap` (numpyro ``chain_method="vectorized"``, PyMC's
  post-processing) the callbacks use ``vmap_method="expand_dims"``: the host receives the
  whole batch in one call and factorises each distinct matrix once, in a loop; a batch
  of right-hand sides against one unbatched matrix is a single multi-column solve;
* a matrix that is not positive definite gives NaN, never an exception from inside a
  callback (one exception would end a whole numpyro run);
* only ``O(nnz)`` numbers cross between device and host per call: the stored values of
  :math:`Q` go out, a scalar, a vector of length ``n`` (times the columns of ``b``) or
  ``nnz`` values of the selected inverse come back, so the same code runs with JAX on a
  GPU (the factorisation stays on the host CPU).

Everything is in float64.  PyTensor's JAX backend switches ``jax_enable_x64`` on when it
is imported with ``pytensor.config.floatX == "float64"`` (the default, and what
``pymc.sampling.jax`` relies on); if x64 is off when a function is built or traced, a
``RuntimeError`` says how to switch it on instead of factorising in float32.

References
----------
.. [1] Giles, M. (2008). Collected matrix derivative results for forward and reverse
   mode algorithmic differentiation. LNCSE 64, 35-44.
.. [2] Rue, H. and Held, L. (2005). *Gaussian Markov Random Fields*. Chapman & Hall, 2.4.
.. [3] JAX documentation, "External callbacks" and "Custom derivative rules".
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
from pytensor.link.jax.dispatch import jax_funcify

from pymc_sparse.dispatch._jax_linear_call import register as _register_linear_call_batching
from pymc_sparse.linalg.host import (
    host_logdet,
    host_logdet_selinv,
    host_selinv,
    host_selinv_vjp,
    host_solve,
)
from pymc_sparse.linalg.lru import lru_function
from pymc_sparse.linalg.pattern import SparsityPattern
from pymc_sparse.ops.logdet import SparseLogDet
from pymc_sparse.ops.quadform import SparseMatVec, SparsePairProduct, SparseQuadForm
from pymc_sparse.ops.selinv import SparseSelectedInverse
from pymc_sparse.ops.selinv_grad import SparseSelectedInverseGrad
from pymc_sparse.ops.solve import SparseSolve
from pymc_sparse.ops.zerosum import ComponentZeroSum

__all__ = [
    "jax_funcify_ComponentZeroSum",
    "jax_funcify_SparseLogDet",
    "jax_funcify_SparseMatVec",
    "jax_funcify_SparsePairProduct",
    "jax_funcify_SparseQuadForm",
    "jax_funcify_SparseSelectedInverse",
    "jax_funcify_SparseSelectedInverseGrad",
    "jax_funcify_SparseSolve",
    "jax_logdet",
    "jax_selected_inverse",
    "jax_solve",
]

_log = logging.getLogger(__name__)

_X64_MESSAGE = (
    "pymc_sparse needs JAX in 64-bit mode: sparse Cholesky factorisations are not "
    "reliable in float32. Call `jax.config.update('jax_enable_x64', True)` before "
    "building or running the JAX function (PyTensor does this itself when it is imported "
    "with pytensor.config.floatX == 'float64', the default)."
)

# Result dtype of every callback.  ``jax.ShapeDtypeStruct`` with float64 is only legal
# in x64 mode, which `_require_x64` checks first.
_F64 = np.float64


def _require_x64() -> None:
    if not jax.config.read("jax_enable_x64"):
        raise RuntimeError(_X64_MESSAGE)


def _check_float64(x, name: str) -> None:
    _require_x64()
    if x.dtype != jnp.float64:
        raise TypeError(
            f"`{name}` reached a pymc_sparse JAX function as {x.dtype}; it must be float64. "
            + _X64_MESSAGE
        )


# ---------------------------------------------------------------------------------
# Host side: NumPy in, NumPy out, never raises.
# ---------------------------------------------------------------------------------
def _host_logdet(pattern: SparsityPattern, data) -> np.ndarray:
    data = np.asarray(data, dtype=_F64)
    flat = data.reshape(-1, pattern.nnz)
    out = np.array([host_logdet(pattern, d) for d in flat], dtype=_F64)  # one factor each
    return out.reshape(data.shape[:-1])


def _host_logdet_selinv(pattern: SparsityPattern, data) -> tuple[np.ndarray, np.ndarray]:
    data = np.asarray(data, dtype=_F64)
    flat = data.reshape(-1, pattern.nnz)
    ld = np.empty(flat.shape[0], dtype=_F64)
    sel = np.empty_like(flat)
    for i, d in enumerate(flat):
        ld[i], sel[i] = host_logdet_selinv(pattern, d)
    return ld.reshape(data.shape[:-1]), sel.reshape(data.shape)


def _host_selinv(pattern: SparsityPattern, data) -> np.ndarray:
    data = np.asarray(data, dtype=_F64)
    flat = data.reshape(-1, pattern.nnz)
    out = np.array([host_selinv(pattern, d) for d in flat], dtype=_F64).reshape(flat.shape)
    return out.reshape(data.shape)


def _host_solve(pattern: SparsityPattern, core_ndim: int, data, b) -> np.ndarray:
    """Solve for every batch member; ``b`` has ``core_ndim`` (1 or 2) trailing core axes."""
    data = np.asarray(data, dtype=_F64)
    b = np.asarray(b, dtype=_F64)
    core = b.shape[b.ndim - core_ndim :]
    batch = np.broadcast_shapes(data.shape[:-1], b.shape[: b.ndim - core_ndim])
    out_shape = (*batch, *core)
    n_data = int(np.prod(data.shape[:-1], dtype=np.int64))
    if n_data == 1:
        # One matrix, many right-hand sides (jacrev, vmap over b): one multi-column solve.
        bb = np.broadcast_to(b, out_shape).reshape(-1, *core)  # (m, n[, k])
        cols = np.moveaxis(bb, 0, 1).reshape(pattern.n, -1)  # (n, m[*k])
        x = host_solve(pattern, data, cols)
        x = np.moveaxis(x.reshape(pattern.n, bb.shape[0], *core[1:]), 1, 0)
        return x.reshape(out_shape)
    dd = np.broadcast_to(data, (*batch, pattern.nnz)).reshape(-1, pattern.nnz)
    bb = np.broadcast_to(b, out_shape).reshape(-1, *core)
    out = np.empty(bb.shape, dtype=_F64)
    for i in range(dd.shape[0]):
        out[i] = host_solve(pattern, dd[i], bb[i])
    return out.reshape(out_shape)


def _host_selinv_vjp(pattern: SparsityPattern, data, sbar) -> np.ndarray:
    data = np.asarray(data, dtype=_F64)
    sbar = np.asarray(sbar, dtype=_F64)
    batch = np.broadcast_shapes(data.shape[:-1], sbar.shape[:-1])
    ss = np.broadcast_to(sbar, (*batch, pattern.nnz)).reshape(-1, pattern.nnz)
    if int(np.prod(data.shape[:-1], dtype=np.int64)) == 1:
        dd = data.reshape(1, pattern.nnz)  # one matrix, many cotangents (jacrev): factor once
    else:
        dd = np.broadcast_to(data, (*batch, pattern.nnz)).reshape(-1, pattern.nnz)
    out = np.empty(ss.shape, dtype=_F64)
    for i in range(ss.shape[0]):
        out[i] = host_selinv_vjp(pattern, dd[i if dd.shape[0] > 1 else 0], ss[i])
    return out.reshape((*batch, pattern.nnz))


# ---------------------------------------------------------------------------------
# JAX side: one set of functions per pattern, built once.
# ---------------------------------------------------------------------------------
def _callback(fn, shape, *args):
    return jax.pure_callback(
        fn, jax.ShapeDtypeStruct(shape, _F64), *args, vmap_method="expand_dims"
    )


def _sym_matvec(pattern: SparsityPattern, vals, x):
    """``Q x`` on ``pattern`` (see :func:`_edge_matvec`)."""
    return _edge_matvec(pattern.rows, pattern.cols, vals, x)


def _edge_matvec(rows, cols, vals, x):
    r"""``Q x`` for the symmetric ``Q`` whose lower triangle holds ``vals`` (x: (n,) or (n, k)).

    The package's one JAX matvec (used by the solve's ``custom_linear_solve`` and by
    :class:`~pymc_sparse.ops.quadform.SparseMatVec`): a gather and a scatter-add per
    triangle, differentiable in ``vals`` and ``x`` to any order and batched by
    :func:`jax.vmap`.
    """
    r, c = jnp.asarray(rows), jnp.asarray(cols)
    off = jnp.asarray(np.asarray(rows) != np.asarray(cols), dtype=_F64)
    v = vals if x.ndim == 1 else vals[:, None]
    o = off if x.ndim == 1 else off[:, None]
    y = jnp.zeros_like(x).at[r].add(v * x[c])
    return y.at[c].add(o * v * x[r])


def _edge_pair_product(rows, cols, u, v):
    """Per stored entry ``u_i v_j + u_j v_i`` (``u_i v_i`` on the diagonal), columns summed."""
    r, c = jnp.asarray(rows), jnp.asarray(cols)
    off = jnp.asarray(np.asarray(rows) != np.asarray(cols), dtype=_F64)
    if u.ndim == 2:
        off = off[:, None]
    e = u[r] * v[c] + off * u[c] * v[r]
    return e.sum(axis=1) if e.ndim == 2 else e


def _f64(x):
    # PyTensor's JAX linker can hand a fused elementwise result over as a weakly typed
    # float32 value although the graph says float64 (seen in MarginalGMRFNormal's
    # gradient); make the dtype explicit, as every callback's result already is.
    return jnp.asarray(x, dtype=jnp.float64)


def _node_edges(node):
    """Row and column of each stored entry, from the index constants of a quadform node."""
    indptr, indices = (np.asarray(i.data) for i in node.inputs[2:4])
    cols = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
    return indices, cols


_THIRD_ORDER_MESSAGE = (
    "pymc_sparse offers derivatives of the log-determinant and the selected inverse up to "
    "second order (jax.hessian, jacrev(jacrev), jvp of grad); a third derivative would "
    "differentiate the adjoint Takahashi kernel, which has no derivative of its own."
)


@jax.custom_jvp
def _no_third_order(data):
    """Identity that refuses to be differentiated: guards the residual of the 2nd-order map."""
    return data


@_no_third_order.defjvp
def _no_third_order_jvp(primals, tangents):
    raise NotImplementedError(_THIRD_ORDER_MESSAGE)


@lru_function(maxsize=64)
def _functions(pattern: SparsityPattern):
    """``(logdet, solve, selected_inverse)`` JAX functions of stored values ``data``."""
    nnz = pattern.nnz
    w = np.asarray(pattern.symmetric_weights)
    # The selected inverse's Jacobian is J = -M diag(w) / 2 with M symmetric
    # (M_fe = S_ki S_jl + S_kj S_il for f = (k, l), e = (i, j)), so the forward map is the
    # reverse map re-weighted: J dq = J'(w dq) / w.  One adjoint kernel serves both modes.
    h = w
    host_vjp = functools.partial(_host_selinv_vjp, pattern)

    def selinv_vjp(data, sbar):
        # Adjoint of the selected inversion on the pattern of L
        # (pymc_sparse.linalg.takahashi_adjoint); a raw callback: no third derivatives.
        return _callback(host_vjp, (nnz,), data, sbar)

    def selinv_tangent(data, dq):
        # J dq, linear in dq, with J' v = selinv_vjp(data, v) as its transpose.
        _register_linear_call_batching()
        return jax.custom_derivatives.linear_call(
            lambda d, t: selinv_vjp(d, h * t) / h, selinv_vjp, _no_third_order(data), dq
        )

    # -- selected inverse ----------------------------------------------------------
    @jax.custom_jvp
    def selected_inverse(data):
        _check_float64(data, "data")
        return _callback(functools.partial(_host_selinv, pattern), (nnz,), data)

    @selected_inverse.defjvp
    def _selinv_jvp(primals, tangents):
        (data,), (dq,) = primals, tangents
        return selected_inverse(data), selinv_tangent(data, dq)

    # -- log-determinant -------------------------------------------------------------
    # Differentiating needs log det Q and the selected inverse (its gradient): one
    # callback returns both from one factor, so a value and its gradient cost one trip
    # to the host and one factorisation even when a vectorized batch is larger than the
    # cache.  The pair has its own JVP, so the gradient is differentiable again
    # (jax.hessian = jacfwd(jacrev), jacrev(jacrev), jvp of grad).
    def _logdet_selinv_host(data):
        return _host_logdet_selinv(pattern, data)

    @jax.custom_jvp
    def logdet_and_selinv(data):
        _check_float64(data, "data")
        return jax.pure_callback(
            _logdet_selinv_host,
            (jax.ShapeDtypeStruct((), _F64), jax.ShapeDtypeStruct((nnz,), _F64)),
            data,
            vmap_method="expand_dims",
        )

    @logdet_and_selinv.defjvp
    def _pair_jvp(primals, tangents):
        (data,), (dq,) = primals, tangents
        ld, s = logdet_and_selinv(data)
        # d logdet / d q_e = w_e (Q^{-1})_ij.
        return (ld, s), (jnp.sum(w * s * dq, axis=-1), selinv_tangent(data, dq))

    @jax.custom_jvp
    def logdet(data):
        _check_float64(data, "data")
        return _callback(functools.partial(_host_logdet, pattern), (), data)

    @logdet.defjvp
    def _logdet_jvp(primals, tangents):
        (data,), (dq,) = primals, tangents
        ld, s = logdet_and_selinv(data)
        return ld, jnp.sum(w * s * dq, axis=-1)

    # -- solve -------------------------------------------------------------------------
    # lax.custom_linear_solve differentiates x = Q^{-1} b implicitly,
    # dx = Q^{-1}(db - dQ x), through the JAX mat-vec above: forward, reverse (the
    # transpose of a symmetric solve is the same solve) and every higher order, and it
    # batches under vmap.  Only the solve itself goes to the host.
    def solve(data, b):
        _check_float64(data, "data")
        _check_float64(b, "b")
        if b.ndim not in (1, 2) or b.shape[0] != pattern.n:
            raise ValueError(
                f"`b` must have shape ({pattern.n},) or ({pattern.n}, k), got {b.shape}."
            )
        host = functools.partial(_host_solve, pattern, b.ndim)
        return jax.lax.custom_linear_solve(
            lambda x: _sym_matvec(pattern, data, x),
            b,
            solve=lambda _matvec, rhs: _callback(host, rhs.shape, data, rhs),
            symmetric=True,
        )

    return logdet, solve, selected_inverse


def jax_logdet(pattern: SparsityPattern):
    """JAX function ``data -> log det Q`` for this pattern (NaN if not positive definite)."""
    _require_x64()
    return _functions(pattern)[0]


def jax_solve(pattern: SparsityPattern):
    """JAX function ``(data, b) -> Q^{-1} b`` for this pattern, ``b`` of shape (n,) or (n, k)."""
    _require_x64()
    return _functions(pattern)[1]


def jax_selected_inverse(pattern: SparsityPattern):
    """JAX function ``data -> Q^{-1}`` on the stored (lower-triangle) pattern, data order."""
    _require_x64()
    return _functions(pattern)[2]


@jax_funcify.register(SparseLogDet)
def jax_funcify_SparseLogDet(op, node=None, **kwargs):
    """JAX implementation of :class:`~pymc_sparse.ops.logdet.SparseLogDet`."""
    return jax_logdet(op.pattern)


@jax_funcify.register(SparseSolve)
def jax_funcify_SparseSolve(op, node=None, **kwargs):
    """JAX implementation of :class:`~pymc_sparse.ops.solve.SparseSolve`."""
    return jax_solve(op.pattern)


@jax_funcify.register(SparseSelectedInverse)
def jax_funcify_SparseSelectedInverse(op, node=None, **kwargs):
    """JAX implementation of :class:`~pymc_sparse.ops.selinv.SparseSelectedInverse`."""
    return jax_selected_inverse(op.pattern)


@jax_funcify.register(SparseSelectedInverseGrad)
def jax_funcify_SparseSelectedInverseGrad(op, node=None, **kwargs):
    """JAX implementation of :class:`~pymc_sparse.ops.selinv_grad.SparseSelectedInverseGrad`.

    Appears when PyTensor compiles its own second-order graphs (``pytensor.gradient.hessian``)
    with ``mode="JAX"``; a raw callback (no derivative of its own: third order is not offered).
    """
    pattern = op.pattern
    host = functools.partial(_host_selinv_vjp, pattern)

    def selinv_grad(data, sbar):
        _check_float64(data, "data")
        return _callback(host, (pattern.nnz,), data, sbar)

    return selinv_grad


@jax_funcify.register(SparseMatVec)
def jax_funcify_SparseMatVec(op, node=None, **kwargs):
    """JAX implementation of :class:`~pymc_sparse.ops.quadform.SparseMatVec`."""
    rows, cols = _node_edges(node)

    def sparse_matvec(data, x, indptr, indices):
        return _edge_matvec(rows, cols, _f64(data), _f64(x))

    return sparse_matvec


@jax_funcify.register(SparseQuadForm)
def jax_funcify_SparseQuadForm(op, node=None, **kwargs):
    """JAX implementation of :class:`~pymc_sparse.ops.quadform.SparseQuadForm`."""
    rows, cols = _node_edges(node)

    def sparse_quad_form(data, x, indptr, indices):
        x = _f64(x)
        y = _edge_matvec(rows, cols, _f64(data), x)
        return jnp.sum(x * y, axis=0), y

    return sparse_quad_form


@jax_funcify.register(SparsePairProduct)
def jax_funcify_SparsePairProduct(op, node=None, **kwargs):
    """JAX implementation of :class:`~pymc_sparse.ops.quadform.SparsePairProduct`."""
    rows, cols = _node_edges(node)

    def sparse_pair_product(u, v, indptr, indices):
        return _edge_pair_product(rows, cols, _f64(u), _f64(v))

    return sparse_pair_product


# ------------------------------------------------------------- per-component zero-sum map
def _zero_sum_function(kind: str, n: int, free, comp, pivots, sizes):
    r"""JAX function of one value vector for a :class:`~pymc_sparse.ops.zerosum.ComponentZeroSum`.

    The same arithmetic as the Op's C kernel, as gathers and one segment sum of length
    :math:`k` (the layout is constant); JAX differentiates it (it is linear).
    """
    free, comp, pivots = (np.asarray(a, dtype=np.int64) for a in (free, comp, pivots))
    sizes = np.asarray(sizes, dtype=np.float64)
    kp = pivots.size
    proper = np.flatnonzero(comp >= 0)
    cp = comp[proper]
    r, m = np.sqrt(sizes), sizes

    def sums(a):  # component sums of the proper free values
        return jnp.zeros(kp, dtype=_F64).at[cp].add(a[proper])

    def spread(base, per_comp):
        return base.at[proper].add(per_comp[cp])

    def zero_sum(v):
        v = _f64(v)
        if kind == "backward":
            t = sums(v)
            x = jnp.zeros(n, dtype=_F64).at[free].set(spread(v, -(t / (r + m))))
            return x.at[pivots].set(-t / r)
        if kind == "backward_adjoint":
            vf = v[free]
            return spread(vf, -sums(vf) / (r + m) - v[pivots] / r)
        if kind == "forward":
            return spread(v[free], (-v[pivots] * r) / (r + m))
        x = jnp.zeros(n, dtype=_F64).at[free].set(v)
        return x.at[pivots].set(-(sums(v) / (r + m)) * r)

    return zero_sum


@jax_funcify.register(ComponentZeroSum)
def jax_funcify_ComponentZeroSum(op, node=None, **kwargs):
    """JAX implementation of :class:`~pymc_sparse.ops.zerosum.ComponentZeroSum`."""
    n, free, comp, pivots, sizes = (np.asarray(i.data) for i in node.inputs[1:])
    row = _zero_sum_function(op.kind, int(n), free, comp, pivots, sizes)
    fn = row if node.inputs[0].type.ndim == 1 else jax.vmap(row)

    def component_zero_sum(value, *layout):
        return fn(value)

    return component_zero_sum
