r"""Selected inversion of a sparse Cholesky factor (Takahashi recursions).

Given a lower-triangular Cholesky factor :math:`L` of a symmetric positive-definite
matrix, :math:`LL^\top = PQP^\top`, the covariance :math:`Z = (LL^\top)^{-1}` satisfies
:math:`ZL = L^{-\top}`, which read column by column from the last one gives, for
:math:`i \ge j` with :math:`i` in the structure of column :math:`j` of :math:`L`,

.. math::

    Z_{ij} = \frac{\delta_{ij}}{L_{jj}^2}
             - \frac{1}{L_{jj}} \sum_{k > j,\; L_{kj} \neq 0} Z_{ik} L_{kj}.

Every :math:`Z_{ik}` on the right lies in the pattern of :math:`L + L^\top` (the
pattern of a Cholesky factor is chordal), so the recursion computes :math:`Z` on the
pattern of :math:`L` without ever touching an entry outside it.  That set contains
the pattern of :math:`Q`, which is all the gradient of :math:`\log\det Q` needs.

Two kernels evaluate it.  :func:`takahashi_simplicial` runs column by column on a CSC
factor; it is the reference.  :func:`takahashi_supernodal` runs on the supernodal
layout of CHOLMOD's factor, read in place (:func:`cholmod_supernodal_view`), with the
dense block operations in BLAS/LAPACK; it does twice the flops of the factorisation
and is what the factor cache uses for every supernodal factor.

This module holds only NumPy/numba kernels and a ctypes view of CHOLMOD's factor; it
imports nothing from PyTensor.  Every compiled function is cached on disk
(``cache=True``): BLAS is linked by symbol name, not by a pointer baked into the code.

References
----------
.. [1] Takahashi, K., Fagan, J. and Chen, M.-S. (1973). Formation of a sparse bus
   impedance matrix and its application to short circuit study. PICA Conference.
.. [2] Rue, H. and Martino, S. (2007). Approximate Bayesian inference for hierarchical
   Gaussian Markov random field models. J. Stat. Plan. Inference 137, 3177-3192.
"""

from __future__ import annotations

import ctypes
import threading
from typing import NamedTuple

import llvmlite.binding as _llvm
import numba
import numpy as np
from numba import types as _nt
from numba.extending import get_cython_function_address

__all__ = [
    "Supernodes",
    "cholmod_supernodal_view",
    "logdet_supernodal",
    "map_pattern_to_factor",
    "map_pattern_to_supernodes",
    "supernodal_to_csc",
    "supernodal_view_cached",
    "supernodes",
    "supernodes_from_csc",
    "takahashi_simplicial",
    "takahashi_supernodal",
]


@numba.njit(cache=True, nogil=True)
def takahashi_simplicial(indptr, indices, data):  # pragma: no cover - compiled
    """Selected inverse ``Z = (L L')^{-1}`` on the pattern of ``L``.

    Parameters
    ----------
    indptr, indices, data : ndarray
        Lower-triangular CSC factor with sorted rows, diagonal first in each column.

    Returns
    -------
    ndarray
        Values of ``Z`` in the same positions as ``data``.
    """
    n = indptr.size - 1
    Z = np.zeros_like(data)
    pos = np.full(n, -1, dtype=np.int64)
    acc = np.zeros(n, dtype=data.dtype)
    for j in range(n - 1, -1, -1):
        p0 = indptr[j]
        p1 = indptr[j + 1]
        ljj = data[p0]
        for p in range(p0 + 1, p1):
            pos[indices[p]] = p
            acc[indices[p]] = 0.0
        for p in range(p0 + 1, p1):
            k = indices[p]
            lkj = data[p]
            # Column k of Z holds Z[i, k] for rows i >= k; keep the rows in struct(j).
            for q in range(indptr[k], indptr[k + 1]):
                i = indices[q]
                pi = pos[i]
                if pi >= 0:
                    z = Z[q]
                    acc[i] += lkj * z
                    if i != k:
                        acc[k] += data[pi] * z
        s = 0.0
        for p in range(p0 + 1, p1):
            i = indices[p]
            zij = -acc[i] / ljj
            Z[p] = zij
            s += data[p] * zij
            pos[i] = -1
        Z[p0] = 1.0 / (ljj * ljj) - s / ljj
    return Z


@numba.njit(cache=True)
def _bisect(a, lo, hi, key):  # pragma: no cover - compiled
    """Position of ``key`` in the sorted slice ``a[lo:hi]``, or -1."""
    end = hi
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo if lo < end and a[lo] == key else -1


@numba.njit(cache=True)
def _locate(indptr, indices, rows, cols):  # pragma: no cover - compiled
    out = np.empty(rows.size, dtype=np.int64)
    for t in range(rows.size):
        r, c = max(rows[t], cols[t]), min(rows[t], cols[t])
        out[t] = _bisect(indices, indptr[c], indptr[c + 1], r)
    return out


def map_pattern_to_factor(pattern, perm, L_indptr, L_indices) -> np.ndarray:
    """Position in ``L.data`` of each stored entry of ``pattern`` after permutation.

    Parameters
    ----------
    pattern : SparsityPattern
        Lower-triangle pattern of ``Q``.
    perm : ndarray
        Fill-reducing permutation ``p`` with ``L L' = Q[p][:, p]``.
    L_indptr, L_indices : ndarray
        Structure of ``L`` with sorted rows.
    """
    pinv = np.empty_like(perm)
    pinv[perm] = np.arange(perm.size)
    out = _locate(
        np.asarray(L_indptr, np.int64),
        np.asarray(L_indices, np.int64),
        pinv[pattern.rows],
        pinv[pattern.cols],
    )
    if np.any(out < 0):  # pragma: no cover - would be a CHOLMOD contract violation
        raise RuntimeError("An entry of Q is missing from the pattern of its Cholesky factor.")
    return out


# -- supernodal kernel ---------------------------------------------------------------
#
# BLAS and LAPACK are reached through SciPy's Cython wrappers.  Each routine is
# registered with LLVM under a symbol of our own and declared as an external function,
# so the compiled code refers to it by name and is linked when it is loaded: numba can
# then cache it on disk.  (Embedding the ctypes function pointer instead bakes an address
# into the code, which numba refuses to cache.)

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


class Supernodes(NamedTuple):
    """Supernodal structure of a Cholesky factor and the gather plan of the kernel.

    Supernode ``J`` owns columns ``sup[J]:sup[J+1]`` (``k`` of them) and row indices
    ``s[pi[J]:pi[J+1]]`` (``m`` of them, sorted, the first ``k`` being its own columns).
    Its values are a column-major ``m x k`` block at ``x[px[J]:]`` (leading dimension
    ``m``), the layout of a CHOLMOD supernodal factor.

    The rows ``R`` below the diagonal block are split into *segments*, maximal runs of
    rows that are columns of one ancestor supernode ``K``; for a segment starting at
    position ``b0`` of ``R``, the rows ``R[b0:]`` are found in ``K``'s row list and
    stored as *runs* ``(t0, rel, len)``: rows ``R[t0:t0+len]`` sit at consecutive
    positions ``rel, rel+1, ...`` of ``K``.  These runs turn the gather of
    :math:`\\Sigma_{RR}` into contiguous copies.
    """

    sup: np.ndarray
    pi: np.ndarray
    px: np.ndarray
    s: np.ndarray
    snode: np.ndarray
    seg_ptr: np.ndarray
    seg_snode: np.ndarray
    seg_b0: np.ndarray
    seg_b1: np.ndarray
    run_ptr: np.ndarray
    run_t0: np.ndarray
    run_rel: np.ndarray
    run_len: np.ndarray
    max_r: int
    max_rk: int

    @property
    def n(self) -> int:
        return int(self.sup[-1])

    @property
    def xsize(self) -> int:
        return int(self.px[-1])


@numba.njit(cache=True)
def _gather_plan(sup, pi, s, fill, seg_ptr, seg_snode, seg_b0, seg_b1, run_ptr, run_t0, run_rel, run_len):  # pragma: no cover - compiled  # fmt: skip
    # Two passes share this code: with fill=False only the counts are returned.
    ns = sup.size - 1
    n = sup[ns]
    snode = np.empty(n, dtype=np.int64)
    for J in range(ns):
        for c in range(sup[J], sup[J + 1]):
            snode[c] = J
    nseg = 0
    nrun = 0
    for J in range(ns):
        if fill:
            seg_ptr[J] = nseg
        k = sup[J + 1] - sup[J]
        r = pi[J + 1] - pi[J] - k
        base = pi[J] + k
        b0 = 0
        while b0 < r:
            K = snode[s[base + b0]]
            b1 = b0 + 1
            while b1 < r and s[base + b1] < sup[K + 1]:
                b1 += 1
            if fill:
                seg_snode[nseg] = K
                seg_b0[nseg] = b0
                seg_b1[nseg] = b1
                run_ptr[nseg] = nrun
            # Merge R[b0:] into the sorted row list of K, starting at R[b0]'s own column.
            q = s[base + b0] - sup[K]
            mK = pi[K + 1] - pi[K]
            prev = -2
            for t in range(b0, r):
                row = s[base + t]
                while q < mK and s[pi[K] + q] < row:
                    q += 1
                if q == mK or s[pi[K] + q] != row:
                    return -1 - J, 0, snode  # not a valid supernodal elimination tree
                if q != prev + 1:
                    if fill:
                        run_t0[nrun] = t
                        run_rel[nrun] = q
                        run_len[nrun] = 1
                    nrun += 1
                elif fill:
                    run_len[nrun - 1] += 1
                prev = q
            nseg += 1
            b0 = b1
    if fill:
        seg_ptr[ns] = nseg
        run_ptr[nseg] = nrun
    return nseg, nrun, snode


def supernodes(sup, pi, px, s) -> Supernodes:
    """Build the :class:`Supernodes` plan from CHOLMOD-style supernodal arrays.

    Parameters
    ----------
    sup, pi, px, s : array_like of int
        First column of each supernode (length ``nsuper + 1``), pointers into the row
        indices ``s`` and into the values, and the row indices themselves.

    Raises
    ------
    ValueError
        If the structure is not that of a Cholesky factor (some row of a supernode is
        missing from the ancestor that owns it).
    """
    sup, pi, px, s = (np.ascontiguousarray(a, dtype=np.int64) for a in (sup, pi, px, s))
    e = np.empty(0, dtype=np.int64)
    nseg, nrun, snode = _gather_plan(sup, pi, s, False, e, e, e, e, e, e, e, e)
    if nseg < 0:
        raise ValueError(
            f"Supernode {-1 - nseg} has a row missing from the supernode that owns it: "
            "the arrays do not describe a Cholesky factor."
        )
    seg_ptr = np.empty(sup.size, dtype=np.int64)
    seg_snode, seg_b0, seg_b1 = (np.empty(nseg, dtype=np.int64) for _ in range(3))
    run_ptr = np.empty(nseg + 1, dtype=np.int64)
    run_t0, run_rel, run_len = (np.empty(nrun, dtype=np.int64) for _ in range(3))
    _gather_plan(
        sup, pi, s, True, seg_ptr, seg_snode, seg_b0, seg_b1, run_ptr, run_t0, run_rel, run_len
    )
    k = np.diff(sup)
    r = np.diff(pi) - k
    return Supernodes(
        sup, pi, px, s, snode, seg_ptr, seg_snode, seg_b0, seg_b1,
        run_ptr, run_t0, run_rel, run_len,
        int(r.max(initial=0)), int((r * k).max(initial=0)),
    )  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _gather_lower(J, k, r, sup, pi, px, s, seg_ptr, seg_snode, seg_b0, seg_b1, run_ptr, run_t0, run_rel, run_len, Z, SRR):  # pragma: no cover - compiled  # fmt: skip
    # Lower triangle of Sigma_RR (column-major, leading dimension r) from the blocks of
    # the ancestors, one contiguous copy per run of rows.
    base = pi[J] + k
    for g in range(seg_ptr[J], seg_ptr[J + 1]):
        K = seg_snode[g]
        mK = pi[K + 1] - pi[K]
        srcK = px[K] - sup[K] * mK
        q0 = run_ptr[g]
        q1 = run_ptr[g + 1]
        for b in range(seg_b0[g], seg_b1[g]):
            src = srcK + s[base + b] * mK
            dst = b * r
            while run_t0[q0] + run_len[q0] <= b:
                q0 += 1
            for q in range(q0, q1):
                t0 = run_t0[q]
                rel = run_rel[q]
                ln = run_len[q]
                if t0 < b:
                    rel += b - t0
                    ln -= b - t0
                    t0 = b
                d = dst + t0
                o = src + rel
                for u in range(ln):
                    SRR[d + u] = Z[o + u]


@numba.njit(cache=True, nogil=True)
def _small_supernode(k, m, p, x, Z, SRR, W, Y, y):  # pragma: no cover - compiled
    # The BLAS path below in plain loops, for supernodes too small for BLAS calls to pay.
    r = m - k
    ok = True
    # W = L_cc^{-1} (lower, leading dimension k) by forward substitution.
    for c in range(k):
        d = x[p + c * m + c]
        if not d > 0.0:
            ok = False
            d = 1.0
        W[c + c * k] = 1.0 / d
        for i in range(c + 1, k):
            acc = 0.0
            for l in range(c, i):
                acc += x[p + l * m + i] * W[l + c * k]
            W[i + c * k] = -acc / x[p + i * m + i]
    # Sigma_cc = W' W (lower triangle).
    for j in range(k):
        for i in range(j, k):
            acc = 0.0
            for l in range(i, k):
                acc += W[l + i * k] * W[l + j * k]
            Z[p + j * m + i] = acc
    if r == 0:
        return ok
    # Y = L_Rc W  (r x k, leading dimension r)
    for c in range(k):
        for t in range(r):
            acc = 0.0
            for l in range(c, k):
                acc += x[p + l * m + k + t] * W[l + c * k]
            Y[t + c * r] = acc
    # Sigma_Rc = -Sigma_RR Y with Sigma_RR's lower triangle; Sigma_cc -= Y' Sigma_Rc.
    for c in range(k):
        for t in range(r):
            y[t] = 0.0
        for u in range(r):
            yu = Y[u + c * r]
            y[u] += SRR[u + u * r] * yu
            for t in range(u + 1, r):
                a = SRR[t + u * r]
                y[t] += a * yu
                y[u] += a * Y[t + c * r]
        q = p + c * m + k
        for t in range(r):
            Z[q + t] = -y[t]
    for j in range(k):
        q = p + j * m + k
        for i in range(j, k):
            acc = 0.0
            for t in range(r):
                acc += Y[t + i * r] * Z[q + t]
            Z[p + j * m + i] -= acc
    return ok


@numba.njit(cache=True, nogil=True)
def _takahashi_supernodal(sup, pi, px, s, snode, seg_ptr, seg_snode, seg_b0, seg_b1, run_ptr, run_t0, run_rel, run_len, max_r, max_rk, x, Z, phases, small, nb):  # pragma: no cover - compiled  # fmt: skip
    # phases: bit 1 copies L in, bit 2 gathers Sigma_RR, bit 4 does the arithmetic.
    # Only the benchmark's breakdown switches phases off; the result is then meaningless.
    ns = sup.size - 1
    Y = np.empty(max(max_rk, 1))
    SRR = np.empty(max(max_r * max_r, 1))
    W = np.empty(64 * 64)
    yv = np.empty(max(max_r, 1))
    ch = np.array([76, 82, 78, 84], dtype=np.int8)  # 'L', 'R', 'N', 'T'
    iv = np.zeros(8, dtype=np.int32)  # k, m, r, info, rows and columns of a block
    dv = np.array([1.0, -1.0, 0.0])
    cL, cR, cN, cT = ch[0:].ctypes, ch[1:].ctypes, ch[2:].ctypes, ch[3:].ctypes
    pk, pm, pr, pinfo = iv[0:].ctypes, iv[1:].ctypes, iv[2:].ctypes, iv[3:].ctypes
    pbm, pbn = iv[4:].ctypes, iv[5:].ctypes
    one, mone, zero = dv[0:].ctypes, dv[1:].ctypes, dv[2:].ctypes
    status = 0
    for J in range(ns - 1, -1, -1):
        k = sup[J + 1] - sup[J]
        m = pi[J + 1] - pi[J]
        r = m - k
        p = px[J]
        if k * m * m <= small and k <= 64:
            if r > 0 and phases & 2:
                _gather_lower(J, k, r, sup, pi, px, s, seg_ptr, seg_snode, seg_b0, seg_b1, run_ptr, run_t0, run_rel, run_len, Z, SRR)  # fmt: skip
            if phases & 4:
                if not _small_supernode(k, m, p, x, Z, SRR, W, Y, yv):
                    status = 1
            continue
        iv[0] = k
        iv[1] = m
        iv[2] = r
        # Sigma_cc <- (L_cc L_cc')^{-1}, computed in place in Z from a copy of L_cc.
        if phases & 1:
            for c in range(k):
                q = p + c * m
                for i in range(c, k):
                    Z[q + i] = x[q + i]
        if phases & 4:
            _dpotri(cL, pk, Z[p:].ctypes, pm, pinfo)
            if iv[3] != 0:
                status = 1
        if r == 0:
            continue
        # Y = L_Rc L_cc^{-1}  (r x k, leading dimension r)
        if phases & 1:
            for c in range(k):
                q = p + c * m + k
                o = c * r
                for t in range(r):
                    Y[o + t] = x[q + t]
        if phases & 4:
            _dtrsm(cR, cL, cN, cN, pr, pk, one, x[p:].ctypes, pm, Y.ctypes, pr)
        if phases & 2:
            _gather_lower(J, k, r, sup, pi, px, s, seg_ptr, seg_snode, seg_b0, seg_b1, run_ptr, run_t0, run_rel, run_len, Z, SRR)  # fmt: skip
        if phases & 4:
            # Sigma_Rc = -Sigma_RR Y, written straight into the block of supernode J.
            _dsymm(cL, cL, pr, pk, mone, SRR.ctypes, pr, Y.ctypes, pr, zero, Z[p + k :].ctypes, pm)
            # Sigma_cc += Y' Sigma_RR Y = -Y' Sigma_Rc, lower triangle by block columns
            # of nb (a full product would cost k^2 r more flops).
            for j0 in range(0, k, nb):
                iv[4] = k - j0
                iv[5] = min(nb, k - j0)
                _dgemm(cT, cN, pbm, pbn, pr, mone, Y[j0 * r :].ctypes, pr, Z[p + k + j0 * m :].ctypes, pm, one, Z[p + j0 * m + j0 :].ctypes, pm)  # fmt: skip
    return status


def takahashi_supernodal(
    sn: Supernodes,
    x: np.ndarray,
    *,
    out: np.ndarray | None = None,
    phases: int = 7,
    small: int = 2048,
    nb: int = 128,
) -> np.ndarray:
    r"""Selected inverse ``Z = (L L')^{-1}`` of a supernodal factor, in the same layout.

    For a supernode with columns :math:`c` and rows :math:`R` below its diagonal block,
    with :math:`Y = L_{Rc} L_{cc}^{-1}`, the recursion of the module docstring reads,
    in blocks [3]_,

    .. math::

        Z_{Rc} = -Z_{RR}\, Y, \qquad
        Z_{cc} = (L_{cc} L_{cc}^\top)^{-1} - Y^\top Z_{Rc},

    where :math:`Z_{RR}` is already known (its entries belong to ancestor supernodes).
    The dense products run in BLAS (``dtrsm``, ``dsymm``, ``dgemm``) and LAPACK
    (``dpotri``); only the lower triangle of :math:`Z_{RR}` is gathered.

    Parameters
    ----------
    sn : Supernodes
        Structure and gather plan, from :func:`supernodes` or :func:`supernodes_from_csc`.
    x : ndarray
        Values of ``L`` in supernodal layout (length ``sn.xsize``).
    out : ndarray, optional
        A float64 array of ``sn.xsize`` entries to write the result into (its old
        contents are ignored).  Reusing one spares the page faults of a fresh array,
        which at n = 10^6 cost a sizeable part of the kernel's time.
    phases : int
        For benchmarks only: a bit mask of the phases to run (1 copy-in, 2 gather,
        4 arithmetic).  Anything but the default gives meaningless values.
    small : int
        Supernodes with ``k m^2 <= small`` (``k`` columns, ``m`` rows) are done in
        plain loops: for them the fixed cost of a BLAS call exceeds the arithmetic.
    nb : int
        Block width of the lower-triangle-only update of the diagonal block.

    Returns
    -------
    ndarray
        Values of ``Z`` at the positions of ``x``: the lower triangle of each diagonal
        block and the rectangle below it (the strict upper triangle of a diagonal block
        holds no meaning).  NaN everywhere if a diagonal block is singular.

    References
    ----------
    .. [3] Lin, L., Yang, C., Meza, J. C., Lu, J., Ying, L. and E, W. (2011). SelInv --
       an algorithm for selected inversion of a sparse symmetric matrix. ACM Trans.
       Math. Softw. 37(4), 40.
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    if x.shape != (sn.xsize,):
        raise ValueError(f"Expected {sn.xsize} supernodal values, got shape {x.shape}.")
    if out is None:
        # Allocated here: NumPy's zeros are lazily zeroed pages, numba's are memset.
        Z = np.zeros(x.size)
    elif out.dtype != np.float64 or out.shape != x.shape or not out.flags.c_contiguous:
        raise ValueError(f"`out` must be a contiguous float64 array of shape {x.shape}.")
    else:
        Z = out
    with _BLAS_THREADS:
        status = _takahashi_supernodal(*sn, x, Z, int(phases), int(small), int(nb))
    if status:
        Z[:] = np.nan
    return Z


@numba.njit(cache=True)
def _csc_positions(sup, pi, px, s):  # pragma: no cover - compiled
    ns = sup.size - 1
    n = sup[ns]
    indptr = np.empty(n + 1, dtype=np.int64)
    indptr[0] = 0
    for J in range(ns):
        m = pi[J + 1] - pi[J]
        for c in range(sup[J + 1] - sup[J]):
            j = sup[J] + c
            indptr[j + 1] = indptr[j] + m - c
    nnz = indptr[n]
    indices = np.empty(nnz, dtype=np.int64)
    to_x = np.empty(nnz, dtype=np.int64)
    for J in range(ns):
        m = pi[J + 1] - pi[J]
        for c in range(sup[J + 1] - sup[J]):
            o = indptr[sup[J] + c]
            for i in range(c, m):
                indices[o + i - c] = s[pi[J] + i]
                to_x[o + i - c] = px[J] + c * m + i
    return indptr, indices, to_x


def supernodal_to_csc(sn: Supernodes):
    """CSC structure of the lower factor and where each of its entries sits in ``x``.

    Returns
    -------
    indptr, indices, to_x : ndarray
        Column pointers and sorted row indices of ``L`` (diagonal first), and for each
        entry its position in the supernodal values, so ``data = x[to_x]``.
    """
    return _csc_positions(sn.sup, sn.pi, sn.px, sn.s)


@numba.njit(cache=True)
def _fundamental_supernodes(indptr, indices):  # pragma: no cover - compiled
    n = indptr.size - 1
    sup = np.empty(n + 1, dtype=np.int64)
    ns = 0
    for j in range(n):
        # Column j continues the supernode of j - 1 when struct(j - 1) = {j - 1} + struct(j):
        # the structure of a Cholesky factor is chordal, so equal counts suffice once
        # j is the first off-diagonal row of column j - 1.
        if (
            j > 0
            and indptr[j] - indptr[j - 1] == indptr[j + 1] - indptr[j] + 1
            and indptr[j] - indptr[j - 1] > 1
            and indices[indptr[j - 1] + 1] == j
        ):
            continue
        sup[ns] = j
        ns += 1
    sup[ns] = n
    sup = sup[: ns + 1].copy()
    pi = np.empty(ns + 1, dtype=np.int64)
    px = np.empty(ns + 1, dtype=np.int64)
    pi[0] = 0
    px[0] = 0
    for J in range(ns):
        m = indptr[sup[J] + 1] - indptr[sup[J]]
        pi[J + 1] = pi[J] + m
        px[J + 1] = px[J] + m * (sup[J + 1] - sup[J])
    s = np.empty(pi[ns], dtype=np.int64)
    for J in range(ns):
        p0 = indptr[sup[J]]
        for i in range(pi[J + 1] - pi[J]):
            s[pi[J] + i] = indices[p0 + i]
    return sup, pi, px, s


def supernodes_from_csc(indptr, indices):
    """Fundamental supernodes of a lower Cholesky factor given in CSC form.

    Parameters
    ----------
    indptr, indices : ndarray
        Structure of ``L`` with sorted rows, diagonal first in each column.

    Returns
    -------
    sn : Supernodes
    to_x : ndarray
        Position in the supernodal values of each CSC entry: pack with
        ``x = np.zeros(sn.xsize); x[to_x] = data`` and read back with ``Z[to_x]``.
    """
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    sn = supernodes(*_fundamental_supernodes(indptr, indices))
    ip, ix, to_x = supernodal_to_csc(sn)
    if not (np.array_equal(ip, indptr) and np.array_equal(ix, indices)):
        raise ValueError("The CSC structure is not that of a Cholesky factor.")
    return sn, to_x


@numba.njit(cache=True)
def _locate_supernodal(sup, pi, px, s, snode, rows, cols):  # pragma: no cover - compiled
    out = np.empty(rows.size, dtype=np.int64)
    for t in range(rows.size):
        r, c = max(rows[t], cols[t]), min(rows[t], cols[t])
        J = snode[c]
        k = _bisect(s, pi[J], pi[J + 1], r)
        # Column-major dense block of supernode J: (row position, column offset).
        out[t] = -1 if k < 0 else px[J] + (c - sup[J]) * (pi[J + 1] - pi[J]) + k - pi[J]
    return out


def map_pattern_to_supernodes(pattern, perm, sn: Supernodes) -> np.ndarray:
    """Position in the supernodal values of each stored entry of ``pattern``.

    Parameters
    ----------
    pattern : SparsityPattern
        Lower-triangle pattern of ``Q``.
    perm : ndarray
        Fill-reducing permutation ``p`` with ``L L' = Q[p][:, p]``.
    sn : Supernodes
        Structure of ``L``.
    """
    pinv = np.empty_like(perm)
    pinv[perm] = np.arange(perm.size)
    out = _locate_supernodal(
        sn.sup, sn.pi, sn.px, sn.s, sn.snode, pinv[pattern.rows], pinv[pattern.cols]
    )
    if np.any(out < 0):  # pragma: no cover - would be a CHOLMOD contract violation
        raise RuntimeError("An entry of Q is missing from the pattern of its Cholesky factor.")
    return out


# -- reading a CHOLMOD supernodal factor in place ------------------------------------
#
# scikit-sparse 0.4 keeps the cholmod_factor* in a C attribute of its Factor object,
# right after the reference to its Common object; the struct layout below is that of
# cholmod_factor in CHOLMOD 3.x (SuiteSparse 5, /usr/include/suitesparse/cholmod_core.h).
# Every assumption is checked before a pointer is followed, and any mismatch returns
# None so the caller falls back to the explicit (slower) ``Factor.L()``.


class _CholmodFactor(ctypes.Structure):
    _fields_ = [  # noqa: RUF012 - ctypes declaration
        ("n", ctypes.c_size_t),
        ("minor", ctypes.c_size_t),
        ("Perm", ctypes.c_void_p),
        ("ColCount", ctypes.c_void_p),
        ("IPerm", ctypes.c_void_p),
        ("nzmax", ctypes.c_size_t),
        ("p", ctypes.c_void_p),
        ("i", ctypes.c_void_p),
        ("x", ctypes.c_void_p),
        ("z", ctypes.c_void_p),
        ("nz", ctypes.c_void_p),
        ("next", ctypes.c_void_p),
        ("prev", ctypes.c_void_p),
        ("nsuper", ctypes.c_size_t),
        ("ssize", ctypes.c_size_t),
        ("xsize", ctypes.c_size_t),
        ("maxcsize", ctypes.c_size_t),
        ("maxesize", ctypes.c_size_t),
        ("super", ctypes.c_void_p),
        ("pi", ctypes.c_void_p),
        ("px", ctypes.c_void_p),
        ("s", ctypes.c_void_p),
        ("ordering", ctypes.c_int),
        ("is_ll", ctypes.c_int),
        ("is_super", ctypes.c_int),
        ("is_monotonic", ctypes.c_int),
        ("itype", ctypes.c_int),
        ("xtype", ctypes.c_int),
        ("dtype", ctypes.c_int),
    ]


def _factor_struct(chol, n: int):
    try:
        from sksparse.cholmod import Factor as _SkFactor
    except ImportError:  # pragma: no cover
        return None
    if type(chol) is not _SkFactor or _SkFactor.__basicsize__ != 4 * ctypes.sizeof(ctypes.c_void_p):
        return None
    words = (ctypes.c_void_p * 4).from_address(id(chol))
    if words[2] != id(getattr(chol, "_common", None)) or not words[3]:
        return None
    f = _CholmodFactor.from_address(words[3])
    if f.n != n or f.xtype != 1 or f.dtype != 0 or f.itype not in (0, 2):
        return None
    return f


def cholmod_supernodal_view(chol, n: int, plan: Supernodes | None = None):
    """Supernodal plan and values of a numeric CHOLMOD factor, read in place.

    Parameters
    ----------
    chol : sksparse.cholmod.Factor
        A successful numeric factorisation.
    n : int
        Its order (checked against the C struct).
    plan : Supernodes, optional
        The plan of an earlier factor from the same symbolic analysis; reused when the
        sizes match, so the integer arrays are read and analysed once per pattern.

    Returns
    -------
    tuple or None
        ``(plan, x)`` with ``x`` a view (never written) of the values; it keeps
        ``chol`` alive and is valid until ``chol`` is refactorised or converted to
        another kind of factor.  None when the factor is simplicial or its layout is
        not the one this module knows.
    """
    f = _factor_struct(chol, n)
    if f is None or not (f.is_super and f.is_ll) or f.minor != n or not f.x:
        return None
    ns = int(f.nsuper)
    if not (
        plan is not None
        and plan.sup.size == ns + 1
        and plan.s.size == f.ssize
        and plan.n == n
        and plan.xsize <= f.xsize
    ):
        it = ctypes.c_int32 if f.itype == 0 else ctypes.c_int64

        def ints(ptr, size):
            a = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(it)), (size,))
            return a.astype(np.int64)

        sup = ints(f.super, ns + 1)
        pi = ints(f.pi, ns + 1)
        px = ints(f.px, ns + 1)
        if sup[-1] != n or px[-1] > f.xsize or pi[-1] > f.ssize:
            return None
        plan = supernodes(sup, pi, px, ints(f.s, int(pi[-1])))
    return plan, np.asarray(_Buffer(f.x, plan.xsize, chol))


class _Buffer:
    # Exposes CHOLMOD's values to NumPy; the array's base keeps the factor alive.
    def __init__(self, address: int, size: int, owner):
        self.owner = owner
        self.__array_interface__ = {
            "shape": (size,),
            "typestr": "<f8",
            "data": (address, False),
            "version": 3,
        }


def supernodal_view_cached(chol, n: int, holder):
    """:func:`cholmod_supernodal_view` keeping the plan on a per-pattern record.

    Parameters
    ----------
    chol : sksparse.cholmod.Factor or None
    n : int
    holder : object
        Has ``lock``, ``supernodes`` (the plan, or None) and the position maps
        ``q_to_x`` and ``l_to_x``, which are reset when the plan is replaced.
    """
    if chol is None:
        return None
    view = cholmod_supernodal_view(chol, n, holder.supernodes)
    if view is not None and view[0] is not holder.supernodes:
        with holder.lock:
            holder.supernodes = view[0]
            holder.q_to_x = holder.l_to_x = None
    return view


@numba.njit(cache=True, nogil=True)
def _logdet_supernodal(sup, pi, px, x):  # pragma: no cover - compiled
    acc = 0.0
    for J in range(sup.size - 1):
        m = pi[J + 1] - pi[J]
        for c in range(sup[J + 1] - sup[J]):
            acc += np.log(x[px[J] + c * (m + 1)])
    return 2.0 * acc


def logdet_supernodal(sn: Supernodes, x: np.ndarray) -> float:
    """:math:`\\log\\det(LL^\\top) = 2\\sum_j \\log L_{jj}` from supernodal values.

    Reads the diagonal in place (about ``n`` loads), where scikit-sparse's ``logdet()``
    goes through a converted copy of the factor's diagonal.
    """
    return float(_logdet_supernodal(sn.sup, sn.pi, sn.px, x))
