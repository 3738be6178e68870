r"""Numba dispatch of the sparse Ops (PyTensor's NUMBA linker, nutpie's default backend).

CHOLMOD is a C library reached through scikit-sparse's Python objects, which compiled
Numba code cannot call, so each Op runs its host function in a ``numba.objmode``
block: the compiled graph hands the ``O(nnz)`` value vector to Python, which asks the
shared factor cache :data:`pymc_sparse.cholmod.CACHE` (so the log-density and its
gradient at one point share one factorisation, exactly as with the C and JAX
backends), and gets back the scalar, vector or matrix result.

Without these registrations PyTensor falls back to object mode on the Ops' ``perform``
with a warning per Op; the registrations do the same work without the warning and
with the callbacks' NaN policy (a matrix that is not positive definite gives NaN).
The gradient graphs contain only these Ops and ordinary tensor Ops, so nutpie's
``compile_pymc_model(model, backend="numba")`` compiles every other Op to machine code.

Importing this module registers the dispatch (PyTensor imports its Numba backend
lazily, so this module imports it explicitly).
"""

from __future__ import annotations

import numba
import numpy as np
from pytensor.link.numba.dispatch import numba_funcify
from pytensor.link.numba.dispatch.basic import get_numba_type, numba_njit

from pymc_sparse.cholmod import CACHE
from pymc_sparse.ops.logdet import SparseLogDet
from pymc_sparse.ops.selinv import SparseSelectedInverse
from pymc_sparse.ops.selinv_grad import SparseSelectedInverseGrad
from pymc_sparse.ops.solve import SparseSolve

__all__ = [
    "host_logdet",
    "host_selinv",
    "host_solve",
    "numba_funcify_SparseLogDet",
    "numba_funcify_SparseSelectedInverse",
    "numba_funcify_SparseSelectedInverseGrad",
    "numba_funcify_SparseSolve",
]


def _nan_on_error(fn, shape):
    # Same policy as the JAX callbacks: no exception escapes into compiled code.
    def guarded(*args):
        try:
            return fn(*args)
        except NotImplementedError:
            raise
        except Exception:
            return np.full(shape(*args), np.nan)

    return guarded


def host_logdet(pattern, data):
    """``log det Q`` as a 0-d array, NaN if not positive definite."""
    f = _nan_on_error(lambda d: np.asarray(CACHE.factor(pattern, d).logdet()), lambda d: ())
    return np.asarray(f(np.asarray(data, dtype=np.float64)), dtype=np.float64)


def host_selinv(pattern, data):
    """Return the selected inverse on the stored pattern (a copy: the cache keeps its own)."""
    f = _nan_on_error(
        lambda d: CACHE.factor(pattern, d).selected_inverse().copy(), lambda d: (pattern.nnz,)
    )
    return f(np.asarray(data, dtype=np.float64))


def host_solve(pattern, data, b):
    """``Q^{-1} b`` for a vector or matrix ``b``."""
    f = _nan_on_error(lambda d, v: CACHE.factor(pattern, d).solve(v), lambda d, v: v.shape)
    return f(np.asarray(data, dtype=np.float64), np.asarray(b, dtype=np.float64))


@numba_funcify.register(SparseLogDet)
def numba_funcify_SparseLogDet(op, node, **kwargs):
    """Numba implementation of :class:`~pymc_sparse.ops.logdet.SparseLogDet`."""
    pattern = op.pattern
    ret_sig = get_numba_type(node.outputs[0].type)

    def py_logdet(data):
        return host_logdet(pattern, data)

    @numba_njit
    def sparse_logdet(data):
        with numba.objmode(ret=ret_sig):
            ret = py_logdet(data)
        return ret

    return sparse_logdet


@numba_funcify.register(SparseSelectedInverse)
def numba_funcify_SparseSelectedInverse(op, node, **kwargs):
    """Numba implementation of :class:`~pymc_sparse.ops.selinv.SparseSelectedInverse`."""
    pattern = op.pattern
    ret_sig = get_numba_type(node.outputs[0].type)

    def py_selinv(data):
        return host_selinv(pattern, data)

    @numba_njit
    def sparse_selected_inverse(data):
        with numba.objmode(ret=ret_sig):
            ret = py_selinv(data)
        return ret

    return sparse_selected_inverse


@numba_funcify.register(SparseSolve)
def numba_funcify_SparseSolve(op, node, **kwargs):
    """Numba implementation of :class:`~pymc_sparse.ops.solve.SparseSolve`."""
    pattern = op.pattern
    ret_sig = get_numba_type(node.outputs[0].type)

    def py_solve(data, b):
        return host_solve(pattern, data, b)

    @numba_njit
    def sparse_solve(data, b):
        with numba.objmode(ret=ret_sig):
            ret = py_solve(data, b)
        return ret

    return sparse_solve


def host_selinv_vjp(pattern, data, sbar):
    """Cotangent of the stored values from a cotangent of the selected inverse."""

    def vjp(d, s):
        f = CACHE.factor(pattern, d)
        return f.selected_inverse_vjp(s) if f.ok else np.full(pattern.nnz, np.nan)

    f = _nan_on_error(vjp, lambda d, s: (pattern.nnz,))
    return f(np.asarray(data, dtype=np.float64), np.asarray(sbar, dtype=np.float64))


@numba_funcify.register(SparseSelectedInverseGrad)
def numba_funcify_SparseSelectedInverseGrad(op, node, **kwargs):
    """Numba implementation of :class:`~pymc_sparse.ops.selinv_grad.SparseSelectedInverseGrad`."""
    pattern = op.pattern
    ret_sig = get_numba_type(node.outputs[0].type)

    def py_vjp(data, sbar):
        return host_selinv_vjp(pattern, data, sbar)

    @numba_njit
    def sparse_selected_inverse_grad(data, sbar):
        with numba.objmode(ret=ret_sig):
            ret = py_vjp(data, sbar)
        return ret

    return sparse_selected_inverse_grad
