r"""Reverse-mode derivative of the selected inverse, on the pattern of the Cholesky factor.

(About 600 lines: two adjoint sweeps, the Takahashi recursion's and the factorisation's,
each column by column and supernode by supernode, with the block gathers and scatters
they share; one derivation, read best next to its four kernels.)

Problem
-------
Let :math:`s = \mathcal P(Q^{-1})` be the entries of :math:`S = Q^{-1}` on the stored
(lower-triangle) pattern of :math:`Q`, and :math:`\bar s` a cotangent of it.  The
closed form of the pullback,

.. math:: \bar q_e = -w_e\,(S \bar B S)_{ij}, \qquad e = (i, j),

(:math:`\bar B` the symmetric matrix built from :math:`\bar s`, :math:`w_e` = 1 on the
diagonal and 2 off it) needs :math:`S` outside the pattern: :math:`S\bar B S` is dense.
Instead we differentiate the *algorithm* that produced :math:`s`,

.. math:: q \xrightarrow{\ \text{Cholesky}\ } L \xrightarrow{\ \text{Takahashi}\ } Z
          = \mathcal P_L\bigl((LL^\top)^{-1}\bigr) \xrightarrow{\ \text{gather}\ } s,

where :math:`LL^\top = PQP^\top`.  Every step reads and writes only entries on the
pattern of :math:`L` (chordal, so closed under the index sets the recursions use), and
so does each reverse sweep:

1. gather: :math:`\bar Z` = :math:`\bar s` scattered to the positions of :math:`Q`'s
   entries in :math:`L`;
2. :func:`takahashi_adjoint`: the Takahashi recursion run backwards (column
   :math:`0 \to n-1`) gives :math:`\bar L` on the pattern of :math:`L`;
3. :func:`cholesky_adjoint`: the left-looking Cholesky run backwards (column
   :math:`n-1 \to 0`) gives :math:`\bar A` for the stored lower values of
   :math:`A = PQP^\top`; its entries at :math:`Q`'s positions are :math:`\bar q`.

Because the Cholesky reads each stored lower value once, step 3 already returns the
derivative with respect to the *stored* values (a perturbation of a stored
off-diagonal value moves both symmetric entries): no weights appear anywhere.

Both sweeps visit exactly the index pairs of their forward recursion, so they cost a
small constant times the forward flops, :math:`\sum_j |\mathcal L_j|^2`, and hold
:math:`O(\mathrm{nnz}(L))` memory.  The derivation is written out in
``docs/theory/selinv_gradient.md``.

This module holds only NumPy/numba kernels; it imports nothing from PyTensor.

Length: about 600 lines, one concept: the adjoint of the selected inversion, simplicial
and supernodal, each the reverse sweep of its forward kernel in
:mod:`pymc_sparse.linalg.takahashi` (which shares the supernode plan,
:mod:`pymc_sparse.linalg.supernodes`); half of it is the compiled kernels' loops.

References
----------
.. [1] Takahashi, K., Fagan, J. and Chen, M.-S. (1973). Formation of a sparse bus
   impedance matrix and its application to short circuit study. PICA Conference.
.. [2] Murray, I. (2016). Differentiation of the Cholesky decomposition.
   arXiv:1602.07527.
.. [3] Giles, M. (2008). Collected matrix derivative results for forward and reverse
   mode algorithmic differentiation. LNCSE 64, 35-44.
.. [4] Andersen, M. S., Dahl, J. and Vandenberghe, L. (2013). Logarithmic barriers
   for sparse matrix cones. Optim. Methods Softw. 28, 396-423.
"""

from __future__ import annotations

import numba
import numpy as np

# The forward kernel's guard that keeps SciPy's OpenBLAS single-threaded while a kernel
# runs (one shared, reference-counted guard: two independent ones would restore each
# other's settings at the wrong time).
from pymc_sparse.linalg.blas import _BLAS_THREADS

# The supernode partition is the forward kernel's (one partitioner, issue 15).
from pymc_sparse.linalg.supernodes import supernode_starts as csc_supernodes
from pymc_sparse.linalg.takahashi import map_pattern_to_factor

__all__ = [
    "cholesky_adjoint",
    "cholesky_adjoint_supernodal",
    "csc_supernodes",
    "selected_inverse_vjp",
    "selected_inverse_vjp_factor",
    "takahashi_adjoint",
    "takahashi_adjoint_supernodal",
]


@numba.njit(cache=True, nogil=True)
def takahashi_adjoint(indptr, indices, data, Z, Zbar):  # pragma: no cover - compiled
    r"""Pullback of the Takahashi recursion :math:`L \mapsto Z = \mathcal P_L((LL^\top)^{-1})`.

    Forward, for column :math:`j` with off-diagonal structure :math:`\mathcal L_j`,
    :math:`l = L_{\mathcal L_j j}`, :math:`d = L_{jj}` and the (already computed)
    symmetric block :math:`Z_J = Z_{\mathcal L_j \mathcal L_j}`:

    .. math:: z = -Z_J l / d, \qquad Z_{jj} = 1/d^2 - l^\top z / d.

    Reverse, for :math:`j = 0, \dots, n-1` (all uses of column :math:`j` of :math:`Z`
    lie in columns :math:`< j`, already reversed, so :math:`\bar z, \bar Z_{jj}` are
    complete):

    .. math::
        \hat z &= \bar z - \bar Z_{jj}\, l / d, \\
        \bar l \mathrel{+}= -\bar Z_{jj}\, z / d - Z_J \hat z / d, &\qquad
        \bar Z_J \mathrel{+}= -(\hat z l^\top + l \hat z^\top)/d \ \text{(lower part;
        diagonal once)}, \\
        \bar d \mathrel{+}= \bar Z_{jj}\,(-2/d^3 + l^\top z/d^2) - \hat z^\top z / d.

    Parameters
    ----------
    indptr, indices, data : ndarray
        Lower-triangular CSC factor with sorted rows, diagonal first in each column.
    Z : ndarray
        Forward output (selected inverse on the pattern of ``L``).
    Zbar : ndarray
        Cotangent of ``Z``; overwritten (used as the work array for :math:`\bar Z`).

    Returns
    -------
    ndarray
        :math:`\bar L` in the positions of ``data``.
    """
    n = indptr.size - 1
    Lbar = np.zeros_like(data)
    pos = np.full(n, -1, dtype=np.int64)
    zh = np.zeros(n, dtype=data.dtype)
    for j in range(n):
        p0 = indptr[j]
        p1 = indptr[j + 1]
        d = data[p0]
        zjjbar = Zbar[p0]
        lz = 0.0
        for p in range(p0 + 1, p1):
            lz += data[p] * Z[p]
        dbar = zjjbar * (-2.0 / (d * d * d) + lz / (d * d))
        zz = 0.0
        for p in range(p0 + 1, p1):
            i = indices[p]
            pos[i] = p
            # Z_jj reads l and z; z is also this column's own output.
            Lbar[p] -= zjjbar * Z[p] / d
            zh[i] = Zbar[p] - zjjbar * data[p] / d
            zz += zh[i] * Z[p]
        dbar -= zz / d
        # z_i = -(sum_k Z_ik l_k) / d over the same (i, k) pairs the forward visits.
        for p in range(p0 + 1, p1):
            k = indices[p]
            lk = data[p]
            zk = zh[k]
            for q in range(indptr[k], indptr[k + 1]):
                i = indices[q]
                pi = pos[i]
                if pi >= 0:
                    zik = Z[q]
                    zi = zh[i]
                    if i != k:
                        li = data[pi]
                        Zbar[q] -= (zi * lk + zk * li) / d
                        Lbar[p] -= zi * zik / d
                        Lbar[pi] -= zk * zik / d
                    else:
                        Zbar[q] -= zi * lk / d
                        Lbar[p] -= zi * zik / d
        Lbar[p0] += dbar
        for p in range(p0 + 1, p1):
            pos[indices[p]] = -1
            zh[indices[p]] = 0.0
    return Lbar


@numba.njit(cache=True, nogil=True)
def _row_structure(indptr, indices):  # pragma: no cover - compiled
    """CSR view of the strictly lower part: for row ``j``, positions ``p`` of ``L[j, k]``."""
    n = indptr.size - 1
    rowptr = np.zeros(n + 1, dtype=np.int64)
    for k in range(n):
        for p in range(indptr[k] + 1, indptr[k + 1]):
            rowptr[indices[p] + 1] += 1
    for j in range(n):
        rowptr[j + 1] += rowptr[j]
    fill = rowptr[:-1].copy()
    rowpos = np.empty(rowptr[n], dtype=np.int64)
    rowcol = np.empty(rowptr[n], dtype=np.int64)
    for k in range(n):  # columns in increasing order: each row list is sorted by k
        for p in range(indptr[k] + 1, indptr[k + 1]):
            j = indices[p]
            rowpos[fill[j]] = p
            rowcol[fill[j]] = k
            fill[j] += 1
    return rowptr, rowcol, rowpos


@numba.njit(cache=True, nogil=True)
def cholesky_adjoint(indptr, indices, data, Lbar):  # pragma: no cover - compiled
    r"""Pullback of the sparse Cholesky factorisation :math:`A \mapsto L` on the pattern of ``L``.

    Forward (left-looking), for :math:`j = 0, \dots, n-1`:
    :math:`c = A_{j:,j} - \sum_{k<j,\ L_{jk}\neq 0} L_{j:,k} L_{jk}`,
    :math:`L_{jj} = \sqrt{c_j}`, :math:`L_{ij} = c_i / L_{jj}` (:math:`i > j`).

    Reverse, for :math:`j = n-1, \dots, 0` (column :math:`j` of :math:`L` is used only by
    columns :math:`> j`, already reversed, so :math:`\bar L_{:,j}` is complete):

    .. math::
        \bar c_i = \bar L_{ij}/L_{jj}\ (i>j), \qquad
        \bar c_j = \Bigl(\bar L_{jj} - \sum_{i>j} \bar L_{ij} L_{ij}/L_{jj}\Bigr)
                   \big/ (2L_{jj}), \qquad \bar A_{j:,j} = \bar c,

    .. math::
        \bar L_{i k} \mathrel{-}= \bar c_i L_{jk}\ (i \ge j), \qquad
        \bar L_{jk} \mathrel{-}= \textstyle\sum_{i\ge j} \bar c_i L_{ik},
        \qquad \text{for each } k<j \text{ with } L_{jk}\neq 0.

    The rows :math:`i \ge j` of such a column :math:`k` lie in the structure of column
    :math:`j` (elimination-tree property), so :math:`\bar c` lives in a length-``n``
    work vector that is zero elsewhere.

    Parameters
    ----------
    indptr, indices, data : ndarray
        Lower-triangular CSC factor with sorted rows, diagonal first in each column.
    Lbar : ndarray
        Cotangent of ``L``; overwritten in place by :math:`\bar A` and returned.

    Returns
    -------
    ndarray
        :math:`\bar A`, the cotangent of the stored lower values of :math:`A = LL^\top`,
        in the positions of ``data`` (entries at fill positions are structurally
        unused).
    """
    n = indptr.size - 1
    rowptr, rowcol, rowpos = _row_structure(indptr, indices)
    w = np.zeros(n, dtype=data.dtype)
    for j in range(n - 1, -1, -1):
        p0 = indptr[j]
        p1 = indptr[j + 1]
        d = data[p0]
        s = 0.0
        for p in range(p0 + 1, p1):
            s += Lbar[p] * data[p]
            w[indices[p]] = Lbar[p] / d
        w[j] = (Lbar[p0] - s / d) / (2.0 * d)
        # Column j of Lbar is final: it becomes column j of Abar.
        for p in range(p0, p1):
            Lbar[p] = w[indices[p]]
        for t in range(rowptr[j], rowptr[j + 1]):
            k = rowcol[t]
            pk = rowpos[t]
            ljk = data[pk]
            acc = 0.0
            for q in range(pk, indptr[k + 1]):
                wi = w[indices[q]]
                Lbar[q] -= wi * ljk
                acc += wi * data[q]
            Lbar[pk] -= acc
        for p in range(p0, p1):
            w[indices[p]] = 0.0
    return Lbar


# -- supernodal kernels -----------------------------------------------------------------
# A supernode is a run of consecutive columns c0..c1-1 of L whose structures below the
# diagonal block coincide: column c0 + t holds rows c0 + t, ..., c1 - 1 (a dense lower
# triangle L_JJ) and then the shared rows R (a dense block L_RJ).  Both recursions then act
# on dense blocks with BLAS-3 products; only the R x R block touches the sparse storage.

# Small products of dense blocks run as plain loops (vectorised by LLVM over a contiguous
# inner axis); from this many multiply-adds on, numba's np.dot calls SciPy's OpenBLAS.
# That OpenBLAS must then run single-threaded: on the few shared cores of the target
# machines its busy-waiting thread pool made the products 5-10x slower (measured), and
# numpyro's parallel chains would oversubscribe the cores.
_BLAS_MIN = 1 << 15


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def _dot_loops(A, B):  # pragma: no cover - compiled
    m, k = A.shape
    n = B.shape[1]
    Bc = np.ascontiguousarray(B)
    C = np.zeros((m, n))
    for i in range(m):
        for t in range(k):
            a = A[i, t]
            if a != 0.0:
                for j in range(n):
                    C[i, j] += a * Bc[t, j]
    return C


@numba.njit(cache=True, nogil=True)
def _dot(A, B):  # pragma: no cover - compiled
    """``A @ B`` for small and medium dense blocks, long contiguous axis innermost."""
    m, k = A.shape
    n = B.shape[1]
    if m * k * n >= _BLAS_MIN:
        return np.dot(np.ascontiguousarray(A), np.ascontiguousarray(B))
    if n >= m or n >= 16:
        return _dot_loops(A, B)
    # Few output columns: form (B' A')' so the inner loop runs over the long axis m.
    return np.ascontiguousarray(_dot_loops(B.T, A.T).T)


@numba.njit(cache=True, nogil=True)
def _snode(indptr, indices, starts, J):  # pragma: no cover - compiled
    """First column ``c0``, width ``s``, number of off-diagonal rows ``r`` and those rows ``R``."""
    c0 = starts[J]
    s = starts[J + 1] - c0
    p = indptr[c0]
    r = indptr[c0 + 1] - p - s
    return c0, s, r, indices[p + s : p + s + r]


@numba.njit(cache=True, nogil=True)
def _gather_block(indptr, data, c0, s, r):  # pragma: no cover - compiled
    """Dense ``(s + r) x s`` panel [L_JJ; L_RJ] of a supernode (upper part of L_JJ zero)."""
    P = np.zeros((s + r, s))
    for t in range(s):
        pt = indptr[c0 + t]
        for u in range(t, s + r):
            P[u, t] = data[pt + u - t]
    return P


@numba.njit(cache=True, nogil=True)
def _scatter_block(indptr, out, c0, s, r, P):  # pragma: no cover - compiled
    for t in range(s):
        pt = indptr[c0 + t]
        for u in range(t, s + r):
            out[pt + u - t] = P[u, t]


@numba.njit(cache=True, nogil=True)
def _lower_inverse(Ljj):  # pragma: no cover - compiled
    """Inverse of a small dense lower-triangular matrix by forward substitution."""
    s = Ljj.shape[0]
    Y = np.zeros((s, s))
    for c in range(s):
        Y[c, c] = 1.0 / Ljj[c, c]
        for i in range(c + 1, s):
            acc = 0.0
            for t in range(c, i):
                acc += Ljj[i, t] * Y[t, c]
            Y[i, c] = -acc / Ljj[i, i]
    return Y


@numba.njit(cache=True, nogil=True)
def _find_rows(indptr, indices, R, a, out):  # pragma: no cover - compiled
    """Positions in column ``R[a]`` of the rows ``R[a:]`` (one forward merge of sorted lists).

    They exist: ``R`` is the structure below a supernode, a clique of the chordal pattern
    of a Cholesky factor.  A violation of that contract raises instead of reading
    outside the column.
    """
    r = R.size
    q = indptr[R[a]]
    end = indptr[R[a] + 1]
    for b in range(a, r):
        row = R[b]
        while q < end and indices[q] < row:
            q += 1
        if q == end or indices[q] != row:
            raise ValueError("The pattern of L is not that of a Cholesky factor.")
        out[b - a] = q


@numba.njit(cache=True, nogil=True)
def _gather_rr(indptr, indices, vals, R):  # pragma: no cover - compiled
    """Dense symmetric ``|R| x |R|`` block of a lower-stored matrix on the pattern of ``L``."""
    r = R.size
    B = np.empty((r, r))
    pos = np.empty(r, dtype=np.int64)
    for a in range(r):
        _find_rows(indptr, indices, R, a, pos)
        for b in range(a, r):
            v = vals[pos[b - a]]
            B[b, a] = v
            B[a, b] = v
    return B


@numba.njit(cache=True, nogil=True)
def _scatter_add_rr(indptr, indices, out, R, B):  # pragma: no cover - compiled
    """Add the cotangent of ``_gather_rr``'s output: both mirrored reads of one entry."""
    r = R.size
    pos = np.empty(r, dtype=np.int64)
    for a in range(r):
        _find_rows(indptr, indices, R, a, pos)
        out[pos[0]] += B[a, a]
        for b in range(a + 1, r):
            out[pos[b - a]] += B[b, a] + B[a, b]


@numba.njit(cache=True, nogil=True)
def takahashi_adjoint_supernodal(indptr, indices, data, Z, Zbar, starts):  # pragma: no cover
    r"""Supernodal pullback of the Takahashi recursion (same result as :func:`takahashi_adjoint`).

    Forward, per supernode :math:`J` with rows :math:`R` below it and
    :math:`Y = L_{JJ}^{-1}`, :math:`X = L_{RJ} Y`:

    .. math:: Z_{RJ} = -Z_{RR} X, \qquad M = Y^\top - Z_{RJ}^\top L_{RJ},
              \qquad Z_{JJ} = M Y .

    Reverse, supernodes in increasing order, with :math:`G` the (lower) cotangent of
    :math:`Z_{JJ}`:

    .. math::
        \bar M = G Y^\top,\quad \bar Y = M^\top G + \bar M^\top,\quad
        H = \bar Z_{RJ} - L_{RJ}\bar M^\top,\quad
        \bar L_{RJ} = -Z_{RJ}\bar M - Z_{RR} H Y^\top,

    .. math::
        \bar Y \mathrel{+}= -L_{RJ}^\top Z_{RR} H,\quad
        \bar Z_{RR} \mathrel{+}= -H X^\top,\quad
        \bar L_{JJ} = -\operatorname{tril}(Y^\top \bar Y Y^\top).

    Parameters
    ----------
    indptr, indices, data, Z : ndarray
        As for :func:`takahashi_adjoint`.
    Zbar : ndarray
        Cotangent of ``Z``; overwritten.
    starts : ndarray
        Supernode partition from :func:`csc_supernodes`.
    """
    Lbar = np.zeros_like(data)
    for J in range(starts.size - 1):
        c0, s, r, R = _snode(indptr, indices, starts, J)
        PL = _gather_block(indptr, data, c0, s, r)
        PZ = _gather_block(indptr, Z, c0, s, r)
        PG = _gather_block(indptr, Zbar, c0, s, r)
        Ljj = PL[:s, :]
        Lrj = PL[s:, :]
        Zrj = PZ[s:, :]
        G = PG[:s, :]
        Y = _lower_inverse(Ljj)
        M = Y.T - _dot(Zrj.T, Lrj)
        Mbar = _dot(G, Y.T)
        Ybar = _dot(M.T, G) + Mbar.T
        H = PG[s:, :] - _dot(Lrj, Mbar.T)
        Lrjbar = -_dot(Zrj, Mbar)
        if r > 0:
            Zrr = _gather_rr(indptr, indices, Z, R)
            X = _dot(Lrj, Y)
            ZH = _dot(Zrr, H)
            Lrjbar -= _dot(ZH, Y.T)
            Ybar -= _dot(Lrj.T, ZH)
            _scatter_add_rr(indptr, indices, Zbar, R, -_dot(H, X.T))
        Ljjbar = -_dot(_dot(Y.T, Ybar), Y.T)
        out = np.zeros((s + r, s))
        for t in range(s):
            for u in range(t, s):
                out[u, t] = Ljjbar[u, t]
        out[s:, :] = Lrjbar
        _scatter_block(indptr, Lbar, c0, s, r, out)
    return Lbar


@numba.njit(cache=True, nogil=True)
def cholesky_adjoint_supernodal(indptr, indices, data, Lbar, starts):  # pragma: no cover
    r"""Supernodal pullback of the Cholesky factorisation (same result as :func:`cholesky_adjoint`).

    Forward (right-looking), per supernode: :math:`L_{JJ} = \operatorname{chol}(C_{JJ})`,
    :math:`L_{RJ} = C_{RJ} L_{JJ}^{-\top}`, :math:`C_{RR} \mathrel{-}= L_{RJ} L_{RJ}^\top`,
    with :math:`C` the running Schur complement (initially :math:`A`).  Reverse,
    supernodes in decreasing order; :math:`\bar C` of later columns is final and equals
    :math:`\bar A` there (the updates are identities in :math:`C`):

    .. math::
        \bar L_{RJ} \mathrel{-}= (\bar C_{RR}^{\mathrm{low}} + \bar C_{RR}^{\mathrm{low}\top})
        L_{RJ},\quad
        \bar C_{RJ} = \bar L_{RJ} L_{JJ}^{-1},\quad
        \bar L_{JJ} \mathrel{-}= \operatorname{tril}(\bar C_{RJ}^\top L_{RJ}),

    .. math::
        S = L_{JJ}^{-\top}\,\Phi(L_{JJ}^\top \bar L_{JJ})\,L_{JJ}^{-1},\qquad
        \bar C_{JJ}^{\mathrm{low}} = \operatorname{tril}(S + S^\top) - \operatorname{diag}(S),

    with :math:`\Phi` the lower triangle with halved diagonal (Murray 2016).

    Parameters
    ----------
    indptr, indices, data : ndarray
        As for :func:`cholesky_adjoint`.
    Lbar : ndarray
        Cotangent of ``L``; overwritten by :math:`\bar A` and returned.
    starts : ndarray
        Supernode partition from :func:`csc_supernodes`.
    """
    for J in range(starts.size - 2, -1, -1):
        c0, s, r, R = _snode(indptr, indices, starts, J)
        PL = _gather_block(indptr, data, c0, s, r)
        PB = _gather_block(indptr, Lbar, c0, s, r)
        Ljj = PL[:s, :]
        Lrj = PL[s:, :]
        Ljjbar = PB[:s, :].copy()
        Lrjbar = PB[s:, :].copy()
        if r > 0:
            Crr = _gather_rr(indptr, indices, Lbar, R)
            for a in range(r):
                Crr[a, a] *= 2.0  # the mirrored gather counts the diagonal once
            Lrjbar -= _dot(Crr, Lrj)
        Y = _lower_inverse(Ljj)
        Crj = _dot(Lrjbar, Y)
        Ljjbar -= _dot(Crj.T, Lrj)
        for u in range(s):  # L_JJ is lower triangular: its upper cotangent is void
            for t in range(u + 1, s):
                Ljjbar[u, t] = 0.0
        P = _dot(Ljj.T, Ljjbar)
        for u in range(s):
            P[u, u] *= 0.5
            for t in range(u + 1, s):
                P[u, t] = 0.0
        S = _dot(_dot(Y.T, P), Y)
        out = np.zeros((s + r, s))
        for t in range(s):
            out[t, t] = S[t, t]
            for u in range(t + 1, s):
                out[u, t] = S[u, t] + S[t, u]
        out[s:, :] = Crj
        _scatter_block(indptr, Lbar, c0, s, r, out)
    return Lbar


# -- entry points ---------------------------------------------------------------------


def selected_inverse_vjp_factor(indptr, indices, data, Z, Zbar, *, supernodal=True) -> np.ndarray:
    r"""Pullback of :math:`A \mapsto \mathcal P_L(A^{-1})` on the pattern of ``L``.

    Parameters
    ----------
    indptr, indices, data : ndarray
        Cholesky factor ``L`` of ``A`` (CSC, sorted rows, diagonal first).
    Z : ndarray
        :math:`(LL^\top)^{-1}` on the pattern of ``L`` (positions of ``data``).
    Zbar : ndarray
        Cotangent of ``Z`` (not modified).
    supernodal : bool
        Use the blocked kernels (default); ``False`` runs the column-by-column ones,
        kept as a reference.

    Returns
    -------
    ndarray
        Cotangent of the stored lower values of ``A`` on the pattern of ``L``.
    """
    indptr = np.asarray(indptr, dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64)
    data = np.ascontiguousarray(data, dtype=np.float64)
    Z = np.ascontiguousarray(Z, dtype=np.float64)
    Zbar = np.array(Zbar, dtype=np.float64)  # a copy: the sweep accumulates into it
    if not supernodal:
        Lbar = takahashi_adjoint(indptr, indices, data, Z, Zbar)
        return cholesky_adjoint(indptr, indices, data, Lbar)
    starts = csc_supernodes(indptr, indices)
    with _BLAS_THREADS:
        Lbar = takahashi_adjoint_supernodal(indptr, indices, data, Z, Zbar, starts)
        return cholesky_adjoint_supernodal(indptr, indices, data, Lbar, starts)


def selected_inverse_vjp(factor, sbar: np.ndarray) -> np.ndarray:
    r"""Cotangent of Q's stored values from a cotangent of ``factor.selected_inverse()``.

    Computes :math:`\bar q_e = -w_e (S\bar B S)_{ij}` exactly, by the reverse sweeps
    of the Takahashi recursion and of the Cholesky factorisation (module docstring),
    in :math:`O(\mathrm{nnz}(L))` memory.

    Parameters
    ----------
    factor : pymc_sparse.linalg.cholmod.Factor
        Cached factor of :math:`Q`.
    sbar : ndarray
        Cotangent vector on Q's lower pattern (data order, the layout of
        ``factor.selected_inverse()``).

    Returns
    -------
    ndarray
        Cotangent of Q's stored values (same layout); NaN-filled if :math:`Q` is not
        positive definite.
    """
    pattern = factor.pattern
    sbar = np.asarray(sbar, dtype=np.float64)
    if sbar.shape != (pattern.nnz,):
        raise ValueError(
            f"The cotangent of the selected inverse of {pattern!r} must have shape "
            f"({pattern.nnz},), got {sbar.shape}."
        )
    if not factor.ok:
        return np.full(pattern.nnz, np.nan)
    L = factor.L()
    Z = factor.selected_inverse_factor()
    q_to_l = map_pattern_to_factor(pattern, factor.symbolic.perm, L.indptr, L.indices)
    Zbar = np.zeros(L.data.size)
    # Two stored entries of Q never share a position of L, but add to be safe.
    np.add.at(Zbar, q_to_l, sbar)
    Abar = selected_inverse_vjp_factor(L.indptr, L.indices, L.data, Z, Zbar)
    return Abar[q_to_l]
