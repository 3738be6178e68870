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

Importing this module registers the dispatch (PyTensor imports its Numba backend
lazily, so this module imports it explicitly).
"""

from __future__ import annotations

import functools

import numba
from pytensor.link.numba.dispatch import numba_funcify
from pytensor.link.numba.dispatch.basic import get_numba_type, numba_njit

from pymc_sparse.linalg.host import host_logdet, host_selinv, host_selinv_vjp, host_solve
from pymc_sparse.ops.logdet import SparseLogDet
from pymc_sparse.ops.selinv import SparseSelectedInverse
from pymc_sparse.ops.selinv_grad import SparseSelectedInverseGrad
from pymc_sparse.ops.solve import SparseSolve

__all__ = [
    "numba_funcify_SparseLogDet",
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
