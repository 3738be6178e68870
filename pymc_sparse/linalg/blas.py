r"""BLAS and LAPACK for numba kernels, and a guard on SciPy's OpenBLAS thread pool.

BLAS and LAPACK are reached through SciPy's Cython wrappers.  Each routine is
registered with LLVM under a symbol of our own and declared as an external function,
so the compiled code refers to it by name and is linked when it is loaded: numba can
then cache it on disk.  (Embedding the ctypes function pointer instead bakes an address
into the code, which numba refuses to cache.)

Used by the supernodal Takahashi kernel (:mod:`pymc_sparse.linalg.takahashi`) and its
adjoint (:mod:`pymc_sparse.linalg.takahashi_adjoint`); imports nothing from PyTensor.
"""

from __future__ import annotations

import ctypes
import threading

import llvmlite.binding as _llvm
from numba import types as _nt
from numba.extending import get_cython_function_address

__all__ = ["_BLAS_THREADS", "_dgemm", "_dpotri", "_dsymm", "_dtrsm"]


_CHAR = _nt.CPointer(_nt.int8)
_INT = _nt.CPointer(_nt.int32)
_DBL = _nt.CPointer(_nt.float64)


def _bind(module: str, name: str, *args):
    symbol = f"pymc_sparse_{name}"
    _llvm.add_symbol(symbol, get_cython_function_address(f"scipy.linalg.{module}", name))
    return _nt.ExternalFunction(symbol, _nt.void(*args))


_C, _I, _D = _CHAR, _INT, _DBL
_dtrsm = _bind("cython_blas", "dtrsm", _C, _C, _C, _C, _I, _I, _D, _D, _I, _D, _I)
_dsymm = _bind("cython_blas", "dsymm", _C, _C, _I, _I, _D, _D, _I, _D, _I, _D, _D, _I)
_dgemm = _bind("cython_blas", "dgemm", _C, _C, _I, _I, _I, _D, _D, _I, _D, _I, _D, _D, _I)
_dpotri = _bind("cython_lapack", "dpotri", _C, _I, _D, _I, _I)


def _openblas_thread_setters():
    # SciPy's wheels bundle their own OpenBLAS with its own thread pool.  Beside the
    # pool of the BLAS CHOLMOD uses, two busy-waiting pools on a few shared cores made
    # the kernel 5-10x slower, so it runs single-threaded (see docs/performance).
    import glob
    import os

    import scipy

    libdir = os.path.join(os.path.dirname(scipy.__file__), "..", "scipy.libs")
    libs = glob.glob(os.path.join(libdir, "*openblas*"))
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
            get, put = lib.scipy_openblas_get_num_threads, lib.scipy_openblas_set_num_threads
        except (OSError, AttributeError):
            continue
        get.restype = ctypes.c_int
        put.argtypes = [ctypes.c_int]
        return get, put
    return None


class _BlasThreads:
    """Context manager limiting SciPy's OpenBLAS threads while any kernel runs."""

    def __init__(self, threads: int = 1):
        self.threads = threads
        self.active = 0
        self.saved = None
        self.lock = threading.Lock()
        self.setters = _openblas_thread_setters()

    def __enter__(self):
        if self.setters is not None:
            with self.lock:
                if self.active == 0:
                    self.saved = self.setters[0]()
                    self.setters[1](self.threads)
                self.active += 1

    def __exit__(self, *exc):
        if self.setters is not None:
            with self.lock:
                self.active -= 1
                if self.active == 0 and self.saved is not None:
                    self.setters[1](self.saved)


_BLAS_THREADS = _BlasThreads(1)
