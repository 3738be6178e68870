r"""Numba dispatch of the sparse Ops (PyTensor's NUMBA linker, nutpie's default backend).

CHOLMOD is a C library reached through scikit-sparse's Python objects, which compiled
Numba code cannot call, so each Op runs its host function in a ``numba.objmode``
block: the compiled graph hands the ``O(nnz)`` value vector to Python, which asks the
shared factor cache :data:`pymc_sparse.linalg.cholmod.CACHE` (so the log-density and its
gradient at one point share one factorisation, exactly as with the C and JAX
backends), and gets back the scalar, vector or matrix result.

Without these registrations PyTensor falls back to object mode on the Ops' ``perform``
with a warning per Op; the registrations do the same work without the warning and
with the callbacks' NaN policy (a matrix that is not positive definite gives NaN).
The gradient graphs contain only these Ops and ordinary tensor Ops, so nutpie's
``compile_pymc_model(model, backend="numba")`` compiles every other Op to machine code.

The matrix-vector product, quadratic form and pair product
(:mod:`pymc_sparse.ops.quadform`) need no CHOLMOD: they are compiled loops over the
stored lower triangle, the same loops as the Ops' C code, so under NUMBA they fuse with
the rest of the graph at machine speed.  The tabulated one-parameter log-determinant
(:class:`~pymc_sparse.ops.table.OneParameterLogDet`) calls its family in object mode
(an ``O(1)`` Chebyshev evaluation inside the table).

Importing this module registers the dispatch (PyTensor imports its Numba backend
lazily, so this module imports it explicitly).
"""

from __future__ import annotations

import functools

import numba
import numpy as np
from pytensor.link.numba.dispatch import numba_funcify
from pytensor.link.numba.dispatch.basic import get_numba_type, numba_njit

from pymc_sparse.linalg.host import host_logdet, host_selinv, host_selinv_vjp, host_solve
from pymc_sparse.linalg.pattern import lower_matvec_into
from pymc_sparse.ops.logdet import SparseLogDet
from pymc_sparse.ops.quadform import SparseMatVec, SparsePairProduct, SparseQuadForm
from pymc_sparse.ops.selinv import SparseSelectedInverse
from pymc_sparse.ops.selinv_grad import SparseSelectedInverseGrad
from pymc_sparse.ops.solve import SparseSolve
from pymc_sparse.ops.table import OneParameterLogDet
from pymc_sparse.ops.zerosum import ComponentZeroSum, one_component

__all__ = [
    "numba_funcify_ComponentZeroSum",
    "numba_funcify_OneParameterLogDet",
    "numba_funcify_SparseLogDet",
    "numba_funcify_SparseMatVec",
    "numba_funcify_SparsePairProduct",
    "numba_funcify_SparseQuadForm",
    "numba_funcify_SparseSelectedInverse",
    "numba_funcify_SparseSelectedInverseGrad",
    "numba_funcify_SparseSolve",
]


def _objmode_unary(py_fn, ret_sig):
    """A jitted ``f(a)`` that calls the Python host function ``py_fn`` in object mode."""

    @numba_njit
    def impl(a):
        with numba.objmode(ret=ret_sig):
            ret = py_fn(a)
        return ret

    return impl


def _objmode_binary(py_fn, ret_sig):
    """A jitted ``f(a, b)`` that calls the Python host function ``py_fn`` in object mode."""

    @numba_njit
    def impl(a, b):
        with numba.objmode(ret=ret_sig):
            ret = py_fn(a, b)
        return ret

    return impl


@numba_funcify.register(SparseLogDet)
def numba_funcify_SparseLogDet(op, node, **kwargs):
    """Numba implementation of :class:`~pymc_sparse.ops.logdet.SparseLogDet`."""
    return _objmode_unary(
        functools.partial(host_logdet, op.pattern), get_numba_type(node.outputs[0].type)
    )


@numba_funcify.register(SparseSelectedInverse)
def numba_funcify_SparseSelectedInverse(op, node, **kwargs):
    """Numba implementation of :class:`~pymc_sparse.ops.selinv.SparseSelectedInverse`."""
    return _objmode_unary(
        functools.partial(host_selinv, op.pattern), get_numba_type(node.outputs[0].type)
    )


@numba_funcify.register(SparseSolve)
def numba_funcify_SparseSolve(op, node, **kwargs):
    """Numba implementation of :class:`~pymc_sparse.ops.solve.SparseSolve`."""
    return _objmode_binary(
        functools.partial(host_solve, op.pattern), get_numba_type(node.outputs[0].type)
    )


@numba_funcify.register(SparseSelectedInverseGrad)
def numba_funcify_SparseSelectedInverseGrad(op, node, **kwargs):
    """Numba implementation of :class:`~pymc_sparse.ops.selinv_grad.SparseSelectedInverseGrad`."""
    return _objmode_binary(
        functools.partial(host_selinv_vjp, op.pattern), get_numba_type(node.outputs[0].type)
    )


@numba_funcify.register(OneParameterLogDet)
def numba_funcify_OneParameterLogDet(op, node, **kwargs):
    """Numba implementation of :class:`~pymc_sparse.ops.table.OneParameterLogDet`."""
    family, derivative = op.family, op.derivative

    def evaluate(alpha):
        return np.asarray(family.evaluate(alpha, derivative), dtype=np.float64)

    return _objmode_unary(evaluate, get_numba_type(node.outputs[0].type))


# ----------------------------------------------------------- loops over the lower triangle
@numba.njit(cache=False)
def _check(indptr, indices, nnz_of, n_of):  # pragma: no cover - compiled
    if nnz_of >= 0 and nnz_of != indices.shape[0]:
        raise ValueError("sparse Op: `data` length differs from the pattern's nnz")
    if n_of != indptr.shape[0] - 1:
        raise ValueError("sparse Op: vector length differs from the matrix order n")


@numba.njit(cache=False)
def _matvec(data, x, indptr, indices):  # pragma: no cover - compiled
    _check(indptr, indices, data.shape[0], x.shape[0])
    y = np.zeros_like(x)
    if x.ndim == 1:
        lower_matvec_into(data, x, indptr, indices, y)
    else:
        xt = np.ascontiguousarray(x.T)
        yt = np.zeros_like(xt)
        for c in range(xt.shape[0]):
            lower_matvec_into(data, xt[c], indptr, indices, yt[c])
        y[...] = yt.T
    return y


@numba.njit(cache=False)
def _pair_into(u, v, indptr, indices, e):  # pragma: no cover - compiled
    n = indptr.shape[0] - 1
    for j in range(n):
        uj = u[j]
        vj = v[j]
        for k in range(indptr[j], indptr[j + 1]):
            i = indices[k]
            if i == j:
                e[k] += uj * vj
            else:
                e[k] += u[i] * vj + uj * v[i]


@numba.njit(cache=False)
def _pair_product(u, v, indptr, indices):  # pragma: no cover - compiled
    _check(indptr, indices, -1, u.shape[0])
    _check(indptr, indices, -1, v.shape[0])
    e = np.zeros(indices.shape[0])
    if u.ndim == 1:
        _pair_into(u, v, indptr, indices, e)
    else:
        ut, vt = np.ascontiguousarray(u.T), np.ascontiguousarray(v.T)
        for c in range(ut.shape[0]):
            _pair_into(ut[c], vt[c], indptr, indices, e)
    return e


@numba_funcify.register(SparseMatVec)
def numba_funcify_SparseMatVec(op, node, **kwargs):
    """Numba implementation of :class:`~pymc_sparse.ops.quadform.SparseMatVec`."""
    return _matvec


@numba_funcify.register(SparsePairProduct)
def numba_funcify_SparsePairProduct(op, node, **kwargs):
    """Numba implementation of :class:`~pymc_sparse.ops.quadform.SparsePairProduct`."""
    return _pair_product


@numba_funcify.register(SparseQuadForm)
def numba_funcify_SparseQuadForm(op, node, **kwargs):
    """Numba implementation of :class:`~pymc_sparse.ops.quadform.SparseQuadForm`."""
    if node.inputs[1].type.ndim == 1:

        @numba_njit
        def quad_form_vector(data, x, indptr, indices):
            _check(indptr, indices, data.shape[0], x.shape[0])
            y = np.zeros_like(x)
            tot = lower_matvec_into(data, x, indptr, indices, y)
            return np.asarray(tot), y

        return quad_form_vector

    @numba_njit
    def quad_form_matrix(data, x, indptr, indices):
        y = _matvec(data, x, indptr, indices)
        return (x * y).sum(axis=0), y

    return quad_form_matrix


# ------------------------------------------------------------- per-component zero-sum map
@numba.njit(cache=False)
def _zero_sum_sums(v, free, comp, gather, t):  # pragma: no cover - compiled
    """Component sums of the free values (``v[j]``, or ``v[free[j]]`` if ``gather``).

    Consecutive values of one component are summed in four registers (a sum through
    ``t`` in memory waits on a store at every step, one register on the previous add):
    the loop of the C kernel.
    """
    t[:] = 0.0
    nf = free.shape[0]
    cur = -1
    a0 = a1 = a2 = a3 = 0.0
    j = 0
    while j < nf:
        c = comp[j]
        if c != cur:
            if cur >= 0:
                t[cur] += (a0 + a1) + (a2 + a3)
            cur = c
            a0 = a1 = a2 = a3 = 0.0
        if j + 3 < nf and comp[j + 3] == c and comp[j + 1] == c and comp[j + 2] == c:
            # four independent sums: the add latency, not a chain, bounds the loop
            if gather:
                a0 += v[free[j]]
                a1 += v[free[j + 1]]
                a2 += v[free[j + 2]]
                a3 += v[free[j + 3]]
            else:
                a0 += v[j]
                a1 += v[j + 1]
                a2 += v[j + 2]
                a3 += v[j + 3]
            j += 4
        else:
            a0 += v[free[j]] if gather else v[j]
            j += 1
    if cur >= 0:
        t[cur] += (a0 + a1) + (a2 + a3)


@numba.njit(cache=False)
def _component_terms(kind, s, m, vp):  # pragma: no cover - compiled
    """``(shift of the free values, pivot's output)`` of one component: ``pms_zs_terms``.

    ``s`` the sum of its free values (kinds 0, 1, 3), ``vp`` the value at its pivot (kinds
    1, 2), ``m`` its size; kind 0 backward, 1 backward adjoint, 2 forward, 3 forward
    adjoint.
    """
    r = np.sqrt(m)
    if kind == 0:
        return -(s / (r + m)), -s / r
    if kind == 1:
        return -s / (r + m) - vp / r, 0.0
    if kind == 2:
        return (-vp * r) / (r + m), 0.0
    return 0.0, -(s / (r + m)) * r


@numba.njit(cache=False)
def _zero_sum_backward(v, o, free, comp, pivots, sizes, t):  # pragma: no cover - compiled
    if free.shape[0] + pivots.shape[0] < o.shape[0]:
        o[:] = 0.0  # nodes fixed at 0
    _zero_sum_sums(v, free, comp, False, t)
    for c in range(pivots.shape[0]):
        t[c], o[pivots[c]] = _component_terms(0, t[c], sizes[c], 0.0)
    for j in range(free.shape[0]):
        c = comp[j]
        o[free[j]] = v[j] + t[c] if c >= 0 else v[j]


@numba.njit(cache=False)
def _zero_sum_gather(v, o, free, comp, t):  # pragma: no cover - compiled
    for j in range(free.shape[0]):
        c = comp[j]
        vj = v[free[j]]
        o[j] = vj + t[c] if c >= 0 else vj


@numba.njit(cache=False)
def _zero_sum_backward_adjoint(v, o, free, comp, pivots, sizes, t):  # pragma: no cover
    _zero_sum_sums(v, free, comp, True, t)
    for c in range(pivots.shape[0]):
        t[c] = _component_terms(1, t[c], sizes[c], v[pivots[c]])[0]
    _zero_sum_gather(v, o, free, comp, t)


@numba.njit(cache=False)
def _zero_sum_forward(v, o, free, comp, pivots, sizes, t):  # pragma: no cover - compiled
    for c in range(pivots.shape[0]):
        t[c] = _component_terms(2, 0.0, sizes[c], v[pivots[c]])[0]
    _zero_sum_gather(v, o, free, comp, t)


@numba.njit(cache=False)
def _zero_sum_forward_adjoint(v, o, free, comp, pivots, sizes, t):  # pragma: no cover
    if free.shape[0] + pivots.shape[0] < o.shape[0]:
        o[:] = 0.0
    _zero_sum_sums(v, free, comp, False, t)
    for j in range(free.shape[0]):
        o[free[j]] = v[j]
    for c in range(pivots.shape[0]):
        o[pivots[c]] = _component_terms(3, t[c], sizes[c], 0.0)[1]


# One row of each kind of ComponentZeroSum: the loops of its C kernel.
_ZERO_SUM_ROWS = {
    "backward": _zero_sum_backward,
    "backward_adjoint": _zero_sum_backward_adjoint,
    "forward": _zero_sum_forward,
    "forward_adjoint": _zero_sum_forward_adjoint,
}


# A connected graph (the common case) has one component whose pivot is the last node and
# whose free nodes are 0..n-2: the maps are then a sum and a shifted copy of contiguous
# memory, which vectorise, instead of gathers and scatters through ``free``/``comp``
# (see pymc_sparse.ops.zerosum.one_component).
@numba.njit(cache=False)
def _contiguous_sum(v, nf):  # pragma: no cover - compiled
    a0 = a1 = a2 = a3 = 0.0
    j = 0
    while j + 3 < nf:
        a0 += v[j]
        a1 += v[j + 1]
        a2 += v[j + 2]
        a3 += v[j + 3]
        j += 4
    while j < nf:
        a0 += v[j]
        j += 1
    return (a0 + a1) + (a2 + a3)


@numba.njit(cache=False)
def _contiguous_shift(v, o, nf, t):  # pragma: no cover - compiled
    for j in range(nf):
        o[j] = v[j] + t


@numba.njit(cache=False)
def _one_backward(v, o, free, comp, pivots, sizes, t):  # pragma: no cover - compiled
    nf = free.shape[0]
    shift, o[nf] = _component_terms(0, _contiguous_sum(v, nf), sizes[0], 0.0)
    _contiguous_shift(v, o, nf, shift)


@numba.njit(cache=False)
def _one_backward_adjoint(v, o, free, comp, pivots, sizes, t):  # pragma: no cover
    nf = free.shape[0]
    shift = _component_terms(1, _contiguous_sum(v, nf), sizes[0], v[nf])[0]
    _contiguous_shift(v, o, nf, shift)


@numba.njit(cache=False)
def _one_forward(v, o, free, comp, pivots, sizes, t):  # pragma: no cover - compiled
    nf = free.shape[0]
    _contiguous_shift(v, o, nf, _component_terms(2, 0.0, sizes[0], v[nf])[0])


@numba.njit(cache=False)
def _one_forward_adjoint(v, o, free, comp, pivots, sizes, t):  # pragma: no cover
    nf = free.shape[0]
    o[nf] = _component_terms(3, _contiguous_sum(v, nf), sizes[0], 0.0)[1]
    _contiguous_shift(v, o, nf, 0.0)


_ONE_COMPONENT_ROWS = {
    "backward": _one_backward,
    "backward_adjoint": _one_backward_adjoint,
    "forward": _one_forward,
    "forward_adjoint": _one_forward_adjoint,
}


@numba_funcify.register(ComponentZeroSum)
def numba_funcify_ComponentZeroSum(op, node, **kwargs):
    """Numba implementation of :class:`~pymc_sparse.ops.zerosum.ComponentZeroSum`."""
    rows = _ONE_COMPONENT_ROWS if one_component(node) else _ZERO_SUM_ROWS
    row = rows[op.kind]
    takes_free = op.kind in ("backward", "forward_adjoint")

    @numba_njit
    def lengths(value, n, free, comp, pivots, sizes):
        nn = n.item()
        nf, kp = free.shape[0], pivots.shape[0]
        if comp.shape[0] != nf or sizes.shape[0] != kp or nf + kp > nn:
            raise ValueError("zero-sum map: inconsistent layout arrays")
        in_len, out_len = (nf, nn) if takes_free else (nn, nf)
        if value.shape[-1] != in_len:
            raise ValueError("zero-sum map: the value's length differs from the layout's")
        return out_len, np.empty(max(kp, 1))

    if node.inputs[0].type.ndim == 1:

        @numba_njit
        def zero_sum_vector(value, n, free, comp, pivots, sizes):
            out_len, t = lengths(value, n, free, comp, pivots, sizes)
            o = np.empty(out_len)
            row(value, o, free, comp, pivots, sizes, t)
            return o

        return zero_sum_vector

    @numba_njit
    def zero_sum_matrix(value, n, free, comp, pivots, sizes):
        out_len, t = lengths(value, n, free, comp, pivots, sizes)
        o = np.empty((value.shape[0], out_len))
        for b in range(value.shape[0]):
            row(value[b], o[b], free, comp, pivots, sizes, t)
        return o

    return zero_sum_matrix
