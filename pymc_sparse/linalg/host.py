"""Host functions of the sparse Ops: NumPy in, NumPy out, NaN on failure, never raise.

``Op.perform``, the Numba object-mode bodies and the JAX callbacks all call these, so the
failure policy is written once: a matrix that is not positive definite (or any other
numerical failure inside CHOLMOD or a kernel) gives NaN of the right shape, which the
samplers treat as a rejected point.  ``NotImplementedError`` still propagates: a missing
feature fails the same way at every point, and NaN would hide it.
"""

from __future__ import annotations

import logging

import numpy as np

from pymc_sparse.linalg.cholmod import CACHE
from pymc_sparse.linalg.pattern import SparsityPattern

__all__ = [
    "host_logdet",
    "host_logdet_selinv",
    "host_selinv",
    "host_selinv_vjp",
    "host_solve",
    "nan_guard",
]

_log = logging.getLogger("pymc_sparse")
_F64 = np.float64


def nan_guard(fn, shape):
    """Return ``fn()``, or a NaN array of ``shape`` if it raises anything but NotImplemented."""
    try:
        return fn()
    except NotImplementedError:
        raise
    except Exception:  # an exception inside compiled code or a JAX callback ends the program
        _log.warning("pymc_sparse host function failed; returning NaN.", exc_info=True)
        return np.full(shape, np.nan)


def _vec(pattern: SparsityPattern, data) -> np.ndarray:
    return np.asarray(data, dtype=_F64).reshape(pattern.nnz)


def host_logdet(pattern: SparsityPattern, data) -> np.ndarray:
    """Return ``log det Q`` as a 0-d array, NaN if not positive definite."""
    d = _vec(pattern, data)
    return np.asarray(nan_guard(lambda: CACHE.factor(pattern, d).logdet(), ()), dtype=_F64)


def host_logdet_selinv(pattern: SparsityPattern, data) -> tuple[float, np.ndarray]:
    """Return ``log det Q`` and the selected inverse, from one factor."""
    d = _vec(pattern, data)

    def both():
        f = CACHE.factor(pattern, d)  # one factor for both, whatever the cache evicts meanwhile
        return np.concatenate([[f.logdet()], f.selected_inverse()])

    out = nan_guard(both, (pattern.nnz + 1,))
    return float(out[0]), out[1:]


def host_selinv(pattern: SparsityPattern, data) -> np.ndarray:
    """Return the selected inverse on the stored pattern (a copy: the cache keeps its own)."""
    d = _vec(pattern, data)
    return nan_guard(lambda: CACHE.factor(pattern, d).selected_inverse().copy(), (pattern.nnz,))


def host_solve(pattern: SparsityPattern, data, b) -> np.ndarray:
    """Return ``Q^{-1} b`` for a vector or an ``(n, k)`` matrix ``b``."""
    d = _vec(pattern, data)
    b = np.asarray(b, dtype=_F64)
    return nan_guard(lambda: CACHE.factor(pattern, d).solve(b), b.shape)


def host_selinv_vjp(pattern: SparsityPattern, data, sbar) -> np.ndarray:
    """Return the cotangent of the stored values from a cotangent of the selected inverse."""
    d = _vec(pattern, data)
    s = np.asarray(sbar, dtype=_F64).reshape(pattern.nnz)

    def vjp():
        f = CACHE.factor(pattern, d)
        return f.selected_inverse_vjp(s) if f.ok else np.full(pattern.nnz, np.nan)

    return nan_guard(vjp, (pattern.nnz,))
